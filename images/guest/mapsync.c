/*
 * mapsync: the MAP_SYNC workload helper.
 *
 * Build: gcc -static -O2 -Wall -Wextra -Werror -o mapsync mapsync.c
 *
 * mapsync --file PATH --records N [--record-size B] [--records-per-page R]
 *         [--file-size BYTES] [--prealloc] [--no-map-sync]
 *         [--flush auto|clwb|clflushopt|clflush|nt|none] [--no-fence] [--delay-us U]
 *
 * Writes N self-checking records through a shared mapping of PATH (with
 * MAP_SYNC unless --no-map-sync), flushes each record's cache lines, and
 * only then acknowledges it: "ACK i <mono_ns>" on $PMEMLAB_EVENT_FD. The
 * host's persistence oracle demands every acknowledged record survive a
 * power cut, which MAP_SYNC promises and a plain MAP_SHARED does not.
 * --flush nt writes the record with non-temporal stores (movnti) and fences;
 * --no-fence leaves out the fence after the flush (a negative control of the
 * ADR model: the flush alone does not make a line persistent).
 *
 * Record i sits at (i / R) * 4096 + (i % R) * B; little endian:
 *   [0,8) "PMEMREC1"  [8,16) u64 i  [16,24) u64 offset  [24,28) u32 B
 *   [28,32) u32 0  [32,B-8) byte j = (i*131 + j) & 0xff
 *   [B-8,B) u64 FNV-1a-64 of [0,B-8)
 *
 * stdout: JSON lines {"event":"mmap",...} and {"event":"done",...}.
 * Exit: 0 ok, 2 bad usage, 3 mmap failed, 4 open/size/prealloc failed,
 * 5 event channel write failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PMEMLAB_PROG "mapsync"
#define PMEMLAB_USAGE "usage: mapsync --file PATH --records N [--record-size B] " \
	"[--records-per-page R] [--file-size BYTES] [--prealloc] " \
	"[--no-map-sync] [--flush auto|clwb|clflushopt|clflush|nt|none] " \
	"[--no-fence] [--delay-us U]\n"
#include "pmemlab.h"

#define PAGE 4096u
#define MAGIC "PMEMREC1"

/* One 8-byte word of a record: a plain store, or non-temporal (movnti) for --flush nt. */
static void store64(enum flush_kind kind, volatile unsigned char *dst, uint64_t w)
{
#if HAVE_X86
	if (kind == FLUSH_NT) {
		__asm__ volatile("movnti %1, %0" : "=m"(*(volatile uint64_t *)dst) : "r"(w));
		return;
	}
#endif
	*(volatile uint64_t *)dst = w;
}

int main(int argc, char **argv)
{
	const char *path = NULL;
	uint64_t n_records = 0, rec_size = 64, per_page = 1, file_size = 0, delay_us = 0;
	int have_records = 0, prealloc = 0, map_sync = 1, fence = 1;
	enum flush_kind flush = FLUSH_AUTO;
	unsigned char *rec, *map;
	double st_min = 0, st_max = 0, st_sum = 0;
	uint64_t needed;
	int fd, mflags;

	for (int i = 1; i < argc; i++) {
		const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(opt, "--file")) {
			path = parse_str(opt, val, "a path"); i++;
		} else if (!strcmp(opt, "--records")) {
			n_records = parse_u64(opt, val, "a record count >= 1"); i++;
			have_records = 1;
		} else if (!strcmp(opt, "--record-size")) {
			rec_size = parse_u64(opt, val, "a byte count"); i++;
		} else if (!strcmp(opt, "--records-per-page")) {
			per_page = parse_u64(opt, val, "a count >= 1"); i++;
		} else if (!strcmp(opt, "--file-size")) {
			file_size = parse_u64(opt, val, "a byte count"); i++;
		} else if (!strcmp(opt, "--delay-us")) {
			delay_us = parse_u64(opt, val, "microseconds"); i++;
		} else if (!strcmp(opt, "--flush")) {
			flush = val && !strcmp(val, "nt") ? FLUSH_NT : parse_flush(val); i++;
		} else if (!strcmp(opt, "--no-fence")) {
			fence = 0;
		} else if (!strcmp(opt, "--prealloc")) {
			prealloc = 1;
		} else if (!strcmp(opt, "--no-map-sync")) {
			map_sync = 0;
		} else {
			usage_error("unknown option '%s'", opt);
		}
	}
	if (!path)
		usage_error("--file PATH is required");
	if (!have_records)
		usage_error("--records N is required");
	if (n_records < 1 || n_records > (1ULL << 40))
		usage_error("--records expects a record count in 1..2^40, got %" PRIu64, n_records);
	if (rec_size % 8 || rec_size < 64 || rec_size > PAGE)
		usage_error("--record-size expects a multiple of 8 in 64..4096, got %" PRIu64,
			    rec_size);
	if (per_page < 1 || per_page * rec_size > PAGE)
		usage_error("--records-per-page expects 1..%" PRIu64 " for record size %" PRIu64
			    " (R*B <= 4096), got %" PRIu64, PAGE / rec_size, rec_size, per_page);
	needed = ((n_records - 1) / per_page) * PAGE + ((n_records - 1) % per_page) * rec_size +
		 rec_size;
	if (!file_size)
		file_size = ((n_records + per_page - 1) / per_page) * PAGE;
	if (file_size < needed)
		usage_error("--file-size expects at least %" PRIu64 " bytes for %" PRIu64
			    " records, got %" PRIu64, needed, n_records, file_size);
	if (file_size > (uint64_t)INT64_MAX)
		usage_error("--file-size is too large: %" PRIu64, file_size);
	flush = resolve_flush(flush);
	setup_event_fd();

	fd = open(path, O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		fail(4, "open", path);
	if (prealloc) {
		if (fallocate(fd, 0, 0, (off_t)file_size) < 0)
			fail(4, "fallocate", path);
	} else if (ftruncate(fd, (off_t)file_size) < 0) {
		fail(4, "ftruncate", path);
	}

	mflags = map_sync ? (MAP_SHARED_VALIDATE | MAP_SYNC) : MAP_SHARED;
	map = mmap(NULL, (size_t)file_size, PROT_READ | PROT_WRITE, mflags, fd, 0);
	if (map == MAP_FAILED) {
		int e = errno;
		fprintf(stderr, "mmap: %s (%s)\n", errname(e), strerror(e));
		json_mmap_failed(e, map_sync);
		return 3;
	}
	printf("{\"event\":\"mmap\",\"ok\":true,\"map_sync\":%s}\n", map_sync ? "true" : "false");
	fflush(stdout);
	emit_event("MARK", "mmap-ok");

	rec = malloc((size_t)rec_size);
	if (!rec) {
		fprintf(stderr, "mapsync: out of memory\n");
		return 4;
	}
	for (uint64_t i = 0; i < n_records; i++) {
		uint64_t off = (i / per_page) * PAGE + (i % per_page) * rec_size;
		volatile unsigned char *dst = map + off;
		uint64_t magic;
		int64_t t0, t1;
		double us;
		char seq[24];

		memcpy(rec, MAGIC, 8);
		put_le64(rec + 8, i);
		put_le64(rec + 16, off);
		put_le32(rec + 24, (uint32_t)rec_size);
		put_le32(rec + 28, 0);
		for (uint64_t j = 32; j < rec_size - 8; j++)
			rec[j] = (unsigned char)((i * 131 + j) & 0xff);
		put_le64(rec + rec_size - 8, fnv1a64(rec, (size_t)rec_size - 8));

		/* The first store to a record takes the page fault (for R = 1 a
		 * fresh page), which is where MAP_SYNC makes the filesystem commit
		 * the block's metadata: that latency is worth reporting. */
		memcpy(&magic, rec, 8);
		t0 = mono_ns();
		store64(flush, dst, magic);
		t1 = mono_ns();
		for (uint64_t j = 8; j < rec_size; j += 8) {
			uint64_t w;
			memcpy(&w, rec + j, 8);
			store64(flush, dst + j, w);
		}
		flush_lines(flush, dst, (size_t)rec_size);
		if (fence)
			store_fence(flush);

		us = (double)(t1 - t0) / 1000.0;
		if (i == 0 || us < st_min)
			st_min = us;
		if (i == 0 || us > st_max)
			st_max = us;
		st_sum += us;

		snprintf(seq, sizeof(seq), "%" PRIu64, i);
		emit_event("ACK", seq);
		if (delay_us)
			sleep_us(delay_us);
	}
	printf("{\"event\":\"done\",\"records\":%" PRIu64 ",\"flush\":\"%s\","
	       "\"store_us\":{\"min\":%.3f,\"avg\":%.3f,\"max\":%.3f}}\n",
	       n_records, flush_names[flush], st_min, st_sum / (double)n_records, st_max);
	fflush(stdout);
	free(rec);
	munmap(map, (size_t)file_size);
	close(fd);
	return 0;
}

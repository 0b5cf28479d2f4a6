/*
 * mapsync: the MAP_SYNC workload helper.
 *
 * Build: gcc -static -O2 -Wall -Wextra -Werror -o mapsync mapsync.c
 *
 * mapsync --file PATH --records N [--record-size B] [--records-per-page R]
 *         [--file-size BYTES] [--prealloc] [--no-map-sync]
 *         [--flush auto|clwb|clflushopt|clflush|none] [--delay-us U]
 *
 * Writes N self-checking records through a shared mapping of PATH (with
 * MAP_SYNC unless --no-map-sync), flushes each record's cache lines, and
 * only then acknowledges it: "ACK i <mono_ns>" on $PMEMLAB_EVENT_FD. The
 * host's persistence oracle demands every acknowledged record survive a
 * power cut, which MAP_SYNC promises and a plain MAP_SHARED does not.
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
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define HAVE_X86 1
#else
#define HAVE_X86 0
#endif

#ifndef MAP_SHARED_VALIDATE
#define MAP_SHARED_VALIDATE 0x03
#endif
#ifndef MAP_SYNC
#define MAP_SYNC 0x80000
#endif

#define PAGE 4096u
#define CACHE_LINE 64u
#define MAGIC "PMEMREC1"

enum flush_kind { FLUSH_AUTO, FLUSH_CLWB, FLUSH_CLFLUSHOPT, FLUSH_CLFLUSH, FLUSH_NONE };
static const char *const flush_names[] = { "auto", "clwb", "clflushopt", "clflush", "none" };

static int event_fd = -1;

static const char *errname(int e)
{
	static char buf[16];
	const char *n = strerrorname_np(e);

	if (n)
		return n;
	snprintf(buf, sizeof(buf), "E%d", e);
	return buf;
}

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("mapsync: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nusage: mapsync --file PATH --records N [--record-size B] "
	      "[--records-per-page R] [--file-size BYTES] [--prealloc] "
	      "[--no-map-sync] [--flush auto|clwb|clflushopt|clflush|none] "
	      "[--delay-us U]\n", stderr);
	exit(2);
}

static uint64_t parse_u64(const char *opt, const char *val, const char *expect)
{
	char *end;
	unsigned long long v;

	if (!val)
		usage_error("%s needs a value: %s", opt, expect);
	if (*val < '0' || *val > '9')
		usage_error("%s expects %s, got '%s'", opt, expect, val);
	errno = 0;
	v = strtoull(val, &end, 10);
	if (errno || *end)
		usage_error("%s expects %s, got '%s'", opt, expect, val);
	return (uint64_t)v;
}

static void put_le32(unsigned char *p, uint32_t v)
{
	for (int k = 0; k < 4; k++)
		p[k] = (unsigned char)(v >> (8 * k));
}

static void put_le64(unsigned char *p, uint64_t v)
{
	for (int k = 0; k < 8; k++)
		p[k] = (unsigned char)(v >> (8 * k));
}

static uint64_t fnv1a64(const unsigned char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t k = 0; k < n; k++) {
		h ^= p[k];
		h *= 0x100000001b3ULL;
	}
	return h;
}

/* CPUID leaf 7 EBX: bit 23 CLFLUSHOPT, bit 24 CLWB. */
static unsigned cpuid7_ebx(void)
{
#if HAVE_X86
	unsigned a, b, c, d;

	if (__get_cpuid_max(0, NULL) < 7)
		return 0;
	__cpuid_count(7, 0, a, b, c, d);
	(void)a; (void)c; (void)d;
	return b;
#else
	return 0;
#endif
}

static enum flush_kind resolve_flush(enum flush_kind want)
{
	unsigned ebx = cpuid7_ebx();
	int has_clwb = !!(ebx & (1u << 24)), has_clflushopt = !!(ebx & (1u << 23));

	if (!HAVE_X86 && want != FLUSH_NONE) {
		if (want == FLUSH_AUTO)
			return FLUSH_NONE;
		usage_error("--flush %s needs an x86 CPU; use --flush none",
			    flush_names[want]);
	}
	switch (want) {
	case FLUSH_AUTO:
		return has_clwb ? FLUSH_CLWB : has_clflushopt ? FLUSH_CLFLUSHOPT : FLUSH_CLFLUSH;
	case FLUSH_CLWB:
		if (!has_clwb)
			usage_error("--flush clwb: this CPU lacks CLWB (CPUID.7.EBX[24])");
		return want;
	case FLUSH_CLFLUSHOPT:
		if (!has_clflushopt)
			usage_error("--flush clflushopt: this CPU lacks CLFLUSHOPT (CPUID.7.EBX[23])");
		return want;
	default:
		return want;
	}
}

/* Push every cache line of [p, p+len) toward memory, then order it. */
static void flush_range(enum flush_kind kind, volatile unsigned char *p, size_t len)
{
#if HAVE_X86
	uintptr_t start = (uintptr_t)p & ~(uintptr_t)(CACHE_LINE - 1);
	uintptr_t end = (uintptr_t)p + len;

	switch (kind) {
	case FLUSH_CLWB:
		for (uintptr_t a = start; a < end; a += CACHE_LINE)
			__asm__ volatile("clwb %0" : "+m"(*(volatile char *)a));
		__asm__ volatile("sfence" ::: "memory");
		break;
	case FLUSH_CLFLUSHOPT:
		for (uintptr_t a = start; a < end; a += CACHE_LINE)
			__asm__ volatile("clflushopt %0" : "+m"(*(volatile char *)a));
		__asm__ volatile("sfence" ::: "memory");
		break;
	case FLUSH_CLFLUSH:
		for (uintptr_t a = start; a < end; a += CACHE_LINE)
			__asm__ volatile("clflush %0" : "+m"(*(volatile char *)a));
		__asm__ volatile("mfence" ::: "memory");
		break;
	default:
		__asm__ volatile("" ::: "memory");
		break;
	}
#else
	(void)kind; (void)p; (void)len;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
}

/* One event line, one write(), so lines from many writers stay whole. */
static void emit_event(const char *kind, const char *arg)
{
	char line[256];
	int n;

	if (event_fd < 0)
		return;
	n = snprintf(line, sizeof(line), "%s %s %lld\n", kind, arg, (long long)mono_ns());
	for (;;) {
		ssize_t w = write(event_fd, line, (size_t)n);
		if (w == n)
			return;
		if (w < 0 && errno == EINTR)
			continue;
		/* A lost ACK would quietly shrink what the oracle checks. */
		fprintf(stderr, "mapsync: write event to fd %d: %s\n", event_fd,
			w < 0 ? errname(errno) : "short write");
		exit(5);
	}
}

static void setup_event_fd(void)
{
	const char *env = getenv("PMEMLAB_EVENT_FD");
	char *end;
	long v;

	if (!env || !*env)
		return; /* run by hand: no events, not an error */
	errno = 0;
	v = strtol(env, &end, 10);
	if (errno || *end || v < 0 || v > INT_MAX) {
		fprintf(stderr, "mapsync: PMEMLAB_EVENT_FD=%s is not an fd number\n", env);
		exit(2);
	}
	event_fd = (int)v;
}

int main(int argc, char **argv)
{
	const char *path = NULL;
	uint64_t n_records = 0, rec_size = 64, per_page = 1, file_size = 0, delay_us = 0;
	int have_records = 0, prealloc = 0, map_sync = 1;
	enum flush_kind flush = FLUSH_AUTO;
	unsigned char *rec, *map;
	double st_min = 0, st_max = 0, st_sum = 0;
	uint64_t needed;
	int fd, mflags;

	for (int i = 1; i < argc; i++) {
		const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(opt, "--file")) {
			if (!val || !*val)
				usage_error("--file needs a path");
			path = val; i++;
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
			int k;
			if (!val)
				usage_error("--flush needs one of auto|clwb|clflushopt|clflush|none");
			for (k = 0; k <= FLUSH_NONE; k++)
				if (!strcmp(val, flush_names[k]))
					break;
			if (k > FLUSH_NONE)
				usage_error("--flush expects auto|clwb|clflushopt|clflush|none, got '%s'", val);
			flush = (enum flush_kind)k;
			i++;
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
	if (fd < 0) {
		fprintf(stderr, "mapsync: open %s: %s (%s)\n", path, errname(errno), strerror(errno));
		return 4;
	}
	if (prealloc) {
		int rc = fallocate(fd, 0, 0, (off_t)file_size);
		if (rc < 0) {
			fprintf(stderr, "mapsync: fallocate %s: %s (%s)\n", path, errname(errno),
				strerror(errno));
			return 4;
		}
	} else if (ftruncate(fd, (off_t)file_size) < 0) {
		fprintf(stderr, "mapsync: ftruncate %s: %s (%s)\n", path, errname(errno),
			strerror(errno));
		return 4;
	}

	mflags = map_sync ? (MAP_SHARED_VALIDATE | MAP_SYNC) : MAP_SHARED;
	map = mmap(NULL, (size_t)file_size, PROT_READ | PROT_WRITE, mflags, fd, 0);
	if (map == MAP_FAILED) {
		int e = errno;
		fprintf(stderr, "mmap: %s (%s)\n", errname(e), strerror(e));
		printf("{\"event\":\"mmap\",\"ok\":false,\"errno\":\"%s\",\"map_sync\":%s}\n",
		       errname(e), map_sync ? "true" : "false");
		fflush(stdout);
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
		*(volatile uint64_t *)dst = magic;
		t1 = mono_ns();
		for (uint64_t j = 8; j < rec_size; j += 8) {
			uint64_t w;
			memcpy(&w, rec + j, 8);
			*(volatile uint64_t *)(dst + j) = w;
		}
		flush_range(flush, dst, (size_t)rec_size);

		us = (double)(t1 - t0) / 1000.0;
		if (i == 0 || us < st_min)
			st_min = us;
		if (i == 0 || us > st_max)
			st_max = us;
		st_sum += us;

		snprintf(seq, sizeof(seq), "%" PRIu64, i);
		emit_event("ACK", seq);
		if (delay_us) {
			struct timespec ts = { (time_t)(delay_us / 1000000),
					       (long)(delay_us % 1000000) * 1000 };
			while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
				;
		}
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

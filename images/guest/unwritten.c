/*
 * unwritten: DAX must never expose stale blocks through unwritten extents.
 *
 * Build: gcc -static -O2 -Wall -Wextra -Werror -o unwritten unwritten.c
 *
 * unwritten --file PATH --fill PATH [--blocks N] [--fill-mib M]
 *           [--no-map-sync] [--flush auto|clwb|clflushopt|clflush|none]
 *
 * The case of "XIP: Add support for unwritten extents" (the XIP-to-DAX
 * rewrite): a block the filesystem allocated but never wrote must read as
 * zeros, through read(2), through a mapping, and after a power cut.
 *
 * 1. Fill: write the fill file with the stale pattern (every 64-bit word is
 *    FILL_WORD, "PMSTALE!") until ENOSPC or M MiB, fsync it, record its
 *    physical extents (FIEMAP), unlink it and sync: the freed blocks still
 *    hold the pattern on the media.
 * 2. Create PATH, fallocate N blocks (unwritten extents), fsync file and
 *    directory; FIEMAP tells how many of its blocks were the fill file's
 *    ("reused": where stale data would come from; 0 means the check is blind).
 * 3. Read the whole range with read(2) and through the mapping (MAP_SHARED_
 *    VALIDATE | MAP_SYNC unless --no-map-sync): every byte must be zero.
 * 4. For block i = 0..N-1: store record i (RECORD bytes at offset
 *    record_offset(i) of page i) through the mapping, flush its cache lines,
 *    check that the rest of the page reads zeros (mapping and pread), then
 *    "ACK i" on $PMEMLAB_EVENT_FD. A block that fails a check gets
 *    "MARK bad-<i>" first.
 *
 * Record i, little endian: [0,8) "UNWREC01"  [8,16) u64 i  [16,24) u64 its
 * offset in the file  [24,RECORD) byte j = ((i*131 + j) & 0x7f) | 0x80.
 * record_offset(i) = 64 * ((i * 7) % 60). The host computes both.
 *
 * stdout, JSON lines: {"event":"fill",...}, {"event":"reuse",...},
 * {"event":"check","stage":"fallocate"|"partial",...} for each stage with
 * nonzero blocks listed, {"event":"done",...}.
 *
 * Exit: 0 ran to the end (bad blocks are reported, not an exit status),
 * 2 bad usage, 3 mmap failed, 4 a file operation failed, 5 event channel
 * write failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define PMEMLAB_PROG "unwritten"
#define PMEMLAB_USAGE "usage: unwritten --file PATH --fill PATH [--blocks N] [--fill-mib M] " \
	"[--no-map-sync] [--flush auto|clwb|clflushopt|clflush|none]\n"
#include "pmemlab.h"

#define PAGE 4096u
#define RECORD 128u
#define MIB (1024u * 1024u)
#define FILL_WORD 0x21454C4154534D50ULL /* "PMSTALE!" in memory order */
#define REC_MAGIC "UNWREC01"
#define MAX_BLOCKS (1u << 20)
#define LIST_MAX 32 /* blocks listed per JSON line */

static void fsync_dir_of(const char *path)
{
	char *copy = strdup(path);
	int dfd;

	if (!copy)
		fail(4, "strdup", path);
	dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fsync(dfd) < 0)
		fail(4, "fsync the directory of", path);
	close(dfd);
	free(copy);
}

/* Physical extents [start, end) of a file, in bytes, from FIEMAP. */
struct extents {
	uint64_t (*r)[2];
	size_t n, cap;
};

static void fiemap_extents(int fd, const char *path, struct extents *out)
{
	enum { BATCH = 256 };
	size_t sz = sizeof(struct fiemap) + BATCH * sizeof(struct fiemap_extent);
	struct fiemap *fm = calloc(1, sz);
	uint64_t start = 0;
	int last = 0;

	if (!fm)
		fail(4, "calloc for FIEMAP of", path);
	out->n = 0;
	while (!last) {
		memset(fm, 0, sz);
		fm->fm_start = start;
		fm->fm_length = FIEMAP_MAX_OFFSET - start;
		fm->fm_flags = FIEMAP_FLAG_SYNC;
		fm->fm_extent_count = BATCH;
		if (ioctl(fd, FS_IOC_FIEMAP, fm) < 0)
			fail(4, "FIEMAP", path);
		if (fm->fm_mapped_extents == 0)
			break;
		for (unsigned k = 0; k < fm->fm_mapped_extents; k++) {
			struct fiemap_extent *e = &fm->fm_extents[k];

			if (out->n == out->cap) {
				size_t cap = out->cap ? out->cap * 2 : 64;
				void *r = realloc(out->r, cap * sizeof(*out->r));
				if (!r)
					fail(4, "realloc for FIEMAP of", path);
				out->r = r;
				out->cap = cap;
			}
			out->r[out->n][0] = e->fe_physical;
			out->r[out->n][1] = e->fe_physical + e->fe_length;
			out->n++;
			start = e->fe_logical + e->fe_length;
			if (e->fe_flags & FIEMAP_EXTENT_LAST)
				last = 1;
		}
	}
	free(fm);
}

static uint64_t overlap_bytes(const struct extents *a, const struct extents *b)
{
	uint64_t total = 0;

	for (size_t i = 0; i < a->n; i++)
		for (size_t j = 0; j < b->n; j++) {
			uint64_t lo = a->r[i][0] > b->r[j][0] ? a->r[i][0] : b->r[j][0];
			uint64_t hi = a->r[i][1] < b->r[j][1] ? a->r[i][1] : b->r[j][1];
			if (hi > lo)
				total += hi - lo;
		}
	return total;
}

static uint64_t free_blocks(const char *path)
{
	char *copy = strdup(path);
	struct statvfs st;

	if (!copy || statvfs(dirname(copy), &st) < 0)
		fail(4, "statvfs the directory of", path);
	free(copy);
	return (uint64_t)st.f_bfree * st.f_frsize / PAGE;
}

/*
 * Wait until the unlinked fill file's blocks are free and that is committed,
 * so the next allocation can reuse them. XFS frees an unlinked inode's blocks
 * in the background (inodegc) and keeps just-freed extents busy until the
 * log commit; ext4 keeps them busy until its journal commit. Bounded: 20 s.
 */
static double freed_wait_s;

static void wait_freed(const char *path, uint64_t before, uint64_t freed)
{
	int64_t t0 = mono_ns(), deadline = t0 + 20 * 1000000000LL;

	for (;;) {
		sync();
		/* 15/16: the fill's metadata blocks are counted loosely */
		if (free_blocks(path) >= before + freed / 16 * 15 || mono_ns() > deadline)
			break;
		nanosleep(&(struct timespec){ 0, 10 * 1000000 }, NULL);
	}
	sync(); /* commit the frees: busy extents become allocatable */
	freed_wait_s = (double)(mono_ns() - t0) / 1e9;
}

/* Write the stale pattern until ENOSPC or `limit` bytes; returns bytes written. */
static uint64_t fill(const char *path, uint64_t limit, struct extents *ext, int *enospc)
{
	unsigned char *buf = malloc(MIB);
	uint64_t written = 0, before;
	int fd;

	if (!buf)
		fail(4, "malloc for", path);
	for (size_t k = 0; k < MIB / 8; k++)
		memcpy(buf + 8 * k, &(uint64_t){ FILL_WORD }, 8);
	fd = open(path, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		fail(4, "open", path);
	*enospc = 0;
	while (written < limit) {
		size_t want = limit - written < MIB ? (size_t)(limit - written) : MIB;
		ssize_t n = write(fd, buf, want);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == ENOSPC) {
			*enospc = 1;
			break;
		}
		if (n < 0)
			fail(4, "write", path);
		if (n == 0)
			break;
		written += (uint64_t)n;
	}
	/* Only whole blocks of the pattern count; a partial tail is dropped by the
	 * fsync-then-unlink anyway. */
	if (fsync(fd) < 0)
		fail(4, "fsync", path);
	fiemap_extents(fd, path, ext);
	close(fd);
	before = free_blocks(path);
	if (unlink(path) < 0)
		fail(4, "unlink", path);
	fsync_dir_of(path);
	wait_freed(path, before, written / PAGE);
	free(buf);
	return written;
}

static uint64_t record_offset(uint64_t i)
{
	return 64 * ((i * 7) % 60);
}

static void make_record(unsigned char *rec, uint64_t i)
{
	memcpy(rec, REC_MAGIC, 8);
	put_le64(rec + 8, i);
	put_le64(rec + 16, i * PAGE + record_offset(i));
	for (unsigned j = 24; j < RECORD; j++)
		rec[j] = (unsigned char)(((i * 131 + j) & 0x7f) | 0x80);
}

static int has_fill_word(const unsigned char *p, size_t len)
{
	for (size_t k = 0; k + 8 <= len; k += 8) {
		uint64_t w;
		memcpy(&w, p + k, 8);
		if (w == FILL_WORD)
			return 1;
	}
	return 0;
}

static int all_zero(const unsigned char *p, size_t len)
{
	for (size_t k = 0; k < len; k++)
		if (p[k])
			return 0;
	return 1;
}

static void pread_full(int fd, unsigned char *buf, size_t len, off_t off, const char *path)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, buf + done, len - done, off + (off_t)done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			fail(4, "pread", path);
		if (n == 0) {
			errno = EIO;
			fail(4, "pread (short file)", path);
		}
		done += (size_t)n;
	}
}

/* A JSON list of up to LIST_MAX block numbers. */
struct blist {
	uint64_t n, v[LIST_MAX];
};

static void blist_add(struct blist *l, uint64_t b)
{
	if (l->n < LIST_MAX)
		l->v[l->n] = b;
	l->n++;
}

static void blist_print(const char *key, const struct blist *l)
{
	printf(",\"%s\":%" PRIu64 ",\"%s_blocks\":[", key, l->n, key);
	for (uint64_t k = 0; k < l->n && k < LIST_MAX; k++)
		printf("%s%" PRIu64, k ? "," : "", l->v[k]);
	printf("]");
}

int main(int argc, char **argv)
{
	const char *path = NULL, *fill_path = NULL;
	uint64_t blocks = 64, fill_mib = 256, size, reused, written;
	int map_sync = 1, fd, mflags, enospc;
	enum flush_kind flush = FLUSH_AUTO;
	struct extents fill_ext = { 0 }, file_ext = { 0 };
	struct blist stale_read = { 0 }, stale_map = { 0 }, nonzero_read = { 0 }, nonzero_map = { 0 };
	struct blist part_stale = { 0 }, part_nonzero = { 0 }, part_lost = { 0 };
	unsigned char *map, page[PAGE], rec[RECORD];
	int64_t t0;

	for (int i = 1; i < argc; i++) {
		const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(opt, "--file")) {
			path = parse_str(opt, val, "a path"); i++;
		} else if (!strcmp(opt, "--fill")) {
			fill_path = parse_str(opt, val, "a path"); i++;
		} else if (!strcmp(opt, "--blocks")) {
			blocks = parse_u64(opt, val, "a block count >= 1"); i++;
		} else if (!strcmp(opt, "--fill-mib")) {
			fill_mib = parse_u64(opt, val, "MiB (0: no fill)"); i++;
		} else if (!strcmp(opt, "--no-map-sync")) {
			map_sync = 0;
		} else if (!strcmp(opt, "--flush")) {
			flush = parse_flush(val); i++;
		} else {
			usage_error("unknown option '%s'", opt);
		}
	}
	if (!path || !fill_path)
		usage_error("--file PATH and --fill PATH are required");
	if (blocks < 1 || blocks > MAX_BLOCKS)
		usage_error("--blocks expects 1..%u, got %" PRIu64, MAX_BLOCKS, blocks);
	if (fill_mib > (1u << 20))
		usage_error("--fill-mib expects 0..%u, got %" PRIu64, 1u << 20, fill_mib);
	flush = resolve_flush(flush);
	setup_event_fd();
	size = blocks * PAGE;

	/* 1. the stale pattern in free space */
	t0 = mono_ns();
	written = fill_mib ? fill(fill_path, fill_mib * MIB, &fill_ext, &enospc) : 0;
	if (!fill_mib)
		enospc = 0;
	printf("{\"event\":\"fill\",\"bytes\":%" PRIu64 ",\"enospc\":%s,\"extents\":%zu,"
	       "\"seconds\":%.3f,\"free_wait_s\":%.3f}\n", written, enospc ? "true" : "false",
	       fill_ext.n, (double)(mono_ns() - t0) / 1e9, freed_wait_s);
	fflush(stdout);

	/* 2. unwritten extents, durable with their name */
	fd = open(path, O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		fail(4, "open", path);
	if (fallocate(fd, 0, 0, (off_t)size) < 0)
		fail(4, "fallocate", path);
	if (fsync(fd) < 0)
		fail(4, "fsync", path);
	fsync_dir_of(path);
	fiemap_extents(fd, path, &file_ext);
	reused = overlap_bytes(&fill_ext, &file_ext) / PAGE;
	printf("{\"event\":\"reuse\",\"reused_blocks\":%" PRIu64 ",\"blocks\":%" PRIu64
	       ",\"extents\":%zu}\n", reused, blocks, file_ext.n);
	fflush(stdout);

	mflags = map_sync ? (MAP_SHARED_VALIDATE | MAP_SYNC) : MAP_SHARED;
	map = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, mflags, fd, 0);
	if (map == MAP_FAILED) {
		int e = errno;
		fprintf(stderr, "unwritten: mmap: %s (%s)\n", errname(e), strerror(e));
		json_mmap_failed(e, map_sync);
		return 3;
	}
	printf("{\"event\":\"mmap\",\"ok\":true,\"map_sync\":%s}\n", map_sync ? "true" : "false");
	fflush(stdout);

	/* 3. the fallocated range reads zeros, both ways */
	for (uint64_t b = 0; b < blocks; b++) {
		pread_full(fd, page, PAGE, (off_t)(b * PAGE), path);
		if (has_fill_word(page, PAGE))
			blist_add(&stale_read, b);
		else if (!all_zero(page, PAGE))
			blist_add(&nonzero_read, b);
		memcpy(page, map + b * PAGE, PAGE);
		if (has_fill_word(page, PAGE))
			blist_add(&stale_map, b);
		else if (!all_zero(page, PAGE))
			blist_add(&nonzero_map, b);
	}
	printf("{\"event\":\"check\",\"stage\":\"fallocate\"");
	blist_print("stale_read", &stale_read);
	blist_print("stale_map", &stale_map);
	blist_print("nonzero_read", &nonzero_read);
	blist_print("nonzero_map", &nonzero_map);
	printf("}\n");
	fflush(stdout);
	emit_event("MARK", "checked");

	/* 4. partial-page stores, flushed, checked, acknowledged */
	for (uint64_t b = 0; b < blocks; b++) {
		volatile unsigned char *dst = map + b * PAGE + record_offset(b);
		uint64_t off = record_offset(b);
		int bad = 0;
		char arg[32];

		make_record(rec, b);
		for (unsigned j = 0; j < RECORD; j += 8) {
			uint64_t w;
			memcpy(&w, rec + j, 8);
			*(volatile uint64_t *)(dst + j) = w;
		}
		flush_range(flush, dst, RECORD);
		for (int via = 0; via < 2; via++) {
			int lost = 0, stale = 0, nonzero = 0;

			if (via == 0)
				memcpy(page, map + b * PAGE, PAGE);
			else
				pread_full(fd, page, PAGE, (off_t)(b * PAGE), path);
			lost = memcmp(page + off, rec, RECORD) != 0;
			memset(page + off, 0, RECORD);
			stale = has_fill_word(page, PAGE);
			nonzero = !stale && !all_zero(page, PAGE);
			if (lost)
				blist_add(&part_lost, b);
			if (stale)
				blist_add(&part_stale, b);
			if (nonzero)
				blist_add(&part_nonzero, b);
			if (lost || stale || nonzero) {
				/* Before the ACK: a host that saw the ACK saw this line's MARK. */
				printf("{\"event\":\"bad\",\"block\":%" PRIu64 ",\"via\":\"%s\","
				       "\"record_lost\":%s,\"stale\":%s,\"nonzero\":%s}\n",
				       b, via ? "pread" : "mmap", lost ? "true" : "false",
				       stale ? "true" : "false", nonzero ? "true" : "false");
				fflush(stdout);
				bad = 1;
			}
		}
		if (bad) {
			snprintf(arg, sizeof(arg), "bad-%" PRIu64, b);
			emit_event("MARK", arg);
		}
		snprintf(arg, sizeof(arg), "%" PRIu64, b);
		emit_event("ACK", arg);
	}
	printf("{\"event\":\"check\",\"stage\":\"partial\"");
	blist_print("stale", &part_stale);
	blist_print("nonzero", &part_nonzero);
	blist_print("lost", &part_lost);
	printf("}\n");
	printf("{\"event\":\"done\",\"blocks\":%" PRIu64 ",\"flush\":\"%s\"}\n", blocks,
	       flush_names[flush]);
	fflush(stdout);
	munmap(map, (size_t)size);
	close(fd);
	return 0;
}

/*
 * selfwrite: write(2) whose source buffer is a shared mapping of the very
 * file being written.
 *
 * Build: gcc -static -O2 -Wall -Wextra -Werror -o selfwrite selfwrite.c
 *
 * selfwrite --dir DIR [--size-pages N] [--pattern NAME]... [--inject-mismatch NAME]
 *
 * For each pattern (all of them unless --pattern names some), in DIR:
 *   1. three identical files of N pages: pages 0..N-2 hold a position-keyed
 *      byte pattern, page N-1 is a hole (ftruncate); each fsynced, and the
 *      test file's page cache dropped (POSIX_FADV_DONTNEED; nothing to drop
 *      under DAX), so the source pages are not resident;
 *   2. a fresh MAP_SHARED, PROT_READ mapping of the test file, never touched
 *      (the "-warm" patterns read one byte of each source page first);
 *   3. lseek(dst) + write(fd, map + src, len): the kernel faults the source
 *      in while it writes the same file - for a page cache file from inside
 *      write_begin/write_end, for DAX from inside the iomap copy;
 *   4. the same copy done through a malloc buffer on the reference files:
 *      "snapshot" reads the whole source, then writes it (memmove result);
 *      "in-order" copies forward in chunks no longer than dst - src, which
 *      is what a forward byte-order copy yields when the destination runs
 *      ahead of an overlapping source. The two differ only for a forward
 *      overlap; write(2) promises neither, so either is accepted there;
 *   5. the test file compared (size and bytes) with both references.
 *
 * stdout, JSON lines: {"event":"start",...,"patterns":[...]}, then per
 * pattern {"event":"begin","pattern":P} before its write (what a hang left)
 * and {"pattern":P,"ok":bool,"bytes":n,"mismatch_at":null|offset,...}
 * after it, then {"event":"done",...}. --inject-mismatch NAME flips one
 * byte of the written range after that pattern's write: a stand-in for a
 * kernel that wrote the wrong data, so the comparison's teeth can be tested. "MARK begin-P" / "MARK end-P" on
 * $PMEMLAB_EVENT_FD. Exit: 0 all ok, 1 some pattern not ok, 2 bad usage,
 * 4 file setup failed, 5 event channel write failed.
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
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PMEMLAB_PROG "selfwrite"
#define PMEMLAB_USAGE "usage: selfwrite --dir DIR [--size-pages N] [--pattern NAME]... " \
	"[--inject-mismatch NAME]\n"
#include "pmemlab.h"

#define PAGE 4096u
#define MIN_PAGES 4u
#define MAX_PAGES 4096u
#define MAX_SELECTED 64

struct pattern {
	const char *name;
	const char *what;
	uint64_t src, dst, len; /* bytes */
	int warm;               /* touch the source pages before write(2) */
};

static const char *dir;
static char test_path[PATH_MAX], snap_path[PATH_MAX], seq_path[PATH_MAX];
static const char *inject; /* --inject-mismatch: the pattern whose result is corrupted */

/* Byte j of data page p: position-keyed, so a byte copied from the wrong
 * place (or a stale one) shows up as a mismatch. */
static unsigned char pattern_byte(uint64_t p, uint64_t j)
{
	return (unsigned char)(((p + 1) * 97 + j * 31 + (j >> 8) * 7 + (j >> 11)) & 0xff);
}

static void pwrite_all(int fd, const unsigned char *buf, size_t n, off_t off, const char *path)
{
	while (n) {
		ssize_t w = pwrite(fd, buf, n, off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			if (w == 0)
				errno = EIO;
			fail(4, "pwrite", path);
		}
		buf += w;
		off += w;
		n -= (size_t)w;
	}
}

static void pread_all(int fd, unsigned char *buf, size_t n, off_t off, const char *path)
{
	while (n) {
		ssize_t r = pread(fd, buf, n, off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			fail(4, "pread", path);
		if (r == 0) { /* past EOF: zeros, like the hole it is */
			memset(buf, 0, n);
			return;
		}
		buf += r;
		off += r;
		n -= (size_t)r;
	}
}

/* A fresh file: pages 0..pages-2 of pattern data, the last page a hole. */
static int make_file(const char *path, uint64_t pages, unsigned char *page_buf, int drop_cache)
{
	int fd;

	unlink(path);
	fd = open(path, O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		fail(4, "open", path);
	for (uint64_t p = 0; p + 1 < pages; p++) {
		for (uint64_t j = 0; j < PAGE; j++)
			page_buf[j] = pattern_byte(p, j);
		pwrite_all(fd, page_buf, PAGE, (off_t)(p * PAGE), path);
	}
	if (ftruncate(fd, (off_t)(pages * PAGE)) < 0)
		fail(4, "ftruncate", path);
	if (fsync(fd) < 0)
		fail(4, "fsync", path);
	if (drop_cache)
		(void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	return fd;
}

/* The same copy through a separate buffer, `chunk` bytes at a time, forward. */
static void reference_copy(int fd, const char *path, const struct pattern *pt, uint64_t bytes,
			   uint64_t chunk, unsigned char *buf)
{
	for (uint64_t done = 0; done < bytes; done += chunk) {
		uint64_t n = bytes - done < chunk ? bytes - done : chunk;
		pread_all(fd, buf, (size_t)n, (off_t)(pt->src + done), path);
		pwrite_all(fd, buf, (size_t)n, (off_t)(pt->dst + done), path);
	}
}

/* First offset where the two files differ (size counts), or -1. */
static int64_t first_difference(int a, const char *a_path, int b, const char *b_path,
				unsigned char *abuf, unsigned char *bbuf, uint64_t cap)
{
	struct stat sa, sb;
	uint64_t common;

	if (fstat(a, &sa) < 0)
		fail(4, "fstat", a_path);
	if (fstat(b, &sb) < 0)
		fail(4, "fstat", b_path);
	common = (uint64_t)(sa.st_size < sb.st_size ? sa.st_size : sb.st_size);
	if (common > cap)
		common = cap;
	pread_all(a, abuf, (size_t)common, 0, a_path);
	pread_all(b, bbuf, (size_t)common, 0, b_path);
	for (uint64_t k = 0; k < common; k++)
		if (abuf[k] != bbuf[k])
			return (int64_t)k;
	if (sa.st_size != sb.st_size)
		return (int64_t)common;
	return -1;
}

static int file_is_dax(const char *path)
{
	struct statx stx;

	if (statx(AT_FDCWD, path, 0, STATX_BASIC_STATS, &stx) < 0)
		return -1;
	if (!(stx.stx_attributes_mask & STATX_ATTR_DAX))
		return 0;
	return !!(stx.stx_attributes & STATX_ATTR_DAX);
}

static void json_offset(const char *key, int64_t v)
{
	if (v < 0)
		printf(",\"%s\":null", key);
	else
		printf(",\"%s\":%" PRId64, key, v);
}

/* Run one pattern; returns 1 if ok. */
static int run_pattern(const struct pattern *pt, uint64_t pages, unsigned char *page_buf,
		       unsigned char *abuf, unsigned char *bbuf, uint64_t cap)
{
	uint64_t size = pages * PAGE, chunk;
	int fd, snap, seq, ok, err = 0;
	int64_t snap_diff, seq_diff, t0, t1;
	volatile unsigned char sink = 0;
	unsigned char *map;
	ssize_t n;
	char mark[128];

	fd = make_file(test_path, pages, page_buf, 1);
	snap = make_file(snap_path, pages, page_buf, 0);
	seq = make_file(seq_path, pages, page_buf, 0);

	map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		fail(4, "mmap", test_path);
	if (pt->warm)
		for (uint64_t a = pt->src & ~(uint64_t)(PAGE - 1); a < pt->src + pt->len; a += PAGE)
			sink ^= map[a];
	(void)sink;

	printf("{\"event\":\"begin\",\"pattern\":\"%s\"}\n", pt->name);
	fflush(stdout);
	snprintf(mark, sizeof(mark), "begin-%s", pt->name);
	emit_event("MARK", mark);
	if (lseek(fd, (off_t)pt->dst, SEEK_SET) < 0)
		fail(4, "lseek", test_path);
	t0 = mono_ns();
	n = write(fd, map + pt->src, (size_t)pt->len);
	t1 = mono_ns();
	if (n < 0)
		err = errno;
	snprintf(mark, sizeof(mark), "end-%s", pt->name);
	emit_event("MARK", mark);
	munmap(map, size);
	if (inject && !strcmp(inject, pt->name) && n > 0) {
		unsigned char b;
		off_t at = (off_t)(pt->dst + (uint64_t)n / 2);
		pread_all(fd, &b, 1, at, test_path);
		b ^= 0x5a;
		pwrite_all(fd, &b, 1, at, test_path);
	}

	/* The references copy what write(2) says it wrote. */
	if (n > 0) {
		reference_copy(snap, snap_path, pt, (uint64_t)n, (uint64_t)n, abuf);
		chunk = pt->dst > pt->src && pt->dst - pt->src < (uint64_t)n ? pt->dst - pt->src
									 : (uint64_t)n;
		reference_copy(seq, seq_path, pt, (uint64_t)n, chunk, abuf);
	}
	snap_diff = first_difference(fd, test_path, snap, snap_path, abuf, bbuf, cap);
	seq_diff = first_difference(fd, test_path, seq, seq_path, abuf, bbuf, cap);
	ok = n == (ssize_t)pt->len && (snap_diff < 0 || seq_diff < 0);

	printf("{\"pattern\":\"%s\",\"ok\":%s,\"bytes\":%zd,\"expected_bytes\":%" PRIu64
	       ",\"src\":%" PRIu64 ",\"dst\":%" PRIu64 ",\"warm\":%s",
	       pt->name, ok ? "true" : "false", n, pt->len, pt->src, pt->dst,
	       pt->warm ? "true" : "false");
	if (err)
		printf(",\"errno\":\"%s\"", errname(err));
	else
		printf(",\"errno\":null");
	printf(",\"matches\":%s", snap_diff < 0 ? "\"snapshot\"" : seq_diff < 0 ? "\"in-order\"" : "null");
	json_offset("mismatch_at", snap_diff < 0 || seq_diff < 0 ? -1 : snap_diff);
	json_offset("in_order_mismatch_at", seq_diff < 0 || snap_diff < 0 ? -1 : seq_diff);
	if (!ok && snap_diff >= 0 && seq_diff >= 0 && (uint64_t)snap_diff < cap) {
		/* The bytes at the first difference: file, snapshot reference. */
		unsigned char got = 0, want = 0;
		pread_all(fd, &got, 1, (off_t)snap_diff, test_path);
		pread_all(snap, &want, 1, (off_t)snap_diff, snap_path);
		printf(",\"got\":%u,\"want\":%u", got, want);
	}
	printf(",\"write_us\":%.1f,\"what\":\"%s\"}\n", (double)(t1 - t0) / 1000.0, pt->what);
	fflush(stdout);
	close(fd);
	close(snap);
	close(seq);
	unlink(test_path);
	unlink(snap_path);
	unlink(seq_path);
	return ok;
}

int main(int argc, char **argv)
{
	uint64_t pages = 4, cap;
	const char *selected[MAX_SELECTED];
	int n_selected = 0, failed = 0, ran = 0, dax;
	unsigned char *page_buf, *abuf, *bbuf;

	for (int i = 1; i < argc; i++) {
		const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(opt, "--dir")) {
			dir = parse_str(opt, val, "a path"); i++;
		} else if (!strcmp(opt, "--size-pages")) {
			pages = parse_u64(opt, val, "a page count"); i++;
		} else if (!strcmp(opt, "--inject-mismatch")) {
			inject = parse_str(opt, val, "a pattern name"); i++;
		} else if (!strcmp(opt, "--pattern")) {
			const char *name = parse_str(opt, val, "a name");
			if (n_selected == MAX_SELECTED)
				usage_error("at most %d --pattern options", MAX_SELECTED);
			selected[n_selected++] = name; i++;
		} else {
			usage_error("unknown option '%s'", opt);
		}
	}
	if (!dir)
		usage_error("--dir DIR is required");
	if (pages < MIN_PAGES || pages > MAX_PAGES)
		usage_error("--size-pages expects %u..%u, got %" PRIu64, MIN_PAGES, MAX_PAGES, pages);

	const uint64_t P = PAGE, N = pages;
	const struct pattern patterns[] = {
		{ "same-range", "source and destination the same bytes of page 0", 100, 100, 2000, 0 },
		{ "same-page-disjoint", "disjoint ranges of page 0", 0, 2048, 1024, 0 },
		{ "same-page-backward", "overlap in page 0, destination before source",
		  1100, 100, 2000, 0 },
		{ "same-page-forward", "overlap in page 0, destination after source",
		  100, 1100, 2000, 0 },
		{ "straddle-self", "the same bytes across the page 0/1 boundary",
		  P - 300, P - 300, 600, 0 },
		{ "whole-page-self", "all of page 1 onto itself (a full-page write needs no read)",
		  P, P, P, 0 },
		{ "whole-page-self-warm", "all of page 1 onto itself, source faulted in first",
		  P, P, P, 1 },
		{ "overlap-backward", "two pages, destination one page before the source",
		  P + 512, 512, 2 * P, 0 },
		{ "overlap-forward", "two pages, destination one page after the source",
		  512, P + 512, 2 * P, 0 },
		{ "disjoint-pages", "page 0 onto page 2", 0, 2 * P, P, 0 },
		{ "hole-self", "the hole page onto itself (allocates it while it is the source)",
		  (N - 1) * P, (N - 1) * P, P, 0 },
		{ "hole-to-data", "the hole page onto page 0", (N - 1) * P, 0, P, 0 },
		{ "extend", "pages 0-1 appended past EOF", 0, N * P, 2 * P, 0 },
		{ "shift-all-back", "the whole file one page back", P, 0, (N - 1) * P, 0 },
		{ "shift-all-forward", "the whole file one page forward", 0, P, (N - 1) * P, 0 },
	};
	const int n_patterns = (int)(sizeof(patterns) / sizeof(patterns[0]));

	for (int s = 0; s <= n_selected; s++) {
		const char *name = s < n_selected ? selected[s] : inject;
		int found = 0;
		if (!name)
			continue;
		for (int k = 0; k < n_patterns; k++)
			found |= !strcmp(name, patterns[k].name);
		if (!found)
			usage_error("unknown pattern '%s'", name);
	}
	setup_event_fd();
	snprintf(test_path, sizeof(test_path), "%s/selfwrite.dat", dir);
	snprintf(snap_path, sizeof(snap_path), "%s/selfwrite.snapshot.ref", dir);
	snprintf(seq_path, sizeof(seq_path), "%s/selfwrite.in-order.ref", dir);
	cap = (N + 4) * P; /* the largest file any pattern makes: N + 2 pages */
	page_buf = malloc(PAGE);
	abuf = malloc((size_t)cap);
	bbuf = malloc((size_t)cap);
	if (!page_buf || !abuf || !bbuf) {
		fprintf(stderr, "selfwrite: out of memory\n");
		return 4;
	}
	close(make_file(test_path, 1 + 1, page_buf, 0)); /* a file to ask statx about */
	dax = file_is_dax(test_path);
	unlink(test_path);

	printf("{\"event\":\"start\",\"size_pages\":%" PRIu64 ",\"dax\":%s,\"patterns\":[", N,
	       dax < 0 ? "null" : dax ? "true" : "false");
	for (int k = 0, first = 1; k < n_patterns; k++) {
		int want = !n_selected;
		for (int s = 0; s < n_selected; s++)
			want |= !strcmp(selected[s], patterns[k].name);
		if (want) {
			printf("%s\"%s\"", first ? "" : ",", patterns[k].name);
			first = 0;
		}
	}
	printf("]}\n");
	fflush(stdout);

	for (int k = 0; k < n_patterns; k++) {
		int want = !n_selected;
		for (int s = 0; s < n_selected; s++)
			want |= !strcmp(selected[s], patterns[k].name);
		if (!want)
			continue;
		ran++;
		failed += !run_pattern(&patterns[k], N, page_buf, abuf, bbuf, cap);
	}
	printf("{\"event\":\"done\",\"patterns\":%d,\"failed\":%d}\n", ran, failed);
	fflush(stdout);
	free(page_buf);
	free(abuf);
	free(bbuf);
	return failed ? 1 : 0;
}

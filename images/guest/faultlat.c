/*
 * faultlat: page-fault latency of the first store to each page of a DAX
 * mapping, and the background file copy that loads the filesystem meanwhile.
 *
 * Build: gcc -static -O2 -Wall -Wextra -Werror -o faultlat faultlat.c
 *
 * faultlat measure --file PATH --pages N [--setup empty|fallocate|written]
 *                  [--no-map-sync] [--huge] [--warmup W]
 *
 *   First warms the fault path up: W pages (default 8) of a scratch file set
 *   up and mapped exactly like the measured one take their faults untimed,
 *   so an emulator's first translation of that kernel code (milliseconds
 *   under TCG) is not in the samples. Then creates PATH with N pages, set
 *   up as --setup says:
 *     empty      ftruncate to size: every first store allocates a block
 *     fallocate  fallocate: blocks allocated as unwritten extents, which
 *                the first store converts to written
 *     written    zeros written through write(2): written blocks, so a first
 *                store needs no block mapping metadata at all
 *   (--prealloc is the old spelling of --setup fallocate), fsyncs it so the
 *   setup is committed before the first sample,
 *   maps it (MAP_SHARED_VALIDATE|MAP_SYNC unless --no-map-sync;
 *   MADV_NOHUGEPAGE unless --huge, so every page takes its own fault as in
 *   the reference measurement), then times one 8-byte store to the start of
 *   each page in turn with CLOCK_MONOTONIC.
 *   stdout: {"event":"mmap",...} then {"event":"done",...,"samples_ns":[...]}.
 *
 * faultlat copy --src PATH --dst PATH [--mib M] [--rounds R]
 *
 *   Writes an M MiB source file (default 16) once, then copies it to DST
 *   (open O_TRUNC, 1 MiB read/write chunks, close) round after round: R
 *   rounds, or until killed when R is 0 (the default). "MARK copy-running"
 *   on $PMEMLAB_EVENT_FD once the first chunk of the first round is written;
 *   stdout: one {"event":"round",...} line per finished round.
 *
 * Events (both modes): "MARK <name> <mono_ns>" lines on $PMEMLAB_EVENT_FD.
 * Exit: 0 ok, 2 bad usage, 3 mmap failed, 4 file setup or copy I/O failed,
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
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define PMEMLAB_PROG "faultlat"
#define PMEMLAB_USAGE "usage: faultlat measure --file PATH --pages N [--setup empty|fallocate|written]" \
	" [--no-map-sync] [--huge] [--warmup W]\n" \
	"       faultlat copy --src PATH --dst PATH [--mib M] [--rounds R]\n"
#include "pmemlab.h"

#define PAGE 4096u
#define CHUNK (1u << 20)
#define MAX_PAGES (1u << 20)
#define MAX_MIB 1024u

/* How the measured file's blocks are set up before mapping. */
enum setup { SETUP_EMPTY, SETUP_FALLOCATE, SETUP_WRITTEN };
static const char *const setup_names[] = { "empty", "fallocate", "written" };

static enum setup parse_setup(const char *opt, const char *val)
{
	for (unsigned i = 0; i < sizeof(setup_names) / sizeof(setup_names[0]); i++)
		if (val && !strcmp(val, setup_names[i]))
			return (enum setup)i;
	usage_error("%s expects empty, fallocate or written, got '%s'", opt, val ? val : "");
}

static void write_all(int fd, const unsigned char *buf, size_t n, const char *path);

/* Page faults so far. Both kinds count: a DAX fault that allocates a block
 * reports itself as major, one finished by MAP_SYNC's sync path as minor. */
static long page_faults(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) < 0)
		return -1;
	return ru.ru_minflt + ru.ru_majflt;
}

/* The cheapest back-to-back clock read: what every sample includes anyway. */
static int64_t clock_overhead_ns(void)
{
	int64_t best = INT64_MAX;

	for (int k = 0; k < 200; k++) {
		int64_t a = mono_ns(), b = mono_ns();
		if (b - a < best)
			best = b - a;
	}
	return best;
}

/* Zeros through write(2), a chunk at a time: the blocks end up written. */
static void write_zeros(int fd, size_t size, const char *path)
{
	static const unsigned char zeros[64 * 1024];

	while (size) {
		size_t n = size < sizeof(zeros) ? size : sizeof(zeros);
		write_all(fd, zeros, n, path);
		size -= n;
	}
}

/* PATH with `size` bytes, set up as measured and committed; exits on failure. */
static int setup_file(const char *path, size_t size, enum setup setup)
{
	int fd = open(path, O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0)
		fail(4, "open", path);
	switch (setup) {
	case SETUP_EMPTY:
		if (ftruncate(fd, (off_t)size) < 0)
			fail(4, "ftruncate", path);
		break;
	case SETUP_FALLOCATE:
		if (fallocate(fd, 0, 0, (off_t)size) < 0)
			fail(4, "fallocate", path);
		break;
	case SETUP_WRITTEN:
		write_zeros(fd, size, path);
		break;
	}
	/* Commit the file's creation and size (and extents) now, so that the
	 * first MAP_SYNC fault does not pay for the setup. */
	if (fsync(fd) < 0)
		fail(4, "fsync", path);
	return fd;
}

/* Untimed first stores to a scratch file like the measured one. */
static void warm_up(const char *path, uint64_t pages, enum setup setup, int mflags, int huge)
{
	char scratch[PATH_MAX];
	size_t size = (size_t)pages * PAGE;
	unsigned char *map;
	int fd;

	if (!pages)
		return;
	if (snprintf(scratch, sizeof(scratch), "%s.warmup", path) >= (int)sizeof(scratch))
		usage_error("--file path too long");
	fd = setup_file(scratch, size, setup);
	map = mmap(NULL, size, PROT_READ | PROT_WRITE, mflags, fd, 0);
	if (map != MAP_FAILED) { /* a failure shows again, and is reported, below */
		if (!huge)
			(void)madvise(map, size, MADV_NOHUGEPAGE);
		for (uint64_t p = 0; p < pages; p++)
			*(volatile uint64_t *)(map + p * PAGE) = p;
		munmap(map, size);
	}
	close(fd);
	if (unlink(scratch) < 0)
		fail(4, "unlink", scratch);
}

static int measure(int argc, char **argv)
{
	const char *path = NULL;
	uint64_t pages = 0, warmup = 8;
	enum setup setup = SETUP_EMPTY;
	int map_sync = 1, huge = 0, nohuge_ok = 0, fd, mflags;
	long flt0, flt1;
	int64_t overhead, *samples;
	unsigned char *map;
	size_t size;

	for (int i = 2; i < argc; i++) {
		const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(opt, "--file")) {
			path = parse_str(opt, val, "a path"); i++;
		} else if (!strcmp(opt, "--pages")) {
			pages = parse_u64(opt, val, "a page count"); i++;
		} else if (!strcmp(opt, "--setup")) {
			setup = parse_setup(opt, val); i++;
		} else if (!strcmp(opt, "--prealloc")) {
			setup = SETUP_FALLOCATE;
		} else if (!strcmp(opt, "--no-map-sync")) {
			map_sync = 0;
		} else if (!strcmp(opt, "--huge")) {
			huge = 1;
		} else if (!strcmp(opt, "--warmup")) {
			warmup = parse_u64(opt, val, "a page count"); i++;
		} else {
			usage_error("measure: unknown option '%s'", opt);
		}
	}
	if (!path)
		usage_error("measure: --file PATH is required");
	if (pages < 1 || pages > MAX_PAGES)
		usage_error("--pages expects 1..%u, got %" PRIu64, MAX_PAGES, pages);
	if (warmup > MAX_PAGES)
		usage_error("--warmup expects 0..%u, got %" PRIu64, MAX_PAGES, warmup);
	size = (size_t)pages * PAGE;
	samples = calloc((size_t)pages, sizeof(*samples));
	if (!samples) {
		fprintf(stderr, "faultlat: out of memory\n");
		return 4;
	}
	setup_event_fd();

	mflags = map_sync ? (MAP_SHARED_VALIDATE | MAP_SYNC) : MAP_SHARED;
	warm_up(path, warmup, setup, mflags, huge);
	fd = setup_file(path, size, setup);
	map = mmap(NULL, size, PROT_READ | PROT_WRITE, mflags, fd, 0);
	if (map == MAP_FAILED) {
		int e = errno;
		fprintf(stderr, "faultlat: mmap: %s (%s)\n", errname(e), strerror(e));
		json_mmap_failed(e, map_sync);
		return 3;
	}
	if (!huge)
		nohuge_ok = madvise(map, size, MADV_NOHUGEPAGE) == 0;
	printf("{\"event\":\"mmap\",\"ok\":true,\"map_sync\":%s,\"file\":\"%s\",\"huge\":%s}\n",
	       map_sync ? "true" : "false", setup_names[setup],
	       huge || !nohuge_ok ? "true" : "false");
	fflush(stdout);
	overhead = clock_overhead_ns();
	emit_event("MARK", "measure-start");

	flt0 = page_faults();
	for (uint64_t p = 0; p < pages; p++) {
		volatile uint64_t *dst = (volatile uint64_t *)(map + p * PAGE);
		int64_t t0, t1;

		t0 = mono_ns();
		*dst = 0x706d656d6c616231ULL ^ p; /* the first store: the fault */
		t1 = mono_ns();
		samples[p] = t1 - t0;
	}
	flt1 = page_faults();
	emit_event("MARK", "measure-done");

	printf("{\"event\":\"done\",\"pages\":%" PRIu64 ",\"map_sync\":%s,\"file\":\"%s\","
	       "\"huge\":%s,\"warmup\":%" PRIu64 ",\"faults\":%ld,\"clock_overhead_ns\":%" PRId64
	       ",\"samples_ns\":[",
	       pages, map_sync ? "true" : "false", setup_names[setup],
	       huge || !nohuge_ok ? "true" : "false", warmup,
	       flt0 >= 0 && flt1 >= 0 ? flt1 - flt0 : -1L, overhead);
	for (uint64_t p = 0; p < pages; p++)
		printf("%s%" PRId64, p ? "," : "", samples[p]);
	printf("]}\n");
	fflush(stdout);
	munmap(map, size);
	close(fd);
	free(samples);
	return 0;
}

static void write_all(int fd, const unsigned char *buf, size_t n, const char *path)
{
	while (n) {
		ssize_t w = write(fd, buf, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			if (w == 0)
				errno = EIO;
			fail(4, "write", path);
		}
		buf += w;
		n -= (size_t)w;
	}
}

static int copy(int argc, char **argv)
{
	const char *src = NULL, *dst = NULL;
	uint64_t mib = 16, rounds = 0;
	unsigned char *buf;
	int fd, announced = 0;

	for (int i = 2; i < argc; i++) {
		const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(opt, "--src")) {
			src = parse_str(opt, val, "a path"); i++;
		} else if (!strcmp(opt, "--dst")) {
			dst = parse_str(opt, val, "a path"); i++;
		} else if (!strcmp(opt, "--mib")) {
			mib = parse_u64(opt, val, "a size in MiB"); i++;
		} else if (!strcmp(opt, "--rounds")) {
			rounds = parse_u64(opt, val, "a round count (0: until killed)"); i++;
		} else {
			usage_error("copy: unknown option '%s'", opt);
		}
	}
	if (!src || !dst)
		usage_error("copy: --src PATH and --dst PATH are required");
	if (mib < 1 || mib > MAX_MIB)
		usage_error("--mib expects 1..%u, got %" PRIu64, MAX_MIB, mib);
	setup_event_fd();
	buf = malloc(CHUNK);
	if (!buf) {
		fprintf(stderr, "faultlat: out of memory\n");
		return 4;
	}

	fd = open(src, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		fail(4, "open", src);
	for (uint64_t c = 0; c < mib; c++) {
		for (size_t j = 0; j < CHUNK; j++)
			buf[j] = (unsigned char)((c * 131 + j * 7 + (j >> 12)) & 0xff);
		write_all(fd, buf, CHUNK, src);
	}
	if (fsync(fd) < 0)
		fail(4, "fsync", src);
	close(fd);

	for (uint64_t r = 1; rounds == 0 || r <= rounds; r++) {
		int64_t t0 = mono_ns();
		uint64_t total = 0;
		int in = open(src, O_RDONLY | O_CLOEXEC);
		int out = open(dst, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);

		if (in < 0)
			fail(4, "open", src);
		if (out < 0)
			fail(4, "open", dst);
		for (;;) {
			ssize_t n = read(in, buf, CHUNK);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				fail(4, "read", src);
			if (n == 0)
				break;
			write_all(out, buf, (size_t)n, dst);
			total += (uint64_t)n;
			if (!announced) {
				emit_event("MARK", "copy-running");
				announced = 1;
			}
		}
		close(in);
		close(out);
		printf("{\"event\":\"round\",\"round\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"us\":%" PRId64 "}\n",
		       r, total, (mono_ns() - t0) / 1000);
		fflush(stdout);
	}
	free(buf);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		usage_error("a mode is required: measure or copy");
	if (!strcmp(argv[1], "measure"))
		return measure(argc, argv);
	if (!strcmp(argv[1], "copy"))
		return copy(argc, argv);
	usage_error("unknown mode '%s'; expected measure or copy", argv[1]);
}

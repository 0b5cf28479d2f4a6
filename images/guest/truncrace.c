/*
 * truncrace: DAX page faults racing truncation.
 *
 * Build: gcc -static -O2 -Wall -Wextra -Werror -o truncrace truncrace.c
 *
 * truncrace --file PATH [--pages N] [--threads T] [--seconds S]
 *           [--progress-ms M] [--seed X] [--inject-stale]
 *
 * The case of "Fix XIP fault vs truncate race" (the XIP-to-DAX rewrite): a
 * page fault that maps a block while a truncate frees it. T writer threads
 * store to random pages of a MAP_SHARED mapping of PATH (N pages, every page
 * written and the file fsync'd first); the main thread truncates the file
 * down to a random page boundary and back up to N pages, again and again,
 * for S seconds.
 *
 * - A store beyond EOF raises SIGBUS: each writer catches it with
 *   sigsetjmp/siglongjmp and counts it ("sigbus").
 * - Before each re-extension the writers are parked (no store is in flight),
 *   then every page beyond the truncation point is read through the mapping
 *   and with pread(2) right after the file grew back: it must be all zeros.
 *   A nonzero byte there is stale data ("stale"): a block the truncation
 *   freed came back with its old contents, or a store that raced the
 *   truncation through a page table entry the truncation should have torn
 *   down landed in it. A SIGBUS on one of these reads (inside EOF, nothing
 *   truncating) is counted as "check_sigbus".
 *
 * --inject-stale is the lab's self-test of this check: after each
 * re-extension it stores a nonzero word into the first page beyond the
 * truncation point before the check reads it, so every check must fail.
 *
 * Events ($PMEMLAB_EVENT_FD): "MARK running" once every thread runs (the
 * host times its power cut from it), "MARK stale" for each of the first 16
 * stale pages.
 *
 * stdout, JSON lines: {"event":"start",...}; {"event":"progress",...} every M
 * ms (default 200: the power cut kills the helper, so the host keeps the last
 * counts it read); {"event":"stale",...} for each of the first 16 stale
 * pages; at the end {"event":"done","stores":..,"sigbus":..,"truncates":..,
 * "stale":..,"check_sigbus":..}.
 *
 * Exit: 0 ran to the end (stale pages are reported, not an exit status),
 * 2 bad usage, 4 file setup failed, 5 event channel write failed,
 * 6 a truncate or a thread failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PMEMLAB_PROG "truncrace"
#define PMEMLAB_USAGE "usage: truncrace --file PATH [--pages N] [--threads T] [--seconds S] " \
	"[--progress-ms M] [--seed X] [--inject-stale]\n"
#include "pmemlab.h"

#define PAGE 4096u
#define WORDS (PAGE / 8u)
#define MAX_THREADS 64
#define MAX_PAGES (1u << 20)
#define STALE_REPORTS 16
#define HOLD_US 300 /* longest a truncated state is held before re-extension */
#define RUN_US 1500 /* longest the writers run on the full-size file */

static atomic_int stop_flag;
static atomic_int pause_req;
static pthread_mutex_t park_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t park_cond = PTHREAD_COND_INITIALIZER;
static int parked; /* guarded by park_lock */
static atomic_int started;

static atomic_uint_fast64_t n_stores, n_sigbus;

static __thread sigjmp_buf fault_jmp;
static __thread volatile sig_atomic_t fault_armed;

static unsigned char *map;
static uint64_t n_pages;

static double parse_seconds(const char *opt, const char *val)
{
	char *end;
	double v;

	if (!val)
		usage_error("%s needs a value: seconds", opt);
	errno = 0;
	v = strtod(val, &end);
	if (errno || *end || !(v > 0) || v > 86400)
		usage_error("%s expects seconds in (0, 86400], got '%s'", opt, val);
	return v;
}

/* xorshift64*: a fast per-thread generator; never seeded with 0. */
static uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1DULL;
}

/* SIGBUS is synchronous: it is delivered to the thread whose access faulted. */
static void on_sigbus(int sig)
{
	if (fault_armed) {
		fault_armed = 0;
		siglongjmp(fault_jmp, 1);
	}
	signal(sig, SIG_DFL); /* not one of ours: die of it */
	raise(sig);
}

/* A writer stops at the park point while the main thread re-extends and checks. */
static void park(void)
{
	pthread_mutex_lock(&park_lock);
	parked++;
	pthread_cond_broadcast(&park_cond);
	while (atomic_load(&pause_req) && !atomic_load(&stop_flag))
		pthread_cond_wait(&park_cond, &park_lock);
	parked--;
	pthread_mutex_unlock(&park_lock);
}

static void park_writers(int threads)
{
	pthread_mutex_lock(&park_lock);
	atomic_store(&pause_req, 1);
	while (parked < threads)
		pthread_cond_wait(&park_cond, &park_lock);
	pthread_mutex_unlock(&park_lock);
}

static void release_writers(void)
{
	pthread_mutex_lock(&park_lock);
	atomic_store(&pause_req, 0);
	pthread_cond_broadcast(&park_cond);
	pthread_mutex_unlock(&park_lock);
}

struct writer {
	pthread_t tid;
	unsigned id;
	uint64_t seed;
};

/* 0: stored; 1: SIGBUS. Its own frame, so that siglongjmp clobbers nothing of the caller's. */
static __attribute__((noinline)) int guarded_store(volatile uint64_t *dst, uint64_t value)
{
	if (sigsetjmp(fault_jmp, 1) != 0)
		return 1;
	fault_armed = 1;
	*dst = value;
	fault_armed = 0;
	return 0;
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	uint64_t rng = w->seed | 1, seq = 0;

	atomic_fetch_add(&started, 1);
	while (!atomic_load(&stop_flag)) {
		uint64_t r, page, slot, value;

		if (atomic_load(&pause_req)) {
			park();
			continue;
		}
		r = rng_next(&rng);
		page = r % n_pages;
		slot = (r >> 32) % WORDS;
		/* Never zero: a nonzero word beyond a truncation point is stale. */
		value = 0xA5ULL << 56 | (uint64_t)w->id << 48 | (++seq & 0xFFFFFFFFFFFFULL);
		if (guarded_store((volatile uint64_t *)(map + page * PAGE) + slot, value))
			atomic_fetch_add_explicit(&n_sigbus, 1, memory_order_relaxed);
		else
			atomic_fetch_add_explicit(&n_stores, 1, memory_order_relaxed);
	}
	return NULL;
}

/* First nonzero word of a page read through the mapping; -1 none, -2 SIGBUS. */
static __attribute__((noinline)) int64_t first_nonzero_mapped(uint64_t page, uint64_t *value)
{
	volatile uint64_t *p = (volatile uint64_t *)(map + page * PAGE);

	if (sigsetjmp(fault_jmp, 1) != 0)
		return -2;
	fault_armed = 1;
	for (uint64_t k = 0; k < WORDS; k++) {
		uint64_t v = p[k];
		if (v) {
			fault_armed = 0;
			*value = v;
			return (int64_t)k;
		}
	}
	fault_armed = 0;
	return -1;
}

static int64_t first_nonzero_read(int fd, uint64_t page, uint64_t *value, int *err)
{
	uint64_t buf[WORDS];
	size_t done = 0;

	*err = 0;
	while (done < PAGE) {
		ssize_t n = pread(fd, (char *)buf + done, PAGE - done, (off_t)(page * PAGE + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			*err = n < 0 ? errno : EIO;
			return -1;
		}
		done += (size_t)n;
	}
	for (uint64_t k = 0; k < WORDS; k++) {
		if (buf[k]) {
			*value = buf[k];
			return (int64_t)k;
		}
	}
	return -1;
}

struct counts {
	uint64_t truncates, stale, check_sigbus, read_errors;
};

static void print_counts(const char *event, const struct counts *c, int64_t t0)
{
	printf("{\"event\":\"%s\",\"elapsed_s\":%.3f,\"stores\":%" PRIu64 ",\"sigbus\":%" PRIu64
	       ",\"truncates\":%" PRIu64 ",\"stale\":%" PRIu64 ",\"check_sigbus\":%" PRIu64
	       ",\"read_errors\":%" PRIu64 "}\n",
	       event, (double)(mono_ns() - t0) / 1e9,
	       (uint64_t)atomic_load(&n_stores), (uint64_t)atomic_load(&n_sigbus),
	       c->truncates, c->stale, c->check_sigbus, c->read_errors);
	fflush(stdout);
}

static void report_stale(struct counts *c, uint64_t page, uint64_t cut, const char *via,
			 int64_t word, uint64_t value)
{
	c->stale++;
	if (c->stale > STALE_REPORTS)
		return;
	printf("{\"event\":\"stale\",\"truncate\":%" PRIu64 ",\"page\":%" PRIu64
	       ",\"cut_pages\":%" PRIu64 ",\"via\":\"%s\",\"offset\":%" PRId64
	       ",\"value\":\"0x%016" PRIx64 "\"}\n",
	       c->truncates, page, cut, via, word * 8, value);
	fflush(stdout);
	emit_event("MARK", "stale");
}

static int must_truncate(int fd, uint64_t size)
{
	while (ftruncate(fd, (off_t)size) < 0) {
		if (errno == EINTR)
			continue;
		fprintf(stderr, "truncrace: ftruncate to %" PRIu64 ": %s (%s)\n", size,
			errname(errno), strerror(errno));
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *path = NULL;
	uint64_t threads = 2, progress_ms = 200, seed = 1, rng;
	double seconds = 5.0;
	struct writer writers[MAX_THREADS];
	struct counts c = { 0, 0, 0, 0 };
	struct sigaction sa;
	int64_t t0, end, next_progress;
	char *dir_copy;
	int fd, dfd, rc = 0, inject_stale = 0;

	n_pages = 64;
	for (int i = 1; i < argc; i++) {
		const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(opt, "--file")) {
			path = parse_str(opt, val, "a path"); i++;
		} else if (!strcmp(opt, "--pages")) {
			n_pages = parse_u64(opt, val, "a page count >= 2"); i++;
		} else if (!strcmp(opt, "--threads")) {
			threads = parse_u64(opt, val, "a thread count >= 1"); i++;
		} else if (!strcmp(opt, "--seconds")) {
			seconds = parse_seconds(opt, val); i++;
		} else if (!strcmp(opt, "--progress-ms")) {
			progress_ms = parse_u64(opt, val, "milliseconds >= 10"); i++;
		} else if (!strcmp(opt, "--seed")) {
			seed = parse_u64(opt, val, "an unsigned integer"); i++;
		} else if (!strcmp(opt, "--inject-stale")) {
			inject_stale = 1;
		} else {
			usage_error("unknown option '%s'", opt);
		}
	}
	if (!path)
		usage_error("--file PATH is required");
	if (n_pages < 2 || n_pages > MAX_PAGES)
		usage_error("--pages expects 2..%u, got %" PRIu64, MAX_PAGES, n_pages);
	if (threads < 1 || threads > MAX_THREADS)
		usage_error("--threads expects 1..%d, got %" PRIu64, MAX_THREADS, threads);
	if (progress_ms < 10)
		usage_error("--progress-ms expects at least 10, got %" PRIu64, progress_ms);
	setup_event_fd();
	rng = (seed * 0x9E3779B97F4A7C15ULL) | 1;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sigbus;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_NODEFER;
	if (sigaction(SIGBUS, &sa, NULL) < 0) {
		fprintf(stderr, "truncrace: sigaction: %s\n", errname(errno));
		return 4;
	}

	fd = open(path, O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		fail(4, "open", path);
	if (must_truncate(fd, n_pages * PAGE) < 0)
		return 4;
	map = mmap(NULL, (size_t)(n_pages * PAGE), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		fprintf(stderr, "truncrace: mmap: %s (%s)\n", errname(errno), strerror(errno));
		return 4;
	}
	/* Every page holds data, and the file and its name are durable before the race. */
	for (uint64_t p = 0; p < n_pages; p++)
		for (uint64_t k = 0; k < WORDS; k++)
			((volatile uint64_t *)(map + p * PAGE))[k] = 0x5AULL << 56 | p << 16 | k;
	dir_copy = strdup(path);
	dfd = dir_copy ? open(dirname(dir_copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	if (fsync(fd) < 0 || dfd < 0 || fsync(dfd) < 0)
		fail(4, "fsync", path);
	close(dfd);
	free(dir_copy);
	printf("{\"event\":\"start\",\"pages\":%" PRIu64 ",\"threads\":%" PRIu64
	       ",\"seconds\":%.3f,\"seed\":%" PRIu64 "}\n", n_pages, threads, seconds, seed);
	fflush(stdout);

	for (uint64_t t = 0; t < threads; t++) {
		writers[t].id = (unsigned)t + 1;
		writers[t].seed = rng_next(&rng);
		errno = pthread_create(&writers[t].tid, NULL, writer_main, &writers[t]);
		if (errno) {
			fprintf(stderr, "truncrace: pthread_create: %s\n", errname(errno));
			return 6;
		}
	}
	while (atomic_load(&started) < (int)threads)
		sleep_us(100);
	emit_event("MARK", "running");

	t0 = mono_ns();
	end = t0 + (int64_t)(seconds * 1e9);
	next_progress = t0 + (int64_t)progress_ms * 1000000;
	while (mono_ns() < end) {
		uint64_t cut = rng_next(&rng) % n_pages; /* pages kept: 0..N-1 */

		if (must_truncate(fd, cut * PAGE) < 0) {
			rc = 6;
			break;
		}
		c.truncates++;
		sleep_us(rng_next(&rng) % (HOLD_US + 1)); /* writers hit the new EOF */

		park_writers((int)threads);
		if (must_truncate(fd, n_pages * PAGE) < 0) {
			release_writers();
			rc = 6;
			break;
		}
		if (inject_stale)
			((volatile uint64_t *)(map + cut * PAGE))[0] = 0x5EEDULL;
		for (uint64_t p = cut; p < n_pages; p++) {
			uint64_t v = 0;
			int64_t k = first_nonzero_mapped(p, &v);
			int err;

			if (k == -2)
				c.check_sigbus++;
			else if (k >= 0)
				report_stale(&c, p, cut, "mmap", k, v);
			k = first_nonzero_read(fd, p, &v, &err);
			if (err)
				c.read_errors++;
			else if (k >= 0)
				report_stale(&c, p, cut, "pread", k, v);
		}
		release_writers();
		sleep_us(rng_next(&rng) % (RUN_US + 1)); /* writers fault the holes back in */

		if (mono_ns() >= next_progress) {
			print_counts("progress", &c, t0);
			next_progress = mono_ns() + (int64_t)progress_ms * 1000000;
		}
	}

	atomic_store(&stop_flag, 1);
	release_writers();
	for (uint64_t t = 0; t < threads; t++)
		pthread_join(writers[t].tid, NULL);
	print_counts("done", &c, t0);
	munmap(map, (size_t)(n_pages * PAGE));
	close(fd);
	return rc;
}

/*
 * pmemlab.h: what the pmemlab guest helpers share. Header only: every
 * function is static (and marked unused, so a helper that needs only some
 * of them still builds with -Wall -Wextra -Werror).
 *
 * A helper defines _GNU_SOURCE before any #include, and before including
 * this header:
 *   PMEMLAB_PROG   its name, the prefix of its messages ("mapsync")
 *   PMEMLAB_USAGE  (optional) its usage text, ending in "\n"; with it come
 *                  usage_error(), parse_u64() and the cache flush helpers
 *
 *   errname(e)            the errno's name ("EOPNOTSUPP"), or "E<n>"
 *   mono_ns()             CLOCK_MONOTONIC in nanoseconds
 *   sleep_us(us)          sleep, resumed after signals
 *   fail(code, what, p)   "PROG: what p: ENAME (text)" on stderr, exit(code)
 *   setup_event_fd()      take the event channel from $PMEMLAB_EVENT_FD
 *   emit_event(kind, arg) "kind arg <mono_ns>" on it, one write(); exit 5 on failure
 *   put_le32/put_le64     little-endian stores into a byte buffer
 *   fnv1a64(p, n)         FNV-1a-64 of n bytes
 *   json_string(s)        s as a JSON string on stdout
 *   json_mmap_failed(e, map_sync)  {"event":"mmap","ok":false,...} on stdout
 *   usage_error(fmt, ...) "PROG: message", then the usage; exit 2
 *   parse_str(opt, val, what)    a non-empty option value, or "OPT needs WHAT"
 *   parse_u64(opt, val, expect)  a decimal option value, or a usage error
 *                         "OPT expects EXPECT, got 'VAL'"
 *   parse_flush(val), resolve_flush(want), flush_range(kind, p, len):
 *                         --flush auto|clwb|clflushopt|clflush|none, checked
 *                         against CPUID, and the flush of a range + fence
 */
#ifndef PMEMLAB_H
#define PMEMLAB_H

#ifndef _GNU_SOURCE
#error "define _GNU_SOURCE before any #include"
#endif
#ifndef PMEMLAB_PROG
#error "define PMEMLAB_PROG (the helper's name) before including pmemlab.h"
#endif

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
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
#ifndef STATX_ATTR_DAX
#define STATX_ATTR_DAX 0x00200000
#endif

#define CACHE_LINE 64u

#define PMEMLAB_UNUSED __attribute__((unused))

/* The event channel; -1: none (run by hand). */
static int event_fd PMEMLAB_UNUSED = -1;

static PMEMLAB_UNUSED const char *errname(int e)
{
	static char buf[16];
	const char *n;

	if (e == EOPNOTSUPP)
		return "EOPNOTSUPP"; /* == ENOTSUP on Linux; one spelling */
	n = strerrorname_np(e);
	if (n)
		return n;
	snprintf(buf, sizeof(buf), "E%d", e);
	return buf;
}

static PMEMLAB_UNUSED int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static PMEMLAB_UNUSED void sleep_us(uint64_t us)
{
	struct timespec ts = { (time_t)(us / 1000000), (long)(us % 1000000) * 1000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void fail(int code, const char *what, const char *path) __attribute__((unused, noreturn));
static void fail(int code, const char *what, const char *path)
{
	int e = errno;

	fprintf(stderr, PMEMLAB_PROG ": %s %s: %s (%s)\n", what, path, errname(e), strerror(e));
	exit(code);
}

/* One event line, one write(), so lines from many writers stay whole. */
static PMEMLAB_UNUSED void emit_event(const char *kind, const char *arg)
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
		fprintf(stderr, PMEMLAB_PROG ": write event to fd %d: %s\n", event_fd,
			w < 0 ? errname(errno) : "short write");
		exit(5);
	}
}

static PMEMLAB_UNUSED void setup_event_fd(void)
{
	const char *env = getenv("PMEMLAB_EVENT_FD");
	char *end;
	long v;

	if (!env || !*env)
		return; /* run by hand: no events, not an error */
	errno = 0;
	v = strtol(env, &end, 10);
	if (errno || *end || v < 0 || v > INT_MAX) {
		fprintf(stderr, PMEMLAB_PROG ": PMEMLAB_EVENT_FD=%s is not an fd number\n", env);
		exit(2);
	}
	event_fd = (int)v;
}

static PMEMLAB_UNUSED void put_le32(unsigned char *p, uint32_t v)
{
	for (int k = 0; k < 4; k++)
		p[k] = (unsigned char)(v >> (8 * k));
}

static PMEMLAB_UNUSED void put_le64(unsigned char *p, uint64_t v)
{
	for (int k = 0; k < 8; k++)
		p[k] = (unsigned char)(v >> (8 * k));
}

static PMEMLAB_UNUSED uint64_t fnv1a64(const unsigned char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t k = 0; k < n; k++) {
		h ^= p[k];
		h *= 0x100000001b3ULL;
	}
	return h;
}

/* A path is bytes; escape what JSON cannot carry raw. */
static PMEMLAB_UNUSED void json_string(const char *s)
{
	putchar('"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			printf("\\u%04x", *p);
		else
			putchar(*p);
	}
	putchar('"');
}

/* The mmap line of a refused mapping (stdout, flushed): the host reads the errno from it. */
static PMEMLAB_UNUSED void json_mmap_failed(int e, int map_sync)
{
	printf("{\"event\":\"mmap\",\"ok\":false,\"errno\":\"%s\",\"map_sync\":%s}\n",
	       errname(e), map_sync ? "true" : "false");
	fflush(stdout);
}

#ifdef PMEMLAB_USAGE

static void usage_error(const char *fmt, ...)
	__attribute__((format(printf, 1, 2), noreturn, unused));
static void usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs(PMEMLAB_PROG ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\n" PMEMLAB_USAGE, stderr);
	exit(2);
}

/* A non-empty option value, or the usage error "OPT needs WHAT". */
static PMEMLAB_UNUSED const char *parse_str(const char *opt, const char *val, const char *what)
{
	if (!val || !*val)
		usage_error("%s needs %s", opt, what);
	return val;
}

static PMEMLAB_UNUSED uint64_t parse_u64(const char *opt, const char *val, const char *expect)
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

/* -- cache line flushes --------------------------------------------------- */

/* FLUSH_NT (after FLUSH_NONE: parse_flush does not accept it): a program that writes with
 * non-temporal stores itself (mapsync --flush nt) only needs the fence. */
enum flush_kind { FLUSH_AUTO, FLUSH_CLWB, FLUSH_CLFLUSHOPT, FLUSH_CLFLUSH, FLUSH_NONE, FLUSH_NT };
static const char *const flush_names[] PMEMLAB_UNUSED = {
	"auto", "clwb", "clflushopt", "clflush", "none", "nt"
};

/* The value of --flush. */
static PMEMLAB_UNUSED enum flush_kind parse_flush(const char *val)
{
	int k;

	if (!val)
		usage_error("--flush needs one of auto|clwb|clflushopt|clflush|none");
	for (k = 0; k <= FLUSH_NONE; k++)
		if (!strcmp(val, flush_names[k]))
			break;
	if (k > FLUSH_NONE)
		usage_error("--flush expects auto|clwb|clflushopt|clflush|none, got '%s'", val);
	return (enum flush_kind)k;
}

/* CPUID leaf 7 EBX: bit 23 CLFLUSHOPT, bit 24 CLWB. */
static PMEMLAB_UNUSED unsigned cpuid7_ebx(void)
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

/* auto: the best instruction this CPU has; an explicit one it lacks is a usage error. */
static PMEMLAB_UNUSED enum flush_kind resolve_flush(enum flush_kind want)
{
	unsigned ebx = cpuid7_ebx();
	int has_clwb = !!(ebx & (1u << 24)), has_clflushopt = !!(ebx & (1u << 23));

	if (!HAVE_X86 && want != FLUSH_NONE) {
		if (want == FLUSH_AUTO)
			return FLUSH_NONE;
		usage_error("--flush %s needs an x86 CPU; use --flush none", flush_names[want]);
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

/* Push every cache line of [p, p+len) toward memory (no fence: store_fence orders them). */
static PMEMLAB_UNUSED void flush_lines(enum flush_kind kind, volatile unsigned char *p, size_t len)
{
#if HAVE_X86
	uintptr_t start = (uintptr_t)p & ~(uintptr_t)(CACHE_LINE - 1);
	uintptr_t end = (uintptr_t)p + len;

	switch (kind) {
	case FLUSH_CLWB:
		for (uintptr_t a = start; a < end; a += CACHE_LINE)
			__asm__ volatile("clwb %0" : "+m"(*(volatile char *)a));
		break;
	case FLUSH_CLFLUSHOPT:
		for (uintptr_t a = start; a < end; a += CACHE_LINE)
			__asm__ volatile("clflushopt %0" : "+m"(*(volatile char *)a));
		break;
	case FLUSH_CLFLUSH:
		for (uintptr_t a = start; a < end; a += CACHE_LINE)
			__asm__ volatile("clflush %0" : "+m"(*(volatile char *)a));
		break;
	default:
		break;
	}
#else
	(void)kind; (void)p; (void)len;
#endif
	__asm__ volatile("" ::: "memory");
}

/* The fence that makes flushed lines (and non-temporal stores) persistent. */
static PMEMLAB_UNUSED void store_fence(enum flush_kind kind)
{
#if HAVE_X86
	if (kind == FLUSH_CLFLUSH)
		__asm__ volatile("mfence" ::: "memory");
	else if (kind != FLUSH_NONE)
		__asm__ volatile("sfence" ::: "memory");
	else
		__asm__ volatile("" ::: "memory");
#else
	(void)kind;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
}

/* Push every cache line of [p, p+len) toward memory, then order it. */
static PMEMLAB_UNUSED void flush_range(enum flush_kind kind, volatile unsigned char *p, size_t len)
{
	flush_lines(kind, p, len);
	store_fence(kind);
}

#endif /* PMEMLAB_USAGE */

#endif /* PMEMLAB_H */

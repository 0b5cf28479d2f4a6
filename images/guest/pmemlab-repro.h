/*
 * pmemlab-repro.h: events for a bring-your-own reproducer (`pmemlab run script REPRO.c`).
 * Header only, no other pmemlab code needed:
 *
 *   #include "pmemlab-repro.h"
 *   pmemlab_ack(n);         "ACK n": the host may cut right after it reads it (--cut-after-ack)
 *   pmemlab_mark("name");   "MARK name": --cut-at-mark name, or time offsets from it
 *
 * The lab compiles the reproducer statically with this header on the include path. Run by
 * hand (no $PMEMLAB_EVENT_FD), both are no-ops. A shell reproducer uses the guest command
 * `pmemlab-event ACK n` / `pmemlab-event MARK name` instead.
 */
#ifndef PMEMLAB_REPRO_H
#define PMEMLAB_REPRO_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int pmemlab_event_fd(void)
{
	static int fd = -2;

	if (fd == -2) {
		const char *env = getenv("PMEMLAB_EVENT_FD");

		fd = env && *env ? atoi(env) : -1;
	}
	return fd;
}

/* "KIND ARG <CLOCK_MONOTONIC ns>\n" in one write(), as the lab's own helpers do. */
static __attribute__((unused)) void pmemlab_event(const char *kind, const char *arg)
{
	struct timespec ts;
	char line[256];
	int fd = pmemlab_event_fd(), n;

	if (fd < 0)
		return;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	n = snprintf(line, sizeof(line), "%s %s %lld\n", kind, arg,
		     (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
	while (write(fd, line, (size_t)n) != n) {
		if (errno != EINTR) {
			perror("pmemlab_event: write");
			exit(5); /* a lost ACK would quietly move the crash point */
		}
	}
}

static __attribute__((unused)) void pmemlab_ack(unsigned long n)
{
	char arg[32];

	snprintf(arg, sizeof(arg), "%lu", n);
	pmemlab_event("ACK", arg);
}

static __attribute__((unused)) void pmemlab_mark(const char *name)
{
	pmemlab_event("MARK", name);
}

#endif

/*
 * pmemlab-statx: is this file DAX? One JSON line from statx(2).
 *
 * Build: gcc -static -O2 -Wall -Wextra -Werror -o pmemlab-statx statx.c
 *
 * pmemlab-statx PATH
 *   {"path":"...","dax":true|false,"attributes":"0x...","attributes_mask":"0x..."}
 * Exit 0, or 1 with "statx: ERRNONAME" on stderr, 2 on bad usage.
 * "dax" is STATX_ATTR_DAX in stx_attributes: the kernel says the file's
 * data goes straight to persistent memory (no page cache).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define PMEMLAB_PROG "pmemlab-statx"
#include "pmemlab.h"

int main(int argc, char **argv)
{
	struct statx stx;

	if (argc != 2) {
		fprintf(stderr, "usage: pmemlab-statx PATH\n");
		return 2;
	}
	memset(&stx, 0, sizeof(stx));
	if (statx(AT_FDCWD, argv[1], 0, STATX_BASIC_STATS, &stx) < 0) {
		int e = errno;
		fprintf(stderr, "statx: %s (%s: %s)\n", errname(e), argv[1], strerror(e));
		return 1;
	}
	printf("{\"path\":");
	json_string(argv[1]);
	printf(",\"dax\":%s,\"attributes\":\"0x%llx\",\"attributes_mask\":\"0x%llx\"}\n",
	       (stx.stx_attributes & STATX_ATTR_DAX) ? "true" : "false",
	       (unsigned long long)stx.stx_attributes,
	       (unsigned long long)stx.stx_attributes_mask);
	return 0;
}

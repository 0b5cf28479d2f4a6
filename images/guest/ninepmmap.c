/*
 * ninepmmap: shared mappings of a file on a 9p share, for the ninep-mmap check.
 *
 * Build: gcc -static -O2 -Wall -Wextra -Werror -o ninepmmap ninepmmap.c
 *
 * ninepmmap write --file PATH --size N --seed S
 *     Create/size PATH, map it MAP_SHARED with PROT_READ|PROT_WRITE, store
 *     the pattern of seed S, msync(MS_SYNC), munmap, close. One JSON line:
 *     {"op":"write","size":N,"seed":S,"mmap_errno":null|"EINVAL",
 *      "msync_errno":null|"...","fnv":"0x..."}
 *     A refused mmap is an answer, not an error: it is printed, exit 0.
 *
 * ninepmmap read --file PATH --size N [--prot r|rw]
 *     Open PATH, map it MAP_SHARED (PROT_READ, or PROT_READ|PROT_WRITE with
 *     --prot rw on an O_RDWR descriptor), copy N bytes out of the mapping.
 *     {"op":"read","size":N,"prot":"r","mmap_errno":null,"hex":"..."}
 *
 * Pattern of seed S: byte j = (S*131 + j*7 + (j >> 8)) & 0xff (the host
 * computes the same bytes). fnv: FNV-1a-64 of the N stored bytes.
 * Exit: 0 the call was made (see the JSON), 1 open/size/stat failed,
 * 2 bad usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define PMEMLAB_PROG "ninepmmap"
#include "pmemlab.h"

#define MAX_SIZE (1u << 20)

static void usage_error(const char *msg, const char *arg)
{
	fprintf(stderr, "ninepmmap: %s%s%s\n"
		"usage: ninepmmap write --file PATH --size N --seed S\n"
		"       ninepmmap read --file PATH --size N [--prot r|rw]\n",
		msg, arg ? ": " : "", arg ? arg : "");
	exit(2);
}

static unsigned long parse_ul(const char *opt, const char *val, unsigned long max)
{
	char *end;
	unsigned long v;

	if (!val || *val < '0' || *val > '9')
		usage_error("expects a number", opt);
	errno = 0;
	v = strtoul(val, &end, 10);
	if (errno || *end || v > max)
		usage_error("number out of range", opt);
	return v;
}

static unsigned char pattern(unsigned long seed, unsigned long j)
{
	return (unsigned char)((seed * 131 + j * 7 + (j >> 8)) & 0xff);
}

static int do_write(const char *path, size_t size, unsigned long seed)
{
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644), msync_err = 0;
	unsigned char *map;
	uint64_t fnv;

	if (fd < 0)
		fail(1, "open", path);
	if (ftruncate(fd, (off_t)size) < 0)
		fail(1, "ftruncate", path);
	map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		printf("{\"op\":\"write\",\"size\":%zu,\"seed\":%lu,\"mmap_errno\":\"%s\",\"msync_errno\":null,"
		       "\"fnv\":null}\n", size, seed, errname(errno));
		close(fd);
		return 0;
	}
	for (size_t j = 0; j < size; j++)
		map[j] = pattern(seed, j);
	fnv = fnv1a64(map, size);
	if (msync(map, size, MS_SYNC) < 0)
		msync_err = errno;
	munmap(map, size);
	close(fd);
	printf("{\"op\":\"write\",\"size\":%zu,\"seed\":%lu,\"mmap_errno\":null,", size, seed);
	if (msync_err)
		printf("\"msync_errno\":\"%s\",", errname(msync_err));
	else
		printf("\"msync_errno\":null,");
	printf("\"fnv\":\"0x%016llx\"}\n", (unsigned long long)fnv);
	return 0;
}

static int do_read(const char *path, size_t size, int rw)
{
	int fd = open(path, (rw ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	unsigned char *map, *copy;
	struct stat st;

	if (fd < 0)
		fail(1, "open", path);
	if (fstat(fd, &st) < 0)
		fail(1, "fstat", path);
	if ((size_t)st.st_size < size)
		size = (size_t)st.st_size; /* never touch past EOF (SIGBUS) */
	if (size == 0) {
		printf("{\"op\":\"read\",\"size\":0,\"prot\":\"%s\",\"mmap_errno\":null,\"hex\":\"\"}\n",
		       rw ? "rw" : "r");
		close(fd);
		return 0;
	}
	map = mmap(NULL, size, rw ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		printf("{\"op\":\"read\",\"size\":%zu,\"prot\":\"%s\",\"mmap_errno\":\"%s\",\"hex\":null}\n",
		       size, rw ? "rw" : "r", errname(errno));
		close(fd);
		return 0;
	}
	copy = malloc(size);
	if (!copy)
		fail(1, "malloc", path);
	memcpy(copy, map, size);
	munmap(map, size);
	close(fd);
	printf("{\"op\":\"read\",\"size\":%zu,\"prot\":\"%s\",\"mmap_errno\":null,\"hex\":\"", size,
	       rw ? "rw" : "r");
	for (size_t j = 0; j < size; j++)
		printf("%02x", copy[j]);
	printf("\"}\n");
	free(copy);
	return 0;
}

int main(int argc, char **argv)
{
	const char *path = NULL, *op;
	unsigned long size = 0, seed = 0;
	int have_size = 0, have_seed = 0, rw = 0;

	if (argc < 2)
		usage_error("missing operation", NULL);
	op = argv[1];
	if (strcmp(op, "write") && strcmp(op, "read"))
		usage_error("unknown operation", op);
	for (int i = 2; i < argc; i++) {
		const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(opt, "--file")) {
			if (!val || !*val)
				usage_error("--file needs a path", NULL);
			path = val;
		} else if (!strcmp(opt, "--size")) {
			size = parse_ul(opt, val, MAX_SIZE);
			have_size = 1;
		} else if (!strcmp(opt, "--seed")) {
			seed = parse_ul(opt, val, 1ul << 30);
			have_seed = 1;
		} else if (!strcmp(opt, "--prot")) {
			if (!val || (strcmp(val, "r") && strcmp(val, "rw")))
				usage_error("--prot expects r or rw", val);
			rw = !strcmp(val, "rw");
		} else {
			usage_error("unknown option", opt);
		}
		i++;
	}
	if (!path || !have_size || size == 0)
		usage_error("--file and --size (> 0) are required", NULL);
	if (!strcmp(op, "write")) {
		if (!have_seed)
			usage_error("write needs --seed", NULL);
		return do_write(path, size, seed);
	}
	return do_read(path, size, rw);
}

/*
 * A bring-your-own reproducer (`pmemlab run script`, scenarios/script-map-shared.toml) for the
 * lab's seed experiment: stores through a plain MAP_SHARED mapping (no MAP_SYNC) of an empty
 * file on a DAX filesystem are acknowledged as soon as they are made. Each first store to a
 * page allocates a block; without MAP_SYNC that allocation sits in the uncommitted journal, so
 * a power cut loses records the program had already reported done (LAB-NOTES: 0 of 86
 * acknowledged records survived on ext4). With MAP_SYNC the same program keeps every record.
 *
 * argv[1]: the mounted filesystem. Writes repro.dat, page i starting with "record NNNNN\n",
 * ACK i after each store (pmemlab-repro.h).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "pmemlab-repro.h"

#define RECORDS 40
#define PAGE 4096

int main(int argc, char **argv)
{
	char path[4096], text[32];
	char *map;
	int fd, i;

	if (argc != 2) {
		fprintf(stderr, "usage: %s MOUNTPOINT\n", argv[0]);
		return 2;
	}
	snprintf(path, sizeof(path), "%s/repro.dat", argv[1]);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || ftruncate(fd, RECORDS * PAGE) != 0) {
		perror(path);
		return 1;
	}
	map = mmap(NULL, RECORDS * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	pmemlab_mark("mapped");
	for (i = 0; i < RECORDS; i++) {
		int n = snprintf(text, sizeof(text), "record %05d\n", i);

		memcpy(map + (size_t)i * PAGE, text, (size_t)n);
		pmemlab_ack((unsigned long)i);
		usleep(20000); /* spread the ACKs so a cut lands mid-run */
	}
	return 0;
}

/*
 * mmapcontract: what mmap(2) answers for MAP_SHARED_VALIDATE / MAP_SYNC.
 *
 * Build: gcc -static -O2 -Wall -Wextra -Werror -o mmapcontract mmapcontract.c
 *
 * mmapcontract --dir DIR [--probe NAME]...
 *
 * Runs each probe (all of them unless --probe names some) on a fresh file
 * DIR/mmapcontract-NAME.dat of one page, and prints one JSON line per probe:
 *
 *   {"probe":"validate-sync","flags":"MAP_SHARED_VALIDATE|MAP_SYNC",
 *    "flags_hex":"0x80003","file_dax":true,"xflag_dax":false,
 *    "errno":null,"vm_sync":true,"stored":true}
 *
 * file_dax   STATX_ATTR_DAX of the file just before the mmap call
 * xflag_dax  FS_XFLAG_DAX of the file (FS_IOC_FSGETXATTR) just before it
 * errno      null when mmap succeeded, else its name ("EOPNOTSUPP")
 * vm_sync    on success: the mapping's VmFlags in /proc/self/smaps carry
 *            "sf" (VM_SYNC, synchronous page faults); null on failure
 * stored     on success: a store through the mapping (a write fault; with
 *            VM_SYNC a synchronous one) completed; null on failure
 *
 * A probe that could not be set up prints {"probe":...,"error":"..."}
 * instead, and the exit status is 1. Exit: 0 every probe ran (whatever mmap
 * answered), 1 some probe could not be set up, 2 bad usage.
 *
 * Probes:
 *   validate-plain      MAP_SHARED_VALIDATE                (no extension flag)
 *   validate-sync       MAP_SHARED_VALIDATE|MAP_SYNC       (file as created)
 *   shared-sync         MAP_SHARED|MAP_SYNC                (MAP_SHARED does not validate)
 *   validate-undefined  MAP_SHARED_VALIDATE|0x200000       (a bit no 6.1 header defines)
 *   xflag-dax-sync      MAP_SHARED_VALIDATE|MAP_SYNC on a file whose FS_XFLAG_DAX
 *                       was set (FS_IOC_FSSETXATTR) while it was empty; the flag
 *                       takes effect when the inode is next instantiated, so the
 *                       file is closed (the kernel marks it I_DONTCACHE) and, if
 *                       statx still says non-DAX, caches are dropped once
 *                       ("reload" says which was needed).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define PMEMLAB_PROG "mmapcontract"
#include "pmemlab.h"

#ifndef FS_XFLAG_DAX
#define FS_XFLAG_DAX 0x00008000
#endif
/*
 * Undefined in Linux 6.1 (include/uapi/asm-generic/mman*.h, arch/x86 mman.h):
 * MAP_SYNC is 0x80000, MAP_FIXED_NOREPLACE 0x100000, MAP_UNINITIALIZED
 * 0x4000000; bits 0x200000..0x2000000 are unused.
 */
#define MAP_UNDEFINED_BIT 0x200000

#define PAGE 4096

enum file_kind { FILE_PLAIN, FILE_XFLAG_DAX };

struct probe {
	const char *name;
	int flags;
	const char *flags_text;
	enum file_kind file;
};

static const struct probe probes[] = {
	{ "validate-plain", MAP_SHARED_VALIDATE, "MAP_SHARED_VALIDATE", FILE_PLAIN },
	{ "validate-sync", MAP_SHARED_VALIDATE | MAP_SYNC, "MAP_SHARED_VALIDATE|MAP_SYNC", FILE_PLAIN },
	{ "shared-sync", MAP_SHARED | MAP_SYNC, "MAP_SHARED|MAP_SYNC", FILE_PLAIN },
	{ "validate-undefined", MAP_SHARED_VALIDATE | MAP_UNDEFINED_BIT, "MAP_SHARED_VALIDATE|0x200000",
	  FILE_PLAIN },
	{ "xflag-dax-sync", MAP_SHARED_VALIDATE | MAP_SYNC, "MAP_SHARED_VALIDATE|MAP_SYNC", FILE_XFLAG_DAX },
};
#define N_PROBES (sizeof(probes) / sizeof(probes[0]))

static void usage_error(const char *msg, const char *arg)
{
	fprintf(stderr, "mmapcontract: %s%s%s\nusage: mmapcontract --dir DIR [--probe NAME]...\nprobes:",
		msg, arg ? ": " : "", arg ? arg : "");
	for (size_t i = 0; i < N_PROBES; i++)
		fprintf(stderr, " %s", probes[i].name);
	fputc('\n', stderr);
	exit(2);
}

static int statx_dax(const char *path, int *dax)
{
	struct statx stx;

	memset(&stx, 0, sizeof(stx));
	if (statx(AT_FDCWD, path, 0, STATX_BASIC_STATS, &stx) < 0)
		return -1;
	*dax = !!(stx.stx_attributes & STATX_ATTR_DAX);
	return 0;
}

static int get_xflag_dax(int fd, int *set)
{
	struct fsxattr fa;

	if (ioctl(fd, FS_IOC_FSGETXATTR, &fa) < 0)
		return -1;
	*set = !!(fa.fsx_xflags & FS_XFLAG_DAX);
	return 0;
}

static int set_xflag_dax(int fd)
{
	struct fsxattr fa;

	if (ioctl(fd, FS_IOC_FSGETXATTR, &fa) < 0)
		return -1;
	fa.fsx_xflags |= FS_XFLAG_DAX;
	return ioctl(fd, FS_IOC_FSSETXATTR, &fa);
}

static int drop_caches(void)
{
	int fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
	int ok;

	sync();
	if (fd < 0)
		return -1;
	ok = write(fd, "2\n", 2) == 2;
	close(fd);
	return ok ? 0 : -1;
}

/* VmFlags of the smaps entry that starts at addr: does it carry "sf" (VM_SYNC)? -1: not found. */
static int smaps_vm_sync(void *addr)
{
	FILE *f = fopen("/proc/self/smaps", "re");
	char line[512];
	int in_vma = 0, found = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long start, end;

		if (sscanf(line, "%lx-%lx ", &start, &end) == 2 && strchr(line, '-') < strchr(line, ' ')) {
			in_vma = start == (unsigned long)(uintptr_t)addr;
			continue;
		}
		if (in_vma && !strncmp(line, "VmFlags:", 8)) {
			found = 0;
			for (char *tok = strtok(line + 8, " \n"); tok; tok = strtok(NULL, " \n"))
				if (!strcmp(tok, "sf"))
					found = 1;
			break;
		}
	}
	fclose(f);
	return found;
}

static void print_error(const struct probe *p, const char *what, int e)
{
	printf("{\"probe\":\"%s\",\"flags\":\"%s\",\"error\":\"%s: %s\"}\n", p->name, p->flags_text, what,
	       errname(e));
	fflush(stdout);
}

/* Returns 0 if the probe ran (whatever mmap answered), -1 if it could not be set up. */
static int run_probe(const struct probe *p, const char *dir)
{
	char path[4096];
	const char *reload = "none";
	int fd, file_dax = 0, xflag = 0, err = 0, vm_sync = -1, stored = 0;
	void *map;

	if (snprintf(path, sizeof(path), "%s/mmapcontract-%s.dat", dir, p->name) >= (int)sizeof(path)) {
		print_error(p, "path", ENAMETOOLONG);
		return -1;
	}
	unlink(path);
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		print_error(p, "open", errno);
		return -1;
	}
	if (p->file == FILE_XFLAG_DAX) {
		/* Set while the file is empty, then let the inode be instantiated again. */
		if (set_xflag_dax(fd) < 0) {
			print_error(p, "FS_IOC_FSSETXATTR", errno);
			close(fd);
			return -1;
		}
		close(fd);
		if (statx_dax(path, &file_dax) < 0) {
			print_error(p, "statx", errno);
			return -1;
		}
		reload = "dontcache";
		if (!file_dax) {
			if (drop_caches() < 0) {
				print_error(p, "drop_caches", errno);
				return -1;
			}
			reload = "drop_caches";
		}
		fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd < 0) {
			print_error(p, "reopen", errno);
			return -1;
		}
	}
	if (ftruncate(fd, PAGE) < 0) {
		print_error(p, "ftruncate", errno);
		close(fd);
		return -1;
	}
	if (statx_dax(path, &file_dax) < 0) {
		print_error(p, "statx", errno);
		close(fd);
		return -1;
	}
	if (get_xflag_dax(fd, &xflag) < 0) {
		print_error(p, "FS_IOC_FSGETXATTR", errno);
		close(fd);
		return -1;
	}
	map = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, p->flags, fd, 0);
	if (map == MAP_FAILED) {
		err = errno;
	} else {
		vm_sync = smaps_vm_sync(map);
		((volatile unsigned char *)map)[0] = 0xa5;
		((volatile unsigned char *)map)[PAGE - 1] = 0x5a;
		stored = 1;
		munmap(map, PAGE);
	}
	close(fd);
	printf("{\"probe\":\"%s\",\"flags\":\"%s\",\"flags_hex\":\"0x%x\",\"file_dax\":%s,\"xflag_dax\":%s,",
	       p->name, p->flags_text, (unsigned)p->flags, file_dax ? "true" : "false", xflag ? "true" : "false");
	if (err)
		printf("\"errno\":\"%s\",\"vm_sync\":null,\"stored\":null", errname(err));
	else
		printf("\"errno\":null,\"vm_sync\":%s,\"stored\":%s",
		       vm_sync < 0 ? "null" : vm_sync ? "true" : "false", stored ? "true" : "false");
	printf(",\"reload\":\"%s\"}\n", reload);
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv)
{
	const char *dir = NULL;
	int selected[N_PROBES] = { 0 }, any_selected = 0, status = 0;

	for (int i = 1; i < argc; i++) {
		const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(opt, "--dir")) {
			if (!val || !*val)
				usage_error("--dir needs a directory", NULL);
			dir = val;
			i++;
		} else if (!strcmp(opt, "--probe")) {
			size_t k;

			if (!val)
				usage_error("--probe needs a name", NULL);
			for (k = 0; k < N_PROBES; k++)
				if (!strcmp(val, probes[k].name))
					break;
			if (k == N_PROBES)
				usage_error("unknown probe", val);
			selected[k] = any_selected = 1;
			i++;
		} else {
			usage_error("unknown option", opt);
		}
	}
	if (!dir)
		usage_error("--dir DIR is required", NULL);
	for (size_t k = 0; k < N_PROBES; k++)
		if (!any_selected || selected[k])
			if (run_probe(&probes[k], dir) < 0)
				status = 1;
	return status;
}

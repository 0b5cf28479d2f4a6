/*
 * pmemlab-agent: the guest side of the pmemlab agent channel (protocol v1).
 *
 * Build: gcc -static -O2 -Wall -Wextra -Werror -o pmemlab-agent agent.c
 *
 * Usage:
 *   pmemlab-agent                       find the virtio ports by name
 *   pmemlab-agent --agent-fd N --events-fd M [--no-kmsg] [--no-poweroff]
 *                                       use already-open fds (host testing)
 *   pmemlab-agent event TYPE ARG        write "TYPE ARG <mono_ns>\n" to the
 *   pmemlab-event TYPE ARG              fd named by $PMEMLAB_EVENT_FD
 *
 * Agent port framing, both directions: u32 BE payload length, u8 type,
 * u32 BE request id, payload (at most 1 MiB).
 *   host->guest: 'P' ping, 'R' run, 'K' kill, 'Q' poweroff
 *   guest->host: 'Y' ready, 'p' pong, 'O' stdout, 'E' stderr/error,
 *                'S' status
 *
 * The agent may be PID 1, so it never exits on errors: it reaps every
 * zombie, survives the host hanging up, and keeps retrying.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PMEMLAB_PROG "pmemlab-agent"
#include "pmemlab.h"

#define AGENT_PORT "pmemlab.agent"
#define EVENTS_PORT "pmemlab.events"
#define VERSION_STRING "pmemlab-agent 1"
#define HDR_LEN 9
#define MAX_PAYLOAD (1u << 20)
#define CHUNK 65536
#define TICK_MS 50
#define HUP_PAUSE_NS 100000000LL   /* 100 ms after the host hangs up */
#define PIPE_GRACE_NS 1000000000LL /* give up on pipes 1 s after a kill */
#define OUTQ_HIGH (4u << 20)       /* stop reading children above this */
#define PORT_WAIT_NS 15000000000LL /* port discovery deadline */

struct run {
	struct run *next;
	uint32_t id;
	pid_t pid;
	int out_fd, err_fd;     /* -1 once at EOF (or given up) */
	int64_t deadline_ns;
	int64_t killed_ns;      /* 0 until we sent SIGKILL */
	int reaped;
	int wstatus;
	int timed_out;
};

static int agent_fd = -1;
static int events_fd = -1;
static int kmsg_fd = -1;
static int no_poweroff;
static int sigchld_pipe[2] = {-1, -1};
static struct run *runs;

/* Host-bound frames wait here; written as the port accepts them. */
static unsigned char *outq;
static size_t outq_len, outq_cap;

/* Host->guest bytes not yet forming a whole frame. */
static unsigned char inbuf[HDR_LEN + MAX_PAYLOAD];
static size_t inbuf_len;

static int64_t hup_until_ns; /* agent fd is left alone until then */

static void put_u32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static uint32_t get_u32(const unsigned char *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
	       ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static void put_u64(unsigned char *p, uint64_t v)
{
	put_u32(p, (uint32_t)(v >> 32));
	put_u32(p + 4, (uint32_t)v);
}

/* Diagnostics go to stderr (the console when PID 1); never fatal. */
static void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logmsg(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(buf))
		n = sizeof(buf) - 1;
	if (write(STDERR_FILENO, buf, (size_t)n) < 0) {
		/* nowhere left to report it */
	}
}

/* Kernel log lines mark test boundaries in the guest's dmesg. */
static void kmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void kmsg(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	if (kmsg_fd < 0)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(buf))
		n = sizeof(buf) - 1;
	if (write(kmsg_fd, buf, (size_t)n) < 0) {
		/* the kernel log is a convenience only */
	}
}

static void outq_reserve(size_t extra)
{
	size_t want = outq_len + extra;
	unsigned char *p;

	if (want <= outq_cap)
		return;
	if (outq_cap == 0)
		outq_cap = CHUNK * 2;
	while (outq_cap < want)
		outq_cap *= 2;
	/* Out of memory: keep trying rather than die (we may be PID 1). */
	while (!(p = realloc(outq, outq_cap))) {
		logmsg("pmemlab-agent: out of memory for output queue\n");
		sleep(1);
	}
	outq = p;
}

/* Write as much of the queue as the port takes now, without blocking. */
static void flush_outq(void)
{
	size_t off = 0;

	if (agent_fd < 0 || mono_ns() < hup_until_ns)
		return;
	while (off < outq_len) {
		ssize_t n = write(agent_fd, outq + off, outq_len - off);
		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		/* A hard error (EPIPE, EIO): the host side is gone; what was
		 * queued for it is lost with it. Pause, then try again. */
		off = outq_len;
		hup_until_ns = mono_ns() + HUP_PAUSE_NS;
		inbuf_len = 0;
		break;
	}
	memmove(outq, outq + off, outq_len - off);
	outq_len -= off;
}

static void send_frame(char type, uint32_t id, const void *payload, size_t len)
{
	outq_reserve(HDR_LEN + len);
	put_u32(outq + outq_len, (uint32_t)len);
	outq[outq_len + 4] = (unsigned char)type;
	put_u32(outq + outq_len + 5, id);
	if (len)
		memcpy(outq + outq_len + HDR_LEN, payload, len);
	outq_len += HDR_LEN + len;
	flush_outq();
}

static void send_text(char type, uint32_t id, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void send_text(char type, uint32_t id, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(buf))
		n = sizeof(buf) - 1;
	send_frame(type, id, buf, (size_t)n);
}

static void send_status(struct run *r)
{
	unsigned char p[9];
	int32_t code = -1, sig = 0;

	if (WIFEXITED(r->wstatus))
		code = WEXITSTATUS(r->wstatus);
	else if (WIFSIGNALED(r->wstatus))
		sig = WTERMSIG(r->wstatus);
	put_u32(p, (uint32_t)code);
	put_u32(p + 4, (uint32_t)sig);
	p[8] = (unsigned char)(r->timed_out ? 1 : 0);
	send_frame('S', r->id, p, sizeof(p));
}

static struct run *find_run(uint32_t id)
{
	struct run *r;

	for (r = runs; r; r = r->next)
		if (r->id == id)
			return r;
	return NULL;
}

/* SIGKILL the whole process group; the pid itself too, in case the child
 * has not reached setsid() yet. */
static void kill_run(struct run *r)
{
	if (r->pid > 0) {
		kill(-r->pid, SIGKILL);
		if (!r->reaped)
			kill(r->pid, SIGKILL);
	}
	if (!r->killed_ns)
		r->killed_ns = mono_ns();
}

static void set_cloexec(int fd, int on)
{
	int fl = fcntl(fd, F_GETFD);

	if (fl < 0)
		return;
	fcntl(fd, F_SETFD, on ? (fl | FD_CLOEXEC) : (fl & ~FD_CLOEXEC));
}

static void set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl >= 0)
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void child_exec(char **argv, int out_w, int err_w)
{
	char fdbuf[16];
	int devnull;

	setsid();
	signal(SIGPIPE, SIG_DFL);
	signal(SIGCHLD, SIG_DFL);
	devnull = open("/dev/null", O_RDONLY);
	if (devnull >= 0) {
		dup2(devnull, STDIN_FILENO);
		if (devnull != STDIN_FILENO)
			close(devnull);
	} else {
		close(STDIN_FILENO);
	}
	dup2(out_w, STDOUT_FILENO);
	dup2(err_w, STDERR_FILENO);
	snprintf(fdbuf, sizeof(fdbuf), "%d", events_fd);
	setenv("PMEMLAB_EVENT_FD", fdbuf, 1);
	execvp(argv[0], argv);
	{
		char msg[512];
		int n = snprintf(msg, sizeof(msg), "pmemlab-agent: exec %s: %s\n",
				 argv[0], strerror(errno));
		if (n > 0 && write(STDERR_FILENO, msg,
				   (size_t)n < sizeof(msg) ? (size_t)n
							   : sizeof(msg) - 1) < 0) {
			/* nothing more to do */
		}
	}
	_exit(127);
}

/* A RUN the agent cannot start still gets an answer: message + STATUS 127. */
static void refuse_run(uint32_t id, const char *why)
{
	unsigned char p[9];

	send_text('E', id, "pmemlab-agent: cannot run: %s\n", why);
	put_u32(p, 127);
	put_u32(p + 4, 0);
	p[8] = 0;
	send_frame('S', id, p, sizeof(p));
}

static void handle_run(uint32_t id, unsigned char *payload, size_t len)
{
	char *argv_buf[4096];
	size_t argc = 0, off;
	uint32_t timeout_ms;
	int out[2], err[2];
	struct run *r;
	pid_t pid;

	if (find_run(id)) {
		send_text('E', id, "pmemlab-agent: run id %u already in flight\n", id);
		return;
	}
	if (len < 4) {
		refuse_run(id, "RUN payload shorter than its timeout field");
		return;
	}
	timeout_ms = get_u32(payload);
	if (timeout_ms == 0) {
		refuse_run(id, "RUN timeout must be > 0");
		return;
	}
	if (len == 4 || payload[len - 1] != '\0') {
		refuse_run(id, "RUN argv must be NUL-terminated strings, at least one");
		return;
	}
	for (off = 4; off < len;) {
		if (argc + 1 >= sizeof(argv_buf) / sizeof(argv_buf[0])) {
			refuse_run(id, "too many arguments");
			return;
		}
		argv_buf[argc++] = (char *)payload + off;
		off += strlen((char *)payload + off) + 1;
	}
	argv_buf[argc] = NULL;
	if (argv_buf[0][0] == '\0') {
		refuse_run(id, "empty program name");
		return;
	}

	if (pipe2(out, O_CLOEXEC) < 0) {
		refuse_run(id, strerror(errno));
		return;
	}
	if (pipe2(err, O_CLOEXEC) < 0) {
		close(out[0]);
		close(out[1]);
		refuse_run(id, strerror(errno));
		return;
	}
	r = calloc(1, sizeof(*r));
	if (!r) {
		close(out[0]); close(out[1]); close(err[0]); close(err[1]);
		refuse_run(id, "out of memory");
		return;
	}
	kmsg("pmemlab-agent: run %u %s\n", id, argv_buf[0]);
	pid = fork();
	if (pid < 0) {
		int e = errno;
		close(out[0]); close(out[1]); close(err[0]); close(err[1]);
		free(r);
		refuse_run(id, strerror(e));
		return;
	}
	if (pid == 0)
		child_exec(argv_buf, out[1], err[1]);
	close(out[1]);
	close(err[1]);
	set_nonblock(out[0]);
	set_nonblock(err[0]);
	r->id = id;
	r->pid = pid;
	r->out_fd = out[0];
	r->err_fd = err[0];
	r->deadline_ns = mono_ns() + (int64_t)timeout_ms * 1000000LL;
	r->next = runs;
	runs = r;
}

static void handle_poweroff(uint32_t id)
{
	if (no_poweroff) {
		send_text('E', id, "pmemlab-agent: poweroff disabled (--no-poweroff)\n");
		return;
	}
	kmsg("pmemlab-agent: poweroff\n");
	sync();
	if (reboot(RB_POWER_OFF) < 0)
		send_text('E', id, "pmemlab-agent: poweroff: %s\n", strerror(errno));
}

static void handle_frame(char type, uint32_t id, unsigned char *payload, size_t len)
{
	struct run *r;

	switch (type) {
	case 'P':
		send_frame('p', id, NULL, 0);
		break;
	case 'R':
		handle_run(id, payload, len);
		break;
	case 'K':
		r = find_run(id);
		if (r)
			kill_run(r); /* unknown id: it already finished */
		break;
	case 'Q':
		handle_poweroff(id);
		break;
	default:
		send_text('E', id, "pmemlab-agent: unknown frame type 0x%02x\n",
			  (unsigned)(unsigned char)type);
		break;
	}
}

/* Read what the host sent and act on every complete frame. */
static void read_agent(void)
{
	ssize_t n;
	size_t off = 0;

	n = read(agent_fd, inbuf + inbuf_len, sizeof(inbuf) - inbuf_len);
	if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
		return;
	if (n <= 0) {
		/* 0 or EIO: the host side hung up. A new connection starts
		 * with a fresh frame, so drop any partial one. */
		hup_until_ns = mono_ns() + HUP_PAUSE_NS;
		inbuf_len = 0;
		return;
	}
	inbuf_len += (size_t)n;
	while (inbuf_len - off >= HDR_LEN) {
		uint32_t len = get_u32(inbuf + off);
		char type = (char)inbuf[off + 4];
		uint32_t id = get_u32(inbuf + off + 5);

		if (len > MAX_PAYLOAD) {
			/* No way to find the next frame boundary: drop it all. */
			send_text('E', id, "pmemlab-agent: frame payload %u exceeds %u\n",
				  len, MAX_PAYLOAD);
			inbuf_len = 0;
			return;
		}
		if (inbuf_len - off < HDR_LEN + (size_t)len)
			break;
		handle_frame(type, id, inbuf + off + HDR_LEN, len);
		off += HDR_LEN + len;
	}
	memmove(inbuf, inbuf + off, inbuf_len - off);
	inbuf_len -= off;
}

/* Forward one chunk of a child's output; close the pipe at EOF. */
static void read_pipe(struct run *r, int *fdp, char type)
{
	unsigned char buf[CHUNK];
	ssize_t n = read(*fdp, buf, sizeof(buf));

	if (n > 0) {
		send_frame(type, r->id, buf, (size_t)n);
		return;
	}
	if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
		return;
	close(*fdp);
	*fdp = -1;
}

static void reap_children(void)
{
	int st;
	pid_t pid;
	struct run *r;

	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		for (r = runs; r; r = r->next) {
			if (r->pid == pid && !r->reaped) {
				r->reaped = 1;
				r->wstatus = st;
				break;
			}
		}
		/* No match: an orphan we inherited as PID 1; reaped is enough. */
	}
}

/* Enforce deadlines, give up on held pipes, send STATUS for finished runs. */
static void check_runs(void)
{
	struct run **pp = &runs, *r;
	int64_t now = mono_ns();

	while ((r = *pp)) {
		if (!r->killed_ns && now >= r->deadline_ns) {
			r->timed_out = 1;
			kill_run(r);
		}
		if (r->reaped && r->killed_ns && now - r->killed_ns >= PIPE_GRACE_NS) {
			/* Grandchildren outside the group still hold the pipes. */
			if (r->out_fd >= 0) { close(r->out_fd); r->out_fd = -1; }
			if (r->err_fd >= 0) { close(r->err_fd); r->err_fd = -1; }
		}
		if (r->reaped && r->out_fd < 0 && r->err_fd < 0) {
			send_status(r);
			*pp = r->next;
			free(r);
			continue;
		}
		pp = &r->next;
	}
}

static void on_sigchld(int sig)
{
	int saved = errno;
	char c = 0;

	(void)sig;
	if (write(sigchld_pipe[1], &c, 1) < 0) {
		/* pipe full: a wakeup is already pending */
	}
	errno = saved;
}

static void drain_fd(int fd)
{
	char buf[256];

	while (read(fd, buf, sizeof(buf)) > 0)
		;
}

static void main_loop(void)
{
	for (;;) {
		struct pollfd pfd[2 + 2 * 256];
		struct run *slot[2 + 2 * 256];
		int slot_err[2 + 2 * 256];
		nfds_t nfd = 0, i;
		int agent_idx = -1, timeout = -1, ready;
		int64_t now = mono_ns();
		struct run *r;

		pfd[nfd].fd = sigchld_pipe[0];
		pfd[nfd].events = POLLIN;
		slot[nfd] = NULL;
		nfd++;
		if (now >= hup_until_ns) {
			agent_idx = (int)nfd;
			pfd[nfd].fd = agent_fd;
			pfd[nfd].events = POLLIN | (outq_len ? POLLOUT : 0);
			slot[nfd] = NULL;
			nfd++;
		} else {
			timeout = (int)((hup_until_ns - now) / 1000000) + 1;
		}
		for (r = runs; r; r = r->next) {
			/* Backpressure: leave output in the pipes while the host
			 * is not taking what we already have. */
			if (outq_len >= OUTQ_HIGH)
				break;
			if (nfd + 2 > sizeof(pfd) / sizeof(pfd[0]))
				break;
			if (r->out_fd >= 0) {
				pfd[nfd].fd = r->out_fd;
				pfd[nfd].events = POLLIN;
				slot[nfd] = r;
				slot_err[nfd] = 0;
				nfd++;
			}
			if (r->err_fd >= 0) {
				pfd[nfd].fd = r->err_fd;
				pfd[nfd].events = POLLIN;
				slot[nfd] = r;
				slot_err[nfd] = 1;
				nfd++;
			}
		}
		if (runs && (timeout < 0 || timeout > TICK_MS))
			timeout = TICK_MS;

		ready = poll(pfd, nfd, timeout);
		if (ready < 0 && errno != EINTR) {
			logmsg("pmemlab-agent: poll: %s\n", strerror(errno));
			usleep(TICK_MS * 1000);
		}
		if (ready > 0) {
			if (pfd[0].revents)
				drain_fd(sigchld_pipe[0]);
			if (agent_idx >= 0 && pfd[agent_idx].revents) {
				if (pfd[agent_idx].revents & POLLOUT)
					flush_outq();
				if (pfd[agent_idx].revents & (POLLIN | POLLHUP | POLLERR))
					read_agent();
			}
			for (i = 0; i < nfd; i++) {
				if (!slot[i] || !pfd[i].revents)
					continue;
				r = slot[i];
				if (slot_err[i]) {
					if (r->err_fd == pfd[i].fd)
						read_pipe(r, &r->err_fd, 'E');
				} else if (r->out_fd == pfd[i].fd) {
					read_pipe(r, &r->out_fd, 'O');
				}
			}
		}
		reap_children();
		check_runs();
		flush_outq();
	}
}

static int read_small_file(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, cap - 1);
	close(fd);
	if (n < 0)
		return -1;
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\0'))
		n--;
	buf[n] = '\0';
	return 0;
}

/* Open /dev/<dir> for a virtio port; create the node if devtmpfs lacks it. */
static int open_port_dev(const char *dir)
{
	char dev[PATH_MAX], sys[PATH_MAX], mm[64];
	unsigned maj, min;
	int fd;

	snprintf(dev, sizeof(dev), "/dev/%s", dir);
	fd = open(dev, O_RDWR);
	if (fd >= 0 || errno != ENOENT)
		return fd;
	snprintf(sys, sizeof(sys), "/sys/class/virtio-ports/%s/dev", dir);
	if (read_small_file(sys, mm, sizeof(mm)) < 0 ||
	    sscanf(mm, "%u:%u", &maj, &min) != 2)
		return -1;
	if (mknod(dev, S_IFCHR | 0600, makedev(maj, min)) < 0 && errno != EEXIST)
		return -1;
	return open(dev, O_RDWR);
}

/* Scan /sys/class/virtio-ports/ for the two named ports; opens the ones
 * still missing. Returns 1 once both are open. */
static int scan_ports(void)
{
	DIR *d = opendir("/sys/class/virtio-ports");
	struct dirent *de;

	if (!d)
		return 0;
	while ((de = readdir(d))) {
		char path[PATH_MAX], name[128];
		int *target;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/sys/class/virtio-ports/%s/name",
			 de->d_name);
		if (read_small_file(path, name, sizeof(name)) < 0)
			continue;
		if (!strcmp(name, AGENT_PORT))
			target = &agent_fd;
		else if (!strcmp(name, EVENTS_PORT))
			target = &events_fd;
		else
			continue;
		if (*target < 0)
			*target = open_port_dev(de->d_name);
	}
	closedir(d);
	return agent_fd >= 0 && events_fd >= 0;
}

static void discover_ports(void)
{
	int64_t deadline = mono_ns() + PORT_WAIT_NS;

	for (;;) {
		if (scan_ports())
			return;
		if (mono_ns() >= deadline) {
			logmsg("pmemlab-agent: virtio ports %s/%s not found after 15 s%s\n",
			       AGENT_PORT, EVENTS_PORT,
			       getpid() == 1 ? "; still looking" : "");
			kmsg("pmemlab-agent: virtio ports not found\n");
			if (getpid() != 1)
				exit(1);
			/* PID 1 must not exit: keep looking, report every 15 s. */
			deadline = mono_ns() + PORT_WAIT_NS;
		}
		usleep(100000);
	}
}

static int event_main(int argc, char **argv)
{
	const char *env = getenv("PMEMLAB_EVENT_FD");
	char line[1024], *end;
	long fd;
	int n;

	if (argc != 3) {
		fprintf(stderr, "usage: pmemlab-event TYPE ARG\n");
		return 2;
	}
	if (!env || !*env) {
		fprintf(stderr, "pmemlab-event: PMEMLAB_EVENT_FD is not set "
			"(run me through the pmemlab agent)\n");
		return 2;
	}
	errno = 0;
	fd = strtol(env, &end, 10);
	if (errno || *end || fd < 0 || fd > INT_MAX) {
		fprintf(stderr, "pmemlab-event: PMEMLAB_EVENT_FD=%s is not an fd number\n",
			env);
		return 2;
	}
	/* One event is one line of three space-separated words. */
	if (!*argv[1] || !*argv[2] || strpbrk(argv[1], " \t\r\n") ||
	    strpbrk(argv[2], " \t\r\n")) {
		fprintf(stderr, "pmemlab-event: TYPE and ARG must be non-empty and "
			"contain no whitespace\n");
		return 2;
	}
	n = snprintf(line, sizeof(line), "%s %s %lld\n", argv[1], argv[2],
		     (long long)mono_ns());
	if (n < 0 || (size_t)n >= sizeof(line)) {
		fprintf(stderr, "pmemlab-event: event too long\n");
		return 2;
	}
	/* A single write keeps concurrent writers' lines whole. */
	if (write((int)fd, line, (size_t)n) != n) {
		fprintf(stderr, "pmemlab-event: write to fd %ld: %s\n", fd,
			strerror(errno));
		return 1;
	}
	return 0;
}

static int parse_fd_arg(const char *opt, const char *val)
{
	char *end;
	long v;

	if (!val) {
		fprintf(stderr, "pmemlab-agent: %s expects an fd number\n", opt);
		exit(2);
	}
	errno = 0;
	v = strtol(val, &end, 10);
	if (errno || *end || end == val || v < 0 || v > INT_MAX ||
	    fcntl((int)v, F_GETFD) < 0) {
		fprintf(stderr, "pmemlab-agent: %s expects an open fd number, got %s\n",
			opt, val);
		exit(2);
	}
	return (int)v;
}

int main(int argc, char **argv)
{
	const char *base = strrchr(argv[0], '/');
	int use_kmsg = 1, i;
	struct sigaction sa;
	unsigned char ready[8 + sizeof(VERSION_STRING) - 1];

	base = base ? base + 1 : argv[0];
	if (!strcmp(base, "pmemlab-event"))
		return event_main(argc, argv);
	if (argc >= 2 && !strcmp(argv[1], "event"))
		return event_main(argc - 1, argv + 1);

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--agent-fd")) {
			agent_fd = parse_fd_arg(argv[i], argv[i + 1]);
			i++;
		} else if (!strcmp(argv[i], "--events-fd")) {
			events_fd = parse_fd_arg(argv[i], argv[i + 1]);
			i++;
		} else if (!strcmp(argv[i], "--no-kmsg")) {
			use_kmsg = 0;
		} else if (!strcmp(argv[i], "--no-poweroff")) {
			no_poweroff = 1;
		} else {
			fprintf(stderr, "pmemlab-agent: unknown option %s (expected "
				"--agent-fd N --events-fd N [--no-kmsg] [--no-poweroff], "
				"or: event TYPE ARG)\n", argv[i]);
			if (getpid() != 1)
				return 2;
		}
	}
	if ((agent_fd < 0) != (events_fd < 0)) {
		fprintf(stderr, "pmemlab-agent: --agent-fd and --events-fd go together\n");
		if (getpid() != 1)
			return 2;
		agent_fd = events_fd = -1;
	}

	/* As PID 1 the kernel may hand us no PATH; execvp needs one. */
	if (!getenv("PATH"))
		setenv("PATH", "/sbin:/usr/sbin:/bin:/usr/bin", 1);
	if (use_kmsg)
		kmsg_fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC | O_NONBLOCK);

	signal(SIGPIPE, SIG_IGN);
	if (pipe2(sigchld_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
		logmsg("pmemlab-agent: pipe: %s\n", strerror(errno));
		return 1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sigchld;
	sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGCHLD, &sa, NULL);

	if (agent_fd < 0)
		discover_ports();
	/* Children get the events port (they write ACK/MARK lines to it);
	 * everything else of ours is closed on exec. */
	set_cloexec(agent_fd, 1);
	set_cloexec(events_fd, 0);
	set_nonblock(agent_fd);

	put_u64(ready, (uint64_t)mono_ns());
	memcpy(ready + 8, VERSION_STRING, sizeof(VERSION_STRING) - 1);
	send_frame('Y', 0, ready, sizeof(ready));
	kmsg("pmemlab-agent: ready\n");
	main_loop();
	return 0;
}

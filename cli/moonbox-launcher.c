/*
 * moonbox-launcher: starts the processes a VMM asks for (docs/sandbox.md).
 *
 * The VMM starts it (posix_spawn: clone(CLONE_VM|CLONE_VFORK) + exec, safe
 * in a multi-threaded process) before any seccomp filter, with one end of
 * a socketpair at fd 3 and the VMM's pid as its only argument. It is
 * single-threaded, so it may fork freely; each request (core/launch.h) is
 * a program and file descriptors, the reply the child's pid and a pidfd.
 *
 * It lives as long as the VMM: it exits (killing its children) when the
 * socket reaches EOF, which the kernel makes happen however the VMM dies,
 * and on its parent-death signal when the VMM process is gone. The
 * parent-death signal follows the thread that started it, not the process:
 * so it is SIGUSR1, caught, and the launcher only leaves when its parent
 * (re-parented to a surviving thread of the VMM) is no longer the VMM.
 * Children get PR_SET_PDEATHSIG(SIGKILL): the launcher has one thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/launch.h"

struct child {
	pid_t pid;    /* 0: free slot */
	bool ended;   /* reaped, status not yet asked for */
	int status;
	unsigned long age;
};

static struct child kids[LAUNCH_MAX_CHILDREN];
static unsigned long clock_;
static volatile sig_atomic_t got_chld, got_death;
static pid_t vmm, self;
static int devnull = -1;

static void on_signal(int sig)
{
	if (sig == SIGCHLD)
		got_chld = 1;
	else
		got_death = 1;
}

static void reap(void)
{
	int st;
	pid_t p;
	got_chld = 0;
	while ((p = waitpid(-1, &st, WNOHANG)) > 0)
		for (unsigned i = 0; i < LAUNCH_MAX_CHILDREN; i++)
			if (kids[i].pid == p && !kids[i].ended) {
				kids[i].ended = true;
				kids[i].status = st;
				kids[i].age = ++clock_;
			}
}

static void quit(int code)
{
	for (unsigned i = 0; i < LAUNCH_MAX_CHILDREN; i++)
		if (kids[i].pid && !kids[i].ended)
			kill(kids[i].pid, SIGKILL);
	_exit(code);
}

/* A slot for a new child: a free one, else the oldest ended one nobody
 * asked about. */
static struct child *slot(void)
{
	struct child *old = NULL;
	for (unsigned i = 0; i < LAUNCH_MAX_CHILDREN; i++) {
		if (!kids[i].pid)
			return &kids[i];
		if (kids[i].ended && (!old || kids[i].age < old->age))
			old = &kids[i];
	}
	if (old)
		old->pid = 0;
	return old;
}

static void reply(const struct launch_rep *r, int fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = (void *)r, .iov_len = sizeof *r };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (fd >= 0) {
		memset(&u, 0, sizeof u);
		mh.msg_control = u.buf;
		mh.msg_controllen = sizeof u.buf;
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof fd);
	}
	while (sendmsg(LAUNCH_SOCK_FD, &mh, MSG_NOSIGNAL) < 0)
		if (errno != EINTR)
			quit(0); /* the VMM is gone */
}

/* In the child, between fork and exec: fds[i] to 3 + i, the rest closed
 * at exec, 0 and 1 on /dev/null, 2 the launcher's stderr, cwd /. */
static void child(char **argv, const int *fds, unsigned nfds, int errw)
{
	static char *const envp[] = { NULL };
	int t[MB_LAUNCH_MAX_FDS];
	unsigned base = 3 + nfds;
	sigset_t none;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != self)
		_exit(127); /* the launcher died before the line above */
	signal(SIGCHLD, SIG_DFL);
	signal(SIGUSR1, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	/* Everything to base and above first, so that no dup2 below lands
	 * on a descriptor still to be moved. */
	for (unsigned i = 0; i < nfds; i++)
		if ((t[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, base)) < 0)
			goto fail;
	int null = fcntl(devnull, F_DUPFD_CLOEXEC, base);
	if ((errw = fcntl(errw, F_DUPFD_CLOEXEC, base)) < 0 || null < 0)
		goto fail;
	for (unsigned i = 0; i < nfds; i++)
		if (dup2(t[i], 3 + i) < 0)
			goto fail;
	if (dup2(null, 0) < 0 || dup2(null, 1) < 0)
		goto fail;
	if (close_range(base, ~0u, CLOSE_RANGE_CLOEXEC) < 0 || chdir("/") < 0)
		goto fail;
	execve(argv[0], argv, envp);
fail:;
	int e = errno;
	if (write(errw, &e, sizeof e) < 0)
		_exit(126);
	_exit(127);
}

static void spawn(const struct launch_req *q, char *strs, const int *fds,
		  unsigned nfds)
{
	struct launch_rep r = { 0 };
	char *argv[MB_LAUNCH_MAX_ARGS + 1];
	int pfd = -1, p[2] = { -1, -1 };
	struct child *k;
	/* argc strings, each NUL-terminated, exactly filling len bytes */
	unsigned n = 0;
	char *s = strs, *end = strs + q->len;
	while (s < end && n < MB_LAUNCH_MAX_ARGS) {
		char *z = memchr(s, 0, end - s);
		if (!z)
			break;
		argv[n++] = s;
		s = z + 1;
	}
	argv[n] = NULL;
	if (n == 0 || n != q->argc || s != end || q->nfds != nfds ||
	    argv[0][0] != '/') {
		r.err = -EINVAL;
		goto out;
	}
	reap();
	if (!(k = slot())) {
		r.err = -EAGAIN;
		goto out;
	}
	if (pipe2(p, O_CLOEXEC) < 0) {
		r.err = -errno;
		goto out;
	}
	pid_t pid = fork();
	if (pid < 0) {
		r.err = -errno;
		goto out;
	}
	if (pid == 0)
		child(argv, fds, nfds, p[1]);
	close(p[1]);
	p[1] = -1;
	int e = 0;
	ssize_t got;
	while ((got = read(p[0], &e, sizeof e)) < 0 && errno == EINTR)
		;
	if (got == sizeof e) { /* exec failed: reap it now */
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		r.err = -e;
		goto out;
	}
	/* Not reaped before this: only the main loop reaps. */
	pfd = (int)syscall(SYS_pidfd_open, pid, 0);
	k->pid = pid;
	k->ended = false;
	r.pid = pid;
	r.pidfd = pfd >= 0;
out:
	if (p[0] >= 0)
		close(p[0]);
	if (p[1] >= 0)
		close(p[1]);
	reply(&r, pfd);
	if (pfd >= 0)
		close(pfd);
}

static void status(const struct launch_req *q)
{
	struct launch_rep r = { .err = -ESRCH, .pid = q->pid };
	reap();
	for (unsigned i = 0; i < LAUNCH_MAX_CHILDREN; i++)
		if (q->pid > 0 && kids[i].pid == q->pid) {
			if (!kids[i].ended) {
				r.err = -EAGAIN;
			} else {
				r.err = 0;
				r.status = kids[i].status;
				kids[i].pid = 0;
			}
			break;
		}
	reply(&r, -1);
}

/* One request; false at EOF. */
static bool serve(void)
{
	static char buf[sizeof(struct launch_req) + LAUNCH_MAX_ARGV];
	union {
		char buf[CMSG_SPACE(MB_LAUNCH_MAX_FDS * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = buf, .iov_len = sizeof buf };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
			     .msg_control = u.buf, .msg_controllen = sizeof u.buf };
	int fds[MB_LAUNCH_MAX_FDS];
	unsigned nfds = 0;
	ssize_t n = recvmsg(LAUNCH_SOCK_FD, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	if (n < 0)
		return errno == EINTR || errno == EAGAIN;
	if (n == 0)
		return false;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			unsigned k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (unsigned i = 0; i < k; i++) {
				int fd;
				memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
				if (nfds < MB_LAUNCH_MAX_FDS)
					fds[nfds++] = fd;
				else
					close(fd);
			}
		}
	struct launch_req q;
	if ((size_t)n < sizeof q || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
		struct launch_rep r = { .err = -EINVAL };
		reply(&r, -1);
		goto out;
	}
	memcpy(&q, buf, sizeof q);
	if (q.magic != LAUNCH_MAGIC || q.len != n - sizeof q ||
	    q.nfds > MB_LAUNCH_MAX_FDS || q.argc > MB_LAUNCH_MAX_ARGS) {
		struct launch_rep r = { .err = -EINVAL };
		reply(&r, -1);
	} else if (q.op == LAUNCH_SPAWN) {
		spawn(&q, buf + sizeof q, fds, nfds);
	} else if (q.op == LAUNCH_STATUS) {
		status(&q);
	} else {
		struct launch_rep r = { .err = -EOPNOTSUPP };
		reply(&r, -1);
	}
out:
	for (unsigned i = 0; i < nfds; i++)
		close(fds[i]);
	return true;
}

int main(int argc, char **argv)
{
	char *end;
	if (argc != 2 || (vmm = (pid_t)strtol(argv[1], &end, 10)) <= 0 || *end) {
		fprintf(stderr, "moonbox-launcher: started by moonbox only "
			"(a socket at fd 3, the VMM's pid as argument)\n");
		return 2;
	}
	self = getpid();
	/* Signals only arrive inside ppoll below. */
	sigset_t block, wait;
	sigemptyset(&block);
	sigaddset(&block, SIGCHLD);
	sigaddset(&block, SIGUSR1);
	sigprocmask(SIG_BLOCK, &block, &wait);
	sigdelset(&wait, SIGCHLD);
	sigdelset(&wait, SIGUSR1);
	struct sigaction sa = { .sa_handler = on_signal };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGCHLD, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	prctl(PR_SET_PDEATHSIG, SIGUSR1);
	if (getppid() != vmm)
		return 0; /* the VMM died before the line above */
	if (fcntl(LAUNCH_SOCK_FD, F_GETFD) < 0)
		return 2;
	/* Whatever else the embedder left open without O_CLOEXEC. */
	close_range(LAUNCH_SOCK_FD + 1, ~0u, 0);
	devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull < 0)
		return 2;
	for (;;) {
		struct pollfd pf = { .fd = LAUNCH_SOCK_FD, .events = POLLIN };
		int n = ppoll(&pf, 1, NULL, &wait), e = errno;
		if (got_chld)
			reap();
		if (got_death) {
			got_death = 0;
			if (getppid() != vmm)
				quit(0);
		}
		if (n < 0 && e != EINTR)
			quit(1);
		if (n > 0 && (pf.revents & POLLIN) && !serve())
			quit(0);
		if (n > 0 && !(pf.revents & POLLIN) && (pf.revents & (POLLHUP | POLLERR)))
			quit(0);
	}
}

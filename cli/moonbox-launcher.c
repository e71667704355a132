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
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/landlock.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
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


/* ---- confinement of a MB_LAUNCH_CONFINE child (docs/sandbox.md) ---- */

struct conf {
	unsigned flags;
	char **ro, **rw; /* NULL-terminated */
};

/* What the child tells the launcher before it execs. */
struct conf_rep {
	uint32_t applied;
	int32_t abi;
	char refused[200];
};

static void refuse(struct conf_rep *r, const char *what, int e)
{
	size_t n = strlen(r->refused);
	snprintf(r->refused + n, sizeof r->refused - n, "%s%s: %s",
		 n ? "; " : "", what, strerror(e));
}

#define LL_EXEC LANDLOCK_ACCESS_FS_EXECUTE
#define LL_READ (LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR)
#define LL_FILE (LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE | \
		 LANDLOCK_ACCESS_FS_READ_FILE | (1ull << 14) /* TRUNCATE */ | \
		 (1ull << 15) /* IOCTL_DEV */)

/* Allow `rights` beneath path (a file takes only the file rights). A
 * path that does not exist is left out: nothing to reach there. */
static int allow(int ruleset, const char *path, uint64_t rights,
		 uint64_t handled)
{
	int fd = open(path, O_PATH | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	struct stat st;
	if (fstat(fd, &st) == 0 && !S_ISDIR(st.st_mode))
		rights &= LL_FILE;
	struct landlock_path_beneath_attr pb = {
		.allowed_access = rights & handled, .parent_fd = fd };
	int rc = syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH,
			 &pb, 0) < 0 ? -errno : 0;
	close(fd);
	return rc;
}

/* Landlock: nothing reachable by path but the program, the loader's and
 * the shared libraries' places, ro and rw. */
static int landlock(const struct conf *c, const char *prog, struct conf_rep *r)
{
	static const char *const base[] = { "/usr", "/lib", "/lib64",
		"/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d",
		"/etc/ld.so.preload", NULL };
	/* read-write: the sink every program may open (qemu probes OFD
	 * locks on it) */
	static const char *const dev[] = { "/dev/null", "/dev/zero", NULL };
	long abi = syscall(SYS_landlock_create_ruleset, NULL, 0,
			   LANDLOCK_CREATE_RULESET_VERSION);
	if (abi < 0)
		return -errno;
	/* fs rights: 13 in ABI 1, REFER (2), TRUNCATE (3), IOCTL_DEV (5) */
	uint64_t fs = (1ull << 13) - 1;
	if (abi >= 2)
		fs |= 1ull << 13;
	if (abi >= 3)
		fs |= 1ull << 14;
	if (abi >= 5)
		fs |= 1ull << 15;
	struct landlock_ruleset_attr a = { .handled_access_fs = fs };
	int rs = (int)syscall(SYS_landlock_create_ruleset, &a, sizeof a.handled_access_fs, 0);
	if (rs < 0)
		return -errno;
	int rc = allow(rs, prog, LL_EXEC | LL_READ, fs);
	for (unsigned i = 0; !rc && base[i]; i++)
		rc = allow(rs, base[i], LL_EXEC | LL_READ, fs);
	for (unsigned i = 0; !rc && dev[i]; i++)
		rc = allow(rs, dev[i], LANDLOCK_ACCESS_FS_READ_FILE |
			   LANDLOCK_ACCESS_FS_WRITE_FILE, fs);
	for (unsigned i = 0; !rc && c->ro[i]; i++)
		rc = allow(rs, c->ro[i], LL_EXEC | LL_READ, fs);
	for (unsigned i = 0; !rc && c->rw[i]; i++)
		rc = allow(rs, c->rw[i], fs, fs);
	if (!rc && syscall(SYS_landlock_restrict_self, rs, 0) < 0)
		rc = -errno;
	close(rs);
	if (!rc)
		r->abi = (int32_t)abi;
	return rc;
}

/* no_new_privs is never skipped: without it the child does not run. */
static int confine(const struct conf *c, const char *prog, struct conf_rep *r)
{
	memset(r, 0, sizeof *r);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -errno;
	r->applied |= LAUNCH_NNP;
	if (getpid() == 1) /* MB_LAUNCH_NEWPID was honoured */
		r->applied |= LAUNCH_PIDNS;
	struct rlimit none = { 0, 0 };
	if (setrlimit(RLIMIT_CORE, &none) == 0)
		r->applied |= LAUNCH_RLIMITS;
	else
		refuse(r, "rlimits", errno);
	int rc;
	if (c->flags & MB_LAUNCH_NO_LANDLOCK)
		snprintf(r->refused + strlen(r->refused),
			 sizeof r->refused - strlen(r->refused),
			 "%slandlock: not asked", r->refused[0] ? "; " : "");
	else if ((rc = landlock(c, prog, r)))
		refuse(r, "landlock", -rc);
	return 0;
}

/* In the child, between fork and exec: fds[i] to 3 + i, the rest closed
 * at exec, 0 and 1 on /dev/null, 2 the launcher's stderr, cwd /. */
static void child(char **argv, const int *fds, unsigned nfds, int errw,
		  int go, const struct conf *cf)
{
	static char *const envp[] = { NULL };
	int t[MB_LAUNCH_MAX_FDS];
	unsigned base = 3 + nfds;
	sigset_t none;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (go >= 0) {
		/* pid 1 of a new namespace: getppid() says 0. Wait for the
		 * launcher to map our ids (EOF: done, or it died: then the
		 * parent-death signal is on its way) */
		char c;
		while (read(go, &c, 1) < 0 && errno == EINTR)
			;
	} else if (getppid() != self) {
		_exit(127); /* the launcher died before the line above */
	}
	/* Ignored signals stay ignored across exec: every disposition back
	 * to the default, glibc's own two (32, 33: posix_spawn leaves them
	 * ignored in the launcher) included, hence the raw call. */
	struct { void *handler; unsigned long flags; void *restorer; uint64_t mask; }
		dfl = { SIG_DFL, 0, NULL, 0 };
	for (int sig = 1; sig <= 64; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			syscall(SYS_rt_sigaction, sig, &dfl, NULL, sizeof dfl.mask);
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
	if (cf->flags & MB_LAUNCH_CONFINE) {
		struct conf_rep cr;
		if ((errno = -confine(cf, argv[0], &cr)))
			goto fail;
		if (write(errw, &cr, sizeof cr) != (ssize_t)sizeof cr)
			goto fail;
	}
	execve(argv[0], argv, envp);
fail:;
	int e = errno;
	if (write(errw, &e, sizeof e) < 0)
		_exit(126);
	_exit(127);
}

static int write_to(pid_t pid, const char *file, const char *text)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, file);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = write(fd, text, strlen(text));
	close(fd);
	return n == (ssize_t)strlen(text) ? 0 : -1;
}

/* The new user namespace of a MB_LAUNCH_NEWPID child: our uid and gid
 * mapped to themselves (user_namespaces(7): an unprivileged parent may map
 * its own ids, gid only after setgroups is denied). */
static int map_child(pid_t pid)
{
	char u[32], g[32];
	snprintf(u, sizeof u, "%u %u 1\n", (unsigned)geteuid(), (unsigned)geteuid());
	snprintf(g, sizeof g, "%u %u 1\n", (unsigned)getegid(), (unsigned)getegid());
	if (write_to(pid, "setgroups", "deny") < 0 && errno != ENOENT)
		return -1;
	return write_to(pid, "uid_map", u) < 0 || write_to(pid, "gid_map", g) < 0 ? -1 : 0;
}

static void spawn(const struct launch_req *q, char *strs, const int *fds,
		  unsigned nfds)
{
	struct launch_rep r = { 0 };
	char *argv[MB_LAUNCH_MAX_ARGS + 1];
	int pfd = -1, p[2] = { -1, -1 };
	struct child *k;
	/* argc strings, then nro and nrw paths, each NUL-terminated, exactly
	 * filling len bytes */
	char *ro[MB_LAUNCH_MAX_PATHS + 1], *rw[MB_LAUNCH_MAX_PATHS + 1];
	struct conf cf = { q->flags, ro, rw };
	unsigned n = 0, want = q->argc + q->nro + q->nrw;
	char *s = strs, *end = strs + q->len;
	bool bad = q->nro > MB_LAUNCH_MAX_PATHS || q->nrw > MB_LAUNCH_MAX_PATHS;
	while (!bad && s < end && n < want) {
		char *z = memchr(s, 0, end - s);
		if (!z)
			break;
		if (n < q->argc)
			argv[n] = s;
		else if (n < q->argc + q->nro)
			ro[n - q->argc] = s;
		else
			rw[n - q->argc - q->nro] = s;
		n++;
		s = z + 1;
	}
	if (!bad && n == want) {
		argv[q->argc] = NULL;
		ro[q->nro] = NULL;
		rw[q->nrw] = NULL;
	}
	if (bad || q->argc == 0 || n != want || s != end || q->nfds != nfds ||
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
	pid_t pid = -1;
	bool netns = false;
	int go[2] = { -1, -1 };
	if ((q->flags & MB_LAUNCH_NEWPID) && pipe2(go, O_CLOEXEC) == 0) {
		/* raw clone, like fork: the child only makes system calls
		 * until it execs. A user namespace owns the pid namespace,
		 * so no privilege is needed. */
		unsigned long ns = CLONE_NEWUSER | CLONE_NEWPID;
		if (q->flags & MB_LAUNCH_NEWNET) { /* first with, then without */
			pid = (pid_t)syscall(SYS_clone, ns | CLONE_NEWNET | CLONE_NEWIPC |
					     CLONE_NEWUTS | SIGCHLD, NULL, NULL, NULL, NULL);
			if (pid > 0)
				netns = true;
		}
		if (pid < 0)
			pid = (pid_t)syscall(SYS_clone, ns | SIGCHLD, NULL, NULL, NULL, NULL);
		if (pid == 0) {
			close(go[1]);
			child(argv, fds, nfds, p[1], go[0], &cf);
		}
		close(go[0]);
		if (pid > 0 && map_child(pid) < 0) {
			kill(pid, SIGKILL);
			while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
				;
			pid = -1;
		}
		close(go[1]); /* the child goes on */
	}
	if (pid < 0) /* not asked, or the host refused: a plain child */
		pid = fork();
	if (pid < 0) {
		r.err = -errno;
		goto out;
	}
	if (pid == 0)
		child(argv, fds, nfds, p[1], -1, &cf);
	k->pid = pid; /* from here quit() kills it */
	k->ended = false;
	close(p[1]);
	p[1] = -1;
	int e = 0;
	ssize_t got;
	if (q->flags & MB_LAUNCH_CONFINE) { /* what it got, before it execs */
		struct conf_rep cr;
		while ((got = read(p[0], &cr, sizeof cr)) < 0 && errno == EINTR)
			;
		if (got == sizeof cr) {
			r.applied = cr.applied | (netns && (cr.applied & LAUNCH_PIDNS)
						  ? LAUNCH_NETNS : 0);
			r.landlock_abi = cr.abi;
			memcpy(r.refused, cr.refused, sizeof r.refused);
			r.refused[sizeof r.refused - 1] = 0;
		} else if (got == sizeof e) {
			memcpy(&e, &cr, sizeof e);
			goto failed;
		}
	}
	while ((got = read(p[0], &e, sizeof e)) < 0 && errno == EINTR)
		;
	if (got == sizeof e) { /* exec failed: reap it now */
failed:
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		k->pid = 0;
		r.err = -e;
		goto out;
	}
	/* Not reaped before this: only the main loop reaps. */
	pfd = (int)syscall(SYS_pidfd_open, pid, 0);
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
	if (q.magic != LAUNCH_MAGIC || q.len != n - sizeof q || (q.flags & ~MB_LAUNCH_FLAGS) ||
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

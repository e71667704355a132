/*
 * The VMM's side of moonbox-launcher (cli/moonbox-launcher.c, the wire in
 * core/launch.h, docs/sandbox.md): start it, ask it to spawn, ask how a
 * child ended. One launcher per machine, started by the first
 * mb_launch/mb_launcher_start on it and ended by mb_machine_destroy (its
 * children die with it); mb_launch(NULL, ...) uses one per process that
 * lives until the process exits.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/internal.h"
#include "core/launch.h"

#ifndef MB_LIBEXECDIR
#define MB_LIBEXECDIR "/usr/local/libexec/moonbox"
#endif

struct mb_launcher {
	pthread_mutex_t lock; /* one request and its reply at a time */
	int sock;             /* -1: not started */
	pid_t pid;
	pid_t owner;          /* the process that started it */
};

static struct mb_launcher global = { PTHREAD_MUTEX_INITIALIZER, -1, 0, 0 };
static pthread_mutex_t new_lock = PTHREAD_MUTEX_INITIALIZER;

static bool usable(const char *dir, const char *prog, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/%s", dir, prog);
	return n > 0 && (size_t)n < len && access(buf, X_OK) == 0;
}

/* prog next to the object in dir, or where `make install` put it
 * relative to dir (bin/, lib/, lib/lua/5.4/ -> libexec/moonbox/): the
 * installed tree works whatever PREFIX it was installed to. */
static bool near(const char *dir, const char *prog, char *buf, size_t len)
{
	static const char *const rel[] = { "", "/../libexec/moonbox",
					   "/../../../libexec/moonbox" };
	char d[PATH_MAX + 32];
	for (size_t i = 0; i < sizeof rel / sizeof *rel; i++) {
		char real[PATH_MAX];
		snprintf(d, sizeof d, "%s%s", dir, rel[i]);
		if (usable(d, prog, buf, len)) {
			if (realpath(buf, real) && strlen(real) < len)
				strcpy(buf, real);
			return true;
		}
	}
	return false;
}

/* Directory part of path into dir (realpath'd). */
static bool dir_of(const char *path, char *dir)
{
	char real[PATH_MAX];
	if (!path || !realpath(path, real))
		return false;
	char *slash = strrchr(real, '/');
	if (!slash)
		return false;
	*slash = 0;
	snprintf(dir, PATH_MAX, "%s", real[0] ? real : "/");
	return true;
}

int mb_libexec_path(const char *prog, char *buf, size_t len)
{
	char dir[PATH_MAX];
	const char *env = getenv("MOONBOX_LIBEXEC");
	if (env && env[0]) {
		if (usable(env, prog, buf, len))
			return 0;
		return mb_seterr(-ENOENT, "%s: not in MOONBOX_LIBEXEC (%s)",
				 prog, env);
	}
	/* The build tree: next to the object this code is in (moonbox,
	 * moonbox.so, libmoonbox.so), then next to the executable; or an
	 * installed tree around them. */
	Dl_info di;
	if (dladdr((void *)mb_libexec_path, &di) && dir_of(di.dli_fname, dir) &&
	    near(dir, prog, buf, len))
		return 0;
	if (dir_of("/proc/self/exe", dir) && near(dir, prog, buf, len))
		return 0;
	if (usable(MB_LIBEXECDIR, prog, buf, len))
		return 0;
	return mb_seterr(-ENOENT, "%s: not found next to moonbox nor in %s "
			 "(set MOONBOX_LIBEXEC)", prog, MB_LIBEXECDIR);
}

static int start(struct mb_launcher *l)
{
	char path[PATH_MAX], pidarg[24];
	if (mb_seccomp_filtered())
		return mb_seterr(-EPERM, "launcher: not started before this "
				 "thread's seccomp filter (start it with "
				 "mb_launcher_start first)");
	int rc = mb_libexec_path("moonbox-launcher", path, sizeof path);
	if (rc)
		return rc;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return mb_seterr(-errno, "launcher: socketpair: %s", strerror(errno));
	/* Its end above fd 3, so that dup2 to 3 really is a dup (and clears
	 * close-on-exec). */
	int far = fcntl(sv[1], F_DUPFD_CLOEXEC, LAUNCH_SOCK_FD + 1);
	close(sv[1]);
	if (far < 0) {
		close(sv[0]);
		return mb_seterr(-errno, "launcher: fcntl: %s", strerror(errno));
	}
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none, all;
	sigemptyset(&none);
	sigfillset(&all);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, far, LAUNCH_SOCK_FD);
	posix_spawnattr_init(&at);
	/* Whatever the embedder blocked or ignored, the launcher starts clean. */
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setsigdefault(&at, &all);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	snprintf(pidarg, sizeof pidarg, "%d", (int)getpid());
	char *argv[] = { path, pidarg, NULL };
	char *envp[] = { NULL };
	pid_t pid;
	/* glibc's posix_spawn is clone(CLONE_VM|CLONE_VFORK) + exec: nothing
	 * runs between them that a multi-threaded parent could upset. */
	rc = posix_spawn(&pid, path, &fa, &at, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	close(far);
	if (rc) {
		close(sv[0]);
		return mb_seterr(-rc, "launcher: cannot start %s: %s", path,
				 strerror(rc));
	}
	l->sock = sv[0];
	l->pid = pid;
	l->owner = getpid();
	return 0;
}

/* Started (by this process: a forked child has a copy of the parent's
 * socket, talking to the parent's launcher, and starts its own). */
static bool running(struct mb_launcher *l)
{
	if (l->sock >= 0 && l->owner != getpid()) {
		close(l->sock);
		l->sock = -1;
	}
	return l->sock >= 0;
}

static struct mb_launcher *get(struct mb_machine *m)
{
	if (!m)
		return &global;
	pthread_mutex_lock(&new_lock);
	if (!m->launcher) {
		struct mb_launcher *l = calloc(1, sizeof *l);
		if (l) {
			pthread_mutex_init(&l->lock, NULL);
			l->sock = -1;
		}
		m->launcher = l;
	}
	pthread_mutex_unlock(&new_lock);
	if (!m->launcher)
		mb_seterr(-ENOMEM, "launcher: out of memory");
	return m->launcher;
}

int mb_launcher_start(struct mb_machine *m)
{
	struct mb_launcher *l = get(m);
	if (!l)
		return -ENOMEM;
	pthread_mutex_lock(&l->lock);
	int rc = running(l) ? 0 : start(l);
	pthread_mutex_unlock(&l->lock);
	return rc;
}

void mb_launcher_free(struct mb_launcher *l)
{
	if (!l)
		return;
	if (running(l)) {
		close(l->sock); /* EOF: it kills its children and exits */
		while (waitpid(l->pid, NULL, 0) < 0 && errno == EINTR)
			;
	}
	pthread_mutex_destroy(&l->lock);
	free(l);
}

/* One request, one reply (with *fd when the reply carries one). */
static int ask(struct mb_launcher *l, const void *req, size_t len,
	       const int *fds, unsigned nfds, struct launch_rep *rep, int *fd)
{
	union {
		char buf[CMSG_SPACE(MB_LAUNCH_MAX_FDS * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = (void *)req, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (nfds) {
		memset(&u, 0, sizeof u);
		mh.msg_control = u.buf;
		mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
	}
	ssize_t n;
	while ((n = sendmsg(l->sock, &mh, MSG_NOSIGNAL)) < 0 && errno == EINTR)
		;
	if (n < 0)
		return mb_seterr(-errno, "launcher: send: %s (has it died?)",
				 strerror(errno));
	iov.iov_base = rep;
	iov.iov_len = sizeof *rep;
	mh = (struct msghdr){ .msg_iov = &iov, .msg_iovlen = 1,
			      .msg_control = u.buf, .msg_controllen = sizeof u.buf };
	while ((n = recvmsg(l->sock, &mh, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
		;
	if (n < 0)
		return mb_seterr(-errno, "launcher: receive: %s", strerror(errno));
	if (n == 0)
		return mb_seterr(-EPIPE, "launcher: it has died");
	*fd = -1;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
			for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
				int got;
				memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof got);
				if (*fd < 0)
					*fd = got;
				else
					close(got);
			}
	if ((size_t)n != sizeof *rep) {
		if (*fd >= 0)
			close(*fd);
		*fd = -1;
		return mb_seterr(-EPROTO, "launcher: a reply of %zd bytes", n);
	}
	return 0;
}

int mb_launch(struct mb_machine *m, const struct mb_launch *l, pid_t *pid,
	      int *pidfd)
{
	static const char name[] = "launch";
	if (!l || !l->argv || !l->argv[0])
		return mb_seterr(-EINVAL, "%s: no program", name);
	if (l->argv[0][0] != '/')
		return mb_seterr(-EINVAL, "%s: %s: not an absolute path", name,
				 l->argv[0]);
	if (l->flags & ~MB_LAUNCH_FLAGS)
		return mb_seterr(-EINVAL, "%s: unknown flags %#x", name, l->flags);
	if (l->nfds > MB_LAUNCH_MAX_FDS)
		return mb_seterr(-EINVAL, "%s: %u descriptors (at most %d)", name,
				 l->nfds, MB_LAUNCH_MAX_FDS);
	char *req = malloc(sizeof(struct launch_req) + LAUNCH_MAX_ARGV);
	if (!req)
		return mb_seterr(-ENOMEM, "%s: out of memory", name);
	struct launch_req q = { .magic = LAUNCH_MAGIC, .op = LAUNCH_SPAWN,
				.nfds = l->nfds, .flags = l->flags };
	size_t off = sizeof q;
	int rc = 0;
	for (; l->argv[q.argc]; q.argc++) {
		size_t n = strlen(l->argv[q.argc]) + 1;
		if (q.argc == MB_LAUNCH_MAX_ARGS || off + n > sizeof q + LAUNCH_MAX_ARGV) {
			rc = mb_seterr(-E2BIG, "%s: %s: more than %d arguments or "
				       "%d bytes of them", name, l->argv[0],
				       MB_LAUNCH_MAX_ARGS, LAUNCH_MAX_ARGV);
			goto out;
		}
		memcpy(req + off, l->argv[q.argc], n);
		off += n;
	}
	for (int k = 0; k < 2 && (l->flags & MB_LAUNCH_CONFINE); k++) {
		const char *const *list = k ? l->rw : l->ro;
		uint32_t *count = k ? &q.nrw : &q.nro;
		for (; list && list[*count]; (*count)++) {
			const char *p = list[*count];
			size_t n = strlen(p) + 1;
			if (p[0] != '/') {
				rc = mb_seterr(-EINVAL, "%s: %s: sandbox path \"%s\" is "
					       "not absolute", name, l->argv[0], p);
				goto out;
			}
			if (*count == MB_LAUNCH_MAX_PATHS ||
			    off + n > sizeof q + LAUNCH_MAX_ARGV) {
				rc = mb_seterr(-E2BIG, "%s: %s: more than %d sandbox "
					       "paths or too many bytes", name,
					       l->argv[0], MB_LAUNCH_MAX_PATHS);
				goto out;
			}
			memcpy(req + off, p, n);
			off += n;
		}
	}
	for (unsigned i = 0; i < l->nfds; i++)
		if (fcntl(l->fds[i], F_GETFD) < 0) {
			rc = mb_seterr(-EBADF, "%s: fds[%u] = %d: %s", name, i,
				       l->fds[i], strerror(errno));
			goto out;
		}
	q.len = (uint32_t)(off - sizeof q);
	memcpy(req, &q, sizeof q);
	struct mb_launcher *ln = get(m);
	if (!ln) {
		rc = -ENOMEM;
		goto out;
	}
	pthread_mutex_lock(&ln->lock);
	rc = running(ln) ? 0 : start(ln);
	struct launch_rep rep;
	int fd = -1;
	if (!rc)
		rc = ask(ln, req, off, l->fds, l->nfds, &rep, &fd);
	pthread_mutex_unlock(&ln->lock);
	if (rc)
		goto out;
	if (rep.err) {
		rc = mb_seterr(rep.err, "%s: %s: %s", name, l->argv[0],
			       strerror(-rep.err));
		if (fd >= 0)
			close(fd);
		goto out;
	}
	if (l->report && (l->flags & MB_LAUNCH_CONFINE)) {
		memset(l->report, 0, sizeof *l->report);
		l->report->no_new_privs = rep.applied & LAUNCH_NNP;
		l->report->rlimits = rep.applied & LAUNCH_RLIMITS;
		l->report->pidns = l->report->userns = rep.applied & LAUNCH_PIDNS;
		l->report->netns = l->report->ipcns = l->report->utsns =
			rep.applied & LAUNCH_NETNS;
		l->report->landlock_abi = rep.landlock_abi;
		rep.refused[sizeof rep.refused - 1] = 0;
		snprintf(l->report->refused, sizeof l->report->refused, "%s",
			 rep.refused);
	}
	*pid = rep.pid;
	*pidfd = fd;
out:
	free(req);
	return rc;
}

int mb_launch_status(struct mb_machine *m, pid_t pid, int *status)
{
	struct mb_launcher *ln = get(m);
	if (!ln)
		return -ENOMEM;
	struct launch_req q = { .magic = LAUNCH_MAGIC, .op = LAUNCH_STATUS,
				.pid = pid };
	struct launch_rep rep;
	int fd = -1, rc;
	pthread_mutex_lock(&ln->lock);
	rc = running(ln) ? ask(ln, &q, sizeof q, NULL, 0, &rep, &fd) :
		mb_seterr(-ESRCH, "launch: no launcher");
	pthread_mutex_unlock(&ln->lock);
	if (fd >= 0)
		close(fd);
	if (rc)
		return rc;
	if (rep.err == -EAGAIN)
		return -EAGAIN; /* still running: not an error worth a message */
	if (rep.err)
		return mb_seterr(rep.err, "launch: pid %d: %s", (int)pid,
				 strerror(-rep.err));
	*status = rep.status;
	return 0;
}

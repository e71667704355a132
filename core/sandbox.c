/*
 * The device sandbox (docs/sandbox.md): a process about to read bytes a
 * guest controls confines itself, each layer applied where the host
 * allows it and reported either way. In order:
 *   user namespace (uid/gid mapped to who we were), then mount, net, ipc,
 *   uts namespaces owned by it; pid: the process is pid 1 of its own
 *   namespace when the launcher started it with MB_LAUNCH_NEWPID (a
 *   process cannot move itself into a new pid namespace);
 *   an empty root: a tmpfs, pivot_root into it, the old root detached,
 *   the new one read-only;
 *   rlimits: NOFILE, NPROC (0 without threads), FSIZE 0 (unless the
 *   process writes files through passed descriptors), CORE 0;
 *   capabilities: the bounding set dropped, then every set emptied;
 *   no_new_privs;
 *   Landlock: a ruleset handling every access right of the host's ABI
 *   with no rule, so no path can be opened, no TCP port bound or
 *   connected, no signal sent or abstract socket reached outside;
 *   seccomp: an allowlist for a device model on passed descriptors,
 *   SECCOMP_RET_KILL_PROCESS for anything else.
 * Only no_new_privs and seccomp are required: without them it fails.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/landlock.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/internal.h"
#include "core/seccomp.h"
#ifdef MB_ASAN
void __lsan_do_leak_check(void); /* sanitizer/lsan_interface.h */
#endif
#include "moonbox/sandbox.h"

#ifndef CLONE_NEWCGROUP
#define CLONE_NEWCGROUP 0x02000000
#endif

static void refused_why(struct mb_sandbox_report *r, const char *what,
			const char *why)
{
	size_t n = strlen(r->refused);
	snprintf(r->refused + n, sizeof r->refused - n, "%s%s: %s",
		 n ? "; " : "", what, why);
}

static void refused(struct mb_sandbox_report *r, const char *what, int e)
{
	refused_why(r, what, strerrorname_np(e) ? strerrorname_np(e) : "?");
}

static int write_file(const char *path, const char *fmt, ...)
{
	char buf[64];
	va_list ap;
	va_start(ap, fmt);
	int len = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = write(fd, buf, (size_t)len) == len ? 0 : -errno;
	close(fd);
	return rc;
}

static int map_ids(uid_t uid, gid_t gid)
{
	int rc = write_file("/proc/self/setgroups", "deny");
	if (rc && rc != -ENOENT)
		return rc;
	rc = write_file("/proc/self/uid_map", "%u %u 1\n", uid, uid);
	if (!rc)
		rc = write_file("/proc/self/gid_map", "%u %u 1\n", gid, gid);
	return rc;
}

static void namespaces(struct mb_sandbox_report *r)
{
	/* Who we are outside: mapped to themselves inside. */
	uid_t uid = geteuid();
	gid_t gid = getegid();
	/* (nested in the one the launcher made for MB_LAUNCH_NEWPID, if
	 * any: that one is mapped the same way, uid to itself) */
	if (unshare(CLONE_NEWUSER) == 0) {
		int rc = map_ids(uid, gid);
		r->userns = rc == 0;
		if (rc)
			refused(r, "userns map", -rc);
	} else {
		refused(r, "userns", errno);
	}
	static const struct {
		int flag;
		const char *name;
		size_t off;
	} ns[] = {
		{ CLONE_NEWNS, "mountns", offsetof(struct mb_sandbox_report, mountns) },
		{ CLONE_NEWNET, "netns", offsetof(struct mb_sandbox_report, netns) },
		{ CLONE_NEWIPC, "ipcns", offsetof(struct mb_sandbox_report, ipcns) },
		{ CLONE_NEWUTS, "utsns", offsetof(struct mb_sandbox_report, utsns) },
	};
	for (size_t i = 0; i < sizeof ns / sizeof *ns; i++) {
		bool ok = unshare(ns[i].flag) == 0;
		*(bool *)((char *)r + ns[i].off) = ok;
		if (!ok)
			refused(r, ns[i].name, errno);
	}
	unshare(CLONE_NEWCGROUP); /* no report field: best effort */
	r->pidns = getpid() == 1;
	if (!r->pidns)
		refused_why(r, "pidns", "not pid 1 of its own (launch with MB_LAUNCH_NEWPID)");
}

/* An empty, read-only root: whatever the process names by path, nothing
 * is there. Needs the mount namespace. */
static int empty_root(void)
{
	static const char *const dirs[] = { "/tmp", "/mnt", "/dev", "/proc" };
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return -errno;
	const char *dir = NULL;
	for (size_t i = 0; i < sizeof dirs / sizeof *dirs && !dir; i++)
		if (mount("none", dirs[i], "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
			  "size=4k,nr_inodes=2,mode=0555") == 0)
			dir = dirs[i];
	if (!dir)
		return -errno;
	/* pivot_root(".", "."): the old root stacks on the new one, and
	 * unmounting "." detaches it (pivot_root(2), NOTES) */
	if (chdir(dir) < 0 || syscall(SYS_pivot_root, ".", ".") < 0)
		return -errno;
	if (umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
		return -errno;
	if (mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID |
		  MS_NODEV | MS_NOEXEC, NULL) < 0)
		return -errno;
	return 0;
}

static int lower(int res, rlim_t v)
{
	struct rlimit l;
	if (getrlimit(res, &l) < 0)
		return -errno;
	if (l.rlim_cur > v || l.rlim_cur == RLIM_INFINITY)
		l.rlim_cur = v;
	if (l.rlim_max > v || l.rlim_max == RLIM_INFINITY)
		l.rlim_max = v;
	return setrlimit(res, &l) < 0 ? -errno : 0;
}

static int rlimits(const struct mb_sandbox_policy *p)
{
	int rc = lower(RLIMIT_NOFILE, 256);
	if (!rc && !p->threads)
		rc = lower(RLIMIT_NPROC, 0);
	if (!rc && !p->write_files)
		rc = lower(RLIMIT_FSIZE, 0);
	if (!rc)
		rc = lower(RLIMIT_CORE, 0);
	return rc;
}

static int drop_caps(void)
{
	int rc = 0;
	for (int c = 0; c <= 63; c++)
		if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL) {
			rc = -errno;
			break;
		}
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2] = { { 0 } };
	if (syscall(SYS_capset, &h, d) < 0)
		return -errno;
	return rc;
}

/* The ruleset struct as of ABI 6; older kernels take its prefix. */
struct ll_attr {
	uint64_t fs, net, scoped;
};

static int landlock(struct mb_sandbox_report *r)
{
	long abi = syscall(SYS_landlock_create_ruleset, NULL, 0,
			   LANDLOCK_CREATE_RULESET_VERSION);
	if (abi < 0)
		return -errno;
	/* fs rights: 13 in ABI 1, REFER (2), TRUNCATE (3), IOCTL_DEV (5) */
	struct ll_attr a = { .fs = (1ull << 13) - 1 };
	size_t size = sizeof a.fs;
	if (abi >= 2)
		a.fs |= 1ull << 13;
	if (abi >= 3)
		a.fs |= 1ull << 14;
	if (abi >= 5)
		a.fs |= 1ull << 15;
	if (abi >= 4) { /* TCP bind and connect */
		a.net = 3;
		size = 2 * sizeof(uint64_t);
	}
	if (abi >= 6) { /* abstract unix sockets and signals, scoped */
		a.scoped = 3;
		size = sizeof a;
	}
	int fd = (int)syscall(SYS_landlock_create_ruleset, &a, size, 0);
	if (fd < 0)
		return -errno;
	int rc = syscall(SYS_landlock_restrict_self, fd, 0) < 0 ? -errno : 0;
	close(fd);
	if (!rc)
		r->landlock_abi = (int)abi;
	return rc;
}

#define ALLOW(x) { .nr = SYS_##x, .how = SC_ALLOW }
#define NO_EXEC(x) { .nr = SYS_##x, .how = SC_ARG_CLEAR, .arg = 2, .v = { PROT_EXEC } }

/* A device model on passed descriptors: I/O on them, memory, time,
 * waiting. Nothing that names a path, makes a socket, starts a program or
 * reaches another process. */
static const struct sc_rule device_rules[] = {
	ALLOW(read), ALLOW(write), ALLOW(readv), ALLOW(writev), ALLOW(pread64),
	ALLOW(pwrite64), ALLOW(preadv), ALLOW(pwritev), ALLOW(fsync),
	ALLOW(fdatasync), ALLOW(close), ALLOW(recvmsg), ALLOW(sendmsg),
	ALLOW(recvfrom), ALLOW(sendto), ALLOW(shutdown), ALLOW(epoll_create1),
	ALLOW(epoll_ctl), ALLOW(epoll_wait), ALLOW(epoll_pwait), ALLOW(poll),
	ALLOW(ppoll), ALLOW(timerfd_create), ALLOW(timerfd_settime),
	ALLOW(timerfd_gettime), ALLOW(eventfd2), ALLOW(clock_gettime),
	ALLOW(clock_nanosleep), ALLOW(nanosleep), ALLOW(gettimeofday),
	ALLOW(futex), NO_EXEC(mmap), ALLOW(munmap), NO_EXEC(mprotect),
	ALLOW(madvise), ALLOW(brk), ALLOW(rt_sigreturn),
	/* mremap could grow a granted window's mapping over the rest of its
	 * memfd (docs/devproc.md, DMA): refused; glibc's realloc copies. */
	{ .nr = SYS_mremap, .how = SC_ERRNO, .v = { ENOSYS } },
	ALLOW(rt_sigprocmask), ALLOW(rt_sigaction), ALLOW(sigaltstack),
	ALLOW(exit), ALLOW(exit_group), ALLOW(getpid), ALLOW(gettid),
	ALLOW(restart_syscall), ALLOW(lseek), ALLOW(fstat), ALLOW(getrandom),
	ALLOW(ftruncate), ALLOW(fallocate), ALLOW(dup), ALLOW(dup3)
	SANITIZER_RULES,
	{ .nr = SYS_newfstatat, .how = SC_ARG_SET, .arg = 3, .v = { AT_EMPTY_PATH } },
	{ .nr = SYS_fcntl, .how = SC_ARG_IN, .arg = 1, .nv = 8,
	  .v = { F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_DUPFD_CLOEXEC,
		 F_ADD_SEALS, F_GET_SEALS } },
};

static const struct sc_rule thread_rules[] = {
	/* threads only: CLONE_THREAD set (no new process); clone3 hides
	 * its flags in memory, so it says ENOSYS and glibc uses clone */
	{ .nr = SYS_clone, .how = SC_ARG_SET, .arg = 0, .v = { CLONE_THREAD } },
	{ .nr = SYS_clone3, .how = SC_ERRNO, .v = { ENOSYS } },
	ALLOW(set_robust_list), ALLOW(rseq), ALLOW(sched_yield),
};

static int seccomp(const struct mb_sandbox_policy *p)
{
	struct sc_rule all[SC_MAX_RULES];
	unsigned n = 0;
	uint32_t self = (uint32_t)getpid();
	memcpy(all, device_rules, sizeof device_rules);
	n = sizeof device_rules / sizeof *device_rules;
	if (p->threads) {
		memcpy(all + n, thread_rules, sizeof thread_rules);
		n += sizeof thread_rules / sizeof *thread_rules;
	}
	/* signals to itself only */
	all[n++] = (struct sc_rule){ .nr = SYS_kill, .how = SC_ARG_IN, .arg = 0,
				     .nv = 1, .v = { self } };
	all[n++] = (struct sc_rule){ .nr = SYS_tgkill, .how = SC_ARG_IN, .arg = 0,
				     .nv = 1, .v = { self } };
	if (p->nextra > 64)
		return -E2BIG;
	return mb_sc_install(all, n, p->extra, p->nextra, SECCOMP_RET_KILL_PROCESS);
}

int mb_sandbox_enter(const struct mb_sandbox_policy *p,
		     struct mb_sandbox_report *r)
{
	memset(r, 0, sizeof *r);
	if (p->profile != MB_SANDBOX_DEVICE)
		return mb_seterr(-EINVAL, "sandbox: unknown profile %d", (int)p->profile);
	int rc;
#ifdef MB_ASAN
	/* LeakSanitizer's check at exit stops the world with clone and
	 * ptrace, which the filter kills: check now, while it still can,
	 * and not at exit. */
	__lsan_do_leak_check();
#endif
	namespaces(r);
	if (r->mountns) {
		rc = empty_root();
		r->empty_root = rc == 0;
		if (rc)
			refused(r, "empty root", -rc);
	} else {
		refused_why(r, "empty root", "no mount namespace");
	}
	rc = rlimits(p);
	r->rlimits = rc == 0;
	if (rc)
		refused(r, "rlimits", -rc);
	rc = drop_caps();
	r->no_caps = rc == 0;
	if (rc)
		refused(r, "caps", -rc);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		refused(r, "no_new_privs", errno);
		return mb_seterr(-errno, "sandbox: no_new_privs: %s", strerror(errno));
	}
	r->no_new_privs = true;
	rc = landlock(r);
	if (rc)
		refused(r, "landlock", -rc);
	rc = seccomp(p);
	if (rc) {
		refused(r, "seccomp", -rc);
		return mb_seterr(rc, "sandbox: seccomp: %s", strerror(-rc));
	}
	r->seccomp = true;
	return 0;
}

void mb_sandbox_describe(const struct mb_sandbox_report *r, char *buf,
			 size_t len)
{
	char ll[24] = "no";
	if (r->landlock_abi)
		snprintf(ll, sizeof ll, "abi %d", r->landlock_abi);
	snprintf(buf, len, "ns user %s mount %s net %s ipc %s uts %s pid %s; "
		 "empty root %s; caps %s; no_new_privs %s; rlimits %s; "
		 "landlock %s; seccomp %s%s%s",
		 r->userns ? "yes" : "no", r->mountns ? "yes" : "no",
		 r->netns ? "yes" : "no", r->ipcns ? "yes" : "no",
		 r->utsns ? "yes" : "no", r->pidns ? "yes" : "no",
		 r->empty_root ? "yes" : "no", r->no_caps ? "none" : "kept",
		 r->no_new_privs ? "yes" : "no", r->rlimits ? "yes" : "no", ll,
		 r->seccomp ? "kill-process allowlist" : "no",
		 r->refused[0] ? "; refused: " : "", r->refused);
}

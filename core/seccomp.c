/*
 * seccomp for moonbox's own threads (machine { seccomp = true }, docs/
 * sandbox.md) and the BPF builder the device sandbox shares.
 *
 * Each thread moonbox creates (vCPUs, the event loop, virtio-blk workers,
 * the gdb stub) installs the allowlist of its kind on itself, as its first
 * act once the machine runs; no TSYNC, so the script's (or embedder's)
 * thread stays free, and so do threads moonbox did not create. A
 * forbidden call traps (SECCOMP_RET_TRAP, the call is never made) into a
 * SIGSYS handler that writes which thread made which call and ends the
 * process with exit_group(159) (128 + SIGSYS): a clear message where
 * SECCOMP_RET_KILL_PROCESS would leave only a bare signal.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/internal.h"
#include "core/seccomp.h"
#include "moonbox/sandbox.h"

#define ARG_LO(i) (offsetof(struct seccomp_data, args) + 8 * (i))

static void put(struct sock_filter *f, unsigned *n, uint16_t code, uint8_t jt,
		uint8_t jf, uint32_t k)
{
	if (*n < SC_MAX_INSNS)
		f[*n] = (struct sock_filter)BPF_JUMP(code, k, jt, jf);
	(*n)++;
}

/* One rule: "nr matches: body, else skip it"; every body ends in a ret. */
static void rule(struct sock_filter *f, unsigned *n, const struct sc_rule *r,
		 uint32_t deny)
{
	const uint32_t allow = SECCOMP_RET_ALLOW;
	unsigned at = *n, k = r->nv;
	put(f, n, BPF_JMP | BPF_JEQ | BPF_K, 0, 0, (uint32_t)r->nr);
	switch (r->how) {
	case SC_ALLOW:
		put(f, n, BPF_RET | BPF_K, 0, 0, allow);
		break;
	case SC_ERRNO:
		put(f, n, BPF_RET | BPF_K, 0, 0, SECCOMP_RET_ERRNO | (r->v[0] & 0xffff));
		break;
	case SC_ARG_IN:
		put(f, n, BPF_LD | BPF_W | BPF_ABS, 0, 0, ARG_LO(r->arg));
		for (unsigned i = 0; i < k; i++)
			put(f, n, BPF_JMP | BPF_JEQ | BPF_K, (uint8_t)(k - i), 0, r->v[i]);
		put(f, n, BPF_RET | BPF_K, 0, 0, deny);
		put(f, n, BPF_RET | BPF_K, 0, 0, allow);
		break;
	case SC_ARG_SET:
		put(f, n, BPF_LD | BPF_W | BPF_ABS, 0, 0, ARG_LO(r->arg));
		put(f, n, BPF_ALU | BPF_AND | BPF_K, 0, 0, r->v[0]);
		put(f, n, BPF_JMP | BPF_JEQ | BPF_K, 1, 0, r->v[0]);
		put(f, n, BPF_RET | BPF_K, 0, 0, deny);
		put(f, n, BPF_RET | BPF_K, 0, 0, allow);
		break;
	case SC_ARG_CLEAR:
		put(f, n, BPF_LD | BPF_W | BPF_ABS, 0, 0, ARG_LO(r->arg));
		put(f, n, BPF_JMP | BPF_JSET | BPF_K, 0, 1, r->v[0]);
		put(f, n, BPF_RET | BPF_K, 0, 0, deny);
		put(f, n, BPF_RET | BPF_K, 0, 0, allow);
		break;
	case SC_ARG_MASK:
		/* per pair: reload, and, jeq -> allow */
		for (unsigned i = 0; i + 1 < k; i += 2) {
			unsigned left = (k - i) / 2 - 1; /* pairs after this one */
			put(f, n, BPF_LD | BPF_W | BPF_ABS, 0, 0, ARG_LO(r->arg));
			put(f, n, BPF_ALU | BPF_AND | BPF_K, 0, 0, r->v[i]);
			put(f, n, BPF_JMP | BPF_JEQ | BPF_K, (uint8_t)(3 * left + 1), 0,
			    r->v[i + 1]);
		}
		put(f, n, BPF_RET | BPF_K, 0, 0, deny);
		put(f, n, BPF_RET | BPF_K, 0, 0, allow);
		break;
	}
	if (at < SC_MAX_INSNS)
		f[at].jf = (uint8_t)(*n - at - 1);
}

int mb_sc_install(const struct sc_rule *r, unsigned nr, const int *extra,
		  unsigned nextra, uint32_t deny)
{
	struct sock_filter *f = malloc(SC_MAX_INSNS * sizeof *f);
	if (!f)
		return mb_seterr(-ENOMEM, "seccomp: out of memory");
	unsigned n = 0;
	put(f, &n, BPF_LD | BPF_W | BPF_ABS, 0, 0, offsetof(struct seccomp_data, arch));
	put(f, &n, BPF_JMP | BPF_JEQ | BPF_K, 1, 0, AUDIT_ARCH_X86_64);
	put(f, &n, BPF_RET | BPF_K, 0, 0, SECCOMP_RET_KILL_PROCESS);
	put(f, &n, BPF_LD | BPF_W | BPF_ABS, 0, 0, offsetof(struct seccomp_data, nr));
	/* x32 numbers (bit 30) reach the same kernel code under other
	 * numbers: never let them through */
	put(f, &n, BPF_JMP | BPF_JSET | BPF_K, 0, 1, 0x40000000u);
	put(f, &n, BPF_RET | BPF_K, 0, 0, SECCOMP_RET_KILL_PROCESS);
	for (unsigned i = 0; i < nextra; i++) {
		struct sc_rule x = { .nr = extra[i], .how = SC_ALLOW };
		rule(f, &n, &x, deny);
	}
	/* A holds nr from here on: only a rule's body loads an argument,
	 * and every body returns */
	for (unsigned i = 0; i < nr; i++)
		rule(f, &n, &r[i], deny);
	put(f, &n, BPF_RET | BPF_K, 0, 0, deny);
	if (n > SC_MAX_INSNS) {
		free(f);
		return mb_seterr(-E2BIG, "seccomp: a filter of %u instructions", n);
	}
	struct sock_fprog prog = { .len = (unsigned short)n, .filter = f };
	int rc = 0;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		rc = mb_seterr(-errno, "no_new_privs: %s", strerror(errno));
	else if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
		rc = mb_seterr(-errno, "seccomp: %s", strerror(errno));
	free(f);
	return rc;
}

unsigned mb_sc_count(const struct sc_rule *r, unsigned n)
{
	unsigned c = 0;
	for (unsigned i = 0; i < n; i++)
		c += r[i].how != SC_ERRNO;
	return c;
}

/* ---- the VMM's threads ------------------------------------------------- */

#define ALLOW(x) { .nr = SYS_##x, .how = SC_ALLOW }
/* No new executable mappings: moonbox never makes one once running. */
#define NO_EXEC(x) { .nr = SYS_##x, .how = SC_ARG_CLEAR, .arg = 2, .v = { PROT_EXEC } }
/* ioctl: KVM's ('\xae') and the terminal's ('T') request numbers only. */
#define IOCTL_KVM_TTY { .nr = SYS_ioctl, .how = SC_ARG_MASK, .arg = 1, .nv = 4, \
		.v = { 0xff00, 0xae00, 0xff00, 0x5400 } }
#define FCNTL_CMDS { .nr = SYS_fcntl, .how = SC_ARG_IN, .arg = 1, .nv = 8, \
		.v = { F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_DUPFD_CLOEXEC, \
		       F_ADD_SEALS, F_GET_SEALS } }
/* fstat through newfstatat(fd, "", AT_EMPTY_PATH) */
#define FSTATAT { .nr = SYS_newfstatat, .how = SC_ARG_SET, .arg = 3, .v = { AT_EMPTY_PATH } }

/* What every moonbox thread does: memory, locks, time, I/O on descriptors
 * it holds, signalling its own process's threads (vCPU kicks). Found by
 * strace -f of tiny guests and Linux boots (virtio blk, net, console,
 * rng), snapshots, the gdb stub and fault runs; see docs/sandbox.md. */
#define BASE_RULES                                                          \
	ALLOW(read), ALLOW(write), ALLOW(readv), ALLOW(writev), ALLOW(pread64), \
	ALLOW(pwrite64), ALLOW(preadv), ALLOW(pwritev), ALLOW(close),       \
	ALLOW(futex), ALLOW(brk), ALLOW(munmap), ALLOW(mremap), ALLOW(madvise), \
	NO_EXEC(mmap), NO_EXEC(mprotect), ALLOW(rt_sigprocmask),            \
	ALLOW(rt_sigreturn), ALLOW(exit), ALLOW(exit_group), ALLOW(getpid), \
	ALLOW(gettid), ALLOW(clock_gettime), ALLOW(clock_nanosleep),        \
	ALLOW(nanosleep), ALLOW(gettimeofday), ALLOW(sched_yield),          \
	ALLOW(getrandom), ALLOW(restart_syscall), ALLOW(fstat), FSTATAT,    \
	ALLOW(lseek), FCNTL_CMDS, ALLOW(fsync), ALLOW(fdatasync),           \
	ALLOW(poll), ALLOW(ppoll), ALLOW(epoll_ctl), ALLOW(timerfd_settime), \
	ALLOW(timerfd_gettime), ALLOW(sendmsg), ALLOW(recvmsg), ALLOW(sendto), \
	ALLOW(recvfrom), ALLOW(shutdown), ALLOW(sigaltstack), IOCTL_KVM_TTY \
	SANITIZER_RULES

static const struct sc_rule vcpu_rules[] = {
	BASE_RULES,
	ALLOW(fallocate), ALLOW(ftruncate), /* a blk request run inline */
	ALLOW(eventfd2), ALLOW(timerfd_create), /* devices set up lazily */
	/* a device process timed out on this vCPU's read: killed, restarted */
	ALLOW(pidfd_send_signal),
	{ .nr = SYS_socketpair, .how = SC_ARG_IN, .arg = 0, .nv = 1, .v = { AF_UNIX } },
};
static const struct sc_rule evloop_rules[] = {
	BASE_RULES,
	ALLOW(epoll_wait), ALLOW(epoll_pwait), ALLOW(accept4),
	ALLOW(fallocate), ALLOW(ftruncate), ALLOW(eventfd2), ALLOW(timerfd_create),
	/* a device process restarted from here (docs/sandbox.md) */
	{ .nr = SYS_socketpair, .how = SC_ARG_IN, .arg = 0, .nv = 1, .v = { AF_UNIX } },
	ALLOW(pidfd_send_signal),
};
static const struct sc_rule worker_rules[] = {
	BASE_RULES,
	ALLOW(fallocate), ALLOW(ftruncate), ALLOW(preadv2), ALLOW(pwritev2),
};
static const struct sc_rule gdb_rules[] = {
	BASE_RULES,
	ALLOW(accept4), ALLOW(setsockopt), ALLOW(getsockname), ALLOW(epoll_wait),
};

static const struct {
	const char *name;
	const struct sc_rule *r;
	unsigned n;
} kinds[] = {
	[MB_THREAD_VCPU] = { "vcpu", vcpu_rules, sizeof vcpu_rules / sizeof *vcpu_rules },
	[MB_THREAD_EVLOOP] = { "event loop", evloop_rules, sizeof evloop_rules / sizeof *evloop_rules },
	[MB_THREAD_WORKER] = { "worker", worker_rules, sizeof worker_rules / sizeof *worker_rules },
	[MB_THREAD_GDB] = { "gdb stub", gdb_rules, sizeof gdb_rules / sizeof *gdb_rules },
};
#define NKINDS (sizeof kinds / sizeof *kinds)

/* This thread's kind + 1 (0: moonbox did not filter it). */
static _Thread_local int filtered;
static struct sigaction old_sigsys;

/* Async-signal-safe decimal. */
static char *num(char *p, long v)
{
	char t[24];
	int n = 0;
	if (v < 0) {
		*p++ = '-';
		v = -v;
	}
	do
		t[n++] = (char)('0' + v % 10);
	while ((v /= 10) && n < 23);
	while (n)
		*p++ = t[--n];
	return p;
}

static char *str(char *p, const char *s)
{
	while (*s)
		*p++ = *s++;
	return p;
}

static void on_sigsys(int sig, siginfo_t *si, void *uc)
{
	int k = filtered - 1;
	if (k < 0 || si->si_code != 1 /* SYS_SECCOMP */) {
		/* not ours: whoever had SIGSYS before */
		if (old_sigsys.sa_flags & SA_SIGINFO)
			old_sigsys.sa_sigaction(sig, si, uc);
		else if (old_sigsys.sa_handler != SIG_IGN &&
			 old_sigsys.sa_handler != SIG_DFL)
			old_sigsys.sa_handler(sig);
		else
			syscall(SYS_exit_group, 128 + SIGSYS);
		return;
	}
	char msg[512], *p = msg;
	p = str(p, "moonbox: seccomp: the ");
	p = str(p, kinds[k].name);
	p = str(p, " thread (tid ");
	p = num(p, syscall(SYS_gettid));
	p = str(p, ") made system call ");
	p = num(p, si->si_syscall);
	p = str(p, ", which its allowlist forbids (machine { seccomp = true }, "
		"docs/sandbox.md); ending the process\n");
	if (write(2, msg, (size_t)(p - msg)) < 0) {
		/* nothing else to tell it with */
	}
	syscall(SYS_exit_group, 128 + SIGSYS);
}

/* Once per process, from an unfiltered thread (rt_sigaction is not in
 * any list): the handler that names a forbidden call. */
int mb_seccomp_prepare(void)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	static bool done;
	int rc = 0;
	pthread_mutex_lock(&lock);
	if (!done) {
		uint32_t act = SECCOMP_RET_TRAP;
		if (syscall(SYS_seccomp, SECCOMP_GET_ACTION_AVAIL, 0, &act) < 0) {
			rc = mb_seterr(-errno, "seccomp: not available here (%s)",
				       strerror(errno));
		} else {
			struct sigaction sa = { .sa_sigaction = on_sigsys,
						.sa_flags = SA_SIGINFO };
			sigemptyset(&sa.sa_mask);
			sigaction(SIGSYS, &sa, &old_sigsys);
			done = true;
		}
	}
	pthread_mutex_unlock(&lock);
	return rc;
}

int mb_seccomp_thread(enum mb_thread_kind kind)
{
	if ((unsigned)kind >= NKINDS)
		return mb_seterr(-EINVAL, "seccomp: thread kind %d", (int)kind);
	if (filtered)
		return 0;
	int rc = mb_seccomp_prepare();
	if (rc)
		return rc;
	/* kill(2) and tgkill(2) only at this process: captured now */
	uint32_t self = (uint32_t)getpid();
	struct sc_rule extra[2] = {
		{ .nr = SYS_tgkill, .how = SC_ARG_IN, .arg = 0, .nv = 1, .v = { self } },
		{ .nr = SYS_kill, .how = SC_ARG_IN, .arg = 0, .nv = 1, .v = { self } },
	};
	struct sc_rule all[SC_MAX_RULES];
	unsigned n = kinds[kind].n;
	memcpy(all, kinds[kind].r, n * sizeof *all);
	memcpy(all + n, extra, sizeof extra);
	n += 2;
	filtered = kind + 1; /* before: a trap may come at the first call after */
	rc = mb_sc_install(all, n, NULL, 0, SECCOMP_RET_TRAP);
	if (rc)
		filtered = 0;
	return rc;
}

unsigned mb_seccomp_allowed(enum mb_thread_kind kind)
{
	return (unsigned)kind < NKINDS ? mb_sc_count(kinds[kind].r, kinds[kind].n) + 2 : 0;
}

const char *mb_seccomp_kind_name(enum mb_thread_kind kind)
{
	return (unsigned)kind < NKINDS ? kinds[kind].name : "?";
}

/* A moonbox thread's check, at its start and each time it wakes: when
 * its machine runs under seccomp, filter it (once). A failure stops the
 * machine with the reason: better than running unconfined. */
void mb_seccomp_point(struct mb_machine *m, enum mb_thread_kind kind)
{
	if (!m || filtered || !atomic_load(&m->seccomp_go))
		return;
	int rc = mb_seccomp_thread(kind);
	if (rc)
		mb_machine_stop(m, MB_STOP_ERROR, rc, "seccomp: %s thread: %s",
				mb_seccomp_kind_name(kind), mb_errmsg());
}

bool mb_seccomp_filtered(void)
{
	return filtered != 0;
}

static _Atomic int default_on;

bool mb_seccomp_default(int set)
{
	if (set >= 0)
		atomic_store(&default_on, set ? 1 : 0);
	return atomic_load(&default_on) != 0;
}

int mb_machine_set_seccomp(struct mb_machine *m, bool on)
{
	if (atomic_load(&m->seccomp_go) && !on)
		return mb_seterr(-EBUSY, "seccomp: the machine's threads are "
				 "already confined");
	m->seccomp = on;
	return 0;
}

/* MOONBOX_SECCOMP_TEST=vcpu|evloop (tests only): make a thread of that
 * kind call getppid(2), which no list allows, to see the report. vcpu:
 * at a guest write to port 0x520 (tests/guests/pio.S). */
static void provoke_write(void *dev, uint64_t off, const void *data,
			  unsigned size)
{
	syscall(SYS_getppid);
}

struct wake {
	struct mb_machine *m;
	int fd;
	const char *test;
};

static void on_wake(void *opaque, int fd)
{
	uint64_t v;
	if (read(fd, &v, sizeof v) < 0) {
		/* spurious */
	}
	struct wake *w = opaque;
	if (w->test && strcmp(w->test, "evloop") == 0)
		syscall(SYS_getppid);
}


static void wake_free(void *p)
{
	struct wake *w = p;
	mb_machine_unwatch(w->m, w->fd);
	close(w->fd);
	free(w);
}

int mb_seccomp_start(struct mb_machine *m)
{
	/* The launcher first: spawning needs clone and exec, which no
	 * filtered thread may do. */
	int rc = mb_launcher_start(m);
	if (rc)
		return mb_seterr(rc, "seccomp: the launcher must start before "
				 "the filters: %s", mb_errmsg());
	rc = mb_seccomp_prepare();
	if (rc)
		return rc;
	static const struct mb_io_ops provoke = { .write = provoke_write };
	const char *test = getenv("MOONBOX_SECCOMP_TEST");
	if (test && strcmp(test, "vcpu") == 0)
		mb_bus_register(m->pio, 0x520, 4, &provoke, NULL, "seccomp-test");
	/* The event loop filters itself at its next wake-up: make it now. */
	struct wake *w = malloc(sizeof *w);
	if (!w)
		return mb_seterr(-ENOMEM, "seccomp: out of memory");
	w->m = m;
	w->test = test;
	w->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (w->fd < 0 || mb_machine_watch(m, w->fd, on_wake, w)) {
		rc = mb_seterr(-errno, "seccomp: eventfd: %s", strerror(errno));
		if (w->fd >= 0)
			close(w->fd);
		free(w);
		return rc;
	}
	rc = mb_machine_on_destroy(m, wake_free, w);
	if (rc) {
		wake_free(w);
		return rc;
	}
	atomic_store(&m->seccomp_go, true);
	mb_evloop_seccomp(m->ev, m);
	uint64_t one = 1;
	if (write(w->fd, &one, sizeof one) < 0)
		return mb_seterr(-errno, "seccomp: eventfd: %s", strerror(errno));
	/* Not waited for: the loop may be inside a callback that waits for
	 * this very thread (a Lua timer queued before the run). It filters
	 * itself before it dispatches anything that happens from now on. */
	return 0;
}

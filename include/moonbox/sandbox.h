/*
 * Processes moonbox starts (device processes, vhost-user back-ends) and the
 * confinement they and moonbox's own threads run under.
 *
 * Launcher: a helper process forked from the VMM before any seccomp filter
 * exists (mb_launcher_start, done by the machine on first use), so spawning
 * still works once the VMM's threads are confined. It execs programs given
 * only file descriptors: fds[i] becomes fd 3 + i in the child, every other
 * descriptor is closed, the environment is empty. The child is killed when
 * the VMM dies (parent-death signal on the launcher and on the child; the
 * launcher exits when its socket to the VMM closes).
 *
 * Sandbox: a process confines itself (mb_sandbox_enter) before it reads any
 * byte a guest controls; moonbox's threads take a per-thread seccomp
 * allowlist (mb_seccomp_thread) once the machine runs.
 */
#ifndef MOONBOX_SANDBOX_H
#define MOONBOX_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct mb_machine;

#define MB_LAUNCH_MAX_FDS 64
#define MB_LAUNCH_MAX_ARGS 64

struct mb_launch {
	const char *const *argv; /* argv[0]: the program (an absolute path) */
	const int *fds;          /* become 3, 4, ... in the child, in order */
	unsigned nfds;
	unsigned flags;          /* MB_LAUNCH_* */
	/* MB_LAUNCH_CONFINE: what the program may reach by path, each list
	 * NULL-terminated (NULL: none), at most MB_LAUNCH_MAX_PATHS each */
	const char *const *ro;   /* read (and execute) */
	const char *const *rw;   /* read, write, create, remove */
	struct mb_sandbox_report *report; /* out, optional: what it got */
};
#define MB_LAUNCH_MAX_PATHS 32
/* The child is pid 1 of a new pid namespace (in a new user namespace
 * owning it, uid and gid mapped to themselves), where the host allows it;
 * else an ordinary child (its mb_sandbox_enter reports pidns false). */
#define MB_LAUNCH_NEWPID 1u
/* Confine the child before exec (docs/sandbox.md, "Spawned back-ends"):
 * no_new_privs, RLIMIT_CORE 0, and Landlock where the kernel has it:
 * only the program, the shared-library and loader paths (/usr, /lib,
 * /lib64, /etc/ld.so.*), ro and rw stay reachable by path. */
#define MB_LAUNCH_CONFINE 2u
/* With MB_LAUNCH_CONFINE: no Landlock (a program that makes its own
 * mount namespace: Landlock forbids mount and pivot_root) */
#define MB_LAUNCH_NO_LANDLOCK 4u
/* With MB_LAUNCH_NEWPID: new network, IPC and UTS namespaces too (no
 * network but a loopback that is down); without them when the host
 * refuses (the report's netns says which) */
#define MB_LAUNCH_NEWNET 8u
#define MB_LAUNCH_FLAGS 15u /* every flag above */

/* Start l->argv through m's launcher (starting the launcher first if
 * needed). *pid: the child's pid; *pidfd: a pidfd for it (poll for its
 * exit, pidfd_send_signal to kill it), owned by the caller. 0 or -errno. */
int mb_launch(struct mb_machine *m, const struct mb_launch *l, pid_t *pid,
	      int *pidfd);
/* Fork m's launcher now (the machine does it before installing filters);
 * idempotent. */
int mb_launcher_start(struct mb_machine *m);
/* How a child of m's launcher ended: 0 and *status (a wait(2) status: use
 * WIFEXITED, WTERMSIG...) once it has, -EAGAIN while it runs, -ESRCH for a
 * pid the launcher does not know (or already reported: each is reported
 * once). The launcher reaps its children; poll the pidfd to learn when. */
int mb_launch_status(struct mb_machine *m, pid_t pid, int *status);
/* m may be NULL in the three above: a launcher for the whole process,
 * started on first use, ending with it. Children get 0 and 1 on /dev/null
 * and 2 the VMM's stderr as it was when the launcher started. */

/* Where moonbox's helper programs (moonbox-launcher, moonbox-device) are:
 * $MOONBOX_LIBEXEC when set; else next to the moonbox binary, moonbox.so
 * or libmoonbox.so this code runs from, or next to the executable (the
 * build tree), or in ../libexec/moonbox from them (an installed tree),
 * when prog is there; else the configured libexec directory
 * ($(PREFIX)/libexec/moonbox). 0 and the path in buf, or -ENOENT. */
int mb_libexec_path(const char *prog, char *buf, size_t len);

/* What a process asks of mb_sandbox_enter. */
enum mb_sandbox_profile {
	MB_SANDBOX_DEVICE, /* moonbox-device: a device model on passed fds */
};

struct mb_sandbox_policy {
	enum mb_sandbox_profile profile;
	/* Extra syscall numbers the seccomp allowlist lets through (a
	 * back-end's needs), on top of the profile's. */
	const int *extra;
	unsigned nextra;
	bool threads; /* the process starts threads after entering */
	/* it writes regular files through passed descriptors (a disk
	 * image): RLIMIT_FSIZE stays, since a limit of 0 fails every write
	 * to a regular file */
	bool write_files;
};

/* What was applied; each item false when the host refused it, with why. */
struct mb_sandbox_report {
	bool userns, mountns, netns, ipcns, utsns, pidns;
	bool empty_root;  /* pivot to an empty tmpfs root, read-only */
	bool no_caps;     /* every capability set empty, bounding set dropped */
	bool no_new_privs;
	bool rlimits;     /* RLIMIT_NOFILE / NPROC / FSIZE / CORE lowered */
	int landlock_abi; /* 0: not applied */
	bool seccomp;     /* allowlist installed, kill-process on the rest */
	char refused[512]; /* "netns: EPERM; landlock: ENOSYS; ..." */
};

/* Confine the calling process (single-threaded at this point). Applies
 * what the host allows; fails (-errno) only when seccomp or no_new_privs
 * cannot be applied, the two it never runs without. */
int mb_sandbox_enter(const struct mb_sandbox_policy *p,
		     struct mb_sandbox_report *r);
/* The report as one line of text, for dev:state() and logs. */
void mb_sandbox_describe(const struct mb_sandbox_report *r, char *buf,
			 size_t len);

/* moonbox's own threads (machine { seccomp = true }). */
enum mb_thread_kind {
	MB_THREAD_VCPU,
	MB_THREAD_EVLOOP,
	MB_THREAD_WORKER, /* virtio-blk workers and the like */
	MB_THREAD_GDB,    /* the gdb stub's server */
};
/* Install the allowlist for a thread of that kind on the calling thread
 * (no TSYNC: only this thread and threads it creates later). A forbidden
 * call ends the process (exit status 159) after a message on stderr
 * naming the thread and the call's number (docs/sandbox.md). */
int mb_seccomp_thread(enum mb_thread_kind kind);
/* The check each moonbox thread makes at its start and when it wakes:
 * if m runs under seccomp, filter the calling thread (once). */
void mb_seccomp_point(struct mb_machine *m, enum mb_thread_kind kind);
/* Whether moonbox filtered the calling thread. */
bool mb_seccomp_filtered(void);
/* Machines confine their threads once they run (seccomp = true); before
 * the first run. The default for machines created afterwards: set with 0
 * or 1 (moonbox --seccomp), -1 only reads it. */
int mb_machine_set_seccomp(struct mb_machine *m, bool on);
bool mb_seccomp_default(int set);
/* The SIGSYS handler that reports a forbidden call, installed once per
 * process (replacing any other; SIGSYS not from moonbox's filters goes to
 * the previous handler). Done by the first machine run with seccomp. */
int mb_seccomp_prepare(void);
/* Syscall numbers a thread of that kind may make, and its name. */
unsigned mb_seccomp_allowed(enum mb_thread_kind kind);
const char *mb_seccomp_kind_name(enum mb_thread_kind kind);

#endif

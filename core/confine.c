/*
 * What confinement this host allows a VMM (moonbox --info): seccomp and
 * its kill-process action, Landlock's ABI, unprivileged user namespaces,
 * where the launcher is, what the device sandbox gets here (tried in a
 * child), the thread filters' sizes. Installs nothing in this process.
 */
#include <errno.h>
#include <linux/landlock.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/internal.h"
#include "moonbox/sandbox.h"

#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#endif

/* The value of "Key:" in /proc/self/status, or -1. */
static long status_field(const char *key)
{
	FILE *f = fopen("/proc/self/status", "re");
	if (!f)
		return -1;
	char line[256];
	long v = -1;
	size_t n = strlen(key);
	while (fgets(line, sizeof line, f))
		if (strncmp(line, key, n) == 0 && line[n] == ':') {
			v = strtol(line + n + 1, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

static long read_long(const char *path)
{
	FILE *f = fopen(path, "re");
	long v = -1;
	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

/* seccomp(2), SECCOMP_GET_ACTION_AVAIL (Linux 4.14). */
static const char *action_avail(uint32_t action)
{
	if (syscall(SYS_seccomp, SECCOMP_GET_ACTION_AVAIL, 0, &action) == 0)
		return "available";
	return errno == EOPNOTSUPP ? "missing" : strerror(errno);
}

static void seccomp_info(FILE *out)
{
	static const char *const modes[] = { "off", "strict", "filter" };
	int mode = prctl(PR_GET_SECCOMP, 0, 0, 0, 0);
	long field = status_field("Seccomp");
	if (mode < 0 && errno == EINVAL) {
		fprintf(out, "  seccomp: not in this kernel\n");
		return;
	}
	fprintf(out, "  seccomp: this process %s (status Seccomp: %ld, filters: %ld), "
		"no_new_privs %d\n", mode >= 0 && mode <= 2 ? modes[mode] : "?",
		field, status_field("Seccomp_filters"), prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0));
	fprintf(out, "    SECCOMP_RET_KILL_PROCESS %s, SECCOMP_RET_LOG %s, "
		"SECCOMP_RET_USER_NOTIF %s\n", action_avail(SECCOMP_RET_KILL_PROCESS),
		action_avail(SECCOMP_RET_LOG), action_avail(SECCOMP_RET_USER_NOTIF));
}

static void landlock_info(FILE *out)
{
	long abi = syscall(SYS_landlock_create_ruleset, NULL, 0,
			   LANDLOCK_CREATE_RULESET_VERSION);
	if (abi >= 0)
		fprintf(out, "  landlock: ABI %ld\n", abi);
	else if (errno == EOPNOTSUPP)
		fprintf(out, "  landlock: built in but disabled (lsm= on the kernel command line)\n");
	else
		fprintf(out, "  landlock: unavailable (%s)\n", strerror(errno));
}

/* Whether a process without privileges may unshare(CLONE_NEWUSER): tried
 * in a child that first drops to nobody when we are root. */
static void userns_info(FILE *out)
{
	long knob = read_long("/proc/sys/kernel/unprivileged_userns_clone");
	long max = read_long("/proc/sys/user/max_user_namespaces");
	fflush(out);
	pid_t pid = fork();
	if (pid == 0) {
		if (geteuid() == 0 && (setgid(65534) || setuid(65534)))
			_exit(2);
		_exit(unshare(CLONE_NEWUSER) == 0 ? 0 : 1);
	}
	int st = 0;
	const char *tried = "could not try (fork failed)";
	if (pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st))
		tried = WEXITSTATUS(st) == 0 ? "works" :
			WEXITSTATUS(st) == 1 ? "refused" : "could not try (setuid failed)";
	char k[24] = "absent", m[24] = "absent";
	if (knob >= 0)
		snprintf(k, sizeof k, "%ld", knob);
	if (max >= 0)
		snprintf(m, sizeof m, "%ld", max);
	fprintf(out, "  user namespaces: unprivileged unshare(CLONE_NEWUSER) %s "
		"(unprivileged_userns_clone %s, max_user_namespaces %s)\n",
		tried, k, m);
}

/* mb_sandbox_enter in a child, which reports through a pipe and dies. */
static void sandbox_info(FILE *out)
{
	char path[4096];
	if (mb_libexec_path("moonbox-launcher", path, sizeof path) == 0)
		fprintf(out, "  launcher: %s\n", path);
	else
		fprintf(out, "  launcher: %s\n", mb_errmsg());
	int p[2];
	struct mb_sandbox_report r;
	if (pipe(p) < 0)
		return;
	fflush(out);
	pid_t pid = fork();
	if (pid == 0) {
		close(p[0]);
		struct mb_sandbox_policy pol = { .profile = MB_SANDBOX_DEVICE };
		mb_sandbox_enter(&pol, &r);
		_exit(write(p[1], &r, sizeof r) == sizeof r ? 0 : 1);
	}
	close(p[1]);
	ssize_t n = pid > 0 ? read(p[0], &r, sizeof r) : -1;
	close(p[0]);
	if (pid > 0)
		waitpid(pid, NULL, 0);
	if (n == sizeof r) {
		char line[1024];
		mb_sandbox_describe(&r, line, sizeof line);
		fprintf(out, "  device sandbox (tried in a child; pid namespace only "
			"through the launcher): %s\n", line);
	} else {
		fprintf(out, "  device sandbox: could not try\n");
	}
	fprintf(out, "  thread filters (seccomp = true): system calls allowed: ");
	for (int k = MB_THREAD_VCPU; k <= MB_THREAD_GDB; k++)
		fprintf(out, "%s%s %u", k ? ", " : "", mb_seccomp_kind_name(k),
			mb_seccomp_allowed(k));
	fprintf(out, "\n");
}

void mb_confine_info(FILE *out)
{
	fprintf(out, "confinement this host allows:\n");
	seccomp_info(out);
	landlock_info(out);
	userns_info(out);
	sandbox_info(out);
}

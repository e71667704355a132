/*
 * moonbox guest /init (PID 1): a static program that scripts/deps.sh builds
 * and puts into the initramfs and the root disk. Protocol (guest/README.md,
 * "Init protocol"):
 *   prints "moonbox-guest: init" once proc, sysfs and devtmpfs are mounted;
 *   kernel command line "... -- CMD": runs CMD with /bin/sh -c, prints
 *   "moonbox-guest: cmd-exit=<status>" (the shell's $?), powers off;
 *   no "--": an interactive shell on the console, power off when it exits;
 *   before powering off it prints "moonbox-guest: poweroff" and syncs.
 *
 * Why C and not a shell script: where guest kernel code is emulated, every
 * fork and exec costs tenths of a second (page-table copies and page faults
 * all run in the emulated kernel). A script paid for starting busybox as
 * PID 1 and for forking and exec'ing `mount`; this program mounts with
 * three system calls and starts the one shell it needs with posix_spawn,
 * which shares its memory with the child until the exec (vfork) instead of
 * copying page tables. guest/README.md has the numbers.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static void say(const char *s)
{
	size_t n = strlen(s);

	while (n) {
		ssize_t w = write(1, s, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		s += w;
		n -= (size_t)w;
	}
}

static void warn(const char *what, int err)
{
	char m[160];

	snprintf(m, sizeof m, "moonbox-guest: init: %s: %s\n", what, strerror(err));
	say(m);
}

/* EBUSY: already there (the kernel mounts devtmpfs on a disk root itself,
 * CONFIG_DEVTMPFS_MOUNT; it does not on an initramfs root). */
static void mnt(const char *type, const char *dir)
{
	if (mount(type, dir, type, 0, NULL) < 0 && errno != EBUSY) {
		char what[64];

		snprintf(what, sizeof what, "mount %s on %s", type, dir);
		warn(what, errno);
	}
}

/* Runs ARGV[0] (found by PATH unless it has a slash) and waits for it, reaping any orphan that exits
 * meanwhile (PID 1 inherits them). Returns its status as the shell's $?
 * would: the exit code, or 128 + the signal that killed it. */
static int run(char *const argv[])
{
	pid_t pid;
	int st = 0, e = posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ);

	if (e) {
		warn(argv[0], e);
		return 127;
	}
	for (;;) {
		pid_t w = wait(&st);

		if (w == pid)
			break;
		if (w < 0 && errno != EINTR) {
			warn("wait", errno);
			return 127;
		}
	}
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The command: the raw text after the first " -- " of /proc/cmdline, not
 * init's argv, because the kernel also hands init the unknown bare words
 * given before "--" and strips double quotes from argv; the raw text keeps
 * the shell quoting exactly as the VMM wrote it. Returns NULL if none. */
static char *command(char *buf, size_t size)
{
	int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
	size_t n = 1;

	buf[0] = ' '; /* so that a line starting with "-- " matches too */
	if (fd < 0) {
		warn("/proc/cmdline", errno);
		return NULL;
	}
	while (n < size - 1) {
		ssize_t r = read(fd, buf + n, size - 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	buf[n] = '\0';
	char *cmd = strstr(buf, " -- ");
	if (!cmd)
		return NULL;
	cmd += 4;
	size_t len = strlen(cmd);
	while (len && (cmd[len - 1] == '\n' || cmd[len - 1] == ' ' || cmd[len - 1] == '\t'))
		cmd[--len] = '\0';
	while (*cmd == ' ' || *cmd == '\t')
		cmd++;
	return *cmd ? cmd : NULL;
}

/* The three mounts above, for `mount -a` / `umount -a` in the guest. */
static void fstab(void)
{
	static const char tab[] = "proc /proc proc defaults 0 0\n"
				  "sysfs /sys sysfs defaults 0 0\n"
				  "devtmpfs /dev devtmpfs defaults 0 0\n";
	int fd = open("/etc/fstab", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0)
		return; /* a read-only root: nothing lost but the convenience */
	if (write(fd, tab, sizeof tab - 1) < 0)
		warn("/etc/fstab", errno);
	close(fd);
}

int main(void)
{
	/* x86's COMMAND_LINE_SIZE is 2048; room for more, bounded anyway */
	static char buf[8192];

	setenv("PATH", "/bin:/sbin:/usr/bin:/usr/sbin", 1);
	setenv("HOME", "/root", 1);
	setenv("TERM", "vt100", 1);
	mnt("proc", "/proc");
	mnt("sysfs", "/sys");
	mnt("devtmpfs", "/dev");
	fstab();
	say("moonbox-guest: init\n");

	char *cmd = command(buf, sizeof buf);
	if (cmd) {
		char *argv[] = { "/bin/sh", "-c", cmd, NULL };
		char m[64];

		snprintf(m, sizeof m, "moonbox-guest: cmd-exit=%d\n", run(argv));
		say(m);
	} else {
		/* cttyhack reopens the real console device (ttyS0) so the shell
		 * gets a controlling tty and job control and ^C work; setsid
		 * (a new session) makes that possible. */
		char *argv[] = { "setsid", "cttyhack", "sh", "-l", NULL };

		run(argv);
	}

	/* Without ACPI the power-off halts the CPU with interrupts off; the
	 * marker lets the VMM stop without waiting. */
	say("moonbox-guest: poweroff\n");
	sync();
	reboot(RB_POWER_OFF);
	warn("reboot", errno);
	for (;;) /* PID 1 must never exit: that panics the kernel */
		pause();
}

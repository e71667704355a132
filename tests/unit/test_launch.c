/* The launcher (core/launch.c, cli/moonbox-launcher.c): a child gets only
 * the descriptors given, at 3, 4, ..., an empty environment; its pidfd
 * polls readable when it ends and the launcher reports how; it dies when
 * the VMM does, even by SIGKILL; the launcher outlives the thread that
 * started it. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "moonbox.h"
#include "moonbox/sandbox.h"

/* Whether fd becomes readable within ms. */
static bool readable(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

/* Everything the other end writes, until EOF. */
static size_t slurp(int fd, char *buf, size_t len)
{
	size_t got = 0;
	ssize_t n;
	while (got + 1 < len && (n = read(fd, buf + got, len - 1 - got)) > 0)
		got += (size_t)n;
	buf[got] = 0;
	return got;
}

static int launch(const char *const *argv, const int *fds, unsigned nfds,
		  pid_t *pid, int *pidfd)
{
	struct mb_launch l = { .argv = argv, .fds = fds, .nfds = nfds };
	return mb_launch(NULL, &l, pid, pidfd);
}

/* Started from a thread that then ends: the launcher's parent-death
 * signal fires, and it must stay (the VMM process is still there). Runs
 * first, so that this thread is the one that starts it. */
static void *start_it(void *arg)
{
	*(int *)arg = mb_launcher_start(NULL);
	return NULL;
}

static void test_outlives_thread(void **state)
{
	pthread_t t;
	int rc = -1;
	assert_int_equal(pthread_create(&t, NULL, start_it, &rc), 0);
	pthread_join(t, NULL);
	assert_int_equal(rc, 0);
	usleep(100 * 1000);
	const char *argv[] = { "/bin/true", NULL };
	pid_t pid;
	int pfd;
	assert_int_equal(launch(argv, NULL, 0, &pid, &pfd), 0);
	assert_true(readable(pfd, 5000));
	close(pfd);
}

/* The entries of /proc/PID/fd, sorted by number, as "0 1 2 3 4". */
static void fd_list(pid_t pid, char *buf, size_t len)
{
	char cmd[96];
	snprintf(cmd, sizeof cmd, "ls /proc/%d/fd | sort -n | tr '\\n' ' '", (int)pid);
	FILE *f = popen(cmd, "r");
	buf[0] = 0;
	if (f) {
		if (!fgets(buf, (int)len, f))
			buf[0] = 0;
		pclose(f);
	}
}

static void link_of(pid_t pid, const char *what, char *buf, size_t len)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, what);
	ssize_t n = readlink(path, buf, len - 1);
	buf[n > 0 ? n : 0] = 0;
}

static void test_fds_and_env(void **state)
{
	int p[2], ev = eventfd(0, EFD_CLOEXEC);
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	/* Left open without O_CLOEXEC, as a careless embedder would: the
	 * child must not see it. */
	int leak = dup(ev);
	assert_true(leak > 4);
	const char *argv[] = { "/bin/sleep", "100", NULL };
	int fds[] = { p[1], ev };
	pid_t pid = 0;
	int pfd = -1;
	assert_int_equal(launch(argv, fds, 2, &pid, &pfd), 0);
	assert_true(pid > 0);
	assert_true(pfd >= 0);
	/* exec is done when mb_launch returns; sleep's start-up may hold a
	 * locale file open for a moment */
	char list[256], l[256], want[64];
	for (int i = 0; i < 50; i++) {
		fd_list(pid, list, sizeof list);
		if (strcmp(list, "0 1 2 3 4 ") == 0)
			break;
		usleep(10000);
	}
	assert_string_equal(list, "0 1 2 3 4 ");
	struct stat st;
	assert_int_equal(fstat(p[1], &st), 0);
	snprintf(want, sizeof want, "pipe:[%lu]", (unsigned long)st.st_ino);
	link_of(pid, "fd/3", l, sizeof l);
	assert_string_equal(l, want);
	link_of(pid, "fd/4", l, sizeof l);
	assert_string_equal(l, "anon_inode:[eventfd]");
	link_of(pid, "fd/0", l, sizeof l);
	assert_string_equal(l, "/dev/null");
	link_of(pid, "fd/1", l, sizeof l);
	assert_string_equal(l, "/dev/null");
	link_of(pid, "cwd", l, sizeof l);
	assert_string_equal(l, "/");
	char path[64], env[64];
	snprintf(path, sizeof path, "/proc/%d/environ", (int)pid);
	int e = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(e >= 0);
	assert_int_equal(read(e, env, sizeof env), 0);
	close(e);
	assert_int_equal(syscall(SYS_pidfd_send_signal, pfd, SIGKILL, NULL, 0), 0);
	assert_true(readable(pfd, 5000));
	close(pfd);

	/* No descriptor given: none above 2 (the launcher's own socket is
	 * its fd 3) */
	assert_int_equal(launch(argv, NULL, 0, &pid, &pfd), 0);
	for (int i = 0; i < 50; i++) {
		fd_list(pid, list, sizeof list);
		if (strcmp(list, "0 1 2 ") == 0)
			break;
		usleep(10000);
	}
	assert_string_equal(list, "0 1 2 ");
	assert_int_equal(syscall(SYS_pidfd_send_signal, pfd, SIGKILL, NULL, 0), 0);
	assert_true(readable(pfd, 5000));
	close(pfd);

	/* The same from inside: a shell sees no variable but its own, the
	 * arguments as given, fd 3 the pipe. */
	const char *sh[] = { "/bin/sh", "-c", "env >&3; echo args: \"$0\" \"$1\" >&3",
			     "zero", "one", NULL };
	assert_int_equal(launch(sh, fds, 1, &pid, &pfd), 0);
	close(p[1]);
	char out[4096];
	slurp(p[0], out, sizeof out);
	close(p[0]);
	for (char *s = out; *s && strncmp(s, "args:", 5); s = strchr(s, '\n') + 1)
		assert_true(strncmp(s, "PWD=", 4) == 0);
	assert_non_null(strstr(out, "args: zero one\n"));
	assert_true(readable(pfd, 5000));
	int ws = -1, rc;
	/* readable as soon as it is a zombie; the launcher reaps on asking */
	for (int i = 0; (rc = mb_launch_status(NULL, pid, &ws)) == -EAGAIN && i < 100; i++)
		usleep(10000);
	assert_int_equal(rc, 0);
	assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
	assert_int_equal(mb_launch_status(NULL, pid, &ws), -ESRCH);
	close(pfd);
	close(ev);
	close(leak);
}

static void test_status_and_kill(void **state)
{
	const char *argv[] = { "/bin/sleep", "100", NULL };
	pid_t pid;
	int pfd, st;
	assert_int_equal(launch(argv, NULL, 0, &pid, &pfd), 0);
	assert_false(readable(pfd, 50));
	assert_int_equal(mb_launch_status(NULL, pid, &st), -EAGAIN);
	assert_int_equal(syscall(SYS_pidfd_send_signal, pfd, SIGTERM, NULL, 0), 0);
	assert_true(readable(pfd, 5000));
	int rc;
	while ((rc = mb_launch_status(NULL, pid, &st)) == -EAGAIN)
		usleep(1000);
	assert_int_equal(rc, 0);
	assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);
	close(pfd);
}

static void test_refusals(void **state)
{
	pid_t pid;
	int pfd, bad = 1000;
	const char *missing[] = { "/nonexistent/program", NULL };
	assert_int_equal(launch(missing, NULL, 0, &pid, &pfd), -ENOENT);
	assert_non_null(strstr(mb_errmsg(), "/nonexistent/program"));
	const char *relative[] = { "sh", NULL };
	assert_int_equal(launch(relative, NULL, 0, &pid, &pfd), -EINVAL);
	const char *sh[] = { "/bin/true", NULL };
	assert_int_equal(launch(sh, &bad, 1, &pid, &pfd), -EBADF);
	assert_int_equal(launch(sh, &bad, MB_LAUNCH_MAX_FDS + 1, &pid, &pfd), -EINVAL);
	static char big[10000];
	memset(big, 'x', sizeof big - 1);
	const char *huge[] = { "/bin/true", big, NULL };
	assert_int_equal(launch(huge, NULL, 0, &pid, &pfd), -E2BIG);
	/* and it still works after all that */
	assert_int_equal(launch(sh, NULL, 0, &pid, &pfd), 0);
	assert_true(readable(pfd, 5000));
	close(pfd);
}

/* A sub-VMM launches sleep, tells us its pid and its launcher's, and is
 * SIGKILLed: both must go. */
static void test_dies_with_vmm(void **state)
{
	int p[2];
	assert_int_equal(pipe(p), 0);
	pid_t vmm = fork();
	assert_true(vmm >= 0);
	if (vmm == 0) {
		close(p[0]);
		const char *argv[] = { "/bin/sleep", "100", NULL };
		pid_t pid;
		int pfd;
		struct mb_launch l = { .argv = argv };
		/* a fresh process: its own launcher (the global one was
		 * the parent's) */
		if (mb_launch(NULL, &l, &pid, &pfd))
			_exit(1);
		if (write(p[1], &pid, sizeof pid) != sizeof pid)
			_exit(1);
		pause();
		_exit(0);
	}
	close(p[1]);
	pid_t child;
	assert_int_equal(read(p[0], &child, sizeof child), sizeof child);
	close(p[0]);
	char path[64], kids[256] = "";
	snprintf(path, sizeof path, "/proc/%d/task/%d/children", vmm, vmm);
	FILE *f = fopen(path, "re");
	assert_non_null(f);
	assert_non_null(fgets(kids, sizeof kids, f));
	fclose(f);
	pid_t launcher = (pid_t)strtol(kids, NULL, 10);
	assert_true(launcher > 0 && launcher != child);
	int cfd = (int)syscall(SYS_pidfd_open, child, 0);
	int lfd = (int)syscall(SYS_pidfd_open, launcher, 0);
	assert_true(cfd >= 0 && lfd >= 0);
	assert_false(readable(cfd, 50));
	kill(vmm, SIGKILL);
	waitpid(vmm, NULL, 0);
	assert_true(readable(lfd, 5000));
	assert_true(readable(cfd, 5000));
	close(cfd);
	close(lfd);
}

/* A machine's launcher goes with the machine, and its children with it. */
static void test_machine(void **state)
{
	struct mb_machine *m;
	if (mb_machine_create(NULL, &m)) {
		print_message("no machine: %s\n", mb_errmsg());
		skip();
	}
	assert_int_equal(mb_launcher_start(m), 0);
	const char *argv[] = { "/bin/sleep", "100", NULL };
	struct mb_launch l = { .argv = argv };
	pid_t pid;
	int pfd;
	assert_int_equal(mb_launch(m, &l, &pid, &pfd), 0);
	assert_false(readable(pfd, 50));
	mb_machine_destroy(m);
	assert_true(readable(pfd, 5000));
	close(pfd);
}

int main(void)
{
	/* From the build tree: the launcher is next to ./moonbox, which is
	 * not where this test binary is. */
	if (!getenv("MOONBOX_LIBEXEC")) {
		char dir[PATH_MAX];
		const char *bin = getenv("MB_BIN");
		if (realpath(bin ? bin : ".", dir))
			setenv("MOONBOX_LIBEXEC", dir, 1);
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_outlives_thread),
		cmocka_unit_test(test_fds_and_env),
		cmocka_unit_test(test_status_and_kill),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_dies_with_vmm),
		cmocka_unit_test(test_machine),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

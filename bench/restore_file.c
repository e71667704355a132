/*
 * Restoring a snapshot file in a fresh process (issue "Snapshots": the
 * time to the guest's next instruction, the file size against RAM, and
 * separate processes restoring one file side by side). The tiny counting
 * guest (snap_count.bin) runs to its first checkpoint in 256 MiB and is
 * saved to a file on /dev/shm; then, each in a new process (this program
 * again, exec'd): build the same machine, read the file, restore, run to
 * the guest's next checkpoint (8 more steps: ~200 port exits). Times are
 * CLOCK_MONOTONIC, which every process shares, from just before the exec.
 *
 *   build/bench/restore_file GUEST.bin  ->  key=value lines
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "moonbox.h"

#define RAM (256ull << 20)

static double now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* The machine the file was taken from: the same layout, every time. */
static struct mb_machine *build(const char *guest)
{
	struct mb_machine *m;
	struct mb_machine_config cfg = { .cpus = 1 };
	struct mb_device *d;
	if (mb_machine_create(&cfg, &m))
		return NULL;
	struct mb_uart_attach_config u = { .com = 1, .chr = mb_chr_null(m) };
	if (mb_machine_add_memory(m, 0, RAM, NULL, false, "ram") ||
	    mb_uart_attach(m, &u, &d) || mb_debug_exit_attach(m, NULL, &d) ||
	    mb_boot_flat(m, guest, 0x100000, 0x100000, MB_MODE_PROTECTED)) {
		mb_machine_destroy(m);
		return NULL;
	}
	return m;
}

/* In the new process: restore, then run `trials` times to the next
 * checkpoint, restoring before each but the first. Prints the times. */
static int child(const char *guest, const char *file, double t0, int trials)
{
	struct mb_machine *m = build(guest);
	struct mb_snapshot *s = NULL;
	struct mb_result r;
	if (!m || mb_snapshot_read(file, &s) || mb_snapshot_restore(m, s, NULL))
		goto fail;
	double t1 = now_ms();
	if (mb_machine_run(m, 10, &r) || r.reason != MB_STOP_EXIT)
		goto fail;
	double t2 = now_ms();
	for (int i = 1; i < trials; i++)
		if (mb_snapshot_restore(m, s, NULL) || mb_machine_run(m, 10, &r) ||
		    r.reason != MB_STOP_EXIT)
			goto fail;
	double t3 = now_ms();
	printf("restored_ms=%.3f checkpoint_ms=%.3f all_ms=%.3f\n", t1 - t0, t2 - t0,
	       t3 - t0);
	return 0;
fail:
	fprintf(stderr, "restore_file child: %s\n", mb_errmsg());
	return 1;
}

/* Start n children at once; each line they print is parsed into out[]. */
static int spawn(const char *self, const char *guest, const char *file, int n,
		 int trials, double (*out)[3])
{
	int fds[8];
	pid_t pids[8];
	for (int i = 0; i < n; i++) {
		int p[2];
		if (pipe(p))
			return -1;
		char t0[32], k[16];
		snprintf(t0, sizeof t0, "%.6f", now_ms());
		snprintf(k, sizeof k, "%d", trials);
		if ((pids[i] = fork()) == 0) {
			dup2(p[1], 1);
			close(p[0]);
			execl(self, self, "--child", guest, file, t0, k, (char *)NULL);
			_exit(127);
		}
		close(p[1]);
		fds[i] = p[0];
	}
	int bad = 0;
	for (int i = 0; i < n; i++) {
		char buf[256] = { 0 };
		ssize_t len = read(fds[i], buf, sizeof buf - 1);
		close(fds[i]);
		int st;
		waitpid(pids[i], &st, 0);
		if (len <= 0 || !WIFEXITED(st) || WEXITSTATUS(st) ||
		    sscanf(buf, "restored_ms=%lf checkpoint_ms=%lf all_ms=%lf", &out[i][0],
			   &out[i][1], &out[i][2]) != 3)
			bad = 1;
	}
	return bad ? -1 : 0;
}

int main(int argc, char **argv)
{
	if (argc == 6 && !strcmp(argv[1], "--child"))
		return child(argv[2], argv[3], atof(argv[4]), atoi(argv[5]));
	if (argc < 2) {
		fprintf(stderr, "usage: %s snap_count.bin\n", argv[0]);
		return 2;
	}
	char file[64];
	snprintf(file, sizeof file, "/dev/shm/moonbox-bench-%d.snap", (int)getpid());
	struct mb_machine *m = build(argv[1]);
	struct mb_snapshot *s = NULL;
	struct mb_result r;
	if (!m || mb_machine_run(m, 10, &r) || r.reason != MB_STOP_EXIT ||
	    mb_snapshot_take(m, &s) || mb_snapshot_write(s, file)) {
		fprintf(stderr, "restore_file: %s\n", mb_errmsg());
		return 1;
	}
	struct stat st;
	stat(file, &st);
	unsigned long long pages = (unsigned long long)mb_snapshot_ram_pages(s);
	mb_snapshot_free(s);
	mb_machine_destroy(m);

	enum { N = 11, TRIALS = 200 };
	double one[N], ck[N], res[1][3], two[2][3];
	for (int i = 0; i < N; i++) {
		if (spawn(argv[0], argv[1], file, 1, 1, res))
			goto fail;
		one[i] = res[0][0], ck[i] = res[0][1];
	}
	qsort(one, N, sizeof *one, cmp);
	qsort(ck, N, sizeof *ck, cmp);
	/* Trials a second: one process, then two side by side. */
	if (spawn(argv[0], argv[1], file, 1, TRIALS, res) ||
	    spawn(argv[0], argv[1], file, 2, TRIALS, two))
		goto fail;
	double rate1 = TRIALS / (res[0][2] / 1e3);
	double slow = two[0][2] > two[1][2] ? two[0][2] : two[1][2];
	double rate2 = 2 * TRIALS / (slow / 1e3);
	printf("restore_file file_kib=%lld ram_mib=%llu ram_pages_saved=%llu "
	       "exec_to_restored_ms=%.2f exec_to_checkpoint_ms=%.2f "
	       "trials_per_s_1proc=%.0f trials_per_s_2proc=%.0f\n",
	       (long long)st.st_size / 1024, RAM >> 20, pages, one[N / 2], ck[N / 2],
	       rate1, rate2);
	unlink(file);
	return 0;
fail:
	fprintf(stderr, "restore_file: a child failed\n");
	unlink(file);
	return 1;
}

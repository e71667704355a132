/*
 * In-process restore time of the tiny counting guest (snap_count.bin):
 * run to its first checkpoint, snapshot, then N times { run to the next
 * checkpoint, restore } timing each restore (wall clock). The same with
 * two RAM sizes: with dirty logging the cost follows the pages written,
 * not RAM size, so the ratio should be near 1.
 *
 *   build/bench/restore GUEST.bin  ->  one line per RAM size and a ratio
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "moonbox.h"

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

/* Median restore time in ms, or < 0 on failure. */
static double bench(const char *guest, uint64_t ram, int n, uint64_t *pages)
{
	struct mb_machine *m;
	struct mb_machine_config cfg = { .cpus = 1 };
	struct mb_result r;
	struct mb_snapshot *s = NULL;
	struct mb_device *d;
	double *t = calloc(n, sizeof *t), med = -1;
	if (mb_machine_create(&cfg, &m))
		goto out;
	struct mb_uart_attach_config u = { .com = 1, .chr = mb_chr_null(m) };
	if (mb_machine_add_memory(m, 0, ram, NULL, false, "ram") ||
	    mb_uart_attach(m, &u, &d) || mb_debug_exit_attach(m, NULL, &d) ||
	    mb_boot_flat(m, guest, 0x100000, 0x100000, MB_MODE_PROTECTED) ||
	    mb_machine_run(m, 10, &r) || r.reason != MB_STOP_EXIT ||
	    mb_snapshot_take(m, &s))
		goto out;
	for (int i = 0; i < n; i++) {
		struct mb_restore_stats st;
		if (mb_machine_run(m, 10, &r) || r.reason != MB_STOP_EXIT)
			goto out;
		double t0 = now_ms();
		if (mb_snapshot_restore(m, s, &st))
			goto out;
		t[i] = now_ms() - t0;
		*pages = st.pages_copied;
	}
	qsort(t, n, sizeof *t, cmp);
	med = t[n / 2];
out:
	if (med < 0)
		fprintf(stderr, "restore bench: %s\n", mb_errmsg());
	mb_snapshot_free(s);
	mb_machine_destroy(m);
	free(t);
	return med;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s snap_count.bin\n", argv[0]);
		return 2;
	}
	uint64_t p1 = 0, p2 = 0;
	double small = bench(argv[1], 256ull << 20, 200, &p1);
	double big = bench(argv[1], 1ull << 30, 200, &p2);
	if (small < 0 || big < 0)
		return 1;
	printf("restore ram_mib=256 median_ms=%.3f pages=%llu\n", small,
	       (unsigned long long)p1);
	printf("restore ram_mib=1024 median_ms=%.3f pages=%llu\n", big,
	       (unsigned long long)p2);
	printf("restore ratio_1g_256m=%.2f\n", big / small);
	return 0;
}

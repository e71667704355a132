/* Small helpers shared by the benchmark programs (header only: each
 * bench/X.c is built on its own). */
#ifndef MB_BENCH_H
#define MB_BENCH_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline uint64_t bench_ns(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Wall-clock microseconds when the process was started: BENCH_T0_US
 * (set by bench/run.sh from $EPOCHREALTIME just before exec), else now. */
static inline uint64_t bench_t0_us(void)
{
	const char *s = getenv("BENCH_T0_US");
	return s ? strtoull(s, NULL, 10) : bench_ns(CLOCK_REALTIME) / 1000;
}

/* Peak resident set of this process in KiB (VmHWM), or 0. */
static inline long bench_hwm_kb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[128];
	long kb = 0;
	while (f && fgets(line, sizeof line, f))
		if (!strncmp(line, "VmHWM:", 6))
			kb = strtol(line + 6, NULL, 10);
	if (f)
		fclose(f);
	return kb;
}
#endif

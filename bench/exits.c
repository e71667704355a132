/* moonbox's side of the exit benchmark, through the C API.
 * Usage: exits GUEST.bin [MEMSIZE_MiB]
 * The same machine as bench/rawkvm.c: RAM from 0, the flat binary at
 * 0x100000 in protected mode, a C sink device on port 0x80 and on MMIO
 * 0xd0000000, debug_exit on port 0xf4.
 * Prints: moonbox exits=N seconds=S exits_per_s=X first_exit_us=Y hwm_kb=Z */
#include "moonbox.h"
#include "moonbox/debug.h"
#include "moonbox/debug_exit.h"
#include "bench.h"

static uint64_t first_us; /* wall clock at the guest's first access */
static uint64_t hits;

/* The sink: counts, stamps the first access, reads float high. */
static void sink_read(void *dev, uint64_t off, void *data, unsigned size)
{
	memset(data, 0xff, size);
}
static void sink_write(void *dev, uint64_t off, const void *data, unsigned size)
{
	if (!hits++)
		first_us = bench_ns(CLOCK_REALTIME) / 1000;
}
static const struct mb_io_ops sink = { sink_read, sink_write };

static enum mb_tap_verdict tap_pass(void *ctx, struct mb_tap_event *ev)
{
	return MB_TAP_PASS;
}

static int fail(const char *what)
{
	fprintf(stderr, "exits: %s: %s\n", what, mb_errmsg());
	return 1;
}

int main(int argc, char **argv)
{
	uint64_t t0 = bench_t0_us();
	if (argc < 2) {
		fprintf(stderr, "usage: exits GUEST.bin [MEMSIZE_MiB [none|other|hit|bp|plan]]\n"
			"  the third: no bus tap, a C tap on another port, or on\n"
			"  the sink's port 0x80 (the tap engine's cost); bp: no\n"
			"  tap, a sw breakpoint on a page never run; plan: no tap,\n"
			"  a fault plan with a rule on a line the guest never raises\n");
		return 2;
	}
	uint64_t memsize = (argc > 2 ? strtoull(argv[2], NULL, 0) : 2) << 20;
	struct mb_machine_config cfg = { .cpus = 1 };
	struct mb_machine *m;
	struct mb_device *dx;
	if (mb_machine_create(&cfg, &m))
		return fail("machine");
	if (mb_machine_add_memory(m, 0, memsize, NULL, false, "ram"))
		return fail("memory");
	if (mb_bus_register(mb_machine_pio(m), 0x80, 1, &sink, NULL, "sink") ||
	    mb_bus_register(mb_machine_mmio(m), 0xd0000000, 0x1000, &sink, NULL,
			    "sink"))
		return fail("sink");
	if (mb_debug_exit_attach(m, &(struct mb_debug_exit_attach_config){ .size = 1 }, &dx))
		return fail("debug_exit");
	const char *tap = argc > 3 ? argv[3] : "none";
	struct mb_bp *bp;
	/* the debugger on, a page write-protected for the breakpoint (a hw
	 * breakpoint would measure KVM's debug-register switching instead) */
	if (!strcmp(tap, "bp") &&
	    mb_debug_break(m, &(struct mb_bp_config){ .addr = 0x80000, .phys = true,
						      .kind = MB_BP_SW }, &bp))
		return fail("breakpoint");
	if (!strcmp(tap, "bp"))
		tap = "none";
	/* A plan present but no rule on the sink: the exit path has no fault
	 * site of its own, a device asks only its own (issue 9's "exit path with
	 * a plan, no rule on the device"). The plan goes with the machine. */
	if (!strcmp(tap, "plan")) {
		struct mb_fault_plan *fp;
		struct mb_fault_rule fr = { .action = MB_FAULT_IRQ_DROP, .first = 15,
					    .last = 15 };
		strcpy(fr.dev, "irq");
		if (mb_fault_plan_new(m, &(struct mb_fault_plan_config){ 1, NULL, NULL }, &fp) ||
		    mb_fault_plan_add(fp, &fr) < 0)
			return fail("plan");
		tap = "none";
	}
	if (strcmp(tap, "none") && mb_tap_add(m, MB_SPACE_PIO,
					      strcmp(tap, "hit") ? 0x60 : 0x80, 1,
					      MB_TAP_RW, tap_pass, NULL, NULL, NULL))
		return fail("tap");
	if (mb_boot_flat(m, argv[1], 0x100000, 0x100000, MB_MODE_PROTECTED))
		return fail("boot");
	struct mb_result r;
	uint64_t start = bench_ns(CLOCK_MONOTONIC);
	if (mb_machine_run(m, 60, &r))
		return fail("run");
	double secs = (double)(bench_ns(CLOCK_MONOTONIC) - start) / 1e9;
	if (r.reason != MB_STOP_EXIT) {
		fprintf(stderr, "exits: guest stopped with %s: %s\n",
			mb_stop_name(r.reason), r.message);
		return 1;
	}
	struct mb_vcpu_stats st;
	mb_vcpu_stats(m, 0, &st);
	printf("moonbox exits=%llu seconds=%.4f exits_per_s=%.0f first_exit_us=%llu "
	       "hwm_kb=%ld\n", (unsigned long long)st.exits, secs, st.exits / secs,
	       (unsigned long long)(first_us - t0), bench_hwm_kb());
	mb_machine_destroy(m);
	return 0;
}

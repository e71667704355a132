/*
 * Bus taps: the one I/O-hook engine. A tap sees every guest port or MMIO
 * access to a range as it crosses the bus, and may change the value or
 * drop a write. m:tap, m:trace (Lua) and C embedders use it; the fault
 * engine's device hooks and the debugger's wait_for keep their own sites.
 *
 * Cost: with no tap set, an exit pays one load and one predictable branch
 * (bench/tap_cost.lua measures it). With taps, the vCPU scans the few
 * taps in order; each callback runs on the vCPU thread that made the
 * access, before a write reaches the device and after a read returned.
 */
#ifndef MOONBOX_TAP_H
#define MOONBOX_TAP_H

#include <stdint.h>

#include "moonbox/device.h"

struct mb_machine;

enum { MB_TAP_READ = 1, MB_TAP_WRITE = 2, MB_TAP_RW = 3 };

struct mb_tap_event {
	enum mb_space space;
	uint64_t addr;   /* port or guest-physical address */
	unsigned size;   /* 1, 2, 4 or 8 */
	bool write;
	uint64_t value;  /* what was read / is about to be written */
	unsigned cpu;    /* the vCPU that made the access */
	uint64_t count;  /* accesses this tap saw before this one */
};

/* What a tap function returns. */
enum mb_tap_verdict {
	MB_TAP_PASS, /* go on, with ev->value as it now is */
	MB_TAP_DROP, /* a write: the device never sees it (reads: PASS) */
};

typedef enum mb_tap_verdict (*mb_tap_fn)(void *ctx, struct mb_tap_event *ev);

/* Tap [base, base+len) of space for accesses of kind access (MB_TAP_*).
 * ctx lives as long as the machine: free_ctx(ctx) runs when the machine
 * is destroyed (a vCPU may still be in fn just after mb_tap_remove).
 * *id: for mb_tap_remove. Taps are called in the order they were added.
 * 0 or -errno (EINVAL for a bad range or access, ENOSPC past MB_TAP_MAX). */
#define MB_TAP_MAX 64
int mb_tap_add(struct mb_machine *m, enum mb_space space, uint64_t base,
	       uint64_t len, unsigned access, mb_tap_fn fn, void *ctx,
	       void (*free_ctx)(void *ctx), int *id);
int mb_tap_remove(struct mb_machine *m, int id);
/* Accesses tap id has seen (-ENOENT once removed). */
int64_t mb_tap_count(struct mb_machine *m, int id);

#endif

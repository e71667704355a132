/*
 * Intel 8254 programmable interval timer at 1.193182 MHz: three counters at
 * ports 0x40-0x43, and the PC's port 0x61 (channel 2 gate, speaker data,
 * OUT2 read-back). Channel 0's OUT drives an interrupt line.
 */
#ifndef MOONBOX_PIT8254_H
#define MOONBOX_PIT8254_H

#include "moonbox.h"

#define MB_PIT_HZ 1193182u

struct mb_pit;

struct mb_pit_config {
	const struct mb_clock *clock;
	struct mb_irq irq; /* channel 0's OUT (ISA IRQ 0) */
};

/* Times are in PIT ticks (1/MB_PIT_HZ s) relative to now, so a state
 * loads into a machine whose clock stands elsewhere. */

/* A counting segment: count n entered the counting element at `load_in`
 * ticks from now (negative: that many ticks ago) and follows its mode. */
#define MB_PIT_SEG_STATE(X, S) \
	X(S, bool, valid) \
	X(S, bool, frozen)  /* gate low: CE holds `held` */ \
	X(S, bool, done)    /* modes 0, 4: terminal count already passed */ \
	X(S, u32, n) X(S, u32, held) \
	X(S, u32, off)      /* mode 3: phase offset */ \
	X(S, i64, load_in)
MB_STATE_STRUCT(mb_pit_seg_state, MB_PIT_SEG_STATE);

#define MB_PIT_CHANNEL_STATE(X, S) \
	X(S, u8, mode)          /* 0-5 */ \
	X(S, u8, raw_mode)      /* M2-M0 as written (6, 7: modes 2, 3) */ \
	X(S, u8, rw)            /* 1 LSB, 2 MSB, 3 LSB then MSB */ \
	X(S, bool, bcd) X(S, bool, gate) \
	X(S, u32, reload)       /* initial count N (0 written = 65536/10000) */ \
	X(S, sub, cur, mb_pit_seg_state) \
	X(S, sub, prev, mb_pit_seg_state) /* until cur loads */ \
	X(S, u32, idle_count)   /* CE before any segment loads */ \
	X(S, bool, write_msb) X(S, u8, write_lsb) /* write flip-flop */ \
	X(S, bool, read_msb)    /* read flip-flop */ \
	X(S, bool, count_latched) X(S, bool, latch_msb) X(S, u16, latch) \
	X(S, bool, status_latched) X(S, u8, status) \
	X(S, i64, null_ticks)   /* until the written count loads; -1: a gate \
				   trigger; 0: loaded */ \
	X(S, ro_bool, out) X(S, ro_bool, null_count) \
	X(S, ro_u16, count)     /* the counting element now, as read */
MB_STATE_STRUCT(mb_pit_channel_state, MB_PIT_CHANNEL_STATE);

#define MB_PIT_STATE(X, S) \
	X(S, arr, channels, 3, mb_pit_channel_state) \
	X(S, u8, port61_bits)  /* port 0x61 bits 0-3 as written */ \
	X(S, bool, irq_level)  /* what channel 0 drives on its line */ \
	X(S, u64, armed_ago)   /* ticks since the next edge was computed */ \
	X(S, u32, backlog)     /* re-injection: ticks owed to the guest */ \
	X(S, bool, inflight)   /* a re-injected tick waits for its ack */ \
	X(S, u32, stale)       /* periods it has waited */ \
	X(S, ro_u8, port61)    /* as a read would return it */ \
	X(S, ro_u64, timer_ns) /* the next edge of OUT0: ns from now, 0 none */ \
	X(S, ro_u64, irq_edges) /* rising edges delivered on the line */
MB_STATE_STRUCT(mb_pit_state, MB_PIT_STATE);
#define MB_PIT_STATE_VERSION 1

/* ---- in a machine ------------------------------------------------------ */

struct mb_pit_attach_config {
	const char *name;  /* NULL: "pit" */
	unsigned irq;      /* channel 0's line (PC: 0) */
	/* Re-inject ticks the guest could not take yet, with moonbox's PIC
	 * (mb_machine_irq_on_ack); a kernel irqchip tells no acks and the
	 * PIT runs without. */
	bool no_reinject;
};

/* Ports 0x40-0x43 and 0x61, channel 0 on cfg->irq. With the kernel PIT
 * (KVM_CREATE_PIT2) the device is only listed (kind "pit8254", no ranges,
 * no state). cfg may be NULL. */
int mb_pit_attach(struct mb_machine *m, const struct mb_pit_attach_config *cfg,
		  struct mb_device **out);

/* ---- the model on its own (unit tests, other boards) ------------------- */

/* NULL when out of memory or the clock has no timer for it. */
struct mb_pit *mb_pit_new(const struct mb_pit_config *cfg);
void mb_pit_free(struct mb_pit *pit);
/* Save (any time) and load (guest stopped) the state. Load checks every
 * field first (-EINVAL, message naming it: "channels[1].mode: ...") and
 * changes nothing on error; it takes the counter, drives the line as saved
 * and re-arms the timer (an edge already due fires at once). */
void mb_pit_save(struct mb_pit *pit, struct mb_pit_state *st);
int mb_pit_load(struct mb_pit *pit, const struct mb_pit_state *st);
#define mb_pit_state(p, st) mb_pit_save(p, st)
/* Drive a channel's GATE input (channels 0 and 1 are tied high on a PC;
 * channel 2 follows port 0x61 bit 0). */
void mb_pit_set_gate(struct mb_pit *pit, unsigned ch, bool level);
/* Re-inject ticks the guest has not taken yet: each pulse after the last
 * one was acknowledged (mb_pit_irq_acked, from the interrupt controller). */
void mb_pit_set_reinject(struct mb_pit *pit, bool on);
void mb_pit_irq_acked(void *pit);

extern const struct mb_io_ops mb_pit_ops;        /* 0x40-0x43 */
extern const struct mb_io_ops mb_pit_port61_ops; /* 0x61 */

/* Fault injection (docs/faults.md, F.pit.*): ticks channel 0 is about to
 * deliver ask s (a reference is taken). mb_pit_of_device: the model of a
 * PIT moonbox runs (NULL for KVM's). */
struct mb_fault_site;
int mb_pit_set_fault(struct mb_pit *pit, struct mb_fault_site *s);
uint64_t mb_pit_lost_ticks(struct mb_pit *pit); /* pit.drop's */
struct mb_pit *mb_pit_of_device(struct mb_device *d);
/* m:on("pit"): fn(ctx, pit, n, ask) for every tick on channel 0's line
 * (n: the tick's number among those delivered), the PIT's lock held: record
 * it and return. ask: a periodic tick not yet delivered; fn returns true
 * to take it (an m:on function is asked) and mb_pit_answer delivers it or
 * not later. Otherwise (a level in modes 0/1, a late tick) it is told
 * after the fact and the return is ignored. cancel(ctx, pit) at free: no
 * answer may come after it. Set once (-EBUSY). */
typedef bool mb_pit_observer(void *ctx, struct mb_pit *pit, uint64_t n, bool ask);
struct mb_fault_verdict;
typedef void mb_fault_ask_cancel(void *ctx, const void *dev);
int mb_pit_set_observer(struct mb_pit *pit, mb_pit_observer *fn,
			mb_fault_ask_cancel *cancel, void *ctx);
/* The answer to a tick the observer took (no lock held): v NULL or no
 * action: delivered now; drop: lost, as pit.drop; delay_ms: late, as
 * pit.late. */
void mb_pit_answer(struct mb_pit *pit, const struct mb_fault_verdict *v);

#endif

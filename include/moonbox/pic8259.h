/*
 * The PC's cascaded pair of Intel 8259A programmable interrupt controllers
 * (master at 0x20, slave at 0xa0 on the master's IR2) plus the PIIX-style
 * edge/level control registers (ELCR) at 0x4d0/0x4d1, as one device.
 */
#ifndef MOONBOX_PIC8259_H
#define MOONBOX_PIC8259_H

#include "moonbox.h"

struct mb_pic;

struct mb_pic_config {
	/* Called (without the PIC's lock held, from whichever thread changed
	 * it) whenever the INT output may have changed: re-check with
	 * mb_pic_pending() and kick the vCPU. May be NULL. */
	void (*notify)(void *opaque);
	void *opaque;
};

/* One chip's registers and mode bits: everything it needs to go on. */
#define MB_PIC_CHIP_STATE(X, S) \
	X(S, u8, irr) X(S, u8, isr) X(S, u8, imr) \
	X(S, u8, elcr)        /* 1 = level-triggered line */ \
	X(S, u8, input)       /* current level of each IR pin */ \
	X(S, u8, vector_base) /* ICW2 & 0xf8 */ \
	X(S, u8, icw3) \
	X(S, u8, init_step)   /* 0 ready, 2-4: expecting ICW2..ICW4 */ \
	X(S, u8, lowest)      /* IR with the lowest priority (7 after ICW1) */ \
	X(S, bool, ltim) X(S, bool, single) X(S, bool, icw4_needed) \
	X(S, bool, aeoi) X(S, bool, sfnm) X(S, bool, rotate_aeoi) \
	X(S, bool, special_mask) X(S, bool, read_isr) X(S, bool, poll)
MB_STATE_STRUCT(mb_pic_chip_state, MB_PIC_CHIP_STATE);

/* The pair: both chips, the cascade as the master last saw it, then the
 * INT pin (derived) and counters. The ack notifiers are wiring, not
 * state: they stay with the PIC a state is loaded into. */
#define MB_PIC_STATE(X, S) \
	X(S, sub, master, mb_pic_chip_state) X(S, sub, slave, mb_pic_chip_state) \
	X(S, bool, slave_out)  /* the slave's INT as master IR2 last saw it */ \
	X(S, ro_bool, int_output) /* the master's INT pin */ \
	X(S, ro_u64, acks)        /* INTA cycles */ \
	X(S, ro_u64, spurious)    /* of which answered with IR7/IR15 */
MB_STATE_STRUCT(mb_pic_state, MB_PIC_STATE);
#define MB_PIC_STATE_VERSION 1

/* ---- in a machine ------------------------------------------------------ */

struct mb_pic_attach_config {
	const char *name; /* NULL: "pic" */
};

/* The PC's pair: master 0x20-0x21, slave 0xa0-0xa1, ELCR 0x4d0-0x4d1, and
 * the machine's interrupt controller from now on (mb_machine_set_intc).
 * With the kernel irqchip KVM's own pair is already there: the device is
 * only listed (kind "pic8259", no ranges, no state). cfg may be NULL. */
int mb_pic_attach(struct mb_machine *m, const struct mb_pic_attach_config *cfg,
		  struct mb_device **out);

/* ---- the model on its own (unit tests, other boards) ------------------- */

/* A pair in its power-on state (cfg may be NULL: no notify); NULL when
 * out of memory. */
struct mb_pic *mb_pic_new(const struct mb_pic_config *cfg);
void mb_pic_free(struct mb_pic *pic);

/* Drive input line 0-15 (8-15 are the slave's IR0-7). Line 2 is the cascade
 * and is ignored. Edge lines latch a request on a rising edge; the latch
 * survives the line dropping (so mb_irq_pulse() works) until INTA. Level
 * lines request while high. */
void mb_pic_set_irq(struct mb_pic *pic, unsigned line, int level);
/* The INT output: an unmasked request of high enough priority waits. */
bool mb_pic_pending(struct mb_pic *pic);
/* The INTA cycle: the vector to inject. Sets ISR (unless AEOI), clears an
 * edge request, walks the cascade; answers IR7 of the chip concerned
 * (spurious, no ISR bit) when the request vanished before INTA. */
int mb_pic_ack(struct mb_pic *pic);
/* Save (any time) and load (guest stopped) the state. Load checks every
 * field first (-EINVAL, message naming it: "master.init_step: ...") and
 * changes nothing on error; it takes the counters, recomputes INT and
 * notifies when it changed. */
void mb_pic_save(struct mb_pic *pic, struct mb_pic_state *st);
int mb_pic_load(struct mb_pic *pic, const struct mb_pic_state *st);
#define mb_pic_state(p, st) mb_pic_save(p, st)
/* Call fn(opaque) after each INTA that takes line's request (not for
 * spurious answers), outside the PIC's lock. NULL removes it. */
void mb_pic_on_ack(struct mb_pic *pic, unsigned line, void (*fn)(void *),
		   void *opaque);

/* Register ranges: master 0x20-0x21, slave 0xa0-0xa1, ELCR 0x4d0-0x4d1. */
extern const struct mb_io_ops mb_pic_master_ops;
extern const struct mb_io_ops mb_pic_slave_ops;
extern const struct mb_io_ops mb_pic_elcr_ops;

/* The PIC as the machine's interrupt controller (mb_machine_set_intc) and
 * its lines (struct mb_irq { .set = mb_pic_irq_set, .ctx = pic, .line }). */
extern const struct mb_intc_ops mb_pic_intc_ops;
void mb_pic_irq_set(void *pic, unsigned line, int level);

#endif

/*
 * The PC's cascaded pair of Intel 8259A programmable interrupt controllers
 * (master at 0x20, slave at 0xa0 on the master's IR2) plus the PIIX-style
 * edge/level control registers (ELCR) at 0x4d0/0x4d1, as one device.
 */
#ifndef DEVICES_PIC8259_H
#define DEVICES_PIC8259_H

#include "moonbox.h"

struct mb_pic;

struct mb_pic_config {
	/* Called (without the PIC's lock held, from whichever thread changed
	 * it) whenever the INT output may have changed: re-check with
	 * mb_pic_pending() and kick the vCPU. May be NULL. */
	void (*notify)(void *opaque);
	void *opaque;
};

/* One chip's registers and mode bits. */
struct mb_pic_chip_state {
	uint8_t irr, isr, imr;
	uint8_t elcr;        /* 1 = level-triggered line */
	uint8_t input;       /* current level of each IR pin */
	uint8_t vector_base; /* ICW2 & 0xf8 */
	uint8_t icw3;
	uint8_t init_step;   /* 0 ready, 2-4: expecting ICW2..ICW4 */
	uint8_t lowest;      /* IR with the lowest priority (7 after ICW1) */
	uint8_t ltim, single, icw4_needed, aeoi, sfnm;
	uint8_t rotate_aeoi, special_mask, read_isr, poll;
};

struct mb_pic_state {
	struct mb_pic_chip_state master, slave;
	uint8_t int_output;    /* the master's INT pin */
	uint64_t acks;         /* INTA cycles */
	uint64_t spurious;     /* of which answered with IR7/IR15 */
};

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
void mb_pic_state(struct mb_pic *pic, struct mb_pic_state *st);
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

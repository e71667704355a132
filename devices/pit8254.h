/*
 * Intel 8254 programmable interval timer at 1.193182 MHz: three counters at
 * ports 0x40-0x43, and the PC's port 0x61 (channel 2 gate, speaker data,
 * OUT2 read-back). Channel 0's OUT drives an interrupt line.
 */
#ifndef DEVICES_PIT8254_H
#define DEVICES_PIT8254_H

#include "moonbox.h"

#define MB_PIT_HZ 1193182u

struct mb_pit;

struct mb_pit_config {
	const struct mb_clock *clock;
	struct mb_irq irq; /* channel 0's OUT (ISA IRQ 0) */
};

struct mb_pit_channel_state {
	uint8_t mode;           /* 0-5 */
	uint8_t rw;             /* 1 LSB, 2 MSB, 3 LSB then MSB */
	uint8_t bcd, gate, out;
	uint8_t null_count;     /* count written but not yet loaded */
	uint16_t count;         /* the counting element now, as read */
	uint32_t reload;        /* initial count N (0 written = 65536/10000) */
	uint8_t count_latched, status_latched;
	uint8_t read_msb, write_msb; /* LSB/MSB flip-flops: next is MSB */
	uint16_t latch;
	uint8_t status;
};

struct mb_pit_state {
	struct mb_pit_channel_state ch[3];
	uint8_t port61;    /* as a read would return it */
	uint8_t irq_level; /* what channel 0 drives on its line */
	uint64_t irq_edges; /* rising edges delivered on the line */
};

struct mb_pit *mb_pit_new(const struct mb_pit_config *cfg);
void mb_pit_free(struct mb_pit *pit);
void mb_pit_state(struct mb_pit *pit, struct mb_pit_state *st);
/* Drive a channel's GATE input (channels 0 and 1 are tied high on a PC;
 * channel 2 follows port 0x61 bit 0). */
void mb_pit_set_gate(struct mb_pit *pit, unsigned ch, bool level);
/* Re-inject ticks the guest has not taken yet: each pulse after the last
 * one was acknowledged (mb_pit_irq_acked, from the interrupt controller). */
void mb_pit_set_reinject(struct mb_pit *pit, bool on);
void mb_pit_irq_acked(void *pit);

extern const struct mb_io_ops mb_pit_ops;        /* 0x40-0x43 */
extern const struct mb_io_ops mb_pit_port61_ops; /* 0x61 */

#endif

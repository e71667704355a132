/*
 * A sink device: reads return a fixed byte pattern, writes are dropped but
 * the last one is remembered (port 0x80 carries POST codes). Usable at any
 * PIO or MMIO range as a "null" device.
 */
#ifndef DEVICES_PORT80_H
#define DEVICES_PORT80_H

#include "moonbox.h"

struct mb_null;

struct mb_null_state {
	uint64_t last_write; /* value of the last write (POST code) */
	uint64_t reads, writes;
	uint8_t fill;        /* byte every read returns */
};

/* fill: 0xff (an empty ISA bus) or 0x00, or anything else. */
struct mb_null *mb_null_new(uint8_t fill);
void mb_null_free(struct mb_null *dev);
void mb_null_state(struct mb_null *dev, struct mb_null_state *st);

extern const struct mb_io_ops mb_null_ops;

#endif

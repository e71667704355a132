/*
 * A sink device: reads return a fixed byte pattern, writes are dropped but
 * the last one is remembered (port 0x80 carries POST codes). Usable at any
 * PIO or MMIO range as a "null" device.
 */
#ifndef MOONBOX_PORT80_H
#define MOONBOX_PORT80_H

#include "moonbox.h"

struct mb_null;

#define MB_NULL_STATE(X, S) \
	X(S, u64, last_write) /* value of the last write (POST code) */ \
	X(S, u8, fill)        /* byte every read returns */ \
	X(S, ro_u64, reads) X(S, ro_u64, writes)
MB_STATE_STRUCT(mb_null_state, MB_NULL_STATE);
#define MB_NULL_STATE_VERSION 1

/* ---- in a machine ------------------------------------------------------ */

struct mb_null_attach_config {
	const char *name;   /* NULL: "port80" */
	enum mb_space space; /* with size 0: PIO port 0x80, one byte */
	uint64_t base, size;
	bool fill_set;      /* false: reads return 0xff (an empty ISA bus) */
	uint8_t fill;
};

/* The sink on its range. cfg may be NULL (port 0x80). */
int mb_null_attach(struct mb_machine *m, const struct mb_null_attach_config *cfg,
		   struct mb_device **out);
#define mb_port80_attach mb_null_attach

/* ---- the model on its own ---------------------------------------------- */

/* fill: 0xff (an empty ISA bus) or 0x00, or anything else; NULL when
 * out of memory. */
struct mb_null *mb_null_new(uint8_t fill);
void mb_null_free(struct mb_null *dev);
/* Save and load (counters are taken; load cannot fail). */
void mb_null_save(struct mb_null *dev, struct mb_null_state *st);
int mb_null_load(struct mb_null *dev, const struct mb_null_state *st);
#define mb_null_state(n, st) mb_null_save(n, st)

extern const struct mb_io_ops mb_null_ops;

#endif

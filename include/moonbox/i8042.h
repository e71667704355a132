/*
 * Just enough of the 8042 keyboard controller for a PC guest: no keyboard
 * or mouse, but the controller answers its own commands (so Linux's probe
 * finishes quickly) and pulsing the reset line (command 0xfe, or output
 * port bit 0 cleared) calls the reset callback.
 */
#ifndef MOONBOX_I8042_H
#define MOONBOX_I8042_H

#include "moonbox.h"

struct mb_i8042;

struct mb_i8042_config {
	void (*reset)(void *opaque); /* the CPU reset line was pulsed */
	void *opaque;
};

#define MB_I8042_STATE(X, S) \
	X(S, u8, flags)    /* status bits kept: 0x04 system, 0x08 command */ \
	X(S, u8, ctr)      /* controller configuration ("command byte") */ \
	X(S, u8, outport) \
	X(S, bool, obf)    /* a byte waits in the output buffer */ \
	X(S, u8, out)      /* that byte (read again when none waits) */ \
	X(S, u8, pending)  /* command waiting for its data byte (0x60, 0xd1), or 0 */ \
	X(S, ro_u8, status) /* as port 0x64 reads */ \
	X(S, ro_u64, resets)
MB_STATE_STRUCT(mb_i8042_state, MB_I8042_STATE);
#define MB_I8042_STATE_VERSION 1

/* ---- in a machine ------------------------------------------------------ */

struct mb_i8042_attach_config {
	const char *name; /* NULL: "i8042" */
};

/* Ports 0x60 and 0x64; a pulse of the reset line stops the machine with
 * MB_STOP_RESET. cfg may be NULL. */
int mb_i8042_attach(struct mb_machine *m,
		    const struct mb_i8042_attach_config *cfg,
		    struct mb_device **out);

/* ---- the model on its own ---------------------------------------------- */

/* cfg may be NULL (no reset callback); NULL when out of memory. */
struct mb_i8042 *mb_i8042_new(const struct mb_i8042_config *cfg);
void mb_i8042_free(struct mb_i8042 *kbc);
/* Save (any time) and load; load checks every field first (-EINVAL, the
 * field named) and changes nothing on error. */
void mb_i8042_save(struct mb_i8042 *kbc, struct mb_i8042_state *st);
int mb_i8042_load(struct mb_i8042 *kbc, const struct mb_i8042_state *st);
#define mb_i8042_state(k, st) mb_i8042_save(k, st)

extern const struct mb_io_ops mb_i8042_data_ops; /* port 0x60 */
extern const struct mb_io_ops mb_i8042_cmd_ops;  /* port 0x64 */

#endif

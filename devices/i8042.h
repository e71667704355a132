/*
 * Just enough of the 8042 keyboard controller for a PC guest: no keyboard
 * or mouse, but the controller answers its own commands (so Linux's probe
 * finishes quickly) and pulsing the reset line (command 0xfe, or output
 * port bit 0 cleared) calls the reset callback.
 */
#ifndef DEVICES_I8042_H
#define DEVICES_I8042_H

#include "moonbox.h"

struct mb_i8042;

struct mb_i8042_config {
	void (*reset)(void *opaque); /* the CPU reset line was pulsed */
	void *opaque;
};

struct mb_i8042_state {
	uint8_t status;  /* as port 0x64 reads */
	uint8_t ctr;     /* controller configuration ("command byte") */
	uint8_t outport;
	uint8_t obf;     /* a byte waits in the output buffer */
	uint8_t out;     /* that byte */
	uint8_t pending; /* command waiting for its data byte, or 0 */
	uint64_t resets;
};

struct mb_i8042 *mb_i8042_new(const struct mb_i8042_config *cfg);
void mb_i8042_free(struct mb_i8042 *kbc);
void mb_i8042_state(struct mb_i8042 *kbc, struct mb_i8042_state *st);

extern const struct mb_io_ops mb_i8042_data_ops; /* port 0x60 */
extern const struct mb_io_ops mb_i8042_cmd_ops;  /* port 0x64 */

#endif

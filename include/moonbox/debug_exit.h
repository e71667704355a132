/*
 * debug_exit: a port a guest writes v to, ending the run with reason
 * MB_STOP_EXIT and exit code v (how test guests report their result).
 */
#ifndef MOONBOX_DEBUG_EXIT_H
#define MOONBOX_DEBUG_EXIT_H

#include "moonbox.h"

/* Nothing to continue from; the count of exits is for display. */
#define MB_DEBUG_EXIT_STATE(X, S) X(S, ro_u64, writes)
MB_STATE_STRUCT(mb_debug_exit_state, MB_DEBUG_EXIT_STATE);
#define MB_DEBUG_EXIT_STATE_VERSION 1

struct mb_debug_exit_attach_config {
	const char *name; /* NULL: "debug_exit" */
	uint16_t port;    /* 0: 0xf4 */
	unsigned size;    /* bytes, 1, 2 or 4; 0: 4 */
};

/* Register the port; cfg may be NULL (0xf4, 4 bytes). */
int mb_debug_exit_attach(struct mb_machine *m,
			 const struct mb_debug_exit_attach_config *cfg,
			 struct mb_device **out);

#endif

#ifndef MB_DEBUG_EXIT_H
#define MB_DEBUG_EXIT_H
#include "moonbox.h"

struct mb_debug_exit;
/* A port a guest writes v to end the run with exit_code v. */
int mb_debug_exit_create(struct mb_machine *m, uint64_t port, unsigned size,
			 struct mb_debug_exit **out);
#endif

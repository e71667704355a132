/* The emulation fallback: completes, in userspace, instructions that KVM
 * reported it could not emulate (see fallback.c). */
#ifndef MB_FALLBACK_H
#define MB_FALLBACK_H

#include "moonbox.h"

/* Try to complete the instruction whose bytes are insn[0..n) on vCPU cpu.
 * Returns true when it did (the guest can go on). */
bool mb_fallback_try(struct mb_machine *m, unsigned cpu, const uint8_t *insn,
		     unsigned n);

#endif

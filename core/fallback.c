/* The emulation fallback. Nothing is completed yet: every emulation
 * failure ends the run with reason "error" and the instruction bytes. */
#include "core/fallback.h"

bool mb_fallback_try(struct mb_machine *m, unsigned cpu, const uint8_t *insn,
		     unsigned n)
{
	(void)m, (void)cpu, (void)insn, (void)n;
	return false;
}

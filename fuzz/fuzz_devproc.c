/* libFuzzer: the VMM's end of a device process (core/devproc.c) against a
 * hostile device: access replies, events and control replies made of the
 * input (records [kind, len lo, len hi] + bytes, see mb_devproc_fuzz), with
 * the expected message id put in on request so that the parsers past the
 * id check are reached. A crash, a sanitizer report or a hang (a vCPU that
 * waits for a device forever) is a finding. */
#include <stddef.h>
#include <stdint.h>

#include "core/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	mb_devproc_fuzz(data, size);
	return 0;
}

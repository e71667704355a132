/*
 * dev.* fault rules on an isolated device's accesses (docs/faults.md,
 * docs/devproc.md "Faults at the boundary"). The proxy (core/devproc.c)
 * asks the plan for every access before it crosses; drop and kill act
 * there (the access never leaves, or the process dies with it in
 * flight); what a verdict does to the reply is here.
 */
#include <errno.h>
#include <time.h>

#include "core/internal.h"
#include "moonbox/devproc.h"

void mb_devproc_fault_reply(const struct mb_fault_verdict *v, bool write,
			    void *data, unsigned size)
{
	if (v->corrupt && !write && size) {
		/* `bytes` distinct bits of the value, from the rule's seed
		 * (a bit picked twice would cancel itself). */
		uint8_t *b = data;
		unsigned bits = size * 8, n = v->bytes < bits ? v->bytes : bits;
		uint64_t got = 0;
		for (uint64_t j = 0; __builtin_popcountll(got) < (int)n && j < 4096; j++)
			got |= 1ull << (mb_fault_hash(v->key, 0, j) % bits);
		for (unsigned i = 0; i < bits; i++)
			if (got >> i & 1)
				b[i / 8] ^= (uint8_t)(1u << (i % 8));
	}
	if (v->delay_ms) {
		/* The vCPU waits for the reply that long (host time: the
		 * guest's clock goes on, as it would for a slow device). */
		struct timespec t = { v->delay_ms / 1000,
				      (long)(v->delay_ms % 1000) * 1000000 };
		while (nanosleep(&t, &t) && errno == EINTR)
			;
	}
}

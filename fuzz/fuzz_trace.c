/* libFuzzer: the fault trace reader (core/fault_trace.c). A trace is a
 * file from outside: any input must be accepted whole or refused with a
 * message naming a line, never crash or leak. What it accepts must format
 * back into a trace it accepts again, record for record. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "moonbox/fault.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mb_fault_trace t, u;
	if (mb_fault_trace_parse((const char *)data, size, &t)) {
		if (strncmp(mb_errmsg(), "line ", 5) != 0)
			abort(); /* every refusal names its line */
		return 0;
	}
	size_t cap = 128 + t.n * 512, n;
	char *buf = malloc(cap);
	if (!buf)
		abort();
	n = (size_t)mb_fault_trace_header(buf, cap, t.seed);
	for (size_t i = 0; i < t.n; i++)
		n += (size_t)mb_fault_trace_format(buf + n, cap - n, &t.r[i]);
	if (mb_fault_trace_parse(buf, n, &u) || u.n != t.n || u.seed != t.seed ||
	    (t.n && memcmp(u.r, t.r, t.n * sizeof *t.r)))
		abort(); /* the writer and the reader agree */
	mb_fault_trace_fini(&u);
	mb_fault_trace_fini(&t);
	free(buf);
	return 0;
}

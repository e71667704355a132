/* debug_exit: a guest write of v ends run() with reason "exit" and
 * exit_code v. How test guests report their result. */
#include <errno.h>
#include <stdlib.h>

#include "devices/debug_exit.h"

struct mb_debug_exit {
	struct mb_machine *m;
};

static void dx_write(void *dev, uint64_t off, const void *data, unsigned size)
{
	struct mb_debug_exit *d = dev;
	uint64_t v = mb_io_get(data, size);
	mb_machine_stop(d->m, MB_STOP_EXIT, (int)v, "guest wrote %llu to debug_exit",
			(unsigned long long)v);
}

static const struct mb_io_ops ops = { NULL, dx_write };

int mb_debug_exit_create(struct mb_machine *m, uint64_t port, unsigned size,
			 struct mb_debug_exit **out)
{
	struct mb_debug_exit *d = calloc(1, sizeof *d);
	if (!d)
		return mb_seterr(-ENOMEM, "debug_exit: out of memory");
	d->m = m;
	int rc = mb_bus_register(mb_machine_pio(m), port, size, &ops, d,
				 "debug_exit");
	if (rc) {
		free(d);
		return rc;
	}
	mb_machine_on_destroy(m, free, d);
	*out = d;
	return 0;
}

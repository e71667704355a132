/* debug_exit (moonbox/debug_exit.h): a guest write of v ends run() with
 * reason "exit" and exit_code v. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "moonbox.h"

struct dx {
	struct mb_machine *m;
	uint64_t writes;
};

static void dx_write(void *dev, uint64_t off, const void *data, unsigned size)
{
	struct dx *d = dev;
	uint64_t v = mb_io_get(data, size);
	__atomic_add_fetch(&d->writes, 1, __ATOMIC_RELAXED);
	mb_machine_stop(d->m, MB_STOP_EXIT, (int)v, "guest wrote %llu to debug_exit",
			(unsigned long long)v);
}

static const struct mb_io_ops ops = { NULL, dx_write };

MB_STATE_DESC(mb_debug_exit_state, MB_DEBUG_EXIT_STATE,
	      MB_DEBUG_EXIT_STATE_VERSION);

static int dev_save(void *impl, void *st)
{
	struct mb_debug_exit_state *s = st;
	s->writes = __atomic_load_n(&((struct dx *)impl)->writes, __ATOMIC_RELAXED);
	return 0;
}

static int dev_load(void *impl, const void *st)
{
	const struct mb_debug_exit_state *s = st;
	__atomic_store_n(&((struct dx *)impl)->writes, s->writes, __ATOMIC_RELAXED);
	return 0;
}

static const struct mb_device_ops dx_dev_ops = {
	.kind = "debug_exit", .state = &mb_debug_exit_state_desc,
	.save = dev_save, .load = dev_load, .free = free,
};

int mb_debug_exit_attach(struct mb_machine *m,
			 const struct mb_debug_exit_attach_config *cfg,
			 struct mb_device **out)
{
	unsigned size = cfg && cfg->size ? cfg->size : 4;
	uint16_t port = cfg && cfg->port ? cfg->port : 0xf4;
	if (size != 1 && size != 2 && size != 4)
		return mb_seterr(-EINVAL, "size: %u is not 1, 2 or 4", size);
	struct dx *x = calloc(1, sizeof *x);
	if (!x)
		return mb_seterr(-ENOMEM, "debug_exit: out of memory");
	x->m = m;
	struct mb_device *d;
	int rc;
	if ((rc = mb_device_new(m, cfg ? cfg->name : NULL, "debug_exit",
				&dx_dev_ops, x, &d)))
		return rc;
	if ((rc = mb_device_map(d, MB_SPACE_PIO, port, size, &ops, x))) {
		mb_device_remove(d);
		return rc;
	}
	*out = d;
	return 0;
}

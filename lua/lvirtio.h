/* What the virtio bindings (lvirtio.c: blk, rng; lvirtio_io.c: console,
 * net) share: placement of a device behind a virtio-mmio transport, its
 * cleanup, and the transport half of dev:state(). */
#ifndef LVIRTIO_H
#define LVIRTIO_H

#include "lua/lmoonbox.h"
#include "moonbox/virtio_mmio.h"

#define SETI(name, v) (lua_pushinteger(L, (lua_Integer)(v)), lua_setfield(L, -2, name))
#define SETB(name, v) (lua_pushboolean(L, (v)), lua_setfield(L, -2, name))
#define SETS(name, v) (lua_pushstring(L, (v)), lua_setfield(L, -2, name))

/* One attached device. Bindings embed it first in their own struct. */
struct mbl_vdev {
	struct mb_machine *m;
	struct mb_virtio *t;
	void *dev;
	/* Frees the device model (and what it owns), before the transport:
	 * blk's workers still complete requests through it. */
	void (*dev_free)(struct mbl_vdev *v);
	int irqfd; /* -1: interrupts through the machine's line */
	uint64_t base, size;
	unsigned irq;
};

/* Constructor-time checks of mmio = { base, size } and irq = N at idx. */
void mbl_vdev_check_placement(lua_State *L, int idx);
/* Window, line, interrupt path, transport, doorbells, bus, discovery, from
 * the options at index 3. On failure frees v (device too) and raises. */
void mbl_vdev_place(lua_State *L, struct mbl_vdev *v,
		    const struct mb_virtio_dev_ops *ops, uint64_t features);
/* The machine's destroy hook for a placed device. */
void mbl_vdev_free(void *v);
/* dev:state()'s device behind argument 1, or an error. */
struct mbl_vdev *mbl_vdev_attached(lua_State *L);
/* Push the transport's state table with its "stats" table on top (pop it
 * into the state with lua_setfield(L, -2, "stats")). Returns the used
 * buffers pushed over all queues. */
uint64_t mbl_vdev_push_state(lua_State *L, struct mbl_vdev *v);

#endif

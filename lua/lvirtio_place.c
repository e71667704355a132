/* Placing a virtio device: a free 4K window and interrupt line from the
 * machine's allocator unless the options give them, an irqfd with KVM's
 * irqchip, the transport with its doorbells on the bus, and the device
 * announced for boot_linux's virtio_mmio.device= list. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "lua/lvirtio.h"

void mbl_vdev_check_placement(lua_State *L, int idx)
{
	if (lua_getfield(L, idx, "mmio") != LUA_TNIL) {
		uint64_t base, size;
		mbl_checkrange(L, idx, "mmio", &base, &size);
		if (size < 0x200)
			luaL_error(L, "mmio.size: 0x%I is too small for a virtio-mmio "
				   "window (at least 0x200)", (lua_Integer)size);
		if (base & 0xfff)
			luaL_error(L, "mmio.base: 0x%I is not 4K-aligned",
				   (lua_Integer)base);
	}
	lua_pop(L, 1);
	lua_Integer irq = mbl_optint(L, idx, "irq", 5);
	if (irq < 1 || irq > 23)
		luaL_error(L, "irq: %d is not a line (1-23)", (int)irq);
}

void mbl_vdev_free(void *p)
{
	struct mbl_vdev *v = p;
	if (v->dev_free)
		v->dev_free(v);
	mb_virtio_free(v->t);
	if (v->irqfd >= 0) {
		mb_machine_irqfd(v->m, v->irqfd, v->irq, false);
		close(v->irqfd);
	}
	free(v);
}

void mbl_vdev_place(lua_State *L, struct mbl_vdev *v,
		    const struct mb_virtio_dev_ops *ops, uint64_t features)
{
	struct mb_machine *m = v->m;
	struct mb_irq irq;
	int rc = 0;
	v->irqfd = -1;
	v->size = MB_VIRTIO_MMIO_SIZE;
	if (lua_getfield(L, 3, "mmio") != LUA_TNIL)
		mbl_checkrange(L, 3, "mmio", &v->base, &v->size);
	else
		rc = mb_machine_alloc_mmio(m, v->size, &v->base);
	lua_pop(L, 1);
	bool given = lua_getfield(L, 3, "irq") != LUA_TNIL;
	v->irq = (unsigned)lua_tointeger(L, -1);
	lua_pop(L, 1);
	if (!rc && given) {
		if (!(rc = mb_machine_irq(m, v->irq, &irq)))
			mb_machine_claim_irq(m, v->irq);
	} else if (!rc && !(rc = mb_machine_alloc_irq(m, &v->irq))) {
		rc = mb_machine_irq(m, v->irq, &irq);
	}
	/* Kernel irqchip: completions raise the line from any thread through
	 * KVM_IRQFD, no ioctl per interrupt (mmio.h: edge, not level). */
	if (!rc && mb_machine_irqchip(m) == MB_IRQCHIP_KERNEL) {
		v->irqfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (v->irqfd >= 0 && mb_machine_irqfd(m, v->irqfd, v->irq, true)) {
			close(v->irqfd);
			v->irqfd = -1;
		}
	}
	bool registered = false;
	if (!rc) {
		struct mb_virtio_config cfg = { ops, v->dev, features,
						mb_machine_mem(m), irq, v->irqfd };
		char name[48];
		snprintf(name, sizeof name, "%s@%llx", ops->name,
			 (unsigned long long)v->base);
		if (!(v->t = mb_virtio_new(&cfg)))
			rc = mb_seterr(-ENOMEM, "out of memory");
		else if (!(rc = mb_virtio_doorbells(v->t, m, v->base)) &&
			 !(rc = mb_bus_register(mb_machine_mmio(m), v->base, v->size,
						&mb_virtio_mmio_ops, v->t, name))) {
			registered = true;
			rc = mb_machine_add_virtio_mmio(m, v->base, v->size, v->irq);
		}
	}
	if (rc) {
		char msg[256];
		snprintf(msg, sizeof msg, "%s", mb_errmsg());
		if (registered)
			mb_bus_unregister(mb_machine_mmio(m), v->base);
		mbl_vdev_free(v);
		luaL_error(L, "%s: %s", ops->name, msg);
	}
}

struct mbl_vdev *mbl_vdev_attached(lua_State *L)
{
	struct mbl_dev *d = mbl_checkdev(L, 1);
	if (!d->mm || !d->mm->m || !d->impl)
		luaL_error(L, "%s: not part of a running machine (use m:add)",
			   d->cls->name);
	return d->impl;
}

uint64_t mbl_vdev_push_state(lua_State *L, struct mbl_vdev *v)
{
	struct mb_virtio_state s;
	uint64_t pushed = 0;
	mb_virtio_state(v->t, &s);
	lua_createtable(L, 0, 24);
	SETI("base", v->base); SETI("size", v->size); SETI("irq", v->irq);
	SETI("status", s.status); SETI("isr", s.isr);
	SETI("config_generation", s.config_generation);
	SETI("device_features", s.device_features);
	SETI("driver_features", s.driver_features);
	SETB("ioeventfd", s.ioeventfd); SETB("irqfd", s.irqfd);
	SETB("needs_reset", s.status & VIRTIO_STATUS_NEEDS_RESET);
	if (s.why[0])
		SETS("fault", s.why);
	lua_createtable(L, (int)s.nqueues, 0);
	for (unsigned i = 0; i < s.nqueues; i++) {
		lua_createtable(L, 0, 11);
		SETI("num", s.q[i].num); SETB("ready", s.q[i].ready);
		SETB("broken", s.q[i].broken); SETI("desc", s.q[i].desc);
		SETI("driver", s.q[i].driver); SETI("device", s.q[i].device);
		SETI("avail_idx", s.q[i].avail_idx);
		SETI("last_avail", s.q[i].last_avail);
		SETI("used_idx", s.q[i].used_idx); SETI("popped", s.q[i].popped);
		SETI("pushed", s.q[i].pushed);
		pushed += s.q[i].pushed;
		lua_rawseti(L, -2, i + 1);
	}
	lua_setfield(L, -2, "queues");
	lua_createtable(L, 0, 16);
	SETI("notifications", s.st.notifies);
	SETI("mmio_notifications", s.st.mmio_notifies);
	SETI("interrupts", s.st.interrupts);
	SETI("suppressed_interrupts", s.st.suppressed);
	SETI("faults", s.st.faults);
	return pushed;
}

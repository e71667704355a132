/* Lua bindings of the virtio-mmio devices: mb.virtio_blk, mb.virtio_rng,
 * and m:virtio_stats(). Placement is automatic unless mmio/irq are given:
 * a free 4K window and interrupt line from the machine's allocator, and
 * the device announced for boot_linux's virtio_mmio.device= list. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "lua/lmoonbox.h"
#include "devices/virtio/blk.h"
#include "devices/virtio/mmio.h"
#include "devices/virtio/rng.h"

#define SETI(name, v) (lua_pushinteger(L, (lua_Integer)(v)), lua_setfield(L, -2, name))
#define SETB(name, v) (lua_pushboolean(L, (v)), lua_setfield(L, -2, name))

#define BLK_THREADS 2 /* requests in flight at once; this host has 2 cores */

enum kind { BLK, RNG };

/* One attached device: the transport, the device behind it, placement. */
struct vdev {
	enum kind kind;
	struct mb_machine *m;
	struct mb_virtio *t;
	void *dev;
	int irqfd;
	uint64_t base, size;
	unsigned irq;
	bool registered;
};

static void vdev_free(void *p)
{
	struct vdev *v = p;
	/* Device first: blk joins its workers, which still use the transport. */
	if (v->kind == BLK)
		mb_virtio_blk_free(v->dev);
	else
		mb_virtio_rng_free(v->dev);
	mb_virtio_free(v->t);
	if (v->irqfd >= 0) {
		mb_machine_irqfd(v->m, v->irqfd, v->irq, false);
		close(v->irqfd);
	}
	free(v);
}

/* Options both devices take: mmio = { base, size }, irq = N. */
static void check_placement(lua_State *L, int idx)
{
	if (lua_getfield(L, idx, "mmio") != LUA_TNIL) {
		uint64_t base, size;
		mbl_checkrange(L, idx, "mmio", &base, &size);
		if (size < 0x100 + MB_VIRTIO_BLK_CONFIG_SIZE)
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

/* Window, line, interrupt path, transport, doorbells, bus, discovery. */
static int vdev_attach(lua_State *L, struct mbl_machine *mm, struct mbl_dev *d,
		       struct vdev *v, const struct mb_virtio_dev_ops *ops,
		       uint64_t features)
{
	struct mb_machine *m = mm->m;
	v->m = m;
	v->irqfd = -1;
	v->size = MB_VIRTIO_MMIO_SIZE;
	int fail = 0;
	if (lua_getfield(L, 3, "mmio") != LUA_TNIL)
		mbl_checkrange(L, 3, "mmio", &v->base, &v->size);
	else if (mb_machine_alloc_mmio(m, v->size, &v->base))
		fail = 1;
	lua_pop(L, 1);
	struct mb_irq irq;
	if (!fail) {
		if (lua_getfield(L, 3, "irq") != LUA_TNIL) {
			v->irq = (unsigned)mbl_optint(L, 3, "irq", 0);
			if (mb_machine_irq(m, v->irq, &irq) == 0)
				mb_machine_claim_irq(m, v->irq);
			else
				fail = 1;
		} else if (mb_machine_alloc_irq(m, &v->irq) ||
			   mb_machine_irq(m, v->irq, &irq)) {
			fail = 1;
		}
		lua_pop(L, 1);
	}
	if (fail) {
		vdev_free(v);
		return mbl_fail(L, ops->name);
	}
	/* Kernel irqchip: completions raise the line from any thread through
	 * KVM_IRQFD, no ioctl per interrupt (see mmio.h for edge vs level). */
	if (mb_machine_irqchip(m) == MB_IRQCHIP_KERNEL) {
		v->irqfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (v->irqfd >= 0 && mb_machine_irqfd(m, v->irqfd, v->irq, true)) {
			close(v->irqfd);
			v->irqfd = -1;
		}
	}
	struct mb_virtio_config cfg = { ops, v->dev, features, mb_machine_mem(m),
					irq, v->irqfd };
	char name[48];
	snprintf(name, sizeof name, "%s@%llx", ops->name,
		 (unsigned long long)v->base);
	if (!(v->t = mb_virtio_new(&cfg)) ||
	    mb_virtio_doorbells(v->t, m, v->base) ||
	    mb_bus_register(mb_machine_mmio(m), v->base, v->size,
			    &mb_virtio_mmio_ops, v->t, name) ||
	    !(v->registered = true) ||
	    mb_machine_add_virtio_mmio(m, v->base, v->size, v->irq)) {
		char msg[256];
		snprintf(msg, sizeof msg, "%s", mb_errmsg());
		if (v->registered)
			mb_bus_unregister(mb_machine_mmio(m), v->base);
		vdev_free(v);
		return luaL_error(L, "%s: %s", ops->name, msg);
	}
	mb_machine_on_destroy(m, vdev_free, v);
	d->impl = v;
	return 0;
}

static struct vdev *vdev_new(lua_State *L, enum kind k)
{
	struct vdev *v = calloc(1, sizeof *v);
	if (!v)
		luaL_error(L, "virtio: out of memory");
	v->kind = k;
	v->irqfd = -1;
	return v;
}

/* ---- virtio-blk ------------------------------------------------------------- */

static int blk_attach(lua_State *L, struct mbl_machine *mm, struct mbl_dev *d)
{
	struct mb_virtio_blk_config c = {
		.image = mbl_optstr(L, 3, "image", NULL),
		.readonly = mbl_optbool(L, 3, "readonly", 0),
		.serial = mbl_optstr(L, 3, "serial", ""),
		.threads = BLK_THREADS,
	};
	struct mb_virtio_blk *b = mb_virtio_blk_new(&c);
	if (!b)
		return mbl_fail(L, "image");
	struct vdev *v = vdev_new(L, BLK);
	v->dev = b;
	return vdev_attach(L, mm, d, v, &mb_virtio_blk_ops,
			   mb_virtio_blk_features(b));
}

static const char *const blk_keys[] = { "image", "readonly", "serial", "mmio",
					"irq", NULL };

/* ---- virtio-rng ------------------------------------------------------------- */

static int rng_attach(lua_State *L, struct mbl_machine *mm, struct mbl_dev *d)
{
	struct mb_virtio_rng *r = mb_virtio_rng_new();
	if (!r)
		return mbl_fail(L, "virtio-rng");
	struct vdev *v = vdev_new(L, RNG);
	v->dev = r;
	return vdev_attach(L, mm, d, v, &mb_virtio_rng_ops, 0);
}

static const char *const rng_keys[] = { "mmio", "irq", NULL };

/* ---- state ------------------------------------------------------------------ */

static struct vdev *attached(lua_State *L)
{
	struct mbl_dev *d = mbl_checkdev(L, 1);
	if (!d->mm || !d->mm->m || !d->impl)
		luaL_error(L, "%s: not part of a running machine (use m:add)",
			   d->cls->name);
	return d->impl;
}

/* Device-specific counters into the table on top of the stack. */
static void dev_stats(lua_State *L, struct vdev *v, uint64_t *requests,
		      uint64_t *bytes)
{
	if (v->kind == BLK) {
		struct mb_virtio_blk_stats s;
		mb_virtio_blk_stats(v->dev, &s);
		*requests = s.reads + s.writes + s.flushes + s.discards + s.get_ids +
			    s.ioerr + s.unsupp;
		*bytes = s.bytes_read + s.bytes_written;
		if (!L)
			return;
		SETI("reads", s.reads); SETI("writes", s.writes);
		SETI("flushes", s.flushes); SETI("discards", s.discards);
		SETI("get_ids", s.get_ids); SETI("bytes_read", s.bytes_read);
		SETI("bytes_written", s.bytes_written); SETI("ioerr", s.ioerr);
		SETI("unsupp", s.unsupp); SETI("max_inflight", s.max_inflight);
		SETI("capacity", mb_virtio_blk_capacity(v->dev));
	} else {
		*bytes = mb_virtio_rng_bytes(v->dev);
		*requests = 0; /* counted as used-ring pushes below */
	}
}

static int vdev_state(lua_State *L)
{
	struct vdev *v = attached(L);
	struct mb_virtio_state s;
	mb_virtio_state(v->t, &s);
	lua_createtable(L, 0, 24);
	SETI("base", v->base); SETI("size", v->size); SETI("irq", v->irq);
	SETI("status", s.status); SETI("isr", s.isr);
	SETI("config_generation", s.config_generation);
	SETI("device_features", s.device_features);
	SETI("driver_features", s.driver_features);
	SETB("ioeventfd", s.ioeventfd); SETB("irqfd", s.irqfd);
	SETB("needs_reset", s.status & VIRTIO_STATUS_NEEDS_RESET);
	if (s.why[0]) {
		lua_pushstring(L, s.why);
		lua_setfield(L, -2, "fault");
	}
	lua_createtable(L, (int)s.nqueues, 0);
	uint64_t pushed = 0;
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
	uint64_t req, bytes;
	lua_createtable(L, 0, 20);
	dev_stats(L, v, &req, &bytes);
	SETI("requests", v->kind == BLK ? req : pushed);
	SETI("bytes", bytes);
	SETI("notifications", s.st.notifies);
	SETI("mmio_notifications", s.st.mmio_notifies);
	SETI("interrupts", s.st.interrupts);
	SETI("suppressed_interrupts", s.st.suppressed);
	SETI("faults", s.st.faults);
	lua_setfield(L, -2, "stats");
	return 1;
}

static const struct mbl_class blk_class = { "virtio_blk", blk_keys, blk_attach,
					    vdev_state, NULL };
static const struct mbl_class rng_class = { "virtio_rng", rng_keys, rng_attach,
					    vdev_state, NULL };

/* ---- constructors: every option checked before anything exists --------------- */

static int l_virtio_blk(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	mbl_checkopts(L, 1, "virtio_blk", blk_keys);
	const char *image = mbl_optstr(L, 1, "image", NULL);
	if (!image)
		return luaL_error(L, "image: missing (a disk image file)");
	int ro = mbl_optbool(L, 1, "readonly", 0);
	const char *serial = mbl_optstr(L, 1, "serial", "");
	if (strlen(serial) > 20)
		return luaL_error(L, "serial: \"%s\" is longer than 20 bytes", serial);
	check_placement(L, 1);
	int fd = open(image, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (fd < 0)
		return luaL_error(L, "image: %s: %s", image, strerror(errno));
	close(fd);
	mbl_dev_new(L, &blk_class);
	return 1;
}

static int l_virtio_rng(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	mbl_checkopts(L, 1, "virtio_rng", rng_keys);
	check_placement(L, 1);
	mbl_dev_new(L, &rng_class);
	return 1;
}

/* m:virtio_stats() -> { devices, requests, bytes, notifications,
 * mmio_notifications, interrupts } summed over the machine's virtio
 * devices. */
static int l_virtio_stats(lua_State *L)
{
	mbl_live(L, mbl_checkmachine(L, 1));
	uint64_t n = 0, req = 0, bytes = 0, notif = 0, mmio = 0, irqs = 0;
	lua_getiuservalue(L, 1, 1); /* the attached devices */
	lua_Integer len = luaL_len(L, -1);
	for (lua_Integer i = 1; i <= len; i++) {
		lua_geti(L, -1, i);
		struct mbl_dev *d = luaL_testudata(L, -1, "moonbox.device");
		if (d && d->impl && (d->cls == &blk_class || d->cls == &rng_class)) {
			struct vdev *v = d->impl;
			struct mb_virtio_state s;
			uint64_t r, b;
			mb_virtio_state(v->t, &s);
			dev_stats(NULL, v, &r, &b);
			if (v->kind == RNG)
				r = s.q[0].pushed;
			n++, req += r, bytes += b, notif += s.st.notifies;
			mmio += s.st.mmio_notifies, irqs += s.st.interrupts;
		}
		lua_pop(L, 1);
	}
	lua_createtable(L, 0, 6);
	SETI("devices", n); SETI("requests", req); SETI("bytes", bytes);
	SETI("notifications", notif); SETI("mmio_notifications", mmio);
	SETI("interrupts", irqs);
	return 1;
}

void mbl_open_virtio(lua_State *L)
{
	static const luaL_Reg ctors[] = {
		{ "virtio_blk", l_virtio_blk },
		{ "virtio_rng", l_virtio_rng },
		{ NULL, NULL },
	};
	luaL_setfuncs(L, ctors, 0);
	mbl_machine_method(L, "virtio_stats", l_virtio_stats);
}

/* Lua bindings of the virtio-mmio devices: mb.virtio_blk, mb.virtio_rng,
 * and m:virtio_stats(). Placement is automatic unless mmio/irq are given:
 * a free 4K window and interrupt line from the machine's allocator, and
 * the device announced for boot_linux's virtio_mmio.device= list. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lua/lvirtio.h"
#include "moonbox/virtio_blk.h"
#include "moonbox/virtio_rng.h"

#define BLK_THREADS 2 /* requests in flight at once; this host has 2 cores */

enum kind { BLK, RNG };

struct vdev {
	struct mbl_vdev v; /* first: the placement helpers see this */
	enum kind kind;
};

static void vdev_dev_free(struct mbl_vdev *v)
{
	/* blk joins its workers here, which still use the transport. */
	if (((struct vdev *)v)->kind == BLK)
		mb_virtio_blk_free(v->dev);
	else
		mb_virtio_rng_free(v->dev);
}

static int vdev_attach(lua_State *L, struct mbl_machine *mm, struct mbl_dev *d,
		       enum kind k, void *dev, const struct mb_virtio_dev_ops *ops,
		       uint64_t features)
{
	struct vdev *v = calloc(1, sizeof *v);
	if (!v) {
		struct vdev tmp = { .v = { .dev = dev }, .kind = k };
		vdev_dev_free(&tmp.v);
		return luaL_error(L, "virtio: out of memory");
	}
	v->kind = k;
	v->v.m = mm->m;
	v->v.dev = dev;
	v->v.dev_free = vdev_dev_free;
	mbl_vdev_place(L, &v->v, ops, features);
	mb_machine_on_destroy(mm->m, mbl_vdev_free, v);
	d->impl = v;
	return 0;
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
	return vdev_attach(L, mm, d, BLK, b, &mb_virtio_blk_ops,
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
	return vdev_attach(L, mm, d, RNG, r, &mb_virtio_rng_ops, 0);
}

static const char *const rng_keys[] = { "mmio", "irq", NULL };

/* ---- state ------------------------------------------------------------------ */

/* Device-specific counters into the table on top of the stack. */
static void dev_stats(lua_State *L, struct vdev *v, uint64_t *requests,
		      uint64_t *bytes)
{
	if (v->kind == BLK) {
		struct mb_virtio_blk_stats s;
		mb_virtio_blk_stats(v->v.dev, &s);
		*requests = s.reads + s.writes + s.flushes + s.discards + s.get_ids +
			    s.ioerr + s.unsupp;
		*bytes = s.bytes_read + s.bytes_written;
		if (!L)
			return;
		SETI("reads", s.reads); SETI("writes", s.writes);
		SETI("flushes", s.flushes); SETI("syncs", s.syncs);
		SETI("discards", s.discards);
		SETI("get_ids", s.get_ids); SETI("bytes_read", s.bytes_read);
		SETI("bytes_written", s.bytes_written); SETI("ioerr", s.ioerr);
		SETI("unsupp", s.unsupp); SETI("max_inflight", s.max_inflight);
		SETI("capacity", mb_virtio_blk_capacity(v->v.dev));
	} else {
		*bytes = mb_virtio_rng_bytes(v->v.dev);
		*requests = 0; /* counted as used-ring pushes below */
	}
}

static int vdev_state(lua_State *L)
{
	struct vdev *v = (struct vdev *)mbl_vdev_attached(L);
	uint64_t pushed = mbl_vdev_push_state(L, &v->v), req, bytes;
	dev_stats(L, v, &req, &bytes);
	SETI("requests", v->kind == BLK ? req : pushed);
	SETI("bytes", bytes);
	lua_setfield(L, -2, "stats");
	return 1;
}

static const struct mbl_class blk_class = { "virtio_blk", blk_keys, blk_attach,
					    vdev_state, NULL, 0, NULL };
static const struct mbl_class rng_class = { "virtio_rng", rng_keys, rng_attach,
					    vdev_state, NULL, 0, NULL };

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
	mbl_vdev_check_placement(L, 1);
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
	mbl_vdev_check_placement(L, 1);
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
		struct mbl_dev *d = lua_touserdata(L, -1);
		if (d && d->impl && (d->cls == &blk_class || d->cls == &rng_class)) {
			struct vdev *v = d->impl;
			struct mb_virtio_state s;
			uint64_t r, b;
			mb_virtio_state(v->v.t, &s);
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

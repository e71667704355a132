/* Lua bindings of the virtio-mmio devices: mb.virtio_blk, mb.virtio_rng
 * (moonbox/virtio_blk.h, virtio_rng.h), the state() every virtio device
 * shares, and m:virtio_stats(). Placement is the C attach function's: a
 * free 4K window and line unless mmio = { base, size } / irq are given. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "lua/lmoonbox.h"

void mbl_virtio_place_opts(lua_State *L, int idx, uint64_t *base,
			   uint64_t *size, int *irq)
{
	*base = *size = 0;
	if (lua_getfield(L, idx, "mmio") != LUA_TNIL) {
		mbl_checkrange(L, idx, "mmio", base, size);
		if (*size < 0x200)
			luaL_error(L, "mmio.size: 0x%I is too small for a virtio-mmio "
				   "window (at least 0x200)", (lua_Integer)*size);
		if (*base & 0xfff)
			luaL_error(L, "mmio.base: 0x%I is not 4K-aligned",
				   (lua_Integer)*base);
	}
	lua_pop(L, 1);
	lua_Integer n = mbl_optint(L, idx, "irq", -1);
	if (n != -1 && (n < 1 || n > 23))
		luaL_error(L, "irq: %d is not a line (1-23)", (int)n);
	*irq = n < 0 ? 0 : (int)n; /* 0: a free one */
}

static lua_Integer geti(lua_State *L, int t, const char *k)
{
	lua_getfield(L, t, k);
	lua_Integer v = lua_tointeger(L, -1);
	lua_pop(L, 1);
	return v;
}

/* dev:state(): the device's state table (transport, queues, the device's
 * fields), with base, size, irq, needs_reset, fault, and a stats table of
 * its counters plus requests and bytes. */
int mbl_virtio_state(lua_State *L)
{
	struct mbl_dev *d = mbl_checkdev(L, 1);
	if (!d->mm || !d->mm->m || !d->dev)
		return luaL_error(L, "%s: not part of a running machine (use m:add)",
				  d->cls->name);
	const struct mb_state_desc *desc = mb_device_state_desc(d->dev);
	void *st = lua_newuserdatauv(L, desc->size, 0);
	if (mb_device_save(d->dev, st))
		return mbl_fail(L, "state");
	mbl_push_state(L, desc, st);
	int t = lua_gettop(L);
	const struct mb_device_range *r = mb_device_range(d->dev, 0);
	lua_pushinteger(L, (lua_Integer)r->base);
	lua_setfield(L, t, "base");
	lua_pushinteger(L, (lua_Integer)r->size);
	lua_setfield(L, t, "size");
	lua_pushinteger(L, mb_device_irq_line(d->dev));
	lua_setfield(L, t, "irq");
	lua_pushboolean(L, geti(L, t, "status") & VIRTIO_STATUS_NEEDS_RESET);
	lua_setfield(L, t, "needs_reset");
	char why[160];
	struct mb_virtio *vt = mb_virtio_dev_transport(d->dev);
	if (vt && *mb_virtio_fault(vt, why, sizeof why)) {
		lua_pushstring(L, why);
		lua_setfield(L, t, "fault");
	}
	lua_newtable(L);
	uint64_t pushed = 0;
	for (size_t i = 0; i < desc->nfields; i++) {
		const struct mb_field *f = &desc->fields[i];
		if ((f->flags & MB_FF_RO) && f->type == MB_FT_U64) {
			lua_getfield(L, t, f->name);
			lua_setfield(L, -2, f->name);
		}
	}
	lua_getfield(L, t, "queues");
	for (lua_Integer i = 1; lua_rawgeti(L, -1, i) == LUA_TTABLE; i++) {
		pushed += (uint64_t)geti(L, lua_gettop(L), "pushed");
		lua_pop(L, 1);
	}
	lua_pop(L, 2);
	lua_pushinteger(L, (lua_Integer)pushed);
	lua_setfield(L, -2, "requests");
	lua_pushinteger(L, geti(L, t, "bytes") + geti(L, t, "bytes_read") +
			geti(L, t, "bytes_written"));
	lua_setfield(L, -2, "bytes");
	lua_setfield(L, t, "stats");
	mbl_isolate_annotate(L, d->dev);
	return 1;
}

/* dev:set_state(t): t as state() returned it. The views state() adds
 * (placement, needs_reset, fault, stats, net's backend and link) are not
 * fields of the state and are ignored, like read-only fields. */
int mbl_virtio_set_state(lua_State *L)
{
	static const char *const views[] = { "base", "size", "irq", "needs_reset",
					      "fault", "stats", "backend",
					      "connected", "sandbox", "isolated",
					      NULL };
	mbl_checkdev(L, 1);
	luaL_checktype(L, 2, LUA_TTABLE);
	lua_settop(L, 2);
	lua_newtable(L); /* a copy without them: t stays as the caller had it */
	lua_pushnil(L);
	while (lua_next(L, 2)) {
		bool view = false;
		if (lua_type(L, -2) == LUA_TSTRING)
			for (const char *const *v = views; *v && !view; v++)
				view = strcmp(lua_tostring(L, -2), *v) == 0;
		if (view) {
			lua_pop(L, 1);
			continue;
		}
		lua_pushvalue(L, -2);
		lua_insert(L, -2);
		lua_rawset(L, 3);
	}
	lua_replace(L, 2);
	return mbl_dev_set_state(L);
}

/* ---- virtio-blk ------------------------------------------------------------- */

static const char *const blk_keys[] = { "name", "image", "file", "readonly",
					"serial",
					"threads", "mmio", "irq", "disk",
					"overlay", "cache", NULL };

static void blk_parse(lua_State *L, int idx, void *p)
{
	struct mb_virtio_blk_attach_config *c = p;
	c->name = mbl_optstr(L, idx, "name", NULL);
	c->image = mbl_optstr(L, idx, "image", NULL);
	const char *file = mbl_optstr(L, idx, "file", NULL); /* another name */
	if (c->image && file)
		luaL_error(L, "file: give image or file, not both");
	if (!c->image)
		c->image = file;
	if (!c->image)
		luaL_error(L, "image: missing (a disk image file)");
	c->readonly = mbl_optbool(L, idx, "readonly", 0);
	const char *disk = mbl_optstr(L, idx, "disk", "file");
	if (strcmp(disk, "file") && strcmp(disk, "overlay"))
		luaL_error(L, "disk: \"%s\" is not \"file\" (writes go to the image) "
			   "or \"overlay\" (copy-on-write in memory)", disk);
	c->overlay = strcmp(disk, "overlay") == 0 || mbl_optbool(L, idx, "overlay", 0);
	if (c->overlay && c->readonly)
		luaL_error(L, "overlay: a readonly disk has no writes to keep apart");
	static const char *const caches[] = { "none", "writeback", NULL };
	c->writeback = mbl_checkenum(L, idx, "cache", "none", caches) == 1;
	if (c->writeback && (c->overlay || c->readonly))
		luaL_error(L, "cache: \"writeback\" needs a writable disk = \"file\"");
	c->serial = mbl_optstr(L, idx, "serial", "");
	if (strlen(c->serial) > 20)
		luaL_error(L, "serial: \"%s\" is longer than 20 bytes", c->serial);
	lua_Integer th = mbl_optint(L, idx, "threads", 0);
	if (th < 0 || th > 8)
		luaL_error(L, "threads: %d is not 0-8 (0: 2)", (int)th);
	c->threads = (unsigned)th;
	mbl_virtio_place_opts(L, idx, &c->mmio_base, &c->mmio_size, &c->irq);
	if (mbl_in_devproc(L)) { /* the VMM opened the image for us */
		c->image_fd = (int)mbl_optint(L, idx, "image_fd", 0);
		if (c->image_fd < 3 || fcntl(c->image_fd, F_GETFD) < 0)
			luaL_error(L, "image_fd: %d is not an open descriptor",
				   c->image_fd);
		return;
	}
	int fd = open(c->image, (c->readonly || c->overlay ? O_RDONLY : O_RDWR) |
		      O_CLOEXEC);
	if (fd < 0)
		luaL_error(L, "image: %s: %s", c->image, strerror(errno));
	close(fd);
}

static int blk_attach(lua_State *L, struct mbl_machine *mm, struct mbl_dev *d)
{
	if (mb_virtio_blk_attach(mm->m, d->cfg, &d->dev))
		return mbl_fail(L, "virtio_blk");
	return 0;
}

/* disk:power_cut { model = "drop" | "subset" | "torn", seed = N } on a
 * paused machine: what of the write-back cache's unflushed writes reaches
 * the image; returns { cached, written, writes } (docs/faults.md). */
static int blk_power_cut(lua_State *L)
{
	static const char *const keys[] = { "model", "seed", NULL };
	static const char *const models[] = { "drop", "subset", "torn", NULL };
	struct mb_device *dev = mbl_checkdevice(L, 1);
	if (lua_isnoneornil(L, 2))
		lua_newtable(L), lua_replace(L, 2);
	luaL_checktype(L, 2, LUA_TTABLE);
	mbl_checkopts(L, 2, "power_cut", keys);
	int model = mbl_checkenum(L, 2, "model", "drop", models);
	lua_Integer seed = mbl_optint(L, 2, "seed", 0);
	if (!mb_machine_paused(mb_device_machine(dev)))
		return luaL_error(L, "power_cut: pause the machine first");
	struct mb_power_cut_result r;
	if (mb_virtio_blk_power_cut(mb_virtio_dev_model(dev), (enum mb_power_cut)model,
				    (uint64_t)seed, &r))
		return mbl_fail(L, NULL);
	lua_createtable(L, 0, 3);
	lua_pushinteger(L, (lua_Integer)r.cached);
	lua_setfield(L, -2, "cached");
	lua_pushinteger(L, (lua_Integer)r.written);
	lua_setfield(L, -2, "written");
	lua_pushinteger(L, (lua_Integer)r.writes);
	lua_setfield(L, -2, "writes");
	return 1;
}

static const luaL_Reg blk_methods[] = {
	{ "power_cut", blk_power_cut }, { NULL, NULL },
};

/* ---- virtio-rng ------------------------------------------------------------- */

static const char *const rng_keys[] = { "name", "mmio", "irq", NULL };

static void rng_parse(lua_State *L, int idx, void *p)
{
	struct mb_virtio_rng_attach_config *c = p;
	c->name = mbl_optstr(L, idx, "name", NULL);
	mbl_virtio_place_opts(L, idx, &c->mmio_base, &c->mmio_size, &c->irq);
}

static int rng_attach(lua_State *L, struct mbl_machine *mm, struct mbl_dev *d)
{
	if (mb_virtio_rng_attach(mm->m, d->cfg, &d->dev))
		return mbl_fail(L, "virtio_rng");
	return 0;
}

static const struct mbl_class blk_class = {
	.name = "virtio_blk", .keys = blk_keys, .attach = blk_attach,
	.state = mbl_virtio_state, .set_state = mbl_virtio_set_state,
	.parse = blk_parse, .methods = blk_methods,
	.cfg_size = sizeof(struct mb_virtio_blk_attach_config),
};
static const struct mbl_class rng_class = {
	.name = "virtio_rng", .keys = rng_keys, .attach = rng_attach,
	.state = mbl_virtio_state, .set_state = mbl_virtio_set_state,
	.parse = rng_parse,
	.cfg_size = sizeof(struct mb_virtio_rng_attach_config),
};

static int l_virtio_blk(lua_State *L)
{
	mbl_dev_new(L, &blk_class);
	return 1;
}

static int l_virtio_rng(lua_State *L)
{
	mbl_dev_new(L, &rng_class);
	return 1;
}

/* m:virtio_stats() -> { devices, requests, bytes, notifications,
 * mmio_notifications, interrupts } summed over the machine's virtio-blk
 * and virtio-rng devices. */
static int l_virtio_stats(lua_State *L)
{
	struct mb_machine *m = mbl_live(L, mbl_checkmachine(L, 1));
	uint64_t n = 0, req = 0, bytes = 0, notif = 0, mmio = 0, irqs = 0;
	for (size_t i = 0; i < mb_machine_ndevices(m); i++) {
		struct mb_device *d = mb_machine_device_at(m, i);
		const char *k = mb_device_kind(d);
		if (mb_devproc_of(d)) { /* isolated: its process's state */
			union {
				struct mb_virtio_blk_state b;
				struct mb_virtio_rng_state r;
			} u;
			bool blk = strcmp(k, "virtio_blk") == 0;
			if ((!blk && strcmp(k, "virtio_rng")) || mb_device_save(d, &u))
				continue;
#define SUM(st) \
	do { \
		for (size_t q = 0; q < sizeof (st).queues / sizeof (st).queues[0]; q++) \
			req += (st).queues[q].pushed; \
		notif += (st).notifications, mmio += (st).mmio_notifications; \
		irqs += (st).interrupts; \
	} while (0)
			if (blk) {
				bytes += u.b.bytes_read + u.b.bytes_written;
				SUM(u.b);
			} else {
				bytes += u.r.bytes;
				SUM(u.r);
			}
#undef SUM
			n++;
			continue;
		}
		if (strcmp(k, "virtio_blk") == 0) {
			struct mb_virtio_blk_stats b;
			mb_virtio_blk_stats(mb_virtio_dev_model(d), &b);
			bytes += b.bytes_read + b.bytes_written;
		} else if (strcmp(k, "virtio_rng") == 0) {
			bytes += mb_virtio_rng_bytes(mb_virtio_dev_model(d));
		} else {
			continue;
		}
		struct mb_virtio_mmio_state ts;
		struct mb_virtq_state qs[MB_VIRTIO_MAX_QUEUES] = { 0 };
		mb_virtio_save(mb_virtio_dev_transport(d), &ts, qs);
		for (unsigned q = 0; q < MB_VIRTIO_MAX_QUEUES; q++)
			req += qs[q].pushed;
		n++, notif += ts.notifications, mmio += ts.mmio_notifications;
		irqs += ts.interrupts;
	}
	lua_createtable(L, 0, 6);
	const struct { const char *k; uint64_t v; } f[] = {
		{ "devices", n }, { "requests", req }, { "bytes", bytes },
		{ "notifications", notif }, { "mmio_notifications", mmio },
		{ "interrupts", irqs },
	};
	for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
		lua_pushinteger(L, (lua_Integer)f[i].v);
		lua_setfield(L, -2, f[i].k);
	}
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

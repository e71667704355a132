/* Device handles: one class per device type (metatable "moonbox.KIND",
 * __index = its methods), the methods every device has (state, set_state,
 * info), and the machine's m:add, m:device, m:devices. */
#include <stdlib.h>
#include <string.h>

#include "lua/lmoonbox.h"

#define DEVICE_MARK "__moonbox_device"

static int dev_index(lua_State *L);
static int dev_gc(lua_State *L);
static int dev_tostring(lua_State *L);
static int dev_info(lua_State *L);
static int dev_revoke(lua_State *L)
{
	return mbl_isolate_revoke(L, mbl_checkdevice(L, 1));
}
static int dev_grant(lua_State *L)
{
	return mbl_isolate_grant(L, mbl_checkdevice(L, 1));
}

/* dev:mmio_read(offset [, size]) / dev:mmio_write(offset, value [, size]):
 * an access to the device's (first) MMIO window from the script, as a vCPU
 * would make it, through the machine's bus (an isolated device: over its
 * channel). For drivers written in Lua (tests/lua/vhost_driver.lua). */
static uint64_t mmio_addr(lua_State *L, struct mb_device **dev, unsigned *size,
			  int size_arg)
{
	*dev = mbl_checkdevice(L, 1);
	lua_Integer off = luaL_checkinteger(L, 2);
	lua_Integer n = luaL_optinteger(L, size_arg, 4);
	if (n != 1 && n != 2 && n != 4 && n != 8)
		luaL_error(L, "size: %d is not 1, 2, 4 or 8", (int)n);
	for (size_t i = 0; i < mb_device_nranges(*dev); i++) {
		const struct mb_device_range *r = mb_device_range(*dev, i);
		if (r->space != MB_SPACE_MMIO)
			continue;
		if (off < 0 || (uint64_t)off + (uint64_t)n > r->size)
			luaL_error(L, "offset: 0x%I+%d is outside the window of 0x%I "
				   "bytes", off, (int)n, (lua_Integer)r->size);
		*size = (unsigned)n;
		return r->base + (uint64_t)off;
	}
	return (uint64_t)luaL_error(L, "mmio: %s has no MMIO window",
				    mb_device_name(*dev));
}

static int dev_mmio_read(lua_State *L)
{
	struct mb_device *dev;
	unsigned n;
	uint64_t a = mmio_addr(L, &dev, &n, 3);
	uint8_t b[8];
	mb_bus_read(mb_machine_mmio(mb_device_machine(dev)), a, b, n);
	lua_pushinteger(L, (lua_Integer)mb_io_get(b, n));
	return 1;
}

static int dev_mmio_write(lua_State *L)
{
	struct mb_device *dev;
	unsigned n;
	uint64_t a = mmio_addr(L, &dev, &n, 4);
	uint8_t b[8];
	mb_io_put(b, n, (uint64_t)luaL_checkinteger(L, 3));
	mb_bus_write(mb_machine_mmio(mb_device_machine(dev)), a, b, n);
	return 0;
}

static const luaL_Reg common[] = {
	{ "state", mbl_dev_state }, { "set_state", mbl_dev_set_state },
	{ "info", dev_info },   { "revoke", dev_revoke }, { "grant", dev_grant },
	{ "mmio_read", dev_mmio_read }, { "mmio_write", dev_mmio_write },
	{ NULL, NULL },
};

/* The class's metatable, made on first use. */
static void push_class(lua_State *L, const struct mbl_class *cls)
{
	char tname[64];
	snprintf(tname, sizeof tname, "moonbox.%s", cls->name);
	if (!luaL_newmetatable(L, tname))
		return;
	lua_pushboolean(L, 1);
	lua_setfield(L, -2, DEVICE_MARK);
	lua_newtable(L); /* methods: common ones, then the class's own */
	luaL_setfuncs(L, common, 0);
	if (cls->methods)
		luaL_setfuncs(L, cls->methods, 0);
	if (cls->state) {
		lua_pushcfunction(L, cls->state);
		lua_setfield(L, -2, "state");
	}
	if (cls->set_state) {
		lua_pushcfunction(L, cls->set_state);
		lua_setfield(L, -2, "set_state");
	}
	lua_pushcclosure(L, dev_index, 1);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, dev_gc);
	lua_setfield(L, -2, "__gc");
	lua_pushcfunction(L, dev_tostring);
	lua_setfield(L, -2, "__tostring");
}

struct mbl_dev *mbl_dev_new(lua_State *L, const struct mbl_class *cls)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	/* Every class also takes isolate, timeout, on_crash and posted (lisolate.c);
	 * inside a device process, the internal image_fd too. */
	const char *keys[64];
	size_t nk = 0;
	for (const char *const *k = cls->keys; *k && nk < 58; k++)
		keys[nk++] = *k;
	keys[nk++] = "isolate", keys[nk++] = "timeout", keys[nk++] = "on_crash";
	keys[nk++] = "posted";
	if (mbl_in_devproc(L))
		keys[nk++] = "image_fd", keys[nk++] = "backend_fd",
		keys[nk++] = "backend_name";
	keys[nk] = NULL;
	mbl_checkopts(L, 1, cls->name, keys);
	mbl_want_isolate(L, cls, 1);
	if (lua_getfield(L, 1, "name") != LUA_TNIL) {
		size_t len;
		if (lua_type(L, -1) != LUA_TSTRING)
			luaL_error(L, "name: expected a string, got %s",
				   luaL_typename(L, -1));
		const char *s = lua_tolstring(L, -1, &len);
		if (len == 0 || len >= MB_DEVICE_NAME_MAX || strlen(s) != len)
			luaL_error(L, "name: \"%s\" is not 1-%d bytes of text", s,
				   MB_DEVICE_NAME_MAX - 1);
	}
	lua_pop(L, 1);
	struct mbl_dev *d = lua_newuserdatauv(L, sizeof *d + cls->cfg_size, 2);
	memset(d, 0, sizeof *d + cls->cfg_size);
	d->cls = cls;
	d->cfg = cls->cfg_size ? (void *)(d + 1) : NULL;
	push_class(L, cls);
	lua_setmetatable(L, -2);
	lua_pushvalue(L, 1);
	lua_setiuservalue(L, -2, 2);
	if (cls->parse) {
		int top = lua_gettop(L);
		cls->parse(L, 1, d->cfg);
		lua_settop(L, top);
	}
	return d;
}

void mbl_dev_adopt(lua_State *L, int midx, const struct mbl_class *cls,
		   struct mb_device *dev)
{
	midx = lua_absindex(L, midx);
	struct mbl_machine *mm = mbl_checkmachine(L, midx);
	struct mbl_dev *d = lua_newuserdatauv(L, sizeof *d, 2);
	memset(d, 0, sizeof *d);
	d->cls = cls, d->dev = dev, d->impl = mb_device_impl(dev), d->mm = mm;
	push_class(L, cls);
	lua_setmetatable(L, -2);
	lua_newtable(L); /* no options: the machine made it */
	lua_setiuservalue(L, -2, 2);
	lua_pushvalue(L, midx);
	lua_setiuservalue(L, -2, 1);
	lua_getiuservalue(L, midx, 1);
	lua_pushvalue(L, -2);
	lua_rawseti(L, -2, luaL_len(L, -2) + 1);
	lua_pop(L, 2);
}

struct mbl_dev *mbl_checkdev(lua_State *L, int idx)
{
	struct mbl_dev *d = lua_touserdata(L, idx);
	bool ok = false;
	if (d && lua_getmetatable(L, idx)) {
		ok = lua_getfield(L, -1, DEVICE_MARK) == LUA_TBOOLEAN;
		lua_pop(L, 2);
	}
	if (!ok)
		luaL_typeerror(L, idx, "moonbox device");
	return d;
}

struct mb_device *mbl_checkdevice(lua_State *L, int idx)
{
	struct mbl_dev *d = mbl_checkdev(L, idx);
	if (!d->mm || !d->mm->m || !d->dev)
		luaL_error(L, "%s: not part of a machine (use m:add)", d->cls->name);
	return d->dev;
}

void mbl_pushopts(lua_State *L, int idx)
{
	lua_getiuservalue(L, idx, 2);
}

static int dev_gc(lua_State *L)
{
	(void)L; /* the C device belongs to the machine; nothing in the registry */
	return 0;
}

static const char *dev_name(lua_State *L, struct mbl_dev *d)
{
	if (d->dev && d->mm && d->mm->m)
		return mb_device_name(d->dev);
	return NULL;
}

static int dev_index(lua_State *L)
{
	struct mbl_dev *d = mbl_checkdev(L, 1);
	lua_pushvalue(L, 2);
	if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL)
		return 1;
	const char *k = lua_tostring(L, 2);
	if (!k)
		return 1;
	if (strcmp(k, "name") == 0) {
		const char *n = dev_name(L, d);
		if (n) {
			lua_pushstring(L, n);
		} else { /* not added yet: the name it asked for, or nil */
			mbl_pushopts(L, 1);
			lua_getfield(L, -1, "name");
		}
	} else if (strcmp(k, "kind") == 0) {
		lua_pushstring(L, d->cls->name);
	} else {
		lua_pushnil(L);
	}
	return 1;
}

static void push_ranges(lua_State *L, struct mb_device *dev)
{
	size_t n = mb_device_nranges(dev);
	lua_createtable(L, (int)n, 0);
	for (size_t i = 0; i < n; i++) {
		const struct mb_device_range *r = mb_device_range(dev, i);
		lua_createtable(L, 0, 3);
		lua_pushstring(L, r->space == MB_SPACE_PIO ? "pio" : "mmio");
		lua_setfield(L, -2, "space");
		lua_pushinteger(L, (lua_Integer)r->base);
		lua_setfield(L, -2, "base");
		lua_pushinteger(L, (lua_Integer)r->size);
		lua_setfield(L, -2, "size");
		lua_rawseti(L, -2, (lua_Integer)i + 1);
	}
}

static int dev_tostring(lua_State *L)
{
	struct mbl_dev *d = mbl_checkdev(L, 1);
	const char *n = dev_name(L, d);
	if (!n) {
		lua_pushfstring(L, "moonbox.%s%s", d->cls->name,
				d->mm ? "" : " (not added)");
		return 1;
	}
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	lua_pushfstring(L, "%s (%s", n, d->cls->name);
	luaL_addvalue(&b);
	for (size_t i = 0; i < mb_device_nranges(d->dev); i++) {
		const struct mb_device_range *r = mb_device_range(d->dev, i);
		char s[64];
		snprintf(s, sizeof s, "%s %s 0x%llx-0x%llx", i ? "," : ":",
			 r->space == MB_SPACE_PIO ? "pio" : "mmio",
			 (unsigned long long)r->base,
			 (unsigned long long)(r->base + r->size - 1));
		luaL_addstring(&b, s);
	}
	if (mb_device_irq_line(d->dev) >= 0) {
		lua_pushfstring(L, ", irq %d", mb_device_irq_line(d->dev));
		luaL_addvalue(&b);
	}
	luaL_addchar(&b, ')');
	luaL_pushresult(&b);
	return 1;
}

/* dev:info() -> { name, kind, irq, ranges = { { space, base, size } } } */
static int dev_info(lua_State *L)
{
	struct mbl_dev *d = mbl_checkdev(L, 1);
	struct mb_device *dev = mbl_checkdevice(L, 1);
	lua_createtable(L, 0, 4);
	lua_pushstring(L, mb_device_name(dev));
	lua_setfield(L, -2, "name");
	lua_pushstring(L, d->cls->name);
	lua_setfield(L, -2, "kind");
	if (mb_device_irq_line(dev) >= 0) {
		lua_pushinteger(L, mb_device_irq_line(dev));
		lua_setfield(L, -2, "irq");
	}
	push_ranges(L, dev);
	lua_setfield(L, -2, "ranges");
	return 1;
}

int mbl_dev_state(lua_State *L)
{
	struct mb_device *dev = mbl_checkdevice(L, 1);
	const struct mb_state_desc *desc = mb_device_state_desc(dev);
	if (!desc) {
		lua_newtable(L);
		mbl_isolate_annotate(L, dev);
		return 1;
	}
	void *st = lua_newuserdatauv(L, desc->size, 0); /* collected with L */
	if (mb_device_save(dev, st))
		return mbl_fail(L, "state");
	mbl_push_state(L, desc, st);
	mbl_isolate_annotate(L, dev);
	return 1;
}

int mbl_kernel_state(lua_State *L)
{
	if (mb_device_state_desc(mbl_checkdevice(L, 1)))
		return mbl_dev_state(L);
	lua_createtable(L, 0, 1);
	lua_pushboolean(L, 1);
	lua_setfield(L, -2, "kernel");
	return 1;
}

int mbl_dev_set_state(lua_State *L)
{
	struct mb_device *dev = mbl_checkdevice(L, 1);
	luaL_checktype(L, 2, LUA_TTABLE);
	const struct mb_state_desc *desc = mb_device_state_desc(dev);
	if (!desc)
		return luaL_error(L, "set_state: a %s has no state",
				  mb_device_kind(dev));
	if (!mb_machine_paused(mb_device_machine(dev)))
		return luaL_error(L, "set_state: %s: the machine is running (pause "
				  "it first)", mb_device_name(dev));
	void *st = lua_newuserdatauv(L, desc->size, 0);
	if (mb_device_save(dev, st)) /* fields the table does not name stay */
		return mbl_fail(L, "set_state");
	if (mb_devproc_of(dev)) { /* state() adds these views: not fields */
		lua_newtable(L);
		lua_pushnil(L);
		while (lua_next(L, 2)) {
			const char *k = lua_type(L, -2) == LUA_TSTRING
						? lua_tostring(L, -2) : "";
			if (!strcmp(k, "sandbox") || !strcmp(k, "isolated")) {
				lua_pop(L, 1);
				continue;
			}
			lua_pushvalue(L, -2);
			lua_insert(L, -2);
			lua_rawset(L, -4);
		}
		lua_replace(L, 2);
	}
	mbl_to_state(L, 2, desc, st);
	if (mb_device_load(dev, st))
		return luaL_error(L, "set_state: %s", mb_errmsg());
	lua_settop(L, 1);
	return 1;
}

/* ---- the machine's side ---------------------------------------------------- */

/* m:add(dev): wire it in; returns dev. */
static int l_add(lua_State *L)
{
	struct mbl_machine *mm = mbl_checkmachine(L, 1);
	struct mbl_dev *d = mbl_checkdev(L, 2);
	mbl_live(L, mm);
	if (d->mm)
		return luaL_error(L, "add: this %s is already part of a machine",
				  d->cls->name);
	lua_settop(L, 2);
	mbl_pushopts(L, 2); /* 3: the options, for attach */
	/* With pit = "kernel" KVM models the PIT: nothing to isolate. */
	if (mbl_want_isolate(L, d->cls, 3) &&
	    !(strcmp(d->cls->name, "pit8254") == 0 && mb_machine_kernel_pit(mm->m)))
		mbl_isolate(L, mm, d);
	else
		d->cls->attach(L, mm, d);
	if (d->dev && !d->impl && !mb_devproc_of(d->dev))
		d->impl = mb_device_impl(d->dev);
	d->mm = mm;
	lua_getiuservalue(L, 1, 1);
	lua_pushvalue(L, 2);
	lua_rawseti(L, -2, luaL_len(L, -2) + 1);
	lua_pushvalue(L, 1); /* the device keeps its machine alive */
	lua_setiuservalue(L, 2, 1);
	lua_settop(L, 2);
	return 1;
}

/* m:device(name): the handle m:add returned, or nil. */
static int l_device(lua_State *L)
{
	mbl_live(L, mbl_checkmachine(L, 1));
	const char *name = luaL_checkstring(L, 2);
	lua_getiuservalue(L, 1, 1);
	lua_Integer n = luaL_len(L, -1);
	for (lua_Integer i = 1; i <= n; i++) {
		lua_rawgeti(L, -1, i);
		struct mbl_dev *d = lua_touserdata(L, -1);
		if (d && d->dev && strcmp(mb_device_name(d->dev), name) == 0)
			return 1;
		lua_pop(L, 1);
	}
	lua_pushnil(L);
	return 1;
}

/* m:devices(): the handles, in the order added. */
static int l_devices(lua_State *L)
{
	mbl_live(L, mbl_checkmachine(L, 1));
	lua_getiuservalue(L, 1, 1);
	lua_Integer n = luaL_len(L, -1);
	lua_createtable(L, (int)n, 0);
	for (lua_Integer i = 1; i <= n; i++) {
		lua_rawgeti(L, -2, i);
		lua_rawseti(L, -2, i);
	}
	return 1;
}

void mbl_open_dev(lua_State *L)
{
	mbl_machine_method(L, "add", l_add);
	mbl_machine_method(L, "device", l_device);
	mbl_machine_method(L, "devices", l_devices);
}

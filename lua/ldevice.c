/* mb.device (a device whose registers are Lua functions). */
#include <stdlib.h>
#include <string.h>

#include "lua/lmoonbox.h"

/* ---- mb.device: registers in Lua ---------------------------------------- */

struct luadev {
	struct mbl_machine *mm;
	lua_State *L0;   /* for the registry refs */
	int self;        /* registry ref: the device handle */
	int read, write; /* registry refs to the functions, or LUA_NOREF */
	char name[32];
};

struct access {
	struct luadev *ld;
	uint64_t off;
	void *data;
	unsigned size;
	bool write;
};

/* Runs on the thread that waits in run(), where Lua may be entered. */
static void call_lua(void *arg)
{
	struct access *a = arg;
	struct luadev *ld = a->ld;
	lua_State *L = ld->mm->L;
	if (!L || !ld->mm->m)
		return;
	int top = lua_gettop(L);
	lua_rawgeti(L, LUA_REGISTRYINDEX, a->write ? ld->write : ld->read);
	lua_rawgeti(L, LUA_REGISTRYINDEX, ld->self);
	lua_pushinteger(L, (lua_Integer)a->off);
	lua_pushinteger(L, a->size);
	if (a->write)
		lua_pushinteger(L, (lua_Integer)mb_io_get(a->data, a->size));
	if (lua_pcall(L, a->write ? 4 : 3, 1, 0) != LUA_OK) {
		mb_machine_stop(ld->mm->m, MB_STOP_ERROR, 1, "device %s: %s: %s",
				ld->name, a->write ? "write" : "read",
				lua_tostring(L, -1));
	} else if (!a->write) {
		int isint;
		lua_Integer v = lua_tointegerx(L, -1, &isint);
		if (!isint && !lua_isnil(L, -1))
			mb_machine_stop(ld->mm->m, MB_STOP_ERROR, 1,
					"device %s: read returned %s, not an integer",
					ld->name, luaL_typename(L, -1));
		mb_io_put(a->data, a->size, isint ? (uint64_t)v : ~0ull);
	}
	lua_settop(L, top);
}

static void ld_read(void *dev, uint64_t off, void *data, unsigned size)
{
	struct luadev *ld = dev;
	struct access a = { ld, off, data, size, false };
	memset(data, 0xff, size);
	if (ld->read != LUA_NOREF)
		mb_machine_call_main(ld->mm->m, call_lua, &a);
}

static void ld_write(void *dev, uint64_t off, const void *data, unsigned size)
{
	struct luadev *ld = dev;
	struct access a = { ld, off, (void *)data, size, true };
	if (ld->write != LUA_NOREF)
		mb_machine_call_main(ld->mm->m, call_lua, &a);
}

static const struct mb_io_ops luadev_ops = { ld_read, ld_write };

static void luadev_free(void *p)
{
	struct luadev *ld = p;
	/* The Lua state may be closing: refs die with it, only free C. */
	free(ld);
}

static int luadev_attach(lua_State *L, struct mbl_machine *mm, struct mbl_dev *d)
{
	/* 2: the handle, 3: its options */
	struct luadev *ld = calloc(1, sizeof *ld);
	if (!ld)
		return luaL_error(L, "device: out of memory");
	ld->mm = mm;
	snprintf(ld->name, sizeof ld->name, "%s", mbl_optstr(L, 3, "name", "lua"));
	ld->read = ld->write = LUA_NOREF;
	uint64_t base, size;
	bool pio = lua_getfield(L, 3, "pio") != LUA_TNIL;
	lua_pop(L, 1);
	mbl_checkrange(L, 3, pio ? "pio" : "mmio", &base, &size);
	lua_getfield(L, 3, "read");
	ld->read = lua_isnil(L, -1) ? (lua_pop(L, 1), LUA_NOREF)
				    : luaL_ref(L, LUA_REGISTRYINDEX);
	lua_getfield(L, 3, "write");
	ld->write = lua_isnil(L, -1) ? (lua_pop(L, 1), LUA_NOREF)
				     : luaL_ref(L, LUA_REGISTRYINDEX);
	lua_pushvalue(L, 2);
	ld->self = luaL_ref(L, LUA_REGISTRYINDEX);
	struct mb_machine *m = mm->m;
	if (mb_bus_register(pio ? mb_machine_pio(m) : mb_machine_mmio(m), base,
			    size, &luadev_ops, ld, ld->name)) {
		free(ld);
		return mbl_fail(L, pio ? "pio" : "mmio");
	}
	d->impl = ld;
	mb_machine_on_destroy(m, luadev_free, ld);
	return 0;
}

static const char *const luadev_keys[] = { "name", "pio", "mmio", "read",
					   "write", NULL };
static const struct mbl_class luadev_class = { "device", luadev_keys,
					       luadev_attach, NULL, NULL, 0, NULL };

static int l_device(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	mbl_checkopts(L, 1, "device", luadev_keys);
	int has_pio = lua_getfield(L, 1, "pio") != LUA_TNIL;
	int has_mmio = lua_getfield(L, 1, "mmio") != LUA_TNIL;
	lua_pop(L, 2);
	if (has_pio == has_mmio)
		return luaL_error(L, "device: give exactly one of pio or mmio");
	uint64_t base, size;
	mbl_checkrange(L, 1, has_pio ? "pio" : "mmio", &base, &size);
	if (has_pio && base + size > 0x10000)
		return luaL_error(L, "pio: 0x%I+0x%I is beyond port 0xffff",
				  (lua_Integer)base, (lua_Integer)size);
	for (int i = 0; i < 2; i++) {
		const char *k = i ? "write" : "read";
		int t = lua_getfield(L, 1, k);
		if (t != LUA_TNIL && t != LUA_TFUNCTION)
			return luaL_error(L, "%s: expected a function, got %s", k,
					  luaL_typename(L, -1));
		lua_pop(L, 1);
	}
	mbl_optstr(L, 1, "name", NULL);
	mbl_dev_new(L, &luadev_class);
	return 1;
}

void mbl_open_devices(lua_State *L)
{
	lua_pushcfunction(L, l_device);
	lua_setfield(L, -2, "device");
}

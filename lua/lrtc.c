/* mb.rtc { irq, time, cmos, name }: the MC146818 at 0x70-0x71
 * (moonbox/rtc.h), with rtc:cmos(i[, v]). */
#include <string.h>

#include "lua/lmoonbox.h"

static const char *const keys[] = { "name", "irq", "time", "cmos", NULL };

static void parse(lua_State *L, int idx, void *p)
{
	struct mb_rtc_attach_config *c = p;
	lua_Integer irq = mbl_optint(L, idx, "irq", 8);
	if (irq < 1 || irq > 23)
		luaL_error(L, "irq: %d is not a line (1-23)", (int)irq);
	c->name = mbl_optstr(L, idx, "name", NULL);
	c->irq = (unsigned)irq;
	int t = lua_getfield(L, idx, "time");
	if (t != LUA_TNIL && t != LUA_TNUMBER)
		luaL_error(L, "time: expected Unix seconds, got %s",
			   luaL_typename(L, -1));
	if (t == LUA_TNUMBER) {
		c->set_time = true;
		c->time_ns = (int64_t)(lua_tonumber(L, -1) * 1e9);
	}
	lua_pop(L, 1);
	/* cmos = { [index] = byte, ... } */
	t = lua_getfield(L, idx, "cmos");
	if (t != LUA_TNIL && t != LUA_TTABLE)
		luaL_error(L, "cmos: expected a table { [index] = byte }");
	if (t == LUA_TTABLE) {
		lua_pushnil(L);
		while (lua_next(L, -2)) {
			int ii, iv;
			lua_Integer i = lua_tointegerx(L, -2, &ii);
			lua_Integer v = lua_tointegerx(L, -1, &iv);
			if (!ii || !iv || i < 0 || i > 127 || v < 0 || v > 255)
				luaL_error(L, "cmos: [%s] = %s is not a byte of 0-127",
					   luaL_tolstring(L, -2, NULL),
					   luaL_tolstring(L, -2, NULL));
			c->cmos[i] = (uint8_t)v;
			c->cmos_given[i] = true;
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);
}

static int attach(lua_State *L, struct mbl_machine *mm, struct mbl_dev *d)
{
	if (mb_rtc_attach(mm->m, d->cfg, &d->dev))
		return mbl_fail(L, "rtc");
	return 0;
}

/* An isolated RTC's CMOS is in its process: bytes 0x0e-0x7f through its
 * state (the clock registers below are computed there). */
static int isolated_cmos(lua_State *L)
{
	lua_Integer i = luaL_checkinteger(L, 2);
	if (i < 0x0e || i > 127)
		return luaL_error(L, "cmos: index %d: an isolated rtc gives 0x0e-0x7f "
				  "(the clock registers are computed in its process)",
				  (int)i);
	bool set = !lua_isnoneornil(L, 3);
	lua_Integer nv = set ? luaL_checkinteger(L, 3) : 0;
	if (nv < 0 || nv > 255)
		return luaL_error(L, "cmos: value %d is not a byte", (int)nv);
	lua_settop(L, 1);
	mbl_dev_state(L);
	lua_getfield(L, -1, "cmos");
	size_t n;
	const char *s = lua_tolstring(L, -1, &n);
	if (!s || n != 128)
		return luaL_error(L, "cmos: the device process gave no CMOS");
	if (!set) {
		lua_pushinteger(L, (unsigned char)s[i]);
		return 1;
	}
	char b[128];
	memcpy(b, s, 128);
	b[i] = (char)nv;
	lua_settop(L, 1);
	lua_createtable(L, 0, 1);
	lua_pushlstring(L, b, 128);
	lua_setfield(L, -2, "cmos");
	mbl_dev_set_state(L);
	return 0;
}

/* rtc:cmos(i) reads a byte, rtc:cmos(i, v) writes one. */
static int cmos(lua_State *L)
{
	if (mb_devproc_of(mbl_checkdevice(L, 1)))
		return isolated_cmos(L);
	struct mb_rtc *r = mb_device_impl(mbl_checkdevice(L, 1));
	lua_Integer i = luaL_checkinteger(L, 2);
	uint8_t v;
	if (i < 0 || i > 127)
		return luaL_error(L, "cmos: index %d is not 0-127", (int)i);
	if (lua_isnoneornil(L, 3)) {
		mb_rtc_get_cmos(r, (unsigned)i, &v);
		lua_pushinteger(L, v);
		return 1;
	}
	lua_Integer nv = luaL_checkinteger(L, 3);
	if (nv < 0 || nv > 255)
		return luaL_error(L, "cmos: value %d is not a byte", (int)nv);
	mb_rtc_set_cmos(r, (unsigned)i, (uint8_t)nv);
	return 0;
}

static const luaL_Reg methods[] = { { "cmos", cmos }, { NULL, NULL } };

static const struct mbl_class rtc_class = {
	.name = "rtc", .keys = keys, .attach = attach, .methods = methods,
	.cfg_size = sizeof(struct mb_rtc_attach_config), .parse = parse,
};

static int l_rtc(lua_State *L)
{
	mbl_dev_new(L, &rtc_class);
	return 1;
}

void mbl_open_rtc(lua_State *L)
{
	lua_pushcfunction(L, l_rtc);
	lua_setfield(L, -2, "rtc");
}

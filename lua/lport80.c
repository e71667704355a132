/* mb.port80 { pio | mmio, fill, name } (also mb.null): a C sink that
 * drops writes and reads `fill` bytes (moonbox/port80.h); port 0x80 (POST
 * codes) unless given a range. */
#include "lua/lmoonbox.h"

static const char *const keys[] = { "name", "pio", "mmio", "fill", NULL };

static void parse(lua_State *L, int idx, void *p)
{
	struct mb_null_attach_config *c = p;
	lua_Integer fill = mbl_optint(L, idx, "fill", 0xff);
	if (fill < 0 || fill > 255)
		luaL_error(L, "fill: %d is not a byte", (int)fill);
	bool mmio = lua_getfield(L, idx, "mmio") != LUA_TNIL;
	bool pio = lua_getfield(L, idx, "pio") != LUA_TNIL;
	lua_pop(L, 2);
	if (mmio && pio)
		luaL_error(L, "port80: give at most one of pio or mmio");
	if (mmio || pio) {
		mbl_checkrange(L, idx, mmio ? "mmio" : "pio", &c->base, &c->size);
		c->space = mmio ? MB_SPACE_MMIO : MB_SPACE_PIO;
	}
	c->name = mbl_optstr(L, idx, "name", NULL);
	c->fill_set = true;
	c->fill = (uint8_t)fill;
}

static int attach(lua_State *L, struct mbl_machine *mm, struct mbl_dev *d)
{
	if (mb_null_attach(mm->m, d->cfg, &d->dev))
		return mbl_fail(L, "port80");
	return 0;
}

static const struct mbl_class port80_class = {
	.name = "port80", .keys = keys, .attach = attach,
	.cfg_size = sizeof(struct mb_null_attach_config), .parse = parse,
};

static int l_port80(lua_State *L)
{
	mbl_dev_new(L, &port80_class);
	return 1;
}

void mbl_open_port80(lua_State *L)
{
	lua_pushcfunction(L, l_port80);
	lua_setfield(L, -2, "port80");
	lua_pushcfunction(L, l_port80);
	lua_setfield(L, -2, "null");
}

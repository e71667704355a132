/* mb.debug_exit { port, size, name }: a guest write of v ends run with
 * reason "exit" and exit_code v (moonbox/debug_exit.h). */
#include "lua/lmoonbox.h"

static const char *const keys[] = { "name", "port", "size", NULL };

static void parse(lua_State *L, int idx, void *p)
{
	struct mb_debug_exit_attach_config *c = p;
	uint64_t port = mbl_optsize(L, idx, "port", 0xf4);
	lua_Integer size = mbl_optint(L, idx, "size", 4);
	if (port > 0xffff)
		luaL_error(L, "port: 0x%I is beyond 0xffff", (lua_Integer)port);
	if (port == 0)
		luaL_error(L, "port: 0 is the DMA controller's");
	if (size != 1 && size != 2 && size != 4)
		luaL_error(L, "size: %d is not 1, 2 or 4", (int)size);
	c->name = mbl_optstr(L, idx, "name", NULL);
	c->port = (uint16_t)port;
	c->size = (unsigned)size;
}

static int attach(lua_State *L, struct mbl_machine *mm, struct mbl_dev *d)
{
	if (mb_debug_exit_attach(mm->m, d->cfg, &d->dev))
		return mbl_fail(L, "debug_exit");
	return 0;
}

static const struct mbl_class debug_exit_class = {
	.name = "debug_exit", .keys = keys, .attach = attach,
	.cfg_size = sizeof(struct mb_debug_exit_attach_config), .parse = parse,
};

static int l_debug_exit(lua_State *L)
{
	mbl_dev_new(L, &debug_exit_class);
	return 1;
}

void mbl_open_debug_exit(lua_State *L)
{
	lua_pushcfunction(L, l_debug_exit);
	lua_setfield(L, -2, "debug_exit");
}

/* mb.pit8254 { irq, reinject, name }: the 8254 at 0x40-0x43 and port 0x61
 * (moonbox/pit8254.h); with the kernel PIT state() is { kernel = true }. */
#include "lua/lmoonbox.h"

static const char *const keys[] = { "name", "irq", "reinject", NULL };

static void parse(lua_State *L, int idx, void *p)
{
	struct mb_pit_attach_config *c = p;
	lua_Integer irq = mbl_optint(L, idx, "irq", 0);
	if (irq < 0 || irq > 23)
		luaL_error(L, "irq: %d is not a line (0-23)", (int)irq);
	c->name = mbl_optstr(L, idx, "name", NULL);
	c->irq = (unsigned)irq;
	c->no_reinject = !mbl_optbool(L, idx, "reinject", 1);
}

static int attach(lua_State *L, struct mbl_machine *mm, struct mbl_dev *d)
{
	if (mb_pit_attach(mm->m, d->cfg, &d->dev))
		return mbl_fail(L, "pit8254");
	return 0;
}

static const struct mbl_class pit_class = {
	.name = "pit8254", .keys = keys, .attach = attach,
	.state = mbl_kernel_state, .cfg_size = sizeof(struct mb_pit_attach_config),
	.parse = parse,
};

static int l_pit(lua_State *L)
{
	mbl_dev_new(L, &pit_class);
	return 1;
}

void mbl_open_pit(lua_State *L)
{
	lua_pushcfunction(L, l_pit);
	lua_setfield(L, -2, "pit8254");
}

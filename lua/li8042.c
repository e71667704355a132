/* mb.i8042 { name }: just enough of the keyboard controller for a reset
 * (moonbox/i8042.h): command 0xfe ends run with reason "reset". */
#include "lua/lmoonbox.h"

static const char *const keys[] = { "name", NULL };

static void parse(lua_State *L, int idx, void *p)
{
	struct mb_i8042_attach_config *c = p;
	c->name = mbl_optstr(L, idx, "name", NULL);
}

static int attach(lua_State *L, struct mbl_machine *mm, struct mbl_dev *d)
{
	if (mb_i8042_attach(mm->m, d->cfg, &d->dev))
		return mbl_fail(L, "i8042");
	return 0;
}

static const struct mbl_class i8042_class = {
	.name = "i8042", .keys = keys, .attach = attach,
	.cfg_size = sizeof(struct mb_i8042_attach_config), .parse = parse,
};

static int l_i8042(lua_State *L)
{
	mbl_dev_new(L, &i8042_class);
	return 1;
}

void mbl_open_i8042(lua_State *L)
{
	lua_pushcfunction(L, l_i8042);
	lua_setfield(L, -2, "i8042");
}

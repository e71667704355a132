/* mb.pic8259 { name }: the PC's 8259A pair (moonbox/pic8259.h); with the
 * kernel irqchip it stands for KVM's own, and state() is { kernel = true }. */
#include "lua/lmoonbox.h"

static const char *const keys[] = { "name", NULL };

static void parse(lua_State *L, int idx, void *p)
{
	struct mb_pic_attach_config *c = p;
	c->name = mbl_optstr(L, idx, "name", NULL);
}

static int attach(lua_State *L, struct mbl_machine *mm, struct mbl_dev *d)
{
	if (mb_pic_attach(mm->m, d->cfg, &d->dev))
		return mbl_fail(L, "pic8259");
	return 0;
}

static const struct mbl_class pic_class = {
	.name = "pic8259", .keys = keys, .attach = attach,
	.state = mbl_kernel_state, .cfg_size = sizeof(struct mb_pic_attach_config),
	.parse = parse,
};

static int l_pic(lua_State *L)
{
	mbl_dev_new(L, &pic_class);
	return 1;
}

void mbl_open_pic(lua_State *L)
{
	lua_pushcfunction(L, l_pic);
	lua_setfield(L, -2, "pic8259");
}

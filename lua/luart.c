/* mb.uart16550 { com, port, irq, console, name }: the 16550A UART
 * (moonbox/uart16550.h), with com:output() and com:input(s). */
#include "lua/lmoonbox.h"

struct cfg {
	struct mb_uart_attach_config a;
	struct mb_chr *chr; /* once added: the console, owned by the machine */
};

static const char *const keys[] = { "name", "com", "port", "irq", "console",
				    NULL };

static void parse(lua_State *L, int idx, void *p)
{
	struct cfg *c = p;
	lua_Integer com = mbl_optint(L, idx, "com", 1);
	if (com < 1 || com > 4)
		luaL_error(L, "com: %d is not 1-4", (int)com);
	uint64_t port = mbl_optsize(L, idx, "port", 0);
	if (port > 0xfff8)
		luaL_error(L, "port: 0x%I is beyond 0xfff8", (lua_Integer)port);
	lua_Integer irq = mbl_optint(L, idx, "irq", -1);
	if (irq != -1 && (irq < 0 || irq > 23))
		luaL_error(L, "irq: %d is not a line (0-23)", (int)irq);
	if (irq == 0)
		luaL_error(L, "irq: 0 is the timer's line");
	int t = lua_getfield(L, idx, "console");
	if (t != LUA_TNIL && t != LUA_TSTRING && t != LUA_TTABLE &&
	    t != LUA_TFUNCTION)
		luaL_error(L, "console: expected a string, table or function, got %s",
			   luaL_typename(L, -1));
	lua_pop(L, 1);
	c->a.name = mbl_optstr(L, idx, "name", NULL);
	c->a.com = (unsigned)com;
	c->a.port = (uint16_t)port;
	c->a.irq = irq < 0 ? 0 : (unsigned)irq;
}

static int attach(lua_State *L, struct mbl_machine *mm, struct mbl_dev *d)
{
	struct cfg *c = d->cfg;
	struct mb_uart_attach_config a = c->a;
	a.chr = c->chr = mbl_console(L, mm, 3, "console");
	/* In moonbox-device the console is the VMM's relay (lisolate.c),
	 * whose input carries the VMM's rx verdicts. */
	a.relay = mbl_in_devproc(L) && lua_getfield(L, 3, "console") == LUA_TTABLE;
	lua_pop(L, 1);
	if (mb_uart_attach(mm->m, &a, &d->dev))
		return mbl_fail(L, "uart16550");
	return 0;
}

/* The console backend the device was given (kept by the machine). */
static struct mb_chr *chr_of(lua_State *L)
{
	mbl_checkdevice(L, 1);
	struct mbl_dev *d = mbl_checkdev(L, 1);
	return d->con ? d->con : ((struct cfg *)d->cfg)->chr;
}

static int output(lua_State *L)
{
	return mbl_console_output(L, chr_of(L));
}

static int input(lua_State *L)
{
	return mbl_console_input(L, chr_of(L));
}

static const luaL_Reg methods[] = {
	{ "output", output }, { "input", input }, { NULL, NULL },
};

static const struct mbl_class uart_class = {
	.name = "uart16550", .keys = keys, .attach = attach, .methods = methods,
	.cfg_size = sizeof(struct cfg), .parse = parse,
};

static int l_uart(lua_State *L)
{
	mbl_dev_new(L, &uart_class);
	return 1;
}

void mbl_open_uart(lua_State *L)
{
	lua_pushcfunction(L, l_uart);
	lua_setfield(L, -2, "uart16550");
}

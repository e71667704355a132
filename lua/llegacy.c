/* Lua bindings of the legacy PC devices: mb.pic8259, mb.pit8254,
 * mb.uart16550 (with its consoles), mb.rtc, mb.i8042, mb.port80. */
#include <stdlib.h>
#include <string.h>

#include "lua/lmoonbox.h"
#include "devices/pic8259.h"
#include "devices/pit8254.h"
#include "devices/uart16550.h"

#define SETI(name, v) (lua_pushinteger(L, (lua_Integer)(v)), lua_setfield(L, -2, name))

static struct mbl_dev *attached(lua_State *L)
{
	struct mbl_dev *d = mbl_checkdev(L, 1);
	if (!d->mm || !d->mm->m)
		luaL_error(L, "%s: not part of a running machine (use m:add)",
			   d->cls->name);
	return d;
}

static void reg(lua_State *L, struct mb_bus *bus, uint64_t base, uint64_t len,
		const struct mb_io_ops *ops, void *dev, const char *name)
{
	if (mb_bus_register(bus, base, len, ops, dev, name))
		luaL_error(L, "%s", mb_errmsg());
}

static void irq_line(lua_State *L, struct mb_machine *m, int idx, const char *key,
		     lua_Integer def, struct mb_irq *out)
{
	lua_Integer line = mbl_optint(L, idx, key, def);
	if (line < 0 || mb_machine_irq(m, (unsigned)line, out))
		luaL_error(L, "%s: %d is not an interrupt line of this machine", key,
			   (int)line);
}

/* ---- 8259A pair ---------------------------------------------------------- */

static void pic_notify(void *opaque)
{
	mb_machine_kick_irq(opaque);
}

static void pic_free(void *p)
{
	mb_pic_free(p);
}

static int pic_attach(lua_State *L, struct mbl_machine *mm, struct mbl_dev *d)
{
	struct mb_machine *m = mm->m;
	if (mb_machine_irqchip(m) == MB_IRQCHIP_KERNEL)
		return 0; /* KVM's own PIC pair is already there */
	struct mb_pic_config cfg = { pic_notify, m };
	struct mb_pic *pic = mb_pic_new(&cfg);
	if (!pic)
		return luaL_error(L, "pic8259: out of memory");
	mb_machine_on_destroy(m, pic_free, pic);
	reg(L, mb_machine_pio(m), 0x20, 2, &mb_pic_master_ops, pic, "pic-master");
	reg(L, mb_machine_pio(m), 0xa0, 2, &mb_pic_slave_ops, pic, "pic-slave");
	reg(L, mb_machine_pio(m), 0x4d0, 2, &mb_pic_elcr_ops, pic, "pic-elcr");
	mb_machine_set_intc(m, &mb_pic_intc_ops, pic);
	d->impl = pic;
	return 0;
}

static void pic_chip(lua_State *L, const struct mb_pic_chip_state *c)
{
	lua_createtable(L, 0, 16);
	SETI("irr", c->irr); SETI("isr", c->isr); SETI("imr", c->imr);
	SETI("elcr", c->elcr); SETI("input", c->input);
	SETI("vector_base", c->vector_base); SETI("icw3", c->icw3);
	SETI("init_step", c->init_step); SETI("lowest", c->lowest);
	SETI("ltim", c->ltim); SETI("single", c->single); SETI("aeoi", c->aeoi);
	SETI("sfnm", c->sfnm); SETI("special_mask", c->special_mask);
	SETI("read_isr", c->read_isr); SETI("poll", c->poll);
}

static int pic_state(lua_State *L)
{
	struct mbl_dev *d = attached(L);
	lua_createtable(L, 0, 5);
	if (!d->impl) {
		lua_pushboolean(L, 1);
		lua_setfield(L, -2, "kernel");
		return 1;
	}
	struct mb_pic_state s;
	mb_pic_state(d->impl, &s);
	pic_chip(L, &s.master), lua_setfield(L, -2, "master");
	pic_chip(L, &s.slave), lua_setfield(L, -2, "slave");
	SETI("int_output", s.int_output); SETI("acks", s.acks);
	SETI("spurious", s.spurious);
	return 1;
}

static const char *const pic_keys[] = { NULL };
static const struct mbl_class pic_class = { "pic8259", pic_keys, pic_attach,
					    pic_state, NULL };

static int l_pic(lua_State *L)
{
	mbl_dev_new(L, &pic_class);
	return 1;
}

/* ---- 8254 PIT -------------------------------------------------------------- */

static void pit_free(void *p)
{
	mb_pit_free(p);
}

static int pit_attach(lua_State *L, struct mbl_machine *mm, struct mbl_dev *d)
{
	struct mb_machine *m = mm->m;
	if (mb_machine_kernel_pit(m))
		return 0; /* KVM_CREATE_PIT2 made one */
	struct mb_pit_config cfg = { .clock = mb_machine_clock(m) };
	irq_line(L, m, 3, "irq", 0, &cfg.irq);
	struct mb_pit *pit = mb_pit_new(&cfg);
	if (!pit)
		return luaL_error(L, "pit8254: out of memory");
	mb_machine_on_destroy(m, pit_free, pit);
	reg(L, mb_machine_pio(m), 0x40, 4, &mb_pit_ops, pit, "pit");
	reg(L, mb_machine_pio(m), 0x61, 1, &mb_pit_port61_ops, pit, "port61");
	d->impl = pit;
	return 0;
}

static int pit_state(lua_State *L)
{
	struct mbl_dev *d = attached(L);
	lua_createtable(L, 0, 4);
	if (!d->impl) {
		lua_pushboolean(L, 1);
		lua_setfield(L, -2, "kernel");
		return 1;
	}
	struct mb_pit_state s;
	mb_pit_state(d->impl, &s);
	lua_createtable(L, 3, 0);
	for (int i = 0; i < 3; i++) {
		const struct mb_pit_channel_state *c = &s.ch[i];
		lua_createtable(L, 0, 14);
		SETI("mode", c->mode); SETI("rw", c->rw); SETI("bcd", c->bcd);
		SETI("gate", c->gate); SETI("out", c->out);
		SETI("null_count", c->null_count); SETI("count", c->count);
		SETI("reload", c->reload); SETI("count_latched", c->count_latched);
		SETI("status_latched", c->status_latched); SETI("latch", c->latch);
		SETI("status", c->status);
		lua_rawseti(L, -2, i + 1);
	}
	lua_setfield(L, -2, "channels");
	SETI("port61", s.port61); SETI("irq_level", s.irq_level);
	SETI("irq_edges", s.irq_edges);
	return 1;
}

static const char *const pit_keys[] = { "irq", NULL };
static const struct mbl_class pit_class = { "pit8254", pit_keys, pit_attach,
					    pit_state, NULL };

static int l_pit(lua_State *L)
{
	lua_Integer irq = mbl_optint(L, 1, "irq", 0);
	if (irq < 0 || irq > 23)
		return luaL_error(L, "irq: %d is not a line (0-23)", (int)irq);
	mbl_dev_new(L, &pit_class);
	return 1;
}

/* ---- consoles ----------------------------------------------------------- */

struct luacon {
	struct mbl_machine *mm;
	int fn; /* registry ref */
	const void *buf;
	size_t len;
};

static void luacon_call(void *arg)
{
	struct luacon *c = arg;
	lua_State *L = c->mm->L;
	if (!L || !c->mm->m)
		return;
	lua_rawgeti(L, LUA_REGISTRYINDEX, c->fn);
	lua_pushlstring(L, c->buf, c->len);
	if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
		mb_machine_stop(c->mm->m, MB_STOP_ERROR, 1, "console function: %s",
				lua_tostring(L, -1));
		lua_pop(L, 1);
	}
}

static void luacon_write(void *ctx, const void *buf, size_t len)
{
	struct luacon *c = ctx, call = *c;
	call.buf = buf, call.len = len;
	mb_machine_call_main(c->mm->m, luacon_call, &call);
}

/* console = "stdio" | "null" | "buffer" | { file = } | { socket = } | fn */
struct mb_chr *mbl_console(lua_State *L, struct mbl_machine *mm, int idx,
			   const char *key)
{
	struct mb_machine *m = mm->m;
	struct mb_chr *c = NULL;
	int t = lua_getfield(L, idx, key);
	if (t == LUA_TNIL || t == LUA_TSTRING) {
		const char *s = t == LUA_TNIL ? "null" : lua_tostring(L, -1);
		if (strcmp(s, "stdio") == 0)
			c = mb_chr_stdio(m);
		else if (strcmp(s, "null") == 0)
			c = mb_chr_null(m);
		else if (strcmp(s, "buffer") == 0)
			c = mb_chr_buffer(m);
		else
			luaL_error(L, "%s: \"%s\" is not one of \"stdio\", \"null\", "
				   "\"buffer\", { file = PATH }, { socket = PATH } or a "
				   "function", key, s);
	} else if (t == LUA_TTABLE) {
		static const char *const keys[] = { "file", "socket", NULL };
		mbl_checkopts(L, -1, key, keys);
		const char *f = mbl_optstr(L, -1, "file", NULL);
		const char *s = mbl_optstr(L, -1, "socket", NULL);
		if (!f == !s)
			luaL_error(L, "%s: give one of file or socket", key);
		c = f ? mb_chr_file(m, f) : mb_chr_socket(m, s);
	} else if (t == LUA_TFUNCTION) {
		struct luacon *lc = calloc(1, sizeof *lc);
		if (!lc)
			luaL_error(L, "%s: out of memory", key);
		lc->mm = mm;
		lua_pushvalue(L, -1);
		lc->fn = luaL_ref(L, LUA_REGISTRYINDEX);
		mb_machine_on_destroy(m, free, lc);
		c = mb_chr_func(m, luacon_write, lc);
	} else {
		luaL_error(L, "%s: expected a string, table or function, got %s", key,
			   luaL_typename(L, -1));
	}
	if (!c)
		luaL_error(L, "%s: %s", key, mb_errmsg());
	lua_pop(L, 1);
	return c;
}

/* ---- 16550A UART --------------------------------------------------------- */

struct uart_h {
	struct mb_uart *uart;
	struct mb_chr *chr;
};

static void uart_free(void *p)
{
	struct uart_h *h = p;
	mb_uart_free(h->uart);
	free(h);
}

static const uint16_t com_port[] = { 0x3f8, 0x2f8, 0x3e8, 0x2e8 };
static const uint8_t com_irq[] = { 4, 3, 4, 3 };

static int uart_attach(lua_State *L, struct mbl_machine *mm, struct mbl_dev *d)
{
	struct mb_machine *m = mm->m;
	lua_Integer com = mbl_optint(L, 3, "com", 1);
	uint64_t port = mbl_optsize(L, 3, "port", com_port[com - 1]);
	struct mb_uart_config cfg = { .clock = mb_machine_clock(m) };
	irq_line(L, m, 3, "irq", com_irq[com - 1], &cfg.irq);
	struct uart_h *h = calloc(1, sizeof *h);
	if (!h)
		return luaL_error(L, "uart16550: out of memory");
	cfg.chr = h->chr = mbl_console(L, mm, 3, "console");
	h->uart = mb_uart_new(&cfg);
	if (!h->uart) {
		free(h);
		return luaL_error(L, "uart16550: out of memory");
	}
	mb_machine_on_destroy(m, uart_free, h);
	char name[16];
	snprintf(name, sizeof name, "uart@%x", (unsigned)port);
	reg(L, mb_machine_pio(m), port, 8, &mb_uart_ops, h->uart, name);
	d->impl = h;
	return 0;
}

static int uart_state(lua_State *L)
{
	struct mbl_dev *d = attached(L);
	struct uart_h *h = d->impl;
	struct mb_uart_state s;
	mb_uart_state(h->uart, &s);
	lua_createtable(L, 0, 20);
	SETI("rbr", s.rbr); SETI("ier", s.ier); SETI("iir", s.iir);
	SETI("fcr", s.fcr); SETI("lcr", s.lcr); SETI("mcr", s.mcr);
	SETI("lsr", s.lsr); SETI("msr", s.msr); SETI("scr", s.scr);
	SETI("dll", s.dll); SETI("dlm", s.dlm); SETI("rx_count", s.rx_count);
	SETI("rx_trigger", s.rx_trigger); SETI("thre_pending", s.thre_pending);
	SETI("timeout_pending", s.timeout_pending); SETI("irq_level", s.irq_level);
	SETI("tx_bytes", s.tx_bytes); SETI("rx_bytes", s.rx_bytes);
	SETI("overruns", s.overruns);
	return 1;
}

static int uart_output(lua_State *L)
{
	struct uart_h *h = attached(L)->impl;
	size_t n = mb_chr_buffer_get(h->chr, NULL, 0);
	luaL_Buffer b;
	char *p = luaL_buffinitsize(L, &b, n);
	n = mb_chr_buffer_get(h->chr, p, n); /* may have grown: take what fits */
	luaL_pushresultsize(&b, n);
	return 1;
}

static int uart_input(lua_State *L)
{
	struct uart_h *h = attached(L)->impl;
	size_t len;
	const char *s = luaL_checklstring(L, 2, &len);
	if (mb_chr_input(h->chr, s, len))
		return mbl_fail(L, "input");
	lua_settop(L, 1);
	return 1;
}

static const luaL_Reg uart_methods[] = {
	{ "output", uart_output }, { "input", uart_input }, { NULL, NULL },
};
static const char *const uart_keys[] = { "port", "irq", "console", "com", NULL };
static const struct mbl_class uart_class = { "uart16550", uart_keys, uart_attach,
					     uart_state, uart_methods };

static int l_uart(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	mbl_checkopts(L, 1, "uart16550", uart_keys);
	lua_Integer com = mbl_optint(L, 1, "com", 1);
	if (com < 1 || com > 4)
		return luaL_error(L, "com: %d is not 1-4", (int)com);
	uint64_t port = mbl_optsize(L, 1, "port", com_port[com - 1]);
	if (port > 0xfff8)
		return luaL_error(L, "port: 0x%I is beyond 0xfff8", (lua_Integer)port);
	lua_Integer irq = mbl_optint(L, 1, "irq", com_irq[com - 1]);
	if (irq < 0 || irq > 23)
		return luaL_error(L, "irq: %d is not a line (0-23)", (int)irq);
	int t = lua_getfield(L, 1, "console");
	lua_pop(L, 1);
	if (t != LUA_TNIL && t != LUA_TSTRING && t != LUA_TTABLE && t != LUA_TFUNCTION)
		return luaL_error(L, "console: expected a string, table or function");
	mbl_dev_new(L, &uart_class);
	return 1;
}

void mbl_open_legacy(lua_State *L)
{
	static const luaL_Reg ctors[] = {
		{ "pic8259", l_pic }, { "pit8254", l_pit }, { "uart16550", l_uart },
		{ NULL, NULL },
	};
	luaL_setfuncs(L, ctors, 0);
}

/* Lua bindings of the legacy PC devices: mb.pic8259, mb.pit8254,
 * mb.uart16550 (with its consoles), mb.rtc, mb.i8042, mb.port80. */
#include <stdlib.h>
#include <string.h>

#include "lua/lmoonbox.h"
#include "devices/pic8259.h"
#include "devices/pit8254.h"
#include "devices/rtc.h"
#include "devices/i8042.h"
#include "devices/port80.h"

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
	mb_machine_claim_irq(m, (unsigned)line); /* keep the allocator off it */
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
					    pic_state, NULL, 0, NULL };

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
	/* With moonbox's PIC, no tick is lost to a late timer or busy guest. */
	if (mbl_optbool(L, 3, "reinject", 1) &&
	    mb_machine_irq_on_ack(m, cfg.irq.line, mb_pit_irq_acked, pit) == 0)
		mb_pit_set_reinject(pit, true);
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

static const char *const pit_keys[] = { "irq", "reinject", NULL };
static const struct mbl_class pit_class = { "pit8254", pit_keys, pit_attach,
					    pit_state, NULL, 0, NULL };

static int l_pit(lua_State *L)
{
	lua_Integer irq = mbl_optint(L, 1, "irq", 0);
	if (irq < 0 || irq > 23)
		return luaL_error(L, "irq: %d is not a line (0-23)", (int)irq);
	mbl_dev_new(L, &pit_class);
	return 1;
}

/* ---- MC146818 RTC ---------------------------------------------------------- */

static void rtc_free(void *p)
{
	mb_rtc_free(p);
}

static int rtc_attach(lua_State *L, struct mbl_machine *mm, struct mbl_dev *d)
{
	struct mb_machine *m = mm->m;
	struct mb_rtc_config cfg = { .clock = mb_machine_clock(m),
				     .start_ns = MB_RTC_HOST_TIME };
	irq_line(L, m, 3, "irq", 8, &cfg.irq);
	if (lua_getfield(L, 3, "time") != LUA_TNIL)
		cfg.start_ns = (int64_t)(luaL_checknumber(L, -1) * 1e9);
	lua_pop(L, 1);
	struct mb_rtc *rtc = mb_rtc_new(&cfg);
	if (!rtc)
		return luaL_error(L, "rtc: out of memory");
	mb_machine_on_destroy(m, rtc_free, rtc);
	/* cmos = { [index] = byte, ... } */
	if (lua_getfield(L, 3, "cmos") == LUA_TTABLE) {
		lua_pushnil(L);
		while (lua_next(L, -2)) {
			lua_Integer i = luaL_checkinteger(L, -2), v = luaL_checkinteger(L, -1);
			if (i < 0 || i > 127 || v < 0 || v > 255 ||
			    mb_rtc_set_cmos(rtc, (unsigned)i, (uint8_t)v))
				luaL_error(L, "cmos: [%d] = %d is not a byte of 0-127", (int)i,
					   (int)v);
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);
	reg(L, mb_machine_pio(m), 0x70, 2, &mb_rtc_ops, rtc, "rtc");
	d->impl = rtc;
	return 0;
}

static int rtc_state(lua_State *L)
{
	struct mbl_dev *d = attached(L);
	struct mb_rtc_state s;
	mb_rtc_state(d->impl, &s);
	lua_createtable(L, 0, 20);
	SETI("index", s.index); SETI("nmi_masked", s.nmi_masked);
	SETI("sec", s.sec); SETI("min", s.min); SETI("hour", s.hour);
	SETI("wday", s.wday); SETI("mday", s.mday); SETI("mon", s.mon);
	SETI("year", s.year); SETI("century", s.century);
	SETI("sec_alarm", s.sec_alarm); SETI("min_alarm", s.min_alarm);
	SETI("hour_alarm", s.hour_alarm); SETI("a", s.a); SETI("b", s.b);
	SETI("c", s.c); SETI("d", s.d); SETI("irq_level", s.irq_level);
	SETI("unix_time", s.unix_time);
	return 1;
}

/* rtc:cmos(i) reads a byte, rtc:cmos(i, v) writes one. */
static int rtc_cmos(lua_State *L)
{
	struct mbl_dev *d = attached(L);
	lua_Integer i = luaL_checkinteger(L, 2);
	uint8_t v;
	if (i < 0 || i > 127)
		return luaL_error(L, "cmos: index %d is not 0-127", (int)i);
	if (lua_isnoneornil(L, 3)) {
		mb_rtc_get_cmos(d->impl, (unsigned)i, &v);
		lua_pushinteger(L, v);
		return 1;
	}
	lua_Integer nv = luaL_checkinteger(L, 3);
	if (nv < 0 || nv > 255)
		return luaL_error(L, "cmos: value %d is not a byte", (int)nv);
	mb_rtc_set_cmos(d->impl, (unsigned)i, (uint8_t)nv);
	return 0;
}

static const luaL_Reg rtc_methods[] = { { "cmos", rtc_cmos }, { NULL, NULL } };
static const char *const rtc_keys[] = { "irq", "cmos", "time", NULL };
static const struct mbl_class rtc_class = { "rtc", rtc_keys, rtc_attach,
					    rtc_state, rtc_methods, 0, NULL };

static int l_rtc(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	mbl_checkopts(L, 1, "rtc", rtc_keys);
	int t = lua_getfield(L, 1, "cmos");
	if (t != LUA_TNIL && t != LUA_TTABLE)
		return luaL_error(L, "cmos: expected a table { [index] = byte }");
	t = lua_getfield(L, 1, "time");
	if (t != LUA_TNIL && t != LUA_TNUMBER)
		return luaL_error(L, "time: expected Unix seconds, got %s",
				  luaL_typename(L, -1));
	lua_pop(L, 2);
	mbl_dev_new(L, &rtc_class);
	return 1;
}

/* ---- i8042: just enough for a reset ----------------------------------------- */

static void kbc_reset(void *opaque)
{
	mb_machine_stop(opaque, MB_STOP_RESET, 0, "guest reset (i8042 0xfe)");
}

static void kbc_free(void *p)
{
	mb_i8042_free(p);
}

static int kbc_attach(lua_State *L, struct mbl_machine *mm, struct mbl_dev *d)
{
	struct mb_machine *m = mm->m;
	struct mb_i8042_config cfg = { kbc_reset, m };
	struct mb_i8042 *k = mb_i8042_new(&cfg);
	if (!k)
		return luaL_error(L, "i8042: out of memory");
	mb_machine_on_destroy(m, kbc_free, k);
	reg(L, mb_machine_pio(m), 0x60, 1, &mb_i8042_data_ops, k, "i8042-data");
	reg(L, mb_machine_pio(m), 0x64, 1, &mb_i8042_cmd_ops, k, "i8042-cmd");
	d->impl = k;
	return 0;
}

static int kbc_state(lua_State *L)
{
	struct mb_i8042_state s;
	mb_i8042_state(attached(L)->impl, &s);
	lua_createtable(L, 0, 7);
	SETI("status", s.status); SETI("ctr", s.ctr); SETI("outport", s.outport);
	SETI("obf", s.obf); SETI("out", s.out); SETI("pending", s.pending);
	SETI("resets", s.resets);
	return 1;
}

static const char *const kbc_keys[] = { NULL };
static const struct mbl_class kbc_class = { "i8042", kbc_keys, kbc_attach,
					    kbc_state, NULL, 0, NULL };

static int l_i8042(lua_State *L)
{
	mbl_dev_new(L, &kbc_class);
	return 1;
}

/* ---- port 0x80 and other sinks ------------------------------------------------ */

static void null_free(void *p)
{
	mb_null_free(p);
}

static int null_attach(lua_State *L, struct mbl_machine *mm, struct mbl_dev *d)
{
	struct mb_machine *m = mm->m;
	uint64_t base = 0x80, size = 1;
	bool mmio = lua_getfield(L, 3, "mmio") != LUA_TNIL;
	bool pio = lua_getfield(L, 3, "pio") != LUA_TNIL;
	lua_pop(L, 2);
	if (mmio || pio)
		mbl_checkrange(L, 3, mmio ? "mmio" : "pio", &base, &size);
	struct mb_null *n = mb_null_new((uint8_t)mbl_optint(L, 3, "fill", 0xff));
	if (!n)
		return luaL_error(L, "port80: out of memory");
	mb_machine_on_destroy(m, null_free, n);
	reg(L, mmio ? mb_machine_mmio(m) : mb_machine_pio(m), base, size,
	    &mb_null_ops, n, mbl_optstr(L, 3, "name", "port80"));
	d->impl = n;
	return 0;
}

static int null_state(lua_State *L)
{
	struct mb_null_state s;
	mb_null_state(attached(L)->impl, &s);
	lua_createtable(L, 0, 4);
	SETI("last_write", s.last_write); SETI("reads", s.reads);
	SETI("writes", s.writes); SETI("fill", s.fill);
	return 1;
}

static const char *const null_keys[] = { "pio", "mmio", "fill", "name", NULL };
static const struct mbl_class null_class = { "port80", null_keys, null_attach,
					     null_state, NULL, 0, NULL };

/* mb.port80 {} (port 0x80, POST codes), or any range: a C sink that drops
 * writes and reads `fill` bytes, without the Lua slow path. */
static int l_port80(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	mbl_checkopts(L, 1, "port80", null_keys);
	lua_Integer fill = mbl_optint(L, 1, "fill", 0xff);
	if (fill < 0 || fill > 255)
		return luaL_error(L, "fill: %d is not a byte", (int)fill);
	bool mmio = lua_getfield(L, 1, "mmio") != LUA_TNIL;
	bool pio = lua_getfield(L, 1, "pio") != LUA_TNIL;
	lua_pop(L, 2);
	if (mmio && pio)
		return luaL_error(L, "port80: give at most one of pio or mmio");
	uint64_t b, sz;
	if (mmio || pio)
		mbl_checkrange(L, 1, mmio ? "mmio" : "pio", &b, &sz);
	mbl_dev_new(L, &null_class);
	return 1;
}

void mbl_open_legacy(lua_State *L)
{
	static const luaL_Reg ctors[] = {
		{ "pic8259", l_pic }, { "pit8254", l_pit }, 
		{ "rtc", l_rtc },     { "i8042", l_i8042 }, { "port80", l_port80 },
		{ "null", l_port80 }, { NULL, NULL },
	};
	luaL_setfuncs(L, ctors, 0);
}

/* mb.device (a device whose registers are Lua functions). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "lua/lmoonbox.h"

/* ---- mb.device: registers in Lua ----------------------------------------
 *
 * A real device of its machine (kind "device", default names device,
 * device#2...), whose registers, timers and DMA are Lua. Every callback
 * (read, write, a timer's fn) gets the device handle as self and runs in
 * the Lua world of the thread blocked in m:run/m:wait/m:pause, through
 * mb_machine_call_main: never directly on a vCPU or the event loop. So
 * callbacks run only while a thread waits in the machine; a timer that
 * expires while nobody waits (before the first run, between runs) holds
 * the event loop until someone does, and its fn runs then.
 *
 * The Lua values (the handle, read, write, armed timers) live in the
 * machine's refs table (mbl_ref_set), never in registry references. */

struct luadev {
	struct mbl_machine *mm;
	struct mb_device *dev;
	const struct mb_clock *clk;
	struct mb_irq irq;
	bool has_irq, has_read, has_write;
	pthread_mutex_t lock; /* timers: armed, gen, next (loop vs. Lua) */
	struct ltimer *timers; /* every timer made, reused once released */
};

/* A timer's C half, owned by the device (the event loop may still hold
 * it when its Lua handle is gone). gen tells reuses apart. */
struct ltimer {
	struct luadev *ld;
	struct mb_timer *t;
	uint64_t period, next; /* ns; period 0: one shot */
	unsigned gen;
	bool armed, in_use;
	struct ltimer *link;
};

/* The Lua timer handle: the C half, its generation, and user values
 * 1 = fn, 2 = the device handle. */
struct ltimer_handle {
	struct ltimer *lt;
	unsigned gen;
};
#define TIMER_MT "moonbox.device_timer"

struct cfg {
	bool pio;
	uint64_t base, size;
	int irq; /* -1: none */
	const char *name;
};

struct access {
	struct luadev *ld;
	uint64_t off;
	void *data;
	unsigned size;
	bool write;
};

/* Push the device handle and one of its functions ("read"/"write"), from
 * the machine's refs: false when the machine is going away. */
static bool push_fn(lua_State *L, struct luadev *ld, const char *which)
{
	if (mbl_ref_push(L, ld->mm, ld) != LUA_TTABLE) {
		lua_pop(L, 1);
		return false;
	}
	lua_getfield(L, -1, which);
	lua_rawgeti(L, -2, 1);
	lua_remove(L, -3);
	return lua_isfunction(L, -2);
}

/* Runs in the Lua world (mb_machine_call_main). */
static void call_lua(void *arg)
{
	struct access *a = arg;
	struct luadev *ld = a->ld;
	lua_State *L = ld->mm->L;
	if (!L || !ld->mm->m)
		return;
	int top = lua_gettop(L);
	if (!push_fn(L, ld, a->write ? "write" : "read")) {
		lua_settop(L, top);
		return;
	}
	lua_pushinteger(L, (lua_Integer)a->off);
	lua_pushinteger(L, a->size);
	if (a->write)
		lua_pushinteger(L, (lua_Integer)mb_io_get(a->data, a->size));
	if (lua_pcall(L, a->write ? 4 : 3, 1, 0) != LUA_OK) {
		mb_machine_stop(ld->mm->m, MB_STOP_ERROR, 1, "device %s: %s: %s",
				mb_device_name(ld->dev), a->write ? "write" : "read",
				lua_tostring(L, -1));
	} else if (!a->write) {
		int isint;
		lua_Integer v = lua_tointegerx(L, -1, &isint);
		if (!isint && !lua_isnil(L, -1))
			mb_machine_stop(ld->mm->m, MB_STOP_ERROR, 1,
					"device %s: read returned %s, not an integer",
					mb_device_name(ld->dev), luaL_typename(L, -1));
		mb_io_put(a->data, a->size, isint ? (uint64_t)v : ~0ull);
	}
	lua_settop(L, top);
}

static void ld_read(void *dev, uint64_t off, void *data, unsigned size)
{
	struct luadev *ld = dev;
	struct access a = { ld, off, data, size, false };
	memset(data, 0xff, size);
	if (ld->has_read)
		mb_machine_call_main(mb_device_machine(ld->dev), call_lua, &a);
}

static void ld_write(void *dev, uint64_t off, const void *data, unsigned size)
{
	struct luadev *ld = dev;
	struct access a = { ld, off, (void *)data, size, true };
	if (ld->has_write)
		mb_machine_call_main(mb_device_machine(ld->dev), call_lua, &a);
}

static const struct mb_io_ops luadev_io = { ld_read, ld_write };

/* With the machine: the event loop has stopped, no callback is running.
 * The Lua state may be closing: only C is freed here. */
static void luadev_free(void *p)
{
	struct luadev *ld = p;
	for (struct ltimer *t = ld->timers, *n; t; t = n) {
		n = t->link;
		ld->clk->timer_free(t->t);
		free(t);
	}
	pthread_mutex_destroy(&ld->lock);
	free(ld);
}

static const struct mb_device_ops luadev_ops = { .kind = "device",
						 .free = luadev_free };

static int luadev_attach(lua_State *L, struct mbl_machine *mm, struct mbl_dev *d)
{
	/* 2: the handle, 3: its options */
	const struct cfg *c = d->cfg;
	struct luadev *ld = calloc(1, sizeof *ld);
	if (!ld)
		return luaL_error(L, "device: out of memory");
	ld->mm = mm;
	ld->clk = mb_machine_clock(mm->m);
	pthread_mutex_init(&ld->lock, NULL);
	/* refs[ld] = { handle, read = fn, write = fn }, before any access */
	lua_createtable(L, 1, 2);
	lua_pushvalue(L, 2);
	lua_rawseti(L, -2, 1);
	ld->has_read = lua_getfield(L, 3, "read") == LUA_TFUNCTION;
	lua_setfield(L, -2, "read");
	ld->has_write = lua_getfield(L, 3, "write") == LUA_TFUNCTION;
	lua_setfield(L, -2, "write");
	struct mb_device *dev;
	if (mb_device_new(mm->m, c->name, "device", &luadev_ops, ld, &dev))
		return mbl_fail(L, "device"); /* ld freed by ops->free */
	ld->dev = dev;
	/* The line before the range: no access sees the device without it. */
	const char *step = "irq";
	int rc = 0;
	if (c->irq >= 0 && !(rc = mb_device_irq(dev, c->irq, &ld->irq)))
		ld->has_irq = true;
	if (!rc) {
		step = c->pio ? "pio" : "mmio";
		rc = mb_device_map(dev, c->pio ? MB_SPACE_PIO : MB_SPACE_MMIO,
				   c->base, c->size, &luadev_io, ld);
	}
	if (rc) {
		char msg[256];
		snprintf(msg, sizeof msg, "%s", mb_errmsg());
		mb_device_remove(dev);
		return luaL_error(L, "%s: %s", step, msg);
	}
	mbl_ref_set(L, mm, ld, -1);
	lua_pop(L, 1);
	d->dev = dev;
	d->impl = ld;
	return 0;
}

/* The device behind self (argument 1), added to a live machine. */
static struct luadev *checkld(lua_State *L)
{
	mbl_checkdevice(L, 1);
	return mbl_checkdev(L, 1)->impl;
}

/* self:irq(level): drive the device's line (true/false or 1/0). */
static int ld_irq(lua_State *L)
{
	struct luadev *ld = checkld(L);
	int level;
	if (lua_isboolean(L, 2)) {
		level = lua_toboolean(L, 2);
	} else {
		lua_Integer v = luaL_checkinteger(L, 2);
		if (v != 0 && v != 1)
			return luaL_error(L, "irq: level %d is not 0 or 1", (int)v);
		level = (int)v;
	}
	if (!ld->has_irq)
		return luaL_error(L, "irq: device %s has no line (give irq = N)",
				  mb_device_name(ld->dev));
	mb_irq_set(&ld->irq, level);
	lua_settop(L, 1);
	return 1;
}

/* self:pulse(): raise and lower the line (an edge). */
static int ld_pulse(lua_State *L)
{
	struct luadev *ld = checkld(L);
	if (!ld->has_irq)
		return luaL_error(L, "pulse: device %s has no line (give irq = N)",
				  mb_device_name(ld->dev));
	mb_irq_pulse(&ld->irq);
	lua_settop(L, 1);
	return 1;
}

struct hexbuf {
	char s[20];
};

static struct hexbuf hex(uint64_t v)
{
	struct hexbuf b;
	snprintf(b.s, sizeof b.s, "%llx", (unsigned long long)v);
	return b;
}

/* self:read(gpa, n) -> string: n bytes of guest memory (DMA). */
static int ld_mem_read(lua_State *L)
{
	struct luadev *ld = checkld(L);
	uint64_t gpa = (uint64_t)luaL_checkinteger(L, 2);
	lua_Integer n = luaL_checkinteger(L, 3);
	if (n < 0 || n > (1 << 30))
		return luaL_error(L, "read: length %I is not 0-1G", n);
	luaL_Buffer b;
	char *p = luaL_buffinitsize(L, &b, (size_t)n);
	struct mb_mem *mem = mb_machine_mem(mb_device_machine(ld->dev));
	if (n && mb_mem_read(mem, gpa, p, (size_t)n))
		return luaL_error(L, "read: gpa 0x%s, length %I: not guest RAM",
				  hex(gpa).s, n);
	luaL_pushresultsize(&b, (size_t)n);
	return 1;
}

/* self:write(gpa, s): copy s into guest memory (DMA); returns self. */
static int ld_mem_write(lua_State *L)
{
	struct luadev *ld = checkld(L);
	uint64_t gpa = (uint64_t)luaL_checkinteger(L, 2);
	size_t n;
	const char *s = luaL_checklstring(L, 3, &n);
	struct mb_mem *mem = mb_machine_mem(mb_device_machine(ld->dev));
	if (n && mb_mem_write(mem, gpa, s, n))
		return luaL_error(L, "write: gpa 0x%s, length %I: not writable guest "
				  "RAM", hex(gpa).s, (lua_Integer)n);
	lua_settop(L, 1);
	return 1;
}

/* ---- timers ---- */

struct fire {
	struct ltimer *lt;
	unsigned gen;
};

/* In the Lua world: call the timer's fn(self). */
static void timer_call(void *arg)
{
	struct fire *f = arg;
	struct ltimer *lt = f->lt;
	struct luadev *ld = lt->ld;
	lua_State *L = ld->mm->L;
	if (!L || !ld->mm->m)
		return;
	pthread_mutex_lock(&ld->lock);
	bool live = lt->armed && lt->gen == f->gen;
	bool once = lt->period == 0;
	if (live && once)
		lt->armed = false;
	pthread_mutex_unlock(&ld->lock);
	if (!live)
		return;
	int top = lua_gettop(L);
	if (mbl_ref_push(L, ld->mm, lt) != LUA_TUSERDATA) {
		lua_settop(L, top);
		return;
	}
	if (once) { /* fired: the handle lives on only if the script keeps it */
		lua_pushnil(L);
		mbl_ref_set(L, ld->mm, lt, -1);
		lua_pop(L, 1);
	}
	lua_getiuservalue(L, -1, 1);
	lua_getiuservalue(L, -2, 2);
	if (lua_pcall(L, 1, 0, 0) != LUA_OK)
		mb_machine_stop(ld->mm->m, MB_STOP_ERROR, 1, "device %s: timer: %s",
				mb_device_name(ld->dev), lua_tostring(L, -1));
	lua_settop(L, top);
}

/* On the event loop: hand over to the Lua world, then re-arm a periodic
 * timer the callback did not cancel. Missed periods are skipped. */
static void timer_expired(void *opaque)
{
	struct ltimer *lt = opaque;
	struct luadev *ld = lt->ld;
	struct mb_machine *m = mb_device_machine(ld->dev);
	const struct mb_clock *clk = ld->clk;
	pthread_mutex_lock(&ld->lock);
	struct fire f = { lt, lt->gen };
	bool armed = lt->armed;
	pthread_mutex_unlock(&ld->lock);
	if (!armed)
		return;
	mb_machine_call_main(m, timer_call, &f);
	pthread_mutex_lock(&ld->lock);
	if (lt->armed && lt->gen == f.gen && lt->period) {
		uint64_t now = clk->now(clk);
		lt->next += lt->period;
		if (lt->next <= now)
			lt->next = now + lt->period;
		clk->timer_mod(lt->t, lt->next);
	}
	pthread_mutex_unlock(&ld->lock);
}

static void timer_stop(struct ltimer *lt)
{
	const struct mb_clock *clk = lt->ld->clk;
	pthread_mutex_lock(&lt->ld->lock);
	lt->armed = false;
	clk->timer_mod(lt->t, 0);
	pthread_mutex_unlock(&lt->ld->lock);
}

/* The timer handle's C half while its machine lives, else NULL. */
static struct ltimer *timer_of(lua_State *L, struct ltimer_handle *h)
{
	lua_getiuservalue(L, 1, 2);
	struct mbl_dev *d = lua_touserdata(L, -1);
	lua_pop(L, 1);
	if (!d || !d->mm || !d->mm->m || !h->lt || h->lt->gen != h->gen)
		return NULL;
	return h->lt;
}

/* t:cancel(): the timer will not fire again. */
static int timer_cancel(lua_State *L)
{
	struct ltimer_handle *h = luaL_checkudata(L, 1, TIMER_MT);
	struct ltimer *lt = timer_of(L, h);
	if (lt) {
		timer_stop(lt);
		lua_pushnil(L);
		mbl_ref_set(L, lt->ld->mm, lt, -1);
		lua_pop(L, 1);
	}
	return 0;
}

/* Collected (so neither armed nor referenced): its C half is free again. */
static int timer_gc(lua_State *L)
{
	struct ltimer_handle *h = luaL_checkudata(L, 1, TIMER_MT);
	struct ltimer *lt = timer_of(L, h);
	if (lt) {
		timer_stop(lt);
		lt->in_use = false;
	}
	h->lt = NULL;
	return 0;
}

static int timer_tostring(lua_State *L)
{
	struct ltimer_handle *h = luaL_checkudata(L, 1, TIMER_MT);
	struct ltimer *lt = timer_of(L, h);
	lua_pushfstring(L, "moonbox.device_timer (%s)",
			lt && lt->armed ? (lt->period ? "periodic" : "armed")
					: "idle");
	return 1;
}

static struct ltimer *timer_get(lua_State *L, struct luadev *ld)
{
	for (struct ltimer *t = ld->timers; t; t = t->link)
		if (!t->in_use)
			return t;
	const struct mb_clock *clk = ld->clk;
	struct ltimer *t = calloc(1, sizeof *t);
	if (!t || !(t->t = clk->timer_new(clk, timer_expired, t))) {
		free(t);
		luaL_error(L, "timer: out of memory or file descriptors");
	}
	t->ld = ld;
	t->link = ld->timers;
	ld->timers = t;
	return t;
}

/* self:after(seconds, fn) / self:every(seconds, fn) -> timer */
static int add_timer(lua_State *L, bool periodic)
{
	struct luadev *ld = checkld(L);
	const char *what = periodic ? "every" : "after";
	lua_Number s = luaL_checknumber(L, 2);
	luaL_checktype(L, 3, LUA_TFUNCTION);
	if (!(s >= 0 && s < 1e9) || (periodic && s < 1e-6))
		return luaL_error(L, "%s: %f is not a delay in seconds (%s)", what,
				  (double)s, periodic ? "at least 1e-6" : ">= 0");
	struct ltimer_handle *h = lua_newuserdatauv(L, sizeof *h, 2);
	h->lt = NULL;
	if (luaL_newmetatable(L, TIMER_MT)) {
		static const luaL_Reg meta[] = {
			{ "__gc", timer_gc }, { "__tostring", timer_tostring },
			{ NULL, NULL } };
		static const luaL_Reg methods[] = { { "cancel", timer_cancel },
						    { NULL, NULL } };
		luaL_setfuncs(L, meta, 0);
		luaL_newlib(L, methods);
		lua_setfield(L, -2, "__index");
	}
	lua_setmetatable(L, -2);
	lua_pushvalue(L, 3);
	lua_setiuservalue(L, -2, 1);
	lua_pushvalue(L, 1);
	lua_setiuservalue(L, -2, 2);
	struct ltimer *lt = timer_get(L, ld);
	const struct mb_clock *clk = ld->clk;
	mbl_ref_set(L, ld->mm, lt, -1); /* armed: kept with the machine */
	pthread_mutex_lock(&ld->lock);
	lt->in_use = true;
	lt->gen++;
	h->lt = lt, h->gen = lt->gen;
	lt->period = periodic ? (uint64_t)(s * 1e9) : 0;
	lt->next = clk->now(clk) + (uint64_t)(s * 1e9);
	lt->armed = true;
	clk->timer_mod(lt->t, lt->next);
	pthread_mutex_unlock(&ld->lock);
	return 1;
}

static int ld_after(lua_State *L)
{
	return add_timer(L, false);
}

static int ld_every(lua_State *L)
{
	return add_timer(L, true);
}

static const luaL_Reg luadev_methods[] = {
	{ "irq", ld_irq },        { "pulse", ld_pulse },
	{ "read", ld_mem_read },  { "write", ld_mem_write },
	{ "after", ld_after },    { "every", ld_every },
	{ NULL, NULL },
};

static const char *const luadev_keys[] = { "name", "pio", "mmio", "read",
					   "write", "irq", NULL };

static void luadev_parse(lua_State *L, int idx, void *p)
{
	struct cfg *c = p;
	int has_pio = lua_getfield(L, idx, "pio") != LUA_TNIL;
	int has_mmio = lua_getfield(L, idx, "mmio") != LUA_TNIL;
	lua_pop(L, 2);
	if (has_pio == has_mmio)
		luaL_error(L, "device: give exactly one of pio or mmio");
	c->pio = has_pio;
	mbl_checkrange(L, idx, has_pio ? "pio" : "mmio", &c->base, &c->size);
	if (has_pio && c->base + c->size > 0x10000)
		luaL_error(L, "pio: 0x%I+0x%I is beyond port 0xffff",
			   (lua_Integer)c->base, (lua_Integer)c->size);
	for (int i = 0; i < 2; i++) {
		const char *k = i ? "write" : "read";
		int t = lua_getfield(L, idx, k);
		if (t != LUA_TNIL && t != LUA_TFUNCTION)
			luaL_error(L, "%s: expected a function, got %s", k,
				   luaL_typename(L, -1));
		lua_pop(L, 1);
	}
	lua_Integer irq = mbl_optint(L, idx, "irq", -1);
	if (irq != -1 && (irq < 0 || irq > 23))
		luaL_error(L, "irq: %d is not a line (0-23)", (int)irq);
	c->irq = (int)irq;
	c->name = mbl_optstr(L, idx, "name", NULL);
}

static const struct mbl_class luadev_class = {
	.name = "device", .keys = luadev_keys, .attach = luadev_attach,
	.methods = luadev_methods, .cfg_size = sizeof(struct cfg),
	.parse = luadev_parse,
};

static int l_device(lua_State *L)
{
	mbl_dev_new(L, &luadev_class);
	return 1;
}

void mbl_open_devices(lua_State *L)
{
	lua_pushcfunction(L, l_device);
	lua_setfield(L, -2, "device");
}

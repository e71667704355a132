/* mb.device (a device whose registers are Lua functions). */
#include <pthread.h>
#include <stdio.h>
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
 * machine's refs table (mbl_ref_set), never in registry references.
 *
 * isolate = true (docs/devproc.md, "Lua devices"): the VMM sends the
 * module's text (source, or module's file read here) to a device process,
 * whose mb.device loads it with lmodule.c in an environment of its own;
 * there the callbacks run on whichever thread of the process met them
 * (a channel, its event loop), one at a time under mbl_module_lock, each
 * with a fresh instruction budget. The VMM's handle has no Lua of its
 * own: its irq/pulse/read/write/after/every refuse. */

struct luadev {
	struct mbl_machine *mm;
	struct mb_device *dev;
	const struct mb_clock *clk;
	struct mb_irq irq;
	bool has_irq, has_read, has_write;
	bool iso;      /* a module inside a device process */
	lua_State *L;  /* iso: the process's state (its main thread) */
	lua_Integer instructions; /* iso: its limits */
	uint64_t memory;
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
	bool module; /* inside a device process: source is the module */
	lua_Integer instructions; /* per call */
	uint64_t memory; /* the module's Lua memory */
};
#define MODULE_INSTRUCTIONS 100000000
#define MODULE_MEMORY (64u << 20)

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

/* Run fn in the device's Lua world: the script's (through the waiting
 * thread) or, isolated, the process's own state, under its lock. */
static void in_lua(struct luadev *ld, void (*fn)(void *), void *arg)
{
	if (!ld->iso) {
		mb_machine_call_main(mb_device_machine(ld->dev), fn, arg);
		return;
	}
	mbl_module_lock();
	fn(arg);
	mbl_module_unlock();
}

static lua_State *world(struct luadev *ld)
{
	return ld->iso ? ld->L : ld->mm->L;
}

/* A protected call into the device's Lua (nargs on the stack after the
 * function): isolated, with a fresh budget; out of memory ends there. */
static int call(struct luadev *ld, lua_State *L, int nargs, int nres,
		const char *what)
{
	if (ld->iso)
		mbl_module_enter(what);
	int st = lua_pcall(L, nargs, nres, 0);
	if (st != LUA_OK && ld->iso)
		mbl_module_failed(L, st, what);
	return st;
}

/* Runs in the Lua world (in_lua). */
static void call_lua(void *arg)
{
	struct access *a = arg;
	struct luadev *ld = a->ld;
	lua_State *L = world(ld);
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
	if (call(ld, L, a->write ? 4 : 3, 1, a->write ? "write" : "read") != LUA_OK) {
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
		in_lua(ld, call_lua, &a);
}

static void ld_write(void *dev, uint64_t off, const void *data, unsigned size)
{
	struct luadev *ld = dev;
	struct access a = { ld, off, (void *)data, size, true };
	if (ld->has_write)
		in_lua(ld, call_lua, &a);
}

static const struct mb_io_ops luadev_io = { ld_read, ld_write };

/* The isolated device built in this process, its module not loaded yet
 * (one device per device process). */
static struct luadev *pending;

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
	/* Isolated: the functions are the module's, loaded once the process
	 * is confined (mbl_module_start); until then the device has none. */
	if (c->module) {
		lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
		ld->L = lua_tothread(L, -1);
		lua_pop(L, 1);
		ld->iso = true;
		ld->instructions = c->instructions;
		ld->memory = c->memory;
	}
	/* refs[ld] = { handle, read = fn, write = fn }, before any access */
	lua_createtable(L, 1, 2);
	lua_pushvalue(L, 2);
	lua_rawseti(L, -2, 1);
	if (!c->module) {
		ld->has_read = lua_getfield(L, 3, "read") == LUA_TFUNCTION;
		lua_setfield(L, -2, "read");
		ld->has_write = lua_getfield(L, 3, "write") == LUA_TFUNCTION;
		lua_setfield(L, -2, "write");
	}
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
	if (ld->iso)
		pending = ld;
	return 0;
}

/* Inside a device process, once it is confined (moonbox-device calls it
 * under mbl_module_lock, before it serves an access): load the module of
 * the device built, take its read and write, and call its init(self). */
int mbl_module_start(lua_State *L)
{
	struct luadev *ld = pending;
	if (!ld)
		return 0;
	pending = NULL;
	mbl_module_limits(L, ld->instructions, (size_t)ld->memory);
	if (mbl_ref_push(L, ld->mm, ld) != LUA_TTABLE)
		return luaL_error(L, "module: the device is gone");
	int refs = lua_gettop(L);
	lua_rawgeti(L, refs, 1);
	mbl_pushopts(L, refs + 1);
	int opts = lua_gettop(L);
	lua_getfield(L, opts, "module");
	const char *name = lua_isstring(L, -1) ? lua_tostring(L, -1) : "source";
	size_t len;
	lua_getfield(L, opts, "source");
	const char *src = lua_tolstring(L, -1, &len);
	if (!src)
		return luaL_error(L, "module %s: no source", name);
	lua_getfield(L, opts, "args");
	mbl_module_load(L, src, len, name, -1);
	int fns = lua_gettop(L);
	lua_getfield(L, fns, "read");
	lua_setfield(L, refs, "read");
	lua_getfield(L, fns, "write");
	lua_setfield(L, refs, "write");
	pthread_mutex_lock(&ld->lock);
	ld->has_read = lua_getfield(L, fns, "read") == LUA_TFUNCTION;
	ld->has_write = lua_getfield(L, fns, "write") == LUA_TFUNCTION;
	pthread_mutex_unlock(&ld->lock);
	lua_pop(L, 2);
	if (lua_getfield(L, fns, "init") == LUA_TFUNCTION) {
		lua_pushvalue(L, refs + 1);
		if (call(ld, L, 1, 0, "init") != LUA_OK)
			return luaL_error(L, "module %s: init: %s", name, lua_tostring(L, -1));
	}
	return 0;
}

/* The device behind self (argument 1), added to a live machine. */
static struct luadev *checkld(lua_State *L)
{
	struct mb_device *dev = mbl_checkdevice(L, 1);
	struct luadev *ld = mbl_checkdev(L, 1)->impl;
	if (!ld) { /* isolated: the VMM's proxy has no Lua */
		lua_Debug ar;
		const char *fn = lua_getstack(L, 0, &ar) && lua_getinfo(L, "n", &ar) &&
				 ar.name ? ar.name : "method";
		luaL_error(L, "%s: device %s is isolated: its module does that "
			   "(self:%s inside it, in the device's own Lua state)",
			   fn, mb_device_name(dev), fn);
	}
	return ld;
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
	lua_State *L = world(ld);
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
	if (call(ld, L, 1, 0, "a timer") != LUA_OK)
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
	const struct mb_clock *clk = ld->clk;
	pthread_mutex_lock(&ld->lock);
	struct fire f = { lt, lt->gen };
	bool armed = lt->armed;
	pthread_mutex_unlock(&ld->lock);
	if (!armed)
		return;
	in_lua(ld, timer_call, &f);
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
					   "write", "irq", "module", "source",
					   "args", "limits", NULL };

/* limits = { instructions = N, memory = SIZE } of an isolated module. */
static void parse_limits(lua_State *L, int idx, struct cfg *c)
{
	static const char *const keys[] = { "instructions", "memory", NULL };
	c->instructions = MODULE_INSTRUCTIONS;
	c->memory = MODULE_MEMORY;
	int t = lua_getfield(L, idx, "limits");
	if (t == LUA_TNIL) {
		lua_pop(L, 1);
		return;
	}
	if (t != LUA_TTABLE)
		luaL_error(L, "limits: expected { instructions = , memory = }, got %s",
			   lua_typename(L, t));
	mbl_checkopts(L, -1, "limits", keys);
	if (lua_getfield(L, -1, "instructions") != LUA_TNIL) {
		int isint;
		lua_Integer n = lua_tointegerx(L, -1, &isint);
		if (!isint && lua_type(L, -1) == LUA_TNUMBER &&
		    lua_tonumber(L, -1) >= 1000 && lua_tonumber(L, -1) < 9e18)
			n = (lua_Integer)lua_tonumber(L, -1), isint = 1;
		if (!isint || n < 1000)
			luaL_error(L, "limits.instructions: %s is not a count of at "
				   "least 1000", luaL_tolstring(L, -1, NULL));
		c->instructions = n;
	}
	lua_pop(L, 1);
	if (lua_getfield(L, -1, "memory") != LUA_TNIL) {
		c->memory = mbl_tosize(L, -1, "limits.memory");
		if (c->memory < (64u << 10))
			luaL_error(L, "limits.memory: %s is below 64K",
				   luaL_tolstring(L, -1, NULL));
	}
	lua_pop(L, 2);
}

/* The module options: inside a device process source is the module (the
 * VMM read module's file); in the VMM exactly one of source and module
 * is given with isolate = true, checked to be text Lua accepts, and the
 * script's own functions are refused. Without isolate: none of them. */
static void parse_module(lua_State *L, int idx, struct cfg *c)
{
	static const char *const mkeys[] = { "module", "source", "args", "limits",
					     NULL };
	bool devproc = mbl_in_devproc(L);
	lua_getfield(L, idx, "isolate");
	bool iso = lua_toboolean(L, -1) || devproc;
	lua_pop(L, 1);
	if (!iso) {
		for (const char *const *k = mkeys; *k; k++) {
			if (lua_getfield(L, idx, *k) != LUA_TNIL)
				luaL_error(L, "%s: a module runs in a device process "
					   "(give isolate = true)", *k);
			lua_pop(L, 1);
		}
		return;
	}
	for (int i = 0; i < 2 && !devproc; i++) {
		const char *k = i ? "write" : "read";
		if (lua_getfield(L, idx, k) != LUA_TNIL)
			luaL_error(L, "%s: an isolated device's functions are its "
				   "module's (source = or module =): it runs in a Lua "
				   "state of its own, without the script's upvalues", k);
		lua_pop(L, 1);
	}
	int ts = lua_getfield(L, idx, "source");
	int tm = lua_getfield(L, idx, "module");
	if ((ts != LUA_TNIL && ts != LUA_TSTRING) || (tm != LUA_TNIL && tm != LUA_TSTRING))
		luaL_error(L, "%s: expected a string, got %s",
			   ts != LUA_TNIL && ts != LUA_TSTRING ? "source" : "module",
			   lua_typename(L, ts != LUA_TNIL && ts != LUA_TSTRING ? ts : tm));
	if (devproc ? ts == LUA_TNIL : (ts == LUA_TNIL) == (tm == LUA_TNIL))
		luaL_error(L, "source: an isolated Lua device needs exactly one of "
			   "module = \"file.lua\" or source = \"...\"");
	if (!devproc) { /* syntax errors now, not in the process */
		const char *name;
		if (tm == LUA_TSTRING) {
			name = lua_tostring(L, -1);
			mbl_module_read(L, name);
		} else {
			name = "source";
			lua_pushvalue(L, -2);
		}
		size_t len;
		const char *src = lua_tolstring(L, -1, &len);
		if (len > MBL_MODULE_MAX)
			luaL_error(L, "source: %d bytes, at most %d (a module crosses "
				   "in one CREATE message)", (int)len, MBL_MODULE_MAX);
		char chunk[80];
		snprintf(chunk, sizeof chunk, "=%s", name);
		if (luaL_loadbufferx(L, src, len, chunk, "t") != LUA_OK)
			luaL_error(L, "%s: %s", tm == LUA_TSTRING ? "module" : "source",
				   lua_tostring(L, -1));
		lua_pop(L, 2);
	}
	lua_pop(L, 2);
	int ta = lua_getfield(L, idx, "args");
	if (ta != LUA_TNIL && ta != LUA_TTABLE)
		luaL_error(L, "args: expected a table of scalars, got %s",
			   lua_typename(L, ta));
	lua_pop(L, 1);
	parse_limits(L, idx, c);
	c->module = devproc;
}

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
	parse_module(L, idx, c);
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

/* m:tap and m:trace: Lua on the bus-tap engine (moonbox/tap.h).
 *
 *   local t = m:tap { pio = 0x3f8 | { base, size }, mmio = ..., access = "rw",
 *                     fn = function(ev) ... end }
 *   local tr = m:trace { pio = ..., mmio = ..., access, file = PATH | fn = f }
 *   t:count()  t:remove()
 *
 * A tap's fn sees ev = { space, addr, size, write, value, cpu, count } and
 * returns nil (go on), an integer (the value the device gets, or the guest
 * reads) or false (drop a write). A trace's fn sees the same event and its
 * return is ignored; with file, C writes one line per access and Lua never
 * runs. Functions run in the Lua world of the thread waiting in m:run,
 * the vCPU that made the access held until they return (as mb.device's
 * functions do). An error in one ends the run with reason "error". */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua/lmoonbox.h"

#define MBL_TAP "moonbox.tap"

struct ltap {
	struct mbl_machine *mm;
	bool trace;
	FILE *f;               /* a trace to a file */
	pthread_mutex_t flock; /* its lines, from any vCPU */
};

struct handle {
	struct mbl_machine *mm;
	struct ltap *t; /* valid while the machine lives */
	int id;
	bool removed;
};

struct call {
	struct ltap *t;
	struct mb_tap_event *ev;
	enum mb_tap_verdict verdict;
};

static void ltap_free(void *p)
{
	struct ltap *t = p;
	if (t->f)
		fclose(t->f);
	pthread_mutex_destroy(&t->flock);
	free(t);
}

static const char *space_name(enum mb_space s)
{
	return s == MB_SPACE_PIO ? "pio" : "mmio";
}

/* In the Lua world (mb_machine_call_main). */
static void call_lua(void *arg)
{
	struct call *c = arg;
	struct mbl_machine *mm = c->t->mm;
	lua_State *L = mm->L;
	if (!L || !mm->m)
		return;
	int top = lua_gettop(L);
	if (mbl_ref_push(L, mm, c->t) != LUA_TFUNCTION) {
		lua_settop(L, top);
		return;
	}
	const struct mb_tap_event *ev = c->ev;
	lua_createtable(L, 0, 7);
	lua_pushstring(L, space_name(ev->space));
	lua_setfield(L, -2, "space");
	lua_pushinteger(L, (lua_Integer)ev->addr);
	lua_setfield(L, -2, "addr");
	lua_pushinteger(L, ev->size);
	lua_setfield(L, -2, "size");
	lua_pushboolean(L, ev->write);
	lua_setfield(L, -2, "write");
	lua_pushinteger(L, (lua_Integer)ev->value);
	lua_setfield(L, -2, "value");
	lua_pushinteger(L, ev->cpu);
	lua_setfield(L, -2, "cpu");
	lua_pushinteger(L, (lua_Integer)ev->count);
	lua_setfield(L, -2, "count");
	const char *what = c->t->trace ? "trace" : "tap";
	if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
		mb_machine_stop(mm->m, MB_STOP_ERROR, 1, "%s fn at %s 0x%" PRIx64
				": %s", what, space_name(ev->space), ev->addr,
				lua_tostring(L, -1));
	} else if (!c->t->trace) {
		int isint;
		lua_Integer v = lua_tointegerx(L, -1, &isint);
		if (isint)
			c->ev->value = (uint64_t)v;
		else if (lua_isboolean(L, -1) && !lua_toboolean(L, -1))
			c->verdict = MB_TAP_DROP;
		else if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
			mb_machine_stop(mm->m, MB_STOP_ERROR, 1, "tap fn at %s 0x%"
					PRIx64 " returned %s: expected nil, an "
					"integer or false", space_name(ev->space),
					ev->addr, luaL_typename(L, -1));
	}
	lua_settop(L, top);
}

/* On the vCPU thread. */
static enum mb_tap_verdict on_access(void *ctx, struct mb_tap_event *ev)
{
	struct ltap *t = ctx;
	if (t->f) {
		struct mb_machine *m = t->mm->m;
		const struct mb_clock *clk = m ? mb_machine_clock(m) : NULL;
		uint64_t now = clk ? clk->now(clk) : 0;
		pthread_mutex_lock(&t->flock);
		fprintf(t->f, "%" PRIu64 " cpu%u %s %c 0x%" PRIx64 "/%u 0x%" PRIx64 "\n",
			now, ev->cpu, space_name(ev->space), ev->write ? 'w' : 'r',
			ev->addr, ev->size, ev->value);
		pthread_mutex_unlock(&t->flock);
		return MB_TAP_PASS;
	}
	struct call c = { .t = t, .ev = ev, .verdict = MB_TAP_PASS };
	if (t->mm->m)
		mb_machine_call_main(t->mm->m, call_lua, &c);
	return c.verdict;
}

/* pio = / mmio = : a number (one port or one byte) or { base, size }. */
static bool where_at(lua_State *L, int idx, const char *key, uint64_t *base,
		     uint64_t *len)
{
	int t = lua_getfield(L, idx, key);
	lua_pop(L, 1);
	if (t == LUA_TNIL)
		return false;
	if (t == LUA_TTABLE)
		mbl_checkrange(L, idx, key, base, len);
	else {
		*base = mbl_optsize(L, idx, key, 0);
		*len = 1;
	}
	return true;
}

static bool where(lua_State *L, const char *key, uint64_t *base, uint64_t *len)
{
	return where_at(L, 2, key, base, len);
}

/* ---- m:wait_for { io = { pio | mmio, access, value } } ------------------ */

struct mbl_io_wait {
	struct mb_machine *m;
	bool has_value, hit;
	uint64_t value;
	struct mb_tap_event ev;
};

static enum mb_tap_verdict wait_access(void *ctx, struct mb_tap_event *ev)
{
	struct mbl_io_wait *w = ctx;
	if (w->hit || (w->has_value && ev->value != w->value))
		return MB_TAP_PASS;
	w->hit = true;
	w->ev = *ev;
	/* the access completes; the vCPU stops after its instruction */
	mb_machine_stop(w->m, MB_STOP_IO, 0, "%s %s at 0x%" PRIx64 "/%u: 0x%" PRIx64,
			space_name(ev->space), ev->write ? "write" : "read",
			ev->addr, ev->size, ev->value);
	return MB_TAP_PASS;
}

int mbl_tap_waiter(lua_State *L, struct mbl_machine *mm, int idx,
		   struct mbl_io_wait **out)
{
	static const char *const keys[] = { "pio", "mmio", "access", "value", NULL };
	static const char *const access_names[] = { "read", "write", "rw", NULL };
	idx = lua_absindex(L, idx);
	struct mb_machine *m = mbl_live(L, mm);
	if (!lua_istable(L, idx))
		return luaL_error(L, "io: expected a table { pio | mmio, access, value }");
	mbl_checkopts(L, idx, "io", keys);
	uint64_t base = 0, len = 0;
	bool pio = where_at(L, idx, "pio", &base, &len);
	bool mmio = where_at(L, idx, "mmio", &base, &len);
	if (pio == mmio)
		return luaL_error(L, "io: give one of pio or mmio");
	unsigned access = (unsigned)mbl_checkenum(L, idx, "access", "rw",
						  access_names) + 1;
	struct mbl_io_wait *w = calloc(1, sizeof *w);
	if (!w)
		return luaL_error(L, "io: out of memory");
	w->m = m;
	if (lua_getfield(L, idx, "value") != LUA_TNIL) {
		if (!lua_isinteger(L, -1)) {
			free(w);
			return luaL_error(L, "io.value: expected an integer, got %s",
					  luaL_typename(L, -1));
		}
		w->has_value = true;
		w->value = (uint64_t)lua_tointeger(L, -1);
	}
	lua_pop(L, 1);
	int id;
	if (mb_tap_add(m, pio ? MB_SPACE_PIO : MB_SPACE_MMIO, base, len, access,
		       wait_access, w, free, &id)) {
		free(w);
		return mbl_fail(L, "io");
	}
	*out = w;
	return id;
}

bool mbl_tap_waiter_hit(lua_State *L, struct mbl_io_wait *w)
{
	if (!w->hit)
		return false;
	lua_createtable(L, 0, 6);
	lua_pushstring(L, space_name(w->ev.space));
	lua_setfield(L, -2, "space");
	lua_pushinteger(L, (lua_Integer)w->ev.addr);
	lua_setfield(L, -2, "addr");
	lua_pushinteger(L, w->ev.size);
	lua_setfield(L, -2, "size");
	lua_pushboolean(L, w->ev.write);
	lua_setfield(L, -2, "write");
	lua_pushinteger(L, (lua_Integer)w->ev.value);
	lua_setfield(L, -2, "value");
	lua_pushinteger(L, w->ev.cpu);
	lua_setfield(L, -2, "cpu");
	return true;
}

static int add(lua_State *L, bool trace)
{
	static const char *const tap_keys[] = { "pio", "mmio", "access", "fn", NULL };
	static const char *const trace_keys[] = { "pio", "mmio", "access", "fn",
						  "file", NULL };
	static const char *const access_names[] = { "read", "write", "rw", NULL };
	const char *what = trace ? "trace" : "tap";
	struct mbl_machine *mm = mbl_checkmachine(L, 1);
	struct mb_machine *m = mbl_live(L, mm);
	luaL_checktype(L, 2, LUA_TTABLE);
	mbl_checkopts(L, 2, what, trace ? trace_keys : tap_keys);
	uint64_t base = 0, len = 0;
	bool pio = where(L, "pio", &base, &len);
	bool mmio = where(L, "mmio", &base, &len);
	if (pio == mmio)
		return luaL_error(L, "%s: give one of pio or mmio", what);
	unsigned access = (unsigned)mbl_checkenum(L, 2, "access", "rw",
						  access_names) + 1;
	int fnt = lua_getfield(L, 2, "fn");
	lua_pop(L, 1);
	const char *file = trace ? mbl_optstr(L, 2, "file", NULL) : NULL;
	if (fnt != LUA_TNIL && fnt != LUA_TFUNCTION)
		return luaL_error(L, "fn: expected a function, got %s",
				  lua_typename(L, fnt));
	if (trace && (fnt == LUA_TNIL) == (file == NULL))
		return luaL_error(L, "trace: give one of fn or file");
	if (!trace && fnt == LUA_TNIL)
		return luaL_error(L, "fn: missing (the tap's function)");

	struct ltap *t = calloc(1, sizeof *t);
	if (!t)
		return luaL_error(L, "%s: out of memory", what);
	t->mm = mm;
	t->trace = trace;
	pthread_mutex_init(&t->flock, NULL);
	if (file && !(t->f = fopen(file, "we"))) {
		ltap_free(t);
		return luaL_error(L, "file: cannot open %s for writing", file);
	}
	if (t->f)
		setvbuf(t->f, NULL, _IOLBF, 0); /* whole lines, readable at once */
	int id;
	if (mb_tap_add(m, pio ? MB_SPACE_PIO : MB_SPACE_MMIO, base, len, access,
		       on_access, t, ltap_free, &id)) {
		ltap_free(t);
		return mbl_fail(L, what);
	}
	if (fnt == LUA_TFUNCTION) {
		lua_getfield(L, 2, "fn");
		mbl_ref_set(L, mm, t, -1);
		lua_pop(L, 1);
	}
	struct handle *h = lua_newuserdatauv(L, sizeof *h, 1);
	*h = (struct handle){ .mm = mm, .t = t, .id = id };
	lua_pushvalue(L, 1);
	lua_setiuservalue(L, -2, 1);
	luaL_setmetatable(L, MBL_TAP);
	return 1;
}

static int l_tap(lua_State *L)
{
	return add(L, false);
}

static int l_trace(lua_State *L)
{
	return add(L, true);
}

static int h_count(lua_State *L)
{
	struct handle *h = luaL_checkudata(L, 1, MBL_TAP);
	struct mb_machine *m = mbl_live(L, h->mm);
	int64_t n = mb_tap_count(m, h->id);
	if (n < 0)
		return mbl_fail(L, "tap");
	lua_pushinteger(L, (lua_Integer)n);
	return 1;
}

static int h_remove(lua_State *L)
{
	struct handle *h = luaL_checkudata(L, 1, MBL_TAP);
	if (h->removed || !h->mm->m)
		return 0;
	if (mb_tap_remove(h->mm->m, h->id))
		return mbl_fail(L, "tap");
	h->removed = true;
	lua_pushnil(L);
	mbl_ref_set(L, h->mm, h->t, -1); /* the fn can go */
	lua_pop(L, 1);
	if (h->t->f) /* the trace is complete: let the reader see it all */
		fflush(h->t->f);
	return 0;
}

static int h_tostring(lua_State *L)
{
	struct handle *h = luaL_checkudata(L, 1, MBL_TAP);
	lua_pushfstring(L, "%s %d%s", h->t && h->mm->m && h->t->trace ? "trace" : "tap",
			h->id, h->removed ? " (removed)" : "");
	return 1;
}

static const luaL_Reg methods[] = {
	{ "count", h_count }, { "remove", h_remove }, { "stop", h_remove },
	{ NULL, NULL },
};

void mbl_open_tap(lua_State *L)
{
	if (luaL_newmetatable(L, MBL_TAP)) {
		luaL_newlib(L, methods);
		lua_setfield(L, -2, "__index");
		lua_pushcfunction(L, h_tostring);
		lua_setfield(L, -2, "__tostring");
	}
	lua_pop(L, 1);
	mbl_machine_method(L, "tap", l_tap);
	mbl_machine_method(L, "trace", l_trace);
}

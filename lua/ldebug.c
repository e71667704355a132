/* m:breakpoint and m:watch, their handles, and what m:run does when one of
 * them stops the machine: call its function on this (the script's) thread
 * with every vCPU stopped, and go on when it returns "continue". */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "lua/lmoonbox.h"
#include "moonbox/debug.h"

#define MBL_BP "moonbox.breakpoint"
#define MBL_WP "moonbox.watchpoint"

/* A handle: user value 1 its machine, 2 its function (or nil), 3 its
 * when condition (or nil). The machine's refs map the C object to the
 * handle, which keeps the handle alive as long as the breakpoint is set.
 * With a condition, count and once are kept here (hits where it held),
 * not by the engine, which counts every hit. */
struct mbl_bp {
	struct mbl_machine *mm;
	struct mb_bp *bp;
	struct mb_wp *wp;
	uint64_t when_hits;
	unsigned count;
	bool once;
	bool panic; /* m:catch { panic = true }: a breakpoint on panic() */
};

static char hit_key; /* refs: the ev table of the hit that ended run */

static struct mbl_bp *checkbp(lua_State *L, int idx)
{
	struct mbl_bp *b = luaL_testudata(L, idx, MBL_BP);
	return b ? b : luaL_checkudata(L, idx, MBL_WP);
}

static struct mbl_bp *new_handle(lua_State *L, int midx, int fidx,
				 const char *meta)
{
	struct mbl_bp *b = lua_newuserdatauv(L, sizeof *b, 3);
	memset(b, 0, sizeof *b);
	b->mm = mbl_checkmachine(L, midx);
	luaL_setmetatable(L, meta);
	lua_pushvalue(L, midx);
	lua_setiuservalue(L, -2, 1);
	lua_pushvalue(L, fidx);
	lua_setiuservalue(L, -2, 2);
	return b;
}

static const void *key_of(struct mbl_bp *b)
{
	return b->bp ? (const void *)b->bp : (const void *)b->wp;
}

/* when = function(ev) ... end, or a Lua expression over ev and regs (the
 * stopped vCPU's registers): "regs.rcx == 3". Pushes a function or nil. */
static void check_when(lua_State *L, int t)
{
	int ty = lua_getfield(L, t, "when");
	if (ty == LUA_TNIL || ty == LUA_TFUNCTION)
		return;
	if (ty != LUA_TSTRING)
		luaL_error(L, "when: expected a function or an expression, got %s",
			   luaL_typename(L, -1));
	const char *e = lua_tostring(L, -1);
	lua_pushfstring(L, "local ev = ...; local regs = ev.cpu:regs(); return (%s)", e);
	if (luaL_loadbuffer(L, lua_tostring(L, -1), lua_rawlen(L, -1), "=when"))
		luaL_error(L, "when: \"%s\" is not an expression: %s", e,
			   lua_tostring(L, -1));
	lua_replace(L, -3);
	lua_pop(L, 1);
}

/* Attach the when condition on top (or nil) to handle b at -2 and take
 * count/once into Lua's hands when there is one. */
static void set_when(lua_State *L, struct mbl_bp *b, unsigned *count, bool *once)
{
	if (!lua_isnil(L, -1)) {
		b->count = *count, b->once = *once;
		*count = 0, *once = false;
	}
	lua_setiuservalue(L, -2, 3);
}

static void check_fn(lua_State *L, int t)
{
	lua_getfield(L, t, "fn");
	if (!lua_isnil(L, -1) && !lua_isfunction(L, -1))
		luaL_error(L, "fn: expected a function, got %s", luaL_typename(L, -1));
}

/* m:breakpoint { at, fn, kind = "auto"|"hw"|"sw", count, once, cpu, when } */
static int l_breakpoint(lua_State *L)
{
	static const char *const keys[] = { "at", "fn", "kind", "count", "once",
					    "cpu", "when", NULL };
	static const char *const kinds[] = { "auto", "hw", "sw", NULL };
	struct mbl_machine *mm = mbl_checkmachine(L, 1);
	struct mb_machine *m = mbl_live(L, mm);
	luaL_checktype(L, 2, LUA_TTABLE);
	lua_settop(L, 2);
	mbl_checkopts(L, 2, "breakpoint", keys);
	struct mb_bp_config c = { 0 };
	if (lua_getfield(L, 2, "at") == LUA_TNIL)
		return luaL_error(L, "at: missing (the address to break at)");
	c.addr = mbl_checkaddr_sym(L, mm, 3, "at", &c.phys);
	lua_pop(L, 1);
	c.kind = (enum mb_bp_kind)mbl_checkenum(L, 2, "kind", "auto", kinds);
	lua_Integer count = mbl_optint(L, 2, "count", 0);
	if (count < 0 || count > 0xffffffffll)
		return luaL_error(L, "count: %d is not a hit count", (int)count);
	c.count = (unsigned)count;
	c.once = mbl_optbool(L, 2, "once", 0);
	lua_Integer cpu = mbl_optint(L, 2, "cpu", 0);
	if (cpu < 0 || cpu >= (lua_Integer)mb_machine_cpus(m))
		return luaL_error(L, "cpu: %d does not exist", (int)cpu);
	c.cpu = (unsigned)cpu;
	check_fn(L, 2); /* at 3 */
	check_when(L, 2); /* at 4 */
	struct mbl_bp *b = new_handle(L, 1, 3, MBL_BP);
	lua_pushvalue(L, 4);
	set_when(L, b, &c.count, &c.once);
	if (mb_debug_break(m, &c, &b->bp))
		return mbl_fail(L, "breakpoint");
	mbl_ref_set(L, mm, b->bp, -1);
	return 1;
}

/* m:catch { vector = N, cpu, kind, fn } -> a breakpoint on the handler
 * the IDT of cpu names for N now; m:catch { triple_fault = true|false }
 * -> true: a triple fault ends the run with reason "catch". */
static int l_catch(lua_State *L)
{
	static const char *const keys[] = { "vector", "triple_fault", "panic", "cpu",
					    "kind", "fn", NULL };
	struct mbl_machine *mm = mbl_checkmachine(L, 1);
	struct mb_machine *m = mbl_live(L, mm);
	luaL_checktype(L, 2, LUA_TTABLE);
	lua_settop(L, 2);
	mbl_checkopts(L, 2, "catch", keys);
	bool vec = lua_getfield(L, 2, "vector") != LUA_TNIL;
	bool tf = lua_getfield(L, 2, "triple_fault") != LUA_TNIL;
	bool pn = lua_getfield(L, 2, "panic") != LUA_TNIL;
	lua_pop(L, 3);
	if (vec + tf + pn != 1)
		return luaL_error(L, "catch: expected one of vector, triple_fault or panic");
	if (pn) {
		/* A breakpoint on the kernel's panic() (symbols needed: m:symbols
		 * of the vmlinux); a stop reports ev.catch = "panic" and the
		 * format panic was given as ev.panic. */
		if (!mbl_optbool(L, 2, "panic", 0))
			return luaL_error(L, "panic: expected true");
		lua_createtable(L, 0, 4);
		lua_pushliteral(L, "panic");
		lua_setfield(L, -2, "at");
		lua_getfield(L, 2, "cpu");
		lua_setfield(L, -2, "cpu");
		lua_getfield(L, 2, "kind");
		lua_setfield(L, -2, "kind");
		lua_getfield(L, 2, "fn");
		lua_setfield(L, -2, "fn");
		lua_replace(L, 2);
		l_breakpoint(L);
		checkbp(L, -1)->panic = true;
		return 1;
	}
	if (tf) {
		if (mb_debug_catch_triple(m, mbl_optbool(L, 2, "triple_fault", 0)))
			return mbl_fail(L, "catch");
		lua_pushboolean(L, 1);
		return 1;
	}
	lua_Integer v = mbl_optint(L, 2, "vector", 0);
	lua_Integer cpu = mbl_optint(L, 2, "cpu", 0);
	if (v < 0 || v > 255)
		return luaL_error(L, "vector: %d is not 0-255", (int)v);
	if (cpu < 0 || cpu >= (lua_Integer)mb_machine_cpus(m))
		return luaL_error(L, "cpu: %d does not exist", (int)cpu);
	if (!mb_machine_paused(m))
		return luaL_error(L, "catch: pause the machine first");
	uint64_t at;
	if (mb_debug_idt_handler(m, (unsigned)cpu, (unsigned)v, &at))
		return mbl_fail(L, "catch");
	/* the same as m:breakpoint { at = handler, cpu, kind, fn } */
	lua_createtable(L, 0, 4);
	lua_pushinteger(L, (lua_Integer)at);
	lua_setfield(L, -2, "at");
	lua_pushinteger(L, cpu);
	lua_setfield(L, -2, "cpu");
	lua_getfield(L, 2, "kind");
	lua_setfield(L, -2, "kind");
	lua_getfield(L, 2, "fn");
	lua_setfield(L, -2, "fn");
	lua_replace(L, 2);
	return l_breakpoint(L);
}

/* m:watch { addr, len, access = "w", fn, cpu } */
static int l_watch(lua_State *L)
{
	static const char *const keys[] = { "addr", "len", "access", "fn", "cpu", "when",
					    NULL };
	static const char *const acc[] = { "w", "r", "rw", NULL };
	struct mbl_machine *mm = mbl_checkmachine(L, 1);
	struct mb_machine *m = mbl_live(L, mm);
	luaL_checktype(L, 2, LUA_TTABLE);
	lua_settop(L, 2);
	mbl_checkopts(L, 2, "watch", keys);
	bool phys;
	if (lua_getfield(L, 2, "addr") == LUA_TNIL)
		return luaL_error(L, "addr: missing (the address to watch)");
	uint64_t addr = mbl_checkaddr_sym(L, mm, 3, "addr", &phys);
	lua_pop(L, 1);
	uint64_t len = mbl_optsize(L, 2, "len", 1);
	int access = mbl_checkenum(L, 2, "access", "w", acc);
	lua_Integer cpu = mbl_optint(L, 2, "cpu", 0);
	if (cpu < 0 || cpu >= (lua_Integer)mb_machine_cpus(m))
		return luaL_error(L, "cpu: %d does not exist", (int)cpu);
	if (len == 0 || len > 4096)
		return luaL_error(L, "len: %I is not between 1 and 4096",
				  (lua_Integer)len);
	check_fn(L, 2); /* at 3 */
	check_when(L, 2); /* at 4 */
	uint64_t gpa = addr;
	if (!phys) {
		struct mb_paging p;
		struct mb_walk w;
		if (mb_vcpu_paging(m, (unsigned)cpu, &p))
			return mbl_fail(L, "watch");
		if (mb_pagewalk(mb_machine_mem(m), &p, addr, &w)) {
			char why[200];
			mb_walk_explain(&w, why, sizeof why);
			return luaL_error(L, "addr: 0x%I does not translate: %s",
					  (lua_Integer)addr, why);
		}
		gpa = w.gpa;
	}
	struct mbl_bp *b = new_handle(L, 1, 3, MBL_WP);
	unsigned nocount = 0;
	bool noonce = false;
	lua_pushvalue(L, 4);
	set_when(L, b, &nocount, &noonce);
	if (mb_debug_watch(m, gpa, len, access != 0, access != 1, &b->wp))
		return mbl_fail(L, "watch");
	mbl_ref_set(L, mm, b->wp, -1);
	return 1;
}

static int h_remove(lua_State *L)
{
	struct mbl_bp *b = checkbp(L, 1);
	if (!key_of(b) || !b->mm->m)
		return 0; /* removed already, or the machine is closed */
	struct mb_machine *m = b->mm->m;
	const void *key = key_of(b);
	int rc = b->bp ? mb_debug_unbreak(m, b->bp) : mb_debug_unwatch(m, b->wp);
	if (rc)
		return mbl_fail(L, "remove");
	lua_pushnil(L);
	mbl_ref_set(L, b->mm, key, -1);
	lua_pop(L, 1);
	b->bp = NULL, b->wp = NULL;
	return 0;
}

static int h_hits(lua_State *L)
{
	struct mbl_bp *b = checkbp(L, 1);
	if (!b->mm->m || !key_of(b))
		lua_pushinteger(L, 0);
	else
		lua_pushinteger(L, (lua_Integer)(b->bp ? mb_bp_hits(b->bp)
						       : mb_wp_hits(b->wp)));
	return 1;
}

static int h_tostring(lua_State *L)
{
	struct mbl_bp *b = checkbp(L, 1);
	if (!b->mm->m || !key_of(b))
		lua_pushstring(L, "moonbox breakpoint (removed)");
	else if (b->bp) {
		char sym[280] = "", name[256];
		if (mbl_sym_format(L, b->mm, mb_bp_addr(b->bp), name, sizeof name,
				   NULL))
			snprintf(sym, sizeof sym, " <%s>", name);
		char at[24];
		snprintf(at, sizeof at, "0x%" PRIx64, mb_bp_addr(b->bp));
		lua_pushfstring(L, "moonbox.breakpoint %s at %s%s (%I hits)%s",
				mb_bp_kind(b->bp) == MB_BP_HW ? "hw" : "sw", at, sym,
				(lua_Integer)mb_bp_hits(b->bp),
				mb_bp_removed(b->bp) ? ", done" : "");
	} else
		lua_pushfstring(L, "moonbox.watchpoint (%I hits)",
				(lua_Integer)mb_wp_hits(b->wp));
	return 1;
}

static const luaL_Reg handle_methods[] = {
	{ "remove", h_remove }, { "hits", h_hits }, { NULL, NULL },
};

/* ---- stops ------------------------------------------------------------ */

static void push_ev(lua_State *L, int midx, const struct mb_debug_hit *h,
		    int handle)
{
	lua_createtable(L, 0, 8);
	mbl_push_cpu(L, midx, h->cpu);
	lua_setfield(L, -2, "cpu");
	if (handle) {
		lua_pushvalue(L, handle);
		lua_setfield(L, -2, h->bp ? "breakpoint" : "watchpoint");
	}
	lua_pushinteger(L, (lua_Integer)h->addr), lua_setfield(L, -2, "addr");
	lua_pushinteger(L, (lua_Integer)h->rip), lua_setfield(L, -2, "rip");
	char sym[256];
	if (mbl_sym_format(L, mbl_checkmachine(L, midx), h->rip, sym, sizeof sym,
			   NULL))
		lua_pushstring(L, sym), lua_setfield(L, -2, "sym");
	struct mbl_bp *b = handle ? checkbp(L, handle) : NULL;
	struct mb_machine *m = mbl_checkmachine(L, midx)->m;
	struct mb_regs regs;
	if (b && b->panic && m && mb_vcpu_get_regs(m, h->cpu, &regs) == 0) {
		/* panic(fmt, ...): the format, first argument (SysV: rdi) */
		char msg[257];
		size_t n = 0;
		while (n < sizeof msg - 1 &&
		       mb_vcpu_read_virt(m, h->cpu, regs.rdi + n, msg + n, 1) == 0 &&
		       msg[n])
			n++;
		lua_pushstring(L, "panic"), lua_setfield(L, -2, "catch");
		lua_pushlstring(L, msg, n), lua_setfield(L, -2, "panic");
	}
	if (h->wp) {
		lua_pushinteger(L, h->len), lua_setfield(L, -2, "len");
		lua_pushinteger(L, (lua_Integer)h->data), lua_setfield(L, -2, "value");
	}
}

bool mbl_debug_continue(lua_State *L, int midx, struct mb_result *r)
{
	if (r->reason != MB_STOP_BREAKPOINT && r->reason != MB_STOP_WATCHPOINT)
		return false;
	midx = lua_absindex(L, midx);
	struct mbl_machine *mm = mbl_checkmachine(L, midx);
	struct mb_debug_hit h;
	bool stop = false, any = false;
	int top = lua_gettop(L);
	while (mm->m && mb_debug_take_hit_of(mm->m, 0, &h)) { /* gdb takes its own */
		any = true;
		const void *key = h.bp ? (const void *)h.bp : (const void *)h.wp;
		int handle = 0;
		if (mbl_ref_push(L, mm, key) == LUA_TUSERDATA)
			handle = lua_gettop(L);
		push_ev(L, midx, &h, handle);
		int ev = lua_gettop(L);
		bool go = false, done = false;
		struct mbl_bp *b = handle ? checkbp(L, handle) : NULL;
		if (b && lua_getiuservalue(L, handle, 3) == LUA_TFUNCTION) {
			/* the condition first: false goes on at once, uncounted */
			lua_pushvalue(L, ev);
			lua_call(L, 1, 1);
			if (!lua_toboolean(L, -1))
				go = true;
			else if (b->count > 1 && ++b->when_hits < b->count)
				go = true;
			else
				done = b->once;
		}
		if (!go && handle && lua_getiuservalue(L, handle, 2) == LUA_TFUNCTION) {
			lua_pushvalue(L, ev);
			lua_call(L, 1, 1);
			go = lua_type(L, -1) == LUA_TSTRING &&
			     strcmp(lua_tostring(L, -1), "continue") == 0;
		}
		if (!go && !stop) {
			stop = true;
			mbl_ref_set(L, mm, &hit_key, ev);
		}
		if (done) { /* once, with a condition: removed here */
			lua_pushcfunction(L, h_remove);
			lua_pushvalue(L, handle);
			lua_call(L, 1, 0);
		}
		lua_settop(L, top);
	}
	return any && !stop;
}

void mbl_debug_annotate(lua_State *L, int midx, const struct mb_result *r)
{
	midx = lua_absindex(L, midx);
	struct mbl_machine *mm = mbl_checkmachine(L, midx);
	if (r->reason == MB_STOP_CATCH && mm->m && mb_debug_caught(mm->m) >= 0) {
		struct mb_regs regs;
		int cpu = mb_debug_caught(mm->m);
		lua_pushstring(L, "triple_fault");
		lua_setfield(L, -2, "catch");
		mbl_push_cpu(L, midx, (unsigned)cpu);
		lua_setfield(L, -2, "cpu");
		if (mb_vcpu_get_regs(mm->m, (unsigned)cpu, &regs) == 0) {
			lua_pushinteger(L, (lua_Integer)regs.rip);
			lua_setfield(L, -2, "rip");
		}
		return;
	}
	if (r->reason != MB_STOP_BREAKPOINT && r->reason != MB_STOP_WATCHPOINT)
		return;
	if (mbl_ref_push(L, mm, &hit_key) != LUA_TTABLE) {
		lua_pop(L, 1);
		return;
	}
	lua_pushnil(L);
	while (lua_next(L, -2)) { /* copy ev's fields into the result */
		lua_pushvalue(L, -2);
		lua_insert(L, -2);
		lua_settable(L, -5);
	}
	lua_pop(L, 1);
	lua_pushnil(L);
	mbl_ref_set(L, mm, &hit_key, -1);
	lua_pop(L, 1);
}

/* ---- m:wait_for ------------------------------------------------------- */

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Calls m:run { timeout = t } and leaves its result on top. */
static void run_for(lua_State *L, double t)
{
	lua_getfield(L, 1, "run");
	lua_pushvalue(L, 1);
	lua_createtable(L, 0, 1);
	lua_pushnumber(L, t);
	lua_setfield(L, -2, "timeout");
	lua_call(L, 2, 1);
}

/* The console output of every device with output(), after what each had
 * printed when we started (starts: a table device -> length). true and
 * the match pushed when pattern is found. */
static bool console_match(lua_State *L, int starts, int pattern, bool init)
{
	lua_getiuservalue(L, 1, 1); /* the machine's devices, in order */
	int devs = lua_gettop(L);
	lua_Integer n = luaL_len(L, devs);
	for (lua_Integer i = 1; i <= n; i++) {
		lua_rawgeti(L, devs, i);
		int dev = lua_gettop(L);
		if (lua_getfield(L, dev, "output") != LUA_TFUNCTION) {
			lua_settop(L, devs);
			continue;
		}
		lua_pushvalue(L, dev);
		lua_call(L, 1, 1);
		size_t len;
		lua_tolstring(L, -1, &len);
		if (init) {
			lua_pushinteger(L, (lua_Integer)len);
			lua_rawseti(L, starts, i);
			lua_settop(L, devs);
			continue;
		}
		lua_rawgeti(L, starts, i);
		lua_Integer from = lua_tointeger(L, -1);
		lua_pop(L, 1);
		lua_getglobal(L, "string");
		lua_getfield(L, -1, "match");
		lua_remove(L, -2);
		lua_insert(L, -2); /* match, output */
		lua_pushvalue(L, pattern);
		lua_pushinteger(L, from + 1);
		lua_call(L, 3, 1);
		if (!lua_isnil(L, -1)) {
			lua_replace(L, devs); /* leave only the match */
			lua_settop(L, devs);
			return true;
		}
		lua_settop(L, devs);
	}
	lua_settop(L, devs - 1);
	return false;
}

/* m:wait_for { console = PATTERN | at = ADDR | io = {...}, timeout = S }: run until a
 * console prints PATTERN (a Lua pattern, in output printed from now on, by
 * a device with output(): "buffer" consoles), or a breakpoint at ADDR
 * hits; m:run's result, reason "console" (match = the text) when the
 * pattern came first. */
static int l_wait_for(lua_State *L)
{
	static const char *const keys[] = { "console", "at", "io", "timeout", NULL };
	struct mbl_machine *mm = mbl_checkmachine(L, 1);
	mbl_live(L, mm);
	luaL_checktype(L, 2, LUA_TTABLE);
	lua_settop(L, 2);
	mbl_checkopts(L, 2, "wait_for", keys);
	double timeout = 0;
	if (lua_getfield(L, 2, "timeout") != LUA_TNIL) {
		if (!lua_isnumber(L, -1) || lua_tonumber(L, -1) < 0)
			return luaL_error(L, "timeout: expected seconds (a number >= 0)");
		timeout = lua_tonumber(L, -1);
	}
	lua_pop(L, 1);
	bool con = lua_getfield(L, 2, "console") != LUA_TNIL; /* 3 */
	if (con && !lua_isstring(L, 3))
		return luaL_error(L, "console: expected a pattern, got %s",
				  luaL_typename(L, 3));
	bool at = lua_getfield(L, 2, "at") != LUA_TNIL; /* 4 */
	bool io = lua_getfield(L, 2, "io") != LUA_TNIL;
	lua_pop(L, 1);
	if (!con && !at && !io)
		return luaL_error(L, "wait_for: give console = PATTERN, at = ADDR "
				  "or io = { pio | mmio, ... }");
	struct mbl_io_wait *iow = NULL;
	int tap = 0;
	if (io) {
		lua_getfield(L, 2, "io");
		tap = mbl_tap_waiter(L, mm, -1, &iow);
		lua_pop(L, 1);
	}
	if (at) { /* a breakpoint of its own, removed on the way out */
		lua_getfield(L, 1, "breakpoint");
		lua_pushvalue(L, 1);
		lua_createtable(L, 0, 2);
		lua_pushvalue(L, 4);
		lua_setfield(L, -2, "at");
		lua_pushboolean(L, 1);
		lua_setfield(L, -2, "once");
		lua_call(L, 2, 1);
	} else {
		lua_pushnil(L);
	} /* 5 */
	lua_newtable(L); /* 6: starts */
	if (con)
		console_match(L, 6, 3, true);
	double end = timeout > 0 ? now() + timeout : 0;
	for (;;) {
		double left = end ? end - now() : 0;
		if (end && left <= 0)
			left = 0.001;
		double slice = con ? (end && left < 0.05 ? left : 0.05) : left;
		run_for(L, slice); /* 7 */
		lua_getfield(L, 7, "reason");
		bool timed_out = !strcmp(lua_tostring(L, -1), "timeout");
		lua_pop(L, 1);
		if (con && console_match(L, 6, 3, false)) {
			lua_setfield(L, 7, "match");
			lua_pushliteral(L, "console");
			lua_setfield(L, 7, "reason");
			lua_pushinteger(L, 0);
			lua_setfield(L, 7, "exit_code");
			break;
		}
		if (iow && mbl_tap_waiter_hit(L, iow)) {
			lua_setfield(L, 7, "io");
			break;
		}
		if (!timed_out || !con || (end && now() >= end))
			break;
		lua_pop(L, 1);
	}
	if (tap && mm->m)
		mb_tap_remove(mm->m, tap);
	if (at) {
		lua_getfield(L, 5, "remove");
		lua_pushvalue(L, 5);
		lua_call(L, 1, 0);
	}
	return 1;
}

void mbl_open_debug(lua_State *L)
{
	const char *metas[] = { MBL_BP, MBL_WP };
	for (int i = 0; i < 2; i++) {
		if (luaL_newmetatable(L, metas[i])) {
			luaL_newlib(L, handle_methods);
			lua_setfield(L, -2, "__index");
			lua_pushcfunction(L, h_tostring);
			lua_setfield(L, -2, "__tostring");
		}
		lua_pop(L, 1);
	}
	mbl_machine_method(L, "breakpoint", l_breakpoint);
	mbl_machine_method(L, "watch", l_watch);
	mbl_machine_method(L, "catch", l_catch);
	mbl_machine_method(L, "wait_for", l_wait_for);
}

/* m:gdbserver { listen, stop, on_detach }: the gdb stub (moonbox/gdb.h) on
 * a machine, with `monitor LINE` running LINE as Lua in the script's state
 * (globals, plus `m` the machine) and its output sent back to gdb; and
 * `moonbox --gdb SPEC`, which gives the first machine the script runs a
 * stub waiting at entry (mbl_gdb_autostart). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua/lmoonbox.h"
#include "moonbox/gdb.h"

static char machine_key; /* refs: the machine handle itself, for `m` */

struct mon {
	struct mbl_machine *mm;
	const char *line;
	char *out;
};

/* Append the string on top to the pieces table at t ([0]: their count). */
static void append(lua_State *L, int t)
{
	lua_rawgeti(L, t, 0);
	lua_Integer k = lua_tointeger(L, -1) + 1;
	lua_pop(L, 1);
	lua_rawseti(L, t, k);
	lua_pushinteger(L, k);
	lua_rawseti(L, t, 0);
}

static int mon_print(lua_State *L)
{
	mbl_pushprint(L);
	lua_pushliteral(L, "\n");
	lua_concat(L, 2);
	append(L, lua_upvalueindex(1));
	return 0;
}

/* Protected: run the line with print collected; leave the text on top. */
static int mon_protected(lua_State *L)
{
	struct mon *mo = lua_touserdata(L, 1);
	lua_newtable(L); /* 2: output pieces, [0] their count */
	lua_pushinteger(L, 0);
	lua_rawseti(L, 2, 0);
	lua_newtable(L); /* 3: the chunk's environment */
	lua_pushvalue(L, 2);
	lua_pushcclosure(L, mon_print, 1);
	lua_setfield(L, 3, "print");
	mbl_ref_push(L, mo->mm, &machine_key);
	lua_setfield(L, 3, "m");
	lua_newtable(L); /* reads fall through to the globals, writes go there */
	lua_pushglobaltable(L);
	lua_setfield(L, -2, "__index");
	lua_pushglobaltable(L);
	lua_setfield(L, -2, "__newindex");
	lua_setmetatable(L, 3);
	/* An expression shows its value, as in the REPL. */
	lua_pushfstring(L, "return %s", mo->line);
	const char *code = lua_tostring(L, -1);
	if (luaL_loadbufferx(L, code, strlen(code), "=monitor", "t") != LUA_OK) {
		lua_pop(L, 2);
		if (luaL_loadbufferx(L, mo->line, strlen(mo->line), "=monitor", "t") !=
		    LUA_OK) {
			lua_pushfstring(L, "error: %s\n", lua_tostring(L, -1));
			return 1;
		}
	} else {
		lua_remove(L, -2);
	}
	lua_pushvalue(L, 3);
	lua_setupvalue(L, -2, 1); /* _ENV */
	int base = lua_gettop(L) - 1;
	if (lua_pcall(L, 0, LUA_MULTRET, 0) != LUA_OK) {
		lua_pushfstring(L, "error: %s\n", luaL_tolstring(L, -1, NULL));
		append(L, 2);
	} else if (lua_gettop(L) > base) {
		luaL_Buffer b;
		int nres = lua_gettop(L) - base;
		luaL_buffinit(L, &b);
		for (int i = 1; i <= nres; i++) {
			if (i > 1)
				luaL_addstring(&b, "\t");
			luaL_tolstring(L, base + i, NULL);
			luaL_addvalue(&b);
		}
		luaL_addstring(&b, "\n");
		luaL_pushresult(&b);
		append(L, 2);
	}
	/* concatenate the pieces */
	lua_rawgeti(L, 2, 0);
	lua_Integer n = lua_tointeger(L, -1);
	lua_pop(L, 1);
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	for (lua_Integer i = 1; i <= n; i++) {
		lua_rawgeti(L, 2, i);
		if (lua_type(L, -1) == LUA_TSTRING)
			luaL_addvalue(&b);
		else
			lua_pop(L, 1);
	}
	luaL_pushresult(&b);
	return 1;
}

static void mon_run(void *arg)
{
	struct mon *mo = arg;
	lua_State *L = mo->mm->L;
	if (!L)
		return;
	int top = lua_gettop(L);
	if (!lua_checkstack(L, 20))
		return;
	lua_pushcfunction(L, mon_protected);
	lua_pushlightuserdata(L, mo);
	int st = lua_pcall(L, 1, 1, 0);
	size_t n = 0;
	const char *s = lua_tolstring(L, -1, &n);
	if (s) {
		mo->out = malloc(n + 32);
		if (mo->out)
			snprintf(mo->out, n + 32, "%s%s", st == LUA_OK ? "" : "error: ", s);
	}
	lua_settop(L, top);
}

/* On the stub's thread, the machine held: the script's thread sleeps in
 * mb_machine_wait, so its Lua state is ours for the call. */
static char *monitor(void *opaque, const char *line)
{
	struct mon mo = { .mm = opaque, .line = line };
	if (!mo.mm->m)
		return NULL;
	mb_machine_call_main(mo.mm->m, mon_run, &mo);
	return mo.out;
}

void mbl_eval_bind(lua_State *L, struct mbl_machine *mm, int midx)
{
	if (!mm->L)
		mm->L = L;
	mbl_ref_set(L, mm, &machine_key, lua_absindex(L, midx));
}

char *mbl_eval_line(struct mbl_machine *mm, const char *line)
{
	return monitor(mm, line);
}

static int start(lua_State *L, int midx, const char *listen, int stop,
		 int detach)
{
	struct mbl_machine *mm = mbl_checkmachine(L, midx);
	struct mb_machine *m = mbl_live(L, mm);
	struct mb_gdb_config c = { .listen = listen,
				   .stop = (enum mb_gdb_stop)stop,
				   .on_detach = (enum mb_gdb_detach)detach,
				   .monitor = monitor, .opaque = mm };
	struct mb_gdb *g;
	if (!mm->L)
		mm->L = L;
	if (mb_gdb_start(m, &c, &g))
		return mbl_fail(L, "gdbserver");
	mbl_ref_set(L, mm, &machine_key, midx);
	lua_pushstring(L, mb_gdb_address(g));
	return 1;
}

/* m:gdbserver { listen = "unix:PATH" | "tcp:HOST:PORT", stop = "entry" |
 * "now" | "none", on_detach = "resume" | "pause" | "exit" } -> address */
static int l_gdbserver(lua_State *L)
{
	static const char *const keys[] = { "listen", "stop", "on_detach", NULL };
	static const char *const stops[] = { "entry", "now", "none", NULL };
	static const char *const detach[] = { "resume", "pause", "exit", NULL };
	mbl_checkmachine(L, 1);
	luaL_checktype(L, 2, LUA_TTABLE);
	lua_settop(L, 2);
	mbl_checkopts(L, 2, "gdbserver", keys);
	const char *listen = mbl_optstr(L, 2, "listen", NULL);
	if (!listen)
		return luaL_error(L, "listen: missing (\"unix:PATH\" or \"tcp:HOST:PORT\")");
	int stop = mbl_checkenum(L, 2, "stop", "entry", stops);
	int det = mbl_checkenum(L, 2, "on_detach", "resume", detach);
	return start(L, 1, listen, stop, det);
}

void mbl_gdb_autostart(lua_State *L, int midx)
{
	midx = lua_absindex(L, midx);
	if (lua_getfield(L, LUA_REGISTRYINDEX, MBL_GDB_SPEC) != LUA_TSTRING) {
		lua_pop(L, 1);
		return;
	}
	lua_pushnil(L); /* once: the first machine that runs */
	lua_setfield(L, LUA_REGISTRYINDEX, MBL_GDB_SPEC);
	start(L, midx, lua_tostring(L, -1), 0, 0);
	fprintf(stderr, "moonbox: waiting for gdb on %s\n", lua_tostring(L, -1));
	lua_pop(L, 2);
}

void mbl_open_gdb(lua_State *L)
{
	mbl_machine_method(L, "gdbserver", l_gdbserver);
}

/* The Lua module of an isolated Lua device (mb.device { isolate = true,
 * source = ... | module = ... }, docs/devproc.md "Lua devices"): loaded
 * inside moonbox-device as text only, in an environment of its own (no
 * io, os, package, debug, require, dofile, loadfile; load takes text
 * only), and bounded: an instruction budget per call (a count hook) and
 * a ceiling on the Lua state's memory (its allocator). A module past
 * either is not an error the module may catch: the process ends
 * (mbl_module_fatal) and the VMM treats the device as dead. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua/lmoonbox.h"
#include "moonbox/devproc.h"

void (*mbl_module_log)(const char *line, size_t len);
void (*mbl_module_fatal)(int code, const char *why);

/* One Lua state per device process, reached from its channel threads,
 * its event loop (timers) and its main thread (the build): one at a time. */
static pthread_mutex_t lua_lock = PTHREAD_MUTEX_INITIALIZER;

void mbl_module_lock(void) { pthread_mutex_lock(&lua_lock); }
void mbl_module_unlock(void) { pthread_mutex_unlock(&lua_lock); }

/* ---- memory: the state's allocator counts and refuses past the limit ---- */

static struct {
	size_t used, limit; /* limit 0: none yet (the build sets one) */
} mem;

void *mbl_module_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	(void)ud;
	size_t old = ptr ? osize : 0; /* for a new block osize is its type */
	if (nsize == 0) {
		free(ptr);
		mem.used -= old;
		return NULL;
	}
	/* Lua counts on shrinking never failing (lmem.c): only growth is
	 * refused; Lua then collects and tries once more. */
	if (nsize > old && mem.limit && mem.used + (nsize - old) > mem.limit)
		return NULL;
	void *p = realloc(ptr, nsize);
	if (p)
		mem.used += nsize - old;
	return p;
}

/* ---- instructions: a budget per call, counted in steps of STEP -------- */

#define STEP 1000
static long budget_steps = 100000; /* 10^8 instructions per call */
static long left;
static const char *in_what = "load";

static void count_hook(lua_State *L, lua_Debug *ar)
{
	(void)ar;
	if (--left > 0)
		return;
	char why[160];
	snprintf(why, sizeof why, "its Lua module ran past its instruction "
		 "limit (%ld) in %s", budget_steps * STEP, in_what);
	if (mbl_module_fatal)
		mbl_module_fatal(MB_DP_EXIT_INSTRUCTIONS, why);
	luaL_error(L, "%s", why); /* not in a device process: an error */
}

void mbl_module_enter(const char *what)
{
	left = budget_steps;
	in_what = what;
}

void mbl_module_limits(lua_State *L, lua_Integer instructions, size_t memory)
{
	budget_steps = (long)(instructions / STEP);
	if (budget_steps < 1)
		budget_steps = 1;
	mem.limit = mem.used + memory; /* counted from here: the module's */
	left = budget_steps;
	/* Threads (coroutines) made from now on inherit the hook (lstate.c,
	 * lua_newthread): a loop inside a coroutine is counted too. */
	lua_sethook(L, count_hook, LUA_MASKCOUNT, STEP);
}

size_t mbl_module_memory(void) { return mem.used; }

/* Called where a module's pcall failed: out of memory is the limit. */
void mbl_module_failed(lua_State *L, int status, const char *what)
{
	if (status != LUA_ERRMEM || !mbl_module_fatal)
		return;
	char why[160];
	snprintf(why, sizeof why, "its Lua module went past its memory limit "
		 "(%zu bytes) in %s", mem.limit, what);
	(void)L;
	mbl_module_fatal(MB_DP_EXIT_MEMORY, why);
}

/* ---- the environment ---------------------------------------------------- */

/* log(...) / print(...): the values as tostring gives them, tab-separated,
 * one line to the VMM (dev:state().isolated.log), cut to what a message
 * holds. */
static int m_log(lua_State *L)
{
	mbl_pushprint(L);
	size_t len;
	const char *s = lua_tolstring(L, -1, &len);
	if (len > MB_DP_LOG_TEXT - 1)
		len = MB_DP_LOG_TEXT - 1;
	if (mbl_module_log)
		mbl_module_log(s, len);
	return 0;
}

/* load(chunk [, name [, mode [, env]]]): text only (a binary chunk could
 * break the VM's invariants), a string only; env defaults to the
 * module's own (upvalue 1). */
static int m_load(lua_State *L)
{
	size_t len;
	const char *s = luaL_checklstring(L, 1, &len);
	const char *name = luaL_optstring(L, 2, "=(load)");
	const char *mode = luaL_optstring(L, 3, "t");
	if (strcmp(mode, "t") != 0)
		return luaL_error(L, "load: mode \"%s\": an isolated module loads "
				  "text only (\"t\")", mode);
	if (luaL_loadbufferx(L, s, len, name, "t") != LUA_OK) {
		luaL_pushfail(L);
		lua_insert(L, -2);
		return 2;
	}
	if (!lua_isnone(L, 4))
		lua_pushvalue(L, 4);
	else
		lua_pushvalue(L, lua_upvalueindex(1));
	if (!lua_setupvalue(L, -2, 1))
		lua_pop(L, 1);
	return 1;
}

/* A copy of library lib (so the module's changes stay its own), without
 * the names in drop. */
static void copy_lib(lua_State *L, const char *lib, const char *const *drop)
{
	lua_newtable(L);
	if (lua_getglobal(L, lib) != LUA_TTABLE) {
		lua_pop(L, 1);
		return;
	}
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		bool skip = false;
		for (const char *const *d = drop; d && *d && !skip; d++)
			skip = lua_type(L, -2) == LUA_TSTRING &&
			       strcmp(lua_tostring(L, -2), *d) == 0;
		if (skip) {
			lua_pop(L, 1);
			continue;
		}
		lua_pushvalue(L, -2);
		lua_insert(L, -2);
		lua_rawset(L, -5);
	}
	lua_pop(L, 1);
}

/* Push a fresh environment: the safe base functions, copies of string
 * (no dump), table, math, utf8, coroutine, and log/print/load. */
static void push_env(lua_State *L)
{
	static const char *const base[] = {
		"assert", "error", "ipairs", "next", "pairs", "pcall", "rawequal",
		"rawget", "rawlen", "rawset", "select", "setmetatable",
		"getmetatable", "tonumber", "tostring", "type", "xpcall",
		"collectgarbage", "_VERSION", NULL };
	static const char *const libs[] = { "string", "table", "math", "utf8",
					    "coroutine", NULL };
	static const char *const no_dump[] = { "dump", NULL };
	lua_newtable(L);
	int env = lua_gettop(L);
	for (const char *const *k = base; *k; k++) {
		lua_getglobal(L, *k);
		lua_setfield(L, env, *k);
	}
	for (const char *const *k = libs; *k; k++) {
		copy_lib(L, *k, strcmp(*k, "string") ? NULL : no_dump);
		lua_setfield(L, env, *k);
	}
	lua_pushcfunction(L, m_log);
	lua_pushvalue(L, -1);
	lua_setfield(L, env, "log");
	lua_setfield(L, env, "print");
	lua_pushvalue(L, env);
	lua_pushcclosure(L, m_load, 1);
	lua_setfield(L, env, "load");
	lua_pushvalue(L, env);
	lua_setfield(L, env, "_G");
}

int mbl_module_load(lua_State *L, const char *src, size_t len, const char *name,
		    int args)
{
	args = lua_absindex(L, args);
	char chunk[80];
	snprintf(chunk, sizeof chunk, "=%s", name);
	if (luaL_loadbufferx(L, src, len, chunk, "t") != LUA_OK)
		return luaL_error(L, "module %s: %s", name, lua_tostring(L, -1));
	push_env(L);
	lua_setupvalue(L, -2, 1);
	lua_pushvalue(L, args);
	mbl_module_enter("the module's body");
	int st = lua_pcall(L, 1, 1, 0);
	if (st != LUA_OK) {
		mbl_module_failed(L, st, "the module's body");
		return luaL_error(L, "module %s: %s", name, lua_tostring(L, -1));
	}
	if (!lua_istable(L, -1))
		return luaL_error(L, "module %s: returned %s, expected a table { read "
				  "= , write = , init = }", name, luaL_typename(L, -1));
	static const char *const fns[] = { "read", "write", "init", NULL };
	for (const char *const *f = fns; *f; f++) {
		int t = lua_getfield(L, -1, *f);
		if (t != LUA_TNIL && t != LUA_TFUNCTION)
			return luaL_error(L, "module %s: %s: expected a function, got %s",
					  name, *f, lua_typename(L, t));
		lua_pop(L, 1);
	}
	return 1;
}

/* ---- the VMM's side: a module file, read here (the process gets no path) */

int mbl_module_read(lua_State *L, const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return luaL_error(L, "module: %s: %s", path, strerror(errno));
	luaL_Buffer b;
	char *p = luaL_buffinitsize(L, &b, MBL_MODULE_MAX + 1);
	size_t n = fread(p, 1, MBL_MODULE_MAX + 1, f);
	int err = ferror(f);
	fclose(f);
	if (err)
		return luaL_error(L, "module: %s: read error", path);
	if (n > MBL_MODULE_MAX)
		return luaL_error(L, "module: %s is over %d bytes (a module crosses "
				  "in one CREATE message)", path, MBL_MODULE_MAX);
	luaL_pushresultsize(&b, n);
	return 1;
}

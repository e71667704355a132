/* Symbols: m:symbols(ELF [, offset]) loads an ELF's symbol table into the
 * machine; m:sym(x) converts both ways; every address argument of the
 * debugger takes "name" or "name+off"; addresses print as name+off. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua/lmoonbox.h"
#include "moonbox/debug.h"

#define MBL_SYMTAB "moonbox.symbols"

struct mbl_symtab {
	struct mb_symtab *t;
	char path[256];
};

static char tables_key; /* refs: { symtab handles } in load order */

static int st_gc(lua_State *L)
{
	struct mbl_symtab *s = luaL_checkudata(L, 1, MBL_SYMTAB);
	mb_symtab_free(s->t);
	s->t = NULL;
	return 0;
}

static int st_tostring(lua_State *L)
{
	struct mbl_symtab *s = luaL_checkudata(L, 1, MBL_SYMTAB);
	lua_pushfstring(L, "moonbox.symbols %s (%I symbols)", s->path,
			(lua_Integer)(s->t ? mb_symtab_count(s->t) : 0));
	return 1;
}

static int st_len(lua_State *L)
{
	struct mbl_symtab *s = luaL_checkudata(L, 1, MBL_SYMTAB);
	lua_pushinteger(L, (lua_Integer)(s->t ? mb_symtab_count(s->t) : 0));
	return 1;
}

/* m:symbols(path [, offset]) -> the table's handle (kept by the machine) */
static int l_symbols(lua_State *L)
{
	struct mbl_machine *mm = mbl_checkmachine(L, 1);
	mbl_live(L, mm);
	const char *path = luaL_checkstring(L, 2);
	lua_Integer bias = luaL_optinteger(L, 3, 0);
	struct mbl_symtab *s = lua_newuserdatauv(L, sizeof *s, 0);
	s->t = NULL;
	snprintf(s->path, sizeof s->path, "%s", path);
	luaL_setmetatable(L, MBL_SYMTAB);
	if (mb_symtab_load(path, (int64_t)bias, &s->t))
		return mbl_fail(L, "symbols");
	if (mbl_ref_push(L, mm, &tables_key) != LUA_TTABLE) {
		lua_pop(L, 1);
		lua_newtable(L);
		mbl_ref_set(L, mm, &tables_key, -1);
	}
	lua_pushvalue(L, -2);
	lua_rawseti(L, -2, (lua_Integer)luaL_len(L, -2) + 1);
	lua_pop(L, 1);
	return 1;
}

/* Calls fn on each table of mm until it returns true. */
static bool each(lua_State *L, struct mbl_machine *mm,
		 bool (*fn)(struct mb_symtab *, void *), void *arg)
{
	bool found = false;
	if (mbl_ref_push(L, mm, &tables_key) == LUA_TTABLE) {
		lua_Integer n = luaL_len(L, -1);
		for (lua_Integer i = 1; i <= n && !found; i++) {
			lua_rawgeti(L, -1, i);
			struct mbl_symtab *s = luaL_testudata(L, -1, MBL_SYMTAB);
			found = s && s->t && fn(s->t, arg);
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);
	return found;
}

struct byname {
	const char *name;
	uint64_t addr;
};

static bool find_one(struct mb_symtab *t, void *arg)
{
	struct byname *b = arg;
	return mb_symtab_find(t, b->name, &b->addr) == 0;
}

bool mbl_sym_lookup(lua_State *L, struct mbl_machine *mm, const char *s,
		    uint64_t *addr)
{
	char name[256];
	const char *plus = strchr(s, '+');
	size_t n = plus ? (size_t)(plus - s) : strlen(s);
	uint64_t off = 0;
	if (n == 0 || n >= sizeof name)
		return false;
	if (plus) {
		char *end;
		errno = 0;
		off = strtoull(plus + 1, &end, 0);
		if (errno || end == plus + 1 || *end)
			return false;
	}
	memcpy(name, s, n);
	name[n] = 0;
	struct byname b = { .name = name };
	if (!each(L, mm, find_one, &b))
		return false;
	*addr = b.addr + off;
	return true;
}

struct byaddr {
	uint64_t addr, off;
	const char *name;
	bool text;
};

static bool name_one(struct mb_symtab *t, void *arg)
{
	struct byaddr *b = arg;
	b->name = mb_symtab_name(t, b->addr, &b->off, &b->text);
	return b->name != NULL;
}

bool mbl_sym_format(lua_State *L, struct mbl_machine *mm, uint64_t addr,
		    char *buf, size_t len, bool *text)
{
	struct byaddr b = { .addr = addr };
	buf[0] = 0;
	if (!each(L, mm, name_one, &b))
		return false;
	if (b.off)
		snprintf(buf, len, "%s+0x%" PRIx64, b.name, b.off);
	else
		snprintf(buf, len, "%s", b.name);
	if (text)
		*text = b.text;
	return true;
}

uint64_t mbl_checkaddr_sym(lua_State *L, struct mbl_machine *mm, int idx,
			   const char *key, bool *phys)
{
	*phys = false;
	if (lua_type(L, idx) == LUA_TSTRING) {
		uint64_t a;
		if (mbl_sym_lookup(L, mm, lua_tostring(L, idx), &a))
			return a;
		if (mb_parse_size(lua_tostring(L, idx), &a) == 0)
			return a;
		luaL_error(L, "%s: \"%s\" is neither a known symbol nor an address",
			   key, lua_tostring(L, idx));
	}
	if (lua_isinteger(L, idx)) /* kernel addresses are negative integers */
		return (uint64_t)lua_tointeger(L, idx);
	return mbl_checkaddr(L, idx, key, phys);
}

/* m:sym(name) -> address; m:sym(address) -> "name+off" (nil when none) */
static int l_sym(lua_State *L)
{
	struct mbl_machine *mm = mbl_checkmachine(L, 1);
	if (lua_type(L, 2) == LUA_TSTRING) {
		uint64_t a;
		if (!mbl_sym_lookup(L, mm, lua_tostring(L, 2), &a))
			return 0;
		lua_pushinteger(L, (lua_Integer)a);
		return 1;
	}
	char buf[300];
	if (!mbl_sym_format(L, mm, (uint64_t)luaL_checkinteger(L, 2), buf,
			    sizeof buf, NULL))
		return 0;
	lua_pushstring(L, buf);
	return 1;
}

void mbl_open_sym(lua_State *L)
{
	if (luaL_newmetatable(L, MBL_SYMTAB)) {
		lua_pushcfunction(L, st_gc), lua_setfield(L, -2, "__gc");
		lua_pushcfunction(L, st_tostring), lua_setfield(L, -2, "__tostring");
		lua_pushcfunction(L, st_len), lua_setfield(L, -2, "__len");
	}
	lua_pop(L, 1);
	mbl_machine_method(L, "symbols", l_symbols);
	mbl_machine_method(L, "sym", l_sym);
}

/* Option tables: every key checked, every value named in errors. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "lua/lmoonbox.h"

void mbl_checkopts(lua_State *L, int idx, const char *what,
		   const char *const *keys)
{
	idx = lua_absindex(L, idx);
	luaL_checktype(L, idx, LUA_TTABLE);
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		lua_pop(L, 1);
		if (lua_type(L, -1) != LUA_TSTRING)
			luaL_error(L, "%s: option keys must be names, got %s", what,
				   luaL_typename(L, -1));
		const char *k = lua_tostring(L, -1);
		bool ok = false;
		for (const char *const *p = keys; *p && !ok; p++)
			ok = strcmp(*p, k) == 0;
		if (!ok)
			luaL_error(L, "%s: unknown option \"%s\"", what, k);
	}
}

uint64_t mbl_tosize(lua_State *L, int idx, const char *key)
{
	uint64_t v;
	if (lua_type(L, idx) == LUA_TNUMBER) {
		int isint;
		lua_Integer i = lua_tointegerx(L, idx, &isint);
		if (!isint || i < 0)
			luaL_error(L, "%s: %s is not a size", key, lua_tostring(L, idx));
		return (uint64_t)i;
	}
	if (lua_type(L, idx) != LUA_TSTRING)
		luaL_error(L, "%s: expected a size (number or string like \"256M\"), "
			   "got %s", key, luaL_typename(L, idx));
	const char *s = lua_tostring(L, idx);
	if (mb_parse_size(s, &v))
		luaL_error(L, "%s: \"%s\" is not a size", key, s);
	return v;
}

uint64_t mbl_optsize(lua_State *L, int idx, const char *key, uint64_t def)
{
	uint64_t v = def;
	if (lua_getfield(L, idx, key) != LUA_TNIL)
		v = mbl_tosize(L, -1, key);
	lua_pop(L, 1);
	return v;
}

lua_Integer mbl_optint(lua_State *L, int idx, const char *key, lua_Integer def)
{
	lua_Integer v = def;
	int t = lua_getfield(L, idx, key);
	if (t != LUA_TNIL) {
		int isint;
		v = lua_tointegerx(L, -1, &isint);
		if (t == LUA_TSTRING)
			luaL_error(L, "%s: expected an integer, got \"%s\"", key,
				   lua_tostring(L, -1));
		if (t != LUA_TNUMBER || !isint)
			luaL_error(L, "%s: expected an integer, got %s", key,
				   t == LUA_TNUMBER ? lua_tostring(L, -1)
						    : luaL_typename(L, -1));
	}
	lua_pop(L, 1);
	return v;
}

/* The string stays valid while the option table lives. */
const char *mbl_optstr(lua_State *L, int idx, const char *key, const char *def)
{
	const char *v = def;
	int t = lua_getfield(L, idx, key);
	if (t != LUA_TNIL) {
		if (t != LUA_TSTRING)
			luaL_error(L, "%s: expected a string, got %s", key,
				   luaL_typename(L, -1));
		v = lua_tostring(L, -1);
	}
	lua_pop(L, 1);
	return v;
}

int mbl_optbool(lua_State *L, int idx, const char *key, int def)
{
	int v = def, t = lua_getfield(L, idx, key);
	if (t != LUA_TNIL) {
		if (t != LUA_TBOOLEAN)
			luaL_error(L, "%s: expected a boolean, got %s", key,
				   luaL_typename(L, -1));
		v = lua_toboolean(L, -1);
	}
	lua_pop(L, 1);
	return v;
}

int mbl_checkenum(lua_State *L, int idx, const char *key, const char *def,
		  const char *const *names)
{
	const char *s = mbl_optstr(L, idx, key, def);
	for (int i = 0; names[i]; i++)
		if (strcmp(names[i], s) == 0)
			return i;
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	for (int i = 0; names[i]; i++) {
		if (i)
			luaL_addstring(&b, ", ");
		luaL_addchar(&b, '"');
		luaL_addstring(&b, names[i]);
		luaL_addchar(&b, '"');
	}
	luaL_pushresult(&b);
	return luaL_error(L, "%s: \"%s\" is not one of %s", key, s,
			  lua_tostring(L, -1));
}

/* { base = ADDR, size = SIZE } under key. */
void mbl_checkrange(lua_State *L, int idx, const char *key, uint64_t *base,
		    uint64_t *size)
{
	static const char *const keys[] = { "base", "size", NULL };
	char what[64];
	idx = lua_absindex(L, idx);
	if (lua_getfield(L, idx, key) != LUA_TTABLE)
		luaL_error(L, "%s: expected a table { base = ..., size = ... }, got %s",
			   key, luaL_typename(L, -1));
	mbl_checkopts(L, -1, key, keys);
	snprintf(what, sizeof what, "%s.base", key);
	if (lua_getfield(L, -1, "base") == LUA_TNIL)
		luaL_error(L, "%s: missing", what);
	*base = mbl_tosize(L, -1, what);
	lua_pop(L, 1);
	snprintf(what, sizeof what, "%s.size", key);
	if (lua_getfield(L, -1, "size") == LUA_TNIL)
		luaL_error(L, "%s: missing", what);
	*size = mbl_tosize(L, -1, what);
	if (*size == 0)
		luaL_error(L, "%s: must not be 0", what);
	lua_pop(L, 2);
}

/* What print would write for the values on the stack, without the
 * newline: each as tostring gives it, tab-separated; pushed as one string
 * (the gdb monitor's print and an isolated module's log). */
void mbl_pushprint(lua_State *L)
{
	int n = lua_gettop(L);
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	for (int i = 1; i <= n; i++) {
		if (i > 1)
			luaL_addchar(&b, '\t');
		luaL_tolstring(L, i, NULL);
		luaL_addvalue(&b);
	}
	luaL_pushresult(&b);
}

int mbl_fail(lua_State *L, const char *what)
{
	if (what)
		return luaL_error(L, "%s: %s", what, mb_errmsg());
	return luaL_error(L, "%s", mb_errmsg());
}

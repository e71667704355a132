/* Device state <-> Lua tables, walking a state description
 * (moonbox/state.h): one generic dev:state() and dev:set_state(t). */
#include <stdio.h>
#include <string.h>

#include "lua/lmoonbox.h"

static uint64_t get_uint(const void *p, uint8_t type)
{
	switch (type) {
	case MB_FT_U8: return *(const uint8_t *)p;
	case MB_FT_U16: return *(const uint16_t *)p;
	case MB_FT_U32: return *(const uint32_t *)p;
	case MB_FT_BOOL: return *(const _Bool *)p;
	default: return *(const uint64_t *)p; /* U64, I64 */
	}
}

static void put_uint(void *p, uint8_t type, uint64_t v)
{
	switch (type) {
	case MB_FT_U8: *(uint8_t *)p = (uint8_t)v; break;
	case MB_FT_U16: *(uint16_t *)p = (uint16_t)v; break;
	case MB_FT_U32: *(uint32_t *)p = (uint32_t)v; break;
	case MB_FT_BOOL: *(_Bool *)p = v != 0; break;
	default: *(uint64_t *)p = v; break;
	}
}

static void push_fields(lua_State *L, const struct mb_state_desc *d,
			const uint8_t *st)
{
	lua_createtable(L, 0, (int)d->nfields + 1);
	for (size_t i = 0; i < d->nfields; i++) {
		const struct mb_field *f = &d->fields[i];
		const uint8_t *p = st + f->off;
		switch (f->type) {
		case MB_FT_BOOL:
			lua_pushboolean(L, *(const _Bool *)p);
			break;
		case MB_FT_BYTES: {
			uint32_t len = *(const uint32_t *)(st + f->aux);
			lua_pushlstring(L, (const char *)p, len < f->n ? len : f->n);
			break;
		}
		case MB_FT_SUB:
			push_fields(L, f->sub, p);
			break;
		case MB_FT_ARRAY:
			lua_createtable(L, (int)f->n, 0);
			for (size_t j = 0; j < f->n; j++) {
				push_fields(L, f->sub, p + j * f->aux);
				lua_rawseti(L, -2, (lua_Integer)j + 1);
			}
			break;
		default:
			lua_pushinteger(L, (lua_Integer)get_uint(p, f->type));
			break;
		}
		lua_setfield(L, -2, f->name);
	}
}

void mbl_push_state(lua_State *L, const struct mb_state_desc *d, const void *st)
{
	push_fields(L, d, st);
	lua_pushinteger(L, d->version);
	lua_setfield(L, -2, "version");
}

static void load_fields(lua_State *L, int idx, const struct mb_state_desc *d,
			uint8_t *st, const char *path);

/* The value on top of the stack into field f (path names it in errors). */
static void load_field(lua_State *L, const struct mb_field *f, uint8_t *st,
		       const char *path)
{
	uint8_t *p = st + f->off;
	int t = lua_type(L, -1);
	switch (f->type) {
	case MB_FT_BOOL:
		if (t != LUA_TBOOLEAN)
			luaL_error(L, "set_state: %s: expected a boolean, got %s", path,
				   luaL_typename(L, -1));
		*(_Bool *)p = lua_toboolean(L, -1);
		return;
	case MB_FT_BYTES: {
		size_t len;
		if (t != LUA_TSTRING)
			luaL_error(L, "set_state: %s: expected a string of bytes, got %s",
				   path, luaL_typename(L, -1));
		const char *s = lua_tolstring(L, -1, &len);
		if (len > f->n)
			luaL_error(L, "set_state: %s: %d bytes is more than %d", path,
				   (int)len, (int)f->n);
		memset(p, 0, f->n);
		memcpy(p, s, len);
		*(uint32_t *)(st + f->aux) = (uint32_t)len;
		return;
	}
	case MB_FT_SUB:
		if (t != LUA_TTABLE)
			luaL_error(L, "set_state: %s: expected a table, got %s", path,
				   luaL_typename(L, -1));
		load_fields(L, lua_gettop(L), f->sub, p, path);
		return;
	case MB_FT_ARRAY: {
		if (t != LUA_TTABLE)
			luaL_error(L, "set_state: %s: expected a list of %d tables, got %s",
				   path, (int)f->n, luaL_typename(L, -1));
		int tab = lua_gettop(L);
		lua_pushnil(L);
		while (lua_next(L, tab)) {
			int isint;
			lua_Integer j = lua_tointegerx(L, -2, &isint);
			if (!isint || j < 1 || (size_t)j > f->n)
				luaL_error(L, "set_state: %s: index %s is not 1-%d", path,
					   luaL_tolstring(L, -2, NULL), (int)f->n);
			char sub[160];
			if (snprintf(sub, sizeof sub, "%s[%d]", path, (int)j) >=
			    (int)sizeof sub)
				sub[sizeof sub - 1] = 0; /* a long path, cut */
			if (!lua_istable(L, -1))
				luaL_error(L, "set_state: %s: expected a table, got %s", sub,
					   luaL_typename(L, -1));
			load_fields(L, lua_gettop(L), f->sub, p + (size_t)(j - 1) * f->aux,
				    sub);
			lua_pop(L, 1);
		}
		return;
	}
	default: {
		int isint;
		lua_Integer v = lua_tointegerx(L, -1, &isint);
		if (t != LUA_TNUMBER || !isint)
			luaL_error(L, "set_state: %s: expected an integer, got %s", path,
				   t == LUA_TNUMBER ? lua_tostring(L, -1)
						    : luaL_typename(L, -1));
		if (f->type != MB_FT_I64 && f->type != MB_FT_U64 &&
		    (v < 0 || (uint64_t)v > mb_field_max(f)))
			luaL_error(L, "set_state: %s: %I is out of range (0-%I)", path, v,
				   (lua_Integer)mb_field_max(f));
		put_uint(p, f->type, (uint64_t)v);
		return;
	}
	}
}

static void load_fields(lua_State *L, int idx, const struct mb_state_desc *d,
			uint8_t *st, const char *path)
{
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		if (lua_type(L, -2) != LUA_TSTRING)
			luaL_error(L, "set_state: %s%sfields are names, got %s", path,
				   *path ? ": " : "", luaL_typename(L, -2));
		const char *k = lua_tostring(L, -2);
		char full[160];
		if (snprintf(full, sizeof full, "%s%s%s", path, *path ? "." : "", k) >=
		    (int)sizeof full)
			full[sizeof full - 1] = 0;
		const struct mb_field *f = mb_state_field(d, k);
		if (!f && !*path && strcmp(k, "version") == 0) {
			int isint;
			lua_Integer v = lua_tointegerx(L, -1, &isint);
			if (!isint || v != (lua_Integer)d->version)
				luaL_error(L, "set_state: version: %s is not this device's "
					   "state version %d", luaL_tolstring(L, -1, NULL),
					   (int)d->version);
		} else if (!f) {
			luaL_error(L, "set_state: %s: not a field of this state (%s)",
				   full, d->name);
		} else if (!(f->flags & MB_FF_RO)) {
			load_field(L, f, st, full);
		}
		lua_pop(L, 1);
	}
}

void mbl_to_state(lua_State *L, int idx, const struct mb_state_desc *d, void *st)
{
	idx = lua_absindex(L, idx);
	luaL_checktype(L, idx, LUA_TTABLE);
	load_fields(L, idx, d, st, "");
}

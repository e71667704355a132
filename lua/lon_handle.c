/* The handle every m:on returns, whatever the event (lon.c, lon_net.c,
 * lon_events.c): h:remove(), h:count(), tostring(h). It points into its
 * module's registration table, which lives as long as the machine: after
 * m:close() the handle reads as removed with a count of 0. */
#include <stdio.h>

#include "lua/lmoonbox.h"

#define MBL_ON_HANDLE "moonbox.on"

struct handle {
	struct mbl_machine *mm;
	bool *removed;
	uint64_t *count;
	const void *key; /* the function, in the machine's refs */
	char what[96];   /* "uart of com1", "net of net0", "pit" */
};

void mbl_on_handle_new(lua_State *L, struct mbl_machine *mm, bool *removed,
		       uint64_t *count, const void *key, const char *what)
{
	struct handle *h = lua_newuserdatauv(L, sizeof *h, 1);
	*h = (struct handle){ .mm = mm, .removed = removed, .count = count, .key = key };
	snprintf(h->what, sizeof h->what, "%s", what);
	lua_pushvalue(L, 1); /* the machine: kept while the handle lives */
	lua_setiuservalue(L, -2, 1);
	luaL_setmetatable(L, MBL_ON_HANDLE);
}

static struct handle *live(lua_State *L)
{
	struct handle *h = luaL_checkudata(L, 1, MBL_ON_HANDLE);
	return h->mm->m ? h : NULL;
}

static int h_remove(lua_State *L)
{
	struct handle *h = live(L);
	if (!h || *h->removed)
		return 0;
	*h->removed = true;
	lua_pushnil(L);
	mbl_ref_set(L, h->mm, h->key, -1);
	lua_pop(L, 1);
	return 0;
}

static int h_count(lua_State *L)
{
	struct handle *h = live(L);
	lua_pushinteger(L, h ? (lua_Integer)__atomic_load_n(h->count, __ATOMIC_RELAXED) : 0);
	return 1;
}

static int h_tostring(lua_State *L)
{
	struct handle *h = luaL_checkudata(L, 1, MBL_ON_HANDLE);
	bool gone = !h->mm->m || *h->removed;
	lua_pushfstring(L, "moonbox.on %s%s", h->what, gone ? " (removed)" : "");
	return 1;
}

void mbl_open_on_handle(lua_State *L)
{
	static const luaL_Reg methods[] = {
		{ "remove", h_remove }, { "count", h_count }, { NULL, NULL },
	};
	if (luaL_newmetatable(L, MBL_ON_HANDLE)) {
		luaL_newlib(L, methods);
		lua_setfield(L, -2, "__index");
		lua_pushcfunction(L, h_tostring);
		lua_setfield(L, -2, "__tostring");
	}
	lua_pop(L, 1);
}

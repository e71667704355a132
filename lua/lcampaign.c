/* mb.campaign (docs/snapshot.md, "Campaigns"): the runner is Lua
 * (lua/campaign.lua, compiled in as a string by the Makefile): restoring,
 * resetting the plan, running and classifying are calls the script could
 * make itself; only a terminal test and a monotonic clock come from C. */
#include <time.h>
#include <unistd.h>

#include "lua/lmoonbox.h"

static const char campaign_lua[] =
#include "campaign.lua.h" /* made from lua/campaign.lua into $(B)/lua */
	;
static const char tap_lua[] =
#include "tap.lua.h" /* lua/tap.lua: mb.tap */
	;

static int l_isatty(lua_State *L)
{
	lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
	return 1;
}

static int l_now(lua_State *L)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	lua_pushnumber(L, (lua_Number)t.tv_sec + t.tv_nsec / 1e9);
	return 1;
}

/* Stack: the module table. Sets mb.campaign. */
void mbl_open_campaign(lua_State *L)
{
	if (luaL_loadbufferx(L, campaign_lua, sizeof campaign_lua - 1,
			     "=campaign.lua", "t") != LUA_OK)
		lua_error(L); /* a build error: the chunk is ours */
	lua_pushvalue(L, -2);
	lua_pushcfunction(L, l_isatty);
	lua_pushcfunction(L, l_now);
	lua_call(L, 3, 1);
	lua_setfield(L, -2, "campaign");
	if (luaL_loadbufferx(L, tap_lua, sizeof tap_lua - 1, "=tap.lua", "t") != LUA_OK)
		lua_error(L);
	lua_call(L, 0, 1);
	lua_setfield(L, -2, "tap");
}

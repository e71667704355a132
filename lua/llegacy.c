/* Bindings for the legacy PC devices (filled in with issue 3). */
#include "lua/lmoonbox.h"

void mbl_open_legacy(lua_State *L)
{
	(void)L;
}

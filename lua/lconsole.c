/* The `console = ...` option every console-like device takes: a string
 * ("stdio", "null", "buffer"), { file = PATH }, { socket = PATH } or a Lua
 * function called with each chunk the guest writes. */
#include <stdlib.h>
#include <string.h>

#include "lua/lmoonbox.h"

/* The function itself is in the machine's refs (mbl_ref_set), under
 * this struct's address: no registry reference keeps the machine alive. */
struct luacon {
	struct mbl_machine *mm;
	const void *buf;
	size_t len;
	const struct luacon *key;
};

static void luacon_call(void *arg)
{
	struct luacon *c = arg;
	lua_State *L = c->mm->L;
	if (!L || !c->mm->m)
		return;
	if (mbl_ref_push(L, c->mm, c->key) != LUA_TFUNCTION) {
		lua_pop(L, 1); /* the machine is going away */
		return;
	}
	lua_pushlstring(L, c->buf, c->len);
	if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
		mb_machine_stop(c->mm->m, MB_STOP_ERROR, 1, "console function: %s",
				lua_tostring(L, -1));
		lua_pop(L, 1);
	}
}

static void luacon_write(void *ctx, const void *buf, size_t len)
{
	struct luacon *c = ctx, call = *c;
	call.buf = buf, call.len = len;
	mb_machine_call_main(c->mm->m, luacon_call, &call);
}

/* console = "stdio" | "null" | "buffer" | { file = } | { socket = } | fn */
struct mb_chr *mbl_console(lua_State *L, struct mbl_machine *mm, int idx,
			   const char *key)
{
	struct mb_machine *m = mm->m;
	struct mb_chr *c = NULL;
	int t = lua_getfield(L, idx, key);
	if (t == LUA_TNIL || t == LUA_TSTRING) {
		const char *s = t == LUA_TNIL ? "null" : lua_tostring(L, -1);
		if (strcmp(s, "stdio") == 0)
			c = mb_chr_stdio(m);
		else if (strcmp(s, "null") == 0)
			c = mb_chr_null(m);
		else if (strcmp(s, "buffer") == 0)
			c = mb_chr_buffer(m);
		else
			luaL_error(L, "%s: \"%s\" is not one of \"stdio\", \"null\", "
				   "\"buffer\", { file = PATH }, { socket = PATH } or a "
				   "function", key, s);
	} else if (t == LUA_TTABLE && mbl_in_devproc(L)) {
		/* moonbox-device: the relay socket the VMM passed */
		static const char *const keys[] = { "fd", NULL };
		mbl_checkopts(L, -1, key, keys);
		lua_Integer fd = mbl_optint(L, -1, "fd", -1);
		if (fd < 3 || fd > 1024)
			luaL_error(L, "%s.fd: %d is not a passed descriptor", key, (int)fd);
		c = mb_chr_fd(m, (int)fd);
	} else if (t == LUA_TTABLE) {
		static const char *const keys[] = { "file", "socket", NULL };
		mbl_checkopts(L, -1, key, keys);
		const char *f = mbl_optstr(L, -1, "file", NULL);
		const char *s = mbl_optstr(L, -1, "socket", NULL);
		if (!f == !s)
			luaL_error(L, "%s: give one of file or socket", key);
		c = f ? mb_chr_file(m, f) : mb_chr_socket(m, s);
	} else if (t == LUA_TFUNCTION) {
		struct luacon *lc = calloc(1, sizeof *lc);
		if (!lc)
			luaL_error(L, "%s: out of memory", key);
		lc->mm = mm;
		lc->key = lc;
		if (mb_machine_on_destroy(m, free, lc)) {
			free(lc);
			luaL_error(L, "%s: %s", key, mb_errmsg());
		}
		mbl_ref_set(L, mm, lc, -1);
		c = mb_chr_func(m, luacon_write, lc);
	} else {
		luaL_error(L, "%s: expected a string, table or function, got %s", key,
			   luaL_typename(L, -1));
	}
	if (!c)
		luaL_error(L, "%s: %s", key, mb_errmsg());
	lua_pop(L, 1);
	return c;
}


/* dev:output(): what a "buffer" console captured (empty otherwise). */
int mbl_console_output(lua_State *L, struct mb_chr *c)
{
	size_t n = mb_chr_buffer_get(c, NULL, 0);
	luaL_Buffer b;
	char *p = luaL_buffinitsize(L, &b, n);
	n = mb_chr_buffer_get(c, p, n); /* may have grown: take what fits */
	luaL_pushresultsize(&b, n);
	return 1;
}

/* dev:input(s): queue bytes for the guest's receive side; returns dev. */
int mbl_console_input(lua_State *L, struct mb_chr *c)
{
	size_t len;
	const char *s = luaL_checklstring(L, 2, &len);
	if (mb_chr_input(c, s, len))
		return mbl_fail(L, "input");
	lua_settop(L, 1);
	return 1;
}

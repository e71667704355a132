/* mb.fw_cfg { files = { ["opt/name"] = "contents" or { file = PATH } },
 * name }: QEMU's fw_cfg at 0x510-0x51b (moonbox/fw_cfg.h). */
#include <string.h>

#include "lua/lmoonbox.h"
#include "moonbox/fw_cfg.h"

static const char *const keys[] = { "name", "files", NULL };

struct cfg {
	struct mb_fw_cfg_attach_config c;
	struct mb_fw_cfg_file files[MB_FW_CFG_MAX_FILES];
};

static void parse(lua_State *L, int idx, void *p)
{
	struct cfg *c = p;
	c->c.name = mbl_optstr(L, idx, "name", NULL);
	c->c.files = c->files;
	int t = lua_getfield(L, idx, "files");
	if (t != LUA_TNIL && t != LUA_TTABLE)
		luaL_error(L, "files: expected a table { [\"opt/name\"] = "
			   "contents or { file = PATH } }, got %s",
			   luaL_typename(L, -1));
	if (t == LUA_TTABLE) {
		lua_pushnil(L);
		while (lua_next(L, -2)) {
			if (lua_type(L, -2) != LUA_TSTRING)
				luaL_error(L, "files: key %s is not a file name",
					   luaL_tolstring(L, -2, NULL));
			const char *name = lua_tostring(L, -2);
			size_t n = strlen(name);
			if (n == 0 || n >= MB_FW_CFG_NAME_MAX)
				luaL_error(L, "files: name \"%s\" is not 1-%d bytes",
					   name, MB_FW_CFG_NAME_MAX - 1);
			if (c->c.nfiles == MB_FW_CFG_MAX_FILES)
				luaL_error(L, "files: more than %d",
					   MB_FW_CFG_MAX_FILES);
			struct mb_fw_cfg_file *f = &c->files[c->c.nfiles++];
			f->name = name;
			if (lua_type(L, -1) == LUA_TSTRING) {
				f->data = lua_tolstring(L, -1, &f->len);
			} else if (lua_type(L, -1) == LUA_TTABLE) {
				static const char *const fk[] = { "file", NULL };
				char what[80];
				snprintf(what, sizeof what, "files[\"%s\"]", name);
				mbl_checkopts(L, -1, what, fk);
				f->path = mbl_optstr(L, -1, "file", NULL);
				if (!f->path)
					luaL_error(L, "%s: expected { file = PATH }", what);
			} else {
				luaL_error(L, "files[\"%s\"]: expected contents (a "
					   "string) or { file = PATH }, got %s", name,
					   luaL_typename(L, -1));
			}
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);
}

static int attach(lua_State *L, struct mbl_machine *mm, struct mbl_dev *d)
{
	struct cfg *c = d->cfg;
	if (mb_fw_cfg_attach(mm->m, &c->c, &d->dev))
		return mbl_fail(L, "fw_cfg");
	return 0;
}

static const struct mbl_class fw_cfg_class = {
	.name = "fw_cfg", .keys = keys, .attach = attach,
	.cfg_size = sizeof(struct cfg), .parse = parse,
};

static int l_fw_cfg(lua_State *L)
{
	mbl_dev_new(L, &fw_cfg_class);
	return 1;
}

void mbl_open_fw_cfg(lua_State *L)
{
	lua_pushcfunction(L, l_fw_cfg);
	lua_setfield(L, -2, "fw_cfg");
}

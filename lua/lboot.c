/* Kernel loaders from Lua: m:boot_linux, m:boot_multiboot, m:boot_elf and
 * mb.bzimage_info. Options are checked completely before a file is read. */
#include <string.h>

#include "lua/lmoonbox.h"

#define MAX_RANGES 64
#define MAX_MODULES 64

/* A required string option. */
static const char *need_str(lua_State *L, int idx, const char *key,
			    const char *what)
{
	const char *s = mbl_optstr(L, idx, key, NULL);
	if (!s)
		luaL_error(L, "%s: missing (%s)", key, what);
	return s;
}

/* reserved = { { base = ..., size = ... }, ... }: e820 reserved ranges. */
static size_t check_ranges(lua_State *L, int idx, const char *key,
			   struct mb_range *r, size_t max)
{
	size_t n = 0;
	int t = lua_getfield(L, idx, key);
	if (t == LUA_TNIL) {
		lua_pop(L, 1);
		return 0;
	}
	if (t != LUA_TTABLE)
		luaL_error(L, "%s: expected a list of { base = ..., size = ... }, "
			   "got %s", key, luaL_typename(L, -1));
	lua_Integer len = luaL_len(L, -1);
	if (len > (lua_Integer)max)
		luaL_error(L, "%s: %d ranges, at most %d", key, (int)len, (int)max);
	lua_newtable(L); /* mbl_checkrange reads a field: wrap each entry */
	for (lua_Integer i = 1; i <= len; i++) {
		char what[32];
		snprintf(what, sizeof what, "%s[%d]", key, (int)i);
		lua_geti(L, -2, i);
		lua_setfield(L, -2, what);
		mbl_checkrange(L, -1, what, &r[n].base, &r[n].size);
		n++;
	}
	lua_pop(L, 2);
	return n;
}

/* m:boot_linux{...} and m:boot_pvh{...}: one option table, two entries. */
static int boot_linux(lua_State *L, bool pvh)
{
	static const char *const keys[] = { "kernel", "initrd", "cmdline",
					    "reserved", NULL };
	const char *what = pvh ? "boot_pvh" : "boot_linux";
	struct mbl_machine *mm = mbl_checkmachine(L, 1);
	struct mb_range res[MAX_RANGES];
	struct mb_linux_config cfg = { 0 };
	mbl_checkopts(L, 2, what, keys);
	cfg.kernel = need_str(L, 2, "kernel", pvh ? "the vmlinux (ELF) to boot"
						  : "the bzImage to boot");
	cfg.initrd = mbl_optstr(L, 2, "initrd", NULL);
	cfg.cmdline = mbl_optstr(L, 2, "cmdline", "");
	cfg.nreserved = check_ranges(L, 2, "reserved", res, MAX_RANGES);
	cfg.reserved = res;
	struct mb_machine *m = mbl_live(L, mm);
	if (pvh ? mb_boot_pvh(m, &cfg) : mb_boot_linux(m, &cfg))
		return mbl_fail(L, what);
	lua_settop(L, 1);
	return 1;
}

static int l_boot_linux(lua_State *L) { return boot_linux(L, false); }
static int l_boot_pvh(lua_State *L) { return boot_linux(L, true); }

static int l_boot_multiboot(lua_State *L)
{
	static const char *const keys[] = { "kernel", "cmdline", "modules", NULL };
	static const char *const mkeys[] = { "file", "cmdline", NULL };
	struct mbl_machine *mm = mbl_checkmachine(L, 1);
	struct mb_multiboot_module mods[MAX_MODULES];
	struct mb_multiboot_config cfg = { 0 };
	mbl_checkopts(L, 2, "boot_multiboot", keys);
	cfg.kernel = need_str(L, 2, "kernel", "the multiboot kernel to boot");
	cfg.cmdline = mbl_optstr(L, 2, "cmdline", "");
	int t = lua_getfield(L, 2, "modules");
	if (t != LUA_TNIL && t != LUA_TTABLE)
		return luaL_error(L, "modules: expected a list of { file = ..., "
				  "cmdline = ... }, got %s", luaL_typename(L, -1));
	lua_Integer len = t == LUA_TNIL ? 0 : luaL_len(L, -1);
	if (len > MAX_MODULES)
		return luaL_error(L, "modules: %d modules, at most %d", (int)len,
				  MAX_MODULES);
	for (lua_Integer i = 1; i <= len; i++) {
		char what[32], key[48];
		snprintf(what, sizeof what, "modules[%d]", (int)i);
		if (lua_geti(L, -1, i) != LUA_TTABLE)
			return luaL_error(L, "%s: expected a table { file = ..., "
					  "cmdline = ... }, got %s", what,
					  luaL_typename(L, -1));
		mbl_checkopts(L, -1, what, mkeys);
		snprintf(key, sizeof key, "%s.file", what);
		if (lua_getfield(L, -1, "file") != LUA_TSTRING)
			return luaL_error(L, "%s: %s", key, lua_isnil(L, -1)
					  ? "missing (the module's file)"
					  : lua_pushfstring(L, "expected a string, got %s",
							    luaL_typename(L, -1)));
		mods[i - 1].file = lua_tostring(L, -1); /* anchored by the table */
		lua_pop(L, 1);
		snprintf(key, sizeof key, "%s.cmdline", what);
		int ct = lua_getfield(L, -1, "cmdline");
		if (ct != LUA_TNIL && ct != LUA_TSTRING)
			return luaL_error(L, "%s: expected a string, got %s", key,
					  luaL_typename(L, -1));
		mods[i - 1].cmdline = ct == LUA_TNIL ? "" : lua_tostring(L, -1);
		lua_pop(L, 2);
	}
	lua_pop(L, 1);
	cfg.modules = mods;
	cfg.nmodules = (size_t)len;
	if (mb_boot_multiboot(mbl_live(L, mm), &cfg))
		return mbl_fail(L, "boot_multiboot");
	lua_settop(L, 1);
	return 1;
}

/* m:boot_elf { file = PATH, mode = "protected" | "long" }: the mode
 * defaults to the file's class (ELF32: protected, ELF64: long). */
static int l_boot_elf(lua_State *L)
{
	static const char *const keys[] = { "file", "mode", NULL };
	static const char *const modes[] = { "protected", "long", NULL };
	struct mbl_machine *mm = mbl_checkmachine(L, 1);
	mbl_checkopts(L, 2, "boot_elf", keys);
	const char *file = need_str(L, 2, "file", "the ELF executable to boot");
	int mode = -1;
	if (lua_getfield(L, 2, "mode") != LUA_TNIL)
		mode = mbl_checkenum(L, 2, "mode", NULL, modes);
	lua_pop(L, 1);
	struct mb_machine *m = mbl_live(L, mm);
	if (mb_boot_elf(m, file, mode < 0 ? -1 : mode ? MB_MODE_LONG
						      : MB_MODE_PROTECTED))
		return mbl_fail(L, "boot_elf");
	lua_settop(L, 1);
	return 1;
}

/* mb.bzimage_info(PATH): the checked setup header as a table. */
static int l_bzimage_info(lua_State *L)
{
	const char *file = luaL_checkstring(L, 1);
	struct mb_bzimage_info b;
	if (mb_bzimage_info(file, &b))
		return mbl_fail(L, "bzimage_info");
	lua_createtable(L, 0, 14);
#define SET(k, v) lua_pushinteger(L, (lua_Integer)(v)), lua_setfield(L, -2, k)
	SET("version", b.version);
	SET("loadflags", b.loadflags);
	SET("xloadflags", b.xloadflags);
	SET("setup_sects", b.setup_sects);
	SET("pref_address", b.pref_address);
	SET("init_size", b.init_size);
	SET("kernel_alignment", b.kernel_alignment);
	SET("cmdline_size", b.cmdline_size);
	SET("initrd_addr_max", b.initrd_addr_max);
	SET("kernel_offset", b.kernel_offset);
	SET("kernel_size", b.kernel_size);
#undef SET
	lua_pushboolean(L, b.relocatable);
	lua_setfield(L, -2, "relocatable");
	lua_pushboolean(L, (b.xloadflags & 1 /* XLF_KERNEL_64, boot.rst "xloadflags" */) != 0);
	lua_setfield(L, -2, "kernel_64");
	lua_pushstring(L, b.kernel_version);
	lua_setfield(L, -2, "kernel_version");
	return 1;
}

static void push_table(void *opaque, const char *sig, const void *data,
		       size_t len)
{
	lua_State *L = opaque;
	lua_pushlstring(L, data, len);
	lua_setfield(L, -2, sig);
}

/* m:acpi_tables() -> { RSDP = bytes, XSDT = ..., DSDT = ..., ... }: what
 * the Linux loaders would write now (for dumps: iasl -d). */
static int l_acpi_tables(lua_State *L)
{
	struct mb_machine *m = mbl_live(L, mbl_checkmachine(L, 1));
	lua_newtable(L);
	if (mb_acpi_tables(m, push_table, L))
		return mbl_fail(L, "acpi_tables");
	return 1;
}

/* Called by luaopen_moonbox with the module table on top of the stack,
 * after the machine metatable exists. */
void mbl_open_boot(lua_State *L)
{
	mbl_machine_method(L, "boot_linux", l_boot_linux);
	mbl_machine_method(L, "boot_pvh", l_boot_pvh);
	mbl_machine_method(L, "boot_multiboot", l_boot_multiboot);
	mbl_machine_method(L, "boot_elf", l_boot_elf);
	mbl_machine_method(L, "acpi_tables", l_acpi_tables);
	lua_pushcfunction(L, l_bzimage_info);
	lua_setfield(L, -2, "bzimage_info");
}

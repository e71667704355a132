/* Shared by the Lua binding files: option checking, the machine and
 * device handles. Nothing outside lua/ includes Lua headers. */
#ifndef LMOONBOX_H
#define LMOONBOX_H

#include <lauxlib.h>
#include <lua.h>

#include "moonbox.h"

#define MBL_MACHINE "moonbox.machine"

/* A machine handle. L is the Lua thread currently blocked in run/wait/
 * pause: Lua devices run their callbacks on it. */
struct mbl_machine {
	struct mb_machine *m;
	lua_State *L;
	int devices; /* registry ref: table of attached device handles */
};

struct mbl_dev;

/* A device type: its constructor checks options into the handle, attach
 * wires it into a machine. */
struct mbl_class {
	const char *name;
	const char *const *keys;  /* allowed options, NULL-terminated */
	int (*attach)(lua_State *L, struct mbl_machine *mm, struct mbl_dev *d);
	lua_CFunction state; /* dev:state(): push a table of registers */
	const luaL_Reg *methods;  /* extra methods, or NULL */
};

struct mbl_dev {
	const struct mbl_class *cls;
	struct mbl_machine *mm; /* NULL until m:add() */
	void *impl;             /* the C device, owned by the machine */
	int opts;               /* registry ref to the option table */
};

/* Options */
void mbl_checkopts(lua_State *L, int idx, const char *what,
		   const char *const *keys);
uint64_t mbl_tosize(lua_State *L, int idx, const char *key);
uint64_t mbl_optsize(lua_State *L, int idx, const char *key, uint64_t def);
lua_Integer mbl_optint(lua_State *L, int idx, const char *key, lua_Integer def);
const char *mbl_optstr(lua_State *L, int idx, const char *key, const char *def);
int mbl_optbool(lua_State *L, int idx, const char *key, int def);
int mbl_checkenum(lua_State *L, int idx, const char *key, const char *def,
		  const char *const *names);
void mbl_checkrange(lua_State *L, int idx, const char *key, uint64_t *base,
		    uint64_t *size);

/* Devices */
struct mbl_dev *mbl_dev_new(lua_State *L, const struct mbl_class *cls);
struct mbl_dev *mbl_checkdev(lua_State *L, int idx);
struct mbl_machine *mbl_checkmachine(lua_State *L, int idx);
struct mb_machine *mbl_live(lua_State *L, struct mbl_machine *mm);
void mbl_pushopts(lua_State *L, struct mbl_dev *d);
int mbl_fail(lua_State *L, const char *what); /* error with mb_errmsg() */

/* Each device binding file provides its constructors through this list. */
void mbl_open_devices(lua_State *L);
void mbl_open_legacy(lua_State *L);
void mbl_open_boot(lua_State *L);
void mbl_open_virtio(lua_State *L);
void mbl_open_virtio_io(lua_State *L);
struct mb_chr *mbl_console(lua_State *L, struct mbl_machine *mm, int idx,
			   const char *key);
int mbl_console_output(lua_State *L, struct mb_chr *c);
int mbl_console_input(lua_State *L, struct mb_chr *c);
void mbl_machine_method(lua_State *L, const char *name, lua_CFunction f);

#endif

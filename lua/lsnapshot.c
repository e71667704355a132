/* Snapshots from Lua: m:snapshot { file, ignore }, m:restore(s) and
 * mb.restore { file, consoles, allow_changed_disks } (docs/snapshot.md).
 *
 * The core saves the state; this file adds how to rebuild the machine in
 * another process: the option tables mb.machine and each device
 * constructor were given, in a small tagged binary encoding (below), plus
 * each disk image's size and mtime. What cannot be rebuilt from plain
 * data (a Lua device, a function console) is refused, naming it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lua/lmoonbox.h"

#define MBL_SNAPSHOT "moonbox.snapshot"

struct lsnap {
	struct mb_snapshot *s;
};

static struct lsnap *checksnap(lua_State *L, int idx)
{
	struct lsnap *ls = luaL_checkudata(L, idx, MBL_SNAPSHOT);
	if (!ls->s)
		luaL_error(L, "snapshot: already freed");
	return ls;
}

static int snap_gc(lua_State *L)
{
	struct lsnap *ls = luaL_checkudata(L, 1, MBL_SNAPSHOT);
	mb_snapshot_free(ls->s);
	ls->s = NULL;
	return 0;
}

static int snap_tostring(lua_State *L)
{
	struct lsnap *ls = luaL_checkudata(L, 1, MBL_SNAPSHOT);
	if (ls->s)
		lua_pushfstring(L, "moonbox.snapshot (%d MiB of RAM)",
				(int)(mb_snapshot_ram_pages(ls->s) / 256));
	else
		lua_pushstring(L, "moonbox.snapshot (freed)");
	return 1;
}

/* Push a new snapshot handle owning s. */
static struct lsnap *push_snap(lua_State *L, struct mb_snapshot *s)
{
	struct lsnap *ls = lua_newuserdatauv(L, sizeof *ls, 1);
	ls->s = s;
	luaL_setmetatable(L, MBL_SNAPSHOT);
	return ls;
}

/* ---- plain data: Lua values <-> bytes -------------------------------------
 * nil 'n', false 'f', true 't', integer 'i' + 8 bytes, float 'd' + 8, string
 * 's' + u32 length + bytes, table 'T' + u32 pairs + key/value pairs. */

/* A growable byte buffer in a userdata (freed by __gc, so an error in the
 * middle leaks nothing); luaL_Buffer cannot be used while encode walks
 * tables on the stack. */
struct buf {
	char *p;
	size_t n, cap;
};
#define MBL_BUF "moonbox.snapshot_buf"

static int buf_gc(lua_State *L)
{
	struct buf *b = luaL_checkudata(L, 1, MBL_BUF);
	free(b->p);
	b->p = NULL;
	return 0;
}

static struct buf *buf_new(lua_State *L)
{
	struct buf *b = lua_newuserdatauv(L, sizeof *b, 0);
	memset(b, 0, sizeof *b);
	if (luaL_newmetatable(L, MBL_BUF)) {
		lua_pushcfunction(L, buf_gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_setmetatable(L, -2);
	return b;
}

static void add(lua_State *L, struct buf *b, const void *p, size_t n)
{
	if (b->cap - b->n < n) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap - b->n < n)
			cap *= 2;
		char *np = realloc(b->p, cap);
		if (!np)
			luaL_error(L, "snapshot: out of memory");
		b->p = np, b->cap = cap;
	}
	memcpy(b->p + b->n, p, n);
	b->n += n;
}

static void addc(lua_State *L, struct buf *b, char c)
{
	add(L, b, &c, 1);
}

static void encode(lua_State *L, int idx, struct buf *b, const char *path,
		   int depth)
{
	idx = lua_absindex(L, idx);
	luaL_checkstack(L, 8, "snapshot");
	if (depth > 16)
		luaL_error(L, "snapshot: %s: nested more than 16 deep", path);
	switch (lua_type(L, idx)) {
	case LUA_TNIL:
		addc(L, b, 'n');
		break;
	case LUA_TBOOLEAN:
		addc(L, b, lua_toboolean(L, idx) ? 't' : 'f');
		break;
	case LUA_TNUMBER:
		if (lua_isinteger(L, idx)) {
			lua_Integer v = lua_tointeger(L, idx);
			addc(L, b, 'i');
			add(L, b, (const char *)&v, sizeof v);
		} else {
			lua_Number v = lua_tonumber(L, idx);
			addc(L, b, 'd');
			add(L, b, (const char *)&v, sizeof v);
		}
		break;
	case LUA_TSTRING: {
		size_t len;
		const char *s = lua_tolstring(L, idx, &len);
		uint32_t n = (uint32_t)len;
		addc(L, b, 's');
		add(L, b, (const char *)&n, sizeof n);
		add(L, b, s, len);
		break;
	}
	case LUA_TTABLE: {
		uint32_t n = 0;
		lua_pushnil(L);
		while (lua_next(L, idx)) {
			n++;
			lua_pop(L, 1);
		}
		addc(L, b, 'T');
		add(L, b, (const char *)&n, sizeof n);
		lua_pushnil(L);
		while (lua_next(L, idx)) {
			char sub[256];
			if (lua_type(L, -2) == LUA_TSTRING)
				snprintf(sub, sizeof sub, "%s.%s", path, lua_tostring(L, -2));
			else if (lua_isinteger(L, -2))
				snprintf(sub, sizeof sub, "%s[%lld]", path,
					 (long long)lua_tointeger(L, -2));
			else
				luaL_error(L, "snapshot: %s: a key of type %s cannot be "
					   "saved", path, luaL_typename(L, -2));
			encode(L, -2, b, sub, depth + 1);
			encode(L, -1, b, sub, depth + 1);
			lua_pop(L, 1);
		}
		break;
	}
	default:
		luaL_error(L, "snapshot: %s is a %s, which a snapshot file cannot hold "
			   "(the machine cannot be rebuilt from it)", path,
			   luaL_typename(L, idx));
	}
}

struct dec {
	const uint8_t *p;
	size_t len, at;
};

static void need(lua_State *L, struct dec *d, size_t n)
{
	if (d->len - d->at < n)
		luaL_error(L, "restore: the configuration record is malformed");
}

static void decode(lua_State *L, struct dec *d, int depth)
{
	need(L, d, 1);
	if (depth > 17)
		luaL_error(L, "restore: the configuration record is nested too deep");
	luaL_checkstack(L, 4, "restore");
	char t = (char)d->p[d->at++];
	switch (t) {
	case 'n': lua_pushnil(L); break;
	case 'f': lua_pushboolean(L, 0); break;
	case 't': lua_pushboolean(L, 1); break;
	case 'i': {
		lua_Integer v;
		need(L, d, sizeof v);
		memcpy(&v, d->p + d->at, sizeof v);
		d->at += sizeof v;
		lua_pushinteger(L, v);
		break;
	}
	case 'd': {
		lua_Number v;
		need(L, d, sizeof v);
		memcpy(&v, d->p + d->at, sizeof v);
		d->at += sizeof v;
		lua_pushnumber(L, v);
		break;
	}
	case 's': {
		uint32_t n;
		need(L, d, sizeof n);
		memcpy(&n, d->p + d->at, sizeof n);
		d->at += sizeof n;
		need(L, d, n);
		lua_pushlstring(L, (const char *)d->p + d->at, n);
		d->at += n;
		break;
	}
	case 'T': {
		uint32_t n;
		need(L, d, sizeof n);
		memcpy(&n, d->p + d->at, sizeof n);
		d->at += sizeof n;
		lua_newtable(L);
		for (uint32_t i = 0; i < n; i++) {
			decode(L, d, depth + 1);
			decode(L, d, depth + 1);
			if (lua_isnil(L, -2))
				luaL_error(L, "restore: the configuration record is "
					   "malformed");
			lua_rawset(L, -3);
		}
		break;
	}
	default:
		luaL_error(L, "restore: the configuration record is malformed");
	}
}

/* ---- m:snapshot ------------------------------------------------------------ */

static bool ignored(lua_State *L, int opts, const char *name)
{
	if (lua_getfield(L, opts, "ignore") != LUA_TTABLE) {
		lua_pop(L, 1);
		return false;
	}
	bool found = false;
	lua_Integer n = luaL_len(L, -1);
	for (lua_Integer i = 1; i <= n && !found; i++) {
		lua_geti(L, -1, i);
		const char *s = lua_tostring(L, -1);
		found = s && strcmp(s, name) == 0;
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
	return found;
}

/* Push the configuration (a table) that rebuilds the machine at 1:
 * { machine = opts, devices = { { class, name, opts } }, disks = {...} }.
 * Refuses what cannot be rebuilt. */
static void push_conf(lua_State *L, struct mb_machine *m, int opts)
{
	luaL_checkstack(L, 40, "snapshot");
	lua_createtable(L, 0, 4);
	int conf = lua_gettop(L);
	lua_pushinteger(L, 1);
	lua_setfield(L, conf, "version");
	mbl_push_machine_opts(L, mbl_checkmachine(L, 1));
	lua_setfield(L, conf, "machine");
	lua_newtable(L);
	int devs = lua_gettop(L);
	lua_newtable(L);
	int disks = lua_gettop(L);
	lua_getiuservalue(L, 1, 1);
	int handles = lua_gettop(L);
	lua_Integer n = luaL_len(L, handles);
	if ((size_t)n != mb_machine_ndevices(m)) {
		/* Devices attached from C have no option table to rebuild them. */
		for (size_t i = 0; i < mb_machine_ndevices(m); i++) {
			struct mb_device *cd = mb_machine_device_at(m, i);
			bool has = false;
			for (lua_Integer j = 1; j <= n && !has; j++) {
				lua_rawgeti(L, handles, j);
				has = ((struct mbl_dev *)lua_touserdata(L, -1))->dev == cd;
				lua_pop(L, 1);
			}
			if (!has)
				luaL_error(L, "snapshot: device %s (%s) was attached from C: "
					   "a snapshot file cannot rebuild it",
					   mb_device_name(cd), mb_device_kind(cd));
		}
	}
	lua_Integer nrec = 0;
	for (lua_Integer j = 1; j <= n; j++) {
		lua_rawgeti(L, handles, j);
		struct mbl_dev *d = lua_touserdata(L, -1);
		const char *name = mb_device_name(d->dev);
		if (d->cls->machine_made) { /* the rebuilt machine makes it */
			lua_pop(L, 1);
			continue;
		}
		if (strcmp(d->cls->name, "device") == 0 && !ignored(L, opts, name))
			luaL_error(L, "snapshot: device %s is an mb.device (registers in "
				   "Lua): its Lua state cannot be saved", name);
		lua_createtable(L, 0, 3);
		lua_pushstring(L, d->cls->name);
		lua_setfield(L, -2, "class");
		lua_pushstring(L, name);
		lua_setfield(L, -2, "name");
		mbl_pushopts(L, -2);
		lua_setfield(L, -2, "opts");
		lua_rawseti(L, devs, ++nrec);
		mbl_pushopts(L, -1);
		lua_getfield(L, -1, "image");
		if (strcmp(d->cls->name, "virtio_blk") == 0 &&
		    lua_type(L, -1) == LUA_TSTRING) {
			const char *path = lua_tostring(L, -1);
			struct stat st;
			if (stat(path, &st))
				luaL_error(L, "snapshot: disk %s: %s: %s", name, path,
					   strerror(errno));
			lua_createtable(L, 0, 5);
			lua_pushstring(L, name);
			lua_setfield(L, -2, "device");
			lua_pushvalue(L, -2);
			lua_setfield(L, -2, "path");
			lua_pushinteger(L, (lua_Integer)st.st_size);
			lua_setfield(L, -2, "size");
			lua_pushinteger(L, (lua_Integer)st.st_mtim.tv_sec);
			lua_setfield(L, -2, "mtime");
			lua_pushinteger(L, (lua_Integer)st.st_mtim.tv_nsec);
			lua_setfield(L, -2, "mtime_ns");
			lua_rawseti(L, disks, (lua_Integer)luaL_len(L, disks) + 1);
		}
		lua_pop(L, 3);
	}
	lua_pop(L, 1);
	lua_setfield(L, conf, "disks");
	lua_setfield(L, conf, "devices");
}

/* m:snapshot([{ file = PATH, ignore = { NAME... } }]) */
static int l_snapshot(lua_State *L)
{
	static const char *const keys[] = { "file", "ignore", NULL };
	struct mbl_machine *mm = mbl_checkmachine(L, 1);
	struct mb_machine *m = mbl_live(L, mm);
	if (lua_isnoneornil(L, 2))
		lua_newtable(L);
	luaL_checktype(L, 2, LUA_TTABLE);
	lua_settop(L, 2);
	mbl_checkopts(L, 2, "snapshot", keys);
	const char *file = mbl_optstr(L, 2, "file", NULL);
	if (!mb_machine_paused(m))
		return luaL_error(L, "snapshot: the machine is running (pause it first)");
	if (!file) {
		for (size_t i = 0; i < mb_machine_ndevices(m); i++) {
			struct mb_device *d = mb_machine_device_at(m, i);
			if (strcmp(mb_device_kind(d), "device") == 0 &&
			    !ignored(L, 2, mb_device_name(d)))
				return luaL_error(L, "snapshot: device %s is an mb.device "
						  "(registers in Lua): its Lua state cannot "
						  "be saved (ignore = { \"%s\" } to take the "
						  "snapshot without it)", mb_device_name(d),
						  mb_device_name(d));
		}
	}
	if (file) {
		push_conf(L, m, 2);
		struct buf *b = buf_new(L);
		encode(L, -2, b, "machine", 0);
		lua_pushlstring(L, b->p, b->n);
		lua_replace(L, -3); /* the encoded conf, then the buffer */
		lua_pop(L, 1);
	}
	struct lsnap *ls = push_snap(L, NULL);
	if (mb_snapshot_take(m, &ls->s))
		return mbl_fail(L, NULL);
	lua_pushvalue(L, 1); /* the snapshot keeps its machine alive */
	lua_setiuservalue(L, -2, 1);
	if (!file)
		return 1;
	size_t len;
	const char *conf = lua_tolstring(L, -2, &len);
	if (mb_snapshot_set_conf(ls->s, conf, len) || mb_snapshot_write(ls->s, file))
		return mbl_fail(L, NULL);
	mb_snapshot_free(ls->s);
	ls->s = NULL;
	lua_settop(L, 1);
	return 1;
}

static void push_stats(lua_State *L, const struct mb_restore_stats *st)
{
	lua_createtable(L, 0, 2);
	lua_pushboolean(L, st->dirty_only);
	lua_setfield(L, -2, "dirty_only");
	lua_pushinteger(L, (lua_Integer)st->pages_copied);
	lua_setfield(L, -2, "pages_copied");
}

/* A writable disk without an overlay is not rolled back by a restore: if
 * the guest wrote it since s (its write or discard count differs from the
 * one s saved), refuse, naming it, unless the caller said keep_disk_writes. */
static void check_plain_disks(lua_State *L, struct mb_machine *m,
			      const struct mb_snapshot *s)
{
	lua_getiuservalue(L, 1, 1);
	lua_Integer n = luaL_len(L, -1);
	for (lua_Integer j = 1; j <= n; j++) {
		lua_rawgeti(L, -1, j);
		struct mbl_dev *d = lua_touserdata(L, -1);
		lua_pop(L, 1);
		if (strcmp(d->cls->name, "virtio_blk"))
			continue;
		const struct mb_virtio_blk_attach_config *c = d->cfg;
		const char *name = mb_device_name(d->dev);
		size_t size;
		const struct mb_virtio_blk_state *was =
			mb_snapshot_device_state(s, name, &size);
		struct mb_virtio_blk_state now;
		if (c->overlay || c->readonly || !was || size != sizeof now ||
		    mb_device_save(d->dev, &now))
			continue;
		if (now.writes != was->writes || now.discards != was->discards)
			luaL_error(L, "restore: disk %s was written since the snapshot "
				   "and has no overlay: a restore does not take its "
				   "writes back (add it with disk = \"overlay\", or pass "
				   "m:restore(s, { keep_disk_writes = true }))", name);
	}
	lua_pop(L, 1);
}

/* m:restore(s [, { keep_disk_writes }]) -> m, { dirty_only, pages_copied } */
static int l_restore_in(lua_State *L)
{
	static const char *const keys[] = { "keep_disk_writes", NULL };
	struct mbl_machine *mm = mbl_checkmachine(L, 1);
	struct mb_machine *m = mbl_live(L, mm);
	struct lsnap *ls = checksnap(L, 2);
	bool keep = false;
	if (!lua_isnoneornil(L, 3)) {
		luaL_checktype(L, 3, LUA_TTABLE);
		mbl_checkopts(L, 3, "restore", keys);
		keep = mbl_optbool(L, 3, "keep_disk_writes", 0);
	}
	if (!mb_machine_paused(m))
		return luaL_error(L, "restore: the machine is running (pause it first)");
	if (!keep)
		check_plain_disks(L, m, ls->s);
	struct mb_restore_stats st = { 0 };
	if (mb_snapshot_restore(m, ls->s, &st))
		return mbl_fail(L, NULL);
	lua_settop(L, 1);
	push_stats(L, &st);
	return 2;
}

/* ---- mb.restore -------------------------------------------------------------- */

static void check_disks(lua_State *L, int conf, bool allow)
{
	luaL_checkstack(L, 20, "restore");
	lua_getfield(L, conf, "disks");
	if (!lua_istable(L, -1))
		luaL_error(L, "restore: the configuration record has no disk list");
	lua_Integer n = luaL_len(L, -1);
	for (lua_Integer i = 1; i <= n; i++) {
		lua_geti(L, -1, i);
		lua_getfield(L, -1, "path");
		lua_getfield(L, -2, "size");
		lua_getfield(L, -3, "mtime");
		lua_getfield(L, -4, "mtime_ns");
		lua_getfield(L, -5, "device");
		const char *path = lua_tostring(L, -5), *dev = lua_tostring(L, -1);
		if (!path || !dev)
			luaL_error(L, "restore: the configuration record is malformed");
		struct stat st;
		if (stat(path, &st))
			luaL_error(L, "restore: disk %s: %s: %s", dev, path, strerror(errno));
		lua_Integer size = lua_tointeger(L, -4), sec = lua_tointeger(L, -3),
			    ns = lua_tointeger(L, -2);
		if (!allow && (st.st_size != size || st.st_mtim.tv_sec != sec ||
			       st.st_mtim.tv_nsec != ns))
			luaL_error(L, "restore: disk %s: %s changed since the snapshot "
				   "(size %I -> %I, mtime %I.%09I -> %I.%09I); pass "
				   "allow_changed_disks = true to use it anyway", dev,
				   path, size, (lua_Integer)st.st_size, sec, ns,
				   (lua_Integer)st.st_mtim.tv_sec,
				   (lua_Integer)st.st_mtim.tv_nsec);
		lua_pop(L, 6);
	}
	lua_pop(L, 1);
}

/* Protected part of mb.restore. Stack: 1 opts, 2 snapshot, 3 conf,
 * 4 module table, 5 a holder table (holder[1]: the machine, for the caller
 * to close on failure), 6 the machine once made (pushed here). */
static int build(lua_State *L)
{
	struct lsnap *ls = checksnap(L, 2);
	luaL_checkstack(L, 40, "restore");
	lua_getfield(L, 4, "machine");
	lua_getfield(L, 3, "machine");
	if (!lua_istable(L, -1))
		return luaL_error(L, "restore: the configuration record has no machine");
	lua_call(L, 1, 1); /* 6: the machine */
	lua_pushvalue(L, 6);
	lua_rawseti(L, 5, 1);
	lua_getfield(L, 3, "devices");
	int devs = lua_gettop(L);
	if (!lua_istable(L, devs))
		return luaL_error(L, "restore: the configuration record has no devices");
	lua_getfield(L, 1, "consoles");
	int cons = lua_gettop(L);
	lua_newtable(L); /* names seen */
	int seen = lua_gettop(L);
	lua_Integer n = luaL_len(L, devs);
	for (lua_Integer i = 1; i <= n; i++) {
		lua_geti(L, devs, i);
		lua_getfield(L, -1, "class");
		lua_getfield(L, -2, "name");
		lua_getfield(L, -3, "opts");
		const char *cls = lua_tostring(L, -3), *name = lua_tostring(L, -2);
		if (!cls || !name || !lua_istable(L, -1))
			return luaL_error(L, "restore: the configuration record is malformed");
		lua_pushboolean(L, 1);
		lua_setfield(L, seen, name);
		if (lua_istable(L, cons) && lua_getfield(L, cons, name) != LUA_TNIL) {
			lua_setfield(L, -2, "console");
		} else if (lua_istable(L, cons)) {
			lua_pop(L, 1);
		}
		if (lua_getfield(L, 4, cls) != LUA_TFUNCTION)
			return luaL_error(L, "restore: device %s: this moonbox has no "
					  "mb.%s", name, cls);
		lua_pushvalue(L, -2);
		lua_call(L, 1, 1); /* the device */
		lua_getfield(L, 6, "add");
		lua_pushvalue(L, 6);
		lua_pushvalue(L, -3);
		lua_call(L, 2, 1);
		lua_getfield(L, -1, "name");
		if (!lua_isstring(L, -1) || strcmp(lua_tostring(L, -1), name))
			return luaL_error(L, "restore: device %s came back named %s",
					  name, lua_tostring(L, -1));
		lua_pop(L, 7);
	}
	if (lua_istable(L, cons)) {
		lua_pushnil(L);
		while (lua_next(L, cons)) {
			lua_pop(L, 1);
			if (lua_type(L, -1) != LUA_TSTRING)
				return luaL_error(L, "consoles: keys are device names");
			if (lua_getfield(L, seen, lua_tostring(L, -1)) == LUA_TNIL)
				return luaL_error(L, "consoles: %s is not a device of the "
						  "snapshot", lua_tostring(L, -2));
			lua_pop(L, 1);
		}
	}
	struct mb_machine *m = mbl_live(L, mbl_checkmachine(L, 6));
	if (mb_snapshot_restore(m, ls->s, NULL))
		return mbl_fail(L, NULL);
	lua_settop(L, 6);
	return 1;
}

/* mb.restore { file = PATH, consoles = { NAME = console }, allow_changed_disks } */
static int l_restore_file(lua_State *L)
{
	static const char *const keys[] = { "file", "consoles",
					    "allow_changed_disks", NULL };
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 1);
	mbl_checkopts(L, 1, "restore", keys);
	const char *file = mbl_optstr(L, 1, "file", NULL);
	if (!file)
		return luaL_error(L, "file: missing (the snapshot to restore)");
	bool allow = mbl_optbool(L, 1, "allow_changed_disks", 0);
	int ct = lua_getfield(L, 1, "consoles");
	if (ct != LUA_TNIL && ct != LUA_TTABLE)
		return luaL_error(L, "consoles: expected a table { NAME = console }");
	lua_pop(L, 1);
	struct lsnap *ls = push_snap(L, NULL); /* 2 */
	if (mb_snapshot_read(file, &ls->s))
		return mbl_fail(L, NULL);
	size_t len;
	const void *conf = mb_snapshot_conf(ls->s, &len);
	if (!len)
		return luaL_error(L, "restore: %s has no machine description (taken "
				  "from C?): it can only be restored into a machine built "
				  "the same way", file);
	struct dec d = { conf, len, 0 };
	decode(L, &d, 0); /* 3 */
	if (!lua_istable(L, 3) || d.at != len)
		return luaL_error(L, "restore: the configuration record is malformed");
	lua_getfield(L, 3, "version");
	if (lua_tointeger(L, -1) != 1)
		return luaL_error(L, "restore: configuration version %s is not 1",
				  luaL_tolstring(L, -1, NULL));
	lua_pop(L, 1);
	check_disks(L, 3, allow);
	lua_pushvalue(L, lua_upvalueindex(1)); /* 4 */
	lua_newtable(L);                       /* 5 */
	lua_pushcfunction(L, build);
	for (int i = 1; i <= 5; i++)
		lua_pushvalue(L, i);
	if (lua_pcall(L, 5, 1, 0) != LUA_OK) {
		/* Nothing half-built survives: close the machine if there was one. */
		if (lua_rawgeti(L, 5, 1) == LUA_TUSERDATA) {
			lua_getfield(L, -1, "close");
			lua_pushvalue(L, -2);
			lua_pcall(L, 1, 0, 0);
		}
		lua_pop(L, 1);
		return lua_error(L);
	}
	return 1;
}

static const luaL_Reg snap_meta[] = {
	{ "__gc", snap_gc }, { "__close", snap_gc }, { "__tostring", snap_tostring },
	{ NULL, NULL },
};

void mbl_open_snapshot(lua_State *L)
{
	if (luaL_newmetatable(L, MBL_SNAPSHOT)) {
		luaL_setfuncs(L, snap_meta, 0);
		lua_newtable(L);
		lua_pushcfunction(L, snap_gc);
		lua_setfield(L, -2, "free");
		lua_setfield(L, -2, "__index");
	}
	lua_pop(L, 1);
	mbl_machine_method(L, "snapshot", l_snapshot);
	mbl_machine_method(L, "restore", l_restore_in);
	lua_pushvalue(L, -1); /* the module table, for mb.machine and devices */
	lua_pushcclosure(L, l_restore_file, 1);
	lua_setfield(L, -2, "restore");
}

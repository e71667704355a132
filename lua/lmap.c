/* m:mtree() and m:irqs(): what the machine is made of, as tables that
 * print the way a person reads them (QEMU's `info mtree` / `info pic`).
 * mtree: every range of both buses (core/bus.c's walk) with its owner's
 * name and kind, and guest RAM; irqs: each line of the controller with the
 * devices on it, its level and rising edges (core/machine.c), and for the
 * user 8259 pair its mask, request and in-service bits. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "lua/lmoonbox.h"

#define MBL_MTREE "moonbox.mtree"
#define MBL_IRQS "moonbox.irqs"

struct walk {
	lua_State *L;
	struct mb_machine *m;
	const char *bus;
	lua_Integer n;
};

static void push_range(lua_State *L, const char *bus, uint64_t base,
		       uint64_t len, const char *name, const char *kind)
{
	lua_createtable(L, 0, 6);
	lua_pushstring(L, bus);
	lua_setfield(L, -2, "bus");
	lua_pushinteger(L, (lua_Integer)base);
	lua_setfield(L, -2, "base");
	lua_pushinteger(L, (lua_Integer)len);
	lua_setfield(L, -2, "size");
	lua_pushinteger(L, (lua_Integer)(base + len - 1));
	lua_setfield(L, -2, "last");
	lua_pushstring(L, name);
	lua_setfield(L, -2, "name");
	lua_pushstring(L, kind);
	lua_setfield(L, -2, "kind");
}

static int one_range(void *opaque, const struct mb_bus_range *r)
{
	struct walk *w = opaque;
	struct mb_device *d = mb_machine_device(w->m, r->name);
	push_range(w->L, w->bus, r->base, r->len, r->name,
		   d ? mb_device_kind(d) : "?");
	lua_rawseti(w->L, -2, ++w->n);
	return 0;
}

/* m:mtree() -> { { bus = "pio"|"mmio"|"ram", base, size, last, name, kind }, ... } */
static int l_mtree(lua_State *L)
{
	struct mb_machine *m = mbl_live(L, mbl_checkmachine(L, 1));
	struct walk w = { .L = L, .m = m };
	lua_newtable(L);
	w.bus = "pio";
	mb_bus_foreach(mb_machine_pio(m), one_range, &w);
	w.bus = "mmio";
	mb_bus_foreach(mb_machine_mmio(m), one_range, &w);
	struct mb_mem *mem = mb_machine_mem(m);
	for (size_t i = 0; i < mb_mem_count(mem); i++) {
		const struct mb_mem_region *r = mb_mem_region(mem, i);
		push_range(L, "ram", r->base, r->size, r->name[0] ? r->name : "ram",
			   r->flags & MB_MEM_READONLY ? "rom" : "ram");
		lua_rawseti(L, -2, ++w.n);
	}
	luaL_setmetatable(L, MBL_MTREE);
	return 1;
}

static lua_Integer ifield(lua_State *L, int t, const char *k)
{
	lua_getfield(L, t, k);
	lua_Integer v = lua_tointeger(L, -1);
	lua_pop(L, 1);
	return v;
}

static const char *sfield(lua_State *L, int t, const char *k)
{
	lua_getfield(L, t, k);
	const char *s = lua_tostring(L, -1); /* kept alive by the table */
	lua_pop(L, 1);
	return s ? s : "";
}

static int mtree_tostring(lua_State *L)
{
	luaL_Buffer b;
	const char *last_bus = "";
	char line[160];
	luaL_buffinit(L, &b);
	for (lua_Integer i = 1; lua_rawgeti(L, 1, i) == LUA_TTABLE; i++) {
		int t = lua_gettop(L);
		const char *bus = sfield(L, t, "bus");
		if (strcmp(bus, last_bus)) {
			snprintf(line, sizeof line, "%s%s:\n", i > 1 ? "\n" : "", bus);
			luaL_addstring(&b, line);
			last_bus = bus;
		}
		int w = strcmp(bus, "pio") ? 16 : 4;
		snprintf(line, sizeof line, "  %0*" PRIx64 "-%0*" PRIx64 "  %s (%s)\n", w,
			 (uint64_t)ifield(L, t, "base"), w, (uint64_t)ifield(L, t, "last"),
			 sfield(L, t, "name"), sfield(L, t, "kind"));
		luaL_addstring(&b, line);
		lua_pop(L, 1); /* the strings stay valid: the table is in 1 */
	}
	lua_pop(L, 1);
	luaL_pushresult(&b);
	return 1;
}

/* The user 8259 pair's registers, when the machine has one of its own. */
static bool pic_state(struct mb_machine *m, struct mb_pic_state *st)
{
	for (size_t i = 0; i < mb_machine_ndevices(m); i++) {
		struct mb_device *d = mb_machine_device_at(m, i);
		const struct mb_state_desc *desc = mb_device_state_desc(d);
		if (strcmp(mb_device_kind(d), "pic8259") == 0 && desc &&
		    desc->size == sizeof *st && mb_device_save(d, st) == 0)
			return true;
	}
	return false;
}

/* m:irqs() -> { [line + 1] = { line, owners = { names }, level, raised,
 *   masked, pending, in_service, vector (8259 only) }, chip = "user"|"kernel" } */
static int l_irqs(lua_State *L)
{
	struct mb_machine *m = mbl_live(L, mbl_checkmachine(L, 1));
	struct mb_pic_state ps;
	bool pic = mb_machine_irqchip(m) == MB_IRQCHIP_USER && pic_state(m, &ps);
	unsigned n = mb_machine_irq_lines(m);
	lua_createtable(L, (int)n, 1);
	lua_pushstring(L, mb_machine_irqchip(m) == MB_IRQCHIP_KERNEL ? "kernel" : "user");
	lua_setfield(L, -2, "chip");
	for (unsigned line = 0; line < n; line++) {
		struct mb_irq_info in;
		if (mb_machine_irq_info(m, line, &in))
			return mbl_fail(L, "irqs");
		lua_createtable(L, 0, 8);
		lua_pushinteger(L, line);
		lua_setfield(L, -2, "line");
		lua_newtable(L);
		int k = 0;
		for (size_t i = 0; i < mb_machine_ndevices(m); i++) {
			struct mb_device *d = mb_machine_device_at(m, i);
			if (mb_device_irq_line(d) == (int)line) {
				lua_pushstring(L, mb_device_name(d));
				lua_rawseti(L, -2, ++k);
			}
		}
		lua_setfield(L, -2, "owners");
		lua_pushinteger(L, in.level);
		lua_setfield(L, -2, "level");
		lua_pushinteger(L, (lua_Integer)in.raised);
		lua_setfield(L, -2, "raised");
		if (pic) {
			const struct mb_pic_chip_state *c = line < 8 ? &ps.master : &ps.slave;
			unsigned bit = 1u << (line & 7);
			lua_pushboolean(L, (c->imr & bit) != 0);
			lua_setfield(L, -2, "masked");
			lua_pushboolean(L, (c->irr & bit) != 0);
			lua_setfield(L, -2, "pending");
			lua_pushboolean(L, (c->isr & bit) != 0);
			lua_setfield(L, -2, "in_service");
			lua_pushinteger(L, c->vector_base + (line & 7));
			lua_setfield(L, -2, "vector");
		}
		lua_rawseti(L, -2, line + 1);
	}
	luaL_setmetatable(L, MBL_IRQS);
	return 1;
}

/* Lines in use or that ever rose; the rest are summed up in one line. */
static int irqs_tostring(lua_State *L)
{
	luaL_Buffer b;
	char line[200];
	int quiet = 0;
	luaL_buffinit(L, &b);
	snprintf(line, sizeof line, "irq (%s irqchip)  level  raised  owners\n",
		 sfield(L, 1, "chip"));
	luaL_addstring(&b, line);
	for (lua_Integer i = 1; lua_rawgeti(L, 1, i) == LUA_TTABLE; i++) {
		int t = lua_gettop(L);
		lua_getfield(L, t, "owners");
		int o = lua_gettop(L);
		lua_Integer raised = ifield(L, t, "raised");
		if (lua_rawlen(L, o) == 0 && raised == 0) {
			quiet++;
			lua_pop(L, 2);
			continue;
		}
		size_t k = (size_t)snprintf(line, sizeof line, "%3d  %5d  %10" PRId64 "  ",
					    (int)ifield(L, t, "line"),
					    (int)ifield(L, t, "level"), (int64_t)raised);
		for (lua_Integer j = 1; lua_rawgeti(L, o, j) == LUA_TSTRING && k < sizeof line; j++) {
			k += (size_t)snprintf(line + k, sizeof line - k, "%s%s", j > 1 ? "," : "",
					      lua_tostring(L, -1));
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
		lua_getfield(L, t, "vector");
		if (!lua_isnil(L, -1) && k < sizeof line) {
			lua_getfield(L, t, "masked");
			lua_getfield(L, t, "pending");
			lua_getfield(L, t, "in_service");
			k += (size_t)snprintf(line + k, sizeof line - k,
					      "  vector 0x%02x%s%s%s", (int)lua_tointeger(L, -4),
					      lua_toboolean(L, -3) ? " masked" : "",
					      lua_toboolean(L, -2) ? " pending" : "",
					      lua_toboolean(L, -1) ? " in-service" : "");
			lua_pop(L, 3);
		}
		lua_pop(L, 1);
		luaL_addstring(&b, line);
		luaL_addchar(&b, '\n');
		lua_pop(L, 2);
	}
	lua_pop(L, 1);
	if (quiet) {
		snprintf(line, sizeof line, "(%d more lines unused)\n", quiet);
		luaL_addstring(&b, line);
	}
	luaL_pushresult(&b);
	return 1;
}

void mbl_open_map(lua_State *L)
{
	if (luaL_newmetatable(L, MBL_MTREE)) {
		lua_pushcfunction(L, mtree_tostring);
		lua_setfield(L, -2, "__tostring");
	}
	lua_pop(L, 1);
	if (luaL_newmetatable(L, MBL_IRQS)) {
		lua_pushcfunction(L, irqs_tostring);
		lua_setfield(L, -2, "__tostring");
	}
	lua_pop(L, 1);
	mbl_machine_method(L, "mtree", l_mtree);
	mbl_machine_method(L, "irqs", l_irqs);
}

/* mb.machine and its methods. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lua/lmoonbox.h"
#include "moonbox/sandbox.h"

static const char *const machine_keys[] = { "cpus", "memory", "irqchip",
					    "cpuid", "pit", "log_unclaimed",
					    "seccomp", "acpi", NULL };

struct mbl_machine *mbl_checkmachine(lua_State *L, int idx)
{
	return luaL_checkudata(L, idx, MBL_MACHINE);
}

struct mb_machine *mbl_live(lua_State *L, struct mbl_machine *mm)
{
	if (!mm->m)
		luaL_error(L, "machine: already closed");
	return mm->m;
}

/* ---- Lua values the machine's C callbacks need ---------------------------
 * No registry reference may hold anything that leads back to a machine (a
 * device handle, a function closing over the machine): that would keep it
 * from being collected. Instead each machine handle has, as user value 2,
 * its own table "refs" (C key -> value), and the registry only maps the
 * machine (lightuserdata mm) to its handle through a weak-valued table:
 * C code finds the values while the machine lives, the collector sees
 * refs only through the machine, and close() drops the table whole. */
#define LIVE "moonbox.live"

static void push_live(lua_State *L)
{
	if (lua_getfield(L, LUA_REGISTRYINDEX, LIVE) == LUA_TTABLE)
		return;
	lua_pop(L, 1);
	lua_newtable(L);
	lua_createtable(L, 0, 1);
	lua_pushstring(L, "v");
	lua_setfield(L, -2, "__mode");
	lua_setmetatable(L, -2);
	lua_pushvalue(L, -1);
	lua_setfield(L, LUA_REGISTRYINDEX, LIVE);
}

/* Push mm's refs table; false (nothing pushed) once it is closed or gone. */
static bool push_refs(lua_State *L, struct mbl_machine *mm)
{
	push_live(L);
	if (lua_rawgetp(L, -1, mm) != LUA_TUSERDATA) {
		lua_pop(L, 2);
		return false;
	}
	bool ok = lua_getiuservalue(L, -1, 2) == LUA_TTABLE;
	lua_replace(L, -3);
	lua_pop(L, 1);
	if (!ok)
		lua_pop(L, 1);
	return ok;
}

void mbl_ref_set(lua_State *L, struct mbl_machine *mm, const void *key, int idx)
{
	idx = lua_absindex(L, idx);
	if (!push_refs(L, mm))
		return;
	lua_pushvalue(L, idx);
	lua_rawsetp(L, -2, key);
	lua_pop(L, 1);
}

int mbl_ref_push(lua_State *L, struct mbl_machine *mm, const void *key)
{
	if (!push_refs(L, mm)) {
		lua_pushnil(L);
		return LUA_TNIL;
	}
	int t = lua_rawgetp(L, -1, key);
	lua_remove(L, -2);
	return t;
}

static void check_cpuid(lua_State *L, int idx, struct mb_cpuid_policy *p)
{
	static const char *const keys[] = { "hide", "set", "vendor", "family",
					    NULL };
	if (lua_getfield(L, idx, "cpuid") == LUA_TNIL) {
		lua_pop(L, 1);
		return;
	}
	if (!lua_istable(L, -1))
		luaL_error(L, "cpuid: expected a table { hide = {...}, set = {...} }, "
			   "got %s", luaL_typename(L, -1));
	mbl_checkopts(L, -1, "cpuid", keys);
	p->vendor = mbl_optstr(L, -1, "vendor", NULL); /* anchored by the table */
	if (p->vendor && strlen(p->vendor) != 12)
		luaL_error(L, "cpuid.vendor: \"%s\" is not 12 characters "
			   "(\"GenuineIntel\", \"AuthenticAMD\")", p->vendor);
	lua_Integer fam = mbl_optint(L, -1, "family", 0);
	if (fam < 0 || fam > 270)
		luaL_error(L, "cpuid.family: %d is not 1-270", (int)fam);
	p->family = (unsigned)fam;
	for (int which = 0; which < 2; which++) {
		const char *key = which ? "set" : "hide";
		unsigned *n = which ? &p->nset : &p->nhide;
		const char **names = which ? p->set : p->hide;
		if (lua_getfield(L, -1, key) == LUA_TNIL) {
			lua_pop(L, 1);
			continue;
		}
		if (!lua_istable(L, -1))
			luaL_error(L, "cpuid.%s: expected a list of feature names", key);
		lua_Integer len = luaL_len(L, -1);
		for (lua_Integer i = 1; i <= len; i++) {
			lua_geti(L, -1, i);
			const char *f = lua_tostring(L, -1);
			uint32_t a, b;
			unsigned c, d;
			if (lua_type(L, -1) != LUA_TSTRING)
				luaL_error(L, "cpuid.%s[%d]: expected a feature name",
					   key, (int)i);
			if (mb_cpuid_feature(f, &a, &b, &c, &d))
				luaL_error(L, "cpuid.%s: unknown feature \"%s\"", key, f);
			if (*n == MB_CPUID_MAX)
				luaL_error(L, "cpuid.%s: more than %d names", key,
					   MB_CPUID_MAX);
			names[(*n)++] = f; /* anchored by the option table */
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
}

/* memory = SIZE, or a list of { base, size, file, readonly, name }. */
struct region {
	uint64_t base, size;
	const char *file, *name;
	bool ro;
};

static int check_memory(lua_State *L, int idx, struct region *r, int max)
{
	static const char *const keys[] = { "base", "size", "file", "readonly",
					    "name", NULL };
	int t = lua_getfield(L, idx, "memory"), n = 0;
	if (t == LUA_TNIL) {
		r[0] = (struct region){ 0, 128 << 20, NULL, "ram", false };
		n = 1;
	} else if (t == LUA_TNUMBER || t == LUA_TSTRING) {
		r[0] = (struct region){ 0, mbl_tosize(L, -1, "memory"), NULL, "ram",
					false };
		n = 1;
	} else if (t == LUA_TTABLE) {
		lua_Integer len = luaL_len(L, -1);
		if (len < 1 || len > max)
			luaL_error(L, "memory: expected 1 to %d regions, got %d", max,
				   (int)len);
		for (lua_Integer i = 1; i <= len; i++) {
			char what[32];
			snprintf(what, sizeof what, "memory[%d]", (int)i);
			if (lua_geti(L, -1, i) != LUA_TTABLE)
				luaL_error(L, "%s: expected a table { base = ..., size = "
					   "... }", what);
			mbl_checkopts(L, -1, what, keys);
			struct region *g = &r[n++];
			char k[48];
			snprintf(k, sizeof k, "%s.base", what);
			g->base = mbl_optsize(L, -1, "base", 0);
			snprintf(k, sizeof k, "%s.size", what);
			if (lua_getfield(L, -1, "size") == LUA_TNIL)
				luaL_error(L, "%s: missing", k);
			g->size = mbl_tosize(L, -1, k);
			lua_pop(L, 1);
			g->file = mbl_optstr(L, -1, "file", NULL);
			g->ro = mbl_optbool(L, -1, "readonly", 0);
			g->name = mbl_optstr(L, -1, "name", g->ro ? "rom" : "ram");
			if (g->ro && !g->file)
				luaL_error(L, "%s: readonly needs a file to fill it", what);
			lua_pop(L, 1);
		}
	} else {
		luaL_error(L, "memory: expected a size or a list of regions, got %s",
			   luaL_typename(L, -1));
	}
	lua_pop(L, 1);
	for (int i = 0; i < n; i++) {
		if (r[i].size == 0)
			luaL_error(L, "memory: region %s has size 0", r[i].name);
		if ((r[i].base | r[i].size) & 0xfff)
			luaL_error(L, "memory: region %s (base 0x%I, size 0x%I) is not "
				   "4K-aligned", r[i].name, (lua_Integer)r[i].base,
				   (lua_Integer)r[i].size);
		for (int j = 0; j < i; j++)
			if (r[i].base < r[j].base + r[j].size &&
			    r[j].base < r[i].base + r[i].size)
				luaL_error(L, "memory: region %s overlaps region %s",
					   r[i].name, r[j].name);
	}
	return n;
}

static const char machine_opts_key = 0; /* refs key: mb.machine's options */

static int l_machine(lua_State *L)
{
	static const char *const chips[] = { "user", "kernel", NULL };
	struct mb_machine_config cfg = { 0 };
	struct region reg[16];
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 1);
	mbl_checkopts(L, 1, "machine", machine_keys);
	lua_Integer cpus = mbl_optint(L, 1, "cpus", 1);
	if (cpus < 1 || cpus > MB_MAX_CPUS)
		luaL_error(L, "cpus: %d is not between 1 and %d", (int)cpus,
			   MB_MAX_CPUS);
	cfg.cpus = (unsigned)cpus;
	cfg.irqchip = mbl_checkenum(L, 1, "irqchip", "user", chips);
	check_cpuid(L, 1, &cfg.cpuid);
	int nreg = check_memory(L, 1, reg, 16);
	int log = mbl_optbool(L, 1, "log_unclaimed", 0);
	int seccomp = mbl_optbool(L, 1, "seccomp", mb_seccomp_default(-1));
	static const char *const pits[] = { "user", "kernel", NULL };
	int pit = mbl_checkenum(L, 1, "pit", "user", pits);
	if (pit == 1 && cfg.irqchip != MB_IRQCHIP_KERNEL)
		luaL_error(L, "pit: \"kernel\" needs irqchip = \"kernel\"");
	cfg.kernel_pit = pit == 1;
	cfg.acpi = mbl_optbool(L, 1, "acpi", 0);

	struct mbl_machine *mm = lua_newuserdatauv(L, sizeof *mm, 2);
	memset(mm, 0, sizeof *mm);
	mm->devices = LUA_NOREF;
	luaL_setmetatable(L, MBL_MACHINE);
	if (mb_machine_create(&cfg, &mm->m))
		return luaL_error(L, "machine: %s", mb_errmsg());
	for (int i = 0; i < nreg; i++)
		if (mb_machine_add_memory(mm->m, reg[i].base, reg[i].size,
					  reg[i].file, reg[i].ro, reg[i].name))
			return luaL_error(L, "memory: %s", mb_errmsg());
	mb_machine_set_seccomp(mm->m, seccomp);
	mb_bus_set_log(mb_machine_pio(mm->m), log);
	mb_bus_set_log(mb_machine_mmio(mm->m), log);
	lua_newtable(L); /* attached devices, kept alive with the machine */
	lua_setiuservalue(L, -2, 1);
	lua_newtable(L); /* refs: see mbl_ref_set */
	lua_setiuservalue(L, -2, 2);
	push_live(L);
	lua_pushvalue(L, -2);
	lua_rawsetp(L, -2, mm);
	lua_pop(L, 1);
	mbl_ref_set(L, mm, &machine_opts_key, 1); /* for snapshot files */
	if (cfg.acpi)
		mbl_acpi_pm_adopt(L, -1);
	return 1;
}

void mbl_push_machine(lua_State *L, struct mb_machine *m)
{
	push_live(L); /* one handle per machine */
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		struct mbl_machine *mm = lua_touserdata(L, -1);
		if (mm && mm->m == m) {
			lua_remove(L, -2);
			lua_remove(L, -2);
			return;
		}
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
	struct mbl_machine *mm = lua_newuserdatauv(L, sizeof *mm, 2);
	memset(mm, 0, sizeof *mm);
	mm->devices = LUA_NOREF;
	mm->m = m; /* not closed by Lua: the program owns it */
	luaL_setmetatable(L, MBL_MACHINE);
	lua_newtable(L);
	lua_setiuservalue(L, -2, 1);
	lua_newtable(L);
	lua_setiuservalue(L, -2, 2);
	push_live(L);
	lua_pushvalue(L, -2);
	lua_rawsetp(L, -2, mm);
	lua_pop(L, 1);
	/* keep it: the live table is weak */
	lua_pushvalue(L, -1);
	lua_setfield(L, LUA_REGISTRYINDEX, "moonbox.devproc.machine");
}

void mbl_push_machine_opts(lua_State *L, struct mbl_machine *mm)
{
	mbl_ref_push(L, mm, &machine_opts_key);
}

static int l_close(lua_State *L)
{
	struct mbl_machine *mm = mbl_checkmachine(L, 1);
	if (mm->m) {
		mm->L = L;
		mb_machine_destroy(mm->m);
		mm->m = NULL;
	}
	/* Whatever the C side still held for Lua goes with the machine. */
	push_live(L);
	lua_pushnil(L);
	lua_rawsetp(L, -2, mm);
	lua_pushnil(L);
	lua_setiuservalue(L, 1, 2);
	return 0;
}

static int l_tostring(lua_State *L)
{
	struct mbl_machine *mm = mbl_checkmachine(L, 1);
	if (!mm->m)
		lua_pushstring(L, "moonbox.machine (closed)");
	else
		lua_pushfstring(L, "moonbox.machine (%d cpu, %s irqchip)",
				(int)mb_machine_cpus(mm->m),
				mb_machine_irqchip(mm->m) == MB_IRQCHIP_KERNEL
					? "kernel" : "user");
	return 1;
}

static int push_result(lua_State *L, const struct mb_result *r)
{
	lua_createtable(L, 0, 3);
	lua_pushstring(L, mb_stop_name(r->reason));
	lua_setfield(L, -2, "reason");
	lua_pushinteger(L, r->exit_code);
	lua_setfield(L, -2, "exit_code");
	if (r->message[0]) {
		lua_pushstring(L, r->message);
		lua_setfield(L, -2, "message");
	}
	return 1;
}

static double opt_timeout(lua_State *L, int idx)
{
	static const char *const keys[] = { "timeout", NULL };
	if (lua_isnoneornil(L, idx))
		return 0;
	mbl_checkopts(L, idx, "run", keys);
	double t = 0;
	int ty = lua_getfield(L, idx, "timeout");
	if (ty != LUA_TNIL) {
		if (ty != LUA_TNUMBER || lua_tonumber(L, -1) < 0)
			luaL_error(L, "timeout: expected seconds (a number >= 0), got %s",
				   lua_tostring(L, -1) ? lua_tostring(L, -1)
						       : luaL_typename(L, -1));
		t = lua_tonumber(L, -1);
	}
	lua_pop(L, 1);
	return t;
}

/* Ctrl-a c on a stdio console: the REPL the CLI registered (registry
 * "moonbox.repl") runs with the machine paused, then the run goes on with
 * the console back in raw mode. Without one, the run ends with "console". */
static bool console_break(lua_State *L, const struct mb_result *r)
{
	if (r->reason != MB_STOP_CONSOLE)
		return false;
	if (lua_getfield(L, LUA_REGISTRYINDEX, "moonbox.repl") != LUA_TFUNCTION) {
		lua_pop(L, 1);
		return false;
	}
	lua_pushvalue(L, 1);
	lua_pushboolean(L, 1);
	lua_setfield(L, LUA_REGISTRYINDEX, "moonbox.in_break");
	int st = lua_pcall(L, 1, 0, 0);
	lua_pushnil(L);
	lua_setfield(L, LUA_REGISTRYINDEX, "moonbox.in_break");
	if (st != LUA_OK)
		lua_error(L);
	mb_console_reenter();
	return true;
}

static int l_run(lua_State *L)
{
	struct mbl_machine *mm = mbl_checkmachine(L, 1);
	double t = opt_timeout(L, 2);
	struct mb_result r;
	mm->L = L;
	mbl_gdb_autostart(L, 1);
	do { /* breakpoint functions that say "continue" run it again */
		if (mb_machine_run(mbl_live(L, mm), t, &r))
			return mbl_fail(L, "run");
	} while (mbl_debug_continue(L, 1, &r) || console_break(L, &r));
	push_result(L, &r);
	mbl_debug_annotate(L, 1, &r);
	return 1;
}

static int l_start(lua_State *L)
{
	struct mbl_machine *mm = mbl_checkmachine(L, 1);
	mbl_gdb_autostart(L, 1);
	if (mb_machine_start(mbl_live(L, mm)))
		return mbl_fail(L, "start");
	lua_settop(L, 1);
	return 1;
}

static int l_wait(lua_State *L)
{
	struct mbl_machine *mm = mbl_checkmachine(L, 1);
	double t = opt_timeout(L, 2);
	struct mb_result r;
	mm->L = L;
	mb_machine_wait(mbl_live(L, mm), t, &r);
	while (mbl_debug_continue(L, 1, &r))
		if (mb_machine_run(mbl_live(L, mm), t, &r))
			return mbl_fail(L, "wait");
	push_result(L, &r);
	mbl_debug_annotate(L, 1, &r);
	return 1;
}

static int l_pause(lua_State *L)
{
	struct mbl_machine *mm = mbl_checkmachine(L, 1);
	mm->L = L;
	mb_machine_pause(mbl_live(L, mm));
	lua_settop(L, 1);
	return 1;
}

/* m:paused(): true when no vCPU runs (before the first run, after a
 * pause or a stop). */
static int l_paused(lua_State *L)
{
	struct mbl_machine *mm = mbl_checkmachine(L, 1);
	lua_pushboolean(L, mb_machine_paused(mbl_live(L, mm)));
	return 1;
}

static int l_resume(lua_State *L)
{
	struct mbl_machine *mm = mbl_checkmachine(L, 1);
	/* in the REPL of a Ctrl-a c: the run below goes on when it returns */
	if (lua_getfield(L, LUA_REGISTRYINDEX, "moonbox.in_break") == LUA_TBOOLEAN) {
		lua_pushboolean(L, 1);
		lua_setfield(L, LUA_REGISTRYINDEX, "moonbox.break_go");
		lua_settop(L, 1);
		return 1;
	}
	lua_pop(L, 1);
	if (mb_machine_resume(mbl_live(L, mm)))
		return mbl_fail(L, "resume");
	lua_settop(L, 1);
	return 1;
}

/* ---- registers ---------------------------------------------------------- */

#define REGS(X)                                                              \
	X(rax) X(rbx) X(rcx) X(rdx) X(rsi) X(rdi) X(rsp) X(rbp) X(r8) X(r9)   \
	X(r10) X(r11) X(r12) X(r13) X(r14) X(r15) X(rip) X(rflags)

static unsigned check_cpu(lua_State *L, struct mb_machine *m, int idx)
{
	lua_Integer c = luaL_optinteger(L, idx, 0);
	if (c < 0 || c >= (lua_Integer)mb_machine_cpus(m))
		luaL_error(L, "cpu: %d does not exist (0-%d)", (int)c,
			   (int)mb_machine_cpus(m) - 1);
	return (unsigned)c;
}

static void need_paused(lua_State *L, struct mb_machine *m)
{
	if (!mb_machine_paused(m))
		luaL_error(L, "registers: pause the machine first (m:pause())");
}

static int l_regs(lua_State *L)
{
	struct mb_machine *m = mbl_live(L, mbl_checkmachine(L, 1));
	unsigned cpu = check_cpu(L, m, 2);
	struct mb_regs r;
	struct mb_sregs s;
	need_paused(L, m);
	if (mb_vcpu_get_regs(m, cpu, &r) || mb_vcpu_get_sregs(m, cpu, &s))
		return mbl_fail(L, "regs");
	lua_createtable(L, 0, 28);
#define PUSH(n) lua_pushinteger(L, (lua_Integer)r.n), lua_setfield(L, -2, #n);
	REGS(PUSH)
#undef PUSH
#define PUSHS(n) lua_pushinteger(L, (lua_Integer)s.n), lua_setfield(L, -2, #n);
	PUSHS(cr0) PUSHS(cr2) PUSHS(cr3) PUSHS(cr4) PUSHS(efer)
#undef PUSHS
	lua_pushinteger(L, s.cs.selector), lua_setfield(L, -2, "cs");
	lua_pushinteger(L, s.ss.selector), lua_setfield(L, -2, "ss");
	lua_pushinteger(L, s.ds.selector), lua_setfield(L, -2, "ds");
	return 1;
}

static int l_set_regs(lua_State *L)
{
	struct mb_machine *m = mbl_live(L, mbl_checkmachine(L, 1));
	int t = lua_istable(L, 2) ? 2 : 3;
	unsigned cpu = t == 3 ? check_cpu(L, m, 2) : 0;
	static const char *const keys[] = {
#define NAME(n) #n,
		REGS(NAME)
#undef NAME
		NULL };
	struct mb_regs r;
	need_paused(L, m);
	mbl_checkopts(L, t, "set_regs", keys);
	if (mb_vcpu_get_regs(m, cpu, &r))
		return mbl_fail(L, "set_regs");
#define GET(n) r.n = (uint64_t)mbl_optint(L, t, #n, (lua_Integer)r.n);
	REGS(GET)
#undef GET
	if (mb_vcpu_set_regs(m, cpu, &r))
		return mbl_fail(L, "set_regs");
	lua_settop(L, 1);
	return 1;
}

/* ---- guest memory ------------------------------------------------------- */

static int l_read(lua_State *L)
{
	struct mb_machine *m = mbl_live(L, mbl_checkmachine(L, 1));
	uint64_t gpa = mbl_tosize(L, 2, "address");
	uint64_t len = mbl_tosize(L, 3, "length");
	if (len > (64u << 20))
		return luaL_error(L, "length: %I is more than 64M", (lua_Integer)len);
	luaL_Buffer b;
	char *p = luaL_buffinitsize(L, &b, len);
	if (mb_mem_read(mb_machine_mem(m), gpa, p, len))
		return mbl_fail(L, "read");
	luaL_pushresultsize(&b, len);
	return 1;
}

static int l_write(lua_State *L)
{
	struct mb_machine *m = mbl_live(L, mbl_checkmachine(L, 1));
	uint64_t gpa = mbl_tosize(L, 2, "address");
	size_t len;
	const char *s = luaL_checklstring(L, 3, &len);
	if (mb_mem_load(mb_machine_mem(m), gpa, s, len))
		return mbl_fail(L, "write");
	lua_settop(L, 1);
	return 1;
}

static int l_boot_flat(lua_State *L)
{
	static const char *const keys[] = { "file", "at", "entry", "mode", NULL };
	static const char *const modes[] = { "real", "protected", "long", NULL };
	struct mb_machine *m = mbl_live(L, mbl_checkmachine(L, 1));
	mbl_checkopts(L, 2, "boot_flat", keys);
	const char *file = mbl_optstr(L, 2, "file", NULL);
	if (!file)
		return luaL_error(L, "file: missing (the image to load)");
	int mode = mbl_checkenum(L, 2, "mode", "protected", modes);
	uint64_t at = mbl_optsize(L, 2, "at", mode == 0 ? 0x7c00 : 0x100000);
	uint64_t entry = mbl_optsize(L, 2, "entry", at);
	if (mb_boot_flat(m, file, at, entry, (enum mb_cpu_mode)mode))
		return mbl_fail(L, NULL);
	lua_settop(L, 1);
	return 1;
}

static int l_stats(lua_State *L)
{
	struct mb_machine *m = mbl_live(L, mbl_checkmachine(L, 1));
	struct mb_bus_stats pio, mmio;
	struct mb_vcpu_stats t = { 0 };
	for (unsigned i = 0; i < mb_machine_cpus(m); i++) {
		struct mb_vcpu_stats s;
		mb_vcpu_stats(m, i, &s);
		t.exits += s.exits, t.io += s.io, t.mmio += s.mmio, t.hlt += s.hlt;
		t.irq_injected += s.irq_injected;
	}
	mb_bus_stats(mb_machine_pio(m), &pio);
	mb_bus_stats(mb_machine_mmio(m), &mmio);
	lua_createtable(L, 0, 10);
#define SET(k, v) lua_pushinteger(L, (lua_Integer)(v)), lua_setfield(L, -2, k)
	SET("exits", t.exits);
	SET("io_exits", t.io);
	SET("mmio_exits", t.mmio);
	SET("hlt_exits", t.hlt);
	SET("irqs_injected", t.irq_injected);
	SET("unclaimed_pio_reads", pio.unclaimed_reads);
	SET("unclaimed_pio_writes", pio.unclaimed_writes);
	SET("unclaimed_mmio_reads", mmio.unclaimed_reads);
	SET("unclaimed_mmio_writes", mmio.unclaimed_writes);
	SET("memory_resident", mb_mem_resident(mb_machine_mem(m)));
#undef SET
	return 1;
}

/* m:cpuid(leaf [, subleaf]) -> eax, ebx, ecx, edx of the policy;
 * m:cpuid("name") -> whether the named feature is on. */
static int l_cpuid(lua_State *L)
{
	struct mb_machine *m = mbl_live(L, mbl_checkmachine(L, 1));
	uint32_t r[4], leaf, sub = 0;
	unsigned reg, bit;
	if (lua_type(L, 2) == LUA_TSTRING) {
		if (mb_cpuid_feature(lua_tostring(L, 2), &leaf, &sub, &reg, &bit))
			return mbl_fail(L, NULL);
		lua_pushboolean(L, mb_cpuid_get(m, leaf, sub, r) == 0 &&
					   (r[reg] >> bit & 1));
		return 1;
	}
	leaf = (uint32_t)luaL_checkinteger(L, 2);
	sub = (uint32_t)luaL_optinteger(L, 3, 0);
	if (mb_cpuid_get(m, leaf, sub, r))
		return mbl_fail(L, NULL);
	for (int i = 0; i < 4; i++)
		lua_pushinteger(L, r[i]);
	return 4;
}

/* m:fallback_counts() -> { clac = N, ... }: instructions moonbox completed
 * because KVM could not emulate them. */
static int l_fallback_counts(lua_State *L)
{
	struct mb_machine *m = mbl_live(L, mbl_checkmachine(L, 1));
	const char *names[64];
	uint64_t counts[64];
	unsigned n = mb_fallback_counts(m, names, counts, 64);
	lua_createtable(L, 0, (int)n);
	for (unsigned i = 0; i < n && i < 64; i++) {
		lua_pushinteger(L, (lua_Integer)counts[i]);
		lua_setfield(L, -2, names[i]);
	}
	return 1;
}

static const luaL_Reg machine_methods[] = {
	{ "fallback_counts", l_fallback_counts },
	{ "cpuid", l_cpuid },
	{ "run", l_run },         { "start", l_start },
	{ "wait", l_wait },     { "pause", l_pause },     { "resume", l_resume },
	{ "paused", l_paused },
	{ "regs", l_regs },     { "set_regs", l_set_regs },
	{ "read", l_read },     { "write", l_write },     { "boot_flat", l_boot_flat },
	{ "stats", l_stats },   { "close", l_close },     { NULL, NULL },
};

static const luaL_Reg machine_meta[] = {
	{ "__gc", l_close }, { "__close", l_close }, { "__tostring", l_tostring },
	{ NULL, NULL },
};

static int l_size(lua_State *L)
{
	lua_pushinteger(L, (lua_Integer)mbl_tosize(L, 1, "size"));
	return 1;
}

static int l_info(lua_State *L)
{
	(void)L;
	mb_kvm_info(stdout);
	return 0;
}

static const luaL_Reg funcs[] = {
	{ "machine", l_machine }, { "size", l_size }, { "info", l_info },
	{ NULL, NULL },
};

/* Machine methods defined in other files (boot_linux, ...). */
void mbl_machine_method(lua_State *L, const char *name, lua_CFunction f)
{
	luaL_getmetatable(L, MBL_MACHINE);
	lua_getfield(L, -1, "__index");
	lua_pushcfunction(L, f);
	lua_setfield(L, -2, name);
	lua_pop(L, 2);
}

int luaopen_moonbox(lua_State *L)
{
	if (luaL_newmetatable(L, MBL_MACHINE)) {
		luaL_setfuncs(L, machine_meta, 0);
		luaL_newlib(L, machine_methods);
		lua_setfield(L, -2, "__index");
	}
	lua_pop(L, 1);
	luaL_newlib(L, funcs);
	lua_pushstring(L, MB_VERSION);
	lua_setfield(L, -2, "version");
	mbl_open_dev(L);
	mbl_open_devices(L);
	mbl_open_pic(L);
	mbl_open_pit(L);
	mbl_open_rtc(L);
	mbl_open_fw_cfg(L);
	mbl_open_i8042(L);
	mbl_open_port80(L);
	mbl_open_debug_exit(L);
	mbl_open_uart(L);
	mbl_open_boot(L);
	mbl_open_virtio(L);
	mbl_open_virtio_io(L);
	mbl_open_vhost_user(L);
	mbl_open_cpu(L);
	mbl_open_debug(L);
	mbl_open_sym(L);
	mbl_open_fault(L);
	mbl_open_snapshot(L);
	mbl_open_campaign(L);
	mbl_open_gdb(L);
	mbl_open_map(L);
	mbl_open_tap(L);
	mbl_open_listen(L);
	mbl_open_on(L);
	return 1;
}

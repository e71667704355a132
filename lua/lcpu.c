/* vCPU handles: m:cpu(n) and its methods (registers, mode, memory by
 * virtual address, page walks, stepping). The machine must be paused. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "lua/lmoonbox.h"
#include "moonbox/debug.h"

#define MBL_CPU "moonbox.cpu"
#define MBL_REGS "moonbox.regs"
#define MBL_SREGS "moonbox.sregs"
#define MBL_WALK "moonbox.walk"
#define MBL_FPU "moonbox.fpu"
#define MBL_EVENTS "moonbox.events"
#define MBL_BT "moonbox.backtrace"

struct mbl_cpu {
	struct mbl_machine *mm;
	unsigned idx;
};

#define REGS(X)                                                              \
	X(rax) X(rbx) X(rcx) X(rdx) X(rsi) X(rdi) X(rsp) X(rbp) X(r8) X(r9)   \
	X(r10) X(r11) X(r12) X(r13) X(r14) X(r15) X(rip) X(rflags)
#define CRS(X) X(cr0) X(cr2) X(cr3) X(cr4) X(cr8) X(efer) X(apic_base)
#define SEGS(X) X(cs) X(ds) X(es) X(fs) X(gs) X(ss) X(tr) X(ldt)
#define SEGF(X) X(base) X(limit) X(selector) X(type) X(present) X(dpl) \
	X(db) X(s) X(l) X(g) X(avl)

static char cpu_keys[MB_MAX_CPUS]; /* refs keys for the cached handles */
static char owners_key; /* registry: weak table, register table -> machine */

/* Remember which machine the table on top came from (for sym+off). */
static void set_owner(lua_State *L, struct mbl_cpu *c, int cpu_idx)
{
	if (lua_rawgetp(L, LUA_REGISTRYINDEX, &owners_key) != LUA_TTABLE) {
		lua_pop(L, 1);
		lua_newtable(L);
		lua_pushliteral(L, "k");
		lua_setfield(L, -2, "__mode");
		lua_pushvalue(L, -1);
		lua_setmetatable(L, -2);
		lua_pushvalue(L, -1);
		lua_rawsetp(L, LUA_REGISTRYINDEX, &owners_key);
	}
	lua_pushvalue(L, -2);
	lua_getiuservalue(L, cpu_idx, 1);
	lua_rawset(L, -3);
	lua_pop(L, 1);
	(void)c;
}

/* addr as " <name+off>" when the table at t came from a machine with
 * symbols covering it, else "". */
static void owner_sym(lua_State *L, int t, uint64_t addr, char *buf, size_t len)
{
	char name[256];
	buf[0] = 0;
	t = lua_absindex(L, t);
	if (lua_rawgetp(L, LUA_REGISTRYINDEX, &owners_key) == LUA_TTABLE) {
		lua_pushvalue(L, t);
		lua_rawget(L, -2);
		struct mbl_machine *mm = luaL_testudata(L, -1, MBL_MACHINE);
		if (mm && mm->m && mbl_sym_format(L, mm, addr, name, sizeof name, NULL))
			snprintf(buf, len, " <%s>", name);
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
}

static struct mbl_cpu *checkcpu(lua_State *L, int idx)
{
	return luaL_checkudata(L, idx, MBL_CPU);
}

static struct mb_machine *paused(lua_State *L, struct mbl_cpu *c,
				 const char *what)
{
	struct mb_machine *m = mbl_live(L, c->mm);
	if (!mb_machine_paused(m))
		luaL_error(L, "%s: pause the machine first (m:pause())", what);
	return m;
}

void mbl_push_cpu(lua_State *L, int machine_idx, unsigned idx)
{
	machine_idx = lua_absindex(L, machine_idx);
	struct mbl_machine *mm = mbl_checkmachine(L, machine_idx);
	if (mbl_ref_push(L, mm, &cpu_keys[idx]) == LUA_TUSERDATA)
		return;
	lua_pop(L, 1);
	struct mbl_cpu *c = lua_newuserdatauv(L, sizeof *c, 1);
	c->mm = mm, c->idx = idx;
	luaL_setmetatable(L, MBL_CPU);
	lua_pushvalue(L, machine_idx);
	lua_setiuservalue(L, -2, 1);
	mbl_ref_set(L, mm, &cpu_keys[idx], -1);
}

static int l_cpu(lua_State *L)
{
	struct mb_machine *m = mbl_live(L, mbl_checkmachine(L, 1));
	lua_Integer n = luaL_optinteger(L, 2, 0);
	if (n < 0 || n >= (lua_Integer)mb_machine_cpus(m))
		return luaL_error(L, "cpu: %d does not exist (0-%d)", (int)n,
				  (int)mb_machine_cpus(m) - 1);
	mbl_push_cpu(L, 1, (unsigned)n);
	return 1;
}

/* An address argument: a number, a size string, or { phys = N }. */
uint64_t mbl_checkaddr(lua_State *L, int idx, const char *key, bool *phys)
{
	*phys = false;
	if (lua_istable(L, idx)) {
		static const char *const keys[] = { "phys", NULL };
		mbl_checkopts(L, idx, key, keys);
		if (lua_getfield(L, idx, "phys") == LUA_TNIL)
			luaL_error(L, "%s: expected an address or { phys = ADDR }", key);
		uint64_t a = mbl_tosize(L, -1, key);
		lua_pop(L, 1);
		*phys = true;
		return a;
	}
	return mbl_tosize(L, idx, key);
}

/* ---- registers ---------------------------------------------------------- */

static const char *const flag_names[22] = {
	"CF", NULL, "PF", NULL, "AF", NULL, "ZF", "SF", "TF", "IF", "DF", "OF",
	NULL, NULL, "NT", NULL, "RF", "VM", "AC", "VIF", "VIP", "ID",
};

static void flags_string(uint64_t f, char *buf, size_t len)
{
	size_t n = 0;
	buf[0] = 0;
	for (int i = 0; i < 22; i++)
		if (flag_names[i] && (f >> i & 1))
			n += (size_t)snprintf(buf + n, len - n, "%s%s", n ? " " : "",
					      flag_names[i]);
	if (f >> 12 & 3)
		snprintf(buf + n, len - n, "%sIOPL=%u", n ? " " : "",
			 (unsigned)(f >> 12 & 3));
}

static uint64_t field(lua_State *L, int t, const char *k)
{
	lua_getfield(L, t, k);
	uint64_t v = (uint64_t)lua_tointeger(L, -1);
	lua_pop(L, 1);
	return v;
}

static int regs_tostring(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	char fl[96];
	flags_string(field(L, 1, "rflags"), fl, sizeof fl);
	char buf[1400], sym[280];
	owner_sym(L, 1, field(L, 1, "rip"), sym, sizeof sym);
	snprintf(buf, sizeof buf,
		 "rax %016" PRIx64 " rbx %016" PRIx64 " rcx %016" PRIx64 "\n"
		 "rdx %016" PRIx64 " rsi %016" PRIx64 " rdi %016" PRIx64 "\n"
		 "rsp %016" PRIx64 " rbp %016" PRIx64 " r8  %016" PRIx64 "\n"
		 "r9  %016" PRIx64 " r10 %016" PRIx64 " r11 %016" PRIx64 "\n"
		 "r12 %016" PRIx64 " r13 %016" PRIx64 " r14 %016" PRIx64 "\n"
		 "r15 %016" PRIx64 " rip %016" PRIx64 "%s\n"
		 "rflags %08" PRIx64 " [%s]",
		 field(L, 1, "rax"), field(L, 1, "rbx"), field(L, 1, "rcx"),
		 field(L, 1, "rdx"), field(L, 1, "rsi"), field(L, 1, "rdi"),
		 field(L, 1, "rsp"), field(L, 1, "rbp"), field(L, 1, "r8"),
		 field(L, 1, "r9"), field(L, 1, "r10"), field(L, 1, "r11"),
		 field(L, 1, "r12"), field(L, 1, "r13"), field(L, 1, "r14"),
		 field(L, 1, "r15"), field(L, 1, "rip"), sym, field(L, 1, "rflags"), fl);
	lua_pushstring(L, buf);
	return 1;
}

static int c_regs(lua_State *L)
{
	struct mbl_cpu *c = checkcpu(L, 1);
	struct mb_machine *m = paused(L, c, "regs");
	struct mb_regs r;
	if (mb_vcpu_get_regs(m, c->idx, &r))
		return mbl_fail(L, "regs");
	lua_createtable(L, 0, 18);
#define PUSH(n) lua_pushinteger(L, (lua_Integer)r.n), lua_setfield(L, -2, #n);
	REGS(PUSH)
#undef PUSH
	luaL_setmetatable(L, MBL_REGS);
	set_owner(L, c, 1);
	return 1;
}

static void push_seg(lua_State *L, const struct mb_seg *s)
{
	lua_createtable(L, 0, 11);
#define PUSH(n) lua_pushinteger(L, (lua_Integer)s->n), lua_setfield(L, -2, #n);
	SEGF(PUSH)
#undef PUSH
}

static int c_sregs(lua_State *L)
{
	struct mbl_cpu *c = checkcpu(L, 1);
	struct mb_machine *m = paused(L, c, "sregs");
	struct mb_sregs s;
	if (mb_vcpu_get_sregs(m, c->idx, &s))
		return mbl_fail(L, "sregs");
	lua_createtable(L, 0, 20);
#define PUSH(n) push_seg(L, &s.n), lua_setfield(L, -2, #n);
	SEGS(PUSH)
#undef PUSH
#define PUSH(n) lua_pushinteger(L, (lua_Integer)s.n), lua_setfield(L, -2, #n);
	CRS(PUSH)
#undef PUSH
	lua_createtable(L, 0, 2);
	lua_pushinteger(L, (lua_Integer)s.gdt_base), lua_setfield(L, -2, "base");
	lua_pushinteger(L, s.gdt_limit), lua_setfield(L, -2, "limit");
	lua_setfield(L, -2, "gdt");
	lua_createtable(L, 0, 2);
	lua_pushinteger(L, (lua_Integer)s.idt_base), lua_setfield(L, -2, "base");
	lua_pushinteger(L, s.idt_limit), lua_setfield(L, -2, "limit");
	lua_setfield(L, -2, "idt");
	uint64_t pd[4];
	if (mb_vcpu_pdptrs(m, c->idx, pd) == 0) { /* KVM's cached copy (PAE) */
		lua_createtable(L, 4, 0);
		for (int i = 0; i < 4; i++)
			lua_pushinteger(L, (lua_Integer)pd[i]), lua_rawseti(L, -2, i + 1);
		lua_setfield(L, -2, "pdptrs");
	}
	luaL_setmetatable(L, MBL_SREGS);
	return 1;
}

static int sregs_tostring(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	luaL_Buffer b;
	char line[160];
	luaL_buffinit(L, &b);
	static const char *const segs[] = { "cs", "ds", "es", "fs", "gs", "ss",
					    "tr", "ldt", NULL };
	for (int i = 0; segs[i]; i++) {
		if (lua_getfield(L, 1, segs[i]) != LUA_TTABLE) {
			lua_pop(L, 1);
			continue;
		}
		int t = lua_gettop(L);
		snprintf(line, sizeof line,
			 "%-3s %04" PRIx64 " base %016" PRIx64 " limit %08" PRIx64
			 " type %" PRIu64 "%s%s%s%s%s dpl %" PRIu64 "\n",
			 segs[i], field(L, t, "selector"), field(L, t, "base"),
			 field(L, t, "limit"), field(L, t, "type"),
			 field(L, t, "present") ? " P" : " -",
			 field(L, t, "s") ? " S" : "", field(L, t, "l") ? " L" : "",
			 field(L, t, "db") ? " DB" : "", field(L, t, "g") ? " G" : "",
			 field(L, t, "dpl"));
		lua_pop(L, 1);
		luaL_addstring(&b, line);
	}
	uint64_t gb = 0, gl = 0, ib = 0, il = 0;
	if (lua_getfield(L, 1, "gdt") == LUA_TTABLE)
		gb = field(L, -1, "base"), gl = field(L, -1, "limit");
	lua_pop(L, 1);
	if (lua_getfield(L, 1, "idt") == LUA_TTABLE)
		ib = field(L, -1, "base"), il = field(L, -1, "limit");
	lua_pop(L, 1);
	snprintf(line, sizeof line,
		 "gdt %016" PRIx64 "/%" PRIx64 " idt %016" PRIx64 "/%" PRIx64 "\n",
		 gb, gl, ib, il);
	luaL_addstring(&b, line);
	snprintf(line, sizeof line,
		 "cr0 %08" PRIx64 " cr2 %016" PRIx64 " cr3 %016" PRIx64
		 " cr4 %08" PRIx64 "\ncr8 %" PRIx64 " efer %" PRIx64
		 " apic_base %" PRIx64,
		 field(L, 1, "cr0"), field(L, 1, "cr2"), field(L, 1, "cr3"),
		 field(L, 1, "cr4"), field(L, 1, "cr8"), field(L, 1, "efer"),
		 field(L, 1, "apic_base"));
	luaL_addstring(&b, line);
	if (lua_getfield(L, 1, "pdptrs") == LUA_TTABLE) {
		luaL_addstring(&b, "\npdptrs");
		for (int i = 1; i <= 4; i++) {
			lua_geti(L, -1, i);
			snprintf(line, sizeof line, " %016" PRIx64,
				 (uint64_t)lua_tointeger(L, -1));
			lua_pop(L, 1);
			luaL_addstring(&b, line);
		}
	}
	lua_pop(L, 1);
	luaL_pushresult(&b);
	return 1;
}

/* c:set { rip = ..., cr3 = ..., cs = { selector = ..., ... } } */
static int c_set(lua_State *L)
{
	static const char *const keys[] = {
#define NAME(n) #n,
		REGS(NAME) CRS(NAME) SEGS(NAME)
#undef NAME
		NULL };
	static const char *const segkeys[] = {
#define NAME(n) #n,
		SEGF(NAME)
#undef NAME
		NULL };
	struct mbl_cpu *c = checkcpu(L, 1);
	luaL_checktype(L, 2, LUA_TTABLE);
	struct mb_machine *m = paused(L, c, "set");
	mbl_checkopts(L, 2, "set", keys);
	struct mb_regs r;
	struct mb_sregs s;
	if (mb_vcpu_get_regs(m, c->idx, &r) || mb_vcpu_get_sregs(m, c->idx, &s))
		return mbl_fail(L, "set");
	bool sregs = false;
#define GET(n) r.n = (uint64_t)mbl_optint(L, 2, #n, (lua_Integer)r.n);
	REGS(GET)
#undef GET
#define GET(n)                                                               \
	if (lua_getfield(L, 2, #n) != LUA_TNIL)                              \
		sregs = true;                                                \
	lua_pop(L, 1);                                                       \
	s.n = (uint64_t)mbl_optint(L, 2, #n, (lua_Integer)s.n);
	CRS(GET)
#undef GET
#define SF(f) g->f = (__typeof__(g->f))mbl_optint(L, -1, #f, (lua_Integer)g->f);
#define GET(n)                                                               \
	if (lua_getfield(L, 2, #n) == LUA_TTABLE) {                          \
		struct mb_seg *g = &s.n;                                     \
		mbl_checkopts(L, -1, "set." #n, segkeys);                    \
		SEGF(SF)                                                     \
		sregs = true;                                                \
	} else if (!lua_isnil(L, -1)) {                                      \
		luaL_error(L, "set." #n ": expected a table of segment fields"); \
	}                                                                    \
	lua_pop(L, 1);
	SEGS(GET)
#undef GET
#undef SF
	if (sregs && mb_vcpu_set_sregs(m, c->idx, &s))
		return mbl_fail(L, "set");
	if (mb_vcpu_set_regs(m, c->idx, &r))
		return mbl_fail(L, "set");
	lua_settop(L, 1);
	return 1;
}

static int c_mode(lua_State *L)
{
	struct mbl_cpu *c = checkcpu(L, 1);
	struct mb_machine *m = paused(L, c, "mode");
	struct mb_paging p;
	if (mb_vcpu_paging(m, c->idx, &p))
		return mbl_fail(L, "mode");
	lua_pushstring(L, mb_paging_cpu_mode(&p));
	return 1;
}

/* ---- memory --------------------------------------------------------------- */

static const char *level_name(enum mb_pg_mode mode, unsigned level)
{
	static const char *const n[] = { "", "PT", "PD", "PDPT", "PML4", "PML5" };
	if (mode == MB_PG_PAE && level == 3)
		return "PDPTE";
	return level <= 5 ? n[level] : "?";
}

static void pte_flags(uint64_t e, char *buf, size_t len)
{
	snprintf(buf, len, "%s%s%s%s%s", e & MB_PTE_P ? "P" : "-",
		 e & MB_PTE_W ? " W" : "", e & MB_PTE_U ? " U" : "",
		 e & MB_PTE_PS ? " PS" : "", e & MB_PTE_NX ? " NX" : "");
}

static int walk_tostring(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	luaL_Buffer b;
	char line[200];
	luaL_buffinit(L, &b);
	lua_getfield(L, 1, "mode");
	lua_getfield(L, 1, "va");
	snprintf(line, sizeof line, "0x%" PRIx64 " (%s paging)\n",
		 (uint64_t)lua_tointeger(L, -1), lua_tostring(L, -2));
	lua_pop(L, 2);
	luaL_addstring(&b, line);
	lua_getfield(L, 1, "levels");
	lua_Integer n = luaL_len(L, -1);
	for (lua_Integer i = 1; i <= n; i++) {
		lua_geti(L, -1, i);
		int t = lua_gettop(L);
		lua_getfield(L, t, "name");
		lua_getfield(L, t, "flags");
		snprintf(line, sizeof line,
			 "  %-5s at %012" PRIx64 ": %016" PRIx64 " [%s]\n",
			 lua_tostring(L, -2), field(L, t, "addr"),
			 field(L, t, "entry"), lua_tostring(L, -1));
		lua_pop(L, 3);
		luaL_addstring(&b, line);
	}
	lua_pop(L, 1);
	if (lua_getfield(L, 1, "gpa") != LUA_TNIL)
		snprintf(line, sizeof line, "  -> 0x%" PRIx64 " (page 0x%" PRIx64 ")",
			 (uint64_t)lua_tointeger(L, -1), field(L, 1, "page_size"));
	else {
		lua_getfield(L, 1, "error");
		snprintf(line, sizeof line, "  failed: %s", lua_tostring(L, -1));
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
	luaL_addstring(&b, line);
	luaL_pushresult(&b);
	return 1;
}

/* c:walk(va): every level of the walk as a table. */
static int c_walk(lua_State *L)
{
	struct mbl_cpu *c = checkcpu(L, 1);
	bool phys;
	uint64_t va = mbl_checkaddr_sym(L, c->mm, 2, "address", &phys);
	struct mb_machine *m = paused(L, c, "walk");
	struct mb_paging p;
	struct mb_walk w;
	if (mb_vcpu_paging(m, c->idx, &p))
		return mbl_fail(L, "walk");
	if (phys)
		p.cr0 = 1; /* a physical address: no paging */
	int rc = mb_pagewalk(mb_machine_mem(m), &p, va, &w);
	lua_createtable(L, 0, 10);
	lua_pushinteger(L, (lua_Integer)va), lua_setfield(L, -2, "va");
	lua_pushstring(L, mb_pg_mode_name(w.mode)), lua_setfield(L, -2, "mode");
	lua_createtable(L, (int)w.n, 0);
	for (unsigned i = 0; i < w.n; i++) {
		char fl[32];
		lua_createtable(L, 0, 5);
		lua_pushinteger(L, w.lv[i].level), lua_setfield(L, -2, "level");
		lua_pushstring(L, level_name(w.mode, w.lv[i].level));
		lua_setfield(L, -2, "name");
		lua_pushinteger(L, (lua_Integer)w.lv[i].addr), lua_setfield(L, -2, "addr");
		lua_pushinteger(L, (lua_Integer)w.lv[i].entry);
		lua_setfield(L, -2, "entry");
		pte_flags(w.lv[i].entry, fl, sizeof fl);
		lua_pushstring(L, fl), lua_setfield(L, -2, "flags");
		lua_rawseti(L, -2, (lua_Integer)i + 1);
	}
	lua_setfield(L, -2, "levels");
	if (rc == 0) {
		lua_pushinteger(L, (lua_Integer)w.gpa), lua_setfield(L, -2, "gpa");
		lua_pushinteger(L, (lua_Integer)w.page_size);
		lua_setfield(L, -2, "page_size");
		lua_pushboolean(L, w.w), lua_setfield(L, -2, "w");
		lua_pushboolean(L, w.u), lua_setfield(L, -2, "u");
		lua_pushboolean(L, w.nx), lua_setfield(L, -2, "nx");
	} else {
		char why[200];
		mb_walk_explain(&w, why, sizeof why);
		lua_pushstring(L, why), lua_setfield(L, -2, "error");
		lua_pushstring(L, mb_walk_err_name(w.err)), lua_setfield(L, -2, "why");
		lua_pushinteger(L, w.fail_level), lua_setfield(L, -2, "fail_level");
	}
	luaL_setmetatable(L, MBL_WALK);
	return 1;
}

/* c:translate(va) -> gpa, or nil and why (naming the level). */
static int c_translate(lua_State *L)
{
	struct mbl_cpu *c = checkcpu(L, 1);
	bool phys;
	uint64_t va = mbl_checkaddr_sym(L, c->mm, 2, "address", &phys);
	struct mb_machine *m = paused(L, c, "translate");
	struct mb_paging p;
	struct mb_walk w;
	if (phys) {
		lua_pushinteger(L, (lua_Integer)va);
		return 1;
	}
	if (mb_vcpu_paging(m, c->idx, &p))
		return mbl_fail(L, "translate");
	if (mb_pagewalk(mb_machine_mem(m), &p, va, &w)) {
		char why[200];
		mb_walk_explain(&w, why, sizeof why);
		lua_pushnil(L);
		lua_pushstring(L, why);
		return 2;
	}
	lua_pushinteger(L, (lua_Integer)w.gpa);
	return 1;
}

/* c:kvm_translate(va): KVM_TRANSLATE's answer, to cross-check. */
static int c_kvm_translate(lua_State *L)
{
	struct mbl_cpu *c = checkcpu(L, 1);
	bool phys;
	uint64_t va = mbl_checkaddr_sym(L, c->mm, 2, "address", &phys), gpa;
	struct mb_machine *m = paused(L, c, "kvm_translate");
	if (mb_vcpu_kvm_translate(m, c->idx, va, &gpa)) {
		lua_pushnil(L);
		lua_pushstring(L, mb_errmsg());
		return 2;
	}
	lua_pushinteger(L, (lua_Integer)gpa);
	return 1;
}

static int c_read(lua_State *L)
{
	struct mbl_cpu *c = checkcpu(L, 1);
	bool phys;
	uint64_t va = mbl_checkaddr_sym(L, c->mm, 2, "address", &phys);
	uint64_t len = mbl_tosize(L, 3, "length");
	struct mb_machine *m = paused(L, c, "read");
	if (len > (64u << 20))
		return luaL_error(L, "length: %I is more than 64M", (lua_Integer)len);
	luaL_Buffer b;
	char *p = luaL_buffinitsize(L, &b, len);
	int rc = phys ? mb_mem_read(mb_machine_mem(m), va, p, len)
		      : mb_vcpu_read_virt(m, c->idx, va, p, len);
	if (rc)
		return mbl_fail(L, "read");
	luaL_pushresultsize(&b, len);
	return 1;
}

static int c_write(lua_State *L)
{
	struct mbl_cpu *c = checkcpu(L, 1);
	bool phys;
	uint64_t va = mbl_checkaddr_sym(L, c->mm, 2, "address", &phys);
	size_t len;
	const char *s = luaL_checklstring(L, 3, &len);
	struct mb_machine *m = paused(L, c, "write");
	int rc = phys ? mb_mem_write(mb_machine_mem(m), va, s, len)
		      : mb_vcpu_write_virt(m, c->idx, va, s, len);
	if (rc)
		return mbl_fail(L, "write");
	lua_settop(L, 1);
	return 1;
}

/* c:step([n]) -> rip; and the stop's reason and exit code when the guest
 * stopped the machine on the way (e.g. its debug_exit). */
static int c_step(lua_State *L)
{
	struct mbl_cpu *c = checkcpu(L, 1);
	lua_Integer n = luaL_optinteger(L, 2, 1);
	if (n < 1 || n > 100000000)
		return luaL_error(L, "step: %d is not a count of instructions",
				  (int)n);
	struct mb_machine *m = paused(L, c, "step");
	unsigned done;
	struct mb_result r;
	c->mm->L = L; /* Lua devices met on the way run on this thread */
	if (mb_debug_step(m, c->idx, (unsigned)n, &done, &r))
		return mbl_fail(L, "step");
	struct mb_regs regs;
	if (mb_vcpu_get_regs(m, c->idx, &regs))
		return mbl_fail(L, "step");
	lua_pushinteger(L, (lua_Integer)regs.rip);
	if (r.reason == MB_STOP_NONE)
		return 1;
	lua_pushstring(L, mb_stop_name(r.reason));
	lua_pushinteger(L, r.exit_code);
	return 3;
}

/* ---- MSRs, FPU, events ---------------------------------------------------- */

/* c:msr(index) -> value; c:msr(index, value) writes it. */
static int c_msr(lua_State *L)
{
	struct mbl_cpu *c = checkcpu(L, 1);
	lua_Integer i = luaL_checkinteger(L, 2);
	if (i < 0 || i > 0xffffffffll)
		return luaL_error(L, "msr: 0x%I is not an MSR index", i);
	struct mb_machine *m = paused(L, c, "msr");
	if (!lua_isnoneornil(L, 3)) {
		uint64_t v = (uint64_t)luaL_checkinteger(L, 3);
		if (mb_vcpu_set_msr(m, c->idx, (uint32_t)i, v))
			return mbl_fail(L, "msr");
		lua_settop(L, 1);
		return 1;
	}
	uint64_t v;
	if (mb_vcpu_get_msr(m, c->idx, (uint32_t)i, &v))
		return mbl_fail(L, "msr");
	lua_pushinteger(L, (lua_Integer)v);
	return 1;
}

static void push_hex(lua_State *L, const uint8_t *b, size_t n)
{
	/* vector registers as one hex number, most significant byte first */
	char s[2 * 32 + 1];
	for (size_t i = 0; i < n; i++)
		snprintf(s + 2 * i, 3, "%02x", b[n - 1 - i]);
	lua_pushlstring(L, s, 2 * n);
}

/* c:fpu() -> { fcw, fsw, ftw, fop, fip, fdp, mxcsr, st0..st7 (numbers),
 * st_raw = { 10-byte strings }, xmm0..15, ymm0..15 (hex strings) } */
static int c_fpu(lua_State *L)
{
	struct mbl_cpu *c = checkcpu(L, 1);
	struct mb_machine *m = paused(L, c, "fpu");
	struct mb_fpu f;
	if (mb_vcpu_get_fpu(m, c->idx, &f))
		return mbl_fail(L, "fpu");
	lua_createtable(L, 0, 48);
#define PUSH(n) lua_pushinteger(L, (lua_Integer)f.n), lua_setfield(L, -2, #n);
	PUSH(fcw) PUSH(fsw) PUSH(ftw) PUSH(fop) PUSH(fip) PUSH(fdp) PUSH(mxcsr)
#undef PUSH
	lua_createtable(L, 8, 0);
	for (int i = 0; i < 8; i++) {
		char k[16];
		long double x = 0; /* x86 long double is the 80-bit format */
		memcpy(&x, f.st[i], 10);
		snprintf(k, sizeof k, "st%d", i);
		lua_pushnumber(L, (lua_Number)x);
		lua_setfield(L, -3, k);
		lua_pushlstring(L, (const char *)f.st[i], 10);
		lua_rawseti(L, -2, i + 1);
	}
	lua_setfield(L, -2, "st_raw");
	for (int i = 0; i < 16; i++) {
		char k[16];
		snprintf(k, sizeof k, "xmm%d", i);
		push_hex(L, f.xmm[i], 16);
		lua_setfield(L, -2, k);
		if (f.has_ymm) {
			uint8_t y[32];
			memcpy(y, f.xmm[i], 16);
			memcpy(y + 16, f.ymmh[i], 16);
			snprintf(k, sizeof k, "ymm%d", i);
			push_hex(L, y, 32);
			lua_setfield(L, -2, k);
		}
	}
	luaL_setmetatable(L, MBL_FPU);
	return 1;
}

static int fpu_tostring(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	luaL_Buffer b;
	char line[160];
	luaL_buffinit(L, &b);
	uint64_t fsw = field(L, 1, "fsw");
	snprintf(line, sizeof line,
		 "fcw %04" PRIx64 " fsw %04" PRIx64 " (top %u) ftw %02" PRIx64
		 " fop %03" PRIx64 " fip %" PRIx64 " fdp %" PRIx64 "\n",
		 field(L, 1, "fcw"), fsw, (unsigned)(fsw >> 11 & 7),
		 field(L, 1, "ftw"), field(L, 1, "fop"), field(L, 1, "fip"),
		 field(L, 1, "fdp"));
	luaL_addstring(&b, line);
	for (int i = 0; i < 8; i++) {
		char k[16];
		snprintf(k, sizeof k, "st%d", i);
		lua_getfield(L, 1, k);
		snprintf(line, sizeof line, "%s %-14.10g%s", k, lua_tonumber(L, -1),
			 i % 4 == 3 ? "\n" : " ");
		lua_pop(L, 1);
		luaL_addstring(&b, line);
	}
	snprintf(line, sizeof line, "mxcsr %08" PRIx64, field(L, 1, "mxcsr"));
	luaL_addstring(&b, line);
	for (int i = 0; i < 16; i++) {
		char k[16];
		snprintf(k, sizeof k, "ymm%d", i);
		if (lua_getfield(L, 1, k) != LUA_TSTRING) {
			lua_pop(L, 1);
			k[0] = 'x';
			lua_getfield(L, 1, k);
		}
		snprintf(line, sizeof line, "\n%-5s %s", k, lua_tostring(L, -1));
		lua_pop(L, 1);
		luaL_addstring(&b, line);
	}
	luaL_pushresult(&b);
	return 1;
}

/* c:events() -> { exception = { injected, pending, nr, error_code },
 * interrupt = { injected, nr, soft, shadow }, nmi = { injected, pending,
 * masked }, smi_pending, smm, triple_fault } */
static int c_events(lua_State *L)
{
	struct mbl_cpu *c = checkcpu(L, 1);
	struct mb_machine *m = paused(L, c, "events");
	struct mb_vcpu_events e;
	if (mb_vcpu_get_events(m, c->idx, &e))
		return mbl_fail(L, "events");
	lua_createtable(L, 0, 6);
	lua_createtable(L, 0, 4);
	lua_pushboolean(L, e.exc_injected), lua_setfield(L, -2, "injected");
	lua_pushboolean(L, e.exc_pending), lua_setfield(L, -2, "pending");
	lua_pushinteger(L, e.exc_nr), lua_setfield(L, -2, "nr");
	if (e.exc_has_error)
		lua_pushinteger(L, e.exc_error), lua_setfield(L, -2, "error_code");
	lua_setfield(L, -2, "exception");
	lua_createtable(L, 0, 4);
	lua_pushboolean(L, e.irq_injected), lua_setfield(L, -2, "injected");
	lua_pushinteger(L, e.irq_nr), lua_setfield(L, -2, "nr");
	lua_pushboolean(L, e.irq_soft), lua_setfield(L, -2, "soft");
	lua_pushinteger(L, e.irq_shadow), lua_setfield(L, -2, "shadow");
	lua_setfield(L, -2, "interrupt");
	lua_createtable(L, 0, 3);
	lua_pushboolean(L, e.nmi_injected), lua_setfield(L, -2, "injected");
	lua_pushboolean(L, e.nmi_pending), lua_setfield(L, -2, "pending");
	lua_pushboolean(L, e.nmi_masked), lua_setfield(L, -2, "masked");
	lua_setfield(L, -2, "nmi");
	lua_pushboolean(L, e.smi_pending), lua_setfield(L, -2, "smi_pending");
	lua_pushboolean(L, e.smm), lua_setfield(L, -2, "smm");
	lua_pushboolean(L, e.triple_fault), lua_setfield(L, -2, "triple_fault");
	luaL_setmetatable(L, MBL_EVENTS);
	return 1;
}

static bool bfield(lua_State *L, int t, const char *k)
{
	lua_getfield(L, t, k);
	bool v = lua_toboolean(L, -1);
	lua_pop(L, 1);
	return v;
}

static int events_tostring(lua_State *L)
{
	static const char *const exc[] = { "DE", "DB", "NMI", "BP", "OF", "BR",
		"UD", "NM", "DF", "MP", "TS", "NP", "SS", "GP", "PF", "15", "MF",
		"AC", "MC", "XM", "VE", "CP" };
	luaL_checktype(L, 1, LUA_TTABLE);
	luaL_Buffer b;
	char line[128];
	luaL_buffinit(L, &b);
	lua_getfield(L, 1, "exception");
	int t = lua_gettop(L);
	unsigned nr = (unsigned)field(L, t, "nr");
	if (bfield(L, t, "injected") || bfield(L, t, "pending")) {
		char name[16];
		snprintf(name, sizeof name, "%u", nr);
		lua_getfield(L, t, "error_code");
		snprintf(line, sizeof line, "exception #%s %s%s", nr < 22 ? exc[nr] : name,
			 bfield(L, t, "injected") ? "injected" : "pending",
			 lua_isnil(L, -1) ? "" : " error ");
		luaL_addstring(&b, line);
		if (!lua_isnil(L, -1)) {
			snprintf(line, sizeof line, "0x%" PRIx64,
				 (uint64_t)lua_tointeger(L, -1));
			luaL_addstring(&b, line);
		}
		lua_pop(L, 1);
	} else {
		luaL_addstring(&b, "exception none");
	}
	lua_pop(L, 1);
	lua_getfield(L, 1, "interrupt");
	t = lua_gettop(L);
	if (bfield(L, t, "injected"))
		snprintf(line, sizeof line, "\ninterrupt %" PRIu64 " injected%s",
			 field(L, t, "nr"), bfield(L, t, "soft") ? " (soft)" : "");
	else
		snprintf(line, sizeof line, "\ninterrupt none");
	luaL_addstring(&b, line);
	if (field(L, t, "shadow"))
		luaL_addstring(&b, " (interrupt shadow)");
	lua_pop(L, 1);
	lua_getfield(L, 1, "nmi");
	t = lua_gettop(L);
	snprintf(line, sizeof line, "\nnmi %s%s",
		 bfield(L, t, "injected") ? "injected"
		 : bfield(L, t, "pending") ? "pending" : "none",
		 bfield(L, t, "masked") ? " (masked)" : "");
	luaL_addstring(&b, line);
	lua_pop(L, 1);
	if (bfield(L, 1, "smi_pending") || bfield(L, 1, "smm"))
		luaL_addstring(&b, bfield(L, 1, "smm") ? "\nin SMM" : "\nsmi pending");
	if (bfield(L, 1, "triple_fault"))
		luaL_addstring(&b, "\ntriple fault pending");
	luaL_pushresult(&b);
	return 1;
}

/* ---- backtrace ------------------------------------------------------------ */

#define BT_MAX 64
#define BT_SCAN 4096 /* bytes of stack a scan looks at */

static void push_frame(lua_State *L, struct mbl_cpu *c, lua_Integer n,
		       uint64_t pc, uint64_t fp, bool scan)
{
	char sym[256];
	lua_createtable(L, 0, 4);
	lua_pushinteger(L, (lua_Integer)pc), lua_setfield(L, -2, "pc");
	if (mbl_sym_format(L, c->mm, pc, sym, sizeof sym, NULL))
		lua_pushstring(L, sym), lua_setfield(L, -2, "sym");
	if (fp)
		lua_pushinteger(L, (lua_Integer)fp), lua_setfield(L, -2, "fp");
	if (scan)
		lua_pushboolean(L, 1), lua_setfield(L, -2, "scan");
	lua_rawseti(L, -2, n);
}

/* Without symbols any non-zero value passes; with them, only addresses
 * inside executable sections. */
static bool code_addr(lua_State *L, struct mbl_cpu *c, uint64_t a, bool syms)
{
	char sym[256];
	bool text = false;
	if (!syms)
		return a != 0;
	return mbl_sym_format(L, c->mm, a, sym, sizeof sym, &text) && text;
}

/* c:backtrace([max]) -> { { pc, sym, fp }, ... }, innermost first: the
 * frame-pointer chain when rbp holds one, else a scan of the stack for
 * addresses in code (those frames have scan = true). */
static int c_backtrace(lua_State *L)
{
	struct mbl_cpu *c = checkcpu(L, 1);
	lua_Integer max = luaL_optinteger(L, 2, BT_MAX);
	struct mb_machine *m = paused(L, c, "backtrace");
	if (max < 1 || max > 1024)
		return luaL_error(L, "backtrace: %d frames is not between 1 and 1024",
				  (int)max);
	struct mb_regs r;
	struct mb_sregs s;
	if (mb_vcpu_get_regs(m, c->idx, &r) || mb_vcpu_get_sregs(m, c->idx, &s))
		return mbl_fail(L, "backtrace");
	unsigned w = (s.efer & 0x400) && s.cs.l ? 8 : 4; /* word size */
	uint64_t mask = w == 8 ? ~0ull : 0xffffffffull;
	char probe[8];
	bool syms = mbl_sym_format(L, c->mm, r.rip, probe, sizeof probe, NULL);
	lua_createtable(L, 8, 0);
	lua_Integer n = 1;
	push_frame(L, c, n++, r.rip, 0, false);
	uint64_t fp = r.rbp & mask;
	while (n <= max && fp && fp % w == 0) {
		uint8_t b[16];
		uint64_t next = 0, ret = 0;
		if (mb_vcpu_read_virt(m, c->idx, fp, b, 2 * w))
			break;
		memcpy(&next, b, w), memcpy(&ret, b + w, w);
		if (!code_addr(L, c, ret, syms))
			break;
		push_frame(L, c, n++, ret, fp, false);
		if (next <= fp) /* the chain goes up the stack, or it ends */
			break;
		fp = next;
	}
	if (n == 2 && syms) { /* no frame pointers: scan for return addresses */
		uint64_t sp = r.rsp & mask;
		for (unsigned off = 0; off < BT_SCAN && n <= max; off += w) {
			uint64_t v = 0;
			if (mb_vcpu_read_virt(m, c->idx, sp + off, &v, w))
				break;
			if (v != r.rip && code_addr(L, c, v, syms))
				push_frame(L, c, n++, v, 0, true);
		}
	}
	luaL_setmetatable(L, MBL_BT);
	return 1;
}

static int bt_tostring(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	luaL_Buffer b;
	char line[320];
	luaL_buffinit(L, &b);
	lua_Integer n = luaL_len(L, 1);
	for (lua_Integer i = 1; i <= n; i++) {
		lua_geti(L, 1, i);
		int t = lua_gettop(L);
		lua_getfield(L, t, "sym");
		lua_getfield(L, t, "scan");
		snprintf(line, sizeof line, "%s#%d 0x%016" PRIx64 " %s%s",
			 i > 1 ? "\n" : "", (int)i - 1, field(L, t, "pc"),
			 lua_isstring(L, -2) ? lua_tostring(L, -2) : "?",
			 lua_toboolean(L, -1) ? " (stack scan)" : "");
		lua_settop(L, t - 1);
		luaL_addstring(&b, line);
	}
	luaL_pushresult(&b);
	return 1;
}

static int c_index(lua_State *L)
{
	struct mbl_cpu *c = checkcpu(L, 1);
	const char *k = luaL_checkstring(L, 2);
	if (!strcmp(k, "index")) {
		lua_pushinteger(L, c->idx);
		return 1;
	}
	luaL_getmetatable(L, MBL_CPU);
	lua_getfield(L, -1, "methods");
	lua_getfield(L, -1, k);
	return 1;
}

static int c_tostring(lua_State *L)
{
	struct mbl_cpu *c = checkcpu(L, 1);
	lua_pushfstring(L, "moonbox.cpu %d", (int)c->idx);
	return 1;
}

static const luaL_Reg cpu_methods[] = {
	{ "regs", c_regs },       { "sregs", c_sregs },
	{ "set", c_set },         { "mode", c_mode },
	{ "walk", c_walk },       { "translate", c_translate },
	{ "kvm_translate", c_kvm_translate },
	{ "read", c_read },       { "write", c_write },
	{ "step", c_step },       { "msr", c_msr },
	{ "fpu", c_fpu },         { "events", c_events },
	{ "backtrace", c_backtrace },
	{ NULL, NULL },
};

void mbl_open_cpu(lua_State *L)
{
	if (luaL_newmetatable(L, MBL_CPU)) {
		lua_pushcfunction(L, c_index), lua_setfield(L, -2, "__index");
		lua_pushcfunction(L, c_tostring), lua_setfield(L, -2, "__tostring");
		luaL_newlib(L, cpu_methods);
		lua_setfield(L, -2, "methods");
		/* what c_index computes, for the REPL's Tab (cli/moonbox.c) */
		lua_createtable(L, 1, 0);
		lua_pushliteral(L, "index"), lua_rawseti(L, -2, 1);
		lua_setfield(L, -2, "__fields");
	}
	lua_pop(L, 1);
	luaL_newmetatable(L, MBL_REGS);
	lua_pushcfunction(L, regs_tostring), lua_setfield(L, -2, "__tostring");
	lua_pop(L, 1);
	luaL_newmetatable(L, MBL_SREGS);
	lua_pushcfunction(L, sregs_tostring), lua_setfield(L, -2, "__tostring");
	lua_pop(L, 1);
	luaL_newmetatable(L, MBL_FPU);
	lua_pushcfunction(L, fpu_tostring), lua_setfield(L, -2, "__tostring");
	lua_pop(L, 1);
	luaL_newmetatable(L, MBL_EVENTS);
	lua_pushcfunction(L, events_tostring), lua_setfield(L, -2, "__tostring");
	lua_pop(L, 1);
	luaL_newmetatable(L, MBL_BT);
	lua_pushcfunction(L, bt_tostring), lua_setfield(L, -2, "__tostring");
	lua_pop(L, 1);
	luaL_newmetatable(L, MBL_WALK);
	lua_pushcfunction(L, walk_tostring), lua_setfield(L, -2, "__tostring");
	lua_pop(L, 1);
	mbl_machine_method(L, "cpu", l_cpu);
}

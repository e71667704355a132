/*
 * Guest debugging: the page walker, single-stepping, breakpoints and
 * watchpoints (core/pagewalk.c, core/debug.c). One engine, shared by the
 * Lua API (lua/lcpu.c, lua/ldebug.c) and, later, the gdb stub.
 * See docs/debugging.md for what degrades on hosts like ours.
 */
#ifndef MOONBOX_DEBUG_H
#define MOONBOX_DEBUG_H

#include "moonbox.h"

/* ---- the page walker --------------------------------------------------- */

enum mb_pg_mode {
	MB_PG_NONE,  /* CR0.PG = 0: linear = physical (real or protected) */
	MB_PG_32,    /* 2-level, 4 KiB pages, 4 MiB with CR4.PSE */
	MB_PG_PAE,   /* 3-level, PDPTEs, 4 KiB / 2 MiB */
	MB_PG_LONG4, /* 4-level, 4 KiB / 2 MiB / 1 GiB */
	MB_PG_LONG5, /* 5-level (CR4.LA57) */
};

enum mb_walk_err {
	MB_WALK_OK,
	MB_WALK_NOT_PRESENT,   /* P = 0 at fail_level */
	MB_WALK_RESERVED,      /* a reserved bit set at fail_level */
	MB_WALK_NONCANONICAL,  /* the address itself (fail_level 0) */
	MB_WALK_RANGE,         /* a 32-bit mode given an address >= 4 GiB */
	MB_WALK_MEMORY,        /* a table outside guest RAM */
};

/* Entry flags reported per level (the hardware bits, SDM vol. 3, 4.x). */
#define MB_PTE_P (1ull << 0)
#define MB_PTE_W (1ull << 1)
#define MB_PTE_U (1ull << 2)
#define MB_PTE_A (1ull << 5)
#define MB_PTE_D (1ull << 6)
#define MB_PTE_PS (1ull << 7)
#define MB_PTE_G (1ull << 8)
#define MB_PTE_NX (1ull << 63)

/* What the walker needs of a vCPU: control registers, and MAXPHYADDR
 * (0: 52). */
struct mb_paging {
	uint64_t cr0, cr3, cr4, efer;
	unsigned maxphyaddr;
};

struct mb_walk_level {
	unsigned level;    /* 5 PML5, 4 PML4, 3 PDPT, 2 PD, 1 PT */
	uint64_t addr;     /* guest-physical address of the entry */
	uint64_t entry;    /* its value (32-bit mode: zero-extended) */
};

struct mb_walk {
	enum mb_pg_mode mode;
	enum mb_walk_err err;
	unsigned n;               /* levels read, in lv[0..n) from the top */
	struct mb_walk_level lv[5];
	unsigned fail_level;      /* level of the failing entry (err != OK) */
	uint64_t gpa;             /* the translation (err == OK) */
	uint64_t page_size;       /* 4K, 2M, 4M or 1G */
	bool w, u, nx;            /* effective rights over every level */
};

enum mb_pg_mode mb_paging_mode(const struct mb_paging *p);
const char *mb_pg_mode_name(enum mb_pg_mode m); /* "none", "32-bit", "pae", ... */
/* The CPU mode as c:mode() names it: "real", "protected", "pae", "long4",
 * "long5" (32-bit paging counts as "protected"). */
const char *mb_paging_cpu_mode(const struct mb_paging *p);
const char *mb_walk_err_name(enum mb_walk_err e);
/* Walk va through p's tables in mem (mb_mem_read only). Returns 0 when
 * va translates, else the error also in out->err (-EFAULT). */
int mb_pagewalk(struct mb_mem *mem, const struct mb_paging *p, uint64_t va,
		struct mb_walk *out);
/* A human sentence for a failed walk ("level 2 (PD) entry 0x... at 0x...:
 * not present"). */
void mb_walk_explain(const struct mb_walk *w, char *buf, size_t len);

/* ---- a vCPU's view ------------------------------------------------------ */

/* The vCPU's paging registers (machine paused). */
int mb_vcpu_paging(struct mb_machine *m, unsigned cpu, struct mb_paging *p);
/* Virtual memory through the vCPU's page tables, page by page. */
int mb_vcpu_read_virt(struct mb_machine *m, unsigned cpu, uint64_t va,
		      void *buf, size_t len);
int mb_vcpu_write_virt(struct mb_machine *m, unsigned cpu, uint64_t va,
		       const void *buf, size_t len);

/* KVM's own translation (KVM_TRANSLATE), to check the walker against. */
int mb_vcpu_kvm_translate(struct mb_machine *m, unsigned cpu, uint64_t va,
			  uint64_t *gpa);

/* More vCPU state (core/inspect.c), machine paused. An MSR KVM does not
 * know is -ENOENT. */
int mb_vcpu_get_msr(struct mb_machine *m, unsigned cpu, uint32_t index,
		    uint64_t *val);
int mb_vcpu_set_msr(struct mb_machine *m, unsigned cpu, uint32_t index,
		    uint64_t val);

/* x87, SSE and (with XSAVE) the upper halves of the AVX registers. */
struct mb_fpu {
	uint8_t st[8][10];      /* ST(0)-ST(7), 80-bit, in FXSAVE order */
	uint16_t fcw, fsw, fop;
	uint8_t ftw;            /* abridged tag word (FXSAVE format) */
	uint64_t fip, fdp;
	uint32_t mxcsr;
	uint8_t xmm[16][16];
	bool has_ymm;           /* ymmh below is valid */
	uint8_t ymmh[16][16];   /* bits 255:128 of YMM0-15 */
};
int mb_vcpu_get_fpu(struct mb_machine *m, unsigned cpu, struct mb_fpu *f);

/* What KVM holds for delivery at the next entry (KVM_GET_VCPU_EVENTS). */
struct mb_vcpu_events {
	bool exc_injected, exc_pending, exc_has_error;
	uint8_t exc_nr;
	uint32_t exc_error;
	bool irq_injected, irq_soft;
	uint8_t irq_nr, irq_shadow;   /* shadow: STI / MOV SS blocking */
	bool nmi_injected, nmi_pending, nmi_masked;
	bool smi_pending, smm, triple_fault;
};
int mb_vcpu_get_events(struct mb_machine *m, unsigned cpu,
		       struct mb_vcpu_events *e);

/* PAE's four PDPTEs as the CPU cached them (KVM_GET_SREGS2): -ENOTSUP
 * without SREGS2, -ENOENT when none are loaded (not PAE paging). */
int mb_vcpu_pdptrs(struct mb_machine *m, unsigned cpu, uint64_t pdptr[4]);

/* ---- symbols (core/symtab.c) --------------------------------------------- */

/* An ELF32/ELF64 file's .symtab, every address plus bias. Hostile files
 * are refused with a message naming the file. */
struct mb_symtab;
int mb_symtab_load(const char *path, int64_t bias, struct mb_symtab **out);
void mb_symtab_free(struct mb_symtab *t);
size_t mb_symtab_count(const struct mb_symtab *t);
int mb_symtab_find(const struct mb_symtab *t, const char *name, uint64_t *addr);
/* The symbol addr falls in (within its size; an unsized one up to 1 MiB
 * after it, to the next symbol), its offset, and whether it is in an
 * executable section; NULL when none. */
const char *mb_symtab_name(const struct mb_symtab *t, uint64_t addr,
			   uint64_t *off, bool *text);

/* Execute n instructions on one vCPU of a paused machine (the others stay
 * paused), interrupts held off (KVM_GUESTDBG_BLOCKIRQ where KVM has it).
 * *done: how many ran; HLT or a stop (the guest's debug_exit: then stop
 * gets its reason, else MB_STOP_NONE) ends it early. */
int mb_debug_step(struct mb_machine *m, unsigned cpu, unsigned n,
		  unsigned *done, struct mb_result *stop);

/* ---- breakpoints and watchpoints ---------------------------------------- */

enum mb_bp_kind { MB_BP_AUTO, MB_BP_HW, MB_BP_SW };

struct mb_bp;

struct mb_bp_config {
	uint64_t addr;        /* virtual (linear), unless phys */
	bool phys;            /* addr is guest-physical (sw only) */
	enum mb_bp_kind kind;
	unsigned cpu;         /* whose page tables translate addr (sw) */
	unsigned count;       /* stop only at the count-th hit (0, 1: every) */
	bool once;            /* remove once it has stopped the machine */
	int owner;            /* who set it: 0 Lua, 1 gdb... */
};

/* Add or remove a breakpoint (machine paused). */
int mb_debug_break(struct mb_machine *m, const struct mb_bp_config *c,
		   struct mb_bp **out);
int mb_debug_unbreak(struct mb_machine *m, struct mb_bp *bp);
enum mb_bp_kind mb_bp_kind(const struct mb_bp *bp);
uint64_t mb_bp_addr(const struct mb_bp *bp);
uint64_t mb_bp_hits(const struct mb_bp *bp);
bool mb_bp_removed(const struct mb_bp *bp); /* a once breakpoint that fired */
int mb_bp_owner(const struct mb_bp *bp);

struct mb_wp;
int mb_debug_watch(struct mb_machine *m, uint64_t gpa, uint64_t len,
		   bool read, bool write, struct mb_wp **out);
/* The same, naming its owner (0 Lua, 1 gdb...), as mb_bp_config.owner. */
int mb_debug_watch_owned(struct mb_machine *m, uint64_t gpa, uint64_t len,
			 bool read, bool write, int owner, struct mb_wp **out);
int mb_debug_unwatch(struct mb_machine *m, struct mb_wp *wp);
uint64_t mb_wp_hits(const struct mb_wp *wp);
int mb_wp_owner(const struct mb_wp *wp);

/* Why a vCPU stopped the machine (reasons breakpoint / watchpoint). Taken
 * once each, after run/wait returned; returns false when none is left. */
struct mb_debug_hit {
	unsigned cpu;
	struct mb_bp *bp; /* or NULL */
	struct mb_wp *wp; /* or NULL */
	uint64_t addr;    /* breakpoint address / written guest-physical */
	unsigned len;     /* watchpoint: bytes written */
	uint64_t data;    /* watchpoint: the value written */
	uint64_t rip;
};
bool mb_debug_take_hit(struct mb_machine *m, struct mb_debug_hit *h);
/* The owner of a hit's breakpoint or watchpoint; how many hits of owner
 * are waiting (owner < 0: of anyone); take only those of owner. */
int mb_debug_hit_owner(const struct mb_debug_hit *h);
unsigned mb_debug_pending(struct mb_machine *m, int owner);
bool mb_debug_take_hit_of(struct mb_machine *m, int owner,
			  struct mb_debug_hit *h);

/* ---- catch ------------------------------------------------------------ */

/* The handler of interrupt vector vec as cpu's IDT holds it now (linear
 * address): 16-byte gates in long mode, 8-byte ones in protected mode,
 * the IVT's segment:offset in real mode. -ENOENT beyond the IDT's limit
 * or for a gate not present. */
int mb_debug_idt_handler(struct mb_machine *m, unsigned cpu, unsigned vec,
			 uint64_t *addr);
/* Catch triple faults: KVM_EXIT_SHUTDOWN ends the run with MB_STOP_CATCH
 * (the vCPU's registers as the fault left them) instead of
 * MB_STOP_SHUTDOWN. mb_debug_caught: which vCPU (-1: none yet). */
int mb_debug_catch_triple(struct mb_machine *m, bool on);
int mb_debug_caught(struct mb_machine *m);

#endif

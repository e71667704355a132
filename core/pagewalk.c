/*
 * The page walker: a guest linear address through the guest's own page
 * tables, read from guest memory with mb_mem_read() only (no KVM), so it
 * works on a paused machine, a snapshot or hand-built tables in a test.
 * Every x86 paging mode (Intel SDM vol. 3A, chapter 4):
 *   none     CR0.PG = 0: linear = physical
 *   32-bit   4.3: CR3 -> PD (4-byte entries) -> PT; PDE.PS with CR4.PSE
 *            maps 4 MiB (PSE-36: bits 20:13 are physical bits 39:32)
 *   PAE      4.4: CR3[31:5] -> 4 PDPTEs -> PD -> PT, 2 MiB with PDE.PS
 *   4-level  4.5: PML4 -> PDPT (1 GiB with PS) -> PD (2 MiB) -> PT
 *   5-level  4.5 with CR4.LA57: PML5 on top
 * Each level read is reported (entry address and value), and a walk that
 * fails says at which level and why. Rights (W, U, NX) are the AND/OR
 * over every level, as the processor combines them (4.6).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

#include "moonbox/debug.h"

#define CR0_PE (1ull << 0)
#define CR0_PG (1ull << 31)
#define CR4_PSE (1ull << 4)
#define CR4_PAE (1ull << 5)
#define CR4_LA57 (1ull << 12)
#define EFER_LMA (1ull << 10)
#define EFER_NXE (1ull << 11)

enum mb_pg_mode mb_paging_mode(const struct mb_paging *p)
{
	if (!(p->cr0 & CR0_PG))
		return MB_PG_NONE;
	if (p->efer & EFER_LMA)
		return p->cr4 & CR4_LA57 ? MB_PG_LONG5 : MB_PG_LONG4;
	return p->cr4 & CR4_PAE ? MB_PG_PAE : MB_PG_32;
}

const char *mb_pg_mode_name(enum mb_pg_mode m)
{
	static const char *const n[] = { "none", "32-bit", "pae", "long4",
					 "long5" };
	return m <= MB_PG_LONG5 ? n[m] : "?";
}

const char *mb_paging_cpu_mode(const struct mb_paging *p)
{
	enum mb_pg_mode m = mb_paging_mode(p);
	if (m == MB_PG_NONE || m == MB_PG_32)
		return p->cr0 & CR0_PE ? "protected" : "real";
	return mb_pg_mode_name(m);
}

const char *mb_walk_err_name(enum mb_walk_err e)
{
	static const char *const n[] = { "ok", "not present", "reserved bit set",
					 "non-canonical address",
					 "address beyond 32 bits",
					 "page table outside guest RAM" };
	return e <= MB_WALK_MEMORY ? n[e] : "?";
}

static const char *level_name(enum mb_pg_mode m, unsigned level)
{
	static const char *const n[] = { "", "PT", "PD", "PDPT", "PML4", "PML5" };
	if (m == MB_PG_PAE && level == 3)
		return "PDPTE";
	return level <= 5 ? n[level] : "?";
}

void mb_walk_explain(const struct mb_walk *w, char *buf, size_t len)
{
	if (w->err == MB_WALK_OK) {
		snprintf(buf, len, "0x%" PRIx64, w->gpa);
		return;
	}
	if (w->n == 0 || w->err == MB_WALK_NONCANONICAL ||
	    w->err == MB_WALK_RANGE) {
		snprintf(buf, len, "%s (%s paging)", mb_walk_err_name(w->err),
			 mb_pg_mode_name(w->mode));
		return;
	}
	const struct mb_walk_level *l = &w->lv[w->n - 1];
	snprintf(buf, len, "level %u (%s) entry 0x%" PRIx64 " at 0x%" PRIx64
		 ": %s", l->level, level_name(w->mode, l->level), l->entry,
		 l->addr, mb_walk_err_name(w->err));
}

static int fail(struct mb_walk *w, enum mb_walk_err e, unsigned level)
{
	w->err = e;
	w->fail_level = level;
	return -EFAULT;
}

/* Bits [lo, hi] set. */
static uint64_t bits(unsigned lo, unsigned hi)
{
	return (hi >= 63 ? ~0ull : (1ull << (hi + 1)) - 1) & ~((1ull << lo) - 1);
}

static int read_entry(struct mb_mem *mem, struct mb_walk *w, unsigned level,
		      uint64_t addr, unsigned size, uint64_t *e)
{
	uint8_t b[8] = { 0 };
	struct mb_walk_level *l = &w->lv[w->n++];
	l->level = level, l->addr = addr, l->entry = 0;
	if (mb_mem_read(mem, addr, b, size))
		return fail(w, MB_WALK_MEMORY, level);
	uint64_t v = 0;
	for (int i = (int)size - 1; i >= 0; i--)
		v = v << 8 | b[i];
	*e = l->entry = v;
	return 0;
}

static void rights(struct mb_walk *w, uint64_t e, bool nxe)
{
	w->w = w->w && (e & MB_PTE_W);
	w->u = w->u && (e & MB_PTE_U);
	if (nxe && (e & MB_PTE_NX))
		w->nx = true;
}

/* 32-bit paging, 4.3. */
static int walk32(struct mb_mem *mem, const struct mb_paging *p, uint64_t va,
		  unsigned maxphy, struct mb_walk *w)
{
	if (va > 0xffffffffull)
		return fail(w, MB_WALK_RANGE, 0);
	uint64_t pde, pte;
	uint64_t a = (p->cr3 & 0xfffff000u) + ((va >> 22) & 0x3ff) * 4;
	if (read_entry(mem, w, 2, a, 4, &pde))
		return -EFAULT;
	if (!(pde & MB_PTE_P))
		return fail(w, MB_WALK_NOT_PRESENT, 2);
	rights(w, pde, false);
	if ((pde & MB_PTE_PS) && (p->cr4 & CR4_PSE)) {
		/* PSE-36: bits 20:13 are physical 39:32, bit 21 reserved, and
		 * so are those beyond MAXPHYADDR (4.3, table 4-4). */
		uint64_t rsv = 1ull << 21;
		if (maxphy < 40)
			rsv |= bits(13 + (maxphy - 32), 20);
		if (pde & rsv)
			return fail(w, MB_WALK_RESERVED, 2);
		uint64_t base = (pde & 0xffc00000u) | ((pde >> 13) & 0xff) << 32;
		w->gpa = base | (va & 0x3fffff);
		w->page_size = 4ull << 20;
		return 0;
	}
	a = (pde & 0xfffff000u) + ((va >> 12) & 0x3ff) * 4;
	if (read_entry(mem, w, 1, a, 4, &pte))
		return -EFAULT;
	if (!(pte & MB_PTE_P))
		return fail(w, MB_WALK_NOT_PRESENT, 1);
	rights(w, pte, false);
	w->gpa = (pte & 0xfffff000u) | (va & 0xfff);
	w->page_size = 4096;
	return 0;
}

/* PAE (4.4) and 4/5-level (4.5): 8-byte entries, 9 bits per level. */
static int walk64(struct mb_mem *mem, const struct mb_paging *p, uint64_t va,
		  unsigned maxphy, struct mb_walk *w)
{
	bool nxe = p->efer & EFER_NXE;
	uint64_t addr_mask = bits(12, maxphy - 1);
	uint64_t rsv = maxphy < 52 ? bits(maxphy, 51) : 0;
	if (!nxe)
		rsv |= MB_PTE_NX;
	unsigned top;
	uint64_t table;
	if (w->mode == MB_PG_PAE) {
		if (va > 0xffffffffull)
			return fail(w, MB_WALK_RANGE, 0);
		/* The PDPTEs (4.4.1): bits 2:1, 8:5 and 63 reserved too. */
		uint64_t e;
		uint64_t a = (p->cr3 & 0xffffffe0u) + ((va >> 30) & 3) * 8;
		if (read_entry(mem, w, 3, a, 8, &e))
			return -EFAULT;
		if (!(e & MB_PTE_P))
			return fail(w, MB_WALK_NOT_PRESENT, 3);
		if (e & (rsv | bits(1, 2) | bits(5, 8) | MB_PTE_NX))
			return fail(w, MB_WALK_RESERVED, 3);
		table = e & addr_mask;
		top = 2;
	} else {
		unsigned vbits = w->mode == MB_PG_LONG5 ? 57 : 48;
		uint64_t hi = va >> (vbits - 1); /* must be all 0s or all 1s */
		if (hi != 0 && hi != (~0ull >> (vbits - 1)))
			return fail(w, MB_WALK_NONCANONICAL, 0);
		table = p->cr3 & addr_mask;
		top = w->mode == MB_PG_LONG5 ? 5 : 4;
	}
	for (unsigned level = top; level >= 1; level--) {
		unsigned shift = 12 + 9 * (level - 1);
		uint64_t e, a = table + ((va >> shift) & 511) * 8;
		if (read_entry(mem, w, level, a, 8, &e))
			return -EFAULT;
		if (!(e & MB_PTE_P))
			return fail(w, MB_WALK_NOT_PRESENT, level);
		uint64_t r = rsv;
		bool large = (e & MB_PTE_PS) && level > 1;
		if (large && level > 3)
			return fail(w, MB_WALK_RESERVED, level); /* PS in PML4/5 */
		if (large && level == 3 && w->mode == MB_PG_PAE)
			return fail(w, MB_WALK_RESERVED, level);
		if (large) /* 2 MiB: bits 20:13, 1 GiB: 29:13 (bit 12 is PAT) */
			r |= bits(13, shift - 1);
		if (e & r)
			return fail(w, MB_WALK_RESERVED, level);
		rights(w, e, nxe);
		if (large || level == 1) {
			uint64_t off = (1ull << shift) - 1;
			w->gpa = (e & addr_mask & ~off) | (va & off);
			w->page_size = 1ull << shift;
			return 0;
		}
		table = e & addr_mask;
	}
	return fail(w, MB_WALK_NOT_PRESENT, 1); /* not reached */
}

int mb_pagewalk(struct mb_mem *mem, const struct mb_paging *p, uint64_t va,
		struct mb_walk *w)
{
	*w = (struct mb_walk){ .mode = mb_paging_mode(p), .w = true, .u = true };
	unsigned maxphy = p->maxphyaddr ? p->maxphyaddr : 52;
	if (maxphy < 32 || maxphy > 52)
		maxphy = 52;
	int rc;
	switch (w->mode) {
	case MB_PG_NONE:
		if (va > 0xffffffffull && !(p->efer & EFER_LMA))
			return fail(w, MB_WALK_RANGE, 0);
		w->gpa = va;
		w->page_size = 4096;
		return 0;
	case MB_PG_32:
		rc = walk32(mem, p, va, maxphy, w);
		break;
	default:
		rc = walk64(mem, p, va, maxphy, w);
	}
	if (rc)
		w->w = w->u = w->nx = false;
	return rc;
}

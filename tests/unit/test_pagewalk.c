/* The page walker on page tables built by hand in a buffer: every paging
 * mode, large pages, reserved bits, non-canonical addresses, rights. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "moonbox/debug.h"

#define MEMSZ (1u << 20) /* tables live in the first MiB */

static uint8_t *ram;
static struct mb_mem *mem;

static int setup(void **st)
{
	(void)st;
	ram = calloc(1, MEMSZ);
	mem = mb_mem_new();
	return ram && mem && mb_mem_add(mem, 0, MEMSZ, 0, ram, "t") == 0 ? 0 : -1;
}

static int teardown(void **st)
{
	(void)st;
	mb_mem_free(mem);
	free(ram);
	return 0;
}

static void put64(uint64_t at, uint64_t v) { memcpy(ram + at, &v, 8); }
static void put32(uint64_t at, uint32_t v) { memcpy(ram + at, &v, 4); }

#define PG 0x80000001ull /* CR0: PE, PG */
#define PAE 0x20
#define PSE 0x10
#define LA57 0x1000
#define LMA 0x500
#define NXE 0x800
#define P 1ull
#define W 2ull
#define U 4ull
#define PS 0x80ull
#define NX (1ull << 63)

static void no_paging(void **st)
{
	(void)st;
	struct mb_paging p = { .cr0 = 1 };
	struct mb_walk w;
	assert_int_equal(mb_pagewalk(mem, &p, 0x12345678, &w), 0);
	assert_int_equal(w.mode, MB_PG_NONE);
	assert_int_equal(w.gpa, 0x12345678);
	assert_string_equal(mb_paging_cpu_mode(&p), "protected");
	p.cr0 = 0;
	assert_string_equal(mb_paging_cpu_mode(&p), "real");
	assert_int_equal(mb_pagewalk(mem, &p, 0x100000000ull, &w), -EFAULT);
	assert_int_equal(w.err, MB_WALK_RANGE);
}

static void paging32(void **st)
{
	(void)st;
	memset(ram, 0, MEMSZ);
	/* PD at 0x10000; va 0x00401234 -> PT at 0x11000 -> page 0x55000 */
	put32(0x10000 + 1 * 4, 0x11000 | P | W | U);
	put32(0x11000 + 1 * 4, 0x55000 | P | U);
	/* va 0x80000000 + x: 4 MiB page at 0xc00000, PSE-36 bits 39:32 = 2 */
	put32(0x10000 + 0x200 * 4, 0x00c00000 | (2u << 13) | P | W | PS);
	/* PDE with bit 21 set (reserved in a 4 MiB PDE) */
	put32(0x10000 + 0x201 * 4, 0x00c00000 | (1u << 21) | P | PS);
	struct mb_paging p = { .cr0 = PG, .cr3 = 0x10000, .cr4 = PSE };
	struct mb_walk w;
	assert_int_equal(mb_pagewalk(mem, &p, 0x00401234, &w), 0);
	assert_int_equal(w.mode, MB_PG_32);
	assert_int_equal(w.gpa, 0x55234);
	assert_int_equal(w.n, 2);
	assert_int_equal(w.lv[0].level, 2);
	assert_int_equal(w.lv[0].addr, 0x10004);
	assert_int_equal(w.lv[1].entry, 0x55000 | P | U);
	assert_false(w.w);
	assert_true(w.u);
	assert_string_equal(mb_paging_cpu_mode(&p), "protected");

	assert_int_equal(mb_pagewalk(mem, &p, 0x80012345, &w), 0);
	assert_int_equal(w.page_size, 4u << 20);
	assert_int_equal(w.gpa, 0x200c12345ull);
	assert_int_equal(mb_pagewalk(mem, &p, 0x80412345, &w), -EFAULT);
	assert_int_equal(w.err, MB_WALK_RESERVED);
	assert_int_equal(w.fail_level, 2);
	/* Without CR4.PSE, PS is ignored: the PDE points at a page table
	 * (here at 0xc04000, outside the buffer). */
	p.cr4 = 0;
	assert_int_equal(mb_pagewalk(mem, &p, 0x80012345, &w), -EFAULT);
	assert_int_equal(w.err, MB_WALK_MEMORY);
	assert_int_equal(w.fail_level, 1);
	/* not present at the top */
	assert_int_equal(mb_pagewalk(mem, &p, 0x00c00000, &w), -EFAULT);
	assert_int_equal(w.fail_level, 2);
	char buf[128];
	mb_walk_explain(&w, buf, sizeof buf);
	assert_non_null(strstr(buf, "level 2 (PD)"));
	assert_non_null(strstr(buf, "not present"));
}

static void pae(void **st)
{
	(void)st;
	memset(ram, 0, MEMSZ);
	/* PDPT at 0x10020 (32-byte aligned), va 0xc0201234: PDPTE 3 */
	put64(0x10020 + 3 * 8, 0x11000 | P);
	put64(0x11000 + 1 * 8, 0x12000 | P | W);         /* PD[1] -> PT */
	put64(0x12000 + 1 * 8, 0x77000 | P | W | NX);    /* PT[1] */
	put64(0x11000 + 2 * 8, 0x40000000ull | P | W | PS); /* 2 MiB */
	struct mb_paging p = { .cr0 = PG, .cr3 = 0x10020, .cr4 = PAE,
			       .efer = NXE };
	struct mb_walk w;
	assert_int_equal(mb_pagewalk(mem, &p, 0xc0201234, &w), 0);
	assert_int_equal(w.mode, MB_PG_PAE);
	assert_int_equal(w.gpa, 0x77234);
	assert_int_equal(w.n, 3);
	assert_true(w.nx);
	assert_true(w.w);
	assert_int_equal(mb_pagewalk(mem, &p, 0xc0412345, &w), 0);
	assert_int_equal(w.page_size, 2u << 20);
	assert_int_equal(w.gpa, 0x40012345);
	/* NX without EFER.NXE is a reserved bit */
	p.efer = 0;
	assert_int_equal(mb_pagewalk(mem, &p, 0xc0201234, &w), -EFAULT);
	assert_int_equal(w.err, MB_WALK_RESERVED);
	assert_int_equal(w.fail_level, 1);
	/* PDPTE bit 1 (R/W) is reserved in PAE */
	put64(0x10020 + 3 * 8, 0x11000 | P | W);
	assert_int_equal(mb_pagewalk(mem, &p, 0xc0412345, &w), -EFAULT);
	assert_int_equal(w.err, MB_WALK_RESERVED);
	assert_int_equal(w.fail_level, 3);
	assert_string_equal(mb_paging_cpu_mode(&p), "pae");
}

/* 4-level: PML4 0x10000, PDPT 0x11000, PD 0x12000, PT 0x13000. */
static void build4(void)
{
	memset(ram, 0, MEMSZ);
	put64(0x10000 + 0 * 8, 0x11000 | P | W | U);
	put64(0x10000 + 511 * 8, 0x11000 | P | W);     /* kernel half */
	put64(0x11000 + 0 * 8, 0x12000 | P | W | U);
	put64(0x11000 + 1 * 8, 0x80000000ull | P | W | PS); /* 1 GiB */
	put64(0x11000 + 2 * 8, 0x80000000ull | (1ull << 13) | P | PS);
	put64(0x12000 + 0 * 8, 0x13000 | P | W | U);
	put64(0x12000 + 1 * 8, 0x600000 | P | PS | U);   /* 2 MiB */
	put64(0x12000 + 2 * 8, 0x600000 | (1ull << 20) | P | PS);
	put64(0x13000 + 5 * 8, 0x9000 | P | U | NX);
	put64(0x13000 + 6 * 8, (1ull << 50) | 0x9000 | P);
}

static void long4(void **st)
{
	(void)st;
	build4();
	struct mb_paging p = { .cr0 = PG, .cr3 = 0x10000, .cr4 = PAE,
			       .efer = LMA | NXE, .maxphyaddr = 46 };
	struct mb_walk w;
	assert_int_equal(mb_pagewalk(mem, &p, 0x5abc, &w), 0);
	assert_int_equal(w.mode, MB_PG_LONG4);
	assert_int_equal(w.gpa, 0x9abc);
	assert_int_equal(w.n, 4);
	assert_int_equal(w.lv[0].level, 4);
	assert_int_equal(w.lv[3].addr, 0x13000 + 5 * 8);
	assert_true(w.u);
	assert_true(w.nx);
	assert_false(w.w);
	/* 2 MiB page */
	assert_int_equal(mb_pagewalk(mem, &p, 0x212345, &w), 0);
	assert_int_equal(w.page_size, 2u << 20);
	assert_int_equal(w.gpa, 0x612345);
	assert_int_equal(w.n, 3);
	/* 1 GiB page */
	assert_int_equal(mb_pagewalk(mem, &p, 0x40123456, &w), 0);
	assert_int_equal(w.page_size, 1u << 30);
	assert_int_equal(w.gpa, 0x80123456);
	/* reserved: bit 13 of a 1 GiB entry, bit 20 of a 2 MiB entry, bit 50
	 * beyond MAXPHYADDR 46 */
	assert_int_equal(mb_pagewalk(mem, &p, 0x80000000, &w), -EFAULT);
	assert_int_equal(w.err, MB_WALK_RESERVED);
	assert_int_equal(w.fail_level, 3);
	assert_int_equal(mb_pagewalk(mem, &p, 0x400000, &w), -EFAULT);
	assert_int_equal(w.err, MB_WALK_RESERVED);
	assert_int_equal(w.fail_level, 2);
	assert_int_equal(mb_pagewalk(mem, &p, 0x6000, &w), -EFAULT);
	assert_int_equal(w.err, MB_WALK_RESERVED);
	assert_int_equal(w.fail_level, 1);
	/* the same bit with MAXPHYADDR 52 is an address bit: outside RAM is
	 * not the walker's business, the translation succeeds */
	p.maxphyaddr = 52;
	assert_int_equal(mb_pagewalk(mem, &p, 0x6000, &w), 0);
	assert_int_equal(w.gpa, (1ull << 50) | 0x9000);
	/* non-canonical, and the canonical kernel half */
	assert_int_equal(mb_pagewalk(mem, &p, 0x0000800000000000ull, &w), -EFAULT);
	assert_int_equal(w.err, MB_WALK_NONCANONICAL);
	assert_int_equal(w.n, 0);
	assert_int_equal(mb_pagewalk(mem, &p, 0xffff800000005000ull, &w), -EFAULT);
	assert_int_equal(w.err, MB_WALK_NOT_PRESENT); /* PML4[256] */
	assert_int_equal(w.fail_level, 4);
	assert_int_equal(mb_pagewalk(mem, &p, 0xffffff8000005abcull, &w), 0);
	assert_int_equal(w.gpa, 0x9abc);
	assert_false(w.u); /* PML4[511] is supervisor */
	/* PS in a PML4 entry is reserved */
	put64(0x10000 + 1 * 8, 0x11000 | P | PS);
	assert_int_equal(mb_pagewalk(mem, &p, 0x8000000000ull, &w), -EFAULT);
	assert_int_equal(w.err, MB_WALK_RESERVED);
	assert_int_equal(w.fail_level, 4);
	/* a table outside guest memory */
	put64(0x10000 + 2 * 8, 0x40000000ull | P);
	assert_int_equal(mb_pagewalk(mem, &p, 0x10000000000ull, &w), -EFAULT);
	assert_int_equal(w.err, MB_WALK_MEMORY);
	assert_string_equal(mb_paging_cpu_mode(&p), "long4");
}

static void long5(void **st)
{
	(void)st;
	build4();
	/* PML5 at 0x14000: entry 0 -> the PML4 above, entry 1 not present */
	put64(0x14000, 0x10000 | P | W | U);
	struct mb_paging p = { .cr0 = PG, .cr3 = 0x14000, .cr4 = PAE | LA57,
			       .efer = LMA | NXE };
	struct mb_walk w;
	assert_int_equal(mb_pagewalk(mem, &p, 0x5abc, &w), 0);
	assert_int_equal(w.mode, MB_PG_LONG5);
	assert_int_equal(w.n, 5);
	assert_int_equal(w.lv[0].level, 5);
	assert_int_equal(w.gpa, 0x9abc);
	/* bit 48 set is canonical with 57 bits, and picks PML5 entry 1 */
	assert_int_equal(mb_pagewalk(mem, &p, 1ull << 48, &w), -EFAULT);
	assert_int_equal(w.err, MB_WALK_NOT_PRESENT);
	assert_int_equal(w.fail_level, 5);
	assert_int_equal(mb_pagewalk(mem, &p, 1ull << 57, &w), -EFAULT);
	assert_int_equal(w.err, MB_WALK_NONCANONICAL);
	assert_string_equal(mb_paging_cpu_mode(&p), "long5");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(no_paging), cmocka_unit_test(paging32),
		cmocka_unit_test(pae),       cmocka_unit_test(long4),
		cmocka_unit_test(long5),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}

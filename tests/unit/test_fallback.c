/* The emulation fallback's executor on hand-built register states: one test
 * per instruction it completes, the broken-syscall fix-up on a crafted
 * exception frame, and what it must refuse. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/fallback.h"
#include "core/internal.h"

enum { RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8, R9, R10, R11, R12, R13, R14, R15 };

#define CF 0x1ull
#define PF 0x4ull
#define AF 0x10ull
#define ZF 0x40ull
#define SF 0x80ull
#define IF 0x200ull
#define OF 0x800ull
#define IOPL 0x3000ull
#define RF 0x10000ull
#define AC 0x40000ull
#define ARITH (CF | PF | AF | ZF | SF | OF)

/* Linux 6.1's MSR values (arch/x86/kernel/cpu/common.c, syscall_init). */
#define STAR ((0x23ull << 48) | (0x10ull << 32))
#define LSTAR 0xffffffff81a00040ull
#define SFMASK 0x257fd5ull
#define PF_HANDLER 0xffffffff81a00b20ull
#define IDT 0xfffffe0000000000ull
#define STACK_TOP 0xffffc90000008000ull
#define FRAME (STACK_TOP - 48) /* RSP at the #PF entry: the error code */
#define USER_RSP 0x7ffd1000ull
#define USER_RIP 0x401a2bull /* after the user's syscall: in RCX */

/* ---- states ------------------------------------------------------------ */

/* 64-bit kernel: CS 0x10 (L=1), SS 0x18, paging, EFER.LME|LMA|SCE|NXE. */
static struct mb_fb_state kernel64(void)
{
	struct mb_fb_state st = {
		.rip = 0xffffffff81000100ull,
		.rflags = 0x2 | AC,
		.cs = { .selector = 0x10, .type = 11, .present = 1, .s = 1, .l = 1,
			.g = 1, .limit = 0xffffffff },
		.ss = { .selector = 0x18, .type = 3, .present = 1, .s = 1, .db = 1,
			.g = 1, .limit = 0xffffffff },
		.cr0 = 0x80050033, .efer = 0xd01, .idt_base = IDT,
		.star = STAR, .lstar = LSTAR, .sfmask = SFMASK,
	};
	for (unsigned i = 0; i < 16; i++)
		st.gpr[i] = 0x1111111111111111ull * (i + 1);
	return st;
}

static struct mb_fb_state prot32(void)
{
	struct mb_fb_state st = kernel64();
	st.efer = 0, st.cr0 = 0x11, st.cs.l = 0, st.cs.db = 1, st.cs.selector = 8;
	st.rip = 0x100000;
	return st;
}

static struct mb_fb_state real16(void)
{
	struct mb_fb_state st = kernel64();
	st.efer = 0, st.cr0 = 0x10, st.cs = (struct mb_seg){ .limit = 0xffff };
	st.ss = st.cs;
	st.rip = 0x7c00;
	return st;
}

#define EXEC(st, ...)                                                        \
	mb_fallback_exec(&(st), (const uint8_t[]){ __VA_ARGS__ },             \
			 sizeof((const uint8_t[]){ __VA_ARGS__ }))

/* ---- a fake guest memory: the kernel stack page and the IDT ------------ */

struct fake_mem {
	uint8_t stack[4096]; /* the page below STACK_TOP */
	uint8_t idt[256 * 16];
	uint8_t text[64];    /* the #PF handler's first bytes */
	int reads_left;      /* < 0: unlimited */
};

static int fake_read(void *ctx, uint64_t la, void *buf, unsigned len)
{
	struct fake_mem *fm = ctx;
	const struct { uint64_t base; uint8_t *p; size_t size; } r[] = {
		{ STACK_TOP - 4096, fm->stack, sizeof fm->stack },
		{ IDT, fm->idt, sizeof fm->idt },
		{ PF_HANDLER, fm->text, sizeof fm->text },
	};
	if (fm->reads_left == 0)
		return -1;
	if (fm->reads_left > 0)
		fm->reads_left--;
	for (size_t i = 0; i < sizeof r / sizeof r[0]; i++)
		if (la >= r[i].base && la - r[i].base + len <= r[i].size) {
			memcpy(buf, r[i].p + (la - r[i].base), len);
			return 0;
		}
	return -1;
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* A 64-bit interrupt gate for vector vec (SDM vol. 3, figure 6-8). */
static void gate(struct fake_mem *fm, unsigned vec, uint64_t handler)
{
	uint8_t *g = fm->idt + vec * 16;
	memset(g, 0, 16);
	g[0] = (uint8_t)handler, g[1] = (uint8_t)(handler >> 8);
	g[2] = 0x10, g[5] = 0x8e; /* selector 0x10, present, interrupt gate */
	g[6] = (uint8_t)(handler >> 16), g[7] = (uint8_t)(handler >> 24);
	put64(g + 8, handler >> 32); /* upper half, reserved dword zero */
}

/* The frame the CPU pushed for the #PF at LSTAR, read from the top down:
 * SS, RSP, RFLAGS, CS, RIP, error code. */
static void frame(struct fake_mem *fm, uint64_t rip, uint64_t cs,
		  uint64_t rflags)
{
	uint8_t *f = fm->stack + (FRAME - (STACK_TOP - 4096));
	put64(f + 0, 0x15); /* P | U/S | I/D: user fetch of a supervisor page */
	put64(f + 8, rip);
	put64(f + 16, cs);
	put64(f + 24, rflags);
	put64(f + 32, USER_RSP);
	put64(f + 40, 0x2b); /* __USER_DS */
}

/* The state at the clac that begins the #PF handler, after the host's
 * broken syscall: RCX and R11 hold what syscall put there. */
static struct mb_fb_state at_pf_entry(struct fake_mem *fm, uint64_t user_flags)
{
	memset(fm, 0, sizeof *fm);
	fm->reads_left = -1;
	gate(fm, 14, PF_HANDLER);
	gate(fm, 0x20, PF_HANDLER + 0x400);
	frame(fm, LSTAR, 0x33, user_flags | RF);
	struct mb_fb_state st = kernel64();
	st.rip = PF_HANDLER;
	st.rflags = 0x2 | AC; /* interrupt gate cleared IF */
	st.gpr[RSP] = FRAME;
	st.gpr[RCX] = USER_RIP;
	st.gpr[R11] = user_flags;
	st.read = fake_read, st.ctx = fm;
	return st;
}

/* ---- int3, clac, stac, fwait --------------------------------------------- */

static void test_int3(void **state)
{
	struct mb_fb_state st = kernel64();
	uint64_t rip = st.rip;
	assert_int_equal(EXEC(st, 0xcc), MB_FB_INT3);
	assert_int_equal(st.rip, rip + 1); /* #BP is a trap: frame RIP is next */
	assert_true(st.inject);
	assert_int_equal(st.inject_vec, 3);
	assert_false(st.segs_changed);

	/* Any mode; EIP wraps at 32 bits outside 64-bit mode. */
	st = prot32();
	st.rip = 0xffffffff;
	assert_int_equal(EXEC(st, 0xcc, 0x90), MB_FB_INT3);
	assert_int_equal(st.rip, 0);
	assert_true(st.inject);
}

static void test_clac_stac(void **state)
{
	struct mb_fb_state st = kernel64();
	uint64_t rip = st.rip, flags = st.rflags | RF;
	st.rflags = flags;
	assert_int_equal(EXEC(st, 0x0f, 0x01, 0xca), MB_FB_CLAC);
	assert_int_equal(st.rip, rip + 3);
	assert_int_equal(st.rflags, flags & ~AC & ~RF);
	assert_false(st.inject);
	assert_int_equal(EXEC(st, 0x0f, 0x01, 0xcb, 0xcc), MB_FB_STAC);
	assert_int_equal(st.rip, rip + 6);
	assert_int_equal(st.rflags, (flags & ~RF) | AC);

	/* Real mode is CPL 0 too. */
	st = real16();
	assert_int_equal(EXEC(st, 0x0f, 0x01, 0xca), MB_FB_CLAC);
	assert_int_equal(st.rip, 0x7c03);

	/* CPL 3: #UD on a real CPU; not ours to complete. */
	st = kernel64();
	st.cs.selector = 0x33, st.ss.selector = 0x2b, st.ss.dpl = 3;
	struct mb_fb_state before = st;
	assert_int_equal(EXEC(st, 0x0f, 0x01, 0xca), MB_FB_NONE);
	assert_int_equal(EXEC(st, 0x0f, 0x01, 0xcb), MB_FB_NONE);
	assert_memory_equal(&st, &before, sizeof st);
}

static void test_fwait(void **state)
{
	struct mb_fb_state st = kernel64();
	uint64_t rip = st.rip, flags = st.rflags;
	assert_int_equal(EXEC(st, 0x9b), MB_FB_FWAIT);
	assert_int_equal(st.rip, rip + 1);
	assert_int_equal(st.rflags, flags);
	assert_false(st.inject);
	/* fwait; fnstcw: only the 9B is ours, the rest runs afterwards. */
	assert_int_equal(EXEC(st, 0x9b, 0xd9, 0x7d, 0xfe), MB_FB_FWAIT);
	assert_int_equal(st.rip, rip + 2);

	/* CR0.MP and CR0.TS: #NM, a fault (RIP stays). TS alone: no-op. */
	st.cr0 |= 0x8;
	st.cr0 &= ~0x2ull;
	assert_int_equal(EXEC(st, 0x9b), MB_FB_FWAIT);
	assert_int_equal(st.rip, rip + 3);
	st.cr0 |= 0x2;
	assert_int_equal(EXEC(st, 0x9b), MB_FB_FWAIT);
	assert_int_equal(st.rip, rip + 3);
	assert_true(st.inject);
	assert_int_equal(st.inject_vec, 7);
}

/* ---- popcnt -------------------------------------------------------------- */

static void test_popcnt32(void **state)
{
	struct mb_fb_state st = kernel64();
	uint64_t rip = st.rip;
	st.gpr[RCX] = 0xffffffff000000f0ull; /* upper half is not the source */
	st.gpr[RAX] = 0xdeadbeefdeadbeefull;
	st.rflags |= ARITH & ~ZF;
	assert_int_equal(EXEC(st, 0xf3, 0x0f, 0xb8, 0xc1), MB_FB_POPCNT);
	assert_int_equal(st.gpr[RAX], 4); /* 32-bit write zero-extends */
	assert_int_equal(st.gpr[RCX], 0xffffffff000000f0ull);
	assert_int_equal(st.rflags & ARITH, 0);
	assert_int_equal(st.rip, rip + 4);

	/* Zero source (low 32 bits): ZF, every other flag clear. */
	st.rflags |= ARITH & ~ZF;
	st.gpr[RDX] = 0xabcd000000000000ull;
	assert_int_equal(EXEC(st, 0xf3, 0x0f, 0xb8, 0xda), MB_FB_POPCNT); /* ebx, edx */
	assert_int_equal(st.gpr[RBX], 0);
	assert_int_equal(st.rflags & ARITH, ZF);
	assert_int_equal(st.rip, rip + 8);
}

static void test_popcnt64(void **state)
{
	struct mb_fb_state st = kernel64();
	uint64_t rip = st.rip;
	st.gpr[RSI] = 0x8000000000000001ull;
	assert_int_equal(EXEC(st, 0xf3, 0x48, 0x0f, 0xb8, 0xfe), MB_FB_POPCNT); /* rdi, rsi */
	assert_int_equal(st.gpr[RDI], 2);
	assert_int_equal(st.rip, rip + 5);
	assert_int_equal(st.rflags & ARITH, 0);

	/* REX.W+R+B (4D): modrm C8 is reg 1, rm 0 -> r9 = popcnt r8. */
	st.gpr[R8] = ~0ull;
	assert_int_equal(EXEC(st, 0xf3, 0x4d, 0x0f, 0xb8, 0xc8), MB_FB_POPCNT);
	assert_int_equal(st.gpr[R9], 64);
	assert_int_equal(st.gpr[R8], ~0ull);

	/* REX.R alone (44): r8d = popcnt ecx, 32-bit. */
	st.gpr[RCX] = 0x1ff;
	st.gpr[R8] = ~0ull;
	assert_int_equal(EXEC(st, 0xf3, 0x44, 0x0f, 0xb8, 0xc1), MB_FB_POPCNT);
	assert_int_equal(st.gpr[R8], 9);

	/* REX.B alone (41): eax = popcnt r10d. */
	st.gpr[R10] = 0xf0000000000000ffull;
	assert_int_equal(EXEC(st, 0xf3, 0x41, 0x0f, 0xb8, 0xc2), MB_FB_POPCNT);
	assert_int_equal(st.gpr[RAX], 8);

	/* 66 is ignored when REX.W is present. */
	st.gpr[RDX] = 0xffff0000ffff0000ull;
	assert_int_equal(EXEC(st, 0x66, 0xf3, 0x48, 0x0f, 0xb8, 0xc2), MB_FB_POPCNT);
	assert_int_equal(st.gpr[RAX], 32);

	/* Zero 64-bit source. */
	st.gpr[R15] = 0;
	assert_int_equal(EXEC(st, 0xf3, 0x49, 0x0f, 0xb8, 0xc7), MB_FB_POPCNT); /* rax, r15 */
	assert_int_equal(st.gpr[RAX], 0);
	assert_int_equal(st.rflags & ARITH, ZF);
}

static void test_popcnt16(void **state)
{
	struct mb_fb_state st = kernel64();
	uint64_t rip = st.rip;
	st.gpr[RCX] = 0xffffffffffff0007ull;
	st.gpr[RAX] = 0x123456789abcdef0ull;
	/* 66 before or after the mandatory F3: both are popcnt r16. */
	assert_int_equal(EXEC(st, 0x66, 0xf3, 0x0f, 0xb8, 0xc1), MB_FB_POPCNT);
	assert_int_equal(st.gpr[RAX], 0x123456789abc0003ull); /* keeps 63:16 */
	assert_int_equal(st.rip, rip + 5);
	st.gpr[RCX] = 0xffff0000;
	assert_int_equal(EXEC(st, 0xf3, 0x66, 0x0f, 0xb8, 0xc1), MB_FB_POPCNT);
	assert_int_equal(st.gpr[RAX], 0x123456789abc0000ull);
	assert_int_equal(st.rflags & ARITH, ZF);

	/* 16-bit code: no 66 means 16 bits, 66 means 32. */
	st = real16();
	st.gpr[RBX] = 0x10101;
	st.gpr[RAX] = 0xffffffffffffffffull;
	assert_int_equal(EXEC(st, 0xf3, 0x0f, 0xb8, 0xc3), MB_FB_POPCNT);
	assert_int_equal(st.gpr[RAX], 0xffffffffffff0002ull);
	assert_int_equal(EXEC(st, 0x66, 0xf3, 0x0f, 0xb8, 0xc3), MB_FB_POPCNT);
	assert_int_equal(st.gpr[RAX], 3);
	assert_int_equal(st.rip, 0x7c00 + 4 + 5);

	/* 32-bit code: 48 is `dec eax` there, not REX. */
	st = prot32();
	struct mb_fb_state before = st;
	assert_int_equal(EXEC(st, 0xf3, 0x48, 0x0f, 0xb8, 0xc1), MB_FB_NONE);
	assert_memory_equal(&st, &before, sizeof st);
	st.gpr[RCX] = 0xf;
	assert_int_equal(EXEC(st, 0xf3, 0x0f, 0xb8, 0xc1), MB_FB_POPCNT);
	assert_int_equal(st.gpr[RAX], 4);
}

/* The executor against this host's own POPCNT, flags included. The flags
 * are read below the red zone; lea leaves them alone. */
#define FLAGS "lea -128(%%rsp), %%rsp\n\tpushfq\n\tpopq %1\n\tlea 128(%%rsp), %%rsp"
static void test_popcnt_matches_cpu(void **state)
{
	if (!__builtin_cpu_supports("popcnt"))
		skip();
	const uint64_t vals[] = { 0, 1, 0x8000, 0x10000, 0xffffffff, 0x100000000ull,
				  0x8000000000000000ull, ~0ull, 0x5555aaaa0000ffffull };
	for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
		uint64_t src = vals[i], r64, f64, r32 = ~0ull, f32, f16;
		uint64_t r16 = 0xfedcba9876543210ull;
		uint32_t r32d;
		uint16_t r16w = (uint16_t)r16;
		__asm__("popcnt %2, %0\n\t" FLAGS : "=r"(r64), "=r"(f64) : "r"(src) : "cc");
		__asm__("popcnt %2, %0\n\t" FLAGS : "=r"(r32d), "=r"(f32) : "r"((uint32_t)src) : "cc");
		__asm__("popcnt %2, %0\n\t" FLAGS : "+r"(r16w), "=r"(f16) : "r"((uint16_t)src) : "cc");
		r32 = r32d;
		r16 = (r16 & ~0xffffull) | r16w;

		struct mb_fb_state st = kernel64();
		st.gpr[RDX] = src;
		st.rflags |= ARITH;
		assert_int_equal(EXEC(st, 0xf3, 0x48, 0x0f, 0xb8, 0xc2), MB_FB_POPCNT);
		assert_int_equal(st.gpr[RAX], r64);
		assert_int_equal(st.rflags & ARITH, f64 & ARITH);
		st.gpr[RAX] = ~0ull;
		st.rflags |= ARITH;
		assert_int_equal(EXEC(st, 0xf3, 0x0f, 0xb8, 0xc2), MB_FB_POPCNT);
		assert_int_equal(st.gpr[RAX], r32);
		assert_int_equal(st.rflags & ARITH, f32 & ARITH);
		st.gpr[RAX] = 0xfedcba9876543210ull;
		st.rflags |= ARITH;
		assert_int_equal(EXEC(st, 0x66, 0xf3, 0x0f, 0xb8, 0xc2), MB_FB_POPCNT);
		assert_int_equal(st.gpr[RAX], r16);
		assert_int_equal(st.rflags & ARITH, f16 & ARITH);
	}
}

/* ---- the broken syscall -------------------------------------------------- */

static void check_syscall_entry(struct mb_fb_state *st, uint64_t want_flags)
{
	assert_int_equal(st->rip, LSTAR);
	assert_int_equal(st->gpr[RSP], USER_RSP);
	assert_int_equal(st->rflags, want_flags);
	assert_int_equal(st->gpr[RCX], USER_RIP); /* untouched */
	assert_true(st->segs_changed);
	assert_false(st->inject);
	/* SDM vol. 2B, SYSCALL: flat 64-bit code and flat data, DPL 0. */
	assert_int_equal(st->cs.selector, 0x10);
	assert_int_equal(st->cs.type, 11);
	assert_int_equal(st->cs.l, 1);
	assert_int_equal(st->cs.db, 0);
	assert_int_equal(st->cs.dpl, 0);
	assert_int_equal(st->cs.base, 0);
	assert_int_equal(st->cs.limit, 0xffffffff);
	assert_true(st->cs.present && st->cs.s && st->cs.g);
	assert_int_equal(st->ss.selector, 0x18);
	assert_int_equal(st->ss.type, 3);
	assert_int_equal(st->ss.db, 1);
	assert_int_equal(st->ss.dpl, 0);
	assert_true(st->ss.present && st->ss.s && st->ss.g);
}

static void test_syscall_fixup(void **state)
{
	struct fake_mem fm;
	/* A host that did not apply SFMASK: frame RFLAGS == R11 (+RF). */
	struct mb_fb_state st = at_pf_entry(&fm, 0x246);
	uint64_t r11 = st.gpr[R11];
	assert_int_equal(EXEC(st, 0x0f, 0x01, 0xca), MB_FB_SYSCALL);
	check_syscall_entry(&st, 0x2); /* 0x246 & ~SFMASK */
	assert_int_equal(st.gpr[R11], r11);

	/* A host that did: the frame holds the masked flags. */
	st = at_pf_entry(&fm, 0x246);
	frame(&fm, LSTAR, 0x33, 0x2);
	assert_int_equal(EXEC(st, 0x0f, 0x01, 0xca), MB_FB_SYSCALL);
	check_syscall_entry(&st, 0x2);

	/* A smaller SFMASK lets user flags through (but never RF). */
	st = at_pf_entry(&fm, 0x246 | AC);
	st.sfmask = IF;
	assert_int_equal(EXEC(st, 0x0f, 0x01, 0xca), MB_FB_SYSCALL);
	check_syscall_entry(&st, 0x46 | AC);

	/* An IBT kernel: endbr64 first, the clac at handler + 4. */
	st = at_pf_entry(&fm, 0x246);
	memcpy(fm.text, (const uint8_t[]){ 0xf3, 0x0f, 0x1e, 0xfa, 0x0f, 0x01, 0xca }, 7);
	st.rip = PF_HANDLER + 4;
	assert_int_equal(EXEC(st, 0x0f, 0x01, 0xca), MB_FB_SYSCALL);
	check_syscall_entry(&st, 0x2);
}

/* Each way the frame or the state can fail to be a broken syscall: an
 * ordinary clac (AC cleared, RIP + 3, nothing else). */
static void expect_plain_clac(struct mb_fb_state st)
{
	struct mb_fb_state want = st;
	want.rflags &= ~(AC | RF);
	want.rip += 3;
	assert_int_equal(EXEC(st, 0x0f, 0x01, 0xca), MB_FB_CLAC);
	assert_memory_equal(&st, &want, sizeof st);
}

static void test_syscall_negative(void **state)
{
	struct fake_mem fm;
	struct mb_fb_state st;

	st = at_pf_entry(&fm, 0x246); /* fault at another address */
	frame(&fm, LSTAR + 0x10, 0x33, 0x246);
	expect_plain_clac(st);

	st = at_pf_entry(&fm, 0x246); /* a kernel-mode fault at LSTAR */
	frame(&fm, LSTAR, 0x10, 0x246);
	expect_plain_clac(st);

	/* An interrupt stub (pushed vector where #PF has the error code)
	 * running the same clac: not the #PF handler. */
	st = at_pf_entry(&fm, 0x246);
	st.rip = PF_HANDLER + 0x400;
	expect_plain_clac(st);

	/* Handler + 4 without an endbr64 there. */
	st = at_pf_entry(&fm, 0x246);
	st.rip = PF_HANDLER + 4;
	expect_plain_clac(st);

	/* R11 disagrees with the frame outside SFMASK, or claims IOPL 3. */
	st = at_pf_entry(&fm, 0x246);
	st.sfmask = IF;
	st.gpr[R11] = 0x247;
	expect_plain_clac(st);
	st = at_pf_entry(&fm, 0x246);
	st.gpr[R11] = 0x246 | IOPL;
	expect_plain_clac(st);

	/* syscall disabled, no LSTAR, no memory, unreadable frame or IDT. */
	st = at_pf_entry(&fm, 0x246);
	st.efer &= ~1ull;
	expect_plain_clac(st);
	st = at_pf_entry(&fm, 0x246);
	st.lstar = 0;
	expect_plain_clac(st);
	st = at_pf_entry(&fm, 0x246);
	st.read = NULL;
	expect_plain_clac(st);
	st = at_pf_entry(&fm, 0x246);
	fm.reads_left = 0;
	expect_plain_clac(st);
	st = at_pf_entry(&fm, 0x246);
	fm.reads_left = 1;
	expect_plain_clac(st);
	st = at_pf_entry(&fm, 0x246);
	st.gpr[RSP] = STACK_TOP - 40; /* frame would run off the page */
	expect_plain_clac(st);

	/* Not 64-bit mode: no 64-bit frame to look at. */
	st = at_pf_entry(&fm, 0x246);
	st.cs.l = 0, st.cs.db = 1, st.rip = 0x1000;
	expect_plain_clac(st);

	/* stac is never a syscall. */
	st = at_pf_entry(&fm, 0x246);
	assert_int_equal(EXEC(st, 0x0f, 0x01, 0xcb), MB_FB_STAC);
	assert_false(st.segs_changed);
}

/* ---- what it refuses ---------------------------------------------------- */

static void refused(const uint8_t *b, unsigned n)
{
	struct mb_fb_state st = kernel64(), before = st;
	assert_int_equal(mb_fallback_exec(&st, b, n), MB_FB_NONE);
	assert_memory_equal(&st, &before, sizeof st);
}

#define REFUSED(...)                                                          \
	refused((const uint8_t[]){ __VA_ARGS__ },                              \
		sizeof((const uint8_t[]){ __VA_ARGS__ }))

static void test_unknown(void **state)
{
	REFUSED(0x0f, 0x0b);             /* ud2 */
	REFUSED(0x90);                   /* nop */
	REFUSED(0xcd, 0x03);             /* int n without guest memory access */
	REFUSED(0xf1);                   /* int1 */
	REFUSED(0x0f, 0x01, 0xc8);       /* monitor */
	REFUSED(0x0f, 0x01, 0xcc);       /* 0F 01 CC is not clac/stac */
	REFUSED(0x66, 0x0f, 0x01, 0xca); /* prefixed clac */
	REFUSED(0xf3, 0x0f, 0x01, 0xca); /* ERETU (FRED) */
	REFUSED(0xf2, 0x0f, 0x01, 0xca); /* ERETS (FRED) */
	REFUSED(0xf0, 0x0f, 0x01, 0xca); /* lock: #UD */
	REFUSED(0x2e, 0xcc);             /* prefixed int3 */
	REFUSED(0x0f, 0xb8, 0xc1);       /* popcnt without F3 (jmpe) */
	REFUSED(0xf2, 0x0f, 0xb8, 0xc1); /* F2 is not F3 */
	REFUSED(0xf3, 0xf3, 0x0f, 0xb8, 0xc1);
	REFUSED(0xf3, 0x0f, 0xb8, 0x01); /* popcnt eax, [rcx]: memory form */
	REFUSED(0xf3, 0x0f, 0xb8, 0x44, 0x24, 0x08);
	REFUSED(0xf3, 0x48, 0x66, 0x0f, 0xb8, 0xc1); /* REX not last */
	REFUSED(0xf3, 0x0f, 0xbd, 0xc1); /* lzcnt */
	/* Truncated. */
	REFUSED(0x0f, 0x01);
	REFUSED(0x0f);
	REFUSED(0xf3, 0x0f, 0xb8);
	REFUSED(0xf3, 0x48, 0x0f, 0xb8);
	REFUSED(0xf3);
	refused((const uint8_t[]){ 0xcc }, 0);
	struct mb_fb_state st = kernel64();
	assert_int_equal(mb_fallback_exec(&st, NULL, 1), MB_FB_NONE);
	assert_int_equal(mb_fallback_exec(NULL, (const uint8_t[]){ 0xcc }, 1),
			 MB_FB_NONE);
}

/* ---- xgetbv -------------------------------------------------------------- */

static void test_xgetbv(void **state)
{
	struct mb_fb_state st = kernel64();
	uint64_t rip = st.rip;
	st.cr4 = 0x40000 | 0x20; /* OSXSAVE, PAE */
	st.xcr0 = 0x207;         /* x87 SSE AVX PKRU: what the guest set */
	st.gpr[RCX] = 0xffffffff00000000ull; /* ECX = 0: only ECX counts */
	assert_int_equal(EXEC(st, 0x0f, 0x01, 0xd0), MB_FB_XGETBV);
	assert_int_equal(st.gpr[RAX], 0x207);
	assert_int_equal(st.gpr[RDX], 0);
	assert_int_equal(st.rip, rip + 3);
	assert_false(st.inject);
	st.xcr0 = 0x300000007ull;
	assert_int_equal(EXEC(st, 0x0f, 0x01, 0xd0), MB_FB_XGETBV);
	assert_int_equal(st.gpr[RAX], 7);
	assert_int_equal(st.gpr[RDX], 3);

	/* ECX = 1 (XINUSE, not promised by the CPUID policy) and others: #GP(0),
	 * a fault (RIP and the registers stay). */
	st.gpr[RCX] = 1;
	st.gpr[RAX] = st.gpr[RDX] = 0x55;
	rip = st.rip;
	assert_int_equal(EXEC(st, 0x0f, 0x01, 0xd0), MB_FB_XGETBV);
	assert_true(st.inject);
	assert_int_equal(st.inject_vec, 13);
	assert_true(st.inject_has_err);
	assert_int_equal(st.inject_err, 0);
	assert_int_equal(st.rip, rip);
	assert_int_equal(st.gpr[RAX], 0x55);

	/* CR4.OSXSAVE clear: #UD, no error code. */
	st.cr4 = 0x20, st.gpr[RCX] = 0;
	assert_int_equal(EXEC(st, 0x0f, 0x01, 0xd0), MB_FB_XGETBV);
	assert_int_equal(st.inject_vec, 6);
	assert_false(st.inject_has_err);
	assert_int_equal(st.rip, rip);
}

/* ---- clflush, clflushopt, clwb ------------------------------------------ */

static void test_clflush(void **state)
{
	struct mb_fb_state st = kernel64();
	uint64_t rip = st.rip;
	st.gpr[RAX] = 0xffff888000001000ull;
	/* clflush (%rax) */
	assert_int_equal(EXEC(st, 0x0f, 0xae, 0x38), MB_FB_CLFLUSH);
	assert_int_equal(st.rip, rip + 3);
	assert_false(st.inject);
	/* clflushopt 0x40(%rax) */
	assert_int_equal(EXEC(st, 0x66, 0x0f, 0xae, 0x78, 0x40), MB_FB_CLFLUSHOPT);
	assert_int_equal(st.rip, rip + 8);
	/* clwb (%r12,%rcx,8): REX.B, SIB */
	st.gpr[R12] = 0xffff888000000000ull, st.gpr[RCX] = 0x10;
	assert_int_equal(EXEC(st, 0x66, 0x41, 0x0f, 0xae, 0x34, 0xcc), MB_FB_CLWB);
	assert_int_equal(st.rip, rip + 14);
	/* clwb 0x1000(%rip) and clflush with a 32-bit disp and a gs prefix */
	assert_int_equal(EXEC(st, 0x66, 0x0f, 0xae, 0x35, 0x00, 0x10, 0, 0),
			 MB_FB_CLWB);
	assert_int_equal(st.rip, rip + 22);
	st.gs.base = 0xffff888000100000ull;
	assert_int_equal(EXEC(st, 0x65, 0x0f, 0xae, 0x3c, 0x25, 0x00, 0x20, 0, 0),
			 MB_FB_CLFLUSH); /* clflush %gs:0x2000 (SIB, no base) */
	assert_int_equal(st.rip, rip + 31);
	assert_false(st.inject);

	/* A non-canonical address: #GP(0), RIP stays; through RSP/RBP: #SS(0). */
	st.gpr[RAX] = 0x0000800000000000ull;
	rip = st.rip;
	assert_int_equal(EXEC(st, 0x0f, 0xae, 0x38), MB_FB_CLFLUSH);
	assert_true(st.inject);
	assert_int_equal(st.inject_vec, 13);
	assert_true(st.inject_has_err);
	assert_int_equal(st.inject_err, 0);
	assert_int_equal(st.rip, rip);
	st.gpr[RBP] = 0x0000800000000000ull;
	assert_int_equal(EXEC(st, 0x66, 0x0f, 0xae, 0x7d, 0x00), MB_FB_CLFLUSHOPT);
	assert_int_equal(st.inject_vec, 12);
	/* 57-bit paging makes it canonical. */
	st.cr4 |= 0x1000;
	assert_int_equal(EXEC(st, 0x0f, 0xae, 0x38), MB_FB_CLFLUSH);
	assert_false(st.inject);
	assert_int_equal(st.rip, rip + 3);

	/* 32-bit protected mode: segment base and limit. */
	st = prot32();
	st.ds = (struct mb_seg){ .base = 0x1000, .limit = 0xfff, .present = 1,
				 .type = 3, .s = 1, .db = 1 };
	st.gpr[RBX] = 0xff0;
	assert_int_equal(EXEC(st, 0x0f, 0xae, 0x3b), MB_FB_CLFLUSH);
	assert_false(st.inject);
	assert_int_equal(st.rip, 0x100003);
	st.gpr[RBX] = 0x1000; /* past the limit */
	assert_int_equal(EXEC(st, 0x0f, 0xae, 0x3b), MB_FB_CLFLUSH);
	assert_int_equal(st.inject_vec, 13);
	assert_int_equal(st.rip, 0x100003);
	/* 16-bit addressing in real mode: clflush [bx+si+4] */
	st = real16();
	st.ds = (struct mb_seg){ .limit = 0xffff };
	st.gpr[RBX] = 0x10, st.gpr[RSI] = 0x20;
	assert_int_equal(EXEC(st, 0x0f, 0xae, 0x78, 0x04), MB_FB_CLFLUSH);
	assert_int_equal(st.rip, 0x7c04);
	assert_false(st.inject);

	/* Register forms are other instructions (mfence, tpause...); wrong
	 * prefixes or /reg are too; xsaveopt is 0F AE /6 without 66. */
	REFUSED(0x0f, 0xae, 0xf8);             /* sfence */
	REFUSED(0x66, 0x0f, 0xae, 0xf0);       /* tpause eax */
	REFUSED(0x0f, 0xae, 0x30);             /* xsaveopt (%rax) */
	REFUSED(0xf3, 0x0f, 0xae, 0x38);       /* F3 0F AE /7: not clflush */
	REFUSED(0xf0, 0x0f, 0xae, 0x38);       /* lock: #UD */
	REFUSED(0x0f, 0xae, 0x3c);             /* truncated SIB */
	REFUSED(0x0f, 0xae, 0xb8, 0x00, 0x20); /* truncated disp32 */
}

/* ---- movbe --------------------------------------------------------------- */

static void test_movbe_ud(void **state)
{
	struct mb_fb_state st = kernel64(), before = st;
	/* movbe has no register form: 0F 38 F0 C1 raises #UD, RIP stays. */
	assert_int_equal(EXEC(st, 0x0f, 0x38, 0xf0, 0xc1), MB_FB_UD);
	assert_true(st.inject);
	assert_int_equal(st.inject_vec, 6);
	assert_false(st.inject_has_err);
	assert_int_equal(st.rip, before.rip);
	assert_memory_equal(st.gpr, before.gpr, sizeof st.gpr);
	assert_int_equal(EXEC(st, 0x66, 0x48, 0x0f, 0x38, 0xf1, 0xd8), MB_FB_UD);
	assert_int_equal(st.rip, before.rip);
	/* The memory forms are KVM's; F2 0F 38 F0 is crc32. */
	REFUSED(0x0f, 0x38, 0xf0, 0x01);
	REFUSED(0xf2, 0x0f, 0x38, 0xf0, 0xc1);
	REFUSED(0x0f, 0x38, 0xf0);
}

/* ---- int n --------------------------------------------------------------- */

/* A few writable regions of linear memory. */
struct lin_mem {
	struct { uint64_t base; uint8_t *p; size_t size; } r[10];
	unsigned n;
	int writes;
	uint64_t ro_lo, ro_hi; /* writes into [ro_lo, ro_hi) fail */
};

static void *lin_at(struct lin_mem *lm, uint64_t la, unsigned len)
{
	for (unsigned i = 0; i < lm->n; i++)
		if (la >= lm->r[i].base && la - lm->r[i].base + len <= lm->r[i].size)
			return lm->r[i].p + (la - lm->r[i].base);
	return NULL;
}
static int lin_read(void *ctx, uint64_t la, void *buf, unsigned len)
{
	void *p = lin_at(ctx, la, len);
	if (!p)
		return -1;
	memcpy(buf, p, len);
	return 0;
}
static int lin_write(void *ctx, uint64_t la, const void *buf, unsigned len)
{
	struct lin_mem *lm = ctx;
	void *p = lin_at(lm, la, len);
	if (!p || (la < lm->ro_hi && la + len > lm->ro_lo))
		return -1;
	memcpy(p, buf, len);
	lm->writes++;
	return 0;
}
static void lin_add(struct lin_mem *lm, uint64_t base, void *p, size_t size)
{
	lm->r[lm->n].base = base, lm->r[lm->n].p = p, lm->r[lm->n].size = size;
	lm->n++;
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void test_int_real(void **state)
{
	static uint8_t low[0x10000]; /* IVT and a stack at 0x9000:0xfff0 */
	static uint8_t stk[0x10000];
	struct lin_mem lm = { 0 };
	memset(low, 0, sizeof low);
	lin_add(&lm, 0, low, sizeof low);
	lin_add(&lm, 0x90000, stk, sizeof stk);
	/* int 0x10 -> f000:1234 */
	low[0x40] = 0x34, low[0x41] = 0x12, low[0x42] = 0x00, low[0x43] = 0xf0;

	struct mb_fb_state st = real16();
	st.cs.selector = 0x07c0, st.cs.base = 0x7c00, st.rip = 0x10;
	st.ss = (struct mb_seg){ .selector = 0x9000, .base = 0x90000,
				 .limit = 0xffff };
	st.gpr[RSP] = 0xabcd0000fff0ull; /* only SP is the stack pointer */
	st.rflags = 0x2 | IF | 0x100 | AC | CF;
	st.idt_base = 0, st.idt_limit = 0x3ff;
	st.read = lin_read, st.write = lin_write, st.ctx = &lm;
	assert_int_equal(EXEC(st, 0xcd, 0x10), MB_FB_INT);
	assert_false(st.inject);
	assert_true(st.segs_changed);
	assert_int_equal(st.cs.selector, 0xf000);
	assert_int_equal(st.cs.base, 0xf0000);
	assert_int_equal(st.rip, 0x1234);
	assert_int_equal(st.gpr[RSP], 0xabcd0000ffeaull);
	assert_int_equal(st.rflags, 0x2 | CF); /* IF TF AC cleared */
	/* The frame: IP (after the int), CS, FLAGS from low to high. */
	const uint8_t *f = stk + 0xffea;
	assert_int_equal(f[0] | f[1] << 8, 0x12);
	assert_int_equal(f[2] | f[3] << 8, 0x07c0);
	assert_int_equal(f[4] | f[5] << 8, 0x2 | IF | 0x100 | CF); /* 16 bits */

	/* SP wraps inside the 64 KiB stack segment. */
	st = real16();
	st.ss = (struct mb_seg){ .selector = 0x9000, .base = 0x90000,
				 .limit = 0xffff };
	st.gpr[RSP] = 2, st.idt_base = 0, st.idt_limit = 0x3ff;
	st.read = lin_read, st.write = lin_write, st.ctx = &lm;
	assert_int_equal(EXEC(st, 0xcd, 0x10), MB_FB_INT);
	assert_int_equal(st.gpr[RSP], 0xfffc);
	assert_int_equal(stk[0xfffc] | stk[0xfffd] << 8, 0x7c02); /* IP */
	assert_int_equal(stk[0] | stk[1] << 8, 0x2);              /* FLAGS */

	/* Past the IVT limit: #GP, nothing pushed. */
	st = real16();
	st.idt_base = 0, st.idt_limit = 0x3f, st.read = lin_read, st.write = lin_write;
	st.ctx = &lm;
	lm.writes = 0;
	assert_int_equal(EXEC(st, 0xcd, 0x10), MB_FB_INT);
	assert_true(st.inject);
	assert_int_equal(st.inject_vec, 13);
	assert_int_equal(st.rip, 0x7c00);
	assert_int_equal(lm.writes, 0);
}

#define GDT64 0xfffffe0000001000ull
#define TSS64 0xfffffe0000003000ull
#define KSTK 0xffffc90000010000ull   /* kernel stack (top) */
#define ISTK 0xffffc90000020000ull   /* IST1 stack (top) */

/* The 64-bit world of these tests: IDT, GDT (0x10 kernel code, 0x18
 * kernel data, 0x33 user code, 0x40 a 32-bit code segment), TSS with RSP0
 * and IST1, two stacks. */
struct world64 {
	struct lin_mem lm;
	uint8_t idt[256 * 16], gdt[0x50], tss[0x68];
	uint8_t kstk[4096], istk[4096];
};

static void gate64(struct world64 *w, unsigned vec, uint64_t handler,
		   uint16_t sel, unsigned type, unsigned dpl, unsigned ist)
{
	uint8_t *g = w->idt + vec * 16;
	memset(g, 0, 16);
	g[0] = (uint8_t)handler, g[1] = (uint8_t)(handler >> 8);
	g[2] = (uint8_t)sel, g[3] = (uint8_t)(sel >> 8);
	g[4] = (uint8_t)ist;
	g[5] = (uint8_t)(0x80 | dpl << 5 | type);
	g[6] = (uint8_t)(handler >> 16), g[7] = (uint8_t)(handler >> 24);
	put64(g + 8, handler >> 32);
}

static struct mb_fb_state world(struct world64 *w)
{
	memset(w, 0, sizeof *w);
	lin_add(&w->lm, IDT, w->idt, sizeof w->idt);
	lin_add(&w->lm, GDT64, w->gdt, sizeof w->gdt);
	lin_add(&w->lm, TSS64, w->tss, sizeof w->tss);
	lin_add(&w->lm, KSTK - 4096, w->kstk, sizeof w->kstk);
	lin_add(&w->lm, ISTK - 4096, w->istk, sizeof w->istk);
	put64(w->gdt + 0x10, 0x00af9a000000ffffull);
	put64(w->gdt + 0x18, 0x00cf92000000ffffull);
	put64(w->gdt + 0x30, 0x00affa000000ffffull);
	put64(w->gdt + 0x40, 0x00cf9a000000ffffull); /* 32-bit: not a target */
	put64(w->tss + 4, KSTK);      /* RSP0 */
	put64(w->tss + 0x24, ISTK);   /* IST1 */
	struct mb_fb_state st = kernel64();
	st.idt_limit = 256 * 16 - 1;
	st.gdt_base = GDT64, st.gdt_limit = sizeof w->gdt - 1;
	st.tr = (struct mb_seg){ .selector = 0x20, .base = TSS64, .limit = 0x67,
				 .type = 11, .present = 1 };
	st.rflags = 0x2 | IF | CF;
	st.gpr[RSP] = KSTK - 0x108; /* not 16-aligned */
	st.read = lin_read, st.write = lin_write, st.ctx = &w->lm;
	return st;
}

static void test_int_long_kernel(void **state)
{
	static struct world64 w;
	struct mb_fb_state st = world(&w);
	uint64_t rip = st.rip, h = 0xffffffff81001000ull;
	gate64(&w, 0x80, h, 0x10, 0xe, 0, 0);
	/* CPL 0, same privilege: push on the current stack, 16-aligned. */
	assert_int_equal(EXEC(st, 0xcd, 0x80), MB_FB_INT);
	assert_false(st.inject);
	assert_true(st.segs_changed);
	assert_int_equal(st.rip, h);
	assert_int_equal(st.cs.selector, 0x10);
	assert_int_equal(st.cs.l, 1);
	assert_int_equal(st.cs.dpl, 0);
	assert_int_equal(st.ss.selector, 0x18); /* unchanged */
	uint64_t top = (KSTK - 0x108) & ~0xfull;
	assert_int_equal(st.gpr[RSP], top - 40);
	const uint8_t *f = w.kstk + (top - 40 - (KSTK - 4096));
	assert_int_equal(get64(f), rip + 2);
	assert_int_equal(get64(f + 8), 0x10);
	assert_int_equal(get64(f + 16), 0x2 | IF | CF);
	assert_int_equal(get64(f + 24), KSTK - 0x108);
	assert_int_equal(get64(f + 32), 0x18);
	assert_int_equal(st.rflags, 0x2 | CF); /* interrupt gate: IF cleared */

	/* A trap gate keeps IF; TF and RF are cleared. */
	st = world(&w);
	gate64(&w, 0x81, h + 0x10, 0x10, 0xf, 0, 0);
	st.rflags |= 0x100 | RF;
	assert_int_equal(EXEC(st, 0xcd, 0x81), MB_FB_INT);
	assert_int_equal(st.rip, h + 0x10);
	assert_int_equal(st.rflags, 0x2 | IF | CF);

	/* IST1 switches the stack even without a privilege change. */
	st = world(&w);
	gate64(&w, 0x82, h + 0x20, 0x10, 0xe, 0, 1);
	assert_int_equal(EXEC(st, 0xcd, 0x82), MB_FB_INT);
	assert_int_equal(st.gpr[RSP], ISTK - 40);
	f = w.istk + 4096 - 40;
	assert_int_equal(get64(f), rip + 2);
	assert_int_equal(get64(f + 24), KSTK - 0x108);
	assert_int_equal(st.ss.selector, 0x18);
}

static void test_int_long_user(void **state)
{
	static struct world64 w;
	struct mb_fb_state st = world(&w);
	uint64_t h = 0xffffffff81002000ull;
	gate64(&w, 0x80, h, 0x10, 0xe, 3, 0);
	/* CPL 3 -> 0: RSP from TSS.RSP0, SS = null selector (RPL 0). */
	st.cs = (struct mb_seg){ .selector = 0x33, .type = 11, .present = 1,
				 .s = 1, .l = 1, .g = 1, .dpl = 3,
				 .limit = 0xffffffff };
	st.ss = (struct mb_seg){ .selector = 0x2b, .type = 3, .present = 1,
				 .s = 1, .db = 1, .g = 1, .dpl = 3,
				 .limit = 0xffffffff };
	st.rip = 0x401000, st.gpr[RSP] = 0x7ffd0008;
	st.rflags = 0x2 | IF | IOPL;
	assert_int_equal(EXEC(st, 0xcd, 0x80), MB_FB_INT);
	assert_false(st.inject);
	assert_int_equal(st.rip, h);
	assert_int_equal(st.cs.selector, 0x10);
	assert_int_equal(st.ss.selector, 0);
	assert_int_equal(st.ss.dpl, 0);
	assert_int_equal(st.gpr[RSP], KSTK - 40);
	const uint8_t *f = w.kstk + 4096 - 40;
	assert_int_equal(get64(f), 0x401002);
	assert_int_equal(get64(f + 8), 0x33);
	assert_int_equal(get64(f + 16), 0x2 | IF | IOPL);
	assert_int_equal(get64(f + 24), 0x7ffd0008);
	assert_int_equal(get64(f + 32), 0x2b);

	/* Gate DPL 0 from CPL 3: #GP(vec * 8 + 2), nothing pushed. */
	struct mb_fb_state user = st;
	user.cs.selector = 0x33, user.cs.dpl = 3;
	user.ss.selector = 0x2b, user.ss.dpl = 3;
	user.rip = 0x401000, user.gpr[RSP] = 0x7ffd0008;
	gate64(&w, 0x80, h, 0x10, 0xe, 0, 0);
	st = user;
	w.lm.writes = 0;
	assert_int_equal(EXEC(st, 0xcd, 0x80), MB_FB_INT);
	assert_true(st.inject);
	assert_int_equal(st.inject_vec, 13);
	assert_true(st.inject_has_err);
	assert_int_equal(st.inject_err, 0x80 * 8 + 2);
	assert_int_equal(st.rip, 0x401000);
	assert_int_equal(w.lm.writes, 0);
	assert_false(st.segs_changed);
}

/* Each check of the gate and its target, in the SDM's order. */
static void test_int_long_checks(void **state)
{
	static struct world64 w;
	uint64_t h = 0xffffffff81003000ull;
	struct { unsigned type, dpl; uint16_t sel; bool present;
		 uint8_t vec; uint32_t err; } c[] = {
		{ 0xc, 0, 0x10, true, 13, 0x90 * 8 + 2 },  /* call gate */
		{ 0x5, 0, 0x10, true, 13, 0x90 * 8 + 2 },  /* task gate */
		{ 0xe, 0, 0x10, false, 11, 0x90 * 8 + 2 }, /* not present */
		{ 0xe, 0, 0x00, true, 13, 0 },             /* null selector */
		{ 0xe, 0, 0x18, true, 13, 0x18 },          /* data segment */
		{ 0xe, 0, 0x40, true, 13, 0x40 },          /* not 64-bit code */
		{ 0xe, 0, 0x30, true, 13, 0x30 },          /* DPL 3 target from CPL 0 */
		{ 0xe, 0, 0x50, true, 13, 0x50 },          /* past the GDT limit */
	};
	for (unsigned i = 0; i < sizeof c / sizeof c[0]; i++) {
		struct mb_fb_state st = world(&w);
		gate64(&w, 0x90, h, c[i].sel, c[i].type, c[i].dpl, 0);
		if (!c[i].present)
			w.idt[0x90 * 16 + 5] &= 0x7f;
		uint64_t rip = st.rip;
		assert_int_equal(EXEC(st, 0xcd, 0x90), MB_FB_INT);
		assert_true(st.inject);
		assert_int_equal(st.inject_vec, c[i].vec);
		assert_int_equal(st.inject_err, c[i].err);
		assert_int_equal(st.rip, rip);
		assert_int_equal(w.lm.writes, 0);
	}
	/* Target segment not present: #NP(selector). */
	struct mb_fb_state st = world(&w);
	gate64(&w, 0x90, h, 0x10, 0xe, 0, 0);
	w.gdt[0x15] &= 0x7f;
	assert_int_equal(EXEC(st, 0xcd, 0x90), MB_FB_INT);
	assert_int_equal(st.inject_vec, 11);
	assert_int_equal(st.inject_err, 0x10);
	/* Past the IDT limit. */
	st = world(&w);
	st.idt_limit = 0x90 * 16 + 14;
	assert_int_equal(EXEC(st, 0xcd, 0x90), MB_FB_INT);
	assert_int_equal(st.inject_vec, 13);
	assert_int_equal(st.inject_err, 0x90 * 8 + 2);
	/* Unreadable IDT or unwritable stack: not completed, state untouched. */
	st = world(&w);
	gate64(&w, 0x90, h, 0x10, 0xe, 0, 0);
	st.gpr[RSP] = 0x1000;
	struct mb_fb_state before = st;
	assert_int_equal(EXEC(st, 0xcd, 0x90), MB_FB_NONE);
	assert_memory_equal(&st, &before, sizeof st);
	st.idt_base = 0x5000, before = st;
	assert_int_equal(EXEC(st, 0xcd, 0x90), MB_FB_NONE);
	assert_memory_equal(&st, &before, sizeof st);
	/* 32-bit protected mode, LDT selectors: refused (not done yet). */
	st = world(&w);
	gate64(&w, 0x90, h, 0x14, 0xe, 0, 0);
	before = st;
	assert_int_equal(EXEC(st, 0xcd, 0x90), MB_FB_NONE);
	assert_memory_equal(&st, &before, sizeof st);
	/* Compatibility mode (LMA, CS.L = 0): refused (not done yet). */
	st = world(&w);
	st.cs.l = 0, st.cs.db = 1, before = st;
	assert_int_equal(EXEC(st, 0xcd, 0x90), MB_FB_NONE);
	assert_memory_equal(&st, &before, sizeof st);
	REFUSED(0xcd);
}

/* The 32-bit world: IDT at 0x1000 (8-byte gates), GDT at 0x2000 (0x08
 * kernel code, 0x10 kernel data, 0x18 user code, 0x20 user data, 0x28 a
 * 16-bit code segment), TSS at 0x3000 (ESP0 0x9000, SS0 0x10), stacks in
 * the page below 0x9000 (kernel) and 0x7000 (user). */
struct world32 {
	struct lin_mem lm;
	uint8_t idt[256 * 8], gdt[0x60], tss[0x100], kstk[4096], ustk[4096];
	uint8_t low[4096];   /* linear 0: a virtual-8086 task's IVT */
	uint8_t tsk[4096];   /* 0x4000: other TSSes */
	uint8_t v86stk[4096]; /* 0x5000: a virtual-8086 stack (SS 0x500) */
};

static void gate32(struct world32 *w, unsigned vec, uint32_t handler,
		   uint16_t sel, unsigned type, unsigned dpl, bool present)
{
	uint8_t *g = w->idt + vec * 8;
	g[0] = (uint8_t)handler, g[1] = (uint8_t)(handler >> 8);
	g[2] = (uint8_t)sel, g[3] = (uint8_t)(sel >> 8), g[4] = 0;
	g[5] = (uint8_t)((present ? 0x80 : 0) | dpl << 5 | type);
	g[6] = (uint8_t)(handler >> 16), g[7] = (uint8_t)(handler >> 24);
}

static struct mb_fb_state world32(struct world32 *w)
{
	memset(w, 0, sizeof *w);
	lin_add(&w->lm, 0x1000, w->idt, sizeof w->idt);
	lin_add(&w->lm, 0x2000, w->gdt, sizeof w->gdt);
	lin_add(&w->lm, 0x3000, w->tss, sizeof w->tss);
	lin_add(&w->lm, 0x8000, w->kstk, sizeof w->kstk);
	lin_add(&w->lm, 0x6000, w->ustk, sizeof w->ustk);
	lin_add(&w->lm, 0, w->low, sizeof w->low);
	lin_add(&w->lm, 0x4000, w->tsk, sizeof w->tsk);
	lin_add(&w->lm, 0x5000, w->v86stk, sizeof w->v86stk);
	put64(w->gdt + 0x08, 0x00cf9a000000ffffull);
	put64(w->gdt + 0x10, 0x00cf92000000ffffull);
	put64(w->gdt + 0x18, 0x00cffa000000ffffull);
	put64(w->gdt + 0x20, 0x00cff2000000ffffull);
	put64(w->gdt + 0x28, 0x00009a000000ffffull);
	put64(w->gdt + 0x30, 0x00008b0030000067ull); /* TR: 32-bit TSS, busy */
	put64(w->gdt + 0x38, 0x0000890040000067ull); /* 32-bit TSS at 0x4000 */
	put64(w->gdt + 0x40, 0x000081004100002bull); /* 16-bit TSS at 0x4100 */
	put64(w->gdt + 0x48, 0x000082005000000full); /* an LDT at 0x5000 */
	put64(w->gdt + 0x50, 0x000083004200002bull); /* 16-bit TSS at 0x4200, busy */
	put64(w->gdt + 0x58, 0x00cf9c000000ffffull); /* conforming execute-only code, DPL 0 */
	w->tss[4] = 0x00, w->tss[5] = 0x90; /* ESP0 = 0x9000 */
	w->tss[8] = 0x10;                   /* SS0 */
	struct mb_fb_state st = prot32();
	st.ss = (struct mb_seg){ .selector = 0x10, .limit = 0xffffffff, .type = 3,
				 .present = 1, .s = 1, .db = 1, .g = 1 };
	st.idt_base = 0x1000, st.idt_limit = 256 * 8 - 1;
	st.gdt_base = 0x2000, st.gdt_limit = sizeof w->gdt - 1;
	st.tr = (struct mb_seg){ .selector = 0x30, .base = 0x3000, .limit = 0x67,
				 .type = 11, .present = 1 };
	st.rflags = 0x2 | IF | CF;
	st.gpr[RSP] = 0xabcd00008f00ull;
	st.read = lin_read, st.write = lin_write, st.ctx = &w->lm;
	return st;
}

static uint32_t get32(const uint8_t *p) { return (uint32_t)get64(p); }

static void test_int_prot(void **state)
{
	static struct world32 w;
	/* CPL 0 through an interrupt gate: EFLAGS, CS, EIP on the same stack */
	struct mb_fb_state st = world32(&w);
	gate32(&w, 0x80, 0xc0101000, 0x08, 0xe, 0, true);
	assert_int_equal(EXEC(st, 0xcd, 0x80), MB_FB_INT);
	assert_false(st.inject);
	assert_true(st.segs_changed);
	assert_int_equal(st.rip, 0xc0101000);
	assert_int_equal(st.cs.selector, 0x08);
	assert_int_equal(st.cs.db, 1);
	assert_int_equal(st.gpr[RSP], 0x8f00 - 12);
	const uint8_t *f = w.kstk + 0xf00 - 12;
	assert_int_equal(get32(f), 0x100002);
	assert_int_equal(get32(f + 4), 0x08);
	assert_int_equal(get32(f + 8), 0x2 | IF | CF);
	assert_int_equal(st.rflags, 0x2 | CF);

	/* CPL 3 through a DPL 3 trap gate: SS0:ESP0 from the TSS, SS and ESP
	 * pushed first, IF kept, TF cleared */
	st = world32(&w);
	gate32(&w, 0x80, 0xc0102000, 0x08, 0xf, 3, true);
	st.cs = (struct mb_seg){ .selector = 0x1b, .limit = 0xffffffff, .type = 11,
				 .present = 1, .dpl = 3, .s = 1, .db = 1, .g = 1 };
	st.ss = (struct mb_seg){ .selector = 0x23, .limit = 0xffffffff, .type = 3,
				 .present = 1, .dpl = 3, .s = 1, .db = 1, .g = 1 };
	st.gpr[RSP] = 0x6ff0, st.rip = 0x08048000, st.rflags = 0x2 | IF | 0x100;
	assert_int_equal(EXEC(st, 0xcd, 0x80), MB_FB_INT);
	assert_false(st.inject);
	assert_int_equal(st.rip, 0xc0102000);
	assert_int_equal(st.cs.selector, 0x08);
	assert_int_equal(st.ss.selector, 0x10);
	assert_int_equal(st.ss.dpl, 0);
	assert_int_equal(st.gpr[RSP], 0x9000 - 20);
	f = w.kstk + 4096 - 20;
	assert_int_equal(get32(f), 0x08048002);
	assert_int_equal(get32(f + 4), 0x1b);
	assert_int_equal(get32(f + 8), 0x2 | IF | 0x100);
	assert_int_equal(get32(f + 12), 0x6ff0);
	assert_int_equal(get32(f + 16), 0x23);
	assert_int_equal(st.rflags, 0x2 | IF);

	/* From CPL 3 through a DPL 0 gate: #GP(vec * 8 + 2), nothing pushed */
	struct mb_fb_state user = st;
	user.cs.selector = 0x1b, user.cs.dpl = 3;
	user.ss.selector = 0x23, user.ss.dpl = 3;
	user.gpr[RSP] = 0x6ff0, user.rip = 0x08048000;
	gate32(&w, 0x81, 0xc0103000, 0x08, 0xe, 0, true);
	st = user;
	w.lm.writes = 0;
	assert_int_equal(EXEC(st, 0xcd, 0x81), MB_FB_INT);
	assert_true(st.inject);
	assert_int_equal(st.inject_vec, 13);
	assert_int_equal(st.inject_err, 0x81 * 8 + 2);
	assert_int_equal(st.rip, 0x08048000);
	assert_int_equal(w.lm.writes, 0);

	/* Not present: #NP; past the IDT limit: #GP; a bad SS0: #TS */
	st = world32(&w);
	gate32(&w, 0x82, 0xc0104000, 0x08, 0xe, 0, false);
	assert_int_equal(EXEC(st, 0xcd, 0x82), MB_FB_INT);
	assert_int_equal(st.inject_vec, 11);
	assert_int_equal(st.inject_err, 0x82 * 8 + 2);
	st = world32(&w);
	st.idt_limit = 0x80 * 8 + 6;
	assert_int_equal(EXEC(st, 0xcd, 0x80), MB_FB_INT);
	assert_int_equal(st.inject_vec, 13);
	st = user;
	gate32(&w, 0x80, 0xc0102000, 0x08, 0xf, 3, true);
	w.tss[8] = 0x20; /* SS0 = a DPL 3 segment */
	assert_int_equal(EXEC(st, 0xcd, 0x80), MB_FB_INT);
	assert_int_equal(st.inject_vec, 10);
	assert_int_equal(st.inject_err, 0x20);
	w.tss[8] = 0x10;

	/* A 16-bit interrupt gate (type 6): a 16-bit offset (the gate's high
	 * word ignored), IP CS FLAGS pushed as 2 bytes each, IF cleared */
	st = world32(&w);
	gate32(&w, 0x85, 0xffff1234, 0x08, 0x6, 0, true);
	assert_int_equal(EXEC(st, 0xcd, 0x85), MB_FB_INT);
	assert_false(st.inject);
	assert_int_equal(st.rip, 0x1234);
	assert_int_equal(st.gpr[RSP], 0x8f00 - 6);
	f = w.kstk + 0xf00 - 6;
	assert_int_equal(f[0] | f[1] << 8, 0x0002); /* IP: 0x100002 cut to 16 bits */
	assert_int_equal(f[2] | f[3] << 8, 0x08);
	assert_int_equal(f[4] | f[5] << 8, 0x2 | IF | CF);
	assert_int_equal(st.rflags, 0x2 | CF);

	/* A 16-bit trap gate (type 7) from CPL 3: SS0:ESP0 from the TSS, then
	 * SS SP FLAGS CS IP as words (10 bytes); IF kept */
	st = user;
	gate32(&w, 0x86, 0x2345, 0x08, 0x7, 3, true);
	st.rflags = 0x2 | IF;
	assert_int_equal(EXEC(st, 0xcd, 0x86), MB_FB_INT);
	assert_false(st.inject);
	assert_int_equal(st.rip, 0x2345);
	assert_int_equal(st.ss.selector, 0x10);
	assert_int_equal(st.gpr[RSP], 0x9000 - 10);
	f = w.kstk + 4096 - 10;
	assert_int_equal(f[0] | f[1] << 8, 0x8002);
	assert_int_equal(f[2] | f[3] << 8, 0x1b);
	assert_int_equal(f[4] | f[5] << 8, 0x2 | IF);
	assert_int_equal(f[6] | f[7] << 8, 0x6ff0);
	assert_int_equal(f[8] | f[9] << 8, 0x23);
	assert_int_equal(st.rflags, 0x2 | IF);

	/* A 16-bit target code segment (0x28: D clear) through a 32-bit gate:
	 * entered, 4-byte pushes (the gate's size); an offset past its 64 KiB
	 * limit is #GP(0) */
	st = world32(&w);
	gate32(&w, 0x84, 0x1000, 0x28, 0xe, 0, true);
	assert_int_equal(EXEC(st, 0xcd, 0x84), MB_FB_INT);
	assert_false(st.inject);
	assert_int_equal(st.rip, 0x1000);
	assert_int_equal(st.cs.selector, 0x28);
	assert_int_equal(st.cs.db, 0);
	assert_int_equal(st.gpr[RSP], 0x8f00 - 12);
	st = world32(&w);
	gate32(&w, 0x84, 0x12345, 0x28, 0xe, 0, true);
	assert_int_equal(EXEC(st, 0xcd, 0x84), MB_FB_INT);
	assert_true(st.inject);
	assert_int_equal(st.inject_vec, 13);
	assert_int_equal(st.inject_err, 0);

	/* A 16-bit stack (SS.B clear): SP moves, ESP's high half stays */
	st = world32(&w);
	st.ss.db = 0;
	st.gpr[RSP] = 0x00018f00; /* SP 0x8f00 in a segment based at 0 */
	gate32(&w, 0x80, 0xc0101000, 0x08, 0xe, 0, true);
	assert_int_equal(EXEC(st, 0xcd, 0x80), MB_FB_INT);
	assert_false(st.inject);
	assert_int_equal(st.gpr[RSP], 0x00018f00 - 12);
	assert_int_equal(get32(w.kstk + 0xf00 - 12), 0x100002); /* at SS.base + SP */
	/* ... and wraps within 64 KiB: SP 0 minus 12 is 0xfff4 (SS based so
	 * that SS.base + 0xfff4 is the kernel stack's last 12 bytes) */
	st = world32(&w);
	st.ss.db = 0, st.ss.base = 0xffff9000, st.ss.limit = 0xffff;
	st.gpr[RSP] = 0x00030000;
	gate32(&w, 0x80, 0xc0101000, 0x08, 0xe, 0, true);
	assert_int_equal(EXEC(st, 0xcd, 0x80), MB_FB_INT);
	assert_false(st.inject);
	assert_int_equal(st.gpr[RSP], 0x0003fff4);
	assert_int_equal(get32(w.kstk + 4096 - 12), 0x100002);

}

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)v), put16(p + 2, (uint16_t)(v >> 16)); }

/* A fault queued with nothing written and RIP where it was. */
static void expect_fault(struct mb_fb_state *st, struct lin_mem *lm,
			 uint64_t rip, unsigned vec, uint32_t err)
{
	assert_true(st->inject);
	assert_int_equal(st->inject_vec, vec);
	assert_true(st->inject_has_err);
	assert_int_equal(st->inject_err, err);
	assert_int_equal(st->rip, rip);
	assert_false(st->segs_changed);
	assert_false(st->task_switched);
	assert_int_equal(lm->writes, 0);
}

#define VM 0x20000ull
#define NT 0x4000ull
#define TF 0x100ull
#define VIF 0x80000ull
#define TS 0x8ull

static struct mb_fb_state user32(struct world32 *w)
{
	struct mb_fb_state st = world32(w);
	st.cs = (struct mb_seg){ .selector = 0x1b, .limit = 0xffffffff, .type = 11,
				 .present = 1, .dpl = 3, .s = 1, .db = 1, .g = 1 };
	st.ss = (struct mb_seg){ .selector = 0x23, .limit = 0xffffffff, .type = 3,
				 .present = 1, .dpl = 3, .s = 1, .db = 1, .g = 1 };
	st.gpr[RSP] = 0x6ff0, st.rip = 0x08048000, st.rflags = 0x2 | IF;
	return st;
}

/* The stack switch through a 16-bit TSS (SP0 at 2, SS0 at 4) and TR's
 * limit in each TSS format. */
static void test_int_tss16(void **state)
{
	static struct world32 w;
	struct mb_fb_state st = user32(&w);
	gate32(&w, 0x80, 0xc0102000, 0x08, 0xf, 3, true);
	st.tr = (struct mb_seg){ .selector = 0x50, .base = 0x4200, .limit = 0x2b,
				 .type = 3, .present = 1 };
	put16(w.tsk + 0x202, 0x8ff0); /* SP0 */
	put16(w.tsk + 0x204, 0x10);   /* SS0 */
	put16(w.tss + 4, 0x1234);     /* the 32-bit layout's ESP0: not read */
	assert_int_equal(EXEC(st, 0xcd, 0x80), MB_FB_INT);
	assert_false(st.inject);
	assert_int_equal(st.ss.selector, 0x10);
	assert_int_equal(st.gpr[RSP], 0x8ff0 - 20);
	const uint8_t *f = w.kstk + 0xff0 - 20;
	assert_int_equal(get32(f), 0x08048002);
	assert_int_equal(get32(f + 12), 0x6ff0);
	assert_int_equal(get32(f + 16), 0x23);

	/* SS0 at 4..5 needs a limit of at least 5: #TS(TR) */
	st = user32(&w);
	gate32(&w, 0x80, 0xc0102000, 0x08, 0xf, 3, true);
	st.tr = (struct mb_seg){ .selector = 0x50, .base = 0x4200, .limit = 4,
				 .type = 3, .present = 1 };
	expect_fault((EXEC(st, 0xcd, 0x80), &st), &w.lm, 0x08048000, 10, 0x50);
	/* SS0 past the GDT limit: #TS(SS0), not #GP */
	st = user32(&w);
	gate32(&w, 0x80, 0xc0102000, 0x08, 0xf, 3, true);
	put16(w.tss + 8, 0x60);
	expect_fault((EXEC(st, 0xcd, 0x80), &st), &w.lm, 0x08048000, 10, 0x60);
	/* the 32-bit layout: SS0 at 8..9 */
	st = user32(&w);
	gate32(&w, 0x80, 0xc0102000, 0x08, 0xf, 3, true);
	st.tr.limit = 8;
	expect_fault((EXEC(st, 0xcd, 0x80), &st), &w.lm, 0x08048000, 10, 0x30);
	st = user32(&w);
	gate32(&w, 0x80, 0xc0102000, 0x08, 0xf, 3, true);
	st.tr.limit = 9;
	assert_int_equal(EXEC(st, 0xcd, 0x80), MB_FB_INT);
	assert_false(st.inject);

	/* 64-bit: IST1 at 0x24..0x2b past a limit of 0x2a: #TS(TR) */
	static struct world64 w64;
	st = world(&w64);
	gate64(&w64, 0x82, 0xffffffff81001000ull, 0x10, 0xe, 0, 1);
	st.tr.limit = 0x2a;
	uint64_t rip = st.rip;
	expect_fault((EXEC(st, 0xcd, 0x82), &st), &w64.lm, rip, 10, 0x20);
}

static struct mb_seg v86seg(uint16_t sel)
{
	return (struct mb_seg){ .selector = sel, .base = (uint64_t)sel << 4,
				.limit = 0xffff, .type = 3, .present = 1,
				.dpl = 3, .s = 1 };
}

/* A virtual-8086 task at 1234:0100, stack 0500:0ff0, IOPL 3. */
static struct mb_fb_state vm86(struct world32 *w)
{
	struct mb_fb_state st = world32(w);
	st.cs = v86seg(0x1234), st.ss = v86seg(0x0500);
	st.ds = v86seg(0x0600), st.es = v86seg(0x0700);
	st.fs = v86seg(0x0800), st.gs = v86seg(0x0900);
	st.rip = 0x100, st.gpr[RSP] = 0xabcd0ff0;
	st.rflags = 0x2 | VM | IOPL | IF | TF | NT | CF;
	return st;
}

/* VME: the redirection bitmap right below an I/O map at 0xa8. */
static void vme(struct world32 *w, struct mb_fb_state *st, unsigned vec,
		bool set)
{
	st->cr4 |= 1;
	st->tr.limit = 0xa7;
	put16(w->tss + 0x66, 0xa8);
	memset(w->tss + 0x88, 0, 32);
	if (set)
		w->tss[0x88 + vec / 8] |= (uint8_t)(1 << (vec % 8));
}

static void test_int_vm86(void **state)
{
	static struct world32 w;
	/* IOPL 3, no VME: through the IDT to ring 0; the whole VM86 frame */
	struct mb_fb_state st = vm86(&w);
	gate32(&w, 0x80, 0xc0105000, 0x08, 0xe, 3, true);
	assert_int_equal(EXEC(st, 0xcd, 0x80), MB_FB_INT_VM86);
	assert_false(st.inject);
	assert_true(st.segs_changed);
	assert_true(st.dsegs_changed);
	assert_false(st.task_switched);
	assert_int_equal(st.rip, 0xc0105000);
	assert_int_equal(st.cs.selector, 0x08);
	assert_int_equal(st.cs.dpl, 0);
	assert_int_equal(st.cs.db, 1);
	assert_int_equal(st.ss.selector, 0x10);
	assert_int_equal(st.gpr[RSP], 0x9000 - 36);
	const uint8_t *f = w.kstk + 4096 - 36;
	static const uint32_t want[9] = { 0x102, 0x1234,
		0x2 | VM | IOPL | IF | TF | NT | CF, 0xabcd0ff0, 0x500,
		0x700, 0x600, 0x800, 0x900 }; /* EIP CS EFLAGS ESP SS ES DS FS GS */
	for (unsigned i = 0; i < 9; i++)
		assert_int_equal(get32(f + 4 * i), want[i]);
	assert_int_equal(st.rflags, 0x2 | IOPL | CF); /* VM TF NT IF cleared */
	const struct mb_seg *dseg[4] = { &st.ds, &st.es, &st.fs, &st.gs };
	for (unsigned i = 0; i < 4; i++) {
		assert_int_equal(dseg[i]->selector, 0);
		assert_int_equal(dseg[i]->present, 0);
	}

	/* A 16-bit trap gate: the same nine values as words, IF kept */
	st = vm86(&w);
	gate32(&w, 0x81, 0x3456, 0x08, 0x7, 3, true);
	assert_int_equal(EXEC(st, 0xcd, 0x81), MB_FB_INT_VM86);
	assert_false(st.inject);
	assert_int_equal(st.rip, 0x3456);
	assert_int_equal(st.gpr[RSP], 0x9000 - 18);
	f = w.kstk + 4096 - 18;
	for (unsigned i = 0; i < 9; i++)
		assert_int_equal(get16(f + 2 * i), (uint16_t)want[i]);
	assert_int_equal(st.rflags, 0x2 | IOPL | IF | CF);

	/* IOPL < 3 without VME: #GP(0) before the IDT is looked at */
	st = vm86(&w);
	st.rflags &= ~IOPL;
	w.lm.writes = 0;
	assert_int_equal(EXEC(st, 0xcd, 0x80), MB_FB_INT_VM86);
	expect_fault(&st, &w.lm, 0x100, 13, 0);
	/* a gate DPL below 3: #GP(vec * 8 + 2) */
	st = vm86(&w);
	gate32(&w, 0x82, 0xc0105000, 0x08, 0xe, 0, true);
	expect_fault((EXEC(st, 0xcd, 0x82), &st), &w.lm, 0x100, 13, 0x82 * 8 + 2);
	/* a DPL 3 target, a conforming DPL 0 target: #GP(selector) */
	st = vm86(&w);
	gate32(&w, 0x83, 0xc0105000, 0x18, 0xe, 3, true);
	expect_fault((EXEC(st, 0xcd, 0x83), &st), &w.lm, 0x100, 13, 0x18);
	st = vm86(&w);
	gate32(&w, 0x83, 0xc0105000, 0x58, 0xe, 3, true);
	expect_fault((EXEC(st, 0xcd, 0x83), &st), &w.lm, 0x100, 13, 0x58);
	/* a ring-0 stack that cannot be written: refused, untouched */
	st = vm86(&w);
	gate32(&w, 0x80, 0xc0105000, 0x08, 0xe, 3, true);
	put32(w.tss + 4, 0x20000);
	struct mb_fb_state before = st;
	assert_int_equal(EXEC(st, 0xcd, 0x80), MB_FB_NONE);
	assert_memory_equal(&st, &before, sizeof st);
	put32(w.tss + 4, 0x9000);

	/* VME, bit clear, IOPL 3: redirected through the IVT at linear 0;
	 * FLAGS CS IP on the VM86 stack; IF and TF cleared */
	st = vm86(&w);
	vme(&w, &st, 0x21, false);
	put16(w.low + 0x84, 0x0abc), put16(w.low + 0x86, 0x5678);
	w.lm.writes = 0;
	assert_int_equal(EXEC(st, 0xcd, 0x21), MB_FB_INT_VM86);
	assert_false(st.inject);
	assert_false(st.dsegs_changed);
	assert_int_equal(st.rip, 0x0abc);
	assert_int_equal(st.cs.selector, 0x5678);
	assert_int_equal(st.cs.base, 0x56780);
	assert_int_equal(st.gpr[RSP], 0xabcd0fea);
	f = w.v86stk + 0xfea;
	assert_int_equal(get16(f), 0x102);
	assert_int_equal(get16(f + 2), 0x1234);
	assert_int_equal(get16(f + 4), (uint16_t)(0x2 | IOPL | IF | TF | NT | CF));
	assert_int_equal(st.rflags, 0x2 | VM | IOPL | NT | CF);
	/* ... IOPL 0: the image carries VIF as IF and IOPL 3; VIF is what
	 * gets cleared, IF stays */
	st = vm86(&w);
	vme(&w, &st, 0x21, false);
	st.rflags = 0x2 | VM | VIF | CF;
	assert_int_equal(EXEC(st, 0xcd, 0x21), MB_FB_INT_VM86);
	assert_false(st.inject);
	assert_int_equal(get16(w.v86stk + 0xfea + 4), 0x2 | IOPL | IF | CF);
	assert_int_equal(st.rflags, 0x2 | VM | CF);
	st = vm86(&w);
	vme(&w, &st, 0x21, false);
	st.rflags = 0x2 | VM | IF;
	assert_int_equal(EXEC(st, 0xcd, 0x21), MB_FB_INT_VM86);
	assert_int_equal(get16(w.v86stk + 0xfea + 4), 0x2 | IOPL);
	assert_int_equal(st.rflags, 0x2 | VM | IF);
	/* bit set: IOPL 0 is #GP(0), IOPL 3 goes to the IDT */
	st = vm86(&w);
	vme(&w, &st, 0x80, true);
	st.rflags &= ~IOPL;
	w.lm.writes = 0;
	expect_fault((EXEC(st, 0xcd, 0x80), &st), &w.lm, 0x100, 13, 0);
	st = vm86(&w);
	vme(&w, &st, 0x80, true);
	gate32(&w, 0x80, 0xc0105000, 0x08, 0xe, 3, true);
	assert_int_equal(EXEC(st, 0xcd, 0x80), MB_FB_INT_VM86);
	assert_false(st.inject);
	assert_int_equal(st.rip, 0xc0105000);
	/* the bitmap byte outside the TSS (past the limit, below its base) */
	st = vm86(&w);
	vme(&w, &st, 0x21, false);
	put16(w.tss + 0x66, 0xd0);
	w.lm.writes = 0;
	expect_fault((EXEC(st, 0xcd, 0x21), &st), &w.lm, 0x100, 13, 0);
	st = vm86(&w);
	vme(&w, &st, 0x21, false);
	put16(w.tss + 0x66, 0x10);
	expect_fault((EXEC(st, 0xcd, 0x21), &st), &w.lm, 0x100, 13, 0);
	/* VME with a 16-bit TSS: refused */
	st = vm86(&w);
	vme(&w, &st, 0x21, false);
	st.tr.type = 3, before = st;
	assert_int_equal(EXEC(st, 0xcd, 0x21), MB_FB_NONE);
	assert_memory_equal(&st, &before, sizeof st);
	/* IA-32e with VM set cannot exist: refused */
	st = vm86(&w);
	st.efer = 0x500, before = st;
	assert_int_equal(EXEC(st, 0xcd, 0x80), MB_FB_NONE);
	assert_memory_equal(&st, &before, sizeof st);
}

/* The new 32-bit task in the TSS at 0x4000 (GDT 0x38): EIP 0x200000,
 * EFLAGS IF|CF, GPRs 0xa0000000 + i, ES CS SS DS FS GS = 10 08 10 10 0 23,
 * LDT 0x48, CR3 0x7000. */
static void new_task32(struct world32 *w)
{
	uint8_t *t = w->tsk;
	memset(t, 0, 0x68);
	put32(t + 0x1c, 0x7000);
	put32(t + 0x20, 0x200000);
	put32(t + 0x24, 0x2 | IF | CF);
	for (unsigned i = 0; i < 8; i++)
		put32(t + 0x28 + 4 * i, 0xa0000000u + i);
	static const uint16_t sel[6] = { 0x10, 0x08, 0x10, 0x10, 0, 0x23 };
	for (unsigned i = 0; i < 6; i++)
		put16(t + 0x48 + 4 * i, sel[i]);
	put16(t + 0x60, 0x48);
}

/* The new 16-bit task at 0x4100 (GDT 0x40): IP 0x1000, FLAGS IF, GPRs
 * 0xb0 + i, ES CS SS DS = 0 28 10 10, no LDT. */
static void new_task16(struct world32 *w)
{
	uint8_t *t = w->tsk + 0x100;
	memset(t, 0, 0x2c);
	put16(t + 0x0e, 0x1000);
	put16(t + 0x10, 0x2 | IF);
	for (unsigned i = 0; i < 8; i++)
		put16(t + 0x12 + 2 * i, (uint16_t)(0xb0 + i));
	put16(t + 0x22, 0), put16(t + 0x24, 0x28);
	put16(t + 0x26, 0x10), put16(t + 0x28, 0x10);
}

static struct mb_fb_state task_world(struct world32 *w)
{
	struct mb_fb_state st = world32(w);
	st.ds = st.es = st.ss;
	st.ds.selector = 0x10, st.es.selector = 0x10;
	st.gs = (struct mb_seg){ .selector = 0x23, .present = 1 };
	new_task32(w);
	new_task16(w);
	gate32(w, 0x90, 0, 0x38, 0x5, 0, true);
	gate32(w, 0x91, 0, 0x40, 0x5, 0, true);
	return st;
}

/* Refused with nothing written and the state as it was. */
static void expect_refused(struct world32 *w, struct mb_fb_state st,
			   uint8_t vec)
{
	struct mb_fb_state before = st;
	w->lm.writes = 0;
	assert_int_equal(EXEC(st, 0xcd, vec), MB_FB_NONE);
	assert_memory_equal(&st, &before, sizeof st);
	assert_int_equal(w->lm.writes, 0);
}

/* The switch completed, then exception v (error code err) raised in the
 * new task's context: RIP the new task's EIP (rip), the old task saved,
 * the new one busy and linked, TR, NT, CR0.TS and the GPRs the new task's.
 * Only int 0x90 (the 32-bit TSS at 0x4000) or 0x91 (the 16-bit one). */
static void expect_late(struct world32 *w, struct mb_fb_state *st, uint8_t vec,
			unsigned v, uint32_t err, uint64_t rip)
{
	uint16_t tsel = vec == 0x90 ? 0x38 : 0x40;
	uint8_t *t = vec == 0x90 ? w->tsk : w->tsk + 0x100;
	w->lm.writes = 0;
	assert_int_equal(EXEC(*st, 0xcd, vec), MB_FB_INT_TASK);
	assert_true(st->task_switched);
	assert_true(st->segs_changed);
	assert_true(st->dsegs_changed);
	assert_true(st->inject);
	assert_int_equal(st->inject_vec, v);
	assert_true(st->inject_has_err);
	assert_int_equal(st->inject_err, err);
	assert_int_equal(st->inject_dr6, 0);
	assert_int_equal(st->rip, rip);
	assert_true(st->rflags & NT);
	assert_true(st->cr0 & TS);
	assert_int_equal(st->tr.selector, tsel);
	assert_int_equal(get16(t), 0x30);                    /* back-link */
	assert_int_equal(w->gdt[tsel + 5] & 2, 2);           /* busy */
	assert_int_equal(get32(w->tss + 0x20), 0x100002);    /* old EIP */
	assert_int_equal(st->gpr[RAX], vec == 0x90 ? 0xa0000000u : 0xb0);
	assert_true(w->lm.writes >= 3);
}

/* A segment register after a late fault: its new selector, the hidden
 * part loaded (present) or unusable with the new CPL as DPL. */
static void expect_seg(const struct mb_seg *s, uint16_t sel, bool loaded,
		       unsigned cpl)
{
	assert_int_equal(s->selector, sel);
	assert_int_equal(s->present, loaded);
	if (!loaded) {
		assert_int_equal(s->dpl, cpl);
		assert_int_equal(s->base, 0);
		assert_int_equal(s->limit, 0);
	}
}

/* One new-task state the CPU faults on after the commit point: up to
 * five 16-bit TSS fields patched, one GDT byte, and what is raised. */
struct late_case {
	const char *what;
	struct { unsigned off; uint16_t v; } p[5];
	unsigned gb;  /* a GDT byte to set (0: none) */
	uint8_t gv;
	unsigned vec;
	uint32_t err;
};

static void run_late(const struct late_case *c, size_t n)
{
	static struct world32 w;
	for (size_t i = 0; i < n; i++) {
		print_message("  %s\n", c[i].what);
		struct mb_fb_state st = task_world(&w);
		for (unsigned j = 0; j < 5 && c[i].p[j].off; j++)
			put16(w.tsk + c[i].p[j].off, c[i].p[j].v);
		if (c[i].gb)
			w.gdt[c[i].gb] = c[i].gv;
		expect_late(&w, &st, 0x90, c[i].vec, c[i].err, 0x200000);
	}
}

/* TSS fields of the new 32-bit task (new_task32) */
#define T_ES 0x48
#define T_CS 0x4c
#define T_SS 0x50
#define T_DS 0x54
#define T_FS 0x58
#define T_GS 0x5c
#define T_LDT 0x60

/* Each check of table 7-1 after the commit point, alone: the exception
 * and error code the SDM gives it (vol. 3, 7.3, table 7-1; 6.15 for #TS,
 * #NP, #SS). */
static void test_int_task_late(void **state)
{
	(void)state;
	static const struct late_case c[] = {
		{ "LDT LDT-relative", { { T_LDT, 0x4c } }, 0, 0, 10, 0x4c },
		{ "LDT a code segment", { { T_LDT, 0x08 } }, 0, 0, 10, 0x08 },
		{ "LDT a 16-bit TSS", { { T_LDT, 0x40 } }, 0, 0, 10, 0x40 },
		{ "LDT a data segment (type 2, S set)", { { T_LDT, 0x10 } }, 0, 0, 10, 0x10 },
		{ "LDT past the GDT limit", { { T_LDT, 0x60 } }, 0, 0, 10, 0x60 },
		{ "LDT not present", { { 0 } }, 0x48 + 5, 0x02, 10, 0x48 },
		{ "CS null", { { T_CS, 0 } }, 0, 0, 10, 0 },
		{ "CS a data segment", { { T_CS, 0x10 } }, 0, 0, 10, 0x10 },
		{ "CS a TSS", { { T_CS, 0x30 } }, 0, 0, 10, 0x30 },
		{ "CS past the GDT limit", { { T_CS, 0x60 } }, 0, 0, 10, 0x60 },
		{ "CS DPL 0 with RPL 1", { { T_CS, 0x09 } }, 0, 0, 10, 0x08 },
		{ "CS conforming DPL 3 > RPL 0", { { T_CS, 0x58 } }, 0x58 + 5, 0xfe, 10, 0x58 },
		{ "CS not present", { { 0 } }, 0x08 + 5, 0x1a, 11, 0x08 },
		{ "SS null", { { T_SS, 0 } }, 0, 0, 10, 0 },
		{ "SS code", { { T_SS, 0x08 } }, 0, 0, 10, 0x08 },
		{ "SS read-only data", { { T_ES, 0 }, { T_DS, 0 } }, 0x10 + 5, 0x90, 10, 0x10 },
		{ "SS past the GDT limit", { { T_SS, 0x60 } }, 0, 0, 10, 0x60 },
		{ "SS not present", { { 0 } }, 0x10 + 5, 0x12, 12, 0x10 },
		{ "SS DPL 3 != CPL 0", { { T_SS, 0x23 } }, 0, 0, 10, 0x20 },
		{ "SS RPL 1 != DPL 0", { { T_SS, 0x11 } }, 0, 0, 10, 0x10 },
		{ "CS 0x1b: SS DPL 0 != CPL 3", { { T_CS, 0x1b } }, 0, 0, 10, 0x10 },
		{ "DS a TSS", { { T_DS, 0x30 } }, 0, 0, 10, 0x30 },
		{ "DS past the GDT limit", { { T_DS, 0x60 } }, 0, 0, 10, 0x60 },
		{ "DS RPL 2 > DPL 0", { { T_DS, 0x12 } }, 0, 0, 10, 0x10 },
		{ "ES not present", { { T_ES, 0x23 } }, 0x20 + 5, 0x72, 11, 0x20 },
		{ "FS execute-only conforming code", { { T_FS, 0x58 } }, 0, 0, 10, 0x58 },
		{ "GS DPL 0 < CPL 3", { { T_CS, 0x1b }, { T_SS, 0x23 }, { T_DS, 0x23 }, { T_ES, 0x23 }, { T_GS, 0x10 } }, 0, 0, 10, 0x10 },
	};
	run_late(c, sizeof c / sizeof c[0]);
}

/* Two failures at once: the first in table 7-1's order wins (steps 1 LDT
 * valid, 2 CS DPL/RPL, 3 SS valid, 4 SS present, 5 SS DPL = CPL, 6 LDT
 * present, 7 CS valid, 8 CS present, 9 SS DPL = RPL, then DS ES FS GS:
 * valid, readable, present, DPL). */
static void test_int_task_order(void **state)
{
	(void)state;
	static const struct late_case c[] = {
		{ "1 before 2: LDT code, CS RPL 1", { { T_LDT, 0x08 }, { T_CS, 0x09 } }, 0, 0, 10, 0x08 },
		{ "2 before 3: CS RPL 1, SS null", { { T_CS, 0x09 }, { T_SS, 0 } }, 0, 0, 10, 0x08 },
		{ "4 before 7: CS a TSS, SS not present", { { T_CS, 0x30 }, { T_ES, 0 }, { T_DS, 0 } }, 0x10 + 5, 0x12, 12, 0x10 },
		{ "5 before 6: SS DPL 3, LDT not present", { { T_SS, 0x23 } }, 0x48 + 5, 0x02, 10, 0x20 },
		{ "6 before 7: LDT not present, CS null", { { T_CS, 0 } }, 0x48 + 5, 0x02, 10, 0x48 },
		{ "8 before 9: CS not present, SS RPL 1", { { T_SS, 0x11 } }, 0x08 + 5, 0x1a, 11, 0x08 },
		{ "9 before data: SS RPL 1, DS a TSS", { { T_SS, 0x11 }, { T_DS, 0x30 } }, 0, 0, 10, 0x10 },
		{ "DS before ES", { { T_ES, 0x30 }, { T_DS, 0x60 } }, 0, 0, 10, 0x60 },
		{ "ES before FS", { { T_FS, 0x30 }, { T_ES, 0x58 } }, 0, 0, 10, 0x58 },
		{ "FS before GS", { { T_GS, 0x30 }, { T_FS, 0x60 } }, 0, 0, 10, 0x60 },
		{ "present before DPL: DS DPL 0 at CPL 3, not present",
		  { { T_CS, 0x1b }, { T_SS, 0x23 }, { T_DS, 0x10 } }, 0x10 + 5, 0x12, 11, 0x10 },
	};
	run_late(c, sizeof c / sizeof c[0]);

	/* What is loaded when SS fails at step 4: the LDT (step 1), nothing
	 * else; CS is only loaded at step 8. */
	static struct world32 w;
	struct mb_fb_state st = task_world(&w);
	w.gdt[0x10 + 5] = 0x12;
	expect_late(&w, &st, 0x90, 12, 0x10, 0x200000);
	assert_int_equal(st.ldt.present, 1);
	assert_int_equal(st.ldt.base, 0x5000);
	expect_seg(&st.cs, 0x08, false, 0);
	expect_seg(&st.ss, 0x10, false, 0);
	expect_seg(&st.es, 0x10, false, 0);
	expect_seg(&st.ds, 0x10, false, 0);
	expect_seg(&st.gs, 0x23, false, 0);
	/* ... when ES fails (after DS): CS, SS, DS loaded, ES FS GS not */
	st = task_world(&w);
	put16(w.tsk + T_ES, 0x30);
	expect_late(&w, &st, 0x90, 10, 0x30, 0x200000);
	expect_seg(&st.cs, 0x08, true, 0);
	assert_int_equal(st.cs.type, 11);
	expect_seg(&st.ss, 0x10, true, 0);
	expect_seg(&st.ds, 0x10, true, 0);
	expect_seg(&st.es, 0x30, false, 0);
	expect_seg(&st.fs, 0, false, 0);
	expect_seg(&st.gs, 0x23, false, 0);
	/* ... at CPL 3 the unusable ones carry DPL 3 (KVM's CPL is SS.DPL) */
	st = task_world(&w);
	put16(w.tsk + T_CS, 0x1b), put16(w.tsk + T_SS, 0x22);
	expect_late(&w, &st, 0x90, 10, 0x20, 0x200000);
	expect_seg(&st.ss, 0x22, false, 3);

	/* A 16-bit new task: its DS a code segment that is not readable */
	st = task_world(&w);
	put16(w.tsk + 0x100 + 0x28, 0x58);
	expect_late(&w, &st, 0x91, 10, 0x58, 0x1000);
	assert_int_equal(st.gs.selector, 0x23); /* no GS in a 16-bit TSS: kept */
	assert_int_equal(st.gs.present, 1);
}

/* EIP past the new CS limit: #GP(0) in the new task once every segment
 * is loaded; the T bit: a #DB trap with DR6.BT, which outranks it
 * (table 6-2) but not a segment fault of the switch itself. */
static void test_int_task_eip_tbit(void **state)
{
	(void)state;
	static struct world32 w;
	struct mb_fb_state st = task_world(&w);
	put16(w.tsk + T_CS, 0x28);
	put32(w.tsk + 0x20, 0x10000);
	expect_late(&w, &st, 0x90, 13, 0, 0x10000);
	expect_seg(&st.cs, 0x28, true, 0);
	expect_seg(&st.gs, 0x23, true, 0);
	/* ... EIP = the limit itself is fine */
	st = task_world(&w);
	put16(w.tsk + T_CS, 0x28);
	put32(w.tsk + 0x20, 0xffff);
	assert_int_equal(EXEC(st, 0xcd, 0x90), MB_FB_INT_TASK);
	assert_false(st.inject);
	assert_int_equal(st.rip, 0xffff);

	/* T bit: #DB, no error code, DR6.BT, the whole state loaded */
	st = task_world(&w);
	put16(w.tsk + 0x64, 1);
	w.lm.writes = 0;
	assert_int_equal(EXEC(st, 0xcd, 0x90), MB_FB_INT_TASK);
	assert_true(st.task_switched);
	assert_true(st.inject);
	assert_int_equal(st.inject_vec, 1);
	assert_false(st.inject_has_err);
	assert_int_equal(st.inject_dr6, 0x8000);
	assert_int_equal(st.rip, 0x200000);
	assert_int_equal(st.tr.selector, 0x38);
	expect_seg(&st.gs, 0x23, true, 0);
	assert_true(w.lm.writes >= 3);
	/* ... with EIP past the limit too: still #DB */
	st = task_world(&w);
	put16(w.tsk + 0x64, 1);
	put16(w.tsk + T_CS, 0x28);
	put32(w.tsk + 0x20, 0x10000);
	assert_int_equal(EXEC(st, 0xcd, 0x90), MB_FB_INT_TASK);
	assert_int_equal(st.inject_vec, 1);
	assert_int_equal(st.inject_dr6, 0x8000);
	/* ... with a bad DS: the #TS, no BT */
	st = task_world(&w);
	put16(w.tsk + 0x64, 1);
	put16(w.tsk + T_DS, 0x30);
	expect_late(&w, &st, 0x90, 10, 0x30, 0x200000);
	/* ... bits 15:1 of that word are not the T bit */
	st = task_world(&w);
	put16(w.tsk + 0x64, 0xfffe);
	assert_int_equal(EXEC(st, 0xcd, 0x90), MB_FB_INT_TASK);
	assert_false(st.inject);
	/* a 16-bit TSS has no T bit: its byte 0x64 is another TSS's */
	st = task_world(&w);
	w.tsk[0x100 + 0x64] = 1;
	assert_int_equal(EXEC(st, 0xcd, 0x91), MB_FB_INT_TASK);
	assert_false(st.inject);
}

/* A late exception whose IDT entry is a task gate: a second switch, done
 * by the fallback, into the handler task (the 16-bit TSS at 0x4100), with
 * the error code pushed on its stack. */
static void test_int_task_nested(void **state)
{
	(void)state;
	static struct world32 w;
	struct mb_fb_state st = task_world(&w);
	put16(w.tsk + T_DS, 0x30);
	gate32(&w, 10, 0, 0x40, 0x5, 0, true); /* #TS: task gate, DPL 0 */
	w.lm.writes = 0;
	assert_int_equal(EXEC(st, 0xcd, 0x90), MB_FB_INT_TASK);
	assert_false(st.inject);
	assert_true(st.task_switched);
	assert_int_equal(st.tr.selector, 0x40);
	assert_int_equal(st.rip, 0x1000);
	assert_true(st.rflags & NT);
	/* the first new task, saved where it stood: its first EIP, its DS */
	assert_int_equal(get32(w.tsk + 0x20), 0x200000);
	assert_int_equal(get32(w.tsk + 0x24) & NT, NT);
	assert_int_equal(get16(w.tsk + T_DS), 0x30);
	assert_int_equal(get32(w.tsk + 0x28), 0xa0000000u); /* its EAX */
	/* both new tasks busy, the handler linked to the first */
	assert_int_equal(w.gdt[0x38 + 5], 0x8b);
	assert_int_equal(w.gdt[0x40 + 5], 0x83);
	assert_int_equal(get16(w.tsk + 0x100), 0x38);
	assert_int_equal(get16(w.tsk), 0x30);
	/* the error code, a word (16-bit TSS) on SS 0x10 at SP 0xb4 - 2 */
	assert_int_equal(st.gpr[RSP], 0xb2);
	assert_int_equal(get16(w.low + 0xb2), 0x30);

	/* the T bit's #DB through a task gate: no error code, DR6.BT kept */
	st = task_world(&w);
	put16(w.tsk + 0x64, 1);
	gate32(&w, 1, 0, 0x40, 0x5, 0, true);
	assert_int_equal(EXEC(st, 0xcd, 0x90), MB_FB_INT_TASK);
	assert_false(st.inject);
	assert_int_equal(st.inject_dr6, 0x8000);
	assert_int_equal(st.tr.selector, 0x40);
	assert_int_equal(st.gpr[RSP], 0xb4);

	/* an interrupt gate for #TS: injected as before (KVM delivers it) */
	st = task_world(&w);
	put16(w.tsk + T_DS, 0x30);
	gate32(&w, 10, 0x1234, 0x08, 0xe, 0, true);
	expect_late(&w, &st, 0x90, 10, 0x30, 0x200000);
	/* ... and a not-present task gate too */
	st = task_world(&w);
	put16(w.tsk + T_DS, 0x30);
	gate32(&w, 10, 0, 0x40, 0x5, 0, false);
	expect_late(&w, &st, 0x90, 10, 0x30, 0x200000);

	/* the handler task busy (the current one): a double fault, refused
	 * with the registers as before the int */
	st = task_world(&w);
	put16(w.tsk + T_DS, 0x30);
	gate32(&w, 10, 0, 0x30, 0x5, 0, true);
	put32(w.tsk + 0x38, 0x8f00); /* a stack the push could use */
	struct mb_fb_state before = st;
	assert_int_equal(EXEC(st, 0xcd, 0x90), MB_FB_NONE);
	assert_memory_equal(&st, &before, sizeof st);
	/* the error code's push failing (SS base past mapped memory):
	 * refused too */
	st = task_world(&w);
	put16(w.tsk + T_DS, 0x30);
	gate32(&w, 10, 0, 0x40, 0x5, 0, true);
	put16(w.tsk + 0x100 + 0x1a, 0x0000); /* SP 0: the push wraps to 0xfffffffe */
	before = st;
	assert_int_equal(EXEC(st, 0xcd, 0x90), MB_FB_NONE);
	assert_memory_equal(&st, &before, sizeof st);
}

/* The LDT at 0x5000 (GDT 0x48, limit 0xF: entries 0 and 1). */
static void ldt_world(struct world32 *w)
{
	put64(w->v86stk + 0, 0x00cf9a000000ffffull);  /* 0x04: code, DPL 0 */
	put64(w->v86stk + 8, 0x00cf92abc000ffffull);  /* 0x0c: data at 0xabc000 */
}

/* Selectors with TI = 1 in the new task: looked up in the new LDT, which
 * the switch loads first (vol. 3, 7.3 step 12), with its limit. */
static void test_int_task_ldt(void **state)
{
	(void)state;
	static struct world32 w;
	struct mb_fb_state st = task_world(&w);
	ldt_world(&w);
	put16(w.tsk + T_CS, 0x04), put16(w.tsk + T_SS, 0x0c);
	put16(w.tsk + T_DS, 0x0c), put16(w.tsk + T_ES, 0x0c);
	assert_int_equal(EXEC(st, 0xcd, 0x90), MB_FB_INT_TASK);
	assert_false(st.inject);
	assert_int_equal(st.cs.selector, 0x04);
	assert_int_equal(st.cs.type, 11);
	assert_int_equal(st.ss.selector, 0x0c);
	assert_int_equal(st.ss.base, 0xabc000);
	assert_int_equal(st.ds.base, 0xabc000);
	assert_int_equal(st.es.base, 0xabc000);
	assert_int_equal(st.gs.selector, 0x23); /* a GDT one beside them */
	assert_int_equal(st.ldt.selector, 0x48);

	/* past the LDT's limit: #TS(selector) */
	st = task_world(&w);
	ldt_world(&w);
	put16(w.tsk + T_DS, 0x14);
	expect_late(&w, &st, 0x90, 10, 0x14, 0x200000);
	/* ... an LDT limit of 7: entry 1 is past it */
	st = task_world(&w);
	ldt_world(&w);
	w.gdt[0x48] = 0x07;
	put16(w.tsk + T_DS, 0x0c);
	expect_late(&w, &st, 0x90, 10, 0x0c, 0x200000);
	/* a null LDT: every TI = 1 selector is invalid (the old task's LDT,
	 * which would have entry 1, is not looked at) */
	st = task_world(&w);
	ldt_world(&w);
	st.ldt = (struct mb_seg){ .selector = 0x48, .base = 0x5000, .limit = 0xf,
				  .type = 2, .present = 1 };
	put16(w.tsk + T_LDT, 0);
	put16(w.tsk + T_DS, 0x0c);
	expect_late(&w, &st, 0x90, 10, 0x0c, 0x200000);
	assert_int_equal(st.ldt.selector, 0);
	assert_int_equal(st.ldt.present, 0);
	/* ... and selector 4 is LDT entry 0, not a null selector */
	st = task_world(&w);
	put16(w.tsk + T_LDT, 0);
	put16(w.tsk + T_DS, 0x04);
	expect_late(&w, &st, 0x90, 10, 0x04, 0x200000);
	/* the same checks as in the GDT: an LDT code segment as SS, a
	 * not-present LDT stack, an LDT data segment as CS */
	st = task_world(&w);
	ldt_world(&w);
	put16(w.tsk + T_SS, 0x04);
	expect_late(&w, &st, 0x90, 10, 0x04, 0x200000);
	st = task_world(&w);
	ldt_world(&w);
	w.v86stk[8 + 5] &= 0x7f;
	put16(w.tsk + T_SS, 0x0c);
	expect_late(&w, &st, 0x90, 12, 0x0c, 0x200000);
	st = task_world(&w);
	ldt_world(&w);
	put16(w.tsk + T_CS, 0x0c);
	expect_late(&w, &st, 0x90, 10, 0x0c, 0x200000);
	/* a not-present LDT is still indexed before its step 6: CS in it
	 * passes step 2, then #TS(LDT) */
	st = task_world(&w);
	ldt_world(&w);
	w.gdt[0x48 + 5] = 0x02;
	put16(w.tsk + T_CS, 0x04);
	expect_late(&w, &st, 0x90, 10, 0x48, 0x200000);
	/* the LDT's entries unreadable: refused, but only when a selector
	 * needs them */
	st = task_world(&w);
	ldt_world(&w);
	w.gdt[0x48 + 4] = 0x70; /* base 0x705000 */
	put16(w.tsk + T_DS, 0x0c);
	expect_refused(&w, st, 0x90);
	st = task_world(&w);
	w.gdt[0x48 + 4] = 0x70;
	assert_int_equal(EXEC(st, 0xcd, 0x90), MB_FB_INT_TASK);
	assert_false(st.inject);
	assert_int_equal(st.ldt.base, 0x705000);
	/* the 16-bit new task's LDT (TSS word 0x2A) */
	st = task_world(&w);
	ldt_world(&w);
	put16(w.tsk + 0x100 + 0x2a, 0x48);
	put16(w.tsk + 0x100 + 0x28, 0x0c);
	assert_int_equal(EXEC(st, 0xcd, 0x91), MB_FB_INT_TASK);
	assert_false(st.inject);
	assert_int_equal(st.ds.base, 0xabc000);
	/* a virtual-8086 task's LDT is checked too */
	st = task_world(&w);
	put32(w.tsk + 0x24, 0x2 | VM);
	put32(w.tsk + 0x20, 0x100);
	put16(w.tsk + T_LDT, 0x08);
	expect_late(&w, &st, 0x90, 10, 0x08, 0x100);
	/* ... and must be present */
	st = task_world(&w);
	put32(w.tsk + 0x24, 0x2 | VM);
	put32(w.tsk + 0x20, 0x100);
	w.gdt[0x48 + 5] = 0x02;
	expect_late(&w, &st, 0x90, 10, 0x48, 0x100);
	assert_true(st.rflags & VM);
}

static void test_int_task(void **state)
{
	static struct world32 w;
	/* 32-bit task to 32-bit task, paging on: CR3 loaded */
	struct mb_fb_state st = task_world(&w);
	st.cr0 |= 1ull << 31;
	st.cr3 = 0x1000;
	assert_int_equal(EXEC(st, 0xcd, 0x90), MB_FB_INT_TASK);
	assert_false(st.inject);
	assert_true(st.task_switched);
	assert_true(st.segs_changed);
	assert_true(st.dsegs_changed);
	/* the old task's dynamic fields, in the old TSS */
	assert_int_equal(get32(w.tss + 0x20), 0x100002);
	assert_int_equal(get32(w.tss + 0x24), 0x2 | IF | CF);
	for (unsigned i = 0; i < 8; i++)
		if (i != RSP)
			assert_int_equal(get32(w.tss + 0x28 + 4 * i),
					 (uint32_t)(0x1111111111111111ull * (i + 1)));
	assert_int_equal(get32(w.tss + 0x38), 0x8f00); /* ESP */
	static const uint16_t osel[6] = { 0x10, 0x08, 0x10, 0x10, 0, 0x23 };
	for (unsigned i = 0; i < 6; i++)
		assert_int_equal(get32(w.tss + 0x48 + 4 * i), osel[i]);
	/* link, busy bit, TR, CR0.TS, NT */
	assert_int_equal(get16(w.tsk), 0x30);
	assert_int_equal(w.gdt[0x38 + 5], 0x8b);
	assert_int_equal(st.tr.selector, 0x38);
	assert_int_equal(st.tr.base, 0x4000);
	assert_int_equal(st.tr.limit, 0x67);
	assert_int_equal(st.tr.type, 11);
	assert_int_equal(st.tr.s, 0);
	assert_true(st.cr0 & TS);
	assert_int_equal(st.cr3, 0x7000);
	/* the new task */
	assert_int_equal(st.rip, 0x200000);
	assert_int_equal(st.rflags, 0x2 | IF | CF | NT);
	for (unsigned i = 0; i < 8; i++)
		assert_int_equal(st.gpr[i], 0xa0000000u + i);
	assert_int_equal(st.gpr[8], 0x9999999999999999ull); /* r8: untouched */
	assert_int_equal(st.cs.selector, 0x08);
	assert_int_equal(st.cs.type, 11); /* accessed */
	assert_int_equal(st.cs.db, 1);
	assert_int_equal(st.ss.selector, 0x10);
	assert_int_equal(st.ds.selector, 0x10);
	assert_int_equal(st.fs.selector, 0);
	assert_int_equal(st.fs.present, 0);
	assert_int_equal(st.gs.selector, 0x23);
	assert_int_equal(st.gs.dpl, 3);
	assert_int_equal(st.ldt.selector, 0x48);
	assert_int_equal(st.ldt.base, 0x5000);
	assert_int_equal(st.ldt.limit, 0xf);
	assert_int_equal(st.ldt.type, 2);
	assert_int_equal(st.ldt.present, 1);

	/* paging off: CR3 stays */
	st = task_world(&w);
	st.cr3 = 0x1000;
	assert_int_equal(EXEC(st, 0xcd, 0x90), MB_FB_INT_TASK);
	assert_int_equal(st.cr3, 0x1000);

	/* into a 16-bit task: words zero-extended, FS GS stay, no CR3, TR
	 * type 3 */
	st = task_world(&w);
	st.cr0 |= 1ull << 31;
	st.cr3 = 0x1000;
	assert_int_equal(EXEC(st, 0xcd, 0x91), MB_FB_INT_TASK);
	assert_false(st.inject);
	assert_int_equal(st.rip, 0x1000);
	assert_int_equal(st.rflags, 0x2 | IF | NT);
	for (unsigned i = 0; i < 8; i++)
		assert_int_equal(st.gpr[i], 0xb0 + i);
	assert_int_equal(st.cs.selector, 0x28);
	assert_int_equal(st.cs.db, 0);
	assert_int_equal(st.es.selector, 0);
	assert_int_equal(st.es.present, 0);
	assert_int_equal(st.gs.selector, 0x23);
	assert_int_equal(st.ldt.selector, 0);
	assert_int_equal(st.ldt.present, 0);
	assert_int_equal(st.tr.type, 3);
	assert_int_equal(st.cr3, 0x1000);
	assert_int_equal(get16(w.tsk + 0x100), 0x30);
	assert_int_equal(w.gdt[0x40 + 5], 0x83);

	/* from a 16-bit TSS: IP FLAGS AX..DI ES CS SS DS saved at 0x0E */
	st = task_world(&w);
	st.tr = (struct mb_seg){ .selector = 0x50, .base = 0x4200, .limit = 0x2b,
				 .type = 3, .present = 1 };
	assert_int_equal(EXEC(st, 0xcd, 0x90), MB_FB_INT_TASK);
	assert_false(st.inject);
	const uint8_t *o = w.tsk + 0x200;
	assert_int_equal(get16(o + 0x0e), 0x0002);
	assert_int_equal(get16(o + 0x10), 0x2 | IF | CF);
	for (unsigned i = 0; i < 8; i++)
		if (i != RSP)
			assert_int_equal(get16(o + 0x12 + 2 * i),
					 (uint16_t)(0x1111111111111111ull * (i + 1)));
	assert_int_equal(get16(o + 0x1a), 0x8f00);
	assert_int_equal(get16(o + 0x22), 0x10);
	assert_int_equal(get16(o + 0x24), 0x08);
	assert_int_equal(get16(o + 0x2a), 0); /* LDT: static, not written */
	assert_int_equal(get16(w.tsk), 0x50);

	/* from virtual-8086 mode (IOPL 3, gate DPL 3): the old EFLAGS keeps VM */
	st = vm86(&w);
	new_task32(&w);
	gate32(&w, 0x90, 0, 0x38, 0x5, 3, true);
	assert_int_equal(EXEC(st, 0xcd, 0x90), MB_FB_INT_TASK);
	assert_false(st.inject);
	assert_int_equal(get32(w.tss + 0x24), 0x2 | VM | IOPL | IF | TF | NT | CF);
	assert_int_equal(get32(w.tss + 0x4c), 0x1234);
	assert_int_equal(st.rflags, 0x2 | IF | CF | NT);
	assert_int_equal(st.cs.selector, 0x08);

	/* into a virtual-8086 task: every segment selector * 16, DPL 3 */
	st = task_world(&w);
	put32(w.tsk + 0x24, 0x2 | VM | IOPL);
	put32(w.tsk + 0x20, 0x0100);
	put16(w.tsk + 0x4c, 0x1234);
	assert_int_equal(EXEC(st, 0xcd, 0x90), MB_FB_INT_TASK);
	assert_false(st.inject);
	assert_int_equal(st.rflags, 0x2 | VM | IOPL | NT);
	assert_int_equal(st.cs.base, 0x12340);
	assert_int_equal(st.cs.dpl, 3);
	assert_int_equal(st.cs.limit, 0xffff);
	assert_int_equal(st.fs.base, 0);
	assert_int_equal(st.fs.present, 1);
	assert_int_equal(st.gs.base, 0x230);
	/* ... with EIP beyond 64 KiB: the switch, then #GP(0) in the new
	 * (virtual-8086) task */
	st = task_world(&w);
	put32(w.tsk + 0x24, 0x2 | VM);
	put32(w.tsk + 0x20, 0x10000);
	expect_late(&w, &st, 0x90, 13, 0, 0x10000);
	assert_true(st.rflags & VM);
	assert_int_equal(st.cs.base, 0x80);

	/* The checks before the switch, in the SDM's order. */
	struct { uint16_t sel; unsigned gdpl; bool present; unsigned vec;
		 uint32_t err; } c[] = {
		{ 0x38, 0, false, 11, 0x92 * 8 + 2 }, /* gate not present */
		{ 0x3c, 0, true, 13, 0x3c },          /* an LDT selector */
		{ 0x60, 0, true, 13, 0x60 },          /* past the GDT limit */
		{ 0x30, 0, true, 13, 0x30 },          /* busy (the current TSS) */
		{ 0x50, 0, true, 13, 0x50 },          /* busy, 16-bit */
		{ 0x08, 0, true, 13, 0x08 },          /* a code segment */
		{ 0x48, 0, true, 13, 0x48 },          /* an LDT descriptor */
		{ 0x00, 0, true, 13, 0x00 },          /* the null descriptor */
	};
	for (unsigned i = 0; i < sizeof c / sizeof c[0]; i++) {
		st = task_world(&w);
		gate32(&w, 0x92, 0, c[i].sel, 0x5, c[i].gdpl, c[i].present);
		w.lm.writes = 0;
		assert_int_equal(EXEC(st, 0xcd, 0x92), MB_FB_INT_TASK);
		expect_fault(&st, &w.lm, 0x100000, c[i].vec, c[i].err);
	}
	/* gate DPL 0 from CPL 3: #GP(vec * 8 + 2) */
	st = user32(&w);
	gate32(&w, 0x90, 0, 0x38, 0x5, 0, true);
	w.lm.writes = 0;
	assert_int_equal(EXEC(st, 0xcd, 0x90), MB_FB_INT_TASK);
	expect_fault(&st, &w.lm, 0x08048000, 13, 0x90 * 8 + 2);
	/* ... DPL 3: taken from user mode */
	st = user32(&w);
	new_task32(&w);
	gate32(&w, 0x90, 0, 0x38, 0x5, 3, true);
	assert_int_equal(EXEC(st, 0xcd, 0x90), MB_FB_INT_TASK);
	assert_false(st.inject);
	assert_int_equal(get32(w.tss + 0x4c), 0x1b);
	/* TSS not present: #NP(sel); too small: #TS(sel) */
	st = task_world(&w);
	w.gdt[0x38 + 5] &= 0x7f;
	expect_fault((EXEC(st, 0xcd, 0x90), &st), &w.lm, 0x100000, 11, 0x38);
	st = task_world(&w);
	w.gdt[0x38] = 0x66;
	expect_fault((EXEC(st, 0xcd, 0x90), &st), &w.lm, 0x100000, 10, 0x38);
	st = task_world(&w);
	w.gdt[0x40] = 0x2a;
	expect_fault((EXEC(st, 0xcd, 0x91), &st), &w.lm, 0x100000, 10, 0x40);

	/* a ring-3 task: CS 0x1b, SS ES DS 0x23 (CPL 3) */
	st = task_world(&w);
	put16(w.tsk + 0x4c, 0x1b);
	put16(w.tsk + 0x48, 0x23), put16(w.tsk + 0x50, 0x23), put16(w.tsk + 0x54, 0x23);
	assert_int_equal(EXEC(st, 0xcd, 0x90), MB_FB_INT_TASK);
	assert_false(st.inject);
	assert_int_equal(st.ss.dpl, 3);
	assert_int_equal(st.cs.selector, 0x1b);
	/* ... CS DPL 0 with RPL 3 around the same ring-3 stack: #TS(CS) */
	st = task_world(&w);
	put16(w.tsk + 0x4c, 0x0b);
	put16(w.tsk + 0x48, 0x23), put16(w.tsk + 0x50, 0x23), put16(w.tsk + 0x54, 0x23);
	expect_late(&w, &st, 0x90, 10, 0x08, 0x200000);
	/* conforming code DPL 0 as CS with RPL 3: CPL 3 (DPL <= RPL) */
	st = task_world(&w);
	w.gdt[0x58 + 5] |= 2;
	put16(w.tsk + 0x4c, 0x5b);
	put16(w.tsk + 0x48, 0x23), put16(w.tsk + 0x50, 0x23), put16(w.tsk + 0x54, 0x23);
	assert_int_equal(EXEC(st, 0xcd, 0x90), MB_FB_INT_TASK);
	assert_false(st.inject);
	assert_int_equal(st.cs.selector, 0x5b);
	assert_int_equal(st.ss.dpl, 3);
	/* readable conforming code in DS is allowed */
	st = task_world(&w);
	w.gdt[0x58 + 5] |= 2;
	put16(w.tsk + 0x54, 0x5b);
	assert_int_equal(EXEC(st, 0xcd, 0x90), MB_FB_INT_TASK);
	assert_false(st.inject);
	assert_int_equal(st.ds.selector, 0x5b);
	/* the new TSS unreadable; the old TSS read-only; the old TSS too
	 * small for its fields */
	st = task_world(&w);
	w.gdt[0x38 + 4] = 0x70; /* base 0x704000 */
	expect_refused(&w, st, 0x90);
	st = task_world(&w);
	w.lm.ro_lo = 0x3000, w.lm.ro_hi = 0x3100;
	expect_refused(&w, st, 0x90);
	w.lm.ro_lo = w.lm.ro_hi = 0;
	st = task_world(&w);
	st.tr.limit = 0x5e;
	expect_refused(&w, st, 0x90);
}

static void test_names_counts(void **state)
{
	assert_string_equal(mb_fallback_name(MB_FB_INT3), "int3");
	assert_string_equal(mb_fallback_name(MB_FB_CLAC), "clac");
	assert_string_equal(mb_fallback_name(MB_FB_STAC), "stac");
	assert_string_equal(mb_fallback_name(MB_FB_POPCNT), "popcnt");
	assert_string_equal(mb_fallback_name(MB_FB_FWAIT), "fwait");
	assert_string_equal(mb_fallback_name(MB_FB_SYSCALL), "syscall");
	assert_string_equal(mb_fallback_name(MB_FB_XGETBV), "xgetbv");
	assert_string_equal(mb_fallback_name(MB_FB_CLFLUSH), "clflush");
	assert_string_equal(mb_fallback_name(MB_FB_CLFLUSHOPT), "clflushopt");
	assert_string_equal(mb_fallback_name(MB_FB_CLWB), "clwb");
	assert_string_equal(mb_fallback_name(MB_FB_UD), "ud");
	assert_string_equal(mb_fallback_name(MB_FB_INT), "int");
	assert_string_equal(mb_fallback_name(MB_FB_INT_TASK), "int_task");
	assert_string_equal(mb_fallback_name(MB_FB_INT_VM86), "int_vm86");
	assert_null(mb_fallback_name(MB_FB_NONE));
	assert_null(mb_fallback_name(MB_FB_KINDS));

	/* A machine the fallback never saw: every count is zero. */
	const char *nm[64];
	uint64_t n[64];
	memset(n, 0xff, sizeof n);
	struct mb_machine *fresh = calloc(1, sizeof *fresh);
	unsigned kinds = mb_fallback_counts(fresh, nm, n, 64);
	free(fresh);
	assert_int_equal(kinds, MB_FB_KINDS - 1);
	for (unsigned i = 0; i < kinds; i++) {
		assert_string_equal(nm[i], mb_fallback_name(i + 1));
		assert_int_equal(n[i], 0);
	}
	assert_int_equal(n[kinds], ~0ull); /* nothing past the kinds */
	n[0] = 7;
	assert_int_equal(mb_fallback_counts(NULL, NULL, n, 1), kinds);
	assert_int_equal(n[0], 0);
	assert_int_equal(n[1], 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_int3),
		cmocka_unit_test(test_clac_stac),
		cmocka_unit_test(test_fwait),
		cmocka_unit_test(test_popcnt32),
		cmocka_unit_test(test_popcnt64),
		cmocka_unit_test(test_popcnt16),
		cmocka_unit_test(test_popcnt_matches_cpu),
		cmocka_unit_test(test_syscall_fixup),
		cmocka_unit_test(test_syscall_negative),
		cmocka_unit_test(test_unknown),
		cmocka_unit_test(test_xgetbv),
		cmocka_unit_test(test_clflush),
		cmocka_unit_test(test_movbe_ud),
		cmocka_unit_test(test_int_real),
		cmocka_unit_test(test_int_long_kernel),
		cmocka_unit_test(test_int_long_user),
		cmocka_unit_test(test_int_long_checks),
		cmocka_unit_test(test_int_prot),
		cmocka_unit_test(test_int_tss16),
		cmocka_unit_test(test_int_vm86),
		cmocka_unit_test(test_int_task),
		cmocka_unit_test(test_int_task_late),
		cmocka_unit_test(test_int_task_order),
		cmocka_unit_test(test_int_task_eip_tbit),
		cmocka_unit_test(test_int_task_ldt),
		cmocka_unit_test(test_int_task_nested),
		cmocka_unit_test(test_names_counts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

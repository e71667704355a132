/* The emulation fallback's SSE instructions (core/fallback_sse.c) on
 * hand-built states: each move's data path in both directions, the
 * zeroing and merging rules, #UD/#NM/#GP as the CPU raises them, and what
 * must be refused with the state left as it was. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/fallback.h"

enum { RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8, R9, R10, R11, R12, R13, R14, R15 };

#define RIP0 0xffffffff81000100ull
#define DATA 0xffff888000100000ull /* the fake memory's page */
#define CR0_TS 0x8ull
#define CR0_EM 0x4ull
#define CR4_OSFXSR 0x200ull

struct fake {
	uint8_t page[4096];
	bool ro;
	int accesses;
};

static int rd(void *ctx, uint64_t la, void *buf, unsigned len)
{
	struct fake *f = ctx;
	f->accesses++;
	if (la < DATA || la - DATA + len > sizeof f->page)
		return -1;
	memcpy(buf, f->page + (la - DATA), len);
	return 0;
}

static int wr(void *ctx, uint64_t la, const void *buf, unsigned len)
{
	struct fake *f = ctx;
	f->accesses++;
	if (f->ro || la < DATA || la - DATA + len > sizeof f->page)
		return -1;
	memcpy(f->page + (la - DATA), buf, len);
	return 0;
}

/* A 64-bit kernel with SSE on (CR4.OSFXSR, as Linux sets it) and
 * recognisable XMM contents: byte j of xmm i is 16 * i + j. */
static struct mb_fb_state k64(struct fake *f)
{
	struct mb_fb_state st = {
		.rip = RIP0, .rflags = 0x2,
		.cs = { .selector = 0x10, .type = 11, .present = 1, .s = 1, .l = 1,
			.g = 1, .limit = 0xffffffff },
		.ss = { .selector = 0x18, .type = 3, .present = 1, .s = 1, .db = 1,
			.g = 1, .limit = 0xffffffff },
		.cr0 = 0x80050033, .cr4 = 0x3006f0, .efer = 0xd01,
		.sse_valid = true, .mxcsr = 0x1f80,
		.read = rd, .write = wr, .ctx = f,
	};
	for (unsigned i = 0; i < 16; i++) {
		st.gpr[i] = 0x1111111111111111ull * (i + 1);
		for (unsigned j = 0; j < 16; j++)
			st.xmm[i][j] = (uint8_t)(16 * i + j);
	}
	for (unsigned i = 0; i < sizeof f->page; i++)
		f->page[i] = (uint8_t)(0xa0 ^ i);
	f->ro = false, f->accesses = 0;
	return st;
}

#define EXEC(st, ...)                                                        \
	mb_fallback_exec(&(st), (const uint8_t[]){ __VA_ARGS__ },             \
			 sizeof((const uint8_t[]){ __VA_ARGS__ }))

static uint64_t lo64(const uint8_t *x)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | x[i];
	return v;
}

static uint64_t hi64(const uint8_t *x) { return lo64(x + 8); }

/* The xmm register's original bytes (see k64). */
static void orig(uint8_t out[16], unsigned i)
{
	for (unsigned j = 0; j < 16; j++)
		out[j] = (uint8_t)(16 * i + j);
}

/* Refused: MB_FB_NONE and not one byte of the state changed. */
#define REFUSED(st, ...)                                                     \
	do {                                                                 \
		struct mb_fb_state before_ = (st);                           \
		assert_int_equal(EXEC(st, __VA_ARGS__), MB_FB_NONE);         \
		before_.sse_changed = (st).sse_changed = false;              \
		assert_memory_equal(&before_, &(st), sizeof before_);        \
	} while (0)

/* A fault: the kind, the vector, RIP and the registers unchanged. */
static void expect_fault(struct mb_fb_state *st, enum mb_fb_insn got,
			 enum mb_fb_insn kind, uint8_t vec, bool has_err)
{
	assert_int_equal(got, kind);
	assert_true(st->inject);
	assert_int_equal(st->inject_vec, vec);
	assert_int_equal(st->inject_has_err, has_err);
	assert_int_equal(st->inject_err, 0);
	assert_int_equal(st->rip, RIP0);
	assert_false(st->sse_changed);
}

/* ---- movd / movq between GPRs, memory and XMM ----------------------- */

static void test_movd_movq_gpr(void **state)
{
	struct fake f;
	struct mb_fb_state st = k64(&f);
	/* movd %ecx,%xmm15 (what Debian's cloud kernel stopped on) */
	st.gpr[RCX] = 0xdeadbeefcafef00dull;
	assert_int_equal(EXEC(st, 0x66, 0x44, 0x0f, 0x6e, 0xf9), MB_FB_MOVD);
	assert_int_equal(lo64(st.xmm[15]), 0xcafef00dull);
	assert_int_equal(hi64(st.xmm[15]), 0);
	assert_int_equal(st.rip, RIP0 + 5);
	assert_true(st.sse_changed);
	assert_false(st.inject);

	/* movq %rax,%xmm0: all 64 bits, 127:64 zeroed */
	st = k64(&f);
	st.gpr[RAX] = 0x8877665544332211ull;
	assert_int_equal(EXEC(st, 0x66, 0x48, 0x0f, 0x6e, 0xc0), MB_FB_MOVQ);
	assert_int_equal(lo64(st.xmm[0]), 0x8877665544332211ull);
	assert_int_equal(hi64(st.xmm[0]), 0);
	assert_int_equal(st.rip, RIP0 + 5);

	/* movd %xmm1,%eax: a 32-bit destination zero-extends */
	st = k64(&f);
	uint8_t x1[16];
	orig(x1, 1);
	assert_int_equal(EXEC(st, 0x66, 0x0f, 0x7e, 0xc8), MB_FB_MOVD);
	assert_int_equal(st.gpr[RAX], lo64(x1) & 0xffffffffull);
	assert_int_equal(st.rip, RIP0 + 4);
	assert_false(st.sse_changed);
	/* movq %xmm9,%r10 */
	st = k64(&f);
	uint8_t x9[16];
	orig(x9, 9);
	assert_int_equal(EXEC(st, 0x66, 0x4d, 0x0f, 0x7e, 0xca), MB_FB_MOVQ);
	assert_int_equal(st.gpr[R10], lo64(x9));
	assert_int_equal(st.gpr[RDX], 0x3333333333333333ull); /* not rdx */
}

static void test_movd_movq_mem(void **state)
{
	struct fake f;
	struct mb_fb_state st = k64(&f);
	/* movd (%rsi),%xmm2 */
	st.gpr[RSI] = DATA + 0x10;
	assert_int_equal(EXEC(st, 0x66, 0x0f, 0x6e, 0x16), MB_FB_MOVD);
	assert_int_equal(lo64(st.xmm[2]), 0xb3b2b1b0ull); /* 0xa0 ^ 0x10.. */
	assert_int_equal(hi64(st.xmm[2]), 0);
	assert_int_equal(st.rip, RIP0 + 4);
	/* movd %xmm3,8(%rdi): four bytes, nothing past them */
	st = k64(&f);
	st.gpr[RDI] = DATA + 0x100;
	assert_int_equal(EXEC(st, 0x66, 0x0f, 0x7e, 0x5f, 0x08), MB_FB_MOVD);
	assert_int_equal(f.page[0x108], 0x30);
	assert_int_equal(f.page[0x10b], 0x33);
	assert_int_equal(f.page[0x10c], 0xa0 ^ 0x0c);
	assert_int_equal(st.rip, RIP0 + 5);
	/* movq %xmm4,0x20(%rip) (66 0F D6): eight bytes, RIP-relative from
	 * the next instruction */
	st = k64(&f);
	st.rip = DATA + 0x200 - 8;
	assert_int_equal(EXEC(st, 0x66, 0x0f, 0xd6, 0x25, 0x20, 0, 0, 0),
			 MB_FB_MOVQ);
	assert_int_equal(lo64(f.page + 0x220), 0x4746454443424140ull);
	assert_int_equal(f.page[0x228], 0xa0 ^ 0x28);
	assert_int_equal(st.rip, DATA + 0x200);
	/* movq (%rbx),%xmm5 (F3 0F 7E): 127:64 zeroed */
	st = k64(&f);
	st.gpr[RBX] = DATA + 0x220;
	assert_int_equal(EXEC(st, 0xf3, 0x0f, 0x7e, 0x2b), MB_FB_MOVQ);
	assert_int_equal(lo64(st.xmm[5]), lo64(f.page + 0x220));
	assert_int_equal(hi64(st.xmm[5]), 0);
	/* movq %xmm6,%xmm7 (F3 0F 7E, registers): also zeroes 127:64 */
	st = k64(&f);
	uint8_t x6[16];
	orig(x6, 6);
	assert_int_equal(EXEC(st, 0xf3, 0x0f, 0x7e, 0xfe), MB_FB_MOVQ);
	assert_int_equal(lo64(st.xmm[7]), lo64(x6));
	assert_int_equal(hi64(st.xmm[7]), 0);
	/* movq %xmm6,%xmm7 as 66 0F D6 /r (register destination in rm) */
	st = k64(&f);
	assert_int_equal(EXEC(st, 0x66, 0x0f, 0xd6, 0xf7), MB_FB_MOVQ);
	assert_int_equal(lo64(st.xmm[7]), lo64(x6));
	assert_int_equal(hi64(st.xmm[7]), 0);
	/* movq (%rax),%xmm1 as 66 REX.W 0F 6E */
	st = k64(&f);
	st.gpr[RAX] = DATA + 0x220;
	assert_int_equal(EXEC(st, 0x66, 0x48, 0x0f, 0x6e, 0x08), MB_FB_MOVQ);
	assert_int_equal(lo64(st.xmm[1]), lo64(f.page + 0x220));
}

/* ---- movss / movsd: zero from memory, merge between registers --------- */

static void test_movss_movsd(void **state)
{
	struct fake f;
	struct mb_fb_state st = k64(&f);
	uint8_t x1[16], x2[16];
	orig(x1, 1), orig(x2, 2);
	/* movss %xmm2,%xmm1: bits 31:0 move, the rest of xmm1 stays */
	assert_int_equal(EXEC(st, 0xf3, 0x0f, 0x10, 0xca), MB_FB_MOVSS);
	assert_memory_equal(st.xmm[1], x2, 4);
	assert_memory_equal(st.xmm[1] + 4, x1 + 4, 12);
	/* movsd (%rsi),%xmm1: 64 bits, 127:64 zeroed */
	st = k64(&f);
	st.gpr[RSI] = DATA;
	assert_int_equal(EXEC(st, 0xf2, 0x0f, 0x10, 0x0e), MB_FB_MOVSD);
	assert_memory_equal(st.xmm[1], f.page, 8);
	assert_int_equal(hi64(st.xmm[1]), 0);
	/* movss %xmm1,(%rsi): four bytes */
	st = k64(&f);
	st.gpr[RSI] = DATA + 1; /* no alignment needed */
	assert_int_equal(EXEC(st, 0xf3, 0x0f, 0x11, 0x0e), MB_FB_MOVSS);
	assert_memory_equal(f.page + 1, x1, 4);
	assert_int_equal(f.page[5], 0xa0 ^ 5);
	/* movsd %xmm1,%xmm2 through 0F 11 (destination in rm): merge */
	st = k64(&f);
	assert_int_equal(EXEC(st, 0xf2, 0x0f, 0x11, 0xca), MB_FB_MOVSD);
	assert_memory_equal(st.xmm[2], x1, 8);
	assert_memory_equal(st.xmm[2] + 8, x2 + 8, 8);
}

/* ---- the 128-bit moves ---------------------------------------------- */

static void test_moves128(void **state)
{
	struct fake f;
	struct mb_fb_state st = k64(&f);
	uint8_t x3[16];
	orig(x3, 3);
	/* movups 1(%rsi),%xmm0: unaligned is fine */
	st.gpr[RSI] = DATA;
	assert_int_equal(EXEC(st, 0x0f, 0x10, 0x46, 0x01), MB_FB_MOVUPS);
	assert_memory_equal(st.xmm[0], f.page + 1, 16);
	assert_int_equal(st.rip, RIP0 + 4);
	/* movupd %xmm3,(%rdi) counts as movups */
	st = k64(&f);
	st.gpr[RDI] = DATA + 3;
	assert_int_equal(EXEC(st, 0x66, 0x0f, 0x11, 0x1f), MB_FB_MOVUPS);
	assert_memory_equal(f.page + 3, x3, 16);
	/* movaps (%rsi),%xmm8 aligned; movaps %xmm3,%xmm4 */
	st = k64(&f);
	st.gpr[RSI] = DATA + 0x40;
	assert_int_equal(EXEC(st, 0x44, 0x0f, 0x28, 0x06), MB_FB_MOVAPS);
	assert_memory_equal(st.xmm[8], f.page + 0x40, 16);
	st = k64(&f);
	assert_int_equal(EXEC(st, 0x0f, 0x28, 0xe3), MB_FB_MOVAPS);
	assert_memory_equal(st.xmm[4], x3, 16);
	/* movdqa %xmm3,0x10(%rdi); movdqu 7(%rdi),%xmm3 */
	st = k64(&f);
	st.gpr[RDI] = DATA;
	assert_int_equal(EXEC(st, 0x66, 0x0f, 0x7f, 0x5f, 0x10), MB_FB_MOVDQA);
	assert_memory_equal(f.page + 0x10, x3, 16);
	st = k64(&f);
	st.gpr[RDI] = DATA;
	assert_int_equal(EXEC(st, 0xf3, 0x0f, 0x6f, 0x5f, 0x07), MB_FB_MOVDQU);
	assert_memory_equal(st.xmm[3], f.page + 7, 16);
	/* movdqu %xmm3,%xmm11 through 7F (destination in rm) */
	st = k64(&f);
	assert_int_equal(EXEC(st, 0xf3, 0x41, 0x0f, 0x7f, 0xdb), MB_FB_MOVDQU);
	assert_memory_equal(st.xmm[11], x3, 16);
	/* misaligned movaps / movdqa / pxor: #GP(0), nothing moves */
	st = k64(&f);
	st.gpr[RSI] = DATA + 8;
	expect_fault(&st, EXEC(st, 0x0f, 0x28, 0x06), MB_FB_MOVAPS, 13, true);
	assert_int_equal(f.accesses, 0);
	st = k64(&f);
	st.gpr[RDI] = DATA + 4;
	expect_fault(&st, EXEC(st, 0x66, 0x0f, 0x7f, 0x1f), MB_FB_MOVDQA, 13, true);
	assert_int_equal(f.page[4], 0xa0 ^ 4);
	st = k64(&f);
	st.gpr[RSI] = DATA + 1;
	expect_fault(&st, EXEC(st, 0x66, 0x0f, 0xef, 0x06), MB_FB_PXOR, 13, true);
}

static void test_xor(void **state)
{
	struct fake f;
	struct mb_fb_state st = k64(&f);
	/* pxor %xmm5,%xmm5: the zeroing idiom */
	assert_int_equal(EXEC(st, 0x66, 0x0f, 0xef, 0xed), MB_FB_PXOR);
	assert_int_equal(lo64(st.xmm[5]) | hi64(st.xmm[5]), 0);
	/* pxor 0x30(%rsi),%xmm1 */
	st = k64(&f);
	st.gpr[RSI] = DATA;
	uint8_t x1[16];
	orig(x1, 1);
	assert_int_equal(EXEC(st, 0x66, 0x0f, 0xef, 0x4e, 0x30), MB_FB_PXOR);
	for (unsigned i = 0; i < 16; i++)
		assert_int_equal(st.xmm[1][i], x1[i] ^ f.page[0x30 + i]);
	/* xorps %xmm14,%xmm14 (REX.R and REX.B); xorpd counts as xorps */
	st = k64(&f);
	assert_int_equal(EXEC(st, 0x45, 0x0f, 0x57, 0xf6), MB_FB_XORPS);
	assert_int_equal(lo64(st.xmm[14]) | hi64(st.xmm[14]), 0);
	st = k64(&f);
	assert_int_equal(EXEC(st, 0x66, 0x0f, 0x57, 0xc1), MB_FB_XORPS);
	assert_int_equal(st.xmm[0][0], 0x00 ^ 0x10);
}

/* ---- ldmxcsr / stmxcsr ---------------------------------------------- */

static void test_mxcsr(void **state)
{
	struct fake f;
	struct mb_fb_state st = k64(&f);
	/* ldmxcsr (%rdi) */
	st.gpr[RDI] = DATA;
	f.page[0] = 0x80, f.page[1] = 0x9f, f.page[2] = 0, f.page[3] = 0;
	assert_int_equal(EXEC(st, 0x0f, 0xae, 0x17), MB_FB_LDMXCSR);
	assert_int_equal(st.mxcsr, 0x9f80);
	assert_true(st.sse_changed);
	assert_int_equal(st.rip, RIP0 + 3);
	/* stmxcsr -4(%rsp) */
	st = k64(&f);
	st.gpr[RSP] = DATA + 0x800;
	assert_int_equal(EXEC(st, 0x0f, 0xae, 0x5c, 0x24, 0xfc), MB_FB_STMXCSR);
	assert_int_equal(f.page[0x7fc], 0x80);
	assert_int_equal(f.page[0x7fd], 0x1f);
	assert_int_equal(f.page[0x7fe], 0);
	assert_int_equal(f.page[0x7ff], 0);
	assert_int_equal(st.rip, RIP0 + 5);
	/* a reserved bit (31:16): #GP(0), MXCSR unchanged */
	st = k64(&f);
	st.gpr[RDI] = DATA;
	f.page[0] = 0x80, f.page[1] = 0x1f, f.page[2] = 1, f.page[3] = 0;
	expect_fault(&st, EXEC(st, 0x0f, 0xae, 0x17), MB_FB_LDMXCSR, 13, true);
	assert_int_equal(st.mxcsr, 0x1f80);
	/* 0F AE /7 is clflush, not ours; register forms are fences */
	st = k64(&f);
	st.gpr[RDI] = DATA;
	assert_int_equal(EXEC(st, 0x0f, 0xae, 0x3f), MB_FB_CLFLUSH);
	assert_false(st.sse_changed);
	st = k64(&f);
	REFUSED(st, 0x0f, 0xae, 0xd0); /* 0F AE D0: not ldmxcsr */
}

/* ---- exceptions before any access ----------------------------------- */

static void test_exceptions(void **state)
{
	struct fake f;
	struct mb_fb_state st = k64(&f);
	/* CR0.TS: #NM (the kernel's lazy FPU switch relies on it) */
	st.cr0 |= CR0_TS;
	st.gpr[RSI] = DATA;
	expect_fault(&st, EXEC(st, 0x66, 0x44, 0x0f, 0x6e, 0xf9), MB_FB_MOVD, 7, false);
	assert_int_equal(lo64(st.xmm[15]), 0x0706050403020100ull + 0xf0f0f0f0f0f0f0f0ull);
	st = k64(&f);
	st.cr0 |= CR0_TS;
	st.gpr[RDI] = DATA;
	expect_fault(&st, EXEC(st, 0x0f, 0xae, 0x1f), MB_FB_STMXCSR, 7, false);
	assert_int_equal(f.accesses, 0);
	/* CR0.EM or no CR4.OSFXSR: #UD, which wins over #NM */
	st = k64(&f);
	st.cr0 |= CR0_EM | CR0_TS;
	expect_fault(&st, EXEC(st, 0x66, 0x0f, 0xef, 0xc0), MB_FB_PXOR, 6, false);
	st = k64(&f);
	st.cr4 &= ~CR4_OSFXSR;
	expect_fault(&st, EXEC(st, 0x0f, 0x28, 0xc1), MB_FB_MOVAPS, 6, false);
	/* LOCK: #UD, counted as an encoding the CPU refuses */
	st = k64(&f);
	expect_fault(&st, EXEC(st, 0xf0, 0x66, 0x0f, 0x6e, 0xc0), MB_FB_UD, 6, false);
	/* a non-canonical address: #GP(0); through RSP/RBP: #SS(0) */
	st = k64(&f);
	st.gpr[RSI] = 0x0000800000000000ull;
	expect_fault(&st, EXEC(st, 0x66, 0x0f, 0x6e, 0x06), MB_FB_MOVD, 13, true);
	st = k64(&f);
	st.gpr[RBP] = 0x0000800000000000ull;
	expect_fault(&st, EXEC(st, 0x66, 0x0f, 0x7e, 0x45, 0x00), MB_FB_MOVD, 12, true);
	assert_int_equal(f.accesses, 0);
}

/* ---- 32-bit protected mode: no REX, eight registers ----------------- */

static void test_prot32(void **state)
{
	struct fake f;
	struct mb_fb_state st = k64(&f);
	st.efer = 0, st.cr0 = 0x11, st.cs.l = 0, st.cs.db = 1, st.rip = 0x100000;
	st.ds = (struct mb_seg){ .base = 0x1000, .limit = 0xffff, .present = 1,
				 .s = 1, .type = 3, .db = 1 };
	st.gpr[RCX] = 0x55aa55aa12345678ull;
	/* movd %ecx,%xmm7 */
	assert_int_equal(EXEC(st, 0x66, 0x0f, 0x6e, 0xf9), MB_FB_MOVD);
	assert_int_equal(lo64(st.xmm[7]), 0x12345678ull);
	assert_int_equal(st.rip, 0x100004);
	/* 0x44 is inc %esp here, not REX: not ours */
	st.rip = 0x100000;
	REFUSED(st, 0x66, 0x44, 0x0f, 0x6e, 0xf9);
	/* movd (%esi),%xmm0 past DS's limit: #GP(0) */
	st.gpr[RSI] = 0xfffe;
	assert_int_equal(EXEC(st, 0x66, 0x0f, 0x6e, 0x06), MB_FB_MOVD);
	assert_true(st.inject);
	assert_int_equal(st.inject_vec, 13);
	assert_true(st.inject_has_err);
	assert_int_equal(st.rip, 0x100000);
	assert_false(st.sse_changed);
	assert_int_equal(f.accesses, 0);
}

/* ---- refusals ------------------------------------------------------- */

static void test_refused(void **state)
{
	struct fake f;
	struct mb_fb_state st = k64(&f);
	/* no XMM state from KVM */
	st.sse_valid = false;
	REFUSED(st, 0x66, 0x44, 0x0f, 0x6e, 0xf9);
	/* user mode */
	st = k64(&f);
	st.ss.dpl = 3, st.cs.dpl = 3;
	REFUSED(st, 0x66, 0x44, 0x0f, 0x6e, 0xf9);
	/* the MMX forms: movd %ecx,%mm7, movq %mm0,%mm1, pxor %mm0,%mm0 */
	st = k64(&f);
	REFUSED(st, 0x0f, 0x6e, 0xf9);
	REFUSED(st, 0x0f, 0x6f, 0xc8);
	REFUSED(st, 0x0f, 0x7f, 0xc8);
	REFUSED(st, 0x0f, 0xef, 0xc0);
	REFUSED(st, 0x0f, 0xd6, 0xc0);
	/* F2 on 28/6F/6E/EF is no instruction of ours; 66 with F3 */
	REFUSED(st, 0xf2, 0x0f, 0x28, 0xc1);
	REFUSED(st, 0xf2, 0x0f, 0x6f, 0xc1);
	REFUSED(st, 0xf3, 0x0f, 0x6e, 0xc1);
	REFUSED(st, 0xf2, 0x0f, 0xef, 0xc1);
	REFUSED(st, 0x66, 0xf3, 0x0f, 0x7e, 0xc1);
	REFUSED(st, 0xf3, 0x0f, 0xae, 0x17); /* F3 0F AE /2: wrfsbase's row */
	/* truncated: in the ModRM, the SIB, the displacement */
	REFUSED(st, 0x66, 0x0f, 0x6e);
	REFUSED(st, 0x66, 0x0f, 0x6e, 0x04);
	REFUSED(st, 0x66, 0x0f, 0x6e, 0x46);
	REFUSED(st, 0x66, 0x0f, 0x6e, 0x05, 0x00, 0x10);
	/* memory the callbacks refuse: a load, a store to read-only memory */
	st = k64(&f);
	st.gpr[RSI] = DATA + 4096;
	REFUSED(st, 0x66, 0x0f, 0x6e, 0x06);
	st = k64(&f);
	st.gpr[RDI] = DATA;
	f.ro = true;
	REFUSED(st, 0x66, 0x0f, 0x7e, 0x07);
	REFUSED(st, 0x0f, 0x11, 0x07);
	REFUSED(st, 0x0f, 0xae, 0x1f);
	assert_int_equal(f.page[0], 0xa0);
	/* no callbacks at all */
	st = k64(&f);
	st.read = NULL, st.write = NULL;
	st.gpr[RSI] = DATA;
	REFUSED(st, 0x0f, 0x10, 0x06);
	REFUSED(st, 0x0f, 0x11, 0x06);
	/* opcodes next to ours */
	st = k64(&f);
	REFUSED(st, 0x66, 0x0f, 0x6d, 0xc1); /* punpckhqdq */
	REFUSED(st, 0x66, 0x0f, 0xeb, 0xc1); /* por */
	REFUSED(st, 0x0f, 0x58, 0xc1);       /* addps */
}

static void test_wants_names(void **state)
{
	assert_true(mb_fallback_name(MB_FB_MOVD) != NULL);
	assert_string_equal(mb_fallback_name(MB_FB_MOVD), "movd");
	assert_string_equal(mb_fallback_name(MB_FB_MOVQ), "movq");
	assert_string_equal(mb_fallback_name(MB_FB_MOVSS), "movss");
	assert_string_equal(mb_fallback_name(MB_FB_MOVSD), "movsd");
	assert_string_equal(mb_fallback_name(MB_FB_MOVUPS), "movups");
	assert_string_equal(mb_fallback_name(MB_FB_MOVAPS), "movaps");
	assert_string_equal(mb_fallback_name(MB_FB_MOVDQU), "movdqu");
	assert_string_equal(mb_fallback_name(MB_FB_MOVDQA), "movdqa");
	assert_string_equal(mb_fallback_name(MB_FB_PXOR), "pxor");
	assert_string_equal(mb_fallback_name(MB_FB_XORPS), "xorps");
	assert_string_equal(mb_fallback_name(MB_FB_LDMXCSR), "ldmxcsr");
	assert_string_equal(mb_fallback_name(MB_FB_STMXCSR), "stmxcsr");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_movd_movq_gpr),
		cmocka_unit_test(test_movd_movq_mem),
		cmocka_unit_test(test_movss_movsd),
		cmocka_unit_test(test_moves128),
		cmocka_unit_test(test_xor),
		cmocka_unit_test(test_mxcsr),
		cmocka_unit_test(test_exceptions),
		cmocka_unit_test(test_prot32),
		cmocka_unit_test(test_refused),
		cmocka_unit_test(test_wants_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

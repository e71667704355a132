/*
 * The emulation fallback (../shared/docs/kvm-here.md, "Some instructions
 * cannot be emulated"). On hosts whose KVM runs guest kernel mode in its
 * instruction emulator, a few instructions end KVM_RUN with
 * KVM_INTERNAL_ERROR_EMULATION. run.c calls mb_fallback_try() on exactly
 * those exits; it completes the instruction in userspace or returns false,
 * and run() then ends with reason "error" and the instruction bytes.
 *
 * Completed here (Intel SDM vol. 2 instruction pages cited per case):
 *   int3          CC            RIP += 1, inject #BP (a trap: frame RIP is
 *                               the next instruction, what Linux expects)
 *   clac / stac   0F 01 CA/CB   RFLAGS.AC = 0/1, RIP += 3 (CPL 0 only)
 *   popcnt        F3 [REX] 0F B8 /r, register source only
 *   fwait         9B            no-op (or #NM when CR0.MP and CR0.TS)
 *   syscall       a clac that is really a broken user `syscall`: see
 *                 syscall_entry() below.
 *   xgetbv        0F 01 D0      XCR0 (#UD without CR4.OSXSAVE, #GP for
 *                               ECX != 0)
 *   clflush, clflushopt, clwb   [66] 0F AE /7, 66 0F AE /6, memory
 *                               operand: the address checked, no-op
 *   movbe         0F 38 F0/F1 with a register operand: #UD
 *   int n         CD ib in real mode (IVT), 32-bit protected mode
 *                 (interrupt/trap gates of 16 and 32 bits, task gates,
 *                 whose late faults are raised in the new task),
 *                 virtual-8086 mode (IOPL, VME redirection) and 64-bit
 *                 mode; compatibility mode is refused.
 *   SSE moves     movd/movq/movss/movsd/movups/movaps/movdqu/movdqa, pxor,
 *                 xorps, ldmxcsr/stmxcsr: core/fallback_sse.c, tried first.
 * Everything else, including these opcodes with extra or different
 * prefixes, a truncated byte string, or guest memory the callbacks cannot
 * read or write, is refused: the registers are left as they were.
 *
 * The file has two halves: mb_fallback_exec(), a pure decoder/executor on
 * struct mb_fb_state (unit-tested on hand-made states), and
 * mb_fallback_try(), which moves that state in and out of KVM.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "core/fallback.h"
#include "core/fallback_sse.h"
#include "core/internal.h"

#define RF_CF (1ull << 0)
#define RF_PF (1ull << 2)
#define RF_AF (1ull << 4)
#define RF_ZF (1ull << 6)
#define RF_SF (1ull << 7)
#define RF_OF (1ull << 11)
#define RF_IOPL (3ull << 12)
#define RF_RF (1ull << 16)
#define RF_VM (1ull << 17)
#define RF_AC (1ull << 18)
#define RF_FIXED (1ull << 1) /* always 1 */

#define CR0_PE (1ull << 0)
#define CR0_MP (1ull << 1)
#define CR0_TS (1ull << 3)
#define EFER_SCE (1ull << 0)
#define EFER_LMA (1ull << 10)

#define MSR_STAR 0xc0000081u
#define MSR_LSTAR 0xc0000082u
#define MSR_SFMASK 0xc0000084u

enum { RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8, R9, R10, R11 };

enum { VEC_BP = 3, VEC_NM = 7, VEC_PF = 14 };

static const char *const names[MB_FB_KINDS] = {
	[MB_FB_INT3] = "int3",     [MB_FB_CLAC] = "clac",
	[MB_FB_STAC] = "stac",     [MB_FB_POPCNT] = "popcnt",
	[MB_FB_FWAIT] = "fwait",   [MB_FB_SYSCALL] = "syscall",
	[MB_FB_XGETBV] = "xgetbv", [MB_FB_CLFLUSH] = "clflush",
	[MB_FB_CLFLUSHOPT] = "clflushopt", [MB_FB_CLWB] = "clwb",
	[MB_FB_UD] = "ud",         [MB_FB_INT] = "int",
	[MB_FB_INT_TASK] = "int_task", [MB_FB_INT_VM86] = "int_vm86",
	/* fallback_sse.c */
	[MB_FB_MOVD] = "movd", [MB_FB_MOVQ] = "movq", [MB_FB_MOVSS] = "movss",
	[MB_FB_MOVSD] = "movsd", [MB_FB_MOVUPS] = "movups",
	[MB_FB_MOVAPS] = "movaps", [MB_FB_MOVDQU] = "movdqu",
	[MB_FB_MOVDQA] = "movdqa", [MB_FB_PXOR] = "pxor",
	[MB_FB_XORPS] = "xorps", [MB_FB_LDMXCSR] = "ldmxcsr",
	[MB_FB_STMXCSR] = "stmxcsr",
};

const char *mb_fallback_name(enum mb_fb_insn k)
{
	return k > MB_FB_NONE && k < MB_FB_KINDS ? names[k] : NULL;
}

/* ---- the pure executor ------------------------------------------------ */

static uint64_t le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* 64-bit mode needs IA32_EFER.LMA and CS.L (SDM vol. 3, 5.2.1); KVM's own
 * emulator decides the same way. */
static bool mode64(const struct mb_fb_state *st)
{
	return (st->efer & EFER_LMA) && st->cs.l;
}

/* Default operand size in bits: 64-bit code still defaults to 32. */
static unsigned default_size(const struct mb_fb_state *st)
{
	if (!(st->cr0 & CR0_PE) || (st->rflags & RF_VM))
		return 16;
	return mode64(st) || st->cs.db ? 32 : 16;
}

/* CPL as KVM computes it: 0 in real mode, 3 in virtual-8086, else SS.DPL. */
static unsigned cpl(const struct mb_fb_state *st)
{
	if (!(st->cr0 & CR0_PE))
		return 0;
	if (st->rflags & RF_VM)
		return 3;
	return st->ss.dpl;
}

/* RIP after len bytes; outside 64-bit mode EIP wraps at 32 bits (as in
 * KVM's emulator). The RF flag is cleared by a completed instruction. */
static void advance(struct mb_fb_state *st, unsigned len)
{
	st->rip += len;
	if (!mode64(st))
		st->rip &= 0xffffffffu;
	st->rflags &= ~RF_RF;
}

/* POPCNT (SDM vol. 2B, "POPCNT"): F3 is mandatory, 66 selects 16-bit
 * operands, REX (64-bit mode only, right before 0F) extends reg/rm and
 * REX.W selects 64 bits. Only mod == 3 (register source) is handled.
 * Flags: OF SF AF CF PF cleared, ZF = (source == 0). */
static enum mb_fb_insn popcnt(struct mb_fb_state *st, const uint8_t *p,
			      unsigned n)
{
	bool rep = false, osz = false;
	unsigned i = 0, rex = 0;
	for (; i < n; i++) {
		if (p[i] == 0xf3 && !rep)
			rep = true;
		else if (p[i] == 0x66 && !osz)
			osz = true;
		else
			break;
	}
	if (!rep)
		return MB_FB_NONE;
	if (mode64(st) && i < n && (p[i] & 0xf0) == 0x40)
		rex = p[i++];
	if (i + 3 > n || p[i] != 0x0f || p[i + 1] != 0xb8 || p[i + 2] >> 6 != 3)
		return MB_FB_NONE;
	unsigned modrm = p[i + 2];
	unsigned dst = (modrm >> 3 & 7) | (rex & 4) << 1; /* REX.R */
	unsigned src = (modrm & 7) | (rex & 1) << 3;      /* REX.B */
	unsigned size = default_size(st);
	if (rex & 8)
		size = 64; /* REX.W wins over 66 */
	else if (osz)
		size = size == 16 ? 32 : 16;

	uint64_t v = st->gpr[src];
	if (size < 64)
		v &= (1ull << size) - 1;
	uint64_t cnt = (uint64_t)__builtin_popcountll(v);
	if (size == 16) /* 16-bit writes keep bits 63:16 */
		st->gpr[dst] = (st->gpr[dst] & ~0xffffull) | cnt;
	else /* 32-bit writes zero-extend, 64-bit writes all */
		st->gpr[dst] = cnt;
	st->rflags &= ~(RF_OF | RF_SF | RF_ZF | RF_AF | RF_CF | RF_PF);
	if (v == 0)
		st->rflags |= RF_ZF;
	advance(st, i + 3);
	return MB_FB_POPCNT;
}

/*
 * The broken `syscall` (kvm-here.md): this host loads RIP = LSTAR, RCX =
 * return address and R11 = RFLAGS, but leaves the vCPU at CPL 3, so fetching
 * the kernel's entry code faults. The #PF is delivered normally: on the
 * kernel stack the CPU pushes SS, RSP, RFLAGS, CS, RIP (= LSTAR), error code
 * (SDM vol. 3, 6.14.2), and the kernel's #PF entry begins with `clac`
 * (Linux: idtentry in arch/x86/entry/entry_64.S), which exits to us with
 * RSP pointing at the error code. We then finish what SYSCALL should have
 * done (SDM vol. 2B, "SYSCALL", Operation):
 *   CS = STAR[47:32] & ~3 (flat 64-bit code, DPL 0), SS = STAR[47:32] + 8
 *   (flat data, DPL 0), RIP = LSTAR, RFLAGS = RFLAGS & ~SFMASK, RSP
 *   unchanged by SYSCALL, so the user RSP saved in the frame.
 * RCX and R11 are already right. Note RCX cannot be checked against the
 * frame: the saved RIP is LSTAR (where the fault was), the return address
 * exists only in RCX.
 *
 * When to engage, checked in this order (cheap first):
 *   - 64-bit mode at CPL 0, EFER.SCE set, LSTAR non-zero;
 *   - frame: saved RIP == LSTAR, saved CS and SS have RPL 3;
 *   - this clac is the first instruction of the IDT's #PF handler (after
 *     an optional endbr64). Without this an interrupt arriving while the
 *     vCPU sat at LSTAR in user mode would match too: Linux's IRQ stubs
 *     push a vector where #PF has its error code, then run the same clac.
 *   - R11 agrees with the frame's RFLAGS on every bit SFMASK does not
 *     clear (a host may or may not have applied SFMASK before the fault),
 *     and on IOPL, so that user code jumping to LSTAR with a forged R11
 *     cannot make the kernel's sysret hand it IOPL 3.
 * Returns false (an ordinary clac) when any check fails.
 */
static bool syscall_entry(struct mb_fb_state *st)
{
	if (!st->read || !mode64(st) || cpl(st) != 0 ||
	    !(st->efer & EFER_SCE) || !st->lstar)
		return false;
	uint8_t f[48]; /* error code, RIP, CS, RFLAGS, RSP, SS */
	if (st->read(st->ctx, st->gpr[RSP], f, sizeof f))
		return false;
	uint64_t rip = le64(f + 8), cs = le64(f + 16), rflags = le64(f + 24);
	uint64_t rsp = le64(f + 32), ss = le64(f + 40);
	if (rip != st->lstar || (cs & 3) != 3 || (ss & 3) != 3)
		return false;

	uint8_t g[16]; /* 64-bit IDT gate (SDM vol. 3, figure 6-8) */
	if (st->read(st->ctx, st->idt_base + VEC_PF * 16, g, sizeof g))
		return false;
	uint64_t handler = (uint64_t)g[0] | (uint64_t)g[1] << 8 |
			   (uint64_t)g[6] << 16 | (uint64_t)g[7] << 24 |
			   (le64(g + 8) & 0xffffffffu) << 32;
	if (st->rip != handler) {
		static const uint8_t endbr64[4] = { 0xf3, 0x0f, 0x1e, 0xfa };
		uint8_t e[4];
		if (st->rip != handler + 4 ||
		    st->read(st->ctx, handler, e, sizeof e) ||
		    memcmp(e, endbr64, sizeof e))
			return false;
	}
	uint64_t agree = ~(st->sfmask | RF_RF) | RF_IOPL;
	if ((rflags ^ st->gpr[R11]) & agree)
		return false;

	uint16_t sel = (uint16_t)(st->star >> 32);
	st->cs = (struct mb_seg){ .selector = sel & 0xfffc, .limit = 0xffffffff,
				  .type = 11, .present = 1, .s = 1, .l = 1,
				  .g = 1 };
	st->ss = (struct mb_seg){ .selector = (uint16_t)(sel + 8),
				  .limit = 0xffffffff, .type = 3, .present = 1,
				  .s = 1, .db = 1, .g = 1 };
	st->rip = st->lstar;
	st->gpr[RSP] = rsp;
	st->rflags = (rflags & ~st->sfmask & ~RF_RF) | RF_FIXED;
	st->segs_changed = true;
	return true;
}

/* ---- exceptions, prefixes, memory operands ------------------------------ */

enum { VEC_DB = 1, VEC_UD = 6, VEC_TS = 10, VEC_NP = 11, VEC_SS = 12, VEC_GP = 13 };

#define CR4_OSXSAVE (1ull << 18)
#define CR4_LA57 (1ull << 12)
#define RF_TF (1ull << 8)
#define RF_IF (1ull << 9)
#define RF_NT (1ull << 14)
#define DR6_BT (1ull << 15) /* a #DB from a TSS's T bit (vol. 3, 17.2.3) */

/* A fault: RIP stays at the instruction, the exception is delivered. */
static void fault(struct mb_fb_state *st, uint8_t vec, bool has_err,
		  uint32_t err)
{
	st->inject = true, st->inject_vec = vec;
	st->inject_has_err = has_err, st->inject_err = err;
	st->rflags &= ~RF_RF; /* the caller hands RFLAGS back as is */
}

/* Legacy prefixes and REX (SDM vol. 2A, 2.1.1 and 2.2.1). A REX not
 * right before the opcode is ignored by the CPU; we refuse it instead. */
struct prefixes {
	unsigned len;              /* bytes of prefixes */
	bool osz, asz, rep, repne, lock;
	int seg;                   /* -1, or 0 es 1 cs 2 ss 3 ds 4 fs 5 gs */
	unsigned rex;
};

static bool scan_prefixes(const struct mb_fb_state *st, const uint8_t *p,
			  unsigned n, struct prefixes *px)
{
	*px = (struct prefixes){ .seg = -1 };
	unsigned i = 0;
	for (; i < n && i < 14; i++) {
		switch (p[i]) {
		case 0x66: px->osz = true; continue;
		case 0x67: px->asz = true; continue;
		case 0xf3: px->rep = true; continue;
		case 0xf2: px->repne = true; continue;
		case 0xf0: px->lock = true; continue;
		case 0x26: px->seg = 0; continue;
		case 0x2e: px->seg = 1; continue;
		case 0x36: px->seg = 2; continue;
		case 0x3e: px->seg = 3; continue;
		case 0x64: px->seg = 4; continue;
		case 0x65: px->seg = 5; continue;
		}
		break;
	}
	if (mode64(st) && i < n && (p[i] & 0xf0) == 0x40)
		px->rex = p[i++];
	px->len = i;
	return i < n;
}

static const struct mb_seg *segment(const struct mb_fb_state *st, int seg)
{
	const struct mb_seg *t[6] = { &st->es, &st->cs, &st->ss,
				      &st->ds, &st->fs, &st->gs };
	return t[seg];
}

/* A ModRM memory operand (SDM vol. 2A, 2.1.5, tables 2-1 to 2-3): its
 * linear address, the segment it uses and the bytes ModRM..disp take. */
struct memop {
	uint64_t linear, ea;
	int seg;
	unsigned len;
};

static bool decode_mem(const struct mb_fb_state *st, const struct prefixes *px,
		       const uint8_t *p, unsigned n, uint64_t next_rip_base,
		       struct memop *mo)
{
	if (n < 1 || p[0] >> 6 == 3)
		return false;
	unsigned mod = p[0] >> 6, rm = p[0] & 7, i = 1;
	unsigned asz = mode64(st) ? (px->asz ? 32 : 64)
				  : (default_size(st) == 32) != px->asz ? 32 : 16;
	uint64_t ea = 0;
	int seg = 3; /* DS */
	int64_t disp = 0;
	unsigned dlen = 0;
	bool ripr = false;
	if (asz == 16) {
		static const int b[8] = { RBX, RBX, RBP, RBP, RSI, RDI, RBP, RBX };
		static const int x[8] = { RSI, RDI, RSI, RDI, -1, -1, -1, -1 };
		if (mod == 0 && rm == 6) {
			dlen = 2;
		} else {
			ea = st->gpr[b[rm]] + (x[rm] >= 0 ? st->gpr[x[rm]] : 0);
			if (rm == 2 || rm == 3 || rm == 6)
				seg = 2;
			dlen = mod == 1 ? 1 : mod == 2 ? 2 : 0;
		}
	} else {
		unsigned base = rm | (px->rex & 1) << 3;
		if (rm == 4) { /* SIB */
			if (i >= n)
				return false;
			unsigned sib = p[i++], ss = sib >> 6;
			unsigned idx = (sib >> 3 & 7) | (px->rex & 2) << 2;
			base = (sib & 7) | (px->rex & 1) << 3;
			if (idx != 4)
				ea += st->gpr[idx] << ss;
			if ((sib & 7) == 5 && mod == 0) {
				dlen = 4;
				base = 16; /* none */
			}
		} else if (rm == 5 && mod == 0) {
			dlen = 4;
			base = 16;
			ripr = mode64(st);
		}
		if (base < 16) {
			ea += st->gpr[base];
			if (base == RSP || base == RBP)
				seg = 2;
		}
		if (mod == 1)
			dlen = 1;
		else if (mod == 2)
			dlen = 4;
	}
	if (i + dlen > n)
		return false;
	if (dlen == 1)
		disp = (int8_t)p[i];
	else if (dlen == 2)
		disp = (int16_t)(p[i] | p[i + 1] << 8);
	else if (dlen == 4)
		disp = (int32_t)((uint32_t)p[i] | (uint32_t)p[i + 1] << 8 |
				 (uint32_t)p[i + 2] << 16 | (uint32_t)p[i + 3] << 24);
	i += dlen;
	ea += (uint64_t)disp;
	if (ripr) /* relative to the next instruction: known once decoded */
		ea += next_rip_base;
	if (asz < 64)
		ea &= (1ull << asz) - 1;
	if (px->seg >= 0)
		seg = px->seg;
	mo->seg = seg, mo->ea = ea, mo->len = i;
	if (mode64(st)) /* only FS and GS have a base (SDM vol. 3, 3.4.4) */
		mo->linear = ea + (seg >= 4 ? segment(st, seg)->base : 0);
	else
		mo->linear = (segment(st, seg)->base + ea) & 0xffffffffu;
	return true;
}

static bool canonical(const struct mb_fb_state *st, uint64_t la)
{
	unsigned bits = st->cr4 & CR4_LA57 ? 57 : 48;
	int64_t s = (int64_t)(la << (64 - bits)) >> (64 - bits);
	return (uint64_t)s == la;
}

/* The address checks a memory access makes before touching memory: #GP(0)
 * or, through SS, #SS(0) (SDM vol. 3, 6.15 "#GP" / "#SS"). Returns false
 * after queueing the fault. Outside 64-bit mode: an unusable segment and
 * the (expand-up) limit; real mode keeps only the limit. */
static bool check_access(struct mb_fb_state *st, const struct memop *mo,
			 unsigned size)
{
	uint8_t vec = mo->seg == 2 ? VEC_SS : VEC_GP;
	if (mode64(st)) {
		if (canonical(st, mo->linear) &&
		    canonical(st, mo->linear + size - 1))
			return true;
	} else {
		const struct mb_seg *s = segment(st, mo->seg);
		bool prot = (st->cr0 & CR0_PE) && !(st->rflags & RF_VM);
		if ((!prot || s->present) && mo->ea + size - 1 <= s->limit)
			return true;
	}
	fault(st, vec, (st->cr0 & CR0_PE) != 0, 0);
	return false;
}

/* ---- xgetbv, the cache-line flushes, movbe ------------------------------ */

/* XGETBV (SDM vol. 2C): #UD unless CR4.OSXSAVE (or with LOCK/66/F2/F3,
 * refused before we get here); ECX = 0 reads XCR0; ECX = 1 (XINUSE) only
 * exists with CPUID.(EAX=0DH,ECX=1):EAX[2], which moonbox's CPUID policy
 * does not promise: #GP(0) like every other index. */
static enum mb_fb_insn xgetbv(struct mb_fb_state *st)
{
	if (!(st->cr4 & CR4_OSXSAVE)) {
		fault(st, VEC_UD, false, 0);
		return MB_FB_XGETBV;
	}
	if ((uint32_t)st->gpr[RCX] != 0) {
		fault(st, VEC_GP, true, 0);
		return MB_FB_XGETBV;
	}
	st->gpr[RAX] = (uint32_t)st->xcr0;
	st->gpr[RDX] = st->xcr0 >> 32;
	advance(st, 3);
	return MB_FB_XGETBV;
}

/* The 0F-escape instructions with prefixes or operands: clflush,
 * clflushopt, clwb (SDM vol. 2A): a memory operand is required (mod 3 is
 * sfence/mfence/tpause territory: refused), the address is checked like
 * any access, then nothing: this VMM has no cache to write back, and
 * guest memory is coherent with every device model.
 * MOVBE (SDM vol. 2B) has no register form: 0F 38 F0/F1 with mod 3 (and
 * no F2, which makes it crc32) raises #UD. */
static enum mb_fb_insn escaped(struct mb_fb_state *st, const uint8_t *insn,
			       unsigned n)
{
	struct prefixes px;
	if (!scan_prefixes(st, insn, n, &px) || px.lock)
		return MB_FB_NONE;
	const uint8_t *p = insn + px.len;
	unsigned left = n - px.len;
	if (left < 3 || p[0] != 0x0f)
		return MB_FB_NONE;
	if (p[1] == 0xae && !px.rep && !px.repne) {
		unsigned reg = p[2] >> 3 & 7;
		enum mb_fb_insn k = reg == 7 ? (px.osz ? MB_FB_CLFLUSHOPT
						       : MB_FB_CLFLUSH)
			: reg == 6 && px.osz ? MB_FB_CLWB : MB_FB_NONE;
		struct memop mo;
		if (k == MB_FB_NONE || !decode_mem(st, &px, p + 2, left - 2, 0, &mo))
			return MB_FB_NONE;
		unsigned len = px.len + 2 + mo.len;
		if (!decode_mem(st, &px, p + 2, left - 2, st->rip + len, &mo))
			return MB_FB_NONE;
		if (check_access(st, &mo, 1))
			advance(st, len);
		return k;
	}
	if (left >= 4 && p[1] == 0x38 && (p[2] == 0xf0 || p[2] == 0xf1) &&
	    p[3] >> 6 == 3 && !px.repne && !px.rep) {
		fault(st, VEC_UD, false, 0);
		return MB_FB_UD;
	}
	return MB_FB_NONE;
}

/* ---- int n -------------------------------------------------------------- */

static uint16_t le16p(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

static void put_le(uint8_t *p, uint64_t v, unsigned bytes)
{
	for (unsigned i = 0; i < bytes; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Real-address mode (SDM vol. 2A, "INT n", REAL-ADDRESS-MODE): the IVT
 * entry is offset:segment at IDTR.base + 4n (it must fit the IDT limit,
 * else #GP); push FLAGS, CS, IP on SS:SP, clear IF, TF and AC, far jump. */
static enum mb_fb_insn int_real(struct mb_fb_state *st, unsigned vec,
				unsigned len)
{
	if (vec * 4 + 3 > st->idt_limit) {
		fault(st, VEC_GP, false, 0);
		return MB_FB_INT;
	}
	uint8_t e[4];
	if (st->read(st->ctx, st->idt_base + vec * 4, e, 4))
		return MB_FB_NONE;
	uint16_t ip = (uint16_t)(st->rip + len), sp = (uint16_t)st->gpr[RSP];
	uint16_t words[3] = { ip, st->cs.selector, (uint16_t)st->rflags };
	for (unsigned i = 0; i < 3; i++) { /* IP lowest, FLAGS highest */
		uint8_t b[2];
		put_le(b, words[i], 2);
		uint16_t at = (uint16_t)(sp - 6 + 2 * i);
		if (st->write(st->ctx, st->ss.base + at, b, 2))
			return MB_FB_NONE;
	}
	st->gpr[RSP] = (st->gpr[RSP] & ~0xffffull) | (uint16_t)(sp - 6);
	st->rflags &= ~(RF_IF | RF_TF | RF_AC | RF_RF);
	uint16_t sel = le16p(e + 2);
	st->cs.selector = sel;
	st->cs.base = (uint64_t)sel << 4;
	st->rip = le16p(e);
	st->segs_changed = true;
	return MB_FB_INT;
}

/* A descriptor from the GDT (an LDT selector is refused: false, nothing
 * queued). *ok = false with a queued #GP(sel) when it lies past the limit. */
static bool gdt_entry(struct mb_fb_state *st, uint16_t sel, uint8_t d[8],
		      bool *ok)
{
	*ok = false;
	if (sel & 4)
		return false;
	if ((sel | 7u) > st->gdt_limit) {
		fault(st, VEC_GP, true, sel & 0xfffc);
		return true;
	}
	if (st->read(st->ctx, st->gdt_base + (sel & ~7u), d, 8))
		return false;
	*ok = true;
	return true;
}

/* 64-bit mode (SDM vol. 3, 6.14 "Exception and interrupt handling in 64-bit
 * mode"; vol. 2A "INT n", IA-32e mode): 16-byte gates, only interrupt (0xE)
 * and trap (0xF) gates; for a software interrupt the gate DPL must be >= CPL;
 * the target must be a present 64-bit code segment of DPL <= CPL. A
 * non-conforming target at a lower DPL changes privilege: RSP from
 * TSS.RSPn, SS = null selector with RPL n. A non-zero IST always switches
 * to TSS.ISTn. RSP is aligned down to 16, then SS, RSP, RFLAGS, CS, RIP
 * are pushed (no error code for int n). TF, NT, RF, VM are cleared, and IF
 * too through an interrupt gate. Errors: #GP(vec*8+2) for the gate (IDT
 * bit set), #NP for a gate not present, #GP/#NP(selector) for the target. */
static enum mb_fb_insn int_long(struct mb_fb_state *st, unsigned vec,
				unsigned len)
{
	uint32_t gerr = vec * 8 + 2;
	unsigned pl = cpl(st);
	if (vec * 16 + 15 > st->idt_limit) {
		fault(st, VEC_GP, true, gerr);
		return MB_FB_INT;
	}
	uint8_t g[16];
	if (st->read(st->ctx, st->idt_base + vec * 16, g, 16))
		return MB_FB_NONE;
	unsigned type = g[5] & 0xf, gdpl = g[5] >> 5 & 3, ist = g[4] & 7;
	if ((type != 0xe && type != 0xf) || gdpl < pl) {
		fault(st, VEC_GP, true, gerr);
		return MB_FB_INT;
	}
	if (!(g[5] & 0x80)) {
		fault(st, VEC_NP, true, gerr);
		return MB_FB_INT;
	}
	uint64_t target = (uint64_t)le16p(g) | (uint64_t)le16p(g + 6) << 16 |
			  (le64(g + 8) & 0xffffffffu) << 32;
	uint16_t sel = le16p(g + 2);
	if ((sel & 0xfffc) == 0) {
		fault(st, VEC_GP, true, 0);
		return MB_FB_INT;
	}
	uint8_t d[8];
	bool ok;
	if (!gdt_entry(st, sel, d, &ok))
		return MB_FB_NONE;
	if (!ok)
		return MB_FB_INT;
	unsigned acc = d[5], flags = d[6] >> 4, ddpl = acc >> 5 & 3;
	bool code = (acc & 0x18) == 0x18, conforming = acc & 4;
	bool l = flags & 2, db = flags & 4;
	if (!code || !l || db || ddpl > pl) {
		fault(st, VEC_GP, true, sel & 0xfffc);
		return MB_FB_INT;
	}
	if (!(acc & 0x80)) {
		fault(st, VEC_NP, true, sel & 0xfffc);
		return MB_FB_INT;
	}
	unsigned npl = conforming ? pl : ddpl;
	uint64_t rsp = st->gpr[RSP];
	if (ist || npl < pl) {
		uint8_t t[8];
		uint64_t off = ist ? 0x24 + 8 * (ist - 1) : 4 + 8 * npl;
		if (off + 7 > st->tr.limit) { /* vol. 2A "INT n", IA-32e */
			fault(st, VEC_TS, true, st->tr.selector & 0xfffc);
			return MB_FB_INT;
		}
		if (st->read(st->ctx, st->tr.base + off, t, 8))
			return MB_FB_NONE;
		rsp = le64(t);
	}
	if (!canonical(st, rsp)) {
		fault(st, npl < pl ? VEC_GP : VEC_SS, true, 0);
		return MB_FB_INT;
	}
	rsp &= ~0xfull;
	uint8_t f[40]; /* RIP CS RFLAGS RSP SS, lowest address first */
	put_le(f, st->rip + len, 8);
	put_le(f + 8, st->cs.selector, 8);
	put_le(f + 16, st->rflags & ~RF_RF, 8);
	put_le(f + 24, st->gpr[RSP], 8);
	put_le(f + 32, st->ss.selector, 8);
	if (st->write(st->ctx, rsp - 40, f, 40))
		return MB_FB_NONE;
	st->gpr[RSP] = rsp - 40;
	st->rflags &= ~(RF_TF | RF_NT | RF_RF | RF_VM);
	if (type == 0xe)
		st->rflags &= ~RF_IF;
	st->cs = (struct mb_seg){
		.selector = (uint16_t)((sel & 0xfffc) | npl), .limit = 0xffffffff,
		.type = acc & 0xf, .present = 1, .dpl = ddpl, .s = 1, .l = 1,
		.g = 1 };
	if (npl < pl)
		st->ss = (struct mb_seg){ .selector = (uint16_t)npl,
					  .limit = 0xffffffff, .type = 3,
					  .present = 1, .dpl = npl, .s = 1,
					  .db = 1, .g = 1 };
	st->rip = target;
	st->segs_changed = true;
	return MB_FB_INT;
}

/* A segment register's hidden part from a GDT descriptor (SDM vol. 3,
 * 3.4.5 "Segment Descriptors"). Loading a segment register sets the
 * descriptor's accessed bit (3.4.5.1), so the hidden type has it. */
static struct mb_seg seg_of(const uint8_t d[8], uint16_t sel)
{
	uint32_t limit = (uint32_t)(d[0] | d[1] << 8 | (d[6] & 0xf) << 16);
	bool g = d[6] & 0x80;
	return (struct mb_seg){
		.selector = sel,
		.base = (uint64_t)(d[2] | d[3] << 8 | d[4] << 16) | (uint64_t)d[7] << 24,
		.limit = g ? limit << 12 | 0xfff : limit, .type = (d[5] & 0xf) | 1,
		.present = 1, .dpl = d[5] >> 5 & 3, .s = 1, .db = (d[6] & 0x40) != 0,
		.g = g };
}

static uint32_t le32p(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

/* A TSS in TR or in a descriptor: types 1/3 are 16-bit (available/busy),
 * 9/11 32-bit (SDM vol. 3, 7.2.2 "TSS Descriptor"). */
static bool tss16(unsigned type) { return (type & 0xd) == 1; }

/* What a step of int n decided: go on, stop with a fault queued (the
 * instruction is complete), or refuse (the run ends with "error"). */
enum step { GO, FAULTED, REFUSE };

/* SSn:ESPn for privilege level npl from the current TSS (vol. 2A "INT n",
 * PROTECTED-MODE and INTERRUPT-FROM-VIRTUAL-8086-MODE): a 32-bit TSS has
 * ESPn at 4 + 8n and SSn at 8 + 8n, a 16-bit one SPn at 2 + 4n and SSn at
 * 4 + 4n; the pair must lie within TR's limit (#TS(TR)). SSn must be
 * non-null with RPL n, within the GDT (#TS(SSn); an LDT one is refused),
 * a writable data segment of DPL n (#TS(SSn)) and present (#SS(SSn)). */
static enum step tss_stack(struct mb_fb_state *st, unsigned npl,
			   struct mb_seg *ss, uint32_t *esp)
{
	bool t16 = tss16(st->tr.type);
	unsigned off = t16 ? 2 + 4 * npl : 4 + 8 * npl, size = t16 ? 4 : 6;
	if (off + size - 1 > st->tr.limit) {
		fault(st, VEC_TS, true, st->tr.selector & 0xfffc);
		return FAULTED;
	}
	uint8_t t[8], sd[8];
	if (st->read(st->ctx, st->tr.base + off, t, size))
		return REFUSE;
	uint16_t nss = le16p(t + size - 2);
	*esp = t16 ? le16p(t) : le32p(t);
	if ((nss & 0xfffc) == 0 || (nss & 3) != npl ||
	    (!(nss & 4) && (nss | 7u) > st->gdt_limit)) {
		fault(st, VEC_TS, true, nss & 0xfffc);
		return FAULTED;
	}
	bool ok;
	if (!gdt_entry(st, nss, sd, &ok))
		return REFUSE;
	if (!ok)
		return FAULTED;
	if ((sd[5] & 0x1a) != 0x12 || (sd[5] >> 5 & 3) != npl) {
		fault(st, VEC_TS, true, nss & 0xfffc);
		return FAULTED;
	}
	if (!(sd[5] & 0x80)) {
		fault(st, VEC_SS, true, nss & 0xfffc);
		return FAULTED;
	}
	*ss = seg_of(sd, nss);
	return GO;
}

/* A virtual-8086 segment: base selector * 16, 64 KiB, DPL 3 (vol. 3,
 * 20.1.1; what VMX requires of it, 27.3.1.2). */
static struct mb_seg seg_vm86(uint16_t sel)
{
	return (struct mb_seg){ .selector = sel, .base = (uint64_t)sel << 4,
				.limit = 0xffff, .type = 3, .present = 1,
				.dpl = 3, .s = 1 };
}

/* What looking a selector up found: its descriptor, nothing (a null
 * selector, an index past the table's limit, an LDT selector without a
 * usable LDT: the selector is invalid), or memory the callbacks cannot
 * read (refused). */
enum found { FOUND, NOTHING, UNREADABLE };

/* A new task's selector in the GDT or, TI = 1, in the new task's LDT
 * (loaded just before: vol. 3, 7.3 step 12); ldt NULL when that LDT
 * failed or is null. */
static enum found lookup(const struct mb_fb_state *st, const struct mb_seg *ldt,
			 uint16_t sel, uint8_t d[8])
{
	uint64_t base = st->gdt_base, limit = st->gdt_limit;
	if (sel & 4) {
		if (!ldt)
			return NOTHING;
		base = ldt->base, limit = ldt->limit;
	} else if ((sel & 0xfffc) == 0) {
		return NOTHING;
	}
	if ((sel | 7u) > limit)
		return NOTHING;
	return st->read(st->ctx, base + (sel & ~7u), d, 8) ? UNREADABLE : FOUND;
}

/* An exception raised after the commit point of a task switch. */
struct late {
	uint8_t vec;
	uint32_t err;
};

/*
 * The new task's LDTR and segment registers, checked in the order of the
 * SDM's table 7-1 ("Exception Conditions Checked During a Task Switch",
 * vol. 3, 7.3: "the order used in the P6 family processors"), after
 * "Registers are loaded from the values in the TSS":
 *    1 the LDT selector is valid: null, or a GDT selector within the
 *      limit of a (S = 0, type 2) LDT descriptor      #TS(LDT)
 *    2 CS's descriptor DPL matches its RPL (= for non-conforming, <= for
 *      conforming code)                                #TS(CS)
 *    3 SS is valid: non-null, in its table, writable data  #TS(SS)
 *    4 SS is present                                   #SS(SS)
 *    5 SS's DPL = CPL (the new CPL: CS's RPL)           #TS(SS)
 *    6 the LDT is present                              #TS(LDT)
 *    7 CS is valid: non-null, in its table, code       #TS(CS)
 *    8 CS is present                                   #NP(CS)
 *    9 SS's DPL = its RPL                              #TS(SS)
 *   10-13 DS, ES, FS, GS (in that order), each: null, or valid (in its
 *      table, a code or data segment), readable (not execute-only code),
 *      present (#NP), DPL >= CPL and >= RPL unless conforming code; each
 *      other failure #TS(selector).
 * "Valid" is the table's note 3: the right table, within its limit, a
 * compatible descriptor type. TI = 1 selectors index the new LDT from
 * step 1 on (its present bit is only step 6). A virtual-8086 task loads
 * its segments as 8086 ones: steps 1 and 6 only. Error codes are the
 * selector with RPL cleared (EXT = 0: int n is software).
 *
 * Everything before the first failure is loaded; from it on, segment
 * registers hold their new selectors with the hidden part unusable, DPL
 * the new CPL (the SDM: the CPU "will load all the state information from
 * the new TSS (without performing any additional limit, present, or type
 * checks)" (6.15, #NP) and the handler "should not rely on being able to
 * use" those selectors; what the hidden parts hold is not architectural).
 * Returns GO (clean), FAULTED (*late set) or REFUSE (unreadable memory).
 * sel[] is ES CS SS DS FS GS; nseg 4 for a 16-bit TSS (FS, GS stay).
 */
static enum step task_segs(const struct mb_fb_state *st, struct mb_fb_state *nx,
			   const uint16_t sel[6], unsigned nseg, uint16_t lsel,
			   struct late *lt)
{
	enum { ES, CS, SS, DS, FS, GS };
	struct mb_seg *dst[6] = { &nx->es, &nx->cs, &nx->ss,
				  &nx->ds, &nx->fs, &nx->gs };
	bool vm = nx->rflags & RF_VM;
	unsigned npl = vm ? 3 : sel[CS] & 3;
	for (unsigned i = 0; i < nseg; i++)
		*dst[i] = vm ? seg_vm86(sel[i])
			     : (struct mb_seg){ .selector = sel[i], .dpl = (uint8_t)npl };
	nx->ldt = (struct mb_seg){ .selector = lsel };
#define LATE(v, s) do { lt->vec = (v), lt->err = (s) & 0xfffc; return FAULTED; } while (0)
	/* 1 */
	uint8_t ld[8];
	const struct mb_seg *ldt = NULL;
	if (lsel & 0xfffc) {
		if ((lsel & 4) || (lsel | 7u) > st->gdt_limit)
			LATE(VEC_TS, lsel);
		if (st->read(st->ctx, st->gdt_base + (lsel & ~7u), ld, 8))
			return REFUSE;
		if ((ld[5] & 0x1f) != 0x02)
			LATE(VEC_TS, lsel);
		nx->ldt = seg_of(ld, lsel);
		nx->ldt.s = 0, nx->ldt.type = 2, nx->ldt.db = 0;
		nx->ldt.present = ld[5] >> 7;
		ldt = &nx->ldt;
	}
	if (vm) { /* 6 */
		if (ldt && !ldt->present)
			LATE(VEC_TS, lsel);
		return GO;
	}
	uint8_t cd[8], sd[8];
	enum found cf = lookup(st, ldt, sel[CS], cd);
	enum found sf = lookup(st, ldt, sel[SS], sd);
	if (cf == UNREADABLE || sf == UNREADABLE)
		return REFUSE;
	unsigned cdpl = cd[5] >> 5 & 3, sdpl = sd[5] >> 5 & 3;
	bool ccode = (cd[5] & 0x18) == 0x18, cconf = ccode && (cd[5] & 4);
	/* 2 */
	if (cf == FOUND && (cconf ? cdpl > npl : cdpl != npl))
		LATE(VEC_TS, sel[CS]);
	/* 3, 4, 5 */
	if (sf != FOUND || (sd[5] & 0x1a) != 0x12)
		LATE(VEC_TS, sel[SS]);
	if (!(sd[5] & 0x80))
		LATE(VEC_SS, sel[SS]);
	if (sdpl != npl)
		LATE(VEC_TS, sel[SS]);
	/* 6 */
	if (ldt && !ldt->present)
		LATE(VEC_TS, lsel);
	/* 7, 8 */
	if (cf != FOUND || !ccode)
		LATE(VEC_TS, sel[CS]);
	if (!(cd[5] & 0x80))
		LATE(VEC_NP, sel[CS]);
	nx->cs = seg_of(cd, sel[CS]);
	/* 9 */
	if (sdpl != (sel[SS] & 3u))
		LATE(VEC_TS, sel[SS]);
	nx->ss = seg_of(sd, sel[SS]);
	/* 10-13 */
	static const unsigned order[4] = { DS, ES, FS, GS };
	for (unsigned k = 0; k < 4; k++) {
		unsigned i = order[k];
		if (i >= nseg)
			continue;
		if ((sel[i] & 0xfffc) == 0) /* TI = 0, index 0 */
			continue; /* null: loaded as it is (unusable) */
		uint8_t d[8];
		enum found f = lookup(st, ldt, sel[i], d);
		if (f == UNREADABLE)
			return REFUSE;
		unsigned acc = d[5], dpl = acc >> 5 & 3;
		bool code = (acc & 0x18) == 0x18, conf = code && (acc & 4);
		if (f != FOUND || !(acc & 0x10))
			LATE(VEC_TS, sel[i]);
		if (code && !(acc & 2))
			LATE(VEC_TS, sel[i]);
		if (!(acc & 0x80))
			LATE(VEC_NP, sel[i]);
		if (!conf && (dpl < npl || dpl < (sel[i] & 3u)))
			LATE(VEC_TS, sel[i]);
		*dst[i] = seg_of(d, sel[i]);
	}
#undef LATE
	return GO;
}

/*
 * INT n through a task gate (vol. 2A "INT n", TASK-GATE; vol. 3, 7.3
 * "Task Switching"). Before anything is written: the TSS selector must be
 * a GDT one within its limit (#GP(sel)), its descriptor an available TSS
 * (a busy one or anything else: #GP(sel)), present (#NP(sel)), with a
 * limit of at least 0x67 (32-bit) or 0x2B (16-bit) (#TS(sel)); the new
 * task's state is read and its LDTR and segments checked (task_segs) on a
 * copy. Then, as the CPU does for a CALL or an interrupt: the dynamic
 * fields of the current task (EIP after the int, EFLAGS, the GPRs, the
 * segment selectors) go into the current TSS (32-bit: 0x20..0x5F; 16-bit:
 * 0x0E..0x29), the new TSS's previous-task link gets the old TR selector,
 * the new descriptor's busy bit is set, TR is loaded, CR0.TS set, and the
 * new task's LDTR, CR3 (32-bit TSS with paging on), EFLAGS with NT, EIP,
 * GPRs and segments loaded. int n pushes no error code. The old task
 * stays busy (a nested task: IRET returns to it).
 *
 * Past the commit point (steps 12-13), what the checks found is raised in
 * the new task's context, after the switch is complete: task_segs'
 * #TS/#NP/#SS first; else the T bit of a 32-bit TSS, a #DB trap with
 * DR6.BT (vol. 3, 17.3.1.5; it outranks every fault of the new task's
 * first instruction, table 6-2, priority 2); else EIP past the new CS
 * limit, #GP(0) (vol. 2A "INT n": "IF EIP not within code segment limit
 * THEN #GP(0)" after SWITCH-TASKS; 0xFFFF for a virtual-8086 task). RIP is
 * then the new task's EIP, as an exception "prior to beginning execution
 * of the new task" pushes it; the caller injects it like any other fault
 * (KVM delivers it through the IDT from the new task's state), unless its
 * IDT entry is a task gate (task_gate, below).
 *
 * Writes happen in that order; if one fails (a page the guest made
 * read-only) the run ends with "error" with the registers untouched and
 * at most the old TSS's dynamic fields rewritten.
 */
static enum mb_fb_insn switch_task(struct mb_fb_state *st, uint16_t tsel,
				   unsigned len)
{
	const enum mb_fb_insn K = MB_FB_INT_TASK;
	uint32_t terr = tsel & 0xfffc;
	if ((tsel & 4) || (tsel | 7u) > st->gdt_limit) {
		fault(st, VEC_GP, true, terr);
		return K;
	}
	uint8_t d[8];
	if (st->read(st->ctx, st->gdt_base + (tsel & ~7u), d, 8))
		return MB_FB_NONE;
	unsigned type = d[5] & 0x1f; /* S clear, then the type */
	if (type != 0x1 && type != 0x9) {
		fault(st, VEC_GP, true, terr);
		return K;
	}
	if (!(d[5] & 0x80)) {
		fault(st, VEC_NP, true, terr);
		return K;
	}
	struct mb_seg ntr = seg_of(d, tsel);
	bool n16 = type == 0x1;
	ntr.s = 0, ntr.type = (uint8_t)(type | 2), ntr.db = 0;
	if (ntr.limit < (n16 ? 0x2bu : 0x67u)) {
		fault(st, VEC_TS, true, terr);
		return K;
	}
	uint8_t t[0x68];
	unsigned tlen = n16 ? 0x2c : 0x68;
	if (st->read(st->ctx, ntr.base, t, tlen))
		return MB_FB_NONE;

	/* The new task's state, into a copy committed only at the end. */
	struct mb_fb_state nx = *st;
	uint16_t sel[6], lsel;
	if (n16) {
		nx.rip = le16p(t + 0x0e);
		nx.rflags = le16p(t + 0x10);
		for (unsigned i = 0; i < 8; i++)
			nx.gpr[i] = le16p(t + 0x12 + 2 * i);
		for (unsigned i = 0; i < 4; i++)
			sel[i] = le16p(t + 0x22 + 2 * i);
		lsel = le16p(t + 0x2a);
	} else {
		nx.rip = le32p(t + 0x20);
		nx.rflags = le32p(t + 0x24);
		for (unsigned i = 0; i < 8; i++)
			nx.gpr[i] = le32p(t + 0x28 + 4 * i);
		for (unsigned i = 0; i < 6; i++)
			sel[i] = le16p(t + 0x48 + 4 * i);
		lsel = le16p(t + 0x60);
		if (st->cr0 & (1ull << 31)) /* CR0.PG: a 16-bit TSS has no CR3 */
			nx.cr3 = le32p(t + 0x1c);
	}
	/* EFLAGS as the TSS holds it, reserved bits cleared, bit 1 set, NT
	 * set for the nesting (vol. 3, 7.4). A 16-bit TSS has no VM bit. */
	nx.rflags = (nx.rflags & 0x3f7fd5) | RF_FIXED | RF_NT;
	struct late lt = { 0, 0 };
	enum step r = task_segs(st, &nx, sel, n16 ? 4 : 6, lsel, &lt);
	if (r == REFUSE)
		return MB_FB_NONE;
	bool trap = !n16 && (t[0x64] & 1); /* the T bit */
	if (r == GO && !trap && nx.rip > nx.cs.limit) /* 0xFFFF in VM86 */
		r = FAULTED, lt = (struct late){ VEC_GP, 0 };

	/* The current task's dynamic fields into the current TSS. */
	uint8_t o[0x40];
	bool o16 = tss16(st->tr.type);
	const struct mb_seg *cur[6] = { &st->es, &st->cs, &st->ss,
					&st->ds, &st->fs, &st->gs };
	uint64_t flags = st->rflags & ~RF_RF;
	unsigned olen = o16 ? 0x1c : 0x40, ooff = o16 ? 0x0e : 0x20;
	if (st->tr.limit < ooff + olen - 1)
		return MB_FB_NONE;
	if (o16) {
		put_le(o, st->rip + len, 2);
		put_le(o + 2, flags, 2);
		for (unsigned i = 0; i < 8; i++)
			put_le(o + 4 + 2 * i, st->gpr[i], 2);
		for (unsigned i = 0; i < 4; i++)
			put_le(o + 0x14 + 2 * i, cur[i]->selector, 2);
	} else {
		put_le(o, (uint32_t)(st->rip + len), 4);
		put_le(o + 4, flags, 4);
		for (unsigned i = 0; i < 8; i++)
			put_le(o + 8 + 4 * i, st->gpr[i], 4);
		for (unsigned i = 0; i < 6; i++)
			put_le(o + 0x28 + 4 * i, cur[i]->selector, 4);
	}
	uint8_t link[2], busy = (uint8_t)(d[5] | 2);
	put_le(link, st->tr.selector, 2);
	if (st->write(st->ctx, st->tr.base + ooff, o, olen) ||
	    st->write(st->ctx, ntr.base, link, 2) ||
	    st->write(st->ctx, st->gdt_base + (tsel & ~7u) + 5, &busy, 1))
		return MB_FB_NONE;

	nx.tr = ntr;
	nx.cr0 |= CR0_TS;
	nx.segs_changed = nx.dsegs_changed = nx.task_switched = true;
	*st = nx;
	if (r == FAULTED)
		fault(st, lt.vec, true, lt.err);
	else if (trap) {
		st->inject = true, st->inject_vec = VEC_DB;
		st->inject_dr6 = DR6_BT;
	}
	return K;
}

/*
 * A late exception (raised in the new task, see switch_task) whose IDT
 * entry is a present task gate: the CPU delivers it with a second task
 * switch (vol. 3, 6.12.2 "Interrupt Tasks"), which KVM does not do on
 * every host (this PVM host raises #GP instead), so it is done here: the
 * first new task's state (EIP its first instruction) saved in its TSS,
 * the handler task loaded and linked to it, and the error code, if any,
 * pushed on the handler task's stack (a word for a 16-bit TSS). The gate's
 * DPL is not checked (an exception, not int n: 6.12.1.1). A fault in the
 * second switch would be a double fault, which the fallback does not
 * model: refused, with the registers as before the int (guest memory keeps
 * what the first switch wrote). A DR6.BT from the T bit stays set.
 */
static enum mb_fb_insn task_gate(struct mb_fb_state *st, uint16_t tsel,
				 unsigned len)
{
	struct mb_fb_state orig = *st;
	enum mb_fb_insn k = switch_task(st, tsel, len);
	if (k == MB_FB_NONE || !st->task_switched || !st->inject)
		return k;
	uint8_t g[8];
	unsigned vec = st->inject_vec;
	if (vec * 8 + 7 > st->idt_limit ||
	    st->read(st->ctx, st->idt_base + vec * 8, g, 8) ||
	    (g[5] & 0x9f) != 0x85)
		return k; /* an interrupt or trap gate: KVM delivers it */
	bool has_err = st->inject_has_err;
	uint32_t err = st->inject_err;
	uint64_t dr6 = st->inject_dr6;
	st->inject = st->inject_has_err = false;
	st->inject_err = 0;
	if (switch_task(st, le16p(g + 2), 0) == MB_FB_NONE || st->inject)
		goto refuse;
	if (has_err) {
		unsigned size = tss16(st->tr.type) ? 2 : 4;
		uint32_t esp = (uint32_t)st->gpr[RSP];
		uint32_t top = st->ss.db ? esp - size
			: (esp & ~0xffffu) | ((esp - size) & 0xffff);
		uint8_t b[4];
		put_le(b, err, size);
		if (st->write(st->ctx, (uint32_t)(st->ss.base +
						  (st->ss.db ? top : (top & 0xffff))),
			      b, size))
			goto refuse;
		st->gpr[RSP] = top;
	}
	st->inject_dr6 = dr6;
	return k;
refuse:
	*st = orig;
	return MB_FB_NONE;
}

/* Words pushed on a 16-bit stack (SS:SP, SP wrapping in 64 KiB), w[0] at
 * the lowest address; SP moves only when every word was written. */
static bool push16(struct mb_fb_state *st, const uint16_t *w, unsigned n)
{
	uint16_t sp = (uint16_t)st->gpr[RSP];
	for (unsigned i = 0; i < n; i++) {
		uint8_t b[2];
		put_le(b, w[i], 2);
		uint16_t at = (uint16_t)(sp - 2 * n + 2 * i);
		if (st->write(st->ctx, st->ss.base + at, b, 2))
			return false;
	}
	st->gpr[RSP] = (st->gpr[RSP] & ~0xffffull) | (uint16_t)(sp - 2 * n);
	return true;
}

/* 32-bit protected mode (SDM vol. 2A "INT n", PROTECTED-MODE; vol. 3,
 * 6.11 "IDT Descriptors" and 6.12.1): 8-byte gates, 32-bit interrupt
 * (0xE) and trap (0xF) gates, and 16-bit ones (0x6, 0x7: a 16-bit offset,
 * and every push 2 bytes instead of 4); a 16-bit or 32-bit target code
 * segment (the offset within its limit, else #GP(0)), a 16-bit or 32-bit
 * stack (SS.B: SP or ESP moves). Gate DPL must be >= CPL (#GP(vec*8+2)),
 * the gate present (#NP(vec*8+2)). A task gate (0x5) switches tasks
 * (task_gate). The target must be a present code segment of DPL <= CPL
 * (#GP/#NP(selector)). A non-conforming target at a lower DPL switches to
 * SSn:ESPn from the current TSS (tss_stack, 32-bit or 16-bit) and pushes
 * SS and ESP first; then EFLAGS, CS, EIP. From virtual-8086 mode (vol. 3,
 * 20.3.1.1; "INT n", INTERRUPT-FROM-VIRTUAL-8086-MODE) the target must be
 * non-conforming with DPL 0 (else #GP(selector)); GS, FS, DS, ES go below
 * SS and ESP, and DS ES FS GS are then loaded with null selectors. TF, NT,
 * RF, VM are cleared, IF too through an interrupt gate. kind is what a
 * completed or faulted int counts as. */
static enum mb_fb_insn int_prot(struct mb_fb_state *st, unsigned vec,
				unsigned len, enum mb_fb_insn kind)
{
	uint32_t gerr = vec * 8 + 2;
	unsigned pl = cpl(st);
	bool vm = st->rflags & RF_VM;
	if (vec * 8 + 7 > st->idt_limit) {
		fault(st, VEC_GP, true, gerr);
		return kind;
	}
	uint8_t g[8];
	if (st->read(st->ctx, st->idt_base + vec * 8, g, 8))
		return MB_FB_NONE;
	unsigned type = g[5] & 0x1f, gdpl = g[5] >> 5 & 3;
	if (type == 0x5) /* whatever follows counts as a task gate's */
		kind = MB_FB_INT_TASK;
	if ((type != 0xe && type != 0xf && type != 0x6 && type != 0x7 &&
	     type != 0x5) || gdpl < pl) {
		fault(st, VEC_GP, true, gerr);
		return kind;
	}
	if (!(g[5] & 0x80)) {
		fault(st, VEC_NP, true, gerr);
		return kind;
	}
	if (type == 0x5)
		return task_gate(st, le16p(g + 2), len);
	unsigned w = type & 8 ? 4 : 2; /* the gate's push size */
	uint32_t target = (uint32_t)le16p(g) | (w == 4 ? (uint32_t)le16p(g + 6) << 16 : 0);
	uint16_t sel = le16p(g + 2);
	if ((sel & 0xfffc) == 0) {
		fault(st, VEC_GP, true, 0);
		return kind;
	}
	uint8_t d[8];
	bool ok;
	if (!gdt_entry(st, sel, d, &ok))
		return MB_FB_NONE;
	if (!ok)
		return kind;
	unsigned acc = d[5], ddpl = acc >> 5 & 3;
	bool code = (acc & 0x18) == 0x18, conforming = acc & 4;
	if (!code || ddpl > pl) {
		fault(st, VEC_GP, true, sel & 0xfffc);
		return kind;
	}
	if (!(acc & 0x80)) {
		fault(st, VEC_NP, true, sel & 0xfffc);
		return kind;
	}
	if (vm && (conforming || ddpl != 0)) {
		fault(st, VEC_GP, true, sel & 0xfffc);
		return kind;
	}
	if (target > seg_of(d, sel).limit) {
		fault(st, VEC_GP, true, 0);
		return kind;
	}
	unsigned npl = conforming ? pl : ddpl;
	struct mb_seg ss = st->ss;
	uint32_t esp = (uint32_t)st->gpr[RSP];
	if (npl < pl) {
		enum step r = tss_stack(st, npl, &ss, &esp);
		if (r != GO)
			return r == FAULTED ? kind : MB_FB_NONE;
	}
	/* EIP CS EFLAGS [ESP SS [ES DS FS GS]], lowest address first */
	uint8_t f[36];
	uint64_t v[9] = { (uint32_t)(st->rip + len), st->cs.selector,
			  st->rflags & ~RF_RF, st->gpr[RSP], st->ss.selector,
			  st->es.selector, st->ds.selector, st->fs.selector,
			  st->gs.selector };
	unsigned nv = vm ? 9 : npl < pl ? 5 : 3, size = nv * w;
	for (unsigned i = 0; i < nv; i++)
		put_le(f + i * w, v[i], w);
	/* SS.B: a 32-bit stack moves ESP (the upper half of RSP zeroed), a
	 * 16-bit one SP alone (vol. 3, 6.12.1: the stack's own size). */
	uint32_t top = ss.db ? esp - size : (uint32_t)((esp & ~0xffffu) | ((esp - size) & 0xffff));
	if (st->write(st->ctx, (uint32_t)(ss.base + (ss.db ? top : (top & 0xffff))), f, size))
		return MB_FB_NONE;
	st->gpr[RSP] = top; /* 32-bit mode: the upper half of RSP zeroed */
	st->rflags &= ~(RF_TF | RF_NT | RF_RF | RF_VM);
	if (!(type & 1)) /* an interrupt gate (0x6, 0xE), not a trap gate */
		st->rflags &= ~RF_IF;
	st->cs = seg_of(d, (uint16_t)((sel & 0xfffc) | npl));
	st->cs.dpl = ddpl;
	st->ss = ss;
	if (vm) {
		st->ds = st->es = st->fs = st->gs = (struct mb_seg){ 0 };
		st->dsegs_changed = true;
	}
	st->rip = target;
	st->segs_changed = true;
	return kind;
}

#define CR4_VME (1ull << 0)
#define RF_VIF (1ull << 19)

/*
 * INT n in virtual-8086 mode (vol. 3, 20.3.3 "Class 1 -- Hardware
 * Interrupt and Exception Handling in Virtual-8086 Mode" and table 20-2;
 * vol. 2A "INT n", the PE = 1 branch). Without CR4.VME: IOPL < 3 is #GP(0),
 * IOPL 3 goes through the IDT to a protected-mode handler (int_prot).
 * With CR4.VME, bit n of the software interrupt redirection bitmap (the 32
 * bytes below the I/O permission bitmap, whose offset is the 32-bit TSS's
 * word at 0x66) decides: set, as without VME (#GP(0) or the IDT); clear,
 * the interrupt is redirected to the 8086 handler through the task's own
 * IVT at linear address 0: FLAGS, CS, IP pushed on SS:SP (with IOPL < 3 the
 * FLAGS image has VIF in IF's place and IOPL 3), then IF (IOPL 3) or VIF
 * (IOPL < 3) and TF cleared. A bitmap byte past TR's limit is #GP(0) (what
 * the I/O permission bitmap does); a 16-bit TSS with VME is refused (the
 * SDM gives it no bitmap). A task gate is taken as in protected mode.
 */
static enum mb_fb_insn int_vm86(struct mb_fb_state *st, unsigned vec,
				unsigned len)
{
	const enum mb_fb_insn K = MB_FB_INT_VM86;
	unsigned iopl = (unsigned)(st->rflags >> 12 & 3);
	bool redirect = false;
	if (st->cr4 & CR4_VME) {
		if (tss16(st->tr.type))
			return MB_FB_NONE;
		uint8_t b[2];
		if (st->tr.limit < 0x67)
			goto gp;
		if (st->read(st->ctx, st->tr.base + 0x66, b, 2))
			return MB_FB_NONE;
		int64_t off = (int64_t)le16p(b) - 32 + vec / 8;
		if (off < 0 || off > (int64_t)st->tr.limit)
			goto gp;
		if (st->read(st->ctx, st->tr.base + (uint64_t)off, b, 1))
			return MB_FB_NONE;
		redirect = !(b[0] >> (vec % 8) & 1);
	}
	if (!redirect) {
		if (iopl < 3)
			goto gp;
		return int_prot(st, vec, len, K);
	}
	uint8_t e[4];
	if (st->read(st->ctx, vec * 4, e, 4))
		return MB_FB_NONE;
	uint16_t fl = (uint16_t)st->rflags;
	if (iopl < 3)
		fl = (uint16_t)((fl & ~RF_IF) | (st->rflags & RF_VIF ? RF_IF : 0) |
				RF_IOPL);
	uint16_t words[3] = { (uint16_t)(st->rip + len), st->cs.selector, fl };
	if (!push16(st, words, 3))
		return MB_FB_NONE;
	st->rflags &= ~(RF_TF | RF_RF | (iopl == 3 ? RF_IF : RF_VIF));
	st->cs = seg_vm86(le16p(e + 2));
	st->rip = le16p(e);
	st->segs_changed = true;
	return K;
gp:
	fault(st, VEC_GP, true, 0);
	return K;
}

/* INT n, CD ib (SDM vol. 2A, "INT n/INTO/INT3/INT1"). Real mode,
 * virtual-8086 mode, 32-bit protected mode and 64-bit mode are completed;
 * compatibility mode is refused (the run ends with "error"), as is
 * anything with prefixes. */
static enum mb_fb_insn int_n(struct mb_fb_state *st, const uint8_t *insn,
			     unsigned n)
{
	if (n < 2 || !st->read || !st->write)
		return MB_FB_NONE;
	unsigned vec = insn[1];
	if (!(st->cr0 & CR0_PE))
		return int_real(st, vec, 2);
	if (mode64(st))
		return int_long(st, vec, 2);
	if (st->efer & EFER_LMA)
		return MB_FB_NONE;
	if (st->rflags & RF_VM)
		return int_vm86(st, vec, 2);
	return int_prot(st, vec, 2, MB_FB_INT);
}

enum mb_fb_insn mb_fallback_exec(struct mb_fb_state *st, const uint8_t *insn,
				 unsigned n)
{
	if (!st || !insn || n == 0)
		return MB_FB_NONE;
	st->segs_changed = st->inject = st->inject_has_err = false;
	st->dsegs_changed = st->task_switched = false;
	st->inject_err = 0, st->inject_dr6 = 0;
	st->sse_changed = false;
	enum mb_fb_insn sse = mb_fb_sse(st, insn, n); /* fallback_sse.c */
	if (sse != MB_FB_NONE)
		return sse;
	switch (insn[0]) {
	case 0xcc: /* INT3 (SDM vol. 2A, "INT n/INTO/INT3/INT1"): a trap */
		advance(st, 1);
		st->inject = true, st->inject_vec = VEC_BP;
		return MB_FB_INT3;
	case 0x9b: /* WAIT/FWAIT (SDM vol. 2B): #NM if CR0.MP and CR0.TS.
		    * Pending unmasked x87 exceptions (#MF) are not checked:
		    * that would need the FPU state; Linux does not rely on it. */
		if ((st->cr0 & (CR0_MP | CR0_TS)) == (CR0_MP | CR0_TS)) {
			st->inject = true, st->inject_vec = VEC_NM;
			return MB_FB_FWAIT; /* a fault: RIP stays */
		}
		advance(st, 1);
		return MB_FB_FWAIT;
	case 0xcd:
		return int_n(st, insn, n);
	case 0x0f: /* CLAC/STAC (SDM vol. 2A): no prefixes (F2/F3 0F 01 CA
		    * are other instructions), #UD at CPL > 0: refused. */
		if (n >= 3 && insn[1] == 0x01 && insn[2] == 0xd0)
			return xgetbv(st);
		if (n < 3 || insn[1] != 0x01 || (insn[2] != 0xca && insn[2] != 0xcb))
			return escaped(st, insn, n);
		if (cpl(st) != 0)
			return MB_FB_NONE;
		if (insn[2] == 0xcb) {
			st->rflags |= RF_AC;
			advance(st, 3);
			return MB_FB_STAC;
		}
		if (syscall_entry(st))
			return MB_FB_SYSCALL;
		st->rflags &= ~RF_AC;
		advance(st, 3);
		return MB_FB_CLAC;
	case 0xf3:
	case 0x66: {
		enum mb_fb_insn k = popcnt(st, insn, n);
		return k != MB_FB_NONE ? k : escaped(st, insn, n);
	}
	}
	return escaped(st, insn, n);
}

/* ---- what fallback_sse.c borrows (fallback_sse.h) ---------------------- */

bool mb_fb_mode64(const struct mb_fb_state *st) { return mode64(st); }
unsigned mb_fb_cpl(const struct mb_fb_state *st) { return cpl(st); }
void mb_fb_advance(struct mb_fb_state *st, unsigned len) { advance(st, len); }

void mb_fb_fault(struct mb_fb_state *st, uint8_t vec, bool has_err,
		 uint32_t err)
{
	fault(st, vec, has_err, err);
}

bool mb_fb_prefixes(const struct mb_fb_state *st, const uint8_t *p,
		    unsigned n, struct mb_fb_px *out)
{
	struct prefixes px;
	bool ok = scan_prefixes(st, p, n, &px);
	*out = (struct mb_fb_px){ .len = px.len, .osz = px.osz, .asz = px.asz,
				  .rep = px.rep, .repne = px.repne,
				  .lock = px.lock, .seg = px.seg, .rex = px.rex };
	return ok;
}

bool mb_fb_modrm_mem(const struct mb_fb_state *st, const struct mb_fb_px *in,
		     const uint8_t *p, unsigned n, uint64_t next_rip_base,
		     struct mb_fb_mem *out)
{
	struct prefixes px = { .len = in->len, .osz = in->osz, .asz = in->asz,
			       .rep = in->rep, .repne = in->repne,
			       .lock = in->lock, .seg = in->seg, .rex = in->rex };
	struct memop mo;
	if (!decode_mem(st, &px, p, n, next_rip_base, &mo))
		return false;
	*out = (struct mb_fb_mem){ .linear = mo.linear, .ea = mo.ea,
				   .seg = mo.seg, .len = mo.len };
	return true;
}

bool mb_fb_check(struct mb_fb_state *st, const struct mb_fb_mem *in,
		 unsigned size)
{
	struct memop mo = { .linear = in->linear, .ea = in->ea, .seg = in->seg,
			    .len = in->len };
	return check_access(st, &mo, size);
}

/* ---- counters: one atomic per kind in the machine ------------------- */

static void count(struct mb_machine *m, enum mb_fb_insn k)
{
	atomic_fetch_add_explicit(&m->fb_counts[k], 1, memory_order_relaxed);
}

unsigned mb_fallback_counts(struct mb_machine *m, const char **out_names,
			    uint64_t *counts, unsigned max)
{
	unsigned kinds = MB_FB_KINDS - 1;
	if (max > kinds)
		max = kinds;
	for (unsigned i = 0; i < max; i++) {
		if (out_names)
			out_names[i] = names[i + 1];
		if (counts)
			counts[i] = m ? atomic_load(&m->fb_counts[i + 1]) : 0;
	}
	return kinds;
}

/* ---- the KVM side ------------------------------------------------------ */

/* Guest memory by linear address through the vCPU's current page tables,
 * page by page. */
static int read_linear(void *ctx, uint64_t la, void *buf, unsigned len)
{
	struct vcpu *v = ctx;
	uint8_t *out = buf;
	while (len) {
		unsigned chunk = 4096 - (unsigned)(la & 4095);
		if (chunk > len)
			chunk = len;
		struct kvm_translation t = { .linear_address = la };
		if (ioctl(v->fd, KVM_TRANSLATE, &t) < 0 || !t.valid)
			return -EFAULT;
		if (mb_mem_read(v->m->mem, t.physical_address, out, chunk))
			return -EFAULT;
		la += chunk, out += chunk, len -= chunk;
	}
	return 0;
}

/* The same for writes (int n's frame); a read-only page refuses. Each page
 * is translated before any is written, so a frame is never half-pushed. */
static int write_linear(void *ctx, uint64_t la, const void *buf, unsigned len)
{
	struct vcpu *v = ctx;
	const uint8_t *in = buf;
	uint64_t gpa[2];
	unsigned np = 0;
	for (uint64_t a = la & ~4095ull; a < la + len && np < 2; a += 4096) {
		struct kvm_translation t = { .linear_address = a };
		if (ioctl(v->fd, KVM_TRANSLATE, &t) < 0 || !t.valid ||
		    !t.writeable)
			return -EFAULT;
		gpa[np++] = t.physical_address;
	}
	if (len > 4096)
		return -EINVAL;
	for (unsigned i = 0; len; i++) {
		unsigned chunk = 4096 - (unsigned)(la & 4095);
		if (chunk > len)
			chunk = len;
		if (mb_mem_write(v->m->mem, gpa[i] + (la & 4095), in, chunk))
			return -EFAULT;
		la += chunk, in += chunk, len -= chunk;
	}
	return 0;
}

/* XCR0 as the guest set it (XSETBV); x87 only (its reset value) when
 * KVM cannot say. */
static uint64_t get_xcr0(int fd)
{
	struct kvm_xcrs x;
	memset(&x, 0, sizeof x);
	if (ioctl(fd, KVM_GET_XCRS, &x) == 0)
		for (uint32_t i = 0; i < x.nr_xcrs && i < KVM_MAX_XCRS; i++)
			if (x.xcrs[i].xcr == 0)
				return x.xcrs[i].value;
	return 1;
}

static struct mb_seg seg_in(const struct kvm_segment *s)
{
	return (struct mb_seg){ .base = s->base, .limit = s->limit,
				.selector = s->selector, .type = s->type,
				.present = s->present, .dpl = s->dpl,
				.db = s->db, .s = s->s, .l = s->l, .g = s->g,
				.avl = s->avl };
}

static void seg_out(struct kvm_segment *o, const struct mb_seg *s)
{
	*o = (struct kvm_segment){ .base = s->base, .limit = s->limit,
				   .selector = s->selector, .type = s->type,
				   .present = s->present, .dpl = s->dpl,
				   .db = s->db, .s = s->s, .l = s->l, .g = s->g,
				   .avl = s->avl, .unusable = !s->present };
}

static bool get_msrs(int fd, struct mb_fb_state *st)
{
	union {
		struct kvm_msrs h;
		uint8_t raw[sizeof(struct kvm_msrs) +
			    3 * sizeof(struct kvm_msr_entry)];
	} u;
	memset(&u, 0, sizeof u);
	struct kvm_msr_entry *e = u.h.entries;
	u.h.nmsrs = 3;
	e[0].index = MSR_STAR, e[1].index = MSR_LSTAR, e[2].index = MSR_SFMASK;
	if (ioctl(fd, KVM_GET_MSRS, &u.h) != 3)
		return false;
	st->star = e[0].data, st->lstar = e[1].data, st->sfmask = e[2].data;
	return true;
}

bool mb_fallback_try(struct mb_machine *m, unsigned cpu, const uint8_t *insn,
		     unsigned n)
{
	if (!m || cpu >= m->ncpu || !insn || !n)
		return false;
	struct vcpu *v = &m->cpu[cpu];
	struct kvm_regs r;
	struct kvm_sregs s;
	if (ioctl(v->fd, KVM_GET_REGS, &r) < 0 ||
	    ioctl(v->fd, KVM_GET_SREGS, &s) < 0)
		return false;
	struct mb_fb_state st = {
		.gpr = { r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi,
			 r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15 },
		.rip = r.rip, .rflags = r.rflags,
		.cs = seg_in(&s.cs), .ss = seg_in(&s.ss),
		.ds = seg_in(&s.ds), .es = seg_in(&s.es),
		.fs = seg_in(&s.fs), .gs = seg_in(&s.gs),
		.tr = seg_in(&s.tr), .ldt = seg_in(&s.ldt),
		.cr0 = s.cr0, .cr3 = s.cr3, .cr4 = s.cr4, .efer = s.efer,
		.idt_base = s.idt.base, .idt_limit = s.idt.limit,
		.gdt_base = s.gdt.base, .gdt_limit = s.gdt.limit,
		.read = read_linear, .write = write_linear, .ctx = v,
	};
	/* Only xgetbv reads it: one ioctl less for every clac. */
	if (n >= 3 && insn[0] == 0x0f && insn[1] == 0x01 && insn[2] == 0xd0)
		st.xcr0 = get_xcr0(v->fd);
	/* The XMM registers only for what fallback_sse.c may complete. */
	struct mb_fb_sse_io sse;
	if (mb_fb_sse_wants(insn, n))
		st.sse_valid = mb_fb_sse_get(v->fd, &st, &sse);
	/* Without the MSRs the syscall check just never matches. */
	if (!get_msrs(v->fd, &st))
		st.star = st.lstar = st.sfmask = 0;

	enum mb_fb_insn k = mb_fallback_exec(&st, insn, n);
	if (k == MB_FB_NONE)
		return false;

	struct kvm_vcpu_events ev;
	if (st.inject) {
		/* Never overwrite an event KVM already holds. */
		if (ioctl(v->fd, KVM_GET_VCPU_EVENTS, &ev) < 0 ||
		    ev.exception.injected || ev.exception.pending)
			return false;
	}
	/* First, so that a failure leaves the vCPU as it was (a store the
	 * instruction made is already in guest memory either way). */
	if (st.sse_changed && !mb_fb_sse_put(v->fd, &st, &sse))
		return false;
	struct kvm_regs orig = r;
	r = (struct kvm_regs){
		.rax = st.gpr[0], .rcx = st.gpr[1], .rdx = st.gpr[2],
		.rbx = st.gpr[3], .rsp = st.gpr[4], .rbp = st.gpr[5],
		.rsi = st.gpr[6], .rdi = st.gpr[7], .r8 = st.gpr[8],
		.r9 = st.gpr[9], .r10 = st.gpr[10], .r11 = st.gpr[11],
		.r12 = st.gpr[12], .r13 = st.gpr[13], .r14 = st.gpr[14],
		.r15 = st.gpr[15], .rip = st.rip, .rflags = st.rflags,
	};
	if (ioctl(v->fd, KVM_SET_REGS, &r) < 0)
		return false;
	mb_vcpu_forget_window(v); /* RFLAGS.IF may have changed (int n, iret) */
	/* Entering virtual-8086 mode (a task switch into a VM86 task, or a
	 * VME redirection staying in it): a host that cannot run VM86 code
	 * drops EFLAGS.VM (kvm_pvm does, measured), and the guest would run
	 * its 8086 code as protected-mode code. End the run instead, with
	 * the registers put back (segments are not written yet), so the
	 * error shows the int; what the switch wrote to guest memory (the
	 * old TSS's fields, the busy bit, the back-link) stays. */
	if (st.rflags & RF_VM) {
		struct kvm_regs back;
		if (ioctl(v->fd, KVM_GET_REGS, &back) < 0 || !(back.rflags & RF_VM)) {
			ioctl(v->fd, KVM_SET_REGS, &orig);
			return false;
		}
	}
	if (st.segs_changed) {
		seg_out(&s.cs, &st.cs);
		seg_out(&s.ss, &st.ss);
		if (st.dsegs_changed) {
			seg_out(&s.ds, &st.ds);
			seg_out(&s.es, &st.es);
			seg_out(&s.fs, &st.fs);
			seg_out(&s.gs, &st.gs);
		}
		if (st.task_switched) {
			seg_out(&s.tr, &st.tr);
			seg_out(&s.ldt, &st.ldt);
			s.cr0 = st.cr0, s.cr3 = st.cr3;
		}
		/* A host that refuses the new segments (a task switch leaves
		 * the hidden parts of segments that failed their checks
		 * unusable) must not keep half the state. */
		if (ioctl(v->fd, KVM_SET_SREGS, &s) < 0) {
			ioctl(v->fd, KVM_SET_REGS, &orig);
			return false;
		}
	}
	if (st.inject_dr6) {
		struct kvm_debugregs dr;
		if (ioctl(v->fd, KVM_GET_DEBUGREGS, &dr) == 0) {
			dr.dr6 |= st.inject_dr6;
			ioctl(v->fd, KVM_SET_DEBUGREGS, &dr);
		}
	}
	if (st.inject) {
		/* Written back as read, with only the exception added (the
		 * flags KVM returned keep the other fields valid). With
		 * KVM_CAP_EXCEPTION_PAYLOAD off, `injected` is the only
		 * state (api.rst, KVM_SET_VCPU_EVENTS). */
		ev.exception.injected = 1;
		ev.exception.nr = st.inject_vec;
		ev.exception.has_error_code = st.inject_has_err;
		ev.exception.error_code = st.inject_err;
		ev.exception_has_payload = 0;
		ev.exception_payload = 0;
		if (ioctl(v->fd, KVM_SET_VCPU_EVENTS, &ev) < 0)
			return false;
	}
	count(m, k);
	return true;
}

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
 * Everything else, including these opcodes with extra or different
 * prefixes, memory operands or a truncated byte string, is refused.
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

enum mb_fb_insn mb_fallback_exec(struct mb_fb_state *st, const uint8_t *insn,
				 unsigned n)
{
	if (!st || !insn || n == 0)
		return MB_FB_NONE;
	st->segs_changed = st->inject = false;
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
	case 0x0f: /* CLAC/STAC (SDM vol. 2A): no prefixes (F2/F3 0F 01 CA
		    * are other instructions), #UD at CPL > 0: refused. */
		if (n < 3 || insn[1] != 0x01 || (insn[2] != 0xca && insn[2] != 0xcb) ||
		    cpl(st) != 0)
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
	case 0x66:
		return popcnt(st, insn, n);
	}
	return MB_FB_NONE;
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
		.cr0 = s.cr0, .efer = s.efer, .idt_base = s.idt.base,
		.read = read_linear, .ctx = v,
	};
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
	if (st.segs_changed) {
		seg_out(&s.cs, &st.cs);
		seg_out(&s.ss, &st.ss);
		if (ioctl(v->fd, KVM_SET_SREGS, &s) < 0)
			return false;
	}
	if (st.inject) {
		/* Written back as read, with only the exception added (the
		 * flags KVM returned keep the other fields valid). With
		 * KVM_CAP_EXCEPTION_PAYLOAD off, `injected` is the only
		 * state (api.rst, KVM_SET_VCPU_EVENTS). */
		ev.exception.injected = 1;
		ev.exception.nr = st.inject_vec;
		ev.exception.has_error_code = 0;
		ev.exception.error_code = 0;
		ev.exception_has_payload = 0;
		ev.exception_payload = 0;
		if (ioctl(v->fd, KVM_SET_VCPU_EVENTS, &ev) < 0)
			return false;
	}
	count(m, k);
	return true;
}

/*
 * The emulation fallback's SSE instructions. Debian's stock kernel, run
 * here, stops on SSE in kernel mode (../shared/docs/kvm-here.md): KVM's
 * emulator knows a few 128-bit moves (for MMIO) but not movd/movq, pxor or
 * ldmxcsr. fallback.c calls mb_fb_sse() first on every exit it is given;
 * the XMM registers come from KVM_GET_FPU (the FXSAVE-format legacy area:
 * these non-VEX instructions never touch bits 255:128 of a YMM register,
 * and KVM_SET_FPU leaves them alone too).
 *
 * Completed (Intel SDM vol. 2; mandatory prefix, opcode):
 *   movups/movupd  NP/66 0F 10, 11  xmm <- xmm/m128, xmm/m128 <- xmm
 *   movss          F3 0F 10, 11     m32: a load zeroes 127:32; between
 *                                   registers only 31:0 move
 *   movsd          F2 0F 10, 11     the same with 64 bits
 *   movaps/movapd  NP/66 0F 28, 29  m128 aligned to 16, else #GP(0)
 *   movdqa         66 0F 6F, 7F     aligned
 *   movdqu         F3 0F 6F, 7F     unaligned
 *   movd/movq      66 [REX.W] 0F 6E xmm <- r/m32 (r/m64), zero-extended
 *                  66 [REX.W] 0F 7E r/m32 (r/m64) <- xmm; a 32-bit GPR
 *                                   destination is zero-extended
 *   movq           F3 0F 7E         xmm <- xmm/m64, 127:64 zeroed
 *                  66 0F D6         xmm/m64 <- xmm; a register
 *                                   destination gets 127:64 zeroed
 *   pxor           66 0F EF         xmm ^= xmm/m128 (m128 aligned)
 *   xorps/xorpd    NP/66 0F 57      the same
 *   ldmxcsr        NP 0F AE /2      MXCSR <- m32; #GP(0) if a bit outside
 *                                   0xffff is set (MXCSR_MASK of every CPU
 *                                   with DAZ, i.e. all since the Pentium 4)
 *   stmxcsr        NP 0F AE /3      m32 <- MXCSR
 * Exceptions follow the SDM's classes for legacy SSE (vol. 2A, 2.5,
 * exception types 4 and 5), in this order: #UD with LOCK, CR0.EM set or
 * CR4.OSFXSR clear; #NM with CR0.TS; #GP(0)/#SS(0) for the address (limit,
 * canonical form); #GP(0) for a misaligned m128 where alignment is
 * required.
 * Refused (registers untouched): CPL 3 (user mode runs natively on the
 * hosts that need this, and #AC alignment checks are not modelled), the
 * MMX forms (these opcodes without their mandatory prefix), 66 together
 * with F2/F3, guest memory the callbacks cannot read or write (no #PF is
 * delivered: the run ends with the instruction's bytes instead), a vCPU
 * whose XMM state could not be read, and everything else.
 */
#include <string.h>
#include <sys/ioctl.h>

#include "core/fallback_sse.h"

#define CR0_EM (1ull << 2)
#define CR0_TS (1ull << 3)
#define CR4_OSFXSR (1ull << 9)
#define MXCSR_MASK 0xffffu

enum { VEC_UD = 6, VEC_NM = 7, VEC_SS = 12, VEC_GP = 13 };
enum { NP, P66, PF3, PF2 }; /* the mandatory prefix */

enum form {
	F_NONE,
	F_LOAD,  /* xmm[reg] <- xmm[rm] / m(size) */
	F_STORE, /* xmm[rm] / m(size) <- xmm[reg] */
	F_G2X,   /* 6E: xmm[reg] <- r/m32 or r/m64 */
	F_X2G,   /* 7E: r/m32 or r/m64 <- xmm[reg] */
	F_XOR,   /* xmm[reg] ^= xmm[rm] / m128 */
	F_LDMXCSR,
	F_STMXCSR,
};

struct op {
	enum mb_fb_insn kind;
	enum form form;
	unsigned char size;  /* bytes moved */
	bool align;          /* m128 must be 16-byte aligned */
	bool merge;          /* register to register: bits above size kept */
};

/* The instruction for opcode (after 0F) and mandatory prefix. */
static struct op lookup(uint8_t opc, unsigned pfx)
{
	const struct op none = { MB_FB_NONE, F_NONE, 0, false, false };
	switch (opc) {
	case 0x10:
	case 0x11: {
		enum form f = opc == 0x10 ? F_LOAD : F_STORE;
		if (pfx == PF3)
			return (struct op){ MB_FB_MOVSS, f, 4, false, true };
		if (pfx == PF2)
			return (struct op){ MB_FB_MOVSD, f, 8, false, true };
		return (struct op){ MB_FB_MOVUPS, f, 16, false, false };
	}
	case 0x28:
	case 0x29:
		if (pfx != NP && pfx != P66)
			return none;
		return (struct op){ MB_FB_MOVAPS, opc == 0x28 ? F_LOAD : F_STORE,
				    16, true, false };
	case 0x6f:
	case 0x7f: {
		enum form f = opc == 0x6f ? F_LOAD : F_STORE;
		if (pfx == P66)
			return (struct op){ MB_FB_MOVDQA, f, 16, true, false };
		if (pfx == PF3)
			return (struct op){ MB_FB_MOVDQU, f, 16, false, false };
		return none;
	}
	case 0x6e:
		return pfx == P66 ? (struct op){ MB_FB_MOVD, F_G2X, 4, false, false }
				  : none;
	case 0x7e:
		if (pfx == P66)
			return (struct op){ MB_FB_MOVD, F_X2G, 4, false, false };
		if (pfx == PF3)
			return (struct op){ MB_FB_MOVQ, F_LOAD, 8, false, false };
		return none;
	case 0xd6:
		return pfx == P66 ? (struct op){ MB_FB_MOVQ, F_STORE, 8, false, false }
				  : none;
	case 0xef:
		return pfx == P66 ? (struct op){ MB_FB_PXOR, F_XOR, 16, true, false }
				  : none;
	case 0x57:
		return pfx == NP || pfx == P66
			? (struct op){ MB_FB_XORPS, F_XOR, 16, true, false } : none;
	}
	return none;
}

bool mb_fb_sse_wants(const uint8_t *insn, unsigned n)
{
	unsigned i = 0;
	while (i < n && i < 14 &&
	       (insn[i] == 0x66 || insn[i] == 0x67 || insn[i] == 0xf2 ||
		insn[i] == 0xf3 || insn[i] == 0xf0 || insn[i] == 0x26 ||
		insn[i] == 0x2e || insn[i] == 0x36 || insn[i] == 0x3e ||
		insn[i] == 0x64 || insn[i] == 0x65 || (insn[i] & 0xf0) == 0x40))
		i++;
	if (i + 3 > n || insn[i] != 0x0f)
		return false;
	uint8_t opc = insn[i + 1], modrm = insn[i + 2];
	if (opc == 0xae)
		return modrm >> 6 != 3 && ((modrm >> 3 & 7) == 2 ||
					   (modrm >> 3 & 7) == 3);
	for (unsigned pfx = NP; pfx <= PF2; pfx++)
		if (lookup(opc, pfx).kind != MB_FB_NONE)
			return true;
	return false;
}

/* A data access through a memory operand, after the address checks:
 * false (refuse) when the callbacks cannot do it. */
static bool mem_read(struct mb_fb_state *st, uint64_t la, void *buf,
		     unsigned len)
{
	return st->read && st->read(st->ctx, la, buf, len) == 0;
}

static bool mem_write(struct mb_fb_state *st, uint64_t la, const void *buf,
		      unsigned len)
{
	return st->write && st->write(st->ctx, la, buf, len) == 0;
}

static uint64_t le(const uint8_t *p, unsigned bytes)
{
	uint64_t v = 0;
	for (unsigned i = bytes; i-- > 0;)
		v = v << 8 | p[i];
	return v;
}

static void put(uint8_t *p, uint64_t v, unsigned bytes)
{
	for (unsigned i = 0; i < bytes; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

enum mb_fb_insn mb_fb_sse(struct mb_fb_state *st, const uint8_t *insn,
			  unsigned n)
{
	if (!st->sse_valid || !mb_fb_sse_wants(insn, n))
		return MB_FB_NONE;
	struct mb_fb_px px;
	if (!mb_fb_prefixes(st, insn, n, &px))
		return MB_FB_NONE;
	const uint8_t *p = insn + px.len;
	unsigned left = n - px.len;
	if (left < 3 || p[0] != 0x0f || (px.rep && px.repne) ||
	    (px.osz && (px.rep || px.repne)))
		return MB_FB_NONE;
	unsigned pfx = px.rep ? PF3 : px.repne ? PF2 : px.osz ? P66 : NP;
	uint8_t opc = p[1], modrm = p[2];
	bool wide = (px.rex & 8) != 0; /* REX.W */
	struct op o;
	if (opc == 0xae) {
		unsigned r = modrm >> 3 & 7;
		if (pfx != NP || modrm >> 6 == 3 || (r != 2 && r != 3))
			return MB_FB_NONE;
		o = r == 2 ? (struct op){ MB_FB_LDMXCSR, F_LDMXCSR, 4, false, false }
			   : (struct op){ MB_FB_STMXCSR, F_STMXCSR, 4, false, false };
	} else {
		o = lookup(opc, pfx);
	}
	if (o.kind == MB_FB_NONE || mb_fb_cpl(st) == 3)
		return MB_FB_NONE;
	if ((o.form == F_G2X || o.form == F_X2G) && wide)
		o.kind = MB_FB_MOVQ, o.size = 8;

	if (px.lock || (st->cr0 & CR0_EM) || !(st->cr4 & CR4_OSFXSR)) {
		mb_fb_fault(st, VEC_UD, false, 0);
		return px.lock ? MB_FB_UD : o.kind;
	}
	if (st->cr0 & CR0_TS) {
		mb_fb_fault(st, VEC_NM, false, 0);
		return o.kind;
	}

	unsigned reg = (modrm >> 3 & 7) | (px.rex & 4) << 1; /* REX.R */
	unsigned rm = (modrm & 7) | (px.rex & 1) << 3;       /* REX.B */
	bool isreg = modrm >> 6 == 3;
	struct mb_fb_mem mo = { 0 };
	unsigned len = px.len + 3;
	if (!isreg) {
		if (!mb_fb_modrm_mem(st, &px, p + 2, left - 2, 0, &mo))
			return MB_FB_NONE;
		len = px.len + 2 + mo.len;
		if (!mb_fb_modrm_mem(st, &px, p + 2, left - 2, st->rip + len, &mo))
			return MB_FB_NONE;
		if (!mb_fb_check(st, &mo, o.size))
			return o.kind;
		if (o.align && (mo.linear & 15)) {
			mb_fb_fault(st, VEC_GP, true, 0);
			return o.kind;
		}
	}

	uint8_t *x = st->xmm[reg], buf[16];
	switch (o.form) {
	case F_LOAD:
	case F_XOR:
		if (isreg) {
			memcpy(buf, st->xmm[rm], 16);
		} else {
			memset(buf, 0, sizeof buf);
			if (!mem_read(st, mo.linear, buf, o.size))
				return MB_FB_NONE;
		}
		if (o.form == F_XOR) {
			for (unsigned i = 0; i < 16; i++)
				x[i] ^= buf[i];
		} else if (isreg && o.merge) {
			memcpy(x, buf, o.size);
		} else { /* a load from memory zero-extends, and movq always */
			memset(x, 0, 16);
			memcpy(x, buf, o.size);
		}
		st->sse_changed = true;
		break;
	case F_STORE:
		if (!isreg) {
			if (!mem_write(st, mo.linear, x, o.size))
				return MB_FB_NONE;
			break;
		}
		memcpy(buf, x, 16); /* rm may be reg */
		if (!o.merge)
			memset(st->xmm[rm], 0, 16);
		memcpy(st->xmm[rm], buf, o.size);
		st->sse_changed = true;
		break;
	case F_G2X: {
		uint64_t v;
		if (isreg) {
			v = st->gpr[rm];
		} else {
			uint8_t b[8];
			if (!mem_read(st, mo.linear, b, o.size))
				return MB_FB_NONE;
			v = le(b, o.size);
		}
		if (o.size == 4)
			v = (uint32_t)v;
		memset(x, 0, 16);
		put(x, v, 8);
		st->sse_changed = true;
		break;
	}
	case F_X2G:
		if (isreg) {
			st->gpr[rm] = le(x, o.size); /* 32 bits zero-extend */
		} else if (!mem_write(st, mo.linear, x, o.size)) {
			return MB_FB_NONE;
		}
		break;
	case F_LDMXCSR: {
		uint8_t b[4];
		if (!mem_read(st, mo.linear, b, 4))
			return MB_FB_NONE;
		uint32_t v = (uint32_t)le(b, 4);
		if (v & ~MXCSR_MASK) {
			mb_fb_fault(st, VEC_GP, true, 0);
			return o.kind;
		}
		st->mxcsr = v;
		st->sse_changed = true;
		break;
	}
	case F_STMXCSR: {
		uint8_t b[4];
		put(b, st->mxcsr, 4);
		if (!mem_write(st, mo.linear, b, 4))
			return MB_FB_NONE;
		break;
	}
	case F_NONE:
		return MB_FB_NONE;
	}
	mb_fb_advance(st, len);
	return o.kind;
}

/* ---- the XMM state in KVM ----------------------------------------------
 * KVM_GET_XSAVE's buffer is the XSAVE standard format (SDM vol. 1, 13.4):
 * the legacy FXSAVE area first (MXCSR at byte 24, XMM0-15 at 160), then
 * the header with XSTATE_BV at 512. A write must set XSTATE_BV bit 1
 * (SSE): with it clear, XRSTOR loads the registers' initial state (zero)
 * instead of what we wrote. Measured here (kvm_pvm): with KVM_SET_FPU,
 * which writes only the legacy area, tests/guests/fallback_sse.S failed
 * at a different check from run to run; through KVM_SET_XSAVE with the bit
 * set it passed every time. KVM_GET_FPU/KVM_SET_FPU only where KVM has no
 * XSAVE ioctls. */
enum { XS_MXCSR = 24, XS_XMM = 160, XS_BV = 512 };

bool mb_fb_sse_get(int fd, struct mb_fb_state *st, struct mb_fb_sse_io *io)
{
	io->xsave = ioctl(fd, KVM_GET_XSAVE, &io->u.xs) == 0;
	if (io->xsave) {
		const uint8_t *b = (const uint8_t *)io->u.xs.region;
		st->mxcsr = (uint32_t)le(b + XS_MXCSR, 4);
		memcpy(st->xmm, b + XS_XMM, sizeof st->xmm);
		return true;
	}
	if (ioctl(fd, KVM_GET_FPU, &io->u.fpu) < 0)
		return false;
	st->mxcsr = io->u.fpu.mxcsr;
	memcpy(st->xmm, io->u.fpu.xmm, sizeof st->xmm);
	return true;
}

bool mb_fb_sse_put(int fd, const struct mb_fb_state *st,
		   struct mb_fb_sse_io *io)
{
	if (io->xsave) {
		uint8_t *b = (uint8_t *)io->u.xs.region;
		put(b + XS_MXCSR, st->mxcsr, 4);
		memcpy(b + XS_XMM, st->xmm, sizeof st->xmm);
		b[XS_BV] |= 2; /* SSE state present */
		return ioctl(fd, KVM_SET_XSAVE, &io->u.xs) == 0;
	}
	io->u.fpu.mxcsr = st->mxcsr;
	memcpy(io->u.fpu.xmm, st->xmm, sizeof io->u.fpu.xmm);
	return ioctl(fd, KVM_SET_FPU, &io->u.fpu) == 0;
}

/* The emulation fallback's SSE part (fallback_sse.c) and the decoding
 * helpers fallback.c lends it. Internal to core/. */
#ifndef MB_FALLBACK_SSE_H
#define MB_FALLBACK_SSE_H

#include <linux/kvm.h>

#include "core/fallback.h"

/* Legacy prefixes and REX, as fallback.c scans them. */
struct mb_fb_px {
	unsigned len; /* bytes of prefixes, REX included */
	bool osz, asz, rep, repne, lock;
	int seg;      /* -1, or 0 es 1 cs 2 ss 3 ds 4 fs 5 gs */
	unsigned rex;
};

/* A ModRM memory operand: linear and effective address, segment, and the
 * bytes ModRM, SIB and displacement take. */
struct mb_fb_mem {
	uint64_t linear, ea;
	int seg;
	unsigned len;
};

/* From fallback.c (the same code its own instructions use). */
bool mb_fb_mode64(const struct mb_fb_state *st);
unsigned mb_fb_cpl(const struct mb_fb_state *st);
void mb_fb_advance(struct mb_fb_state *st, unsigned len);
void mb_fb_fault(struct mb_fb_state *st, uint8_t vec, bool has_err,
		 uint32_t err);
/* False when the bytes end inside the prefixes. */
bool mb_fb_prefixes(const struct mb_fb_state *st, const uint8_t *p,
		    unsigned n, struct mb_fb_px *px);
/* p points at ModRM; next_rip_base is added for RIP-relative operands.
 * False for a register operand or truncated bytes. */
bool mb_fb_modrm_mem(const struct mb_fb_state *st, const struct mb_fb_px *px,
		     const uint8_t *p, unsigned n, uint64_t next_rip_base,
		     struct mb_fb_mem *mo);
/* Segment limit / canonical checks; false after queueing #GP or #SS. */
bool mb_fb_check(struct mb_fb_state *st, const struct mb_fb_mem *mo,
		 unsigned size);

/* The SSE data moves, pxor/xorps, ldmxcsr/stmxcsr (list in
 * fallback_sse.c). MB_FB_NONE when insn is not one of them. */
enum mb_fb_insn mb_fb_sse(struct mb_fb_state *st, const uint8_t *insn,
			  unsigned n);

/* Cheap test on the bytes alone: might mb_fb_sse() want the XMM state?
 * (Only then does mb_fallback_try() read it from KVM.) */
bool mb_fb_sse_wants(const uint8_t *insn, unsigned n);

/* The vCPU's XMM registers and MXCSR in and out of KVM, for
 * mb_fallback_try(): io keeps what was read so that the write-back
 * changes nothing else. */
struct mb_fb_sse_io {
	bool xsave; /* KVM_GET_XSAVE worked (else KVM_GET_FPU) */
	union {
		struct kvm_xsave xs;
		struct kvm_fpu fpu;
	} u;
};
bool mb_fb_sse_get(int fd, struct mb_fb_state *st, struct mb_fb_sse_io *io);
bool mb_fb_sse_put(int fd, const struct mb_fb_state *st,
		   struct mb_fb_sse_io *io);

#endif

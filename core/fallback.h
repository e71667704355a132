/* The emulation fallback: completes, in userspace, instructions that KVM
 * reported it could not emulate (see fallback.c for the list and why). */
#ifndef MB_FALLBACK_H
#define MB_FALLBACK_H

#include "moonbox.h"

/* What the fallback completes; MB_FB_NONE means "not handled". */
enum mb_fb_insn {
	MB_FB_NONE,
	MB_FB_INT3,    /* CC: advance, inject #BP */
	MB_FB_CLAC,    /* 0F 01 CA */
	MB_FB_STAC,    /* 0F 01 CB */
	MB_FB_POPCNT,  /* F3 [REX] 0F B8 /r, register source */
	MB_FB_FWAIT,   /* 9B */
	MB_FB_SYSCALL, /* the clac that is really a broken syscall entry */
	MB_FB_XGETBV,  /* 0F 01 D0 */
	MB_FB_CLFLUSH, /* NP 0F AE /7, memory operand */
	MB_FB_CLFLUSHOPT, /* 66 0F AE /7, memory operand */
	MB_FB_CLWB,    /* 66 0F AE /6, memory operand */
	MB_FB_UD,      /* an encoding the CPU refuses (movbe register form): #UD */
	MB_FB_INT,     /* CD ib through the IVT or IDT */
	MB_FB_INT_TASK, /* CD ib through a task gate: a task switch */
	MB_FB_INT_VM86, /* CD ib in virtual-8086 mode (not through a task gate) */
	/* SSE (fallback_sse.c); the packed-double forms count with the
	 * packed-single ones (movupd as movups, ...). */
	MB_FB_MOVD, MB_FB_MOVQ, MB_FB_MOVSS, MB_FB_MOVSD, MB_FB_MOVUPS,
	MB_FB_MOVAPS, MB_FB_MOVDQU, MB_FB_MOVDQA, MB_FB_PXOR, MB_FB_XORPS,
	MB_FB_LDMXCSR, MB_FB_STMXCSR,
	MB_FB_KINDS
};

/* Reads len bytes of guest memory at a linear address; 0 on success. */
typedef int (*mb_fb_read_fn)(void *ctx, uint64_t linear, void *buf,
			     unsigned len);
/* Writes len bytes of guest memory at a linear address; 0 on success. */
typedef int (*mb_fb_write_fn)(void *ctx, uint64_t linear, const void *buf,
			      unsigned len);

/* The registers the executor needs, independent of KVM's structures.
 * GPRs are in instruction-encoding order: rax rcx rdx rbx rsp rbp rsi rdi
 * r8..r15 (ModRM/REX register numbers index this array directly). */
struct mb_fb_state {
	uint64_t gpr[16];
	uint64_t rip, rflags;
	struct mb_seg cs, ss;
	struct mb_seg ds, es, fs, gs; /* memory operands' segments */
	struct mb_seg tr;             /* the TSS: stack switch, task switch */
	struct mb_seg ldt;            /* loaded by a task switch */
	uint64_t cr0, cr3, cr4, efer;
	uint64_t idt_base, gdt_base;
	uint16_t idt_limit, gdt_limit;
	uint64_t xcr0;                /* what xgetbv returns for ECX = 0 */
	uint64_t star, lstar, sfmask; /* MSRs 0xC0000081, 82, 84 */
	/* The SSE registers (KVM_GET_FPU's legacy area), read only for
	 * instructions fallback_sse.c may complete; sse_valid says so. */
	bool sse_valid;
	uint32_t mxcsr;
	uint8_t xmm[16][16];
	mb_fb_read_fn read;           /* NULL: no guest memory access */
	mb_fb_write_fn write;         /* NULL: nothing that pushes a frame */
	void *ctx;
	/* Outputs. The executor changes gpr/rip/rflags in place; these say
	 * what else the caller must do. */
	bool segs_changed; /* cs and ss were reloaded: write them back */
	bool dsegs_changed; /* ds, es, fs and gs too */
	bool task_switched; /* every segment, tr, ldt, cr0 and cr3 */
	bool sse_changed;   /* xmm and mxcsr: write them back */
	bool inject;       /* deliver exception inject_vec */
	bool inject_has_err; /* ... with error code inject_err */
	uint8_t inject_vec;
	uint32_t inject_err;
	uint64_t inject_dr6; /* DR6 bits the #DB sets (BT: a TSS's T bit) */
};

/* Decode and complete the instruction insn[0..n) on st. Returns the kind
 * completed, or MB_FB_NONE (registers untouched, outputs false) for
 * anything it does not know, a truncated instruction, or one that would
 * #UD. Pure: no KVM, no I/O except st->read. */
enum mb_fb_insn mb_fallback_exec(struct mb_fb_state *st, const uint8_t *insn,
				 unsigned n);

/* Name of a kind ("clac", ...), NULL when out of range or MB_FB_NONE. */
const char *mb_fallback_name(enum mb_fb_insn k);

/* Try to complete the instruction whose bytes are insn[0..n) on vCPU cpu
 * (called from that vCPU's thread on an emulation-failure exit). Returns
 * true when it did (the guest can go on). */
bool mb_fallback_try(struct mb_machine *m, unsigned cpu, const uint8_t *insn,
		     unsigned n);

/* mb_fallback_counts() is public: moonbox.h. */

#endif

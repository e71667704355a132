/* at: 0x100000 */
/* The emulation fallback's SSE instructions (core/fallback_sse.c) from a
 * long-mode guest at CPL 0, as Linux runs them inside kernel_fpu_begin():
 * movd/movq between GPRs, memory and XMM registers (xmm15 needs REX),
 * pxor, movdqu/movaps/movss, ldmxcsr/stmxcsr, then #NM with CR0.TS set.
 * Where KVM runs some of these itself the guest passes all the same.
 * Exits 0x600d; a failed check exits 0xf01-0xf1f, an unexpected exception
 * 0xe00 + vector. */
#include "guest.h"

#define KSTACK 0x80000

	.code64
	.globl _start
_start:
	mov	$KSTACK, %rsp
	lgdt	gdtr(%rip)
	pushq	$0x08
	lea	1f(%rip), %rax
	pushq	%rax
	lretq
1:	mov	$0x10, %ax
	mov	%ax, %ds
	mov	%ax, %es
	mov	%ax, %ss
	lea	nm_handler(%rip), %rax
	mov	$7, %edi
	call	set_gate
	lea	ud_handler(%rip), %rax
	mov	$6, %edi
	call	set_gate
	lea	gp_handler(%rip), %rax
	mov	$13, %edi
	call	set_gate
	lidt	idtr(%rip)

	/* SSE on as an OS turns it on: CR0.EM clear, CR0.MP set, CR4.OSFXSR
	 * (and OSXMMEXCPT) set (SDM vol. 3, 13.1.3). */
	mov	%cr0, %rax
	and	$~0xc, %rax		/* EM, TS */
	or	$0x2, %rax		/* MP */
	mov	%rax, %cr0
	mov	%cr4, %rax
	or	$0x600, %rax
	mov	%rax, %cr4

	/* movd %ecx,%xmm15 (Debian's kernel stopped here), movq back */
	movabs	$0x55aa55aacafef00d, %rcx
	movd	%ecx, %xmm15
	movq	%xmm15, %rax
	mov	$0xcafef00d, %edx
	cmp	%rdx, %rax
	jne	fail1
	/* movq %rcx,%xmm1; movd %xmm1,%eax zero-extends */
	movq	%rcx, %xmm1
	mov	$-1, %rax
	movd	%xmm1, %eax
	cmp	%rdx, %rax
	jne	fail2
	/* memory: movq to and from, movd to */
	movq	%xmm1, scratch(%rip)
	cmp	%rcx, scratch(%rip)
	jne	fail3
	movq	scratch(%rip), %xmm2
	movq	%xmm2, %rax
	cmp	%rcx, %rax
	jne	fail4
	/* pxor: xmm2 ^= xmm1 is zero */
	pxor	%xmm1, %xmm2
	movq	%xmm2, %rax
	test	%rax, %rax
	jnz	fail5
	/* 128 bits through memory: movdqu to an odd address, movaps back */
	movq	%rcx, %xmm3
	movdqu	%xmm3, scratch + 1(%rip)
	movdqu	scratch + 1(%rip), %xmm4
	movq	%xmm4, %rax
	cmp	%rcx, %rax
	jne	fail6
	movaps	%xmm3, scratch + 32(%rip)
	movaps	scratch + 32(%rip), %xmm5
	movq	%xmm5, %rax
	cmp	%rcx, %rax
	jne	fail7
	/* movss from memory zeroes 127:32 */
	movl	$0x3f800000, scratch(%rip)
	movss	scratch(%rip), %xmm5
	movq	%xmm5, %rax
	cmp	$0x3f800000, %rax
	jne	fail8
	/* ldmxcsr / stmxcsr: round trip of a value with FTZ and DAZ */
	movl	$0x9fc0, scratch(%rip)
	ldmxcsr	scratch(%rip)
	movl	$0, scratch + 4(%rip)
	stmxcsr	scratch + 4(%rip)
	cmpl	$0x9fc0, scratch + 4(%rip)
	jne	fail9
	/* a reserved MXCSR bit: #GP(0) */
	lea	1f(%rip), %rax
	mov	%rax, resume(%rip)
	movl	$0x10000, scratch(%rip)
	ldmxcsr	scratch(%rip)
	jmp	fail10
1:	cmpb	$13, vec_seen(%rip)
	jne	fail11

	/* CR0.TS: the next SSE instruction raises #NM, which clts clears */
	mov	%cr0, %rax
	or	$0x8, %rax
	mov	%rax, %cr0
	lea	1f(%rip), %rax
	mov	%rax, resume(%rip)
	movd	%ecx, %xmm15
	jmp	fail12
1:	cmpb	$7, vec_seen(%rip)
	jne	fail13
	clts
	movd	%ecx, %xmm15
	movq	%xmm15, %rax
	cmp	%rdx, %rax
	jne	fail14
	exit_with 0x600d

/* An expected exception: back to resume on the interrupted stack, the
 * vector in vec_seen. Unexpected ones exit 0xe00 + vector. */
nm_handler:
	movb	$7, vec_seen(%rip)
	jmp	resume_or_die
gp_handler:
	movb	$13, vec_seen(%rip)
	add	$8, %rsp		/* the error code */
	jmp	resume_or_die
ud_handler:
	exit_with 0xe06
resume_or_die:
	mov	resume(%rip), %rax
	test	%rax, %rax
	jz	1f
	movq	$0, resume(%rip)
	mov	24(%rsp), %rsp
	jmp	*%rax
1:	movzbl	vec_seen(%rip), %eax
	add	$0xe00, %eax
	mov	$EXIT_PORT, %dx
	outl	%eax, %dx
	cli
	hlt

/* rax = handler, edi = vector: a 64-bit interrupt gate, CS 0x08. */
set_gate:
	shl	$4, %edi
	lea	idt(%rip), %rdx
	add	%rdx, %rdi
	mov	%ax, (%rdi)
	movw	$0x08, 2(%rdi)
	movw	$0x8e00, 4(%rdi)
	shr	$16, %rax
	mov	%ax, 6(%rdi)
	shr	$16, %rax
	mov	%eax, 8(%rdi)
	movl	$0, 12(%rdi)
	ret

fail1:	exit_with 0xf01
fail2:	exit_with 0xf02
fail3:	exit_with 0xf03
fail4:	exit_with 0xf04
fail5:	exit_with 0xf05
fail6:	exit_with 0xf06
fail7:	exit_with 0xf07
fail8:	exit_with 0xf08
fail9:	exit_with 0xf09
fail10:	exit_with 0xf10
fail11:	exit_with 0xf11
fail12:	exit_with 0xf12
fail13:	exit_with 0xf13
fail14:	exit_with 0xf14

vec_seen: .byte 0
	.balign 8
resume: .quad 0
	.balign 64
scratch: .fill 64, 1, 0
	.balign 8
gdt:	.quad 0
	.quad 0x00af9a000000ffff	/* 0x08 kernel code, 64-bit */
	.quad 0x00cf92000000ffff	/* 0x10 kernel data */
gdt_end:
gdtr:	.word gdt_end - gdt - 1
	.quad gdt
idtr:	.word 256 * 16 - 1
	.quad idt
	.balign 16
idt:	.fill 256 * 16, 1, 0

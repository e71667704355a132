/* at: 0x100000 */
/* The emulation fallback (core/fallback.c) from inside a long-mode guest:
 * stac/clac, popcnt (64/32/16-bit, REX registers, ZF), fwait, int3 through
 * an IDT gate, xgetbv (#UD without CR4.OSXSAVE, XCR0 with it when CPUID
 * has XSAVE), clflush/clflushopt/clwb, movbe's register form (#UD), `int
 * $0x40` at CPL 0, then a `syscall` from user mode into LSTAR. Where KVM runs
 * these itself the guest passes all the same. Exits 0x600d; a failed check
 * exits 0xf01-0xf1f, an unexpected exception 0xe00 + vector. */
#include "guest.h"

#define KSTACK     0x80000
#define RSP0       0x70000   /* kernel stack for exceptions from user mode */
#define USER_CODE  0x200000  /* in the 2-4 MiB page, made user-accessible */
#define USER_STACK 0x3ff000
#define USER_FLAGS 0x246     /* IF ZF PF: what R11 must bring back */
#define SFMASK     0x257fd5  /* Linux's */

	.code64
	.globl _start
_start:
	mov	$KSTACK, %rsp
	/* Our own GDT: kernel code/data, user data/code, a TSS (for RSP0). */
	lea	tss(%rip), %rax
	mov	%ax, gdt + 0x32(%rip)
	shr	$16, %rax
	mov	%al, gdt + 0x34(%rip)
	mov	%ah, gdt + 0x37(%rip)
	shr	$16, %rax
	mov	%eax, gdt + 0x38(%rip)
	lgdt	gdtr(%rip)
	pushq	$0x08
	lea	1f(%rip), %rax
	pushq	%rax
	lretq
1:	mov	$0x10, %ax
	mov	%ax, %ds
	mov	%ax, %es
	mov	%ax, %ss
	mov	$0x30, %ax
	ltr	%ax

	lea	bp_handler(%rip), %rax
	mov	$3, %edi
	call	set_gate
	lea	ud_handler(%rip), %rax
	mov	$6, %edi
	call	set_gate
	lea	gp_handler(%rip), %rax
	mov	$13, %edi
	call	set_gate
	lea	pf_handler(%rip), %rax
	mov	$14, %edi
	call	set_gate
	lidt	idtr(%rip)

	/* stac / clac: RFLAGS.AC (bit 18) */
	stac
	pushfq
	pop	%rax
	bt	$18, %rax
	jnc	fail1
	clac
	pushfq
	pop	%rax
	bt	$18, %rax
	jc	fail2

	/* popcnt */
	movabs	$0xffffffff00000f0f, %rcx
	popcnt	%rcx, %rax
	cmp	$40, %rax
	jne	fail3
	mov	$-1, %rax
	popcnt	%ecx, %eax		/* 32-bit write zero-extends */
	cmp	$8, %rax
	jne	fail4
	mov	$-1, %rax
	popcnt	%cx, %ax		/* 16-bit write keeps the rest */
	movabs	$0xffffffffffff0008, %rdx
	cmp	%rdx, %rax
	jne	fail5
	mov	$0x3, %r8
	popcnt	%r8, %r9
	cmp	$2, %r9
	jne	fail6
	xor	%ecx, %ecx
	popcnt	%rcx, %rax		/* zero source: ZF */
	jnz	fail7

	fwait

	/* int3: the #BP handler checks the pushed RIP and comes back. */
	int3
after_int3:
	cmpb	$1, bp_seen(%rip)
	jne	fail8

	/* xgetbv with CR4.OSXSAVE clear: #UD; the handler resumes at ud_resume */
	lea	1f(%rip), %rax
	mov	%rax, ud_resume(%rip)
	xor	%ecx, %ecx
	xgetbv
	jmp	fail16
1:	mov	$1, %eax
	cpuid
	bt	$26, %ecx		/* XSAVE */
	jnc	2f
	mov	%cr4, %rax
	bts	$18, %rax		/* OSXSAVE */
	mov	%rax, %cr4
	xor	%ecx, %ecx
	xgetbv
	test	$1, %al			/* XCR0.x87 is always set */
	jz	fail17
	mov	%cr4, %rax
	btr	$18, %rax
	mov	%rax, %cr4
2:
	/* the cache-line flushes: nothing to see but that they complete */
	lea	scratch(%rip), %rax
	clflush	(%rax)
	clflushopt 8(%rax)
	clwb	16(%rax)

	/* movbe has no register form: 0F 38 F0 C1 must raise #UD */
	lea	1f(%rip), %rax
	mov	%rax, ud_resume(%rip)
	.byte	0x0f, 0x38, 0xf0, 0xc1
	jmp	fail18
1:
	/* int $0x40 at CPL 0 through an interrupt gate */
	lea	int_handler(%rip), %rax
	mov	$0x40, %edi
	call	set_gate
	mov	%rsp, %rbx
	int	$0x40
after_int:
	cmpb	$1, int_seen(%rip)
	jne	fail19
	cmp	%rbx, %rsp
	jne	fail20

	/* syscall from user mode. Page tables (boot_flat): PML4 0x1000,
	 * PDPT 0x2000, PD 0x3000 with 2 MiB pages; make only 2-4 MiB user. */
	orq	$4, 0x1000
	orq	$4, 0x2000
	orq	$4, 0x3008
	mov	%cr3, %rax
	mov	%rax, %cr3
	lea	user_code(%rip), %rsi
	mov	$USER_CODE, %edi
	mov	$(user_end - user_code), %ecx
	rep movsb
	mov	$0xc0000080, %ecx	/* EFER.SCE */
	rdmsr
	or	$1, %eax
	wrmsr
	mov	$0xc0000081, %ecx	/* STAR: syscall CS 0x08, SS 0x10 */
	xor	%eax, %eax
	mov	$0x00180008, %edx
	wrmsr
	mov	$0xc0000082, %ecx	/* LSTAR */
	lea	syscall_entry(%rip), %rax
	mov	%rax, %rdx
	shr	$32, %rdx
	wrmsr
	mov	$0xc0000084, %ecx	/* SFMASK */
	mov	$SFMASK, %eax
	xor	%edx, %edx
	wrmsr
	pushq	$0x23			/* SS: user data */
	pushq	$USER_STACK
	pushq	$USER_FLAGS
	pushq	$0x2b			/* CS: user code */
	pushq	$USER_CODE
	iretq

/* Runs at USER_CODE, CPL 3. */
user_code:
	syscall
	ud2
user_end:

/* Must arrive at CPL 0 with SYSCALL's register state. */
syscall_entry:
	pushfq				/* RFLAGS before any cmp changes it */
	pop	%r10
	mov	%cs, %eax
	cmp	$0x08, %eax
	jne	fail10
	mov	%ss, %eax
	cmp	$0x10, %eax
	jne	fail11
	cmp	$(USER_CODE + 2), %rcx
	jne	fail12
	cmp	$USER_STACK, %rsp
	jne	fail13
	cmp	$USER_FLAGS, %r11
	jne	fail14
	test	$SFMASK, %r10d
	jnz	fail15
	exit_with 0x600d

bp_handler:
	lea	after_int3(%rip), %rax
	cmp	%rax, (%rsp)
	jne	fail9
	movb	$1, bp_seen(%rip)
	add	$40, %rsp		/* RIP CS RFLAGS RSP SS */
	jmp	after_int3

/* The kernel-style #PF entry: clac first. Reaching the exit means the
 * syscall was not rebuilt (or a real page fault). */
pf_handler:
	clac
	exit_with 0xe0e
/* #UD where one is expected: back to ud_resume on the interrupted stack. */
ud_handler:
	mov	ud_resume(%rip), %rax
	test	%rax, %rax
	jz	1f
	movq	$0, ud_resume(%rip)
	mov	24(%rsp), %rsp
	jmp	*%rax
1:	exit_with 0xe06

/* The int $0x40 frame: RIP after the int, CS 0x08, IF cleared by the
 * interrupt gate, RSP 16-aligned before the 40-byte push. */
int_handler:
	lea	after_int(%rip), %rax
	cmp	%rax, (%rsp)
	jne	fail21
	cmpq	$0x08, 8(%rsp)
	jne	fail22
	pushfq
	pop	%rax
	bt	$9, %rax
	jc	fail23
	lea	40(%rsp), %rax
	test	$0xf, %al
	jnz	fail24
	movb	$1, int_seen(%rip)
	mov	24(%rsp), %rsp
	jmp	after_int
gp_handler:
	exit_with 0xe0d

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
fail15:	exit_with 0xf15
fail16:	exit_with 0xf16
fail17:	exit_with 0xf17
fail18:	exit_with 0xf18
fail19:	exit_with 0xf19
fail20:	exit_with 0xf20
fail21:	exit_with 0xf21
fail22:	exit_with 0xf22
fail23:	exit_with 0xf23
fail24:	exit_with 0xf24

bp_seen: .byte 0
int_seen: .byte 0
	.balign 8
ud_resume: .quad 0
	.balign 64
scratch: .fill 64, 1, 0
	.balign 8
gdt:	.quad 0
	.quad 0x00af9a000000ffff	/* 0x08 kernel code, 64-bit */
	.quad 0x00cf92000000ffff	/* 0x10 kernel data */
	.quad 0				/* 0x18 (sysret's 32-bit CS) */
	.quad 0x00cff2000000ffff	/* 0x20 user data, DPL 3 */
	.quad 0x00affa000000ffff	/* 0x28 user code, 64-bit, DPL 3 */
	.quad 0x0000890000000067	/* 0x30 TSS: base filled in above */
	.quad 0
gdt_end:
gdtr:	.word gdt_end - gdt - 1
	.quad gdt
idtr:	.word 256 * 16 - 1
	.quad idt
	.balign 16
tss:	.long 0
	.quad RSP0			/* RSP0 */
	.fill 104 - 12, 1, 0
	.balign 16
idt:	.fill 256 * 16, 1, 0

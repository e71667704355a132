/* at: 0x100000 */
/* int n through a task gate and from virtual-8086 mode, in 32-bit
 * protected mode (core/fallback.c task_gate, int_vm86). Entry 0x100000:
 * `int $0x40` through a task gate from task A (TR 0x18) to task B (0x20);
 * task B checks what the switch did (TR, NT, the back-link, A's saved EIP
 * and EAX, both busy bits, CR0.TS, its own ESP and EAX) and exits 0x600d.
 * Entry 0x100010: the same, then task B takes `int $0x42`, a task gate to
 * task C (0x28), a virtual-8086 task (EFLAGS.VM, IOPL 3) at 0700:0000,
 * whose `int $0x41` goes through a DPL 3 interrupt gate to a ring-0
 * handler that checks the nine-dword VM86 frame and the null data
 * segments, then exits 0x600d.
 * Entry 0x100020: `int $0x43`, a task gate to task D (0x30), whose TSS
 * has an LDT (0x40) with its stack segment in it (SS 0x0c, TI = 1) and a
 * DS that is no data segment (0x18, a TSS): the switch completes, then
 * #TS(0x18) is raised in task D, whose #TS handler (an interrupt gate:
 * no stack switch, on D's LDT stack) checks TR, SS, the error code and
 * the EIP/CS pushed (D's first instruction) and exits 0x600d.
 * Entry 0x100030: `int $0x44` to task E (0x38), whose TSS has the T bit:
 * a #DB in task E before its first instruction, DR6.BT set.
 * Entry 0x100040: as 0x100020, but #TS is a task gate to task F (0x48):
 * the fallback switches a second time; F checks TR, its back-link to D,
 * D's saved EIP and the error code on its own stack.
 * A failed check exits 0xf01-0xf3f, an unexpected #UD/#TS/#NP/#SS/#GP
 * 0xe00 + vector. */
#include "guest.h"

#define V86_CODE 0x7000   /* 0700:0000 */

	.code32
	.globl _start
_start:
	movl	$0, with_vm86
	jmp	setup
	.org	0x10
	movl	$1, with_vm86
	jmp	setup
	.org	0x20
	movl	$2, with_vm86
	jmp	setup
	.org	0x30
	movl	$3, with_vm86
	jmp	setup
	.org	0x40
	movl	$4, with_vm86
setup:
	mov	$0x200000, %esp
	/* TSS descriptors' bases: A at 0x18, B at 0x20, C at 0x28 */
	mov	$tss_a, %eax
	mov	$gdt + 0x18, %edi
	call	set_base
	mov	$tss_b, %eax
	mov	$gdt + 0x20, %edi
	call	set_base
	mov	$tss_c, %eax
	mov	$gdt + 0x28, %edi
	call	set_base
	mov	$tss_d, %eax
	mov	$gdt + 0x30, %edi
	call	set_base
	mov	$tss_e, %eax
	mov	$gdt + 0x38, %edi
	call	set_base
	mov	$ldt_d, %eax
	mov	$gdt + 0x40, %edi
	call	set_base
	mov	$tss_f, %eax
	mov	$gdt + 0x48, %edi
	call	set_base
	lgdt	gdtr
	ljmp	$0x08, $1f
1:	mov	$0x10, %ax
	mov	%ax, %ds
	mov	%ax, %es
	mov	%ax, %ss
	mov	%ax, %fs
	mov	%ax, %gs
	mov	$0x18, %ax
	ltr	%ax

	/* exception handlers (interrupt gates), the DPL 3 gate for VM86 */
	mov	$6, %ecx
	mov	$ud_handler, %eax
	call	set_gate
	mov	$10, %ecx
	mov	$ts_handler, %eax
	call	set_gate
	mov	$11, %ecx
	mov	$np_handler, %eax
	call	set_gate
	mov	$12, %ecx
	mov	$ss_handler, %eax
	call	set_gate
	mov	$13, %ecx
	mov	$gp_handler, %eax
	call	set_gate
	mov	$0x41, %ecx
	mov	$vm86_handler, %eax
	call	set_gate
	mov	$1, %ecx
	mov	$db_handler, %eax
	call	set_gate
	cmpl	$4, with_vm86
	jne	1f
	movl	$0x00480000, idt + 10 * 8 /* #TS: task gate to F */
	movl	$0x00008500, idt + 10 * 8 + 4
1:
	orb	$0x60, idt + 0x41 * 8 + 5 /* DPL 3 */
	lidt	idtr

	/* the virtual-8086 task's code below 1 MiB */
	mov	$v86_start, %esi
	mov	$V86_CODE, %edi
	mov	$v86_end - v86_start, %ecx
	cld
	rep movsb

	mov	$0x1234abcd, %eax
	cmpl	$2, with_vm86
	je	2f
	cmpl	$4, with_vm86
	jne	1f
2:	int	$0x43
	exit_with 0xf20 /* task D never comes back here */
1:	cmpl	$3, with_vm86
	jne	1f
	int	$0x44
	exit_with 0xf21
1:	int	$0x40
after_int:
	exit_with 0xf01 /* task B never comes back here */

/* a TSS descriptor at %edi gets base %eax */
set_base:
	mov	%ax, 2(%edi)
	shr	$16, %eax
	mov	%al, 4(%edi)
	mov	%ah, 7(%edi)
	ret

/* IDT[%ecx] = 32-bit interrupt gate to 0x08:%eax, DPL 0 */
set_gate:
	lea	idt(,%ecx,8), %edi
	mov	%ax, (%edi)
	movw	$0x08, 2(%edi)
	movw	$0x8e00, 4(%edi)
	shr	$16, %eax
	mov	%ax, 6(%edi)
	ret

task_b:
	str	%ax
	cmp	$0x20, %ax
	jne	f2
	pushf
	pop	%eax
	test	$0x4000, %eax /* NT */
	jz	f3
	cmpw	$0x18, tss_b /* previous-task link */
	jne	f4
	cmpl	$after_int, tss_a + 0x20 /* A's EIP: after the int */
	jne	f5
	cmpl	$0x1234abcd, tss_a + 0x28 /* A's EAX */
	jne	f6
	cmpb	$0x8b, gdt + 0x18 + 5 /* A stays busy (nested) */
	jne	f7
	cmpb	$0x8b, gdt + 0x20 + 5 /* B is busy */
	jne	f8
	mov	%cr0, %eax
	test	$8, %eax /* CR0.TS */
	jz	f9
	cmp	$stack_b, %esp
	jne	f10
	cmp	$0x600d, %ebx /* loaded from B's TSS */
	jne	f11
	cmpl	$0, with_vm86
	jne	1f
	exit_with 0x600d
1:	int	$0x42
	exit_with 0xf12

/* int $0x41 from virtual-8086 mode: the frame is EIP CS EFLAGS ESP SS ES
 * DS FS GS from the top of the stack; DS ES FS GS are null */
vm86_handler:
	mov	%ds, %ax
	test	%ax, %ax
	jnz	f13
	mov	%gs, %ax
	test	%ax, %ax
	jnz	f13
	mov	$0x10, %ax
	mov	%ax, %ds
	cmpl	$2, 0(%esp) /* IP after the int at 0700:0000 */
	jne	f14
	cmpl	$0x0700, 4(%esp)
	jne	f15
	testl	$0x20000, 8(%esp) /* VM */
	jz	f16
	cmpl	$0x0ff0, 12(%esp)
	jne	f17
	cmpl	$0x0800, 16(%esp)
	jne	f18
	cmpl	$0x0a00, 20(%esp) /* ES */
	jne	f19
	cmpl	$0x0900, 24(%esp) /* DS */
	jne	f19
	cmpl	$0x0b00, 28(%esp) /* FS */
	jne	f19
	cmpl	$0x0c00, 32(%esp) /* GS */
	jne	f19
	lea	36(%esp), %eax
	cmp	$stack_c0, %eax /* SS0:ESP0 from task C's TSS */
	jne	f20
	pushf
	pop	%eax
	test	$0x20200, %eax /* VM and IF cleared */
	jnz	f21
	exit_with 0x600d

f2:	exit_with 0xf02
f3:	exit_with 0xf03
f4:	exit_with 0xf04
f5:	exit_with 0xf05
f6:	exit_with 0xf06
f7:	exit_with 0xf07
f8:	exit_with 0xf08
f9:	exit_with 0xf09
f10:	exit_with 0xf0a
f11:	exit_with 0xf0b
f13:	exit_with 0xf0d
f14:	exit_with 0xf0e
f15:	exit_with 0xf0f
f16:	exit_with 0xf10
f17:	exit_with 0xf11
f18:	exit_with 0xf13
f19:	exit_with 0xf14
f20:	exit_with 0xf15
f21:	exit_with 0xf16
ud_handler:	exit_with 0xe06

/* #TS in task D: DS holds 0x18, unusable; SS is D's LDT stack */
ts_handler:
	mov	%ss, %ax
	mov	%ax, %ds /* the only data segment known good here */
	cmpl	$2, with_vm86
	jne	ts_unexpected
	str	%ax
	cmp	$0x30, %ax
	jne	f22
	mov	%ss, %ax
	cmp	$0x0c, %ax
	jne	f23
	cmpl	$0x18, 0(%esp) /* error code: the DS selector */
	jne	f24
	cmpl	$task_d, 4(%esp) /* EIP: D's first instruction, not run */
	jne	f25
	cmpl	$0x08, 8(%esp)
	jne	f26
	cmpw	$0x18, tss_d /* D's back-link: task A */
	jne	f27
	exit_with 0x600d
ts_unexpected:
	exit_with 0xe0a

/* #DB in task E (the T bit): DR6.BT, EIP E's first instruction */
db_handler:
	cmpl	$3, with_vm86
	jne	db_unexpected
	str	%ax
	cmp	$0x38, %ax
	jne	f28
	mov	%dr6, %eax
	test	$0x8000, %eax
	jz	f29
	cmpl	$task_e, 0(%esp)
	jne	f2a
	exit_with 0x600d
db_unexpected:
	exit_with 0xe01
f22:	exit_with 0xf22
f23:	exit_with 0xf23
f24:	exit_with 0xf24
f25:	exit_with 0xf25
f26:	exit_with 0xf26
f27:	exit_with 0xf27
f28:	exit_with 0xf28
f29:	exit_with 0xf29
f2a:	exit_with 0xf2a
task_d:	exit_with 0xf2b /* never runs: the #TS comes first */

/* the #TS task: D's #TS came through a task gate */
task_f:
	str	%ax
	cmp	$0x48, %ax
	jne	f2d
	cmpw	$0x30, tss_f /* back-link: task D */
	jne	f2e
	pop	%eax
	cmp	$0x18, %eax /* the error code, on F's stack */
	jne	f2f
	cmp	$stack_f, %esp
	jne	f30
	cmpl	$task_d, tss_d + 0x20 /* D saved at its first instruction */
	jne	f31
	exit_with 0x600d
f2d:	exit_with 0xf2d
f2e:	exit_with 0xf2e
f2f:	exit_with 0xf2f
f30:	exit_with 0xf30
f31:	exit_with 0xf31
task_e:	exit_with 0xf2c
np_handler:	exit_with 0xe0b
ss_handler:	exit_with 0xe0c
gp_handler:	exit_with 0xe0d

/* copied to 0700:0000 and run in virtual-8086 mode */
	.code16
v86_start:
	int	$0x41
	hlt
v86_end:
	.code32

	.data
	.balign	8
gdt:
	.quad	0
	.quad	0x00cf9a000000ffff /* 0x08 code */
	.quad	0x00cf92000000ffff /* 0x10 data */
	.quad	0x0000890000000067 /* 0x18 task A's TSS (base set above) */
	.quad	0x0000890000000067 /* 0x20 task B's */
	.quad	0x0000890000000067 /* 0x28 task C's (virtual-8086) */
	.quad	0x0000890000000067 /* 0x30 task D's */
	.quad	0x0000890000000067 /* 0x38 task E's */
	.quad	0x000082000000000f /* 0x40 task D's LDT (two entries) */
	.quad	0x0000890000000067 /* 0x48 task F's (the #TS task, entry 0x40) */
gdt_end:
gdtr:	.word	gdt_end - gdt - 1
	.long	gdt

	.balign	8
idt:
	.fill	0x40, 8, 0
	.word	0, 0x20, 0x8500, 0 /* 0x40: task gate to B */
	.quad	0                  /* 0x41: set above */
	.word	0, 0x28, 0x8500, 0 /* 0x42: task gate to C */
	.word	0, 0x30, 0x8500, 0 /* 0x43: task gate to D */
	.word	0, 0x38, 0x8500, 0 /* 0x44: task gate to E */
	.fill	0x100 - 0x45, 8, 0
idt_end:
idtr:	.word	idt_end - idt - 1
	.long	idt

with_vm86: .long 0

	.balign	16
tss_a:	.fill	0x68, 1, 0

/* B: EIP task_b, EFLAGS 2, EBX 0x600d, ESP stack_b, flat segments */
tss_b:	.long	0, 0, 0, 0, 0, 0, 0, 0 /* link, ESP0..SS2, CR3 */
	.long	task_b, 0x2
	.long	0, 0, 0, 0x600d, stack_b, 0, 0, 0 /* EAX..EDI */
	.long	0x10, 0x08, 0x10, 0x10, 0x10, 0x10, 0 /* ES CS SS DS FS GS LDT */
	.long	0x00680000 /* T clear, I/O map past the limit */

/* C: virtual-8086 at 0700:0000, stack 0800:0ff0, SS0:ESP0 0x10:stack_c0 */
tss_c:	.long	0, stack_c0, 0x10, 0, 0, 0, 0, 0
	.long	0, 0x23002 /* EIP 0; EFLAGS VM, IOPL 3 */
	.long	0, 0, 0, 0, 0x0ff0, 0, 0, 0
	.long	0x0a00, 0x0700, 0x0800, 0x0900, 0x0b00, 0x0c00, 0
	.long	0x00680000

/* D: DS 0x18 (a TSS: #TS after the switch), SS 0x0c from its LDT */
tss_d:	.long	0, 0, 0, 0, 0, 0, 0, 0
	.long	task_d, 0x2
	.long	0, 0, 0, 0, stack_d, 0, 0, 0
	.long	0x10, 0x08, 0x0c, 0x18, 0x10, 0x10, 0x40
	.long	0x00680000

/* E: flat, the T bit set */
tss_e:	.long	0, 0, 0, 0, 0, 0, 0, 0
	.long	task_e, 0x2
	.long	0, 0, 0, 0, stack_e, 0, 0, 0
	.long	0x10, 0x08, 0x10, 0x10, 0x10, 0x10, 0
	.long	0x00680001

/* F: flat, handles #TS for entry 0x100040 */
tss_f:	.long	0, 0, 0, 0, 0, 0, 0, 0
	.long	task_f, 0x2
	.long	0, 0, 0, 0, stack_f, 0, 0, 0
	.long	0x10, 0x08, 0x10, 0x10, 0x10, 0x10, 0
	.long	0x00680000

	.balign	8
ldt_d:	.quad	0
	.quad	0x00cf92000000ffff /* 0x0c: flat data, DPL 0 */

	.balign	16
	.fill	256, 1, 0
stack_d:
	.fill	256, 1, 0
stack_e:
	.fill	256, 1, 0
stack_f:
	.fill	256, 1, 0
stack_b:
	.fill	256, 1, 0
stack_c0:

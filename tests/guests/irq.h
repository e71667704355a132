/* Interrupt plumbing shared by the interrupt-driven test guests (32-bit
 * protected mode, boot_flat's flat GDT: code 0x08). Include after guest.h.
 * Each guest defines an `idt:` table of 0x30 zeroed gates and `idtr:`. */

/* IDT gate for `vec` -> `handler` (32-bit interrupt gate, DPL 0). */
.macro set_gate vec, handler
	mov	$\handler, %eax
	mov	%ax, idt + \vec * 8
	movw	$0x08, idt + \vec * 8 + 2
	movw	$0x8e00, idt + \vec * 8 + 4
	shr	$16, %eax
	mov	%ax, idt + \vec * 8 + 6
.endm

/* The IDT itself: 0x30 gates, vectors 0x20-0x2f all on `handler` until
 * set_gate picks others. */
.macro idt_init handler
	mov	$0x20, %ecx
91:	push	%ecx
	mov	$\handler, %eax
	mov	%ax, idt(,%ecx,8)
	movw	$0x08, idt + 2(,%ecx,8)
	movw	$0x8e00, idt + 4(,%ecx,8)
	shr	$16, %eax
	mov	%ax, idt + 6(,%ecx,8)
	pop	%ecx
	inc	%ecx
	cmp	$0x30, %ecx
	jb	91b
	lidt	idtr
.endm

/* ICW1-ICW4 for both 8259As: master at vector 0x20, slave at 0x28, slave
 * on IR2, 8086 mode; then OCW1 masks (a 0 bit lets the line through). */
.macro pic_init master_imr, slave_imr
	mov	$0x11, %al
	outb	%al, $0x20
	outb	%al, $0xa0
	mov	$0x20, %al
	outb	%al, $0x21
	mov	$0x28, %al
	outb	%al, $0xa1
	mov	$0x04, %al
	outb	%al, $0x21
	mov	$0x02, %al
	outb	%al, $0xa1
	mov	$0x01, %al
	outb	%al, $0x21
	outb	%al, $0xa1
	mov	$\master_imr, %al
	outb	%al, $0x21
	mov	$\slave_imr, %al
	outb	%al, $0xa1
.endm

/* Non-specific EOI to the master (and the slave first, for IRQ 8-15). */
.macro eoi_master
	mov	$0x20, %al
	outb	%al, $0x20
.endm
.macro eoi_slave
	mov	$0x20, %al
	outb	%al, $0xa0
	outb	%al, $0x20
.endm

/* Return from an interrupt without iret (which cannot be emulated on some
 * hosts, see kvm-here.md): restore EFLAGS with IF still clear, then sti,
 * whose one-instruction shadow covers the lret. Stack: EIP, CS, EFLAGS. */
.macro irq_return
	pushl	8(%esp)
	andl	$~0x200, (%esp)
	popf
	sti
	lret	$4
.endm

/* Data every guest including this needs (put it at the end). */
.macro idt_data
	.align	4
idtr:	.word	0x30 * 8 - 1
	.long	idt
	.align	8
idt:	.fill	0x30 * 8, 1, 0
.endm

/* at: 0x100000 */
/* Interrupts through the 8259A pair from the 8254: remap the PICs to
 * 0x20/0x28, run PIT channel 0 at 1 kHz, count 100 IRQ0s with EOI.
 * Then mask IRQ0 and wait ~50 ms on PIT channel 2 (gated and read back
 * through port 0x61): no IRQ0 may arrive. Exit code: 100 on success,
 * 0x200 + count if a masked interrupt came through. Handlers return with
 * popf; sti; lret (iret cannot be emulated on some hosts). */
#include "guest.h"
	.code32
	.globl _start
_start:
	mov	$0x200000, %esp
	/* IDT entries for vectors 0x20-0x2f: 32-bit interrupt gates */
	mov	$idt + 0x20 * 8, %edi
	mov	$16, %ecx
1:	mov	$irq0, %eax
	cmp	$16, %ecx
	je	2f
	mov	$spurious, %eax
2:	mov	%ax, (%edi)
	movw	$0x08, 2(%edi)
	movw	$0x8e00, 4(%edi)
	shr	$16, %eax
	mov	%ax, 6(%edi)
	add	$8, %edi
	loop	1b
	lidt	idtr

	/* ICW1-4 for both chips, then OCW1: only IRQ0 unmasked */
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
	mov	$0xfe, %al
	outb	%al, $0x21
	mov	$0xff, %al
	outb	%al, $0xa1

	/* PIT channel 0: lobyte/hibyte, mode 2, 1193 counts = 1 kHz */
	mov	$0x34, %al
	outb	%al, $0x43
	mov	$(1193 & 0xff), %al
	outb	%al, $0x40
	mov	$(1193 >> 8), %al
	outb	%al, $0x40

	sti
3:	hlt
	cmpl	$100, count
	jb	3b

	/* mask IRQ0, then five 10 ms one-shots on channel 2 */
	mov	$0xff, %al
	outb	%al, $0x21
	mov	count, %ebx
	mov	$5, %esi
4:	mov	$0x01, %al		/* gate 2 on, speaker off */
	outb	%al, $0x61
	mov	$0xb0, %al		/* channel 2, lohi, mode 0 */
	outb	%al, $0x43
	mov	$(11932 & 0xff), %al
	outb	%al, $0x42
	mov	$(11932 >> 8), %al
	outb	%al, $0x42
5:	inb	$0x61, %al		/* OUT2 is bit 5 */
	test	$0x20, %al
	jz	5b
	dec	%esi
	jnz	4b
	cli
	cmp	count, %ebx
	jne	leaked
	mov	count, %eax
	mov	$EXIT_PORT, %dx
	outl	%eax, %dx
	hlt
leaked:	mov	count, %eax
	add	$0x200, %eax
	mov	$EXIT_PORT, %dx
	outl	%eax, %dx
	hlt

irq0:	push	%eax
	incl	count
	mov	$0x20, %al		/* non-specific EOI */
	outb	%al, $0x20
	pop	%eax
	pushl	8(%esp)			/* EFLAGS copy on top */
	andl	$~0x200, (%esp)		/* keep IF off until sti */
	popf
	sti
	lret	$4			/* pop EIP, CS, and the old EFLAGS */

spurious:
	push	%eax
	incl	spurious_count
	pop	%eax
	pushl	8(%esp)
	andl	$~0x200, (%esp)
	popf
	sti
	lret	$4

	.align	4
count:	.long	0
spurious_count: .long 0
idtr:	.word	0x30 * 8 - 1
	.long	idt
	.align	8
idt:	.fill	0x30 * 8, 1, 0

/* at: 0x100000 */
/* Interrupts through the 8259A pair from the 8254: remap the PICs to
 * 0x20/0x28, run PIT channel 0 at 1 kHz, count 100 IRQ0s with EOI.
 * Then mask IRQ0 and wait ~50 ms on PIT channel 2 (gated and read back
 * through port 0x61): no IRQ0 may arrive. Exit code: 100 on success,
 * 0x200 + count if a masked interrupt came through. Handlers return with
 * popf; sti; lret (iret cannot be emulated on some hosts). */
#include "guest.h"
#include "irq.h"
	.code32
	.globl _start
_start:
	mov	$0x200000, %esp
	idt_init spurious
	set_gate 0x20, irq0
	pic_init 0xfe, 0xff		/* only IRQ0 unmasked */

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
	eoi_master
	pop	%eax
	irq_return

spurious:
	incl	spurious_count
	irq_return

	.align	4
count:	.long	0
spurious_count: .long 0
	idt_data

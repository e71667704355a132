/* at: 0x100000 */
/* COM1 against a console: print a banner polling LSR.THRE, then receive by
 * interrupt (IER = RX data; the IRQ4 handler reads RBR until LSR.DR clears
 * into a ring) and echo every byte back, until a '\n' has been echoed.
 * Exit code: the number of bytes echoed. */
#include "guest.h"
#include "irq.h"
#define COM	0x3f8

	.code32
	.globl _start
_start:
	mov	$0x200000, %esp
	idt_init spurious
	set_gate 0x24, com_isr
	pic_init 0xef, 0xff		/* only IRQ4 */

	mov	$0x80, %al		/* DLAB: divisor 1 */
	mov	$COM + 3, %dx
	outb	%al, %dx
	mov	$1, %al
	mov	$COM + 0, %dx
	outb	%al, %dx
	xor	%al, %al
	mov	$COM + 1, %dx
	outb	%al, %dx
	mov	$0x03, %al		/* 8N1 */
	mov	$COM + 3, %dx
	outb	%al, %dx
	mov	$0x07, %al		/* FIFOs on and cleared, trigger 1 */
	mov	$COM + 2, %dx
	outb	%al, %dx
	mov	$0x0b, %al		/* DTR | RTS | OUT2 */
	mov	$COM + 4, %dx
	outb	%al, %dx

	mov	$banner, %esi
1:	lodsb
	test	%al, %al
	jz	2f
	call	putc
	jmp	1b

2:	mov	$0x01, %al		/* IER: received data available */
	mov	$COM + 1, %dx
	outb	%al, %dx

	/* Main loop: echo what the handler queued; sleep when there is none
	 * (cli; check; sti; hlt: the sti shadow closes the race). */
3:	cli
	mov	tail, %ebx
	cmp	head, %ebx
	jne	4f
	sti
	hlt
	jmp	3b
4:	sti
	movzbl	ring(%ebx), %eax
	inc	%ebx
	and	$0xff, %ebx
	mov	%ebx, tail
	call	putc
	incl	echoed
	cmp	$'\n', %al
	jne	3b
	cli
	mov	echoed, %eax
	mov	$EXIT_PORT, %dx
	outl	%eax, %dx
	hlt

/* Send al once THR is empty (LSR bit 5). */
putc:	push	%eax
	mov	$COM + 5, %dx
5:	inb	%dx, %al
	test	$0x20, %al
	jz	5b
	pop	%eax
	mov	$COM, %dx
	outb	%al, %dx
	ret

/* IRQ4: move every received byte into the ring. */
com_isr:
	push	%eax
	push	%edx
	push	%ebx
1:	mov	$COM + 5, %dx
	inb	%dx, %al
	test	$1, %al
	jz	2f
	mov	$COM, %dx
	inb	%dx, %al
	mov	head, %ebx
	mov	%al, ring(%ebx)
	inc	%ebx
	and	$0xff, %ebx
	mov	%ebx, head
	jmp	1b
2:	mov	$COM + 2, %dx		/* IIR must now say "none" */
	inb	%dx, %al
	eoi_master
	pop	%ebx
	pop	%edx
	pop	%eax
	irq_return

spurious:
	irq_return

banner:	.asciz	"moonbox: com1 ready\r\n"
	.align	4
head:	.long	0
tail:	.long	0
echoed:	.long	0
ring:	.fill	256, 1, 0
	idt_data

/* at: 0x100000 */
/* A vCPU whose registers the VMM rewrote must not take an interrupt on the
 * word of the kvm_run fields of its last exit (test_irq_window.lua). The
 * guest halts in `idle` with interrupts on (its last exit says "ready,
 * IF=1"); the test then puts the vCPU in `closed` with IF clear (c:set, or
 * a snapshot restore of that state) with IRQ4 (a UART byte) pending.
 * `closed` waits with IF clear until the test sets `go`: an IRQ4 taken
 * before is the bug (exit 0x200 + count). Then sti: the byte's interrupt
 * must come (exit 100). The test finds the labels in the ELF's symbols. */
#include "guest.h"
#include "irq.h"
#define COM	0x3f8

	.code32
	.globl _start
_start:
	jmp	main
idle:	sti
	nop				/* the hlt out of the sti shadow */
1:	hlt
	jmp	1b
closed:					/* entered with IF = 0 */
	cmpl	$0, go
	je	closed
	cmpl	$0, count
	jne	leaked
	sti
2:	hlt				/* the sti shadow covers the hlt */
	cmpl	$0, count
	je	2b
	exit_with 100
leaked:	mov	count, %eax
	add	$0x200, %eax
	mov	$EXIT_PORT, %dx
	outl	%eax, %dx
	cli
	hlt

main:	mov	$0x200000, %esp
	idt_init spurious
	set_gate 0x24, com_isr
	pic_init 0xef, 0xff		/* only IRQ4 */
	mov	$0x07, %al		/* FIFOs on and cleared, trigger 1 */
	mov	$COM + 2, %dx
	outb	%al, %dx
	mov	$0x0b, %al		/* DTR | RTS | OUT2 */
	mov	$COM + 4, %dx
	outb	%al, %dx
	mov	$0x01, %al		/* IER: received data available */
	mov	$COM + 1, %dx
	outb	%al, %dx
	jmp	idle

com_isr:
	push	%eax
	push	%edx
	mov	$COM, %dx		/* RBR: clears the interrupt */
	inb	%dx, %al
	incl	count
	eoi_master
	pop	%edx
	pop	%eax
	irq_return

spurious:
	irq_return

	.align	4
count:	.long	0
go:	.long	0
	idt_data

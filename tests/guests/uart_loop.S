/* at: 0x100000 */
/* COM1 (0x3f8, IRQ4 -> vector 0x24) in loopback, polled and by interrupt:
 * 1. IIR with interrupts off: none (0xc1); received data (0xc4) outranks
 *    THRE (0xc2); reading IIR clears THRE; receiver line status (0xc6,
 *    overrun of the 16-byte FIFO) outranks data; reading LSR clears OE.
 * 2. Enabling ETBEI with THR empty raises exactly one THRE interrupt.
 * 3. 64 bytes through the loopback in bursts of 12, received in the IRQ4
 *    handler (RBR read until LSR.DR clears) at trigger level 8: both
 *    "data available" and "character timeout" interrupts must occur, and
 *    every byte must arrive, in order.
 * Exit code 0x55 on success, else step << 8 | the value seen. */
#include "guest.h"
#include "irq.h"
#define COM	0x3f8
#define NBYTES	64

.macro inreg r			/* al = register r (clobbers dx) */
	mov	$COM + \r, %dx
	inb	%dx, %al
.endm
.macro outreg r, v		/* register r = v (clobbers al, dx) */
	mov	$\v, %al
	mov	$COM + \r, %dx
	outb	%al, %dx
.endm
.macro expect v, step		/* al must be v, else fail with step */
	mov	$\step, %ebx
	cmp	$\v, %al
	jne	fail
.endm

	.code32
	.globl _start
_start:
	mov	$0x200000, %esp
	idt_init spurious
	set_gate 0x24, com_isr
	pic_init 0xef, 0xff		/* only IRQ4 */

	outreg	3, 0x80			/* DLAB: divisor 1 (115200 baud) */
	outreg	0, 1
	outreg	1, 0
	outreg	3, 0x03			/* 8N1, DLAB off */
	outreg	2, 0x07			/* FIFOs on and cleared, trigger 1 */
	outreg	4, 0x18			/* loopback | OUT2 */
	outreg	1, 0x00

	/* ---- 1: IIR priorities, polled ---- */
	inreg	2
	expect	0xc1, 1			/* nothing pending, FIFOs enabled */
	outreg	0, 0xa5			/* one byte round the loop */
	inreg	5
	expect	0x61, 2			/* LSR: DR | THRE | TEMT */
	outreg	1, 0x03			/* RDI | THRI: THR is empty -> THRE */
	inreg	2
	expect	0xc4, 3			/* data outranks THRE */
	inreg	0
	expect	0xa5, 4
	inreg	2
	expect	0xc2, 5			/* now THRE ... */
	inreg	2
	expect	0xc1, 6			/* ... which that IIR read cleared */
	outreg	1, 0x00
	mov	$17, %ecx		/* 17 bytes into 16: overrun */
1:	outreg	0, 0x5a
	loop	1b
	outreg	1, 0x05			/* RLSI | RDI */
	inreg	2
	expect	0xc6, 7			/* line status outranks data */
	inreg	5
	expect	0x63, 8			/* DR | OE | THRE | TEMT; clears OE */
	inreg	2
	expect	0xc4, 9
	outreg	2, 0x07			/* clear the FIFOs */
	inreg	2
	expect	0xc1, 10
	inreg	5
	expect	0x60, 11

	/* ---- 2: the THRE interrupt ---- */
	outreg	1, 0x00
	sti
	outreg	1, 0x02			/* ETBEI with THR empty */
	mov	$100000, %ecx
2:	cmpl	$0, thre_irqs
	jne	3f
	loop	2b
3:	mov	$1000, %ecx		/* let a second one show if it would */
4:	loop	4b
	cli
	mov	thre_irqs, %eax
	expect	1, 12
	outreg	1, 0x00

	/* ---- 3: 64 bytes received by interrupt, trigger level 8 ---- */
	outreg	2, 0x81			/* FIFO stays on; trigger 8 */
	outreg	1, 0x01			/* RDI only */
	sti
	xor	%esi, %esi		/* bytes sent */
5:	mov	$12, %ecx		/* a burst: never more than 16 queued */
6:	call	pattern
	mov	$COM, %dx
	outb	%al, %dx
	inc	%esi
	cmp	$NBYTES, %esi
	je	7f
	loop	6b
7:	mov	$1000000, %ecx		/* wait for the handler to catch up */
8:	cmp	received, %esi
	je	9f
	loop	8b
	mov	received, %eax
	mov	$13, %ebx
	jmp	fail
9:	cmp	$NBYTES, %esi
	jb	5b
	cli
	xor	%esi, %esi		/* in order? */
10:	call	pattern
	mov	$14, %ebx
	cmp	rxbuf(%esi), %al
	jne	fail
	inc	%esi
	cmp	$NBYTES, %esi
	jb	10b
	cmpl	$0, rda_irqs
	mov	$15, %ebx
	je	fail
	cmpl	$0, timeout_irqs
	mov	$16, %ebx
	je	fail
	mov	spurious_irqs, %eax
	expect	0, 17
	exit_with 0x55

/* al = byte number esi of the test pattern */
pattern:
	mov	%esi, %eax
	imul	$37, %eax
	add	$11, %eax
	ret

/* exit with ebx << 8 | al */
fail:	movzbl	%al, %eax
	shl	$8, %ebx
	or	%ebx, %eax
	mov	$EXIT_PORT, %dx
	outl	%eax, %dx
	cli
	hlt

/* IRQ4: serve every pending cause, highest first, until IIR says none. */
com_isr:
	push	%eax
	push	%edx
	push	%ebx
1:	inreg	2
	test	$1, %al
	jnz	9f
	and	$0x0f, %al
	cmp	$0x02, %al
	jne	2f
	incl	thre_irqs
	jmp	1b
2:	cmp	$0x04, %al
	jne	3f
	incl	rda_irqs
	jmp	4f
3:	cmp	$0x0c, %al
	jne	5f
	incl	timeout_irqs
4:	inreg	5			/* drain RBR while LSR.DR */
	test	$1, %al
	jz	1b
	inreg	0
	mov	received, %ebx
	and	$0xff, %ebx
	mov	%al, rxbuf(%ebx)
	incl	received
	jmp	4b
5:	inreg	5			/* line status or modem status */
	inreg	6
	jmp	1b
9:	eoi_master
	pop	%ebx
	pop	%edx
	pop	%eax
	irq_return

spurious:
	incl	spurious_irqs
	irq_return

	.align	4
thre_irqs:	.long	0
rda_irqs:	.long	0
timeout_irqs:	.long	0
spurious_irqs:	.long	0
received:	.long	0
rxbuf:		.fill	256, 1, 0
	idt_data

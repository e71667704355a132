/* at: 0x100000 */
/* Interrupt benchmark guest: PIT channel 0 drives IRQ0 (vector 0x20).
 * Parameters in guest memory, written by the host before the run:
 *   0x8000 mode: 0 latency, spinning with IF set; 1 latency, sti; hlt
 *          loop; 2 periodic (PIT mode 2), hlt forever, only counting
 *   0x8008 PIT count N (16 bits)
 * Latency (modes 0, 1): channel 0 in mode 0 (interrupt on terminal count),
 * re-armed with N by the handler, NSAMP times, then exit 0. After terminal
 * count the counter keeps going down from 0xffff, so the count the handler
 * latches first thing gives the PIT ticks (838 ns) from the due time to
 * the handler: (0x10000 - count) & 0xffff, unambiguous up to 55 ms.
 * Results: 0x800c IRQ0 count; 0x9000 NCAL pairs of back-to-back count
 * reads (the cost of one latch-and-read); 0x10000 NSAMP counts. */
#include "guest.h"
#include "irq.h"
#define MODE	0x8000
#define RELOAD	0x8008
#define COUNT	0x800c
#define IDX	0x8010
#define CAL	0x9000
#define SAMPLES	0x10000
#define NSAMP	500
#define NCAL	32

.macro pit_read			/* ax = channel 0's count, latched */
	xor	%al, %al
	outb	%al, $0x43
	inb	$0x40, %al
	mov	%al, %ah
	inb	$0x40, %al
	xchg	%al, %ah
.endm

	.code32
	.globl _start
_start:
	mov	$0x200000, %esp
	idt_init spurious
	set_gate 0x20, pit_isr
	pic_init 0xfe, 0xff		/* only IRQ0 */
	mov	$0x30, %al		/* channel 0, lobyte/hibyte, mode 0 */
	cmpl	$2, MODE
	jne	1f
	mov	$0x34, %al		/* ... or mode 2 */
1:	outb	%al, $0x43
	mov	RELOAD, %al
	outb	%al, $0x40
	mov	RELOAD + 1, %al
	outb	%al, $0x40

	mov	$CAL, %edi		/* calibration, interrupts off */
	mov	$NCAL, %ecx
1:	pit_read
	stosw
	pit_read
	stosw
	loop	1b

	sti
	mov	MODE, %eax
	cmp	$1, %eax
	je	3f
	ja	4f
2:	cmpl	$NSAMP, IDX		/* mode 0: spin */
	jb	2b
	jmp	5f
3:	hlt				/* mode 1: halt between interrupts */
	cmpl	$NSAMP, IDX
	jb	3b
	jmp	5f
4:	hlt				/* mode 2: count until stopped */
	jmp	4b
5:	exit_with 0

pit_isr:
	push	%eax
	cmpl	$2, MODE
	je	1f
	pit_read			/* as early as possible */
	push	%ebx
	mov	IDX, %ebx
	cmp	$NSAMP, %ebx
	jae	2f
	mov	%ax, SAMPLES(,%ebx,2)
	incl	IDX
	mov	RELOAD, %al		/* re-arm the one-shot */
	outb	%al, $0x40
	mov	RELOAD + 1, %al
	outb	%al, $0x40
2:	pop	%ebx
1:	incl	COUNT
	eoi_master
	pop	%eax
	irq_return

spurious:
	irq_return

	idt_data

/* at: 0x100000 */
/* The MC146818 RTC at 0x70/0x71:
 * 1. Read sec, min, hour, mday, mon, year, century once UIP (status A bit 7)
 *    is clear, again if the seconds changed meanwhile; in BCD (status B as
 *    reset), then in binary (status B DM set). Each set of seven bytes goes
 *    out to port 0x510 (a Lua device), then status B as the guest read it.
 * 2. Periodic interrupt: rate 6 (1024 Hz) in status A, PIE in status B,
 *    count NIRQ IRQ8s (slave IR0 -> vector 0x28), reading status C in the
 *    handler (which lowers the line) and EOI to slave then master. Status
 *    C's flags ANDed over all handler reads go out to 0x510 last.
 * Exit code: the number of IRQ8s counted. */
#include "guest.h"
#include "irq.h"
#define REPORT	0x510
#define NIRQ	256

.macro cmos_read idx		/* al = CMOS register idx */
	mov	$\idx, %al
	outb	%al, $0x70
	inb	$0x71, %al
.endm
.macro cmos_write idx		/* CMOS register idx = bl */
	mov	$\idx, %al
	outb	%al, $0x70
	mov	%bl, %al
	outb	%al, $0x71
.endm

	.code32
	.globl _start
_start:
	mov	$0x200000, %esp
	idt_init spurious
	set_gate 0x28, rtc_isr
	pic_init 0xfb, 0xfe		/* master: cascade; slave: IRQ8 */

	call	read_time		/* BCD */
	cmos_read 0x0b
	mov	%al, %bl
	or	$0x04, %bl		/* DM: binary */
	cmos_write 0x0b
	call	read_time		/* binary */
	cmos_read 0x0b
	call	report

	/* periodic interrupt at 1024 Hz */
	cmos_read 0x0a
	mov	%al, %bl
	and	$0x70, %bl		/* keep the divider, drop UIP */
	or	$0x06, %bl		/* rate 6: 976.5 us */
	cmos_write 0x0a
	cmos_read 0x0c			/* clear stale flags */
	cmos_read 0x0b
	mov	%al, %bl
	or	$0x40, %bl		/* PIE */
	cmos_write 0x0b
	sti
1:	hlt
	cmpl	$NIRQ, rtc_irqs
	jb	1b
	cli
	cmos_read 0x0b
	mov	%al, %bl
	and	$~0x40, %bl
	cmos_write 0x0b
	mov	and_c, %al
	call	report
	mov	rtc_irqs, %eax
	mov	$EXIT_PORT, %dx
	outl	%eax, %dx
	hlt

/* Seven date/time registers, consistent, out to REPORT. */
read_time:
1:	cmos_read 0x0a
	test	$0x80, %al		/* update in progress: wait */
	jnz	1b
	mov	$regs, %esi
	mov	$tbuf, %edi
2:	movzbl	(%esi), %eax
	cmp	$0xff, %al
	je	3f
	outb	%al, $0x70
	inb	$0x71, %al
	stosb
	inc	%esi
	jmp	2b
3:	cmos_read 0x00			/* the second rolled over: again */
	cmp	tbuf, %al
	jne	1b
	mov	$tbuf, %esi
	mov	$7, %ecx
4:	lodsb
	call	report
	loop	4b
	ret

report:	push	%edx			/* al out to the report port */
	mov	$REPORT, %dx
	outb	%al, %dx
	pop	%edx
	ret

rtc_isr:
	push	%eax
	cmos_read 0x0c			/* PF | IRQF expected; lowers IRQ8 */
	andb	%al, and_c
	incl	rtc_irqs
	eoi_slave
	pop	%eax
	irq_return

spurious:
	irq_return

regs:	.byte	0x00, 0x02, 0x04, 0x07, 0x08, 0x09, 0x32, 0xff
tbuf:	.fill	8, 1, 0
and_c:	.byte	0xff
	.align	4
rtc_irqs: .long	0
	idt_data

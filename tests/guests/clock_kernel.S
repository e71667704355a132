/* at: 0x100000 */
/* Guest time across a stop with KVM's in-kernel irqchip and PIT: reads
 * the LAPIC timer's current count (one-shot, divide by 128: 128 ns a
 * count, due 1.02 s after the start: later than this guest runs, but
 * within the hold) and the TSC just before and after the label `held` (a test
 * holds the machine there), and counts PIT ticks (100 Hz, through the
 * in-kernel 8259A) in 200 ms of LAPIC time before and after it. With guest
 * time standing still the LAPIC count and TSC move by far less than the
 * hold lasted, and the window after the hold sees about its 20 ticks,
 * not a burst of the ticks the hold missed (KVM reinjects those back to
 * back, ~2 kHz here); the LAPIC timer never fires (lapic_irqs). Then a
 * TSC-deadline timer is armed across a second stop, `held2`: dl0 and dl1
 * are IA32_TSC_DEADLINE before and after it. */
#include "guest.h"
#include "irq.h"
#define LAPIC 0xfee00000
#define WINDOW 1562500		/* 200 ms in LAPIC counts */
	.code32
	.globl _start, held, held2, ticks_a, ticks_b, tmcct0, tmcct1, tsc0, tsc1
	.globl dl0, dl1
_start:
	mov	$0x200000, %esp
	idt_init spurious
	set_gate 0x20, irq0
	set_gate 0x2e, lapic_irq		/* the slave 8259's IRQ14: masked */
	pic_init 0xfe, 0xff		/* only IRQ0 */
	mov	$0x34, %al		/* PIT channel 0: lohi, mode 2, 100 Hz */
	outb	%al, $0x43
	mov	$(11932 & 0xff), %al
	outb	%al, $0x40
	mov	$(11932 >> 8), %al
	outb	%al, $0x40
	movl	$0xa, LAPIC + 0x3e0	/* TDCR: divide by 128 */
	movl	$0x2e, LAPIC + 0x320	/* LVTT: one-shot, vector 0x2e */
	movl	$8000000, LAPIC + 0x380	/* TMICT: 1.024 s */
	sti
1:	hlt				/* start the windows on a tick */
	cmpl	$2, count
	jb	1b
	call	window
	mov	%eax, ticks_a
	mov	LAPIC + 0x390, %eax	/* TMCCT */
	mov	%eax, tmcct0
	rdtsc
	mov	%eax, tsc0
	mov	%edx, tsc0 + 4
held:	nop
	rdtsc
	mov	%eax, tsc1
	mov	%edx, tsc1 + 4
	mov	LAPIC + 0x390, %eax
	mov	%eax, tmcct1
	call	window
	mov	%eax, ticks_b
	/* a TSC-deadline timer across a second stop, `held2`: due in 2^40
	 * cycles, IA32_TSC_DEADLINE reads back the same after it */
	movl	$0x4002e, LAPIC + 0x320	/* LVTT: TSC-deadline, vector 0x2e */
	rdtsc
	add	$0x100, %edx
	mov	$0x6e0, %ecx
	wrmsr
	rdmsr
	mov	%eax, dl0
	mov	%edx, dl0 + 4
held2:	rdmsr
	mov	%eax, dl1
	mov	%edx, dl1 + 4
	cli
	xor	%eax, %eax
	mov	$EXIT_PORT, %dx
	outl	%eax, %dx
	hlt

/* PIT ticks in WINDOW LAPIC counts -> eax */
window:	mov	count, %esi
	mov	LAPIC + 0x390, %ebx
4:	mov	%ebx, %eax
	sub	LAPIC + 0x390, %eax
	cmp	$WINDOW, %eax
	jb	4b
	mov	count, %eax
	sub	%esi, %eax
	ret

irq0:	push	%eax
	incl	count
	eoi_master
	pop	%eax
	irq_return

lapic_irq:
	incl	lapic_irqs
	movl	$0, LAPIC + 0xb0	/* LAPIC EOI */
	irq_return

spurious:
	irq_return

	.align	8
tsc0:	.quad	0
tsc1:	.quad	0
dl0:	.quad	0
dl1:	.quad	0
count:	.long	0
ticks_a: .long	0
ticks_b: .long	0
tmcct0:	.long	0
tmcct1:	.long	0
lapic_irqs: .long 0
	idt_data

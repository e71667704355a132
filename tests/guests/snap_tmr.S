/* at: 0x100000 */
/* For campaign shrinking (tests/lua/test_campaign.lua): a counter kept
 * three times (triple modular redundancy, dwords at 0x300000, 0x301000,
 * 0x302000, one page each). Every step reads the three copies, takes the
 * bitwise majority, adds one, writes it to all three and prints
 * "c=XXXXXXXX\n" on COM1 (polled). A flipped bit in one copy is outvoted;
 * the same bit flipped in two copies wins the vote and the count goes
 * wrong. Every 8th step it writes the count to debug_exit and goes on when
 * run again; at 64 it exits with 0x99. */
#include "guest.h"
#define COM	0x3f8
#define A	0x300000
#define B	0x301000
#define C	0x302000

	.code32
	.globl _start
_start:
	mov	$0x200000, %esp
step:	mov	A, %eax
	mov	B, %ebx
	mov	C, %ecx
	mov	%eax, %edx		/* edx = ab | ac | bc */
	and	%ebx, %edx
	mov	%eax, %esi
	and	%ecx, %esi
	or	%esi, %edx
	mov	%ebx, %esi
	and	%ecx, %esi
	or	%esi, %edx
	inc	%edx
	mov	%edx, A
	mov	%edx, B
	mov	%edx, C
	mov	%edx, %esi
	mov	$'c', %al
	call	putc
	mov	$'=', %al
	call	putc
	mov	$8, %ecx
1:	rol	$4, %esi
	mov	%esi, %eax
	and	$15, %eax
	mov	hex(%eax), %al
	call	putc
	loop	1b
	mov	$'\n', %al
	call	putc
	mov	A, %eax
	cmp	$64, %eax
	jae	done
	test	$7, %eax
	jnz	step
	mov	$EXIT_PORT, %dx		/* checkpoint: run() returns here */
	outl	%eax, %dx
	jmp	step
done:	exit_with 0x99

/* al -> COM1 once THR is empty (clobbers edx) */
putc:	push	%eax
	mov	$COM + 5, %dx
2:	inb	%dx, %al
	test	$0x20, %al
	jz	2b
	pop	%eax
	mov	$COM, %dx
	outb	%al, %dx
	ret

hex:	.ascii	"0123456789abcdef"

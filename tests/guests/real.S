/* at: 0x7c00 */
/* Real mode: 16-bit arithmetic and a far data access through a segment. */
#include "guest.h"
	.code16
	.globl _start
_start:
	mov	$0x07c0, %ax
	mov	%ax, %ds
	movw	(value - 0x7c00), %bx	/* ds:offset = 0x7c00 + off */
	mov	$0x510, %dx
	mov	$'R', %al
	outb	%al, %dx
	mov	%bx, %ax
	mov	$EXIT_PORT, %dx
	outw	%ax, %dx
	hlt
value:	.word	0x1016

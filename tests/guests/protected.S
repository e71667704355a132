/* at: 0x100000 */
/* 32-bit protected mode: a 32-bit immediate, a far return through the GDT
 * (proves CS 0x08 is a flat 32-bit code segment), then exit 0x20. */
#include "guest.h"
	.code32
	.globl _start
_start:
	mov	$0x200000, %esp
	mov	$0x510, %dx
	mov	$'P', %al
	outb	%al, %dx
	pushl	$0x08
	pushl	$1f
	lret
1:	mov	$0x12340000, %eax
	shr	$16, %eax
	cmp	$0x1234, %eax
	jne	bad
	exit_with 0x20
bad:	exit_with 0xbad

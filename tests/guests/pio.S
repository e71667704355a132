/* at: 0x100000 */
/* Every PIO width: writes 0x11, 0x2233, 0x44556677 to port 0x520, reads
 * back 1, 2 and 4 bytes from 0x520 and echoes each value, at the same
 * width, to port 0x524 for the test to check. */
#include "guest.h"
	.code32
	.globl _start
_start:
	mov	$0x520, %dx
	mov	$0x11, %al
	outb	%al, %dx
	mov	$0x2233, %ax
	outw	%ax, %dx
	mov	$0x44556677, %eax
	outl	%eax, %dx
	inb	%dx, %al
	mov	$0x524, %dx
	outb	%al, %dx
	mov	$0x520, %dx
	inw	%dx, %ax
	mov	$0x524, %dx
	outw	%ax, %dx
	mov	$0x520, %dx
	inl	%dx, %eax
	mov	$0x524, %dx
	outl	%eax, %dx
	exit_with 0

/* at: 0x100000 */
/* Benchmark guest (32-bit protected mode, flat segments, no GDT reload):
 * 100,000 `in`s from port 0x80, then exit through debug_exit (port 0xf4). */
#include "guest.h"
	.code32
	.globl _start
_start:
	mov	$100000, %ecx
	mov	$0x80, %dx
1:	inb	%dx, %al
	dec	%ecx
	jnz	1b
	xor	%eax, %eax
	outb	%al, $0xf4
	hlt

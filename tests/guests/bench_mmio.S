/* at: 0x100000 */
/* Benchmark guest: 100,000 MMIO writes to 0xd0000000 (no RAM there, so each
 * one exits to the VMM), then exit through debug_exit (port 0xf4). */
#include "guest.h"
	.code32
	.globl _start
_start:
	mov	$100000, %ecx
1:	movl	%ecx, 0xd0000000
	dec	%ecx
	jnz	1b
	xor	%eax, %eax
	outb	%al, $0xf4
	hlt

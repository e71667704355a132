/* at: 0x100000 */
/* Faults at the process boundary (test_isolate.lua): 20 rounds of a read
 * of port 0x80 (an isolated port80 with fill 0x5a) and a write of the
 * round's count to it, then exit through debug_exit (port 0xf4) with the
 * number of reads that did not give 0x5a. */
#include "guest.h"
	.code32
	.globl _start
_start:
	xor	%ebx, %ebx
	mov	$20, %ecx
1:	inb	$0x80, %al
	cmp	$0x5a, %al
	je	2f
	inc	%ebx
2:	mov	%cl, %al
	outb	%al, $0x80
	dec	%ecx
	jnz	1b
	mov	%bl, %al
	outb	%al, $0xf4
	hlt

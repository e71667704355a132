/* at: 0x100000 */
/* Spins until EAX holds 0x1234 (set by the test while paused), then exits
 * with EAX + 1. Also the timeout guest: nobody sets EAX. */
#include "guest.h"
	.code32
	.globl _start
_start:
	xor	%eax, %eax
1:	cmp	$0x1234, %eax
	jne	1b
	inc	%eax
	mov	$EXIT_PORT, %dx
	outl	%eax, %dx
	hlt

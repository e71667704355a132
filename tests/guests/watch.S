/* at: 0x100000 */
/* Read watches on a page the guest also executes from (64-bit): `cvar`
 * shares the first page with code; code on the second page reads it,
 * writes it and reads it again, then jumps back. Exits with cvar (0x1235). */
#include "guest.h"
	.code64
	.globl _start, back, cvar, far, r1, w1, r2
_start:	xor	%ecx, %ecx
	jmp	far
back:	mov	$EXIT_PORT, %dx
	outl	%eax, %dx
	hlt
	.balign	16
cvar:	.long	0x1234
	.balign	4096
far:	mov	cvar, %eax
r1:	add	$1, %eax
	mov	%eax, cvar
w1:	mov	cvar, %eax
r2:	jmp	back

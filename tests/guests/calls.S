/* at: 0x100000 */
/* Backtraces (64-bit kernel mode): _start calls outer, which calls inner,
 * both with frame pointers; `deep` is inside inner. Exits 9. */
#include "guest.h"
	.code64
	.globl _start, outer, inner, deep
_start:	mov	$0x180000, %rsp
	xor	%ebp, %ebp
	call	outer
	exit_with 9
outer:	push	%rbp
	mov	%rsp, %rbp
	call	inner
	pop	%rbp
	ret
inner:	push	%rbp
	mov	%rsp, %rbp
deep:	nop
	pop	%rbp
	ret

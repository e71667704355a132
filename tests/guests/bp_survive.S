/* at: 0x100000 */
/* Software breakpoints that survive the guest writing over them (64-bit,
 * kernel mode). The code page `page` holds `wvar` (a write watch shares
 * the page), the routine `target` that the guest overwrites with new
 * code the way a decompressor would (two 8-byte stores, each straddling
 * a breakpoint byte), and `target2`, whose neighbours (not it) the guest
 * writes. Exits with (what target returned) << 8 | what target2 returned:
 * 0x7722 when the new code ran as written. */
#include "guest.h"
	.code64
	.globl _start, page, wvar, target, target_add, target2, before2, after2
_start:	mov	$0x200000, %rsp
	movl	$1, wvar		/* a watch on the shared page */
	mov	newc, %rax		/* newc[0..8) -> target-4 .. target+4 */
	mov	%rax, target - 4
	mov	newc + 8, %rax		/* newc[8..16) -> target+4 .. target+12 */
	mov	%rax, target + 4
	call	target
	mov	%eax, %ebx
	movb	$0x5a, before2		/* the bytes either side of target2 */
	movw	$0xa5a5, after2
	call	target2
	shl	$8, %ebx
	or	%ebx, %eax
	mov	$EXIT_PORT, %dx
	outl	%eax, %dx
	hlt

	/* the new code, 16 bytes for target-4 .. target+12 */
newc:	nop; nop; nop; nop
	mov	$0x70, %eax		/* 5 bytes: target */
	add	$7, %eax		/* 3 bytes: target+5 */
	ret				/* target+8 */
	nop; nop; nop

	.balign	4096
page:
wvar:	.long	0
	nop; nop; nop; nop
target:	xor	%eax, %eax		/* the old code (31 c0): never runs */
	ret
	.byte	0, 0, 0, 0, 0, 0, 0, 0, 0
	.set	target_add, target + 5
	.balign	16
before2: .byte	0
target2: mov	$0x22, %eax
	ret
after2:	.word	0

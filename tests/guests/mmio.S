/* at: 0x100000 */
/* MMIO at every width (long mode, for the 8-byte access): writes to
 * 0xd0000000 at offsets 0, 2, 4 and 8, reads 1, 2, 4 and 8 bytes at offset
 * 0x10 and echoes each to offset 0x20 with the same width. */
#include "guest.h"
	.code64
	.globl _start
_start:
	mov	$0xd0000000, %ebx
	movb	$0x11, (%rbx)
	movw	$0x2233, 2(%rbx)
	movl	$0x44556677, 4(%rbx)
	movabs	$0x8899aabbccddeeff, %rax
	mov	%rax, 8(%rbx)
	movb	0x10(%rbx), %al
	movb	%al, 0x20(%rbx)
	movw	0x10(%rbx), %ax
	movw	%ax, 0x20(%rbx)
	movl	0x10(%rbx), %eax
	movl	%eax, 0x20(%rbx)
	mov	0x10(%rbx), %rax
	mov	%rax, 0x20(%rbx)
	exit_with 0

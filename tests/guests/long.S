/* at: 0x100000 */
/* 64-bit long mode: a 64-bit register and memory above 2 MiB through the
 * identity page tables. Exits with 0x40. */
#include "guest.h"
	.code64
	.globl _start
_start:
	mov	$0x510, %dx
	mov	$'L', %al
	outb	%al, %dx
	movabs	$0x4000000000, %rax
	mov	%rax, 0x300000		/* 3 MiB: second 2 MiB page */
	mov	0x300000, %rbx
	shr	$32, %rbx
	mov	%ebx, %eax
	mov	$EXIT_PORT, %dx
	outl	%eax, %dx
	hlt

/* at: 0x100000 */
/* For snapshot tests: counts in RAM (the dword at 0x300000) and prints
 * "c=XXXXXXXX\n" on COM1 (polled) for every step, touching one page of a
 * 64 KiB buffer per step. Every 8th step it writes the count to debug_exit
 * and goes on when run again (a checkpoint); at 64 it exits with 0x99. */
#include "guest.h"
#define COM	0x3f8
#define COUNT	0x300000
#define BUF	0x310000

	.code32
	.globl _start
_start:
	mov	$0x200000, %esp
step:	incl	COUNT
	mov	COUNT, %eax
	mov	%eax, %ebx		/* touch page (count % 16) of BUF */
	and	$15, %ebx
	shl	$12, %ebx
	mov	%eax, BUF(%ebx)
	mov	$'c', %al
	call	putc
	mov	$'=', %al
	call	putc
	mov	COUNT, %esi
	mov	$8, %ecx
1:	rol	$4, %esi
	mov	%esi, %eax
	and	$15, %eax
	mov	hex(%eax), %al
	call	putc
	loop	1b
	mov	$'\n', %al
	call	putc
	mov	COUNT, %eax
	cmp	$64, %eax
	jae	done
	test	$7, %eax
	jnz	step
	mov	$EXIT_PORT, %dx		/* checkpoint: run() returns here */
	outl	%eax, %dx
	jmp	step
done:	exit_with 0x99

/* al -> COM1 once THR is empty (clobbers edx) */
putc:	push	%eax
	mov	$COM + 5, %dx
2:	inb	%dx, %al
	test	$0x20, %al
	jz	2b
	pop	%eax
	mov	$COM, %dx
	outb	%al, %dx
	ret

hex:	.ascii	"0123456789abcdef"

/* at: 0x100000 */
/* Posted writes (test_isolate.lua): an isolated UART and debug_exit with
 * posted = true. 1000 writes of the UART's scratch register (0x3ff) with
 * no read between them, then a read that must see the last one (1); then
 * 200 rounds of a write and a read back; then exit 0x2a through a posted
 * debug_exit write followed at once by cli; hlt (the exit must not be
 * lost to the halt). A wrong read exits 0x55. */
#include "guest.h"
	.code32
	.globl _start
_start:
	mov	$0x3ff, %dx
	mov	$1000, %ecx
1:	mov	%cl, %al
	outb	%al, %dx
	dec	%ecx
	jnz	1b
	inb	%dx, %al
	cmp	$1, %al
	jne	9f
	mov	$200, %ecx
2:	mov	%cl, %al
	outb	%al, %dx
	inb	%dx, %al
	cmp	%cl, %al
	jne	9f
	dec	%ecx
	jnz	2b
	mov	$0x2a, %al
	outb	%al, $0xf4
	cli
	hlt
9:	mov	$0x55, %al
	outb	%al, $0xf4
	cli
	hlt

/* at: 0x100000 */
/* A tiny 32-bit protected-mode guest: writes a greeting, one byte at a
 * time, to port 0x510 (a device written in Lua, see hello.lua), then ends
 * the run through debug_exit (port 0xf4) with exit code 0. */
	.code32
	.globl _start
_start:
	mov	$msg, %esi
	mov	$0x510, %dx
1:	lodsb
	test	%al, %al
	jz	2f
	outb	%al, %dx
	jmp	1b
2:	xor	%eax, %eax
	mov	$0xf4, %dx
	outl	%eax, %dx
	hlt
msg:	.asciz	"Hello from a moonbox guest!\n"

/* at: 0x100000 */
/* POST codes 0x11 then 0x5a to port 0x80; then reset through the 8042:
 * wait (bounded) for its input buffer to be empty, write command 0xfe
 * (pulse output port bit 0, the CPU reset line) to port 0x64. If nothing
 * resets the machine, exit with 0x99. */
#include "guest.h"
	.code32
	.globl _start
_start:
	mov	$0x11, %al
	outb	%al, $0x80
	mov	$0x5a, %al
	outb	%al, $0x80
	mov	$1000, %ecx
1:	inb	$0x64, %al		/* status bit 1: input buffer full */
	test	$0x02, %al
	loopnz	1b
	mov	$0xfe, %al
	outb	%al, $0x64
	exit_with 0x99

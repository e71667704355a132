/* at: 0x100000 */
/* Prints "booting...\nlogin: " on COM1, one byte at a time, then spins
 * (console tests: m:wait_for { console = "login:" }). */
#include "guest.h"
	.code32
	.globl _start, spin
_start:	mov	$msg, %esi
	mov	$0x3f8, %dx
1:	lodsb
	test	%al, %al
	jz	spin
	outb	%al, %dx
	jmp	1b
spin:	pause
	jmp	spin
msg:	.asciz	"booting...\nlogin: "

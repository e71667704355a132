/* at: 0x100000 */
/* Guest time across a stop: read the RTC seconds (binary mode), pass the
 * label `held` (a test holds the machine there), read them again and exit
 * with the difference (mod 60). With guest time standing still while held,
 * a hold of seconds shows as 0 or 1. */
#include "guest.h"
	.code32
	.globl _start, held
_start:
	mov	$0x0b, %al		/* status B: DM (binary), 24-hour */
	outb	%al, $0x70
	mov	$0x06, %al
	outb	%al, $0x71
	mov	$0x00, %al		/* seconds */
	outb	%al, $0x70
	inb	$0x71, %al
	movzbl	%al, %ebx
held:	nop
	mov	$0x00, %al
	outb	%al, $0x70
	inb	$0x71, %al
	movzbl	%al, %eax
	sub	%ebx, %eax
	jns	1f
	add	$60, %eax
1:	mov	$EXIT_PORT, %dx
	outl	%eax, %dx
	hlt

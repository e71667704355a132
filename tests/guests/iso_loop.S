/* at: 0x100000 */
/* Device-process crash tests (test_isolate.lua): 40,000 rounds of a read
 * and a write of port 0x80 (an isolated port80), then exit 0x2a through
 * debug_exit (port 0xf4). A dead device's reads return 0xff; the guest
 * does not care, it only has to keep running. */
#include "guest.h"
	.code32
	.globl _start
_start:
	mov	$40000, %ecx
1:	inb	$0x80, %al
	mov	%cl, %al
	outb	%al, $0x80
	dec	%ecx
	jnz	1b
	mov	$0x2a, %al
	outb	%al, $0xf4
	hlt

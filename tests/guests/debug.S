/* at: 0x100000 */
/* The debugger's guest (64-bit, kernel mode): five turns of a loop that
 * stores the counter in `var`, alone on its own page (watchpoints), then
 * exits with var. Every instruction has a label: tests step and break at
 * them (addresses from `nm build/guests/debug.elf`). */
#include "guest.h"
	.code64
	.globl _start, l1, loop, l3, l4, l5, done, var
_start:	xor	%ecx, %ecx
l1:	mov	$5, %ebx
loop:	inc	%ecx
l3:	mov	%ecx, var
l4:	dec	%ebx
l5:	jnz	loop
done:	mov	var, %eax
	mov	$EXIT_PORT, %dx
	outl	%eax, %dx
	hlt
	.balign	4096
var:	.long	0

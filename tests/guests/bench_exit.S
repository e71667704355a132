/* at: 0x100000 */
/* Benchmark guest for start-up time: one `out` to port 0x80 (the VMM stamps
 * the time of this first exit), then exit through debug_exit (port 0xf4). */
#include "guest.h"
	.code32
	.globl _start
_start:
	outb	%al, $0x80
	xor	%eax, %eax
	outb	%al, $0xf4
	hlt

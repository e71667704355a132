/* at: 0x100000 */
/* Triple fault: an empty IDT, then an invalid opcode. #UD finds no
 * handler, nor does #DF: the CPU shuts down. */
#include "guest.h"
	.code32
	.globl _start
_start:
	lidt	idt
	ud2
	exit_with 0xbad
idt:	.word	0
	.long	0

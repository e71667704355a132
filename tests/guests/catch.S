/* at: 0x100000 */
/* An exception with a handler: an IDT whose #UD gate (vector 6) points at
 * ud_handler, then ud2; the handler exits with 0x66. Tests catch vector 6
 * on the handler the IDT names. */
#include "guest.h"
#include "irq.h"
	.code32
	.globl _start, fault, ud_handler, spurious
_start:
	mov	$0x200000, %esp
	idt_init spurious
	set_gate 6, ud_handler
fault:	ud2
	exit_with 0xbad

ud_handler:
	exit_with 0x66

spurious:
	exit_with 0xbad
	idt_data

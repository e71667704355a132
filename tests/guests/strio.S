/* at: 0x100000 */
/* String PIO: rep outsb of 16 bytes and rep outsw of 4 words to port
 * 0x530, rep insb of 8 bytes from 0x530 into a buffer that is then
 * written out with rep outsb to 0x534. */
#include "guest.h"
	.code32
	.globl _start
_start:
	cld
	mov	$0x530, %dx
	mov	$text, %esi
	mov	$16, %ecx
	rep outsb
	mov	$words, %esi
	mov	$4, %ecx
	rep outsw
	mov	$buf, %edi
	mov	$8, %ecx
	rep insb
	mov	$0x534, %dx
	mov	$buf, %esi
	mov	$8, %ecx
	rep outsb
	exit_with 0
text:	.ascii	"0123456789abcdef"
words:	.word	0x1111, 0x2222, 0x3333, 0x4444
buf:	.fill	8, 1, 0

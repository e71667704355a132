/* at: 0x100000 */
/* UART throughput guest: set COM1 to 115200 8N1 with FIFOs, then push
 * 100 KiB through THR with one `rep outsb` (the port, 16 bits at 0x8000,
 * is set by the host: 0x3f8 for the UART, or a sink to compare), exit 0. */
#include "guest.h"
#define COM	0x3f8
#define NBYTES	(100 * 1024)

	.code32
	.globl _start
_start:
	mov	$0x80, %al		/* DLAB: divisor 1 */
	mov	$COM + 3, %dx
	outb	%al, %dx
	mov	$1, %al
	mov	$COM, %dx
	outb	%al, %dx
	mov	$0x03, %al		/* 8N1 */
	mov	$COM + 3, %dx
	outb	%al, %dx
	mov	$0x07, %al		/* FIFOs on */
	mov	$COM + 2, %dx
	outb	%al, %dx
	cld
	mov	$0x200000, %esi		/* any bytes will do */
	mov	$NBYTES, %ecx
	movzwl	0x8000, %edx
	rep outsb
	exit_with 0

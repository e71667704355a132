/* at: 0x100000 */
/* fw_cfg through the DMA interface only (QEMU docs/specs/fw_cfg.rst): two
 * FWCfgDmaAccess descriptors (big-endian control, length, address), one
 * selecting file 0x20 and reading 16 bytes to 0x3000, one selecting the
 * directory (0x19) and reading 132 bytes to 0x4000. Each starts with the
 * address written high half then low half, big-endian, to port 0x514 and
 * 0x518. Exits with the OR of both control words as written back: 0 when
 * both transfers succeeded. */
#include "guest.h"
	.code32
	.globl _start
_start:
	movl	$0x0a002000, 0x2000	/* be32 0x0020000a: select 0x20, read */
	movl	$0x10000000, 0x2004	/* be32 16 */
	movl	$0, 0x2008
	movl	$0x00300000, 0x200c	/* be64 0x3000 */
	movl	$0x0a001900, 0x2010	/* select 0x19 (directory), read */
	movl	$0x84000000, 0x2014	/* be32 132: count + two entries */
	movl	$0, 0x2018
	movl	$0x00400000, 0x201c	/* be64 0x4000 */

	mov	$0x514, %dx
	xor	%eax, %eax
	outl	%eax, %dx		/* high half: 0 */
	mov	$0x518, %dx
	mov	$0x00200000, %eax	/* be32 0x2000 */
	outl	%eax, %dx		/* low half: go */
	mov	$0x514, %dx
	xor	%eax, %eax
	outl	%eax, %dx
	mov	$0x518, %dx
	mov	$0x10200000, %eax	/* be32 0x2010 */
	outl	%eax, %dx

	mov	0x2000, %eax
	or	0x2010, %eax
	mov	$EXIT_PORT, %dx
	outl	%eax, %dx
	cli
	hlt

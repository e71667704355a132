/* at: 0x100000 */
/* Sequential virtio-blk reads (tests/lua/test_blk_events.lua): a minimal
 * virtio-mmio driver (virtio 1.2 sec. 3.1.1, 4.2.3) for the disk at
 * 0xd0000000 with one 8-entry queue, then NREQ reads of one sector each,
 * sectors 0, 1, 2, ... one at a time: each is posted, notified and polled
 * for in the used ring before the next (interrupts stay off), so the
 * device sees a fixed sequence of requests whatever the host's timing.
 * Exit code: the number of reads whose status byte was not OK, or 0xff00
 * | step when the device did not behave (0xff04: a request never came
 * back; 0xff05: a used element named another descriptor than head 0). */
#include "guest.h"
#define VIO	0xd0000000
#define NREQ	32
#define DESC	0x10000
#define AVAIL	0x11000
#define USED	0x12000
#define HDR	0x13000
#define DATA	0x14000
#define STAT	0x15000
#define T0	0x16000		/* the TSC when a wait began */

.macro wr off, v
	movl	$\v, VIO + \off
.endm

	.code32
	.globl _start
_start:
	cmpl	$0x74726976, VIO	/* "virt" */
	jne	fail1
	wr	0x070, 0		/* reset */
	wr	0x070, 1		/* ACKNOWLEDGE */
	wr	0x070, 3		/* DRIVER */
	wr	0x024, 1		/* features 32-63: VERSION_1 only */
	wr	0x020, 1
	wr	0x024, 0
	wr	0x020, 0
	wr	0x070, 11		/* FEATURES_OK */
	testl	$8, VIO + 0x070
	jz	fail2
	wr	0x030, 0		/* queue 0 */
	cmpl	$8, VIO + 0x034
	jb	fail3
	wr	0x038, 8
	wr	0x080, DESC
	wr	0x084, 0
	wr	0x090, AVAIL
	wr	0x094, 0
	wr	0x0a0, USED
	wr	0x0a4, 0
	wr	0x044, 1		/* QueueReady */
	wr	0x070, 15		/* DRIVER_OK */
	/* the chain at 0: header (device reads), data, status (device writes) */
	movl	$HDR, DESC + 0
	movl	$0, DESC + 4
	movl	$16, DESC + 8
	movw	$1, DESC + 12		/* NEXT */
	movw	$1, DESC + 14
	movl	$DATA, DESC + 16
	movl	$0, DESC + 20
	movl	$512, DESC + 24
	movw	$3, DESC + 28		/* NEXT | WRITE */
	movw	$2, DESC + 30
	movl	$STAT, DESC + 32
	movl	$0, DESC + 36
	movl	$1, DESC + 40
	movw	$2, DESC + 44		/* WRITE */
	movw	$0, DESC + 46
	movl	$0, HDR + 0		/* VIRTIO_BLK_T_IN */
	movl	$0, HDR + 4
	xor	%esi, %esi		/* requests done */
	xor	%edi, %edi		/* failed */
1:	movl	%esi, HDR + 8		/* sector = i */
	movl	$0, HDR + 12
	movb	$0xee, STAT
	movzwl	AVAIL + 2, %eax		/* ring[idx % 8] = head 0 */
	mov	%eax, %ecx
	and	$7, %ecx
	movw	$0, AVAIL + 4(,%ecx,2)
	inc	%eax
	movw	%ax, AVAIL + 2		/* publish (x86: stores stay in order) */
	wr	0x050, 0		/* QueueNotify */
	lea	1(%esi), %ebx
	rdtsc				/* a bound on the wait: 2^32 TSC cycles, >1 s */
	mov	%eax, T0
	mov	%edx, T0 + 4
2:	cmpw	%bx, USED + 2
	je	3f
	pause
	rdtsc
	sub	T0, %eax
	sbb	T0 + 4, %edx
	jz	2b
	jmp	fail4
3:	mov	%esi, %ecx		/* the used element must name head 0 */
	and	$7, %ecx
	cmpl	$0, USED + 4(,%ecx,8)
	jne	fail5
	cmpb	$0, STAT
	je	4f
	inc	%edi
4:	inc	%esi
	cmp	$NREQ, %esi
	jb	1b
	mov	%edi, %eax
	mov	$EXIT_PORT, %dx
	outl	%eax, %dx
	cli
	hlt
fail1:	exit_with 0xff01
fail2:	exit_with 0xff02
fail3:	exit_with 0xff03
fail4:	exit_with 0xff04
fail5:	exit_with 0xff05

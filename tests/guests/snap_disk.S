/* at: 0x100000 */
/* For snapshot files of a disk overlay (tests/lua/test_snapshot.lua): a
 * minimal polled virtio-blk driver (virtio v1.2 sec. 4.2.3 setup, one split
 * queue, sec. 2.7; requests sec. 5.2.6) for the device at 0xd0000000. It
 * writes msg to sector 1, checkpoints (debug_exit 1: the test snapshots
 * here), then reads sector 1 into a buffer it never wrote and prints its
 * first 32 bytes on COM1 ('.' for what is not printable), and exits 0x99
 * (0x55 if a request did not complete with status 0). */
#include "guest.h"
#define COM	0x3f8
#define VIO	0xd0000000
#define DESC	0x400000
#define AVAIL	0x401000
#define USED	0x402000
#define HDR	0x403000
#define STATUS	0x403800
#define WBUF	0x404000
#define RBUF	0x406000

	.code32
	.globl _start
_start:
	mov	$0x200000, %esp
	movl	$0, VIO + 0x70		/* reset */
	movl	$1, VIO + 0x70		/* ACKNOWLEDGE */
	movl	$3, VIO + 0x70		/* DRIVER */
	movl	$1, VIO + 0x24		/* features 32-63: VERSION_1 only */
	movl	$1, VIO + 0x20
	movl	$0, VIO + 0x24
	movl	$0, VIO + 0x20
	movl	$11, VIO + 0x70		/* FEATURES_OK */
	movl	$0, VIO + 0x30		/* queue 0, 8 entries */
	movl	$8, VIO + 0x38
	movl	$DESC, VIO + 0x80
	movl	$0, VIO + 0x84
	movl	$AVAIL, VIO + 0x90
	movl	$0, VIO + 0x94
	movl	$USED, VIO + 0xa0
	movl	$0, VIO + 0xa4
	movl	$1, VIO + 0x44		/* QueueReady */
	movl	$15, VIO + 0x70		/* DRIVER_OK */

	mov	$msg, %esi
	mov	$WBUF, %edi
	mov	$msg_end - msg, %ecx
	rep movsb
	mov	$1, %eax		/* VIRTIO_BLK_T_OUT */
	mov	$WBUF, %ebx
	mov	$0, %ecx
	call	req
	mov	$1, %eax		/* checkpoint: written */
	mov	$EXIT_PORT, %dx
	outl	%eax, %dx

	mov	$0, %eax		/* VIRTIO_BLK_T_IN */
	mov	$RBUF, %ebx
	mov	$2, %ecx		/* VIRTQ_DESC_F_WRITE */
	call	req
	mov	$RBUF, %esi
	mov	$32, %ecx
1:	movb	(%esi), %al
	cmp	$0x20, %al
	jb	2f
	cmp	$0x7e, %al
	jbe	3f
2:	mov	$'.', %al
3:	call	putc
	inc	%esi
	loop	1b
	mov	$'\n', %al
	call	putc
	exit_with 0x99

/* One request on sector 1: eax type, ebx the 512-byte buffer, ecx the
 * buffer descriptor's extra flags. Polls the used ring; exits 0x55 when
 * the status is not 0. */
req:	movl	%eax, HDR
	movl	$0, HDR + 4
	movl	$1, HDR + 8
	movl	$0, HDR + 12
	movb	$0xff, STATUS
	movl	$HDR, DESC		/* 0: header, device-readable */
	movl	$0, DESC + 4
	movl	$16, DESC + 8
	movw	$1, DESC + 12		/* NEXT */
	movw	$1, DESC + 14
	movl	%ebx, DESC + 16		/* 1: data */
	movl	$0, DESC + 20
	movl	$512, DESC + 24
	or	$1, %ecx
	movw	%cx, DESC + 28
	movw	$2, DESC + 30
	movl	$STATUS, DESC + 32	/* 2: status, device-writable */
	movl	$0, DESC + 36
	movl	$1, DESC + 40
	movw	$2, DESC + 44
	movw	$0, DESC + 46
	movzwl	AVAIL + 2, %edx
	mov	%edx, %edi
	and	$7, %edi
	movw	$0, AVAIL + 4(,%edi,2)
	inc	%edx
	movw	%dx, AVAIL + 2
	movl	$0, VIO + 0x50		/* QueueNotify */
4:	cmpw	USED + 2, %dx
	jne	4b
	cmpb	$0, STATUS
	jne	5f
	ret
5:	exit_with 0x55

/* al -> COM1 once THR is empty (clobbers edx) */
putc:	push	%eax
	mov	$COM + 5, %dx
6:	inb	%dx, %al
	test	$0x20, %al
	jz	6b
	pop	%eax
	mov	$COM, %dx
	outb	%al, %dx
	ret

msg:	.ascii	"written-through-the-overlay-0042"
msg_end:

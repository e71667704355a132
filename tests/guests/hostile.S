/* at: 0x100000 */
/* A hostile guest (tests/lua/test_hostile.lua): P_OPS random operations
 * from a xorshift32 seeded at P_SEED, then exit 0 through debug_exit. Each
 * operation is one of:
 *   PIO (8/16): in or out, 1, 2 or 4 bytes, a random value, at a port of
 *      the default PC (PIC, PIT, port 0x61, COM1, RTC, i8042, port 0x80)
 *      moved by -1..+2, so accesses straddle and miss device ranges;
 *   MMIO (4/16): read or write, 1, 2 or 4 bytes, unaligned, anywhere in
 *      the first 0x200 bytes of the virtio-blk or virtio-rng window or at
 *      its end (straddling into the next window); the queue address
 *      registers get addresses in SCRATCH, the garbage the test wrote;
 *   string I/O (2/16): rep outs/ins (b/w/l) at such a port, or rep movs
 *      (b/w/l) between RAM and a window, 1-32 elements from a buffer that
 *      straddles the page boundary at SCRATCH + 64K;
 *   init (1/16): a virtio driver's set-up of a random queue on garbage
 *      rings in SCRATCH, then a notify: the device walks the garbage;
 *   reset (1/16): status 0 or queue_ready 0, whatever is in flight.
 * P_DONE counts the operations begun, for the test to report.
 * Interrupts stay off: whatever the devices raise is never taken. */
#include "guest.h"
#define P_SEED	0x8000
#define P_OPS	0x8004
#define P_BLK	0x8008
#define P_RNG	0x800c
#define P_DONE	0x8010
#define SCRATCH	0x10000		/* 128 KiB of garbage */
#define NPORTS	((ports_end - ports) / 2)

	.code32
	.globl _start
_start:
	cli
	cld
	mov	$0x90000, %esp
	movl	$0, P_DONE
next:
	mov	P_DONE, %eax
	cmp	P_OPS, %eax
	jae	done
	incl	P_DONE
	call	rnd
	mov	%eax, %ebx		/* the operation's random bits */
	and	$15, %eax
	cmp	$8, %eax
	jb	op_pio
	cmp	$12, %eax
	jb	op_mmio
	cmp	$14, %eax
	jb	op_string
	cmp	$15, %eax
	jb	op_init
	jmp	op_reset
done:
	exit_with 0

/* eax = the next xorshift32 value; clobbers ecx. */
rnd:
	mov	P_SEED, %eax
	mov	%eax, %ecx
	shl	$13, %ecx
	xor	%ecx, %eax
	mov	%eax, %ecx
	shr	$17, %ecx
	xor	%ecx, %eax
	mov	%eax, %ecx
	shl	$5, %ecx
	xor	%ecx, %eax
	mov	%eax, P_SEED
	ret

/* dx = a port from the table, -1..+2, chosen by ebx bits 4-13; clobbers
 * eax, ecx. */
pick_port:
	mov	%ebx, %eax
	shr	$4, %eax
	and	$0xff, %eax
	xor	%edx, %edx
	mov	$NPORTS, %ecx
	div	%ecx
	movzwl	ports(,%edx,2), %edx
	mov	%ebx, %eax
	shr	$12, %eax
	and	$3, %eax
	lea	-1(%edx,%eax), %edx
	ret

/* edi = the blk or the rng window base, chosen by ebx bit 4. */
pick_window:
	mov	P_BLK, %edi
	bt	$4, %ebx
	jnc	1f
	mov	P_RNG, %edi
1:	ret

op_pio:
	call	pick_port
	call	rnd
	mov	%ebx, %ecx
	shr	$21, %ecx
	and	$3, %ecx
	bt	$20, %ebx
	jc	pio_in
	cmp	$1, %ecx
	je	1f
	cmp	$2, %ecx
	je	2f
	outb	%al, %dx
	jmp	next
1:	outw	%ax, %dx
	jmp	next
2:	outl	%eax, %dx
	jmp	next
pio_in:
	cmp	$1, %ecx
	je	1f
	cmp	$2, %ecx
	je	2f
	inb	%dx, %al
	jmp	next
1:	inw	%dx, %ax
	jmp	next
2:	inl	%dx, %eax
	jmp	next

op_mmio:
	call	rnd
	mov	%eax, %esi		/* the value */
	call	pick_window
	mov	%ebx, %eax
	shr	$5, %eax
	and	$0x1ff, %eax
	bt	$14, %ebx
	jnc	1f
	or	$0xe00, %eax		/* 0xe00-0xfff: the end of the window */
1:	cmp	$0x80, %eax		/* queue desc/driver/device addresses */
	jb	3f
	cmp	$0xa8, %eax
	jae	3f
	mov	%esi, %ecx
	and	$0x1fff0, %ecx
	add	$SCRATCH, %ecx
	test	$4, %eax
	jz	2f
	xor	%ecx, %ecx		/* the high half */
2:	mov	%ecx, %esi
3:	add	%eax, %edi
	mov	%esi, %eax
	mov	%ebx, %ecx
	shr	$15, %ecx
	and	$3, %ecx
	bt	$17, %ebx
	jc	mmio_rd
	cmp	$1, %ecx
	je	1f
	cmp	$2, %ecx
	je	2f
	movb	%al, (%edi)
	jmp	next
1:	movw	%ax, (%edi)
	jmp	next
2:	movl	%eax, (%edi)
	jmp	next
mmio_rd:
	cmp	$1, %ecx
	je	1f
	cmp	$2, %ecx
	je	2f
	movb	(%edi), %al
	jmp	next
1:	movw	(%edi), %ax
	jmp	next
2:	movl	(%edi), %eax
	jmp	next

op_string:
	call	pick_port
	call	rnd
	mov	%eax, %ecx
	and	$31, %ecx
	inc	%ecx			/* 1-32 elements */
	shr	$8, %eax
	and	$63, %eax
	mov	$(SCRATCH + 0x10000), %esi
	sub	%eax, %esi		/* straddles the page boundary */
	mov	%esi, %edi
	mov	%ebx, %eax
	shr	$17, %eax
	and	$7, %eax
	bt	$16, %ebx
	jc	str_mmio
	jmp	*str_pio(,%eax,4)
str_mmio:
	push	%eax
	push	%ebx
	shr	$21, %ebx		/* a window offset from bits 21-29 */
	mov	%ebx, %eax
	and	$0x1ff, %eax
	pop	%ebx
	push	%edi
	call	pick_window
	add	%eax, %edi		/* edi: the window, esi: RAM */
	pop	%eax			/* the RAM buffer again */
	bt	$20, %ebx
	jnc	1f
	mov	%edi, %esi		/* window to RAM */
	mov	%eax, %edi
1:	pop	%eax
	jmp	*str_mem(,%eax,4)

s_outsb: rep outsb
	jmp	next
s_outsw: rep outsw
	jmp	next
s_outsl: rep outsl
	jmp	next
s_insb:	rep insb
	jmp	next
s_insw:	rep insw
	jmp	next
s_insl:	rep insl
	jmp	next
s_movsb: rep movsb
	jmp	next
s_movsw: rep movsw
	jmp	next
s_movsl: rep movsl
	jmp	next

op_init:
	call	pick_window
	movl	$0, 0x70(%edi)		/* status: reset */
	movl	$3, 0x70(%edi)		/* ACKNOWLEDGE | DRIVER */
	movl	$1, 0x24(%edi)
	movl	$1, 0x20(%edi)		/* VIRTIO_F_VERSION_1 */
	movl	$0, 0x24(%edi)
	movl	$0, 0x14(%edi)
	call	rnd
	test	$3, %al
	jz	1f			/* 1/4: any bits, FEATURES_OK fails */
	and	0x10(%edi), %eax	/* else some of those offered */
1:	mov	%eax, 0x20(%edi)	/* random low features */
	movl	$0xb, 0x70(%edi)	/* | FEATURES_OK */
	call	rnd
	mov	%eax, %esi
	xor	%eax, %eax		/* blk and rng have one queue */
	mov	%eax, 0x30(%edi)	/* queue_sel */
	mov	%esi, %ecx
	shr	$1, %ecx
	and	$7, %ecx
	mov	$1, %eax
	shl	%cl, %eax
	mov	%eax, 0x38(%edi)	/* queue_num 1-128 */
	mov	%esi, %eax
	shr	$4, %eax
	and	$0x1fff0, %eax
	add	$SCRATCH, %eax
	mov	%eax, 0x80(%edi)	/* desc */
	movl	$0, 0x84(%edi)
	call	rnd
	and	$0x1fff0, %eax
	add	$SCRATCH, %eax
	mov	%eax, 0x90(%edi)	/* driver (avail) */
	movl	$0, 0x94(%edi)
	mov	%eax, %edx		/* an avail ring that offers 1-4 heads */
	call	rnd
	mov	%eax, %ecx
	and	$3, %ecx
	inc	%ecx
	shl	$16, %ecx		/* flags 0, idx 1-4 */
	mov	%ecx, (%edx)
	and	$0x007f007f, %eax	/* heads 0-127 */
	mov	%eax, 4(%edx)
	shr	$8, %eax
	mov	%eax, 8(%edx)
	call	rnd
	and	$0x1fff0, %eax
	add	$SCRATCH, %eax
	mov	%eax, 0xa0(%edi)	/* device (used) */
	movl	$0, 0xa4(%edi)
	movl	$1, 0x44(%edi)		/* queue_ready */
	movl	$0xf, 0x70(%edi)	/* | DRIVER_OK */
	movl	$0, 0x50(%edi)		/* queue_notify */
	jmp	next

op_reset:
	call	pick_window
	bt	$5, %ebx
	jc	1f
	movl	$0, 0x70(%edi)		/* status 0: device reset */
	jmp	next
1:	movl	$0, 0x44(%edi)		/* queue_ready 0 */
	jmp	next

	.balign	4
str_pio: .long	s_outsb, s_outsw, s_outsl, s_insb, s_insw, s_insl, s_outsb, s_insb
str_mem: .long	s_movsb, s_movsw, s_movsl, s_movsb, s_movsw, s_movsl, s_movsb, s_movsl
ports:	.word	0x20, 0x21, 0xa0, 0xa1, 0x40, 0x41, 0x42, 0x43, 0x61
	.word	0x3f8, 0x3f9, 0x3fa, 0x3fb, 0x3fc, 0x3fd, 0x3fe, 0x3ff
	.word	0x70, 0x71, 0x60, 0x64, 0x80
ports_end:

/* at: 0x100000 */
/* A multiboot kernel that checks, from inside, what the loader gave it and
 * reports through debug_exit: 0 when all is well, else the number of the
 * first failed check. A flat binary: the header's address fields (flag 16,
 * the "a.out kludge", Multiboot Specification 0.6.96 3.1.3) tell the loader
 * where it goes. tests/lua/test_boot.lua passes the matching values. */
#include "guest.h"

#define MB_MAGIC 0x1badb002
#define MB_FLAGS ((1 << 16) | (1 << 1) | (1 << 0)) /* addresses, mem, align */

	.code32
	.globl _start
_start:
	jmp	entry

	.align 4
mbheader:
	.long	MB_MAGIC
	.long	MB_FLAGS
	.long	-(MB_MAGIC + MB_FLAGS)
	.long	mbheader	/* header_addr */
	.long	_start		/* load_addr */
	.long	0		/* load_end_addr: the whole file */
	.long	0		/* bss_end_addr: no bss */
	.long	entry		/* entry_addr */

entry:
	mov	$0x180000, %esp
	cmp	$0x2badb002, %eax	/* 3.2: magic in EAX */
	jne	fail1
	mov	%ebx, %ebp		/* the information structure */

	testl	$(1 << 2), (%ebp)	/* cmdline */
	jz	fail2
	mov	16(%ebp), %esi
	mov	$want_cmdline, %edi
	call	streq
	jne	fail2

	testl	$(1 << 3), (%ebp)	/* one module */
	jz	fail3
	cmpl	$1, 20(%ebp)
	jne	fail3
	mov	24(%ebp), %edx
	mov	(%edx), %esi		/* mod_start: page-aligned */
	test	$0xfff, %esi
	jnz	fail4
	mov	4(%edx), %ecx		/* its bytes */
	sub	%esi, %ecx
	cmp	$(want_module_end - want_module), %ecx
	jne	fail5
	mov	$want_module, %edi
	call	memeq
	jne	fail5
	mov	8(%edx), %esi		/* its command line */
	mov	$want_modcmd, %edi
	call	streq
	jne	fail6

	testl	$(1 << 6), (%ebp)	/* mmap: a RAM entry covering 1 MiB */
	jz	fail7
	mov	48(%ebp), %esi
	mov	44(%ebp), %ecx
	add	%esi, %ecx
1:	cmp	%ecx, %esi
	jae	fail7
	cmpl	$1, 20(%esi)		/* type */
	jne	2f
	cmpl	$0, 8(%esi)		/* base_addr high */
	jne	2f
	mov	4(%esi), %eax		/* base_addr low */
	cmp	$0x100000, %eax
	ja	2f
	cmpl	$0, 16(%esi)		/* length high: covers it */
	jne	3f
	add	12(%esi), %eax
	jc	3f
	cmp	$0x100000, %eax
	ja	3f
2:	mov	(%esi), %eax		/* next: size does not count itself */
	lea	4(%esi,%eax), %esi
	jmp	1b
3:
	testl	$(1 << 9), (%ebp)	/* boot_loader_name */
	jz	fail8
	mov	64(%ebp), %esi
	mov	$want_name, %edi
	call	streq
	jne	fail8

	testl	$(1 << 0), (%ebp)	/* mem_lower/upper for 16 MiB */
	jz	fail9
	cmpl	$639, 4(%ebp)
	jne	fail9
	cmpl	$(15 * 1024), 8(%ebp)
	jne	fail9

	exit_with 0

/* ZF set when the strings at esi and edi are equal. */
streq:
	mov	(%esi), %al
	cmp	(%edi), %al
	jne	1f
	test	%al, %al
	jz	1f
	inc	%esi
	inc	%edi
	jmp	streq
1:	ret

/* ZF set when ecx bytes at esi and edi are equal. */
memeq:
	test	%ecx, %ecx
	jz	1f
2:	mov	(%esi), %al
	cmp	(%edi), %al
	jne	1f
	inc	%esi
	inc	%edi
	dec	%ecx
	jnz	2b
1:	ret

fail1:	exit_with 1
fail2:	exit_with 2
fail3:	exit_with 3
fail4:	exit_with 4
fail5:	exit_with 5
fail6:	exit_with 6
fail7:	exit_with 7
fail8:	exit_with 8
fail9:	exit_with 9

want_cmdline:	.asciz "mbtest answer=42"
want_modcmd:	.asciz "mod1 key=value"
want_name:	.asciz "moonbox"
want_module:	.ascii "moonbox module\n"
want_module_end:

/* at: 0x100000 */
/* `int $0x40` in long mode: this host's KVM cannot emulate `int n`
 * (kvm-here.md) and the fallback does not complete it, so the run must end
 * with "error" and the bytes cd 40. Where KVM delivers it, the guest's
 * handler exits 0xe40. */
#include "guest.h"
	.code64
	.globl _start
_start:
	mov	$0x80000, %rsp
	lea	handler(%rip), %rax
	lea	idt + 0x40 * 16(%rip), %rdi
	mov	%ax, (%rdi)
	movw	$0x18, 2(%rdi)		/* boot_flat's 64-bit code */
	movw	$0x8e00, 4(%rdi)
	shr	$16, %rax
	mov	%ax, 6(%rdi)
	shr	$16, %rax
	mov	%eax, 8(%rdi)
	lidt	idtr(%rip)
	int	$0x40
	exit_with 0xbad
handler:
	exit_with 0xe40
idtr:	.word 256 * 16 - 1
	.quad idt
	.balign 16
idt:	.fill 256 * 16, 1, 0

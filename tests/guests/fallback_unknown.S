/* at: 0x100000 */
/* `lock cmpxchg16b` in long mode: this host's KVM cannot emulate it
 * (kvm-here.md) and the fallback does not complete it, so the run must end
 * with "error" and the bytes f0 48 0f c7. Where the CPU runs it, the guest
 * exits 0xe40. */
#include "guest.h"
	.code64
	.globl _start
_start:
	mov	$0x80000, %rsp
	lea	buf(%rip), %rdi
	xor	%eax, %eax
	xor	%edx, %edx
	xor	%ebx, %ebx
	xor	%ecx, %ecx
	lock cmpxchg16b (%rdi)
	exit_with 0xe40
	.balign 16
buf:	.quad 0, 0

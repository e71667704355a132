/* at: 0x100000 */
/* CPUID as the guest sees it: leaf 0's vendor (EBX, EDX, ECX) to 0x2000,
 * leaf 1's EAX (family, model, stepping) to 0x200c. */
#include "guest.h"
	.code32
	.globl _start
_start:
	xor	%eax, %eax
	cpuid
	mov	%ebx, 0x2000
	mov	%edx, 0x2004
	mov	%ecx, 0x2008
	mov	$1, %eax
	cpuid
	mov	%eax, 0x200c
	exit_with 0

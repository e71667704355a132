/* at: 0x100000 */
/* Turns on 32-bit PAE paging (PDPT at 0x10000, 2 MiB pages identity-mapping
 * the low 4 MiB), then exits 7: the debugger reads KVM's cached PDPTEs. */
#include "guest.h"
	.code32
	.globl _start, paged
_start:	movl	$0x11001, 0x10000	/* PDPTE 0 -> the PD at 0x11000 */
	movl	$0x83, 0x11000		/* PDE 0: 2 MiB page at 0, PS W P */
	movl	$0x200083, 0x11008	/* PDE 1: 2 MiB page at 2 MiB */
	mov	$0x10000, %eax
	mov	%eax, %cr3
	mov	%cr4, %eax
	or	$0x20, %eax		/* CR4.PAE */
	mov	%eax, %cr4
	mov	%cr0, %eax
	or	$0x80000000, %eax	/* CR0.PG */
	mov	%eax, %cr0
paged:	exit_with 7

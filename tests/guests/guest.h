/* Shared by the in-tree test guests (assembled with the host's gcc/as).
 * boot_flat's GDT: 0x08 32-bit code, 0x10 data, 0x18 64-bit code. */
#define EXIT_PORT 0xf4

/* Report v through debug_exit and stop (works in every mode). */
.macro exit_with v
	mov	$\v, %eax
	mov	$EXIT_PORT, %dx
	outl	%eax, %dx
	cli
	hlt
.endm

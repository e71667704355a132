/* at: 0x100000 */
/* cli; hlt: nothing can wake this vCPU, so run() ends with "halt". */
	.code32
	.globl _start
_start:
	cli
	hlt
	jmp	_start

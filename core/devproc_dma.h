/*
 * DMA of a device process, the VMM's side (docs/devproc.md, "DMA"): the
 * grants a device was given, the memfd windows that carry them to the
 * process (dma = "granted"), and the DMA_READ / DMA_WRITE requests it
 * sends where it maps nothing (dma = "message"), each checked against
 * the grants. Kept apart from core/devproc.c, which only calls in here.
 */
#ifndef MOONBOX_CORE_DEVPROC_DMA_H
#define MOONBOX_CORE_DEVPROC_DMA_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include "core/internal.h"
#include "moonbox/devproc.h"

#define MB_DP_MEM_REVOKED (1u << 31) /* mb_dp_mem.flags: a revoked slot */
#define MB_DP_MEM_REMOTE (1u << 30)  /* by messages: the layout, no memory */

struct mb_dp_dmastate {
	enum mb_dp_dma mode;
	unsigned n;
	struct mb_dp_grant g[MB_DP_MAX_MEM];
	_Atomic bool revoked[MB_DP_MAX_MEM];
	_Atomic uint64_t reads, writes, bytes, refused;
	pthread_mutex_t lock; /* why */
	char why[160];
};

/* Check cfg's mode and grants against m's RAM (page aligned, each inside
 * one memfd region, no overlap): 0 or -errno with a message. */
int mb_dp_dma_init(struct mb_dp_dmastate *d, struct mb_machine *m,
		   const struct mb_devproc_config *cfg);
void mb_dp_dma_fini(struct mb_dp_dmastate *d);
/* The memfds the process gets (as many every spawn: fd numbers stay). */
unsigned mb_dp_dma_nmem(const struct mb_dp_dmastate *d, struct mb_machine *m);
/* Fill fds[] and mem[] for a CREATE (granted: one window per grant, a
 * revoked one a placeholder); *n their count. Shared mode is not here. */
int mb_dp_dma_mem(struct mb_dp_dmastate *d, struct mb_machine *m, int *fds,
		  struct mb_dp_mem *mem, unsigned *n);
void mb_dp_dma_close_mem(const struct mb_dp_mem *mem, const int *fds, unsigned n);
/* Index of the grant at base, or -1. */
int mb_dp_dma_find(const struct mb_dp_dmastate *d, uint64_t base);
/* One DMA_READ / DMA_WRITE command of n bytes from the device: its reply
 * built in out (room for max), its length. Outside a live grant (or RAM):
 * an error reply, counted and logged. */
size_t mb_dp_dma_serve(struct mb_dp_dmastate *d, struct mb_machine *m, const char *name,
		       const uint8_t *msg, size_t n, uint8_t *out, size_t max);

#endif

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
#define MB_DP_MAX_DREG 64 /* regions a dirty map covers (mem.c's limit) */

/* The grants: slots 0..ncreate-1 are the CREATE's (cfg's grants: a
 * memfd slot each, so the backend's fd numbers never move), the rest were
 * granted at run time (DMA_MAP after each spawn). A slot's window never
 * changes once published (n, release); only revoked[] flips. */
struct mb_dp_dmastate {
	enum mb_dp_dma mode;
	_Atomic unsigned n;
	unsigned ncreate;
	struct mb_dp_grant g[MB_DP_MAX_MEM];
	_Atomic bool revoked[MB_DP_MAX_MEM];
	_Atomic uint64_t reads, writes, bytes, refused;
	pthread_mutex_t lock; /* why */
	char why[160];
	/* The dirty map (shared and granted): one bit per 4K page of every
	 * RAM region as it was at attach, region i's from bit dreg[i].bit0
	 * (a word boundary); each region's slice is a source of mem.c's
	 * dirty log. -1 / NULL: none. */
	struct mb_mem *mem;
	int dirty_fd;
	uint64_t *dirty;
	size_t dirty_size;
	unsigned ndreg;
	struct {
		uint64_t base, size, bit0;
	} dreg[MB_DP_MAX_DREG];
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
/* A grant at run time, checked like the CREATE's (errors name the device
 * and the window): the slot it takes, >= 0 (the revoked slot of the same
 * window, or a new one), or -errno. Message mode: live at once; granted:
 * still revoked, until the caller's DMA_MAP is done (it clears revoked[]). */
int mb_dp_dma_grant(struct mb_dp_dmastate *d, struct mb_machine *m, const char *name,
		    uint64_t base, uint64_t size);
/* Grant slot i: the DMA_MAP payload and the memfd that goes with it
 * (the machine's: not to be closed), or -errno. */
int mb_dp_dma_map_of(const struct mb_dp_dmastate *d, struct mb_machine *m, unsigned i,
		     struct mb_dp_dma_map *out, int *fd);
/* The bit of gpa's page in the dirty map, or MB_DP_NO_DIRTY. */
uint64_t mb_dp_dirty_bit(const struct mb_dp_dmastate *d, uint64_t gpa);
/* One DMA_READ / DMA_WRITE command of n bytes from the device: its reply
 * built in out (room for max), its length. Outside a live grant (or RAM):
 * an error reply, counted and logged. */
size_t mb_dp_dma_serve(struct mb_dp_dmastate *d, struct mb_machine *m, const char *name,
		       const uint8_t *msg, size_t n, uint8_t *out, size_t max);

#endif

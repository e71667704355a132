/*
 * Guest memory for the virtqueue harnesses, laid out from the input so that
 * every field a driver writes is fuzzed, in few bytes whatever the queue
 * size: the descriptor table, the avail ring (flags, idx, the heads the
 * device will pop next, used_event), and a data area for indirect tables
 * and buffers. The input:
 *   bytes 0-15, the header:
 *     0      queue size 1 << (b % 9): 1..256
 *     1      bit 0 VIRTIO_F_RING_INDIRECT_DESC, bit 1 VIRTIO_F_RING_EVENT_IDX,
 *            bit 2 keep descriptor addresses inside RAM (addr % VQ_MEM),
 *            bit 3 take avail idx as it is (else start + idx % (num + 2),
 *            mostly valid), bits 4-7 the harness's own (vq_input.opt)
 *     2-3    used idx when the queue starts (where the device starts)
 *     4-5    avail idx
 *     6-7    avail flags
 *     8-9    used_event
 *     10     used ring placement (8 places)
 *     11     the harness's own (vq_input.opt2)
 *     12-13  ndesc, 14-15 nheads (each % (num + 1))
 *   then ndesc x 16 bytes: descriptors 0..ndesc-1 (the rest stay zero),
 *   then nheads x 2 bytes: the avail ring entries from the one the device
 *        pops first (start % num) on, wrapping,
 *   then the data area at VQ_DATA: whatever is left, up to the end of RAM.
 * fuzz/seeds/mkseeds.lua writes well-formed inputs in this layout.
 */
#ifndef FUZZ_VQ_INPUT_H
#define FUZZ_VQ_INPUT_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "moonbox/virtio_queue.h"

#define VQ_MEM 0x10000u
#define VQ_DESC 0x0000u  /* up to 256 x 16 bytes */
#define VQ_AVAIL 0x1000u /* up to 6 + 2 x 256 bytes */
#define VQ_USED 0x2000u  /* + 0x100 x (0..7), up to 6 + 8 x 256 bytes */
#define VQ_DATA 0x3000u
#define VQ_HEADER 16u

struct vq_input {
	uint16_t num;
	uint64_t features; /* ring features */
	uint64_t desc, avail, used;
	uint8_t opt, opt2; /* header bits left to the harness */
};

static inline uint16_t vq_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static inline void vq_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8);
}

/* Fill ram (VQ_MEM bytes, zeroed) from the input; false if it is shorter
 * than the header. */
static inline bool vq_input(const uint8_t *data, size_t size, uint8_t *ram,
			    struct vq_input *in)
{
	if (size < VQ_HEADER)
		return false;
	const uint8_t *h = data;
	uint16_t num = (uint16_t)(1u << (h[0] % 9));
	uint16_t start = vq_get16(h + 2), idx = vq_get16(h + 4);
	unsigned ndesc = vq_get16(h + 12) % (num + 1u);
	unsigned nheads = vq_get16(h + 14) % (num + 1u);
	in->num = num;
	in->features = (uint64_t)(h[1] & 1) << VIRTIO_F_RING_INDIRECT_DESC |
		       (uint64_t)(h[1] >> 1 & 1) << VIRTIO_F_RING_EVENT_IDX;
	in->desc = VQ_DESC, in->avail = VQ_AVAIL;
	in->used = VQ_USED + 0x100u * (h[10] & 7);
	in->opt = h[1] >> 4, in->opt2 = h[11];
	data += VQ_HEADER, size -= VQ_HEADER;

	size_t n = size < 16u * ndesc ? size : 16u * ndesc;
	memcpy(ram + in->desc, data, n);
	data += n, size -= n;
	if (h[1] & 4)
		for (unsigned i = 0; i < num; i++) {
			uint8_t *a = ram + in->desc + 16 * i;
			a[2] = a[3] = a[4] = a[5] = a[6] = a[7] = 0; /* % VQ_MEM */
		}

	uint8_t *avail = ram + in->avail;
	memcpy(avail, h + 6, 2); /* flags */
	vq_put16(avail + 2, h[1] & 8 ? idx : (uint16_t)(start + idx % (num + 2u)));
	for (unsigned i = 0; i < nheads && size >= 2; i++, data += 2, size -= 2)
		memcpy(avail + 4 + 2 * ((start + i) % num), data, 2);
	memcpy(avail + 4 + 2 * num, h + 8, 2); /* used_event */
	vq_put16(ram + in->used + 2, start);

	memcpy(ram + VQ_DATA, data, size < VQ_MEM - VQ_DATA ? size : VQ_MEM - VQ_DATA);
	return true;
}

#endif

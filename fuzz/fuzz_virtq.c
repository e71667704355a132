/* libFuzzer: the split-virtqueue walker over fuzzed guest memory and
 * indices, laid out by fuzz/vq_input.h (descriptor table, avail ring, data
 * area for indirect tables). Whatever the rings say, every buffer handed
 * out must lie inside guest RAM (checked here), and nothing may touch
 * memory outside it (ASan: guest RAM is a malloc'd block with redzones
 * around it). Header bits of this harness: opt bit 0 writes into each
 * writable buffer's first bytes, so buffers aliasing the rings change them
 * between pops, as a racing driver would. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "moonbox/virtio_queue.h"
#include "fuzz/vq_input.h"

static void abort_if(int bad)
{
	if (bad)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *ram = calloc(1, VQ_MEM);
	struct vq_input in;
	if (!vq_input(data, size, ram, &in)) {
		free(ram);
		return 0;
	}
	struct mb_mem *mem = mb_mem_new();
	mb_mem_add(mem, 0, VQ_MEM, 0, ram, "ram");
	struct mb_vq q;
	static struct mb_vq_chain c;
	mb_vq_init(&q, mem);
	q.num = in.num, q.desc_gpa = in.desc, q.avail_gpa = in.avail;
	q.used_gpa = in.used;
	if (mb_vq_enable(&q, 256, in.features) == 0) {
		for (int round = 0; round < 300; round++) {
			int rc = mb_vq_pop(&q, &c);
			if (rc <= 0 && !mb_vq_arm(&q))
				break;
			if (rc <= 0)
				continue;
			abort_if(c.head >= in.num);
			abort_if(c.nout + c.nin > MB_VQ_MAX_SEGS);
			abort_if(c.out_len > UINT32_MAX || c.in_len > UINT32_MAX);
			uint64_t out = 0, inl = 0;
			for (unsigned i = 0; i < c.nout + c.nin; i++) {
				uint8_t *p = c.iov[i].iov_base;
				abort_if(p < ram || p + c.iov[i].iov_len > ram + VQ_MEM ||
					 c.iov[i].iov_len == 0);
				*(i < c.nout ? &out : &inl) += c.iov[i].iov_len;
				/* touch it all: ASan checks what the walker handed out */
				volatile uint8_t x = p[0];
				p[c.iov[i].iov_len - 1] = x;
				if (i >= c.nout && in.opt & 1)
					p[0] = (uint8_t)(round + i);
			}
			abort_if(out != c.out_len || inl != c.in_len);
			mb_vq_push(&q, c.head, (uint32_t)c.in_len);
			mb_vq_need_irq(&q);
		}
	}
	mb_vq_destroy(&q);
	mb_mem_free(mem);
	free(ram);
	return 0;
}

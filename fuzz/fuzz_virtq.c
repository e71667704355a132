/* libFuzzer: the split-virtqueue walker over fuzzed guest memory and
 * indices. Whatever the rings say, every buffer handed out must lie inside
 * guest RAM (checked here), and nothing may touch memory outside it (ASan:
 * guest RAM is a malloc'd block with redzones around it). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "moonbox/virtio_queue.h"

#define MEM 0x10000u

static void abort_if(int bad)
{
	if (bad)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 8)
		return 0;
	/* Parameters: queue size, features, ring placement, start index. */
	uint16_t num = (uint16_t)(1u << (data[0] % 9)); /* 1..256 */
	uint64_t features = (uint64_t)(data[1] & 3) << VIRTIO_F_RING_INDIRECT_DESC;
	bool sane = data[1] & 4; /* keep descriptor addresses inside RAM */
	uint16_t start;
	memcpy(&start, data + 2, 2);
	uint8_t ahead = data[4], used_at = data[5];
	data += 8, size -= 8;

	uint8_t *ram = malloc(MEM);
	memset(ram, 0, MEM);
	memcpy(ram, data, size < MEM ? size : MEM);
	struct mb_mem *mem = mb_mem_new();
	mb_mem_add(mem, 0, MEM, 0, ram, "ram");
	uint64_t desc = 0x0000, avail = 0x1000 + 0x200 * (num > 64),
		 used = 0x3000 + 0x100 * (used_at & 7);
	if (sane)
		for (unsigned i = 0; i < num; i++) {
			uint64_t a;
			memcpy(&a, ram + desc + 16 * i, 8);
			a &= MEM - 1;
			memcpy(ram + desc + 16 * i, &a, 8);
		}
	memcpy(ram + used + 2, &start, 2); /* where the device starts */
	uint16_t idx = (uint16_t)(start + ahead % (num + 2));
	memcpy(ram + avail + 2, &idx, 2);

	struct mb_vq q;
	static struct mb_vq_chain c;
	mb_vq_init(&q, mem);
	q.num = num, q.desc_gpa = desc, q.avail_gpa = avail, q.used_gpa = used;
	if (mb_vq_enable(&q, 256, features) == 0) {
		for (int round = 0; round < 300; round++) {
			int rc = mb_vq_pop(&q, &c);
			if (rc <= 0 && !mb_vq_arm(&q))
				break;
			if (rc <= 0)
				continue;
			abort_if(c.nout + c.nin > MB_VQ_MAX_SEGS);
			for (unsigned i = 0; i < c.nout + c.nin; i++) {
				uint8_t *p = c.iov[i].iov_base;
				abort_if(p < ram || p + c.iov[i].iov_len > ram + MEM ||
					 c.iov[i].iov_len == 0);
				/* touch it all: ASan checks what the walker handed out */
				volatile uint8_t x = p[0];
				p[c.iov[i].iov_len - 1] = x;
			}
			mb_vq_push(&q, c.head, (uint32_t)c.in_len);
			mb_vq_need_irq(&q);
		}
	}
	mb_vq_destroy(&q);
	mb_mem_free(mem);
	free(ram);
	return 0;
}

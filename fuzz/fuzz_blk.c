/* libFuzzer: the virtio-blk request path behind the MMIO transport. The
 * input picks features and a queue size, fills guest memory (rings and
 * requests), then the device is set up through its registers the way a
 * driver does and kicked. The image is a small temporary file. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "moonbox/virtio_blk.h"

#define MEM 0x10000u

static struct mb_virtio_blk *blk;

static void no_irq(void *ctx, unsigned line, int level)
{
}

static void wr(struct mb_virtio *t, uint64_t off, uint32_t v)
{
	mb_virtio_mmio_ops.write(t, off, &v, 4);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!blk) {
		char path[] = "/tmp/mb-fuzz-blk-XXXXXX";
		int fd = mkstemp(path);
		if (fd < 0 || ftruncate(fd, 64 << 10))
			abort();
		close(fd);
		struct mb_virtio_blk_config c = { path, false, "fuzz", 0 };
		blk = mb_virtio_blk_new(&c); /* lives for the whole run */
		unlink(path);
		if (!blk)
			abort();
	}
	if (size < 4)
		return 0;
	uint32_t num = 1u << (data[0] % 9);
	uint64_t features = 1ull << VIRTIO_F_VERSION_1 |
			    (uint64_t)(data[1] & 3) << VIRTIO_F_RING_INDIRECT_DESC |
			    (data[1] & 4 ? 1ull << VIRTIO_BLK_F_FLUSH : 0);
	unsigned kicks = 1 + data[2] % 3;
	uint16_t ahead = (uint16_t)(data[3] % (num + 2));
	bool sane = data[1] & 8; /* keep descriptor addresses inside RAM */
	data += 4, size -= 4;

	uint8_t *ram = calloc(1, MEM);
	memcpy(ram, data, size < MEM ? size : MEM);
	struct mb_mem *mem = mb_mem_new();
	mb_mem_add(mem, 0, MEM, 0, ram, "ram");
	uint16_t zero = 0;
	memcpy(ram + 0x3000 + 2, &zero, 2); /* used idx starts at 0 */
	uint64_t avail = 0x1000 + 0x200 * (num > 64);
	memcpy(ram + avail + 2, &ahead, 2);
	for (unsigned i = 0; sane && i < num; i++) {
		uint64_t a;
		memcpy(&a, ram + 16 * i, 8);
		a &= MEM - 1;
		memcpy(ram + 16 * i, &a, 8);
	}
	struct mb_virtio_config cfg = { &mb_virtio_blk_ops, blk,
					mb_virtio_blk_features(blk), mem,
					{ no_irq, NULL, 5 }, -1 };
	struct mb_virtio *t = mb_virtio_new(&cfg);
	wr(t, 0x70, 3);
	wr(t, 0x24, 0), wr(t, 0x20, (uint32_t)features);
	wr(t, 0x24, 1), wr(t, 0x20, (uint32_t)(features >> 32));
	wr(t, 0x70, 3 | 8);
	wr(t, 0x30, 0), wr(t, 0x38, num);
	wr(t, 0x80, 0x0000), wr(t, 0x90, (uint32_t)avail),
		wr(t, 0xa0, 0x3000);
	wr(t, 0x44, 1);
	wr(t, 0x70, 3 | 8 | 4);
	for (unsigned i = 0; i < kicks; i++)
		mb_virtio_kick(t, 0);
	uint32_t isr = 0;
	mb_virtio_mmio_ops.read(t, 0x60, &isr, 4);
	wr(t, 0x64, isr);
	wr(t, 0x70, 0);
	mb_virtio_free(t);
	mb_mem_free(mem);
	free(ram);
	return 0;
}

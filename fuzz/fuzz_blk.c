/* libFuzzer: the virtio-blk request path behind the MMIO transport. Guest
 * memory (rings, request headers, data, status bytes) is laid out from the
 * input by fuzz/vq_input.h; the device is set up through its registers the
 * way a driver does and kicked. The image is a small temporary file.
 * Header bits of this harness: opt bit 0 negotiates VIRTIO_BLK_F_FLUSH;
 * opt2 % 3 + 1 kicks. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "moonbox/virtio_blk.h"
#include "fuzz/vq_input.h"

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
	uint8_t *ram = calloc(1, VQ_MEM);
	struct vq_input in;
	if (!vq_input(data, size, ram, &in)) {
		free(ram);
		return 0;
	}
	uint64_t features = 1ull << VIRTIO_F_VERSION_1 | in.features |
			    (in.opt & 1 ? 1ull << VIRTIO_BLK_F_FLUSH : 0);
	unsigned kicks = 1 + in.opt2 % 3;
	struct mb_mem *mem = mb_mem_new();
	mb_mem_add(mem, 0, VQ_MEM, 0, ram, "ram");
	struct mb_virtio_config cfg = { &mb_virtio_blk_ops, blk,
					mb_virtio_blk_features(blk), mem,
					{ no_irq, NULL, 5 }, -1 };
	struct mb_virtio *t = mb_virtio_new(&cfg);
	wr(t, 0x70, 3);
	wr(t, 0x24, 0), wr(t, 0x20, (uint32_t)features);
	wr(t, 0x24, 1), wr(t, 0x20, (uint32_t)(features >> 32));
	wr(t, 0x70, 3 | 8);
	wr(t, 0x30, 0), wr(t, 0x38, in.num);
	wr(t, 0x80, (uint32_t)in.desc), wr(t, 0x90, (uint32_t)in.avail),
		wr(t, 0xa0, (uint32_t)in.used);
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

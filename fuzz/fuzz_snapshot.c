/* libFuzzer: the snapshot file reader (core/snapshot_file.c). A snapshot
 * file comes from outside: any input must be refused with a message or
 * read whole, never crash, leak or read out of bounds. The checksums would
 * stop almost every input at the header, so when the first byte is even
 * the harness repairs magic, version (2), length and both CRC-32Cs of the
 * rest first: the record parser behind them gets fuzzed too. A first byte
 * of 3 mod 4 instead feeds the rest to the reader of a KEPT record's
 * device bytes (a disk overlay's blocks, devices/virtio/overlay.c), which
 * restore hands them to, and writes what it read back out: the same bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "moonbox.h"
#include "devices/virtio/overlay.h"

struct sink {
	const uint8_t *want;
	size_t n, len;
};

static int cmp_put(void *ctx, const void *p, size_t n)
{
	struct sink *k = ctx;
	if (n > k->len - k->n || memcmp(k->want + k->n, p, n))
		abort(); /* written back other than it was read */
	k->n += n;
	return 0;
}

static void kept(const uint8_t *data, size_t size)
{
	struct mb_overlay_kept *k = NULL;
	if (mb_overlay_kept_read(data, size, &k)) {
		if (k || strncmp(mb_errmsg(), "overlay blocks: ", 16) != 0)
			abort();
		return;
	}
	struct sink sk = { data, 0, size };
	if (mb_overlay_kept_size(k) != (k ? size : 0) || mb_overlay_kept_write(k, cmp_put, &sk) ||
	    sk.n != (k ? size : 0))
		abort();
	mb_overlay_drop(k);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	bool repair = !(data[0] & 1);
	if ((data[0] & 3) == 3) {
		kept(data + 1, size - 1);
		return 0;
	}
	data++, size--;
	uint8_t *p = malloc(size ? size : 1);
	if (!p)
		abort();
	memcpy(p, data, size);
	if (repair && size >= 32) {
		uint32_t v[2] = { 2, 32 }, crc;
		uint64_t len = size - 32;
		memcpy(p, "MOONSNAP", 8);
		memcpy(p + 8, v, 8);
		memcpy(p + 16, &len, 8);
		crc = mb_crc32c(0, p + 32, len);
		memcpy(p + 24, &crc, 4);
		crc = mb_crc32c(0, p, 28);
		memcpy(p + 28, &crc, 4);
	}
	struct mb_snapshot *s = NULL;
	if (mb_snapshot_parse(p, size, "fuzz", &s)) {
		if (strncmp(mb_errmsg(), "restore: ", 9) != 0)
			abort(); /* every refusal says what it refused */
	} else {
		(void)mb_snapshot_ram_pages(s);
		size_t n;
		(void)mb_snapshot_conf(s, &n);
		mb_snapshot_free(s);
	}
	free(p);
	return 0;
}

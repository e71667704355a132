/* QEMU fw_cfg: the traditional interface, the DMA interface, and a guest
 * that writes nonsense into both. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "moonbox.h"
#include "moonbox/fw_cfg.h"

#define RAM 0x10000

static void sel(struct mb_fw_cfg *f, uint16_t key)
{
	uint8_t b[2] = { (uint8_t)key, (uint8_t)(key >> 8) };
	mb_fw_cfg_ops.write(f, 0, b, 2);
}

static void data(struct mb_fw_cfg *f, void *out, unsigned n)
{
	uint8_t *o = out;
	for (unsigned i = 0; i < n; i++)
		mb_fw_cfg_ops.read(f, 1, o + i, 1);
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* Write a FWCfgDmaAccess at desc and start it, as Linux does: the high
 * then the low half of the address, each big-endian. */
static uint32_t dma(struct mb_fw_cfg *f, struct mb_mem *mem, uint64_t desc,
		    uint32_t ctl, uint32_t len, uint64_t addr)
{
	uint8_t d[16];
	put_be32(d, ctl), put_be32(d + 4, len);
	put_be32(d + 8, (uint32_t)(addr >> 32)), put_be32(d + 12, (uint32_t)addr);
	if (mem)
		assert_int_equal(mb_mem_write(mem, desc, d, 16), 0);
	uint8_t hi[4], lo[4];
	put_be32(hi, (uint32_t)(desc >> 32)), put_be32(lo, (uint32_t)desc);
	mb_fw_cfg_ops.write(f, 4, hi, 4);
	mb_fw_cfg_ops.write(f, 8, lo, 4);
	uint8_t back[4] = { 0xff, 0xff, 0xff, 0xff };
	if (mem)
		mb_mem_read(mem, desc, back, 4);
	return be32(back);
}

static struct mb_mem *ram(void)
{
	struct mb_mem *mem = mb_mem_new();
	assert_non_null(mem);
	assert_int_equal(mb_mem_add(mem, 0, RAM, 0, NULL, "ram"), 0);
	return mem;
}

static void test_signature_id_dir(void **state)
{
	struct mb_fw_cfg *f = mb_fw_cfg_new(NULL);
	char sig[5] = { 0 };
	sel(f, MB_FW_CFG_SIGNATURE);
	data(f, sig, 4);
	assert_string_equal(sig, "QEMU");
	uint8_t id[4];
	sel(f, MB_FW_CFG_ID);
	data(f, id, 4);
	assert_int_equal(id[0], 3); /* traditional + DMA */
	uint8_t dmasig[8];
	mb_fw_cfg_ops.read(f, 4, dmasig, 4);
	mb_fw_cfg_ops.read(f, 8, dmasig + 4, 4);
	assert_memory_equal(dmasig, "QEMU CFG", 8);

	assert_int_equal(mb_fw_cfg_add_file(f, "opt/a", "hello", 5), 0);
	assert_int_equal(mb_fw_cfg_add_file(f, "opt/b", "xy", 2), 0);
	assert_int_not_equal(mb_fw_cfg_add_file(f, "opt/a", "again", 5), 0);
	char longname[80];
	memset(longname, 'n', sizeof longname - 1), longname[79] = 0;
	assert_int_not_equal(mb_fw_cfg_add_file(f, longname, "", 0), 0);
	uint8_t dir[4 + 2 * 64];
	sel(f, MB_FW_CFG_FILE_DIR);
	data(f, dir, sizeof dir);
	assert_int_equal(be32(dir), 2);
	assert_int_equal(be32(dir + 4), 5);                /* size */
	assert_int_equal(dir[8] << 8 | dir[9], 0x20);      /* select */
	assert_string_equal((char *)dir + 12, "opt/a");
	assert_int_equal(dir[64 + 8] << 8 | dir[64 + 9], 0x21);
	assert_string_equal((char *)dir + 64 + 12, "opt/b");

	char got[8] = { 0 };
	sel(f, 0x21);
	data(f, got, 4); /* past the end: zeros */
	assert_memory_equal(got, "xy\0\0", 4);
	sel(f, 0x1234); /* nothing there: zeros */
	data(f, got, 2);
	assert_int_equal(got[0] | got[1], 0);
	mb_fw_cfg_free(f);
}

static void test_dma_read_skip_select(void **state)
{
	struct mb_mem *mem = ram();
	struct mb_fw_cfg *f = mb_fw_cfg_new(mem);
	assert_int_equal(mb_fw_cfg_add_file(f, "opt/x", "0123456789", 10), 0);
	uint8_t buf[16];
	/* select + read 4 */
	assert_int_equal(dma(f, mem, 0x1000, 0x20u << 16 | 0x08 | 0x02, 4, 0x2000), 0);
	mb_mem_read(mem, 0x2000, buf, 4);
	assert_memory_equal(buf, "0123", 4);
	/* skip 2, read 6 (2 past the end: zeros) */
	assert_int_equal(dma(f, mem, 0x1000, 0x04, 2, 0), 0);
	memset(buf, 0xee, sizeof buf);
	mb_mem_write(mem, 0x2000, buf, 8);
	assert_int_equal(dma(f, mem, 0x1000, 0x02, 6, 0x2000), 0);
	mb_mem_read(mem, 0x2000, buf, 8);
	assert_memory_equal(buf, "6789\0\0\xee\xee", 8);
	/* the traditional interface sees the same offset (at the end) */
	uint8_t b = 0x55;
	data(f, &b, 1);
	assert_int_equal(b, 0);
	struct mb_fw_cfg_state st;
	mb_fw_cfg_save(f, &st);
	assert_int_equal(st.dma_ops, 3);
	assert_int_equal(st.dma_errors, 0);
	assert_int_equal(st.selector, 0x20);
	mb_fw_cfg_free(f);
	mb_mem_free(mem);
}

static void test_dma_hostile(void **state)
{
	struct mb_mem *mem = ram();
	struct mb_fw_cfg *f = mb_fw_cfg_new(mem);
	assert_int_equal(mb_fw_cfg_add_file(f, "opt/x", "abc", 3), 0);
	/* buffer outside RAM, wrapping, huge: error bit, nothing written */
	assert_int_equal(dma(f, mem, 0x1000, 0x20u << 16 | 0x0a, 3, RAM - 1), 1);
	assert_int_equal(dma(f, mem, 0x1000, 0x20u << 16 | 0x0a, 16,
			     UINT64_MAX - 4), 1);
	assert_int_equal(dma(f, mem, 0x1000, 0x20u << 16 | 0x0a, 0xffffffffu,
			     0x3000), 1);
	/* a write: no item is writable */
	assert_int_equal(dma(f, mem, 0x1000, 0x10, 3, 0x2000), 1);
	/* the descriptor itself outside RAM: ignored, counted */
	dma(f, NULL, RAM + 0x1000, 0x02, 3, 0x2000);
	dma(f, NULL, UINT64_MAX - 3, 0x02, 3, 0x2000);
	/* skip far past the end, then read: zeros, no overflow */
	assert_int_equal(dma(f, mem, 0x1000, 0x20u << 16 | 0x0c, 0xffffffffu, 0), 0);
	uint8_t z[3] = { 1, 1, 1 };
	data(f, z, 3);
	assert_int_equal(z[0] | z[1] | z[2], 0);
	/* odd-sized and out-of-range port accesses do nothing harmful */
	uint8_t w[8] = { 0 };
	mb_fw_cfg_ops.write(f, 0, w, 1);
	mb_fw_cfg_ops.write(f, 10, w, 4);
	mb_fw_cfg_ops.read(f, 11, w, 4);
	mb_fw_cfg_ops.write(f, 1, w, 1);
	struct mb_fw_cfg_state st;
	mb_fw_cfg_save(f, &st);
	assert_int_equal(st.dma_errors, 6);
	/* a loaded offset past the item is refused */
	st.selector = 0x20, st.offset = 4;
	assert_int_not_equal(mb_fw_cfg_load(f, &st), 0);
	st.offset = 3;
	assert_int_equal(mb_fw_cfg_load(f, &st), 0);
	mb_fw_cfg_free(f);
	mb_mem_free(mem);
}

/* Mid-transfer: one DMA done (the counters count it), a file selected
 * and partly read, the DMA address's high half written (a transfer not
 * yet started). A second fw_cfg with the same
 * items loaded from the state saves the same and reads on from the same
 * byte; a DMA started on both after it goes to the same address. */
static void test_state_round_trip(void **state)
{
	struct mb_mem *mem = ram(), *mem2 = ram();
	struct mb_fw_cfg *f = mb_fw_cfg_new(mem), *f2 = mb_fw_cfg_new(mem2);
	assert_int_equal(mb_fw_cfg_add_file(f, "opt/x", "hello, fw_cfg", 13), 0);
	assert_int_equal(mb_fw_cfg_add_file(f2, "opt/x", "hello, fw_cfg", 13), 0);
	uint8_t sig[4];
	assert_int_equal(dma(f, mem, 0x1000, 0x02, 4, 0x3000), 0);
	assert_int_equal(mb_mem_read(mem, 0x3000, sig, 4), 0);
	assert_memory_equal(sig, "QEMU", 4);
	sel(f, 0x20);
	char got[14] = { 0 };
	data(f, got, 5);
	assert_string_equal(got, "hello");
	uint8_t hi[4] = { 0 };
	mb_fw_cfg_ops.write(f, 4, hi, 4); /* high half only: nothing starts */
	struct mb_fw_cfg_state a, b;
	mb_fw_cfg_save(f, &a);
	assert_int_equal(a.selector, 0x20);
	assert_int_equal(a.offset, 5);
	assert_int_equal(a.dma_ops, 1);
	assert_int_equal(mb_fw_cfg_load(f2, &a), 0);
	mb_fw_cfg_save(f2, &b);
	assert_memory_equal(&a, &b, sizeof a);
	char r1[9] = { 0 }, r2[9] = { 0 };
	data(f, r1, 3);
	data(f2, r2, 3);
	assert_string_equal(r1, ", f");
	assert_string_equal(r2, ", f");
	/* DMA read of the rest (control 0x02 = read) into both RAMs */
	assert_int_equal(dma(f, mem, 0x1000, 0x02, 5, 0x2000), 0);
	assert_int_equal(dma(f2, mem2, 0x1000, 0x02, 5, 0x2000), 0);
	assert_int_equal(mb_mem_read(mem, 0x2000, r1, 5), 0);
	assert_int_equal(mb_mem_read(mem2, 0x2000, r2, 5), 0);
	assert_memory_equal(r1, "w_cfg", 5);
	assert_memory_equal(r2, "w_cfg", 5);
	mb_fw_cfg_save(f, &a);
	mb_fw_cfg_save(f2, &b);
	assert_memory_equal(&a, &b, sizeof a);
	mb_fw_cfg_free(f);
	mb_fw_cfg_free(f2);
	mb_mem_free(mem);
	mb_mem_free(mem2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_signature_id_dir),
		cmocka_unit_test(test_dma_read_skip_select),
		cmocka_unit_test(test_dma_hostile),
		cmocka_unit_test(test_state_round_trip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

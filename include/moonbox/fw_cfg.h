/*
 * QEMU's firmware configuration interface (QEMU docs/specs/fw_cfg.rst), as
 * on a PC: a 16-bit selector at port 0x510, a byte-wide data port at 0x511
 * and the DMA address register at 0x514-0x51b (big-endian, 64-bit; a
 * write of its low half starts a transfer). Items: the "QEMU" signature,
 * the ID (traditional interface and DMA), CPU count, RAM size, the file
 * directory and named files (selectors from 0x20), among them "etc/e820".
 * Linux shows the files in /sys/firmware/qemu_fw_cfg (FW_CFG_SYSFS).
 */
#ifndef MOONBOX_FW_CFG_H
#define MOONBOX_FW_CFG_H

#include "moonbox.h"

#define MB_FW_CFG_PORT 0x510
#define MB_FW_CFG_PORTS 12

/* Selector keys (fw_cfg.rst, "Selector Register" and QEMU's fw_cfg.h) */
#define MB_FW_CFG_SIGNATURE 0x0000
#define MB_FW_CFG_ID 0x0001
#define MB_FW_CFG_RAM_SIZE 0x0003
#define MB_FW_CFG_NB_CPUS 0x0005
#define MB_FW_CFG_MAX_CPUS 0x000f
#define MB_FW_CFG_FILE_DIR 0x0019
#define MB_FW_CFG_FILE_FIRST 0x0020
#define MB_FW_CFG_NAME_MAX 56 /* with the NUL */
#define MB_FW_CFG_MAX_FILES 64

struct mb_fw_cfg;

/* What the guest can change: the selected item, the offset in it, the
 * DMA address register as written so far; then counters. */
#define MB_FW_CFG_STATE(X, S) \
	X(S, u16, selector) X(S, u32, offset) X(S, u64, dma_addr) \
	X(S, ro_u64, dma_ops)    /* transfers started */ \
	X(S, ro_u64, dma_errors) /* ... that ended with the error bit */
MB_STATE_STRUCT(mb_fw_cfg_state, MB_FW_CFG_STATE);
#define MB_FW_CFG_STATE_VERSION 1

/* ---- in a machine ------------------------------------------------------ */

struct mb_fw_cfg_file {
	const char *name;   /* "opt/org.example/x": at most 55 bytes */
	const char *path;   /* read at attach; or */
	const void *data;   /* len bytes, copied */
	size_t len;
};

struct mb_fw_cfg_attach_config {
	const char *name;   /* NULL: "fw_cfg" */
	const struct mb_fw_cfg_file *files;
	size_t nfiles;
};

/* Ports 0x510-0x51b. CPU count, RAM size and etc/e820 describe the machine
 * as it stands at the guest's first access (devices added after attach
 * count). With acpi on, the DSDT describes it (QEMU0002); else the Linux
 * loaders add qemu_fw_cfg.ioport= to the command line. */
int mb_fw_cfg_attach(struct mb_machine *m,
		     const struct mb_fw_cfg_attach_config *cfg,
		     struct mb_device **out);

/* ---- the model on its own ---------------------------------------------- */

/* mem: guest RAM for DMA (NULL: DMA transfers fail with the error bit).
 * NULL when out of memory. */
struct mb_fw_cfg *mb_fw_cfg_new(struct mb_mem *mem);
void mb_fw_cfg_free(struct mb_fw_cfg *f);
/* An item under a fixed key (replaced if present); data copied. */
int mb_fw_cfg_set(struct mb_fw_cfg *f, uint16_t key, const void *data,
		  size_t len);
/* A named file: the next selector from 0x20, listed in the directory. */
int mb_fw_cfg_add_file(struct mb_fw_cfg *f, const char *name,
		       const void *data, size_t len);
/* Called once, at the guest's first access, before it is served (the
 * attach function fills in the machine's items there). */
void mb_fw_cfg_on_first(struct mb_fw_cfg *f, void (*fn)(void *opaque,
		       struct mb_fw_cfg *f), void *opaque);
void mb_fw_cfg_save(struct mb_fw_cfg *f, struct mb_fw_cfg_state *st);
/* load refuses an offset past the selected item (-EINVAL naming it) and
 * takes the counters. */
int mb_fw_cfg_load(struct mb_fw_cfg *f, const struct mb_fw_cfg_state *st);

extern const struct mb_io_ops mb_fw_cfg_ops; /* the 12 ports from 0x510 */

#endif

/*
 * Devices in a machine: a name, a kind, the ranges it answers on the buses,
 * its interrupt line, its state, and its cleanup. Every device model's
 * attach function (mb_uart_attach, mb_virtio_blk_attach, ...) creates one
 * of these; Lua, tests, fuzzers and C embedders all go through them.
 *
 * Writing an attach function:
 *   1. build the device model (its own _new()),
 *   2. mb_device_new(): from here the machine owns the model and frees it
 *      with ops->free, also when a later step fails,
 *   3. mb_device_map() each range, mb_device_irq() its line,
 *   4. on any failure, mb_device_remove() and return the code: the bus and
 *      the machine look as if the device had never been added.
 */
#ifndef MOONBOX_DEVICE_H
#define MOONBOX_DEVICE_H

#include "moonbox/state.h"

struct mb_machine;
struct mb_device;
struct mb_io_ops;
struct mb_irq;

enum mb_space { MB_SPACE_PIO, MB_SPACE_MMIO };

#define MB_DEVICE_NAME_MAX 32 /* bytes, with the terminating NUL */
#define MB_DEVICE_MAX_RANGES 8

struct mb_device_ops {
	const char *kind;                  /* "uart16550": the model */
	const struct mb_state_desc *state; /* NULL: the device has no state */
	/* Fill st (a struct of state->size bytes) / load it back. load
	 * validates everything first and changes nothing on failure
	 * (mb_seterr names the field). Called with the machine paused. */
	int (*save)(void *impl, void *st);
	int (*load)(void *impl, const void *st);
	/* Optional: finish or park in-flight work (virtio requests on
	 * workers) so that save() sees a state that can be continued. */
	void (*quiesce)(void *impl);
	void (*free)(void *impl); /* with the machine, or by mb_device_remove */
	/* Optional: state that is neither in the state struct nor in guest
	 * RAM (a disk overlay's written blocks), kept by reference in
	 * in-memory snapshots. keep sets *kept (NULL: nothing to keep);
	 * put_back(impl, NULL) means nothing kept; drop(kept) frees it and
	 * may run after the device is gone. 0 or -errno. */
	int (*keep)(void *impl, void **kept);
	int (*put_back)(void *impl, const void *kept);
	void (*drop)(void *kept);
	/* Optional: a kept state in snapshot files (without them a file of
	 * a device that kept something is refused). kept_size: the bytes
	 * kept_write passes to put; kept_read: a kept state (for put_back,
	 * freed by drop) from bytes read back, validated whole (-EINVAL and
	 * mb_seterr saying what is wrong); *kept NULL: nothing. */
	uint64_t (*kept_size)(const void *kept);
	int (*kept_write)(const void *kept,
			  int (*put)(void *ctx, const void *p, size_t n), void *ctx);
	int (*kept_read)(const void *p, size_t len, void **kept);
};

struct mb_device_range {
	enum mb_space space;
	uint64_t base, size;
};

/* Add a device to m. name: the caller's name (NULL or "": the default).
 * defname: the kind's default, either fixed ("pic": a second one becomes
 * "pic#2") or indexed with one %u ("blk%u": the first free of blk0,
 * blk1, ...). A given name already used in m is an error. On failure
 * ops->free(impl) has been called. */
int mb_device_new(struct mb_machine *m, const char *name, const char *defname,
		  const struct mb_device_ops *ops, void *impl,
		  struct mb_device **out);
/* Register [base, base+size) on the PIO or MMIO bus, dispatching to io
 * with opaque (usually the model). The bus entry carries the device's
 * name, and the range is listed by mb_device_range(). */
int mb_device_map(struct mb_device *d, enum mb_space space, uint64_t base,
		  uint64_t size, const struct mb_io_ops *io, void *opaque);
/* Take interrupt line `line` (< 0: a free one from the machine's
 * allocator) of the machine's controller: *out drives it. Lines may be
 * shared (COM1 and COM3 both use 4 on a PC). */
int mb_device_irq(struct mb_device *d, int line, struct mb_irq *out);
/* Undo mb_device_new and everything mapped since (its interrupt line is
 * released: free again unless another device shares it); frees the model. */
void mb_device_remove(struct mb_device *d);

const char *mb_device_name(const struct mb_device *d);
const char *mb_device_kind(const struct mb_device *d);
void *mb_device_impl(const struct mb_device *d);
struct mb_machine *mb_device_machine(const struct mb_device *d);
int mb_device_irq_line(const struct mb_device *d); /* -1: none */
size_t mb_device_nranges(const struct mb_device *d);
const struct mb_device_range *mb_device_range(const struct mb_device *d,
					      size_t i);
const struct mb_state_desc *mb_device_state_desc(const struct mb_device *d);
/* The ops the device was made with: a model's own file compares them with
 * its own to know the impl is its model (and not, say, a proxy). */
const struct mb_device_ops *mb_device_ops_of(const struct mb_device *d);

/* State (buffers of mb_device_state_desc(d)->size bytes). save may run at
 * any time (a consistent copy under the model's lock); load needs the
 * machine paused (-EBUSY otherwise) and changes nothing when it fails.
 * -ENOTSUP for a device without state. */
int mb_device_save(struct mb_device *d, void *st);
int mb_device_load(struct mb_device *d, const void *st);
void mb_device_quiesce(struct mb_device *d);
/* ops->keep / put_back (no-ops without them); *drop: how to free *kept. */
int mb_device_keep(struct mb_device *d, void **kept, void (**drop)(void *));
int mb_device_put_back(struct mb_device *d, const void *kept);

/* The machine's devices, in the order they were added. */
size_t mb_machine_ndevices(struct mb_machine *m);
struct mb_device *mb_machine_device_at(struct mb_machine *m, size_t i);
struct mb_device *mb_machine_device(struct mb_machine *m, const char *name);

#endif

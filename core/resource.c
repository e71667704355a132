/*
 * Resources a device needs when the machine file does not give them: an
 * MMIO window and an interrupt line, and what the guest must be told about
 * them (e820 holes, and for virtio-mmio a discovery entry). Discovery stays
 * a separate list so another method (ACPI) can consume it later; today
 * boot_linux turns it into virtio_mmio.device= command line entries.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "core/acpi.h"
#include "core/internal.h"

/* Device windows: from 3.25 GiB, the PC's traditional PCI hole. */
#define MMIO_START 0xd0000000ull
#define MMIO_END 0xfec00000ull /* IOAPIC and friends above */

static bool busy_mmio(struct mb_machine *m, uint64_t base, uint64_t size)
{
	for (uint64_t a = base; a < base + size; a += 0x1000)
		if (mb_bus_owner(m->mmio, a) || mb_mem_ptr(m->mem, a, 1, false))
			return true;
	for (unsigned i = 0; i < m->nres; i++)
		if (base < m->res[i].base + m->res[i].size &&
		    m->res[i].base < base + size)
			return true;
	return false;
}

int mb_machine_alloc_mmio(struct mb_machine *m, uint64_t size, uint64_t *base)
{
	if (size < 0x1000 || (size & (size - 1)))
		return mb_seterr(-EINVAL, "mmio: window size 0x%" PRIx64 " is not a "
				 "power of two of at least 4K", size);
	for (uint64_t b = MMIO_START; b + size <= MMIO_END; b += size)
		if (!busy_mmio(m, b, size)) {
			*base = b;
			return 0;
		}
	return mb_seterr(-ENOSPC, "mmio: no free window of 0x%" PRIx64 " bytes",
			 size);
}

int mb_machine_claim_irq(struct mb_machine *m, unsigned line)
{
	if (line >= 64)
		return mb_seterr(-EINVAL, "irq: line %u does not exist", line);
	if (m->irq_users[line] == UINT16_MAX)
		return mb_seterr(-ENOSPC, "irq: line %u has too many users", line);
	m->irq_users[line]++;
	return 0;
}

void mb_machine_release_irq(struct mb_machine *m, unsigned line)
{
	if (line < 64 && m->irq_users[line])
		m->irq_users[line]--;
}

int mb_machine_alloc_irq(struct mb_machine *m, unsigned *line)
{
	/* ISA lines a PC leaves free first; KVM's IOAPIC adds 16-23. */
	static const unsigned order[] = { 5, 7, 9, 10, 11, 12, 14, 15, 6, 3,
					  16, 17, 18, 19, 20, 21, 22, 23 };
	unsigned max = m->irqchip == MB_IRQCHIP_KERNEL ? 24 : 16;
	for (size_t i = 0; i < sizeof order / sizeof *order; i++)
		if (order[i] < max && !m->irq_users[order[i]]) {
			m->irq_users[order[i]] = 1;
			*line = order[i];
			return 0;
		}
	return mb_seterr(-ENOSPC, "irq: every interrupt line is taken");
}

int mb_machine_reserve(struct mb_machine *m, uint64_t base, uint64_t size)
{
	if (m->nres == MB_MAX_RESERVED)
		return mb_seterr(-ENOSPC, "memory: more than %d reserved ranges",
				 MB_MAX_RESERVED);
	m->res[m->nres++] = (struct mb_range){ base, size };
	return 0;
}

size_t mb_machine_reserved(struct mb_machine *m, const struct mb_range **out)
{
	*out = m->res;
	return m->nres;
}

int mb_machine_add_virtio_mmio(struct mb_machine *m, uint64_t base,
			       uint64_t size, unsigned irq)
{
	if (m->nvirtio == MB_MAX_RESERVED)
		return mb_seterr(-ENOSPC, "virtio: more than %d devices",
				 MB_MAX_RESERVED);
	m->virtio[m->nvirtio++] = (struct mb_platform_dev){ base, size, irq };
	return mb_machine_reserve(m, base, size);
}

/* " virtio_mmio.device=SIZE@BASE:IRQ" for each device (kernel-parameters,
 * VIRTIO_MMIO_CMDLINE_DEVICES). Returns the length it needed. */
size_t mb_machine_discovery_cmdline(struct mb_machine *m, char *buf, size_t len)
{
	size_t n = 0;
	if (len)
		buf[0] = 0;
	for (unsigned i = 0; i < m->nvirtio; i++) {
		const struct mb_platform_dev *d = &m->virtio[i];
		int k = snprintf(n < len ? buf + n : NULL, n < len ? len - n : 0,
				 " virtio_mmio.device=0x%" PRIx64 "@0x%" PRIx64 ":%u",
				 d->size, d->base, d->irq);
		n += k > 0 ? (size_t)k : 0;
	}
	/* fw_cfg's 12 ports (FW_CFG_SYSFS_CMDLINE; offsets 0, 1, 4 as x86) */
	uint16_t fw = mb_acpi_fw_cfg_port(m);
	if (fw) {
		int k = snprintf(n < len ? buf + n : NULL, n < len ? len - n : 0,
				 " qemu_fw_cfg.ioport=0xc@0x%x", fw);
		n += k > 0 ? (size_t)k : 0;
	}
	return n;
}

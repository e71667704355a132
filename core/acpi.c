/*
 * ACPI tables (ACPI 6.4 specification), written from a plain description
 * of the machine: RSDP (sec. 5.2.5), XSDT and RSDT (5.2.8, 5.2.7), FADT
 * (5.2.9), FACS (5.2.10), MADT (5.2.12) and a DSDT (5.2.11.1) whose AML
 * (chapter 20) a small encoder below writes: \_S5 for power-off, COM1
 * (PNP0501), each virtio-mmio device (LNRO0005, as QEMU's microvm and
 * Linux's virtio_mmio driver name it) and fw_cfg (QEMU0002).
 *
 * The FADT is a full one, not hardware-reduced: on x86 Linux treats a
 * hardware-reduced platform as having no legacy PIC and no PIT
 * (acpi_generic_reduced_hw_init), and moonbox's user irqchip is exactly
 * that PIC. A full FADT costs two small I/O blocks (acpi_pm.c): PM1a
 * event and PM1a control, where SLP_EN with \_S5's type powers off.
 * SMI_CMD is 0: the platform is always in ACPI mode (sec. 4.8.2.1.1).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/acpi.h"
#include "core/internal.h"
#include "moonbox/device.h"

/* ---- a byte buffer -------------------------------------------------- */

struct buf {
	uint8_t *b;
	size_t n, max;
	bool over;
};

static void put(struct buf *o, const void *p, size_t len)
{
	if (o->over || len > o->max - o->n) {
		o->over = true;
		return;
	}
	memcpy(o->b + o->n, p, len);
	o->n += len;
}

static void u8(struct buf *o, unsigned v) { uint8_t b = (uint8_t)v; put(o, &b, 1); }
static void u16(struct buf *o, unsigned v) { u8(o, v & 0xff), u8(o, v >> 8 & 0xff); }
static void u32(struct buf *o, uint32_t v) { u16(o, v & 0xffff), u16(o, v >> 16); }
static void u64(struct buf *o, uint64_t v) { u32(o, (uint32_t)v), u32(o, (uint32_t)(v >> 32)); }
static void str(struct buf *o, const char *s, size_t len) /* space padded */
{
	size_t k = strlen(s);
	for (size_t i = 0; i < len; i++)
		u8(o, i < k ? (unsigned char)s[i] : ' ');
}

static void align(struct buf *o, size_t a)
{
	while (!o->over && o->n % a)
		u8(o, 0);
}

static void set32(struct buf *o, size_t at, uint32_t v)
{
	if (!o->over)
		for (int i = 0; i < 4; i++)
			o->b[at + i] = (uint8_t)(v >> 8 * i);
}

static uint8_t sum(const uint8_t *p, size_t len)
{
	uint8_t s = 0;
	while (len--)
		s = (uint8_t)(s + *p++);
	return s;
}

/* ---- AML (ACPI 6.4 chapter 20) ------------------------------------------ */

/* PkgLength (sec. 20.2.4) covers itself and what follows up to the end of
 * the package: write the body, then slide it right to make room. */
static size_t pkg_begin(struct buf *o) { return o->n; }

static void pkg_end(struct buf *o, size_t start)
{
	if (o->over)
		return;
	size_t body = o->n - start, len;
	unsigned k; /* bytes after the lead byte */
	for (k = 0; k < 4; k++) {
		len = body + 1 + k;
		if ((k == 0 && len <= 0x3f) || (k && len < (1u << (4 + 8 * k))))
			break;
	}
	if (k == 4 || 1 + k > o->max - o->n) {
		o->over = true;
		return;
	}
	memmove(o->b + start + 1 + k, o->b + start, body);
	o->n += 1 + k;
	if (k == 0) {
		o->b[start] = (uint8_t)len;
		return;
	}
	o->b[start] = (uint8_t)(k << 6 | (len & 0xf));
	for (unsigned i = 0; i < k; i++)
		o->b[start + 1 + i] = (uint8_t)(len >> (4 + 8 * i));
}

/* A NameSeg (sec. 20.2.2): 4 characters, '_' padded; "\\X" is rooted. */
static void nameseg(struct buf *o, const char *s)
{
	if (*s == '\\')
		u8(o, '\\'), s++;
	char seg[4] = { '_', '_', '_', '_' };
	for (int i = 0; i < 4 && s[i]; i++)
		seg[i] = s[i];
	put(o, seg, 4);
}

static void aml_int(struct buf *o, uint64_t v)
{
	if (v == 0)
		u8(o, 0x00); /* ZeroOp */
	else if (v == 1)
		u8(o, 0x01); /* OneOp */
	else if (v <= 0xff)
		u8(o, 0x0a), u8(o, (unsigned)v);
	else if (v <= 0xffff)
		u8(o, 0x0b), u16(o, (unsigned)v);
	else if (v <= 0xffffffff)
		u8(o, 0x0c), u32(o, (uint32_t)v);
	else
		u8(o, 0x0e), u64(o, v);
}

static void aml_string(struct buf *o, const char *s)
{
	u8(o, 0x0d);
	put(o, s, strlen(s) + 1);
}

/* EisaId("PNP0501"): three letters in 5 bits each, four hex digits, as a
 * big-endian 32-bit value stored as an integer (sec. 19.6.35). */
static uint32_t eisa_id(const char *id)
{
	unsigned hex = 0;
	for (int i = 3; i < 7; i++)
		hex = hex << 4 |
		      (unsigned)(id[i] <= '9' ? id[i] - '0' : id[i] - 'A' + 10);
	unsigned a = (unsigned)(id[0] - 0x40), b = (unsigned)(id[1] - 0x40),
		 c = (unsigned)(id[2] - 0x40);
	uint32_t be = (uint32_t)(a << 26 | b << 21 | c << 16 | hex);
	return (be >> 24) | (be >> 8 & 0xff00) | (be << 8 & 0xff0000) | be << 24;
}

/* Name(NAME, value) with an integer or string value. */
static void name_int(struct buf *o, const char *n, uint64_t v)
{
	u8(o, 0x08), nameseg(o, n), aml_int(o, v);
}

static void name_str(struct buf *o, const char *n, const char *s)
{
	u8(o, 0x08), nameseg(o, n), aml_string(o, s);
}

/* Resource descriptors (sec. 6.4) for a _CRS buffer. */
static void res_io(struct buf *o, uint16_t port, uint8_t len)
{
	u8(o, 0x47), u8(o, 0x01);         /* I/O port, 16-bit decode */
	u16(o, port), u16(o, port), u8(o, 1), u8(o, len);
}

static void res_irq(struct buf *o, unsigned irq) /* IRQNoFlags: edge, high */
{
	u8(o, 0x22), u16(o, 1u << irq);
}

static void res_mem32(struct buf *o, uint32_t base, uint32_t len)
{
	u8(o, 0x86), u16(o, 9), u8(o, 1); /* Memory32Fixed, read-write */
	u32(o, base), u32(o, len);
}

/* Extended Interrupt (sec. 6.4.3.6): consumer, edge, active high,
 * exclusive. moonbox's virtio-mmio lines are edge-like (an irqfd pulses). */
static void res_xirq(struct buf *o, uint32_t gsi)
{
	u8(o, 0x89), u16(o, 6), u8(o, 0x03), u8(o, 1), u32(o, gsi);
}

/* Name(_CRS, ResourceTemplate(){...}): fn writes the descriptors. */
static void crs_begin(struct buf *o, size_t *pkg, size_t *size_at)
{
	u8(o, 0x08), nameseg(o, "_CRS");
	u8(o, 0x11); /* BufferOp */
	*pkg = pkg_begin(o);
	u8(o, 0x0c), *size_at = o->n, u32(o, 0); /* BufferSize, patched */
}

static void crs_end(struct buf *o, size_t pkg, size_t size_at)
{
	u8(o, 0x79), u8(o, 0x00);          /* End Tag, checksum 0 = none */
	set32(o, size_at, (uint32_t)(o->n - size_at - 4));
	pkg_end(o, pkg);
}

static size_t device_begin(struct buf *o, const char *name)
{
	u8(o, 0x5b), u8(o, 0x82); /* DeviceOp */
	size_t p = pkg_begin(o);
	nameseg(o, name);
	return p;
}

static void dsdt_body(struct buf *o, const struct mb_acpi_desc *d)
{
	/* Name(\_S5, Package(4){ typ, typ, 0, 0 }): SLP_TYPa, SLP_TYPb
	 * (sec. 7.4.2); the PM1 control block takes typa. */
	u8(o, 0x08), nameseg(o, "\\_S5");
	u8(o, 0x12);
	size_t p = pkg_begin(o);
	u8(o, 4);
	aml_int(o, MB_ACPI_S5_TYP), aml_int(o, MB_ACPI_S5_TYP);
	aml_int(o, 0), aml_int(o, 0);
	pkg_end(o, p);

	u8(o, 0x10); /* Scope(\_SB) */
	size_t sb = pkg_begin(o);
	nameseg(o, "\\_SB");
	size_t dev, crs, at;
	if (d->com1) {
		dev = device_begin(o, "COM1");
		u8(o, 0x08), nameseg(o, "_HID"), u8(o, 0x0c), u32(o, eisa_id("PNP0501"));
		name_int(o, "_UID", 1);
		crs_begin(o, &crs, &at);
		res_io(o, 0x3f8, 8), res_irq(o, 4);
		crs_end(o, crs, at);
		pkg_end(o, dev);
	}
	for (unsigned i = 0; i < d->nvirtio && i < 100; i++) {
		char n[5] = { 'V', 'R', (char)('0' + i / 10), (char)('0' + i % 10), 0 };
		dev = device_begin(o, n);
		name_str(o, "_HID", "LNRO0005");
		name_int(o, "_UID", i);
		crs_begin(o, &crs, &at);
		res_mem32(o, (uint32_t)d->virtio[i].base, (uint32_t)d->virtio[i].size);
		res_xirq(o, d->virtio[i].irq);
		crs_end(o, crs, at);
		pkg_end(o, dev);
	}
	if (d->fw_cfg_port) {
		/* QEMU's docs/specs/fw_cfg.rst: selector, data, DMA: 12 ports. */
		dev = device_begin(o, "FWCF");
		name_str(o, "_HID", "QEMU0002");
		name_int(o, "_STA", 0x0b); /* present, enabled, not shown in UI */
		crs_begin(o, &crs, &at);
		res_io(o, d->fw_cfg_port, 0x0c);
		crs_end(o, crs, at);
		pkg_end(o, dev);
	}
	pkg_end(o, sb);
}

/* ---- tables ------------------------------------------------------------- */

#define OEM_ID "MOONBX"
#define OEM_TABLE "MOONBOX"

/* The common header (sec. 5.2.6); length and checksum set by end(). */
static size_t header(struct buf *o, const char *sig, unsigned rev)
{
	align(o, 16);
	size_t at = o->n;
	put(o, sig, 4);
	u32(o, 0);
	u8(o, rev), u8(o, 0);
	str(o, OEM_ID, 6), str(o, OEM_TABLE, 8);
	u32(o, 1);                    /* OEM revision */
	put(o, "MBOX", 4), u32(o, 1); /* creator ID, revision */
	return at;
}

static void end(struct buf *o, size_t at, struct mb_acpi_image *img)
{
	if (o->over)
		return;
	set32(o, at + 4, (uint32_t)(o->n - at));
	o->b[at + 9] = (uint8_t)-sum(o->b + at, o->n - at);
	if (img->n < MB_ACPI_TABLES) {
		memcpy(img->t[img->n].sig, o->b + at, 4);
		img->t[img->n].sig[4] = 0;
		img->t[img->n].off = (uint32_t)at;
		img->t[img->n].len = (uint32_t)(o->n - at);
		img->n++;
	}
}

/* Generic Address Structure (sec. 5.2.3.2) for an I/O port block. */
static void gas_io(struct buf *o, unsigned bits, uint16_t port)
{
	u8(o, 1), u8(o, bits), u8(o, 0), u8(o, port ? 2 : 0); /* word access */
	u64(o, port);
}

static void gas_none(struct buf *o) { u32(o, 0), u64(o, 0); }

static size_t fadt(struct buf *o, uint32_t facs, uint32_t dsdt)
{
	size_t at = header(o, "FACP", 6);
	u32(o, facs), u32(o, dsdt);  /* FIRMWARE_CTRL, DSDT */
	u8(o, 0);                    /* reserved (INT_MODEL in ACPI 1.0) */
	u8(o, 0);                    /* Preferred_PM_Profile: unspecified */
	u16(o, MB_ACPI_SCI);         /* SCI_INT */
	u32(o, 0);                   /* SMI_CMD: always in ACPI mode */
	u8(o, 0), u8(o, 0), u8(o, 0), u8(o, 0); /* ACPI_ENABLE.. PSTATE_CNT */
	u32(o, MB_ACPI_PM_PORT);     /* PM1a_EVT_BLK */
	u32(o, 0);                   /* PM1b_EVT_BLK */
	u32(o, MB_ACPI_PM_PORT + 4); /* PM1a_CNT_BLK */
	u32(o, 0), u32(o, 0);        /* PM1b_CNT_BLK, PM2_CNT_BLK */
	u32(o, 0);                   /* PM_TMR_BLK: none (kvm-clock, TSC) */
	u32(o, 0), u32(o, 0);        /* GPE0_BLK, GPE1_BLK */
	u8(o, 4), u8(o, 2);          /* PM1_EVT_LEN, PM1_CNT_LEN */
	u8(o, 0), u8(o, 0);          /* PM2_CNT_LEN, PM_TMR_LEN */
	u8(o, 0), u8(o, 0), u8(o, 0); /* GPE0/1_BLK_LEN, GPE1_BASE */
	u8(o, 0);                    /* CST_CNT */
	u16(o, 0xfff), u16(o, 0xfff); /* P_LVL2/3_LAT: C2, C3 unsupported */
	u16(o, 0), u16(o, 0);        /* FLUSH_SIZE, FLUSH_STRIDE */
	u8(o, 0), u8(o, 0);          /* DUTY_OFFSET, DUTY_WIDTH */
	u8(o, 0), u8(o, 0), u8(o, 0); /* DAY_ALRM, MON_ALRM, CENTURY */
	/* IAPC_BOOT_ARCH (sec. 5.2.9.3): legacy devices, 8042, no VGA. */
	u16(o, 1u << 0 | 1u << 1 | 1u << 2);
	u8(o, 0);
	/* Flags (table 5.10): WBINVD, PROC_C1, power and sleep buttons are
	 * control methods (here: absent), RTC_S4 no. */
	u32(o, 1u << 0 | 1u << 2 | 1u << 4 | 1u << 5);
	gas_none(o);                 /* RESET_REG */
	u8(o, 0);                    /* RESET_VALUE */
	u16(o, 0);                   /* ARM_BOOT_ARCH */
	u8(o, 4);                    /* FADT minor version: 6.4 */
	u64(o, 0);                   /* X_FIRMWARE_CTRL: FIRMWARE_CTRL used */
	u64(o, dsdt);                /* X_DSDT */
	gas_io(o, 32, MB_ACPI_PM_PORT);     /* X_PM1a_EVT_BLK */
	gas_none(o);                        /* X_PM1b_EVT_BLK */
	gas_io(o, 16, MB_ACPI_PM_PORT + 4); /* X_PM1a_CNT_BLK */
	gas_none(o), gas_none(o), gas_none(o); /* PM1b_CNT, PM2_CNT, PM_TMR */
	gas_none(o), gas_none(o);           /* X_GPE0_BLK, X_GPE1_BLK */
	gas_none(o), gas_none(o);           /* SLEEP_CONTROL/STATUS_REG */
	put(o, "MOONBOX\0", 8);             /* Hypervisor Vendor Identity */
	return at;
}

static void madt(struct buf *o, const struct mb_acpi_desc *d,
		 struct mb_acpi_image *img)
{
	size_t at = header(o, "APIC", 5);
	u32(o, MB_LAPIC_BASE);
	u32(o, 1); /* PCAT_COMPAT: there are 8259s too */
	for (unsigned i = 0; i < d->ncpu; i++) /* Processor Local APIC */
		u8(o, 0), u8(o, 8), u8(o, i), u8(o, i), u32(o, 1);
	u8(o, 1), u8(o, 12), u8(o, 0), u8(o, 0); /* I/O APIC, id 0 */
	u32(o, MB_IOAPIC_BASE), u32(o, 0);
	/* KVM routes ISA IRQ n to IOAPIC pin n (no IRQ0 -> 2 override). The
	 * SCI is level, active high there (sec. 5.2.12.5, MPS INTI flags). */
	u8(o, 2), u8(o, 10), u8(o, 0), u8(o, MB_ACPI_SCI);
	u32(o, MB_ACPI_SCI), u16(o, 0xd);
	u8(o, 4), u8(o, 6), u8(o, 0xff), u16(o, 0), u8(o, 1); /* NMI on LINT1 */
	end(o, at, img);
}

int mb_acpi_build(const struct mb_acpi_desc *d, uint32_t base, uint8_t *b,
		  size_t max, struct mb_acpi_image *img)
{
	struct buf o = { .b = b, .max = max };
	memset(b, 0, max);
	memset(img, 0, sizeof *img);

	/* RSDP (sec. 5.2.5.3): 36 bytes, XSDT and RSDT addresses patched. */
	put(&o, "RSD PTR ", 8);
	u8(&o, 0), str(&o, OEM_ID, 6), u8(&o, 2);
	u32(&o, 0), u32(&o, 36), u64(&o, 0);
	u8(&o, 0), u8(&o, 0), u8(&o, 0), u8(&o, 0);

	align(&o, 64); /* FACS (sec. 5.2.10): 64-byte aligned, no checksum */
	size_t facs = o.n;
	put(&o, "FACS", 4), u32(&o, 64), u32(&o, 0); /* hardware signature */
	u32(&o, 0), u32(&o, 0), u32(&o, 0); /* waking vector, lock, flags */
	u64(&o, 0);                          /* X_Firmware_Waking_Vector */
	u8(&o, 2);                           /* version */
	for (int i = 0; i < 31; i++)
		u8(&o, 0);

	size_t dsdt = header(&o, "DSDT", 2);
	dsdt_body(&o, d);
	end(&o, dsdt, img);

	size_t fa = fadt(&o, base + (uint32_t)facs, base + (uint32_t)dsdt);
	end(&o, fa, img);
	size_t ma = 0;
	if (d->ioapic) {
		align(&o, 16);
		ma = o.n;
		madt(&o, d, img);
	}
	size_t xs = header(&o, "XSDT", 1);
	u64(&o, base + fa);
	if (ma)
		u64(&o, base + ma);
	end(&o, xs, img);
	size_t rs = header(&o, "RSDT", 1);
	u32(&o, base + (uint32_t)fa);
	if (ma)
		u32(&o, base + (uint32_t)ma);
	end(&o, rs, img);
	if (o.over)
		return -ENOSPC;

	set32(&o, 16, base + (uint32_t)rs);
	set32(&o, 24, base + (uint32_t)xs), set32(&o, 28, 0);
	b[8] = (uint8_t)-sum(b, 20);   /* ACPI 1.0 checksum: first 20 bytes */
	b[32] = (uint8_t)-sum(b, 36);  /* extended checksum: all 36 */
	img->size = o.n;
	img->rsdp = base;
	/* FACS and RSDP have no standard header: list them too, for dumps. */
	if (img->n + 2 <= MB_ACPI_TABLES) {
		img->t[img->n++] = (struct mb_acpi_table){ "FACS", (uint32_t)facs, 64 };
		img->t[img->n++] = (struct mb_acpi_table){ "RSDP", 0, 36 };
	}
	return 0;
}

/* ---- in a machine ------------------------------------------------------- */

uint16_t mb_acpi_fw_cfg_port(struct mb_machine *m)
{
	for (size_t i = 0; i < mb_machine_ndevices(m); i++) {
		struct mb_device *dv = mb_machine_device_at(m, i);
		if (strcmp(mb_device_kind(dv), "fw_cfg") == 0 &&
		    mb_device_nranges(dv))
			return (uint16_t)mb_device_range(dv, 0)->base;
	}
	return 0;
}

void mb_acpi_describe(struct mb_machine *m, struct mb_acpi_desc *d)
{
	*d = (struct mb_acpi_desc){
		.ncpu = m->ncpu,
		.ioapic = m->irqchip == MB_IRQCHIP_KERNEL,
		.com1 = mb_bus_owner(m->pio, 0x3f8) != NULL,
		.fw_cfg_port = mb_acpi_fw_cfg_port(m),
		.nvirtio = m->nvirtio,
		.virtio = m->virtio,
	};
}

static int build(struct mb_machine *m, uint8_t *buf, struct mb_acpi_image *img)
{
	struct mb_acpi_desc d;
	mb_acpi_describe(m, &d);
	if (mb_acpi_build(&d, MB_ACPI_BASE, buf, MB_ACPI_MAX, img))
		return mb_seterr(-ENOSPC, "acpi: the tables do not fit in "
				 "%u bytes", MB_ACPI_MAX);
	return 0;
}

int mb_acpi_tables(struct mb_machine *m,
		   void (*fn)(void *, const char *, const void *, size_t),
		   void *opaque)
{
	if (!m->acpi)
		return mb_seterr(-ENOTSUP, "acpi: off for this machine "
				 "(mb.machine { acpi = true })");
	uint8_t *buf = malloc(MB_ACPI_MAX);
	struct mb_acpi_image img;
	if (!buf)
		return mb_seterr(-ENOMEM, "acpi: out of memory");
	int rc = build(m, buf, &img);
	for (unsigned i = 0; !rc && i < img.n; i++)
		fn(opaque, img.t[i].sig, buf + img.t[i].off, img.t[i].len);
	free(buf);
	return rc;
}

int mb_acpi_install(struct mb_machine *m, uint64_t *rsdp)
{
	int rc = 0;
	*rsdp = 0;
	/* Several CPUs need KVM's local APICs to be started (INIT/SIPI) and
	 * found: the MP table says where they are when ACPI does not. */
	if (m->ncpu > 1 && m->irqchip == MB_IRQCHIP_KERNEL) {
		uint8_t mp[MB_MPTABLE_MAX];
		int n = mb_mptable_build(m->ncpu, MB_MPTABLE_BASE, mp, sizeof mp);
		if (n < 0)
			return mb_seterr(n, "mptable: %u CPUs do not fit", m->ncpu);
		if (!mb_mem_ptr(m->mem, MB_MPTABLE_BASE, (uint64_t)n, true))
			return mb_seterr(-EFAULT, "mptable: needs RAM at 0x%x",
					 MB_MPTABLE_BASE);
		if ((rc = mb_mem_write(m->mem, MB_MPTABLE_BASE, mp, (size_t)n)))
			return rc;
	}
	if (!m->acpi)
		return 0;
	uint8_t *buf = malloc(MB_ACPI_MAX);
	struct mb_acpi_image img;
	if (!buf)
		return mb_seterr(-ENOMEM, "acpi: out of memory");
	if ((rc = build(m, buf, &img)))
		goto out;
	if (!mb_mem_ptr(m->mem, MB_ACPI_BASE, img.size, true)) {
		rc = mb_seterr(-EFAULT, "acpi: needs RAM at 0x%x-0x%zx (the BIOS "
			       "area) for the tables", MB_ACPI_BASE,
			       MB_ACPI_BASE + img.size);
		goto out;
	}
	if ((rc = mb_mem_write(m->mem, MB_ACPI_BASE, buf, img.size)))
		goto out;
	*rsdp = img.rsdp;
out:
	free(buf);
	return rc;
}

/*
 * KVM_IOEVENTFD and KVM_IRQFD (Documentation/virt/kvm/api.rst): a guest
 * write that only signals an eventfd, and an eventfd that raises a guest
 * interrupt, so virtio doorbells and completions bypass the vCPU thread.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <sys/ioctl.h>

#include "core/internal.h"

int mb_machine_ioeventfd(struct mb_machine *m, int efd, uint64_t addr,
			 unsigned len, uint64_t match, bool assign)
{
	if (!mb_kvm_check_ext(m->kvm, KVM_CAP_IOEVENTFD))
		return mb_seterr(-ENOTSUP, "ioeventfd: KVM_CAP_IOEVENTFD missing");
	struct kvm_ioeventfd io = {
		.datamatch = match,
		.addr = addr,
		.len = len,
		.fd = efd,
		.flags = KVM_IOEVENTFD_FLAG_DATAMATCH |
			 (assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN),
	};
	if (ioctl(m->vm, KVM_IOEVENTFD, &io) < 0)
		return mb_seterr(-errno, "ioeventfd at 0x%" PRIx64 ": %s", addr,
				 strerror(errno));
	return 0;
}

int mb_machine_irqfd(struct mb_machine *m, int efd, unsigned line, bool assign)
{
	if (m->irqchip != MB_IRQCHIP_KERNEL ||
	    !mb_kvm_check_ext(m->kvm, KVM_CAP_IRQFD))
		return mb_seterr(-ENOTSUP, "irqfd: needs the kernel irqchip and "
				 "KVM_CAP_IRQFD");
	/* The default routing maps GSI n to PIC/IOAPIC input n. */
	struct kvm_irqfd f = {
		.fd = (uint32_t)efd,
		.gsi = line,
		.flags = assign ? 0 : KVM_IRQFD_FLAG_DEASSIGN,
	};
	if (ioctl(m->vm, KVM_IRQFD, &f) < 0)
		return mb_seterr(-errno, "irqfd for line %u: %s", line,
				 strerror(errno));
	return 0;
}

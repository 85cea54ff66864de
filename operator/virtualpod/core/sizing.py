"""VM size from the containers, and the pod-level resource sums Kubernetes uses.

Sizing follows the vSphere Pods rule: a container is as large as its limit, or, with
no limit, as large as max(request, default container size) -- so a container that sets
nothing never turns into a host-sized VM. Containers are combined with Kubernetes'
effective-request rule for init containers (they run one after another, before the
app containers): max(largest init container, sum of app containers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from virtualpod.core.quantity import KIB, MIB, MILLICPU_PER_CPU, format_bytes
from virtualpod.core.settings import Amount, Settings
from virtualpod.core.spec import Container, FieldError, SpecError, VirtualPod

MIN_GUEST_MEMORY_BYTES = 16 * MIB
#: No QEMU/KVM x86 guest has more vCPUs (Linux builds KVM for at most 4096).
MAX_VCPUS = 4096
#: libvirt refuses larger memory sizes and limits ("numerical overflow: value too large").
MAX_LIBVIRT_MEMORY_BYTES = (2**53 - 1) * KIB
#: The field a VM-size refusal names: the size is the containers' sum.
SIZED_FROM = "spec.containers"


@dataclass(frozen=True)
class VMSize:
    cpu_millis: int
    memory_bytes: int

    @property
    def vcpus(self) -> int:
        """Whole vCPUs: the cpu size rounded up, at least one."""
        return max(1, -(-self.cpu_millis // MILLICPU_PER_CPU))  # integers: no float overflow


def _sum(amounts: Iterable[Amount]) -> Amount:
    total = Amount(0, 0)
    for amount in amounts:
        total = Amount(
            total.cpu_millis + amount.cpu_millis, total.memory_bytes + amount.memory_bytes
        )
    return total


def _max(amounts: Iterable[Amount]) -> Amount:
    largest = Amount(0, 0)
    for amount in amounts:
        largest = Amount(
            max(largest.cpu_millis, amount.cpu_millis),
            max(largest.memory_bytes, amount.memory_bytes),
        )
    return largest


def effective(pod: VirtualPod, per_container: Callable[[Container], Amount]) -> Amount:
    """Kubernetes' init-container rule: max(largest init container, sum of app containers)."""
    return _max(
        [
            _sum(per_container(c) for c in pod.containers),
            _max(per_container(c) for c in pod.init_containers),
        ]
    )


def container_requests(container: Container) -> Amount:
    return Amount(container.requests.cpu_millis or 0, container.requests.memory_bytes or 0)


def container_limits(container: Container) -> Amount:
    return Amount(container.limits.cpu_millis or 0, container.limits.memory_bytes or 0)


def pod_requests(pod: VirtualPod) -> Amount:
    """Like `resource.PodRequests`: what the scheduler and cpu shares account for."""
    return effective(pod, container_requests)


def pod_limits(pod: VirtualPod) -> Amount:
    """Like `resource.PodLimits`; meaningful only where every container sets the limit."""
    return effective(pod, container_limits)


def container_size(container: Container, default: Amount) -> Amount:
    """Limit if set, else max(request, default container size), per resource."""
    limits, requests = container.limits, container.requests
    return Amount(
        cpu_millis=limits.cpu_millis
        if limits.cpu_millis
        else max(requests.cpu_millis or 0, default.cpu_millis),
        memory_bytes=limits.memory_bytes
        if limits.memory_bytes
        else max(requests.memory_bytes or 0, default.memory_bytes),
    )


def vm_size(pod: VirtualPod, settings: Settings) -> VMSize:
    """Effective container size + guest padding; memory rounded up to whole MiB."""
    pod_size = effective(pod, lambda c: container_size(c, settings.default_container_size))
    memory = pod_size.memory_bytes + settings.padding.memory_bytes
    return VMSize(
        cpu_millis=pod_size.cpu_millis + settings.padding.cpu_millis,
        memory_bytes=max(MIN_GUEST_MEMORY_BYTES, -(-memory // MIB) * MIB),
    )


def check_vm_size(size: VMSize, overhead_bytes: int) -> None:
    """Refuse a VM libvirt would not define: too many vCPUs, or memory past its limit."""
    errors = []
    if size.vcpus > MAX_VCPUS:
        errors.append(
            FieldError(
                SIZED_FROM,
                f"the VM would have {size.vcpus} vCPUs (the containers' cpu sizes plus "
                f"padding); at most {MAX_VCPUS}",
            )
        )
    if size.memory_bytes + overhead_bytes > MAX_LIBVIRT_MEMORY_BYTES:
        errors.append(
            FieldError(
                SIZED_FROM,
                f"the VM would need {format_bytes(size.memory_bytes + overhead_bytes)} "
                f"(the containers' memory sizes, padding and VMM overhead); libvirt accepts "
                f"at most {format_bytes(MAX_LIBVIRT_MEMORY_BYTES)}",
            )
        )
    if errors:
        raise SpecError(errors)


def all_containers_limit(pod: VirtualPod, resource: str) -> bool:
    """True when every container (init included) sets a non-zero limit for `resource`."""
    return all(
        (c.limits.cpu_millis if resource == "cpu" else c.limits.memory_bytes)
        for c in pod.all_containers
    )

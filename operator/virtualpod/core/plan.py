"""The converter: VirtualPod manifest -> everything the operator will ask libvirt for.

One pure function composes the core (spec, qos, sizing, tuning, domain). The operator,
`virtualpod plan` and the tests all call it, so what `plan` prints is what runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cached_property

from virtualpod.core.disks import workload_disks
from virtualpod.core.domain import (
    DomainMetadata,
    DomainSpec,
    domain_name,
    domain_uuid,
    render_domain,
)
from virtualpod.core.host_paths import host_file_refusals
from virtualpod.core.image import ImageRef
from virtualpod.core.nic import Nic, mac_address
from virtualpod.core.qos import QOSClass, qos_class
from virtualpod.core.settings import Amount, Settings
from virtualpod.core.sizing import VMSize, check_vm_size, pod_requests, vm_size
from virtualpod.core.spec import (
    DiskBoot,
    KernelBoot,
    SpecError,
    SuspendMode,
    VirtualPod,
    parse_virtualpod,
)
from virtualpod.core.storage import root_volume, seed_volume
from virtualpod.core.tuning import (
    CpuTune,
    MemTune,
    cputune,
    cputune_for_cgroup,
    memtune,
    oom_score_adj,
    vmm_overhead_bytes,
)
from virtualpod.core.workload import ContainerPort


@dataclass(frozen=True)
class Workload:
    """What a VM with an image runs from: base image, its volumes, its NIC and ports."""

    image: ImageRef
    root_volume: str
    seed_volume: str
    #: The first app container's ephemeral-storage (limit, request): the overlay's size.
    storage_limit_bytes: int | None
    storage_request_bytes: int | None
    nic: Nic
    #: Container ports with a hostPort (forwarded on user-mode NICs).
    host_ports: tuple[ContainerPort, ...]


def plan_workload(pod: VirtualPod, uuid: str, settings: Settings) -> Workload | None:
    """The workload of a VirtualPod whose first app container names a VM disk image."""
    if pod.image is None:
        return None
    first = pod.containers[0]
    return Workload(
        image=pod.image,
        root_volume=root_volume(uuid),
        seed_volume=seed_volume(uuid),
        storage_limit_bytes=first.limits.ephemeral_storage_bytes,
        storage_request_bytes=first.requests.ephemeral_storage_bytes,
        nic=Nic(pod.network or settings.network, mac_address(uuid)),
        host_ports=tuple(
            port
            for container in pod.containers
            for port in container.process.ports
            if port.host_port is not None
        ),
    )


@dataclass(frozen=True)
class VMPlan:
    pod: VirtualPod
    qos_class: QOSClass
    priority: int
    requests: Amount
    size: VMSize
    cputune: CpuTune
    memtune: MemTune
    suspend_mode: SuspendMode
    domain: DomainSpec
    workload: Workload | None = None

    @cached_property
    def domain_xml(self) -> str:
        """The domain as libvirt XML, rendered when first needed (only defining a domain
        needs it; sizing, admission and the indexes do not)."""
        return render_domain(self.domain)

    @property
    def name(self) -> str:
        return self.pod.name

    @property
    def namespace(self) -> str:
        return self.pod.namespace

    @property
    def domain_name(self) -> str:
        return self.domain.name

    @property
    def uuid(self) -> str:
        return self.domain.uuid

    def oom_score_adj(self, memory_capacity_bytes: int) -> int:
        return oom_score_adj(self.qos_class, self.requests.memory_bytes, memory_capacity_bytes)


def effective_priority(pod: VirtualPod, priority_classes: Mapping[str, int]) -> int:
    """`spec.priority`, else the value of `spec.priorityClassName`, else 0 (as for pods)."""
    if pod.priority is not None:
        return pod.priority
    if pod.priority_class_name:
        return priority_classes.get(pod.priority_class_name, 0)
    return 0


def console_log_path(directory: str, domain: str) -> str:
    """A VM's serial console log: always directly inside the operator's `consoleLogDir`."""
    return f"{directory.rstrip('/')}/{domain}.console.log"


def plan_with_real_paths(plan: VMPlan, real: Mapping[str, str]) -> VMPlan:
    """The same plan with each host file replaced by its real path (`real`: named -> real),
    as the host check resolved them, so a symlink swapped later changes nothing."""
    boot = plan.domain.boot
    if isinstance(boot, DiskBoot):
        boot = replace(boot, path=real.get(boot.path, boot.path))
    elif isinstance(boot, KernelBoot):
        initrd = real.get(boot.initrd, boot.initrd) if boot.initrd else None
        boot = replace(boot, path=real.get(boot.path, boot.path), initrd=initrd)
    workload = plan.workload
    if workload is not None and workload.image.location in real:
        image = replace(workload.image, location=real[workload.image.location])
        workload = replace(workload, image=image)
    domain = replace(plan.domain, boot=boot)
    return replace(plan, domain=domain, workload=workload)


def plan_virtualpod(
    manifest: Mapping[str, object] | VirtualPod,
    settings: Settings,
    *,
    cgroup_version: int = 1,
    priority_classes: Mapping[str, int] | None = None,
) -> VMPlan:
    """Plan one VirtualPod; raises `spec.SpecError` for invalid manifests.

    Host files (`spec.boot`, a host-path image) are checked by name against
    `hostPaths.allowed` here; the operator checks the real files on the host too
    (`virtualpod.libvirt.host_paths`).
    """
    pod = manifest if isinstance(manifest, VirtualPod) else parse_virtualpod(manifest)
    refused = host_file_refusals(pod, settings.host_paths.allowed)
    if refused:
        raise SpecError(refused)
    qos = qos_class(pod)
    size = vm_size(pod, settings)
    check_vm_size(size, vmm_overhead_bytes(size, settings.vmm_overhead))
    requests = pod_requests(pod)
    cpu = cputune(pod)
    memory = memtune(pod, qos, size, settings.vmm_overhead)
    priority = effective_priority(pod, priority_classes or {})
    suspend_mode = pod.suspend_mode or settings.eviction.suspend_mode
    name = domain_name(pod.namespace, pod.name)
    uuid = domain_uuid(pod.namespace, pod.name, pod.uid)
    workload = plan_workload(pod, uuid, settings)
    domain = DomainSpec(
        name=name,
        uuid=uuid,
        domain_type=settings.domain_type,
        vcpus=size.vcpus,
        memory_bytes=size.memory_bytes,
        cputune=cputune_for_cgroup(cpu, cgroup_version),
        memtune=memory,
        metadata=DomainMetadata(
            namespace=pod.namespace,
            name=pod.name,
            uid=pod.uid,
            qos_class=qos.value,
            priority=priority,
            memory_request_bytes=requests.memory_bytes,
            suspend_mode=pod.suspend_mode,
            generation=pod.generation,
        ),
        boot=pod.boot,
        console_log=console_log_path(settings.console_log_dir, name),
        memory_stats_period_s=settings.memory_stats_period_s,
        disk_read_only=settings.host_paths.read_only,
        disks=workload_disks(uuid) if workload else (),
        nics=(workload.nic,) if workload else (),
    )
    return VMPlan(
        pod=pod,
        qos_class=qos,
        priority=priority,
        requests=requests,
        size=size,
        cputune=cpu,
        memtune=memory,
        suspend_mode=suspend_mode,
        domain=domain,
        workload=workload,
    )

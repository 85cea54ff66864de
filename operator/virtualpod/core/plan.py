"""The converter: VirtualPod manifest -> everything the operator will ask libvirt for.

One pure function composes the core (spec, qos, sizing, tuning, domain). The operator,
`virtualpod plan` and the tests all call it, so what `plan` prints is what runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from virtualpod.core.domain import (
    DomainMetadata,
    DomainSpec,
    domain_name,
    domain_uuid,
    render_domain,
)
from virtualpod.core.qos import QOSClass, qos_class
from virtualpod.core.settings import Amount, Settings
from virtualpod.core.sizing import VMSize, check_vm_size, pod_requests, vm_size
from virtualpod.core.spec import SuspendMode, VirtualPod, parse_virtualpod
from virtualpod.core.tuning import (
    CpuTune,
    MemTune,
    cpu_weight_from_shares,
    cputune,
    memtune,
    oom_score_adj,
    vmm_overhead_bytes,
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
    domain_xml: str

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


def plan_virtualpod(
    manifest: Mapping[str, object] | VirtualPod,
    settings: Settings,
    *,
    cgroup_version: int = 1,
    priority_classes: Mapping[str, int] | None = None,
) -> VMPlan:
    """Plan one VirtualPod; raises `spec.SpecError` for invalid manifests."""
    pod = manifest if isinstance(manifest, VirtualPod) else parse_virtualpod(manifest)
    qos = qos_class(pod)
    size = vm_size(pod, settings)
    check_vm_size(size, vmm_overhead_bytes(size, settings.vmm_overhead))
    requests = pod_requests(pod)
    cpu = cputune(pod)
    memory = memtune(pod, qos, size, settings.vmm_overhead)
    priority = effective_priority(pod, priority_classes or {})
    suspend_mode = pod.suspend_mode or settings.eviction.suspend_mode
    name = domain_name(pod.namespace, pod.name)
    written_cpu = (
        CpuTune(cpu_weight_from_shares(cpu.shares), cpu.period_us, cpu.quota_us)
        if cgroup_version == 2
        else cpu
    )
    domain = DomainSpec(
        name=name,
        uuid=domain_uuid(pod.namespace, pod.name, pod.uid),
        domain_type=settings.domain_type,
        vcpus=size.vcpus,
        memory_bytes=size.memory_bytes,
        cputune=written_cpu,
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
        console_log=f"{settings.console_log_dir.rstrip('/')}/{name}.console.log",
        memory_stats_period_s=settings.memory_stats_period_s,
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
        domain_xml=render_domain(domain),
    )

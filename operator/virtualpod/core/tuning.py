"""Requests, limits and QoS class -> libvirt `<cputune>`, `<memtune>` and OOM score.

The formulas are kubelet's (pkg/kubelet/cm/helpers_linux.go, pkg/kubelet/qos/policy.go),
applied to the whole VM the way kubelet applies them to a pod cgroup: cpu shares from
the cpu requests, a CFS quota only when every container is cpu-limited, a memory hard
limit only when every container is memory-limited.
"""

from __future__ import annotations

from dataclasses import dataclass

from virtualpod.core.qos import QOSClass
from virtualpod.core.quantity import MILLICPU_PER_CPU
from virtualpod.core.settings import VMMOverhead
from virtualpod.core.sizing import VMSize, all_containers_limit, pod_limits, pod_requests
from virtualpod.core.spec import VirtualPod

MIN_SHARES = 2
MAX_SHARES = 262144
SHARES_PER_CPU = 1024
QUOTA_PERIOD_US = 100000
MIN_QUOTA_US = 1000
MAX_CPU_WEIGHT = 10000
#: The cgroup version on which libvirt writes `<shares>` into cpu.weight.
CGROUP_V2 = 2

GUARANTEED_OOM_SCORE_ADJ = -997
BEST_EFFORT_OOM_SCORE_ADJ = 1000
#: kubelet's scale for the Burstable OOM score (the kernel's maximum oom_score_adj).
OOM_SCORE_ADJ_SCALE = 1000


@dataclass(frozen=True)
class CpuTune:
    """`<cputune>`: shares always; global_period/global_quota only under a cpu limit."""

    shares: int
    period_us: int | None = None
    quota_us: int | None = None


@dataclass(frozen=True)
class MemTune:
    """`<memtune>`; None leaves the limit unset (libvirt: unlimited)."""

    hard_limit_bytes: int | None = None
    soft_limit_bytes: int | None = None


def cpu_shares(milli_cpu: int) -> int:
    """kubelet MilliCPUToShares: 1024 per cpu, clamped to [2, 262144]."""
    if milli_cpu == 0:
        return MIN_SHARES
    shares = milli_cpu * SHARES_PER_CPU // MILLICPU_PER_CPU
    return max(MIN_SHARES, min(MAX_SHARES, shares))


def cpu_quota(milli_cpu: int, period_us: int = QUOTA_PERIOD_US) -> int:
    """kubelet MilliCPUToQuota: the limit as CFS runtime per period, at least 1000 us."""
    if milli_cpu == 0:
        return 0
    return max(MIN_QUOTA_US, milli_cpu * period_us // MILLICPU_PER_CPU)


def cpu_weight_from_shares(shares: int) -> int:
    """cgroup v2 cpu.weight for cgroup v1 shares (runc's conversion), in [1, 10000].

    libvirt writes `<shares>` raw into cpu.weight on cgroup v2 hosts and rejects values
    outside [1, 10000], so on such hosts the domain carries this value instead.
    """
    clamped = max(MIN_SHARES, min(MAX_SHARES, shares))
    return 1 + ((clamped - MIN_SHARES) * (MAX_CPU_WEIGHT - 1)) // (MAX_SHARES - MIN_SHARES)


def shares_for_cgroup(shares: int, cgroup_version: int) -> int:
    """The `<shares>` value libvirt must be given on a host of `cgroup_version`."""
    return cpu_weight_from_shares(shares) if cgroup_version == CGROUP_V2 else shares


def cputune_for_cgroup(tune: CpuTune, cgroup_version: int) -> CpuTune:
    """`tune` as written to libvirt on a host of `cgroup_version` (shares may become weight)."""
    return CpuTune(shares_for_cgroup(tune.shares, cgroup_version), tune.period_us, tune.quota_us)


def cputune(pod: VirtualPod) -> CpuTune:
    shares = cpu_shares(pod_requests(pod).cpu_millis)
    if not all_containers_limit(pod, "cpu"):
        return CpuTune(shares=shares)
    return CpuTune(
        shares=shares,
        period_us=QUOTA_PERIOD_US,
        quota_us=cpu_quota(pod_limits(pod).cpu_millis),
    )


def vmm_overhead_bytes(size: VMSize, overhead: VMMOverhead) -> int:
    """Memory of the QEMU process beyond guest RAM (device models, vCPU threads)."""
    return overhead.memory_bytes + overhead.memory_per_vcpu_bytes * size.vcpus


def memtune(pod: VirtualPod, qos: QOSClass, size: VMSize, overhead: VMMOverhead) -> MemTune:
    """hard_limit caps the whole QEMU process; soft_limit is the reclaim target."""
    if qos is QOSClass.BEST_EFFORT:
        return MemTune()
    hard_limit = (
        size.memory_bytes + vmm_overhead_bytes(size, overhead)
        if all_containers_limit(pod, "memory")
        else None
    )
    return MemTune(
        hard_limit_bytes=hard_limit, soft_limit_bytes=pod_requests(pod).memory_bytes or None
    )


def oom_score_adj(qos: QOSClass, memory_request_bytes: int, memory_capacity_bytes: int) -> int:
    """kubelet GetContainerOOMScoreAdjust, for the QEMU process of the VM."""
    if qos is QOSClass.GUARANTEED:
        return GUARANTEED_OOM_SCORE_ADJ
    if qos is QOSClass.BEST_EFFORT:
        return BEST_EFFORT_OOM_SCORE_ADJ
    scale = OOM_SCORE_ADJ_SCALE
    adjust = scale - (scale * memory_request_bytes) // max(1, memory_capacity_bytes)
    if adjust < scale + GUARANTEED_OOM_SCORE_ADJ:
        return scale + GUARANTEED_OOM_SCORE_ADJ
    if adjust == BEST_EFFORT_OOM_SCORE_ADJ:
        return adjust - 1
    return adjust

"""The libvirt shell in one object: `async with Hypervisor(uri) as hv: ...`.

The only code that talks to libvirt is this package, one module per seam (as KubeVirt
keeps its converter apart from its libvirt connection and domain manager):

==================  ==========================================================
module              what
==================  ==========================================================
`connection`        worker threads, reconnect with backoff, the call helpers
`events`            the process-wide libvirt event thread, `EventStream`
`errors`            our errors, and libvirt's codes mapped onto them
`state`             `DomainInfo`: state, reason, size of a domain
`domains`           define / start / stop / undefine, keyed by UUID
`live_tuning`       cpu shares and quota, memtune, balloon, live and persistent
`suspend`           Pause (vCPUs stopped) and Save (managed save, memory freed)
`stats`             per-VM memory statistics, in bulk
`host`              host memory and cpus, QEMU pid and OOM score
`metadata`          runtime metadata elements kept in the domain
`sync`              `DomainManager.sync(plan)`: one reconcile in one call
`storage`, `images` workload disks: pools, base images, overlays, seeds (own classes
`download`          over `Hypervisor.run`), image fetch
`network`           networks, addresses, hostPort forwards
==================  ==========================================================

No formulas here: shares, quota, weight and OOM score come from `core.tuning`, units
from `core.quantity`. libvirt's own message is kept in every error.
"""

from __future__ import annotations

from virtualpod.core.spec import SuspendMode
from virtualpod.core.tuning import CpuTune, MemTune
from virtualpod.libvirt.connection import DEFAULT_URI, detect_cgroup_version
from virtualpod.libvirt.domains import DefineResult, StartResult
from virtualpod.libvirt.errors import (
    DiskImageMissing,
    DomainNotFound,
    HardLimitBelowUsage,
    HypervisorError,
    InvalidState,
    Unreachable,
    Unsupported,
    XMLRejected,
)
from virtualpod.libvirt.events import DomainEvent, EventKind, EventStream
from virtualpod.libvirt.host import HostCapacity, HostCpus, HostMemory, OomScoreResult
from virtualpod.libvirt.live_tuning import TuneResult
from virtualpod.libvirt.metadata import Metadata, runtime_namespace
from virtualpod.libvirt.state import DomainInfo, DomainState
from virtualpod.libvirt.stats import Stats, VMMemory
from virtualpod.libvirt.suspend import ResumeResult, Suspender, SuspendResult
from virtualpod.libvirt.sync import DomainManager, LiveTune, SyncResult

__all__ = [
    "DEFAULT_URI",
    "CpuTune",
    "DefineResult",
    "DiskImageMissing",
    "DomainEvent",
    "DomainInfo",
    "DomainManager",
    "DomainNotFound",
    "DomainState",
    "EventKind",
    "EventStream",
    "HardLimitBelowUsage",
    "HostCapacity",
    "HostCpus",
    "HostMemory",
    "Hypervisor",
    "HypervisorError",
    "InvalidState",
    "LiveTune",
    "MemTune",
    "OomScoreResult",
    "ResumeResult",
    "StartResult",
    "SuspendMode",
    "SuspendResult",
    "SyncResult",
    "TuneResult",
    "Unreachable",
    "Unsupported",
    "VMMemory",
    "XMLRejected",
    "detect_cgroup_version",
    "runtime_namespace",
]


class Hypervisor(DomainManager, Suspender, Stats, Metadata):
    """Async libvirt backend: one connection, every seam's operations."""

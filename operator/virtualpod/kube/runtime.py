"""A domain's runtime state as a VirtualPod's status: phase, Ready/Suspended, `status.vm`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from virtualpod.core.quantity import format_bytes
from virtualpod.core.status import Observed, PowerState, Suspension, observe, set_condition
from virtualpod.kube.context import AgentContext
from virtualpod.libvirt.hypervisor import DomainInfo


def power_state(info: DomainInfo) -> PowerState:
    """libvirt's state in the core's terms (same names)."""
    return PowerState[info.state.name]


def observe_domain(info: DomainInfo, suspension: Suspension | None) -> Observed:
    return observe(power_state(info), info.reason, info.has_managed_save, suspension)


def vm_status(
    info: DomainInfo, host: str, suspend_mode: str | None, restart_count: int = 0
) -> dict[str, Any]:
    return {
        "domainName": info.name,
        "uuid": info.uuid,
        "host": host,
        "vcpus": info.vcpus,
        "memory": format_bytes(info.max_memory_bytes),
        "state": power_state(info).shown,
        "suspendMode": suspend_mode,
        "restartCount": restart_count,
    }


def runtime_status(
    info: DomainInfo,
    ctx: AgentContext,
    conditions: Iterable[Mapping[str, Any]],
    generation: int | None,
) -> dict[str, Any]:
    """The status block for an existing domain (phase, vm, Ready/Suspended)."""
    seen = observe_domain(info, ctx.suspensions.get(info.uuid))
    conds = set_condition(
        conditions, "Ready", seen.phase == "Running", seen.reason, seen.message, generation
    )
    suspended = seen.phase == "Suspended"
    conds = set_condition(
        conds,
        "Suspended",
        suspended,
        seen.reason if suspended else "NotSuspended",
        seen.message if suspended else "",
        generation,
    )
    return {
        "phase": seen.phase,
        "reason": seen.reason,
        "message": seen.message,
        "vm": vm_status(
            info, ctx.host_name, seen.suspend_mode, ctx.restart_record(info.uuid).count
        ),
        "conditions": conds,
    }


def runs_size(info: DomainInfo, size: tuple[int, int] | None) -> bool:
    """The VM runs with the size its spec asks for (a pending restart took place)."""
    return info.active and size is not None and (info.vcpus, info.max_memory_bytes) == size

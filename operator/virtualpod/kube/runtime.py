"""A domain's runtime state as a VirtualPod's status: phase, Ready/Suspended, `status.vm`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from virtualpod.core.quantity import format_bytes
from virtualpod.core.status import set_condition
from virtualpod.kube.context import AgentContext, Suspension
from virtualpod.libvirt.hypervisor import DomainInfo, DomainState

STATE_NAMES = {
    DomainState.NOSTATE: "NoState",
    DomainState.RUNNING: "Running",
    DomainState.BLOCKED: "Running",
    DomainState.PAUSED: "Paused",
    DomainState.SHUTDOWN: "ShuttingDown",
    DomainState.SHUTOFF: "Shutoff",
    DomainState.CRASHED: "Crashed",
    DomainState.PMSUSPENDED: "PMSuspended",
}


@dataclass(frozen=True)
class Observed:
    """Phase, reason and message of a VirtualPod as its domain shows it."""

    phase: str
    reason: str
    message: str
    suspend_mode: str | None = None


def observe(info: DomainInfo, suspension: Suspension | None) -> Observed:
    """Map a libvirt domain state onto the VirtualPod phase."""
    if info.state in (DomainState.RUNNING, DomainState.BLOCKED):
        return Observed("Running", "Running", "the VM is running")
    if info.state is DomainState.PAUSED:
        if suspension is not None:
            # Pause mode, or a Save in progress (libvirt pauses the VM while it writes)
            mode = suspension.mode.value
            return Observed("Suspended", suspension.reason, suspension.message, mode)
        return Observed("Paused", "Paused", f"the VM is paused ({info.reason})")
    if info.state is DomainState.PMSUSPENDED:
        return Observed("Paused", "GuestSuspended", "the guest suspended itself")
    if info.state is DomainState.SHUTOFF and info.has_managed_save:
        if suspension is not None:
            return Observed("Suspended", suspension.reason, suspension.message, "Save")
        return Observed("Suspended", "Saved", "the VM's memory is saved to disk", "Save")
    if info.state is DomainState.CRASHED or info.reason in ("crashed", "failed"):
        return Observed("Failed", "Crashed", f"the VM crashed ({info.reason})")
    return Observed("Failed", "Stopped", f"the VM is shut off ({info.reason})")


def vm_status(
    info: DomainInfo, host: str, suspend_mode: str | None, restart_count: int = 0
) -> dict[str, Any]:
    return {
        "domainName": info.name,
        "uuid": info.uuid,
        "host": host,
        "vcpus": info.vcpus,
        "memory": format_bytes(info.max_memory_bytes),
        "state": STATE_NAMES.get(info.state, str(info.state)),
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
    seen = observe(info, ctx.suspensions.get(info.uuid))
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

"""Status conditions in the standard shape, and who owns which status fields.

The controller owns the binding (`podName`, `nodeName`, `admitted`, condition
`Scheduled`); an agent owns the runtime (phase, vm, `Ready`, `Suspended`, `Valid`,
`RestartRequired`). Each writes only its own: status patches are merges, but the
conditions list is replaced whole, so an agent carries the controller's conditions
over unchanged.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from virtualpod.core.spec import SuspendMode

Conditions = list[dict[str, Any]]

#: Status fields only the controller writes.
CONTROLLER_FIELDS = frozenset({"podName", "nodeName", "admitted"})
#: Conditions only the controller writes (in cluster mode).
CONTROLLER_CONDITIONS = frozenset({"Scheduled"})


def now_rfc3339() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: Iterable[Mapping[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str = "",
    generation: int | None = None,
    *,
    now: str | None = None,
) -> Conditions:
    """Upsert one condition; lastTransitionTime moves only when the status flips."""
    value = "True" if status else "False"
    stamp = now or now_rfc3339()
    result: Conditions = []
    found = False
    for condition in conditions:
        if condition.get("type") != type_:
            result.append(dict(condition))
            continue
        found = True
        changed = condition.get("status") != value
        result.append(
            {
                "type": type_,
                "status": value,
                "reason": reason,
                "message": message,
                "lastTransitionTime": stamp
                if changed
                else condition.get("lastTransitionTime", stamp),
                "observedGeneration": generation,
            }
        )
    if not found:
        result.append(
            {
                "type": type_,
                "status": value,
                "reason": reason,
                "message": message,
                "lastTransitionTime": stamp,
                "observedGeneration": generation,
            }
        )
    return result


def condition_status(conditions: Iterable[Mapping[str, Any]], type_: str) -> str | None:
    """ "True", "False" or "Unknown" of one condition; None when it is absent."""
    for condition in conditions:
        if condition.get("type") == type_:
            status = condition.get("status")
            return status if isinstance(status, str) else None
    return None


def agent_fields(status: Mapping[str, Any]) -> dict[str, Any]:
    """An agent's status patch without the controller's fields (never overwritten)."""
    return {key: value for key, value in status.items() if key not in CONTROLLER_FIELDS}


class PowerState(StrEnum):
    """A domain's state as libvirt names it (virDomainState), with `status.vm.state`'s
    spelling as the value."""

    NOSTATE = "NoState"
    RUNNING = "Running"
    BLOCKED = "Blocked"
    PAUSED = "Paused"
    SHUTDOWN = "ShuttingDown"
    SHUTOFF = "Shutoff"
    CRASHED = "Crashed"
    PMSUSPENDED = "PMSuspended"

    @property
    def shown(self) -> str:
        """What `status.vm.state` says: a blocked VM (waiting on I/O) is running."""
        return PowerState.RUNNING.value if self is PowerState.BLOCKED else self.value


@dataclass(frozen=True)
class Suspension:
    """Why the pressure monitor suspended a VM (kept for status until it is resumed)."""

    mode: SuspendMode
    reason: str
    message: str


@dataclass(frozen=True)
class Observed:
    """Phase, reason and message of a VirtualPod as its domain shows it."""

    phase: str
    reason: str
    message: str
    suspend_mode: str | None = None


def observe(
    state: PowerState, reason: str, has_managed_save: bool, suspension: Suspension | None
) -> Observed:
    """A domain's state (and why the pressure monitor holds it) as the VirtualPod phase."""
    if state in (PowerState.RUNNING, PowerState.BLOCKED):
        return Observed("Running", "Running", "the VM is running")
    if state is PowerState.PAUSED:
        if suspension is not None:
            # Pause mode, or a Save in progress (libvirt pauses the VM while it writes)
            mode = suspension.mode.value
            return Observed("Suspended", suspension.reason, suspension.message, mode)
        return Observed("Paused", "Paused", f"the VM is paused ({reason})")
    if state is PowerState.PMSUSPENDED:
        return Observed("Paused", "GuestSuspended", "the guest suspended itself")
    if state is PowerState.SHUTOFF and has_managed_save:
        if suspension is not None:
            return Observed("Suspended", suspension.reason, suspension.message, "Save")
        return Observed("Suspended", "Saved", "the VM's memory is saved to disk", "Save")
    if state is PowerState.CRASHED or reason in ("crashed", "failed"):
        return Observed("Failed", "Crashed", f"the VM crashed ({reason})")
    return Observed("Failed", "Stopped", f"the VM is shut off ({reason})")

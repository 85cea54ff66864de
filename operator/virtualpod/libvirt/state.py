"""What libvirt says a domain is now: its state, the reason for it, its size."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from virtualpod.core.quantity import kib_to_bytes


class DomainState(enum.IntEnum):
    """virDomainState."""

    NOSTATE = 0
    RUNNING = 1
    BLOCKED = 2
    PAUSED = 3
    SHUTDOWN = 4
    SHUTOFF = 5
    CRASHED = 6
    PMSUSPENDED = 7


#: virDomain{Running,Paused,Shutoff,Crashed}Reason, as `virsh domstate --reason` says them.
_REASONS: dict[DomainState, tuple[str, ...]] = {
    DomainState.RUNNING: (
        "unknown",
        "booted",
        "migrated",
        "restored",
        "from-snapshot",
        "unpaused",
        "migration-canceled",
        "save-canceled",
        "wakeup",
        "crashed",
        "postcopy",
    ),
    DomainState.PAUSED: (
        "unknown",
        "user",
        "migration",
        "save",
        "dump",
        "ioerror",
        "watchdog",
        "from-snapshot",
        "shutting-down",
        "snapshot",
        "crashed",
        "starting-up",
        "postcopy",
        "postcopy-failed",
    ),
    DomainState.SHUTOFF: (
        "unknown",
        "shutdown",
        "destroyed",
        "crashed",
        "migrated",
        "saved",
        "failed",
        "from-snapshot",
        "daemon",
    ),
    DomainState.CRASHED: ("unknown", "panicked"),
}


def reason_name(state: DomainState, reason: int) -> str:
    """libvirt's name of a state reason; the number itself where it has none here."""
    names = _REASONS.get(state, ())
    return names[reason] if 0 <= reason < len(names) else str(reason)


@dataclass(frozen=True)
class DomainInfo:
    """A domain as libvirt sees it now."""

    uuid: str
    name: str
    state: DomainState
    reason: str
    persistent: bool
    has_managed_save: bool
    vcpus: int
    max_memory_bytes: int
    memory_bytes: int

    @property
    def active(self) -> bool:
        """A QEMU process exists (running, paused, ...)."""
        return self.state not in (DomainState.SHUTOFF, DomainState.NOSTATE)


def domain_info(dom: Any) -> DomainInfo:
    """Blocking: read a virDomain's state and size."""
    state, reason = dom.state()
    st = DomainState(state)
    _, max_kib, cur_kib, vcpus, _ = dom.info()
    return DomainInfo(
        uuid=dom.UUIDString(),
        name=dom.name(),
        state=st,
        reason=reason_name(st, reason),
        persistent=bool(dom.isPersistent()),
        has_managed_save=bool(dom.hasManagedSaveImage(0)),
        vcpus=vcpus,
        max_memory_bytes=kib_to_bytes(max_kib),
        memory_bytes=kib_to_bytes(cur_kib),
    )

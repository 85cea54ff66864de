"""The loop's bookkeeping: which VMs it suspended, what is in flight, when each settled.

Shared by the control loop (which decides from it), the actuator (which writes it as
actions start and land) and recovery (which rebuilds it after a restart).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from virtualpod.pressure.intents import RECORDED, Action, Intent
from virtualpod.pressure.ordering import NEVER
from virtualpod.pressure.policy import VMState


@dataclass
class InFlight:
    """An action started and not landed (suspend, resume), or a balloon's credit."""

    action: Action
    reclaim_bytes: int
    task: asyncio.Task[None] | None = None
    expires_at: float | None = None

    @property
    def changes_state(self) -> bool:
        """A suspend or resume (libvirt busy with the domain), not a balloon's credit."""
        return self.action in RECORDED


@dataclass
class Ledger:
    #: the intent of every VM the loop suspended (or is resuming)
    ours: dict[str, Intent] = field(default_factory=dict)
    in_flight: dict[str, InFlight] = field(default_factory=dict)
    #: when (`ordering.tick`) each VM's last action landed: older readings predate it
    settled_at: dict[str, int] = field(default_factory=dict)
    last_resume_landed: int = NEVER

    def busy(self) -> set[str]:
        """VMs with a suspend or resume in flight."""
        return {uuid for uuid, flight in self.in_flight.items() if flight.changes_state}

    def state_of(self, uuid: str, running: bool) -> VMState | None:
        """The VM's state for the policy; None: not ours to touch (shut off, or paused or
        saved by someone else)."""
        flight = self.in_flight.get(uuid)
        if flight is not None and flight.changes_state:
            return VMState.SUSPENDING if flight.action is Action.SUSPEND else VMState.RESUMING
        intent = self.ours.get(uuid)
        if intent is not None and intent.suspended:
            return VMState.SUSPENDED
        return VMState.RUNNING if running else None

    def settled_after(self, uuid: str, point: int) -> bool:
        return self.settled_at.get(uuid, NEVER) >= point

    def expire(self, now: float) -> None:
        """Drop balloon credits whose time is up."""
        for uuid, flight in list(self.in_flight.items()):
            if flight.expires_at is not None and now >= flight.expires_at:
                del self.in_flight[uuid]

    def tasks(self) -> list[asyncio.Task[None]]:
        return [f.task for f in self.in_flight.values() if f.task is not None]

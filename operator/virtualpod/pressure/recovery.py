"""Recovery after a restart: finish or roll back what a previous process left half done.

On start the intents of our VMs are compared with what libvirt says:

====================================  ===============================================
intent / libvirt state                what recovery does
====================================  ===============================================
suspend, domain saved (or paused      completed: stays suspended, reported suspended
for Pause mode)
suspend, domain paused for "save"     libvirtd still writing it: wait, then decide
suspend, domain running               never happened: rolled back, reported running
resume, domain saved                  never happened: rolled back to suspended (the
                                      loop resumes it again when there is room)
resume, domain paused after restore   completed (resumed), reported running
resume, domain running                completed, reported running
domain shut off without image, gone   intent dropped
no intent, domain saved               reported suspended (reason `Saved`), not resumed
====================================  ===============================================

So status never says Running for a saved VM, nor Suspended for a running one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from virtualpod.core.spec import SuspendMode
from virtualpod.libvirt.hypervisor import DomainState, HypervisorError
from virtualpod.pressure import messages
from virtualpod.pressure.intents import Action, Intent, IntentStore
from virtualpod.pressure.inventory import Inventory, Tracked
from virtualpod.pressure.ledger import Ledger
from virtualpod.pressure.policy import VMState, VMView
from virtualpod.pressure.ports import HypervisorPort, Reporter

#: libvirtd's own jobs on a paused domain: it is being saved, or restored.
SETTLING_REASONS = ("save", "starting-up")
SETTLE_POLL_S = 0.2
SETTLE_TIMEOUT_S = 120.0

View = Callable[[Tracked, VMState, Intent | None], VMView | None]


def is_suspended(tracked: Tracked, mode: SuspendMode) -> bool:
    """Saved for Save; paused for Pause."""
    if mode is SuspendMode.SAVE:
        return tracked.saved
    return tracked.info.state is DomainState.PAUSED


class Recovery:
    def __init__(
        self,
        hv: HypervisorPort,
        intents: IntentStore,
        inventory: Inventory,
        reporter: Reporter,
        ledger: Ledger,
        view: View,
    ) -> None:
        self.hv = hv
        self.intents = intents
        self.inventory = inventory
        self.reporter = reporter
        self.ledger = ledger
        self.view = view

    async def run(self, settle_timeout_s: float = SETTLE_TIMEOUT_S) -> None:
        """The table above, for every intent and every saved domain of ours."""
        intents = await self.intents.load()
        domains = await self.inventory.refresh(usage=False)
        for uuid, intent in intents.items():
            tracked = domains.get(uuid)
            if tracked is None:
                continue  # another loop's VM (or gone, and its intent with it)
            tracked = await self._settle(tracked, settle_timeout_s)
            await self._recover(uuid, intent, tracked)
        for uuid, tracked in domains.items():
            if uuid not in intents and tracked.saved:
                vm = self.view(tracked, VMState.SUSPENDED, None)
                if vm is not None:
                    await self.reporter.vm_suspended(
                        vm, messages.SAVED_OUTSIDE, messages.SAVED_OUTSIDE_MESSAGE
                    )

    async def _settle(self, tracked: Tracked, timeout_s: float) -> Tracked:
        """Wait while libvirtd is still saving or restoring the domain (polls, bounded)."""
        info = tracked.info
        for _ in range(max(1, round(timeout_s / SETTLE_POLL_S))):
            if not (info.state is DomainState.PAUSED and info.reason in SETTLING_REASONS):
                break
            await asyncio.sleep(SETTLE_POLL_S)  # libvirtd's job, not ours: poll its state
            try:
                info = await self.hv.lookup(info.uuid)
            except HypervisorError:
                break
        return Tracked(info, tracked.meta, tracked.rss_bytes)

    async def _recover(self, uuid: str, intent: Intent, tracked: Tracked) -> None:
        info = tracked.info
        mode = intent.suspend_mode
        suspended = is_suspended(tracked, mode)
        vm = self.view(tracked, VMState.SUSPENDED if suspended else VMState.RUNNING, intent)
        if vm is None:
            await self.intents.delete(uuid)
            return
        if (
            intent.action is Action.RESUME
            and info.state is DomainState.PAUSED
            and mode is SuspendMode.SAVE
        ):
            with contextlib.suppress(HypervisorError):
                await self.hv.resume(uuid, mode)  # restored but not yet running: finish it
                suspended = False
        if suspended:
            kept = Intent(Action.SUSPEND, intent.mode, True, intent.memory_bytes, intent.message)
            await self.intents.put(uuid, kept)
            self.ledger.ours[uuid] = kept
            await self.reporter.vm_suspended(
                vm, messages.MEMORY_PRESSURE, messages.still_suspended_message(intent.message)
            )
        elif info.active:
            await self.intents.delete(uuid)
            rolled_back = intent.action is Action.SUSPEND and not intent.done
            await self.reporter.vm_resumed(vm, messages.running_again_message(rolled_back))
        else:
            await self.intents.delete(uuid)

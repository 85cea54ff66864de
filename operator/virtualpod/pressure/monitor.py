"""The pressure loop: sample memory.available, ask the policy what to do, act via libvirt.

A thin control loop around the pure policy (`policy.decide`), one module per part:

==============  ===================================================================
`signals`       host or VM-pool memory.available (+ PSI): what is sampled
`inventory`     our domains from libvirt alone, and the policy's view of each
`intents`       what the loop is doing or did, kept in each domain (crash safety)
`actuator`      suspend / resume / balloon, as tasks, with their intents
`recovery`      after a restart: finish or roll back half-done actions
`ledger`        the loop's bookkeeping shared by the three above
`messages`      Event reasons and message text
==============  ===================================================================

Save (managed save: RAM to disk, freed) is the action for memory pressure; a VM whose
suspend mode is Pause (`spec.suspendMode` or the setting) is paused, which frees no
memory and is never counted as reclaim. Reporting goes through an injected `Reporter`
(the operator patches status and emits Events from it). Time is the injected `clock`
only; what happened before what is `ordering.tick`.

After a restart with VMs still suspended the host counts as under pressure from that
moment, so they are resumed only after a whole transition period of clear signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Mapping

from virtualpod.core.qos import QOSClass
from virtualpod.core.settings import Settings
from virtualpod.core.spec import SuspendMode
from virtualpod.libvirt.hypervisor import DomainState, HypervisorError
from virtualpod.pressure import messages
from virtualpod.pressure.actuator import Actuator
from virtualpod.pressure.intents import (
    INTENT_KEY,
    Action,
    DomainIntentStore,
    Intent,
    IntentStore,
    intent_from_xml,
    intent_to_xml,
)
from virtualpod.pressure.inventory import Inventory, Tracked, vm_view
from virtualpod.pressure.ledger import InFlight, Ledger
from virtualpod.pressure.messages import MEMORY_PRESSURE, SAVED_OUTSIDE, mib
from virtualpod.pressure.ordering import tick
from virtualpod.pressure.policy import (
    Decision,
    PressureState,
    Sample,
    VMState,
    VMView,
    decide,
    effective_threshold,
    resume_threshold,
)
from virtualpod.pressure.ports import HypervisorPort, PressureStatus, Reporter
from virtualpod.pressure.recovery import SETTLE_TIMEOUT_S, Recovery
from virtualpod.pressure.signals import (
    HostSignal,
    PoolSignal,
    SignalReading,
    SignalSource,
    read_psi,
    signal_from_settings,
)

__all__ = [
    "INTENT_KEY",
    "MEMORY_PRESSURE",
    "SAVED_OUTSIDE",
    "Action",
    "DomainIntentStore",
    "HostSignal",
    "HypervisorPort",
    "InFlight",
    "Intent",
    "IntentStore",
    "Inventory",
    "Monitor",
    "PoolSignal",
    "PressureStatus",
    "Reporter",
    "SignalReading",
    "SignalSource",
    "Tracked",
    "intent_from_xml",
    "intent_to_xml",
    "mib",
    "read_psi",
    "signal_from_settings",
]

log = logging.getLogger(__name__)


class Monitor:
    """Samples, decides, acts. `await reconcile()` once, then `await run()` (or `step()`).

    `clock` is monotonic seconds; tests pass their own to drive grace and transition
    periods without waiting for them.
    """

    def __init__(
        self,
        hv: HypervisorPort,
        signal: SignalSource,
        reporter: Reporter,
        settings: Settings,
        *,
        inventory: Inventory | None = None,
        intents: IntentStore | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hv = hv
        self.signal = signal
        self.reporter = reporter
        self.settings = settings
        self.eviction = settings.eviction
        self.inventory = inventory or Inventory(hv)
        self.intents = intents if intents is not None else DomainIntentStore(hv)
        self.clock = clock
        self.state = PressureState()
        self.last_decision: Decision | None = None
        self.ledger = Ledger()
        self.actuator = Actuator(
            hv, self.intents, reporter, self.ledger, self.eviction.sampling_interval_s
        )
        self._last_status: tuple[object, ...] | None = None
        self._guaranteed_only = False
        self._reading: SignalReading | None = None

    async def reconcile(self, settle_timeout_s: float = SETTLE_TIMEOUT_S) -> None:
        """Finish or roll back what a previous process left half done (`recovery`)."""
        recovery = Recovery(
            self.hv, self.intents, self.inventory, self.reporter, self.ledger, self._view
        )
        await recovery.run(settle_timeout_s)
        if self.ledger.ours:
            # The pressure that suspended them predates us: resume only after a whole
            # transition period of clear signal, as if it had just been met.
            self.state = PressureState(under_pressure=True, last_met_at=self.clock())
        await self._report_status()

    # ----------------------------------------------------------------- the loop

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Sample every `eviction.sampling_interval_s` until `stop` is set (or cancelled)."""
        stop = stop or asyncio.Event()
        interval = self.eviction.sampling_interval_s
        while not stop.is_set():
            started = self.clock()
            try:
                await self.step()
            except HypervisorError as error:
                log.warning("pressure step failed: %s", error)
            except Exception:  # a bug must not stop memory protection
                log.exception("pressure step crashed")
            delay = max(0.0, interval - (self.clock() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def step(self) -> Decision:
        """One sample, one decision, actions started (not awaited)."""
        read_started = tick()
        self.inventory.busy = self.ledger.busy()
        reading = await self.signal.read()
        self._reading = reading
        now = self.clock()
        sample = Sample(reading.available_bytes, now, reading.psi_some_avg10)
        domains = (
            self.inventory.domains
            if isinstance(self.signal, PoolSignal)
            else await self.inventory.refresh(usage=True)
        )
        await self._forget_changed_outside(domains)
        self.ledger.expire(now)
        views = self.views()
        # One resume at a time, and the next only on a sample read after the last landed.
        busy = bool(self.ledger.busy()) or self.ledger.last_resume_landed >= read_started
        decision = decide(
            self.state,
            sample,
            views,
            self.eviction,
            in_flight_bytes=self._pending_release_bytes(views, reading, read_started),
            resume_allowed=not busy,
        )
        self.state = decision.state
        self.last_decision = decision
        message = self._signal_message(decision)
        for balloon in decision.balloon:
            await self.actuator.balloon(
                balloon.vm, balloon.target_bytes, balloon.reclaim_bytes, now
            )
        for vm in decision.suspend:
            await self.actuator.start_suspend(vm, message)
        for vm in decision.resume:
            await self.actuator.start_resume(vm, self._resume_message(vm, decision))
        await self._report_guaranteed_only(decision, message)
        await self._report_status()
        return decision

    def _pending_release_bytes(
        self, views: Collection[VMView], reading: SignalReading, read_started: int
    ) -> int:
        """What actions will free that `reading` still counts as used.

        A suspend in flight, and also one that settled after the reading began: the read
        may have seen the VM's memory before the Save released it, while the suspend is
        no longer in flight when the decision is made; asking for that memory again
        would suspend the next VM as well. Where the reading says which VMs it counted
        (pool), that decides; otherwise (host) the order does, erring towards
        suspending one sample later rather than one VM too many.
        """
        counted = reading.counted
        total = 0
        for uuid, flight in self.ledger.in_flight.items():
            if flight.action is Action.SUSPEND and counted is not None and uuid not in counted:
                continue  # already gone from the reading
            total += flight.reclaim_bytes
        for vm in views:
            if vm.state is not VMState.SUSPENDED:
                continue
            if not self.ledger.settled_after(vm.key, read_started):
                continue  # released before the read began: the reading has it
            if counted is None or vm.key in counted:
                total += vm.reclaim_bytes
        return total

    async def idle(self) -> None:
        """Wait for every suspend/resume started so far (tests, benchmarks, shutdown)."""
        await self.actuator.idle()

    # ------------------------------------------------------------------- views

    def views(self) -> list[VMView]:
        out = []
        for uuid, tracked in self.inventory.domains.items():
            state = self.ledger.state_of(uuid, tracked.running)
            if state is None:
                continue  # shut off, or paused/saved by someone else: not ours to touch
            vm = self._view(tracked, state, self.ledger.ours.get(uuid))
            if vm is not None:
                out.append(vm)
        return out

    def _view(self, tracked: Tracked, state: VMState, intent: Intent | None) -> VMView | None:
        return vm_view(tracked, state, intent, self.eviction.suspend_mode)

    async def _forget_changed_outside(self, domains: Mapping[str, Tracked]) -> None:
        """A VM we suspended that someone else started or removed is no longer ours."""
        ours = self.ledger.ours
        for uuid in list(ours):
            if uuid in self.ledger.in_flight:
                continue
            if self.ledger.settled_after(uuid, self.inventory.refreshed_at):
                continue  # the inventory was read before our own action finished
            tracked = domains.get(uuid)
            intent = ours.get(uuid)
            if intent is None:
                continue  # settled by its own task during an earlier await
            still = tracked is not None and (
                tracked.saved
                if intent.suspend_mode is SuspendMode.SAVE
                else tracked.info.state is DomainState.PAUSED
            )
            if not still:
                del ours[uuid]
                with contextlib.suppress(HypervisorError):
                    await self.intents.delete(uuid)

    # ---------------------------------------------------------------- reporting

    def _source(self) -> str:
        return self._reading.source if self._reading else self.eviction.signal.value

    def _signal_message(self, decision: Decision) -> str:
        state = decision.state
        return messages.signal_message(
            self._source(),
            state.available_bytes,
            state.reason,
            effective_threshold(state, self.eviction),
            decision.needed_bytes,
            self._reading.psi_some_avg10 if self._reading is not None else None,
        )

    def _resume_message(self, vm: VMView, decision: Decision) -> str:
        return messages.resume_message(
            self._source(),
            decision.state.available_bytes,
            vm.reclaim_bytes,
            resume_threshold(self.eviction),
            self.eviction.resume_margin_bytes,
        )

    async def _report_guaranteed_only(self, decision: Decision, message: str) -> None:
        only = decision.guaranteed_only and decision.state.threshold_met
        if only and not self._guaranteed_only:
            await self.reporter.guaranteed_only_pressure(
                messages.guaranteed_only_message(message, decision.shortfall_bytes)
            )
        self._guaranteed_only = only

    def status(self) -> PressureStatus:
        counts = {qos.value: 0 for qos in QOSClass}
        for uuid in self.ledger.ours.keys() | self.ledger.in_flight.keys():  # not every view
            tracked = self.inventory.domains.get(uuid)
            if tracked is None or tracked.meta.qos_class not in counts:
                continue
            state = self.ledger.state_of(uuid, tracked.running)
            if state in (VMState.SUSPENDED, VMState.SUSPENDING):
                counts[tracked.meta.qos_class] += 1
        return PressureStatus(
            under_pressure=self.state.under_pressure,
            reason=self.state.reason,
            signal=self._source(),
            available_bytes=self.state.available_bytes,
            threshold_bytes=effective_threshold(self.state, self.eviction),
            suspended_by_class=counts,
            guaranteed_only=self._guaranteed_only,
        )

    async def _report_status(self) -> None:
        status = self.status()
        if status.key() != self._last_status:
            self._last_status = status.key()
            await self.reporter.pressure_changed(status)

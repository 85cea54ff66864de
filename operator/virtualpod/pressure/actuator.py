"""The actuator: suspend, resume and balloon VMs for the loop, crash-safely.

An intent is written before every suspend or resume and updated after it, so a restart
can tell what was done (`recovery`). Suspensions and resumptions run as tasks, so
sampling goes on while a Save writes RAM to disk; what they will free is recorded in the
ledger as in flight, so the next sample does not pick more victims for the same need.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

from virtualpod.libvirt.hypervisor import HypervisorError
from virtualpod.pressure import messages
from virtualpod.pressure.intents import Action, Intent, IntentStore
from virtualpod.pressure.ledger import InFlight, Ledger
from virtualpod.pressure.ordering import tick
from virtualpod.pressure.policy import VMState, VMView
from virtualpod.pressure.ports import HypervisorPort, Reporter

#: Samples a balloon's estimated reclaim is credited for: if the guest does not give
#: the memory back by then, the next decisions suspend instead.
BALLOON_CREDIT_SAMPLES = 2


class Actuator:
    def __init__(
        self,
        hv: HypervisorPort,
        intents: IntentStore,
        reporter: Reporter,
        ledger: Ledger,
        sampling_interval_s: float,
    ) -> None:
        self.hv = hv
        self.intents = intents
        self.reporter = reporter
        self.ledger = ledger
        self.sampling_interval_s = sampling_interval_s

    async def start_suspend(self, vm: VMView, message: str) -> None:
        intent = Intent(Action.SUSPEND, vm.suspend_mode.value, False, vm.memory_bytes, message)
        try:
            await self.intents.put(vm.key, intent)
        except HypervisorError as error:  # no crash-safe suspend without its intent
            await self.reporter.action_failed(vm, Action.SUSPEND, error.message)
            return
        self.ledger.ours[vm.key] = intent
        flight = InFlight(Action.SUSPEND, vm.reclaim_bytes)
        self.ledger.in_flight[vm.key] = flight
        await self.reporter.vm_suspending(vm, messages.MEMORY_PRESSURE, message)
        flight.task = asyncio.create_task(self._suspend(vm, intent, message))

    async def _suspend(self, vm: VMView, intent: Intent, message: str) -> None:
        try:
            result = await self.hv.suspend(vm.key, vm.suspend_mode)
        except HypervisorError as error:
            self.ledger.in_flight.pop(vm.key, None)
            self.ledger.ours.pop(vm.key, None)
            with contextlib.suppress(HypervisorError):
                await self.intents.delete(vm.key)
            await self.reporter.action_failed(vm, Action.SUSPEND, error.message)
            return
        intent.done = True
        with contextlib.suppress(HypervisorError):  # recovery reads "saved" from libvirt
            await self.intents.put(vm.key, intent)
        self.ledger.in_flight.pop(vm.key, None)
        self.ledger.settled_at[vm.key] = tick()
        detail = messages.suspended_message(
            message, vm.suspend_mode, result.seconds, result.released_bytes
        )
        await self.reporter.vm_suspended(
            replace(vm, state=VMState.SUSPENDED), messages.MEMORY_PRESSURE, detail
        )

    async def start_resume(self, vm: VMView, message: str) -> None:
        intent = Intent(Action.RESUME, vm.suspend_mode.value, False, vm.memory_bytes)
        try:
            await self.intents.put(vm.key, intent)
        except HypervisorError as error:
            await self.reporter.action_failed(vm, Action.RESUME, error.message)
            return
        self.ledger.ours[vm.key] = intent
        flight = InFlight(Action.RESUME, 0)
        self.ledger.in_flight[vm.key] = flight
        flight.task = asyncio.create_task(self._resume(vm, message))

    async def _resume(self, vm: VMView, message: str) -> None:
        try:
            await self.hv.resume(vm.key, vm.suspend_mode)
        except HypervisorError as error:
            self.ledger.in_flight.pop(vm.key, None)
            kept = Intent(Action.SUSPEND, vm.suspend_mode.value, True, vm.memory_bytes)
            self.ledger.ours[vm.key] = kept  # still suspended: the loop tries again later
            with contextlib.suppress(HypervisorError):
                await self.intents.put(vm.key, kept)
            await self.reporter.action_failed(vm, Action.RESUME, error.message)
            return
        self.ledger.ours.pop(vm.key, None)
        with contextlib.suppress(HypervisorError):
            await self.intents.delete(vm.key)
        self.ledger.in_flight.pop(vm.key, None)
        self.ledger.settled_at[vm.key] = self.ledger.last_resume_landed = tick()
        await self.reporter.vm_resumed(replace(vm, state=VMState.RUNNING), message)

    async def balloon(self, vm: VMView, target: int, reclaim: int, now: float) -> None:
        try:
            await self.hv.set_balloon(vm.key, target)
        except HypervisorError as error:
            await self.reporter.action_failed(vm, Action.BALLOON, error.message)
            return
        expires = now + BALLOON_CREDIT_SAMPLES * self.sampling_interval_s
        self.ledger.in_flight[vm.key] = InFlight(Action.BALLOON, reclaim, expires_at=expires)
        await self.reporter.vm_ballooned(vm, target, messages.ballooned_message(target, reclaim))

    async def idle(self) -> None:
        """Wait for every suspend/resume started so far (tests, benchmarks, shutdown)."""
        tasks = self.ledger.tasks()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

"""The pressure the demo creates: a co-tenant takes part of the VM pool, in steps sized
from what the VMs use at that moment, and gives it back; the monitor does the rest.

Every suspend and resume is real libvirt, done by the operator's own pressure monitor on
its pool signal (`pool.DemoPool`), in the operator's thread; the demo only turns the
knob and watches the signal, libvirt and the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TextIO

from virtualpod.core.qos import QOSClass
from virtualpod.core.quantity import MIB
from virtualpod.core.settings import Settings
from virtualpod.demo.environment import NAMESPACE, DemoVM
from virtualpod.demo.output import Clock, DemoError, say
from virtualpod.demo.pool import MEASURED_RSS, ConfiguredMemoryHypervisor, DemoPool
from virtualpod.demo.timeline import Action, DemoReporter, signal_before
from virtualpod.demo.views import phases, print_phases
from virtualpod.kube.context import AgentContext
from virtualpod.libvirt.hypervisor import DomainState, Hypervisor
from virtualpod.pressure.monitor import HypervisorPort, Inventory, Monitor, mib
from virtualpod.testing import KubeClient, async_wait_for

#: The sized pool leaves this much beyond threshold + resume margin, rounded up.
POOL_HEADROOM_BYTES = 64 * MIB
POOL_ROUNDING_BYTES = 32 * MIB
#: How long the demo watches after a save that the monitor suspends nothing more.
HOLD_S = 1.0
#: Upper bounds for the monitor to act and for the API to show it.
PRESSURE_TIMEOUT_S = 60.0
API_TIMEOUT_S = 15.0
MONITOR_STOP_TIMEOUT_S = 15.0


def round_up(count: int, unit: int) -> int:
    return -(-count // unit) * unit


@dataclass
class PressureLoop:
    """The monitor the operator runs for the demo, on the demo's pool signal.

    `start` is an `AgentContext.on_ready` hook: it runs in the operator's thread, where
    the status reporter's Kubernetes calls need Kopf's context.
    """

    settings: Settings
    clock: Clock
    out: TextIO
    measured_rss: bool
    monitor: Monitor | None = None
    reporter: DemoReporter | None = None
    pool: DemoPool | None = None
    finished: threading.Event = field(default_factory=threading.Event)
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None

    @property
    def measurement(self) -> str:
        return MEASURED_RSS if self.measured_rss else ConfiguredMemoryHypervisor.measurement

    def start(self, ctx: AgentContext) -> Coroutine[Any, Any, None]:
        """Build the monitor; return its loop, for the operator to run."""
        own = None if self.measured_rss else ConfiguredMemoryHypervisor(ctx.settings.libvirt_uri)
        hv: HypervisorPort = ctx.hv if own is None else own
        inventory = Inventory(hv, scope=lambda meta: meta.namespace == NAMESPACE)
        self.pool = DemoPool(inventory, self.clock)
        self.reporter = DemoReporter(ctx, self.clock, self.out)
        self.monitor = Monitor(hv, self.pool, self.reporter, self.settings, inventory=inventory)
        return self._run(self.monitor, own)

    async def _run(self, monitor: Monitor, own: Hypervisor | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            if own is not None:
                await own.connect()
            await monitor.run(self._stop)
            await monitor.idle()
        finally:
            if own is not None:
                await own.close()
            self.finished.set()

    async def close(self) -> None:
        """Stop the monitor (from the demo's thread) and wait for it to finish."""
        if self._loop is None or self._stop is None:
            return
        with contextlib.suppress(RuntimeError):  # the operator's loop is gone already
            self._loop.call_soon_threadsafe(self._stop.set)
        await asyncio.to_thread(self.finished.wait, MONITOR_STOP_TIMEOUT_S)


class CoTenant:
    """Three steps of a co-tenant on the VM pool, each narrated with the signal it moves.

    Each step is sized from what the VMs use at that moment: the first one BestEffort
    save covers; the second (with every VM running, a deficit of BestEffort's usage plus
    half of Burstable's) also needs the Burstable VM; the third gives it all back.
    """

    def __init__(
        self,
        api: KubeClient,
        hv: Hypervisor,
        vms: list[DemoVM],
        loop: PressureLoop,
        clock: Clock,
        out: TextIO,
    ) -> None:
        if loop.monitor is None or loop.pool is None or loop.reporter is None:
            raise DemoError("the operator did not start the pressure monitor")
        self.api, self.hv, self.vms, self.clock, self.out = api, hv, vms, clock, out
        self.loop = loop
        self.pool: DemoPool = loop.pool
        self.reporter: DemoReporter = loop.reporter
        self.eviction = loop.monitor.eviction
        self.threshold = self.eviction.hard_memory_available_bytes
        #: What the monitor restores the signal to.
        self.floor = self.threshold + self.eviction.minimum_reclaim_bytes
        by_qos = {vm.qos: vm for vm in vms}
        self.best_effort = by_qos[QOSClass.BEST_EFFORT]
        self.burstable = by_qos[QOSClass.BURSTABLE]
        self.guaranteed = by_qos[QOSClass.GUARANTEED]

    def say(self, line: str = "") -> None:
        say(self.out, line)

    # ------------------------------------------------------------- observations

    def usage(self, vm: DemoVM) -> int:
        """The VM's working set as the monitor last counted it (0 when not running)."""
        assert vm.uuid is not None
        tracked = self.pool.inventory.domains.get(vm.uuid)
        if tracked is None or not tracked.info.active:
            return 0
        return tracked.rss_bytes if tracked.rss_bytes is not None else tracked.info.memory_bytes

    def usages(self) -> str:
        return ", ".join(f"{vm.name} {mib(self.usage(vm))}" for vm in self.vms if self.usage(vm))

    async def state(self, vm: DemoVM) -> str:
        assert vm.uuid is not None
        return (await self.hv.lookup(vm.uuid)).state.name.lower()

    def done(self, what: str, vm: DemoVM) -> Action | None:
        return next(
            (a for a in self.reporter.actions if a.what == what and a.name == vm.name), None
        )

    async def signal_after(self, what: str, vm: DemoVM) -> None:
        """Wait for the monitor to have `what` (suspended/resumed) the VM; say how the
        signal moved."""

        async def reported() -> Action | None:
            return self.done(what, vm)

        action = await async_wait_for(
            reported, PRESSURE_TIMEOUT_S, interval=0.1, what=f"{vm.name} to be {what}"
        )
        before = signal_before(self.pool, action)
        after = await self.pool.sample_after(action.at, action.uuid, counted=what == "resumed")
        change = "released" if what == "suspended" else "taken back"
        was = f" (was {mib(before.available_bytes)})" if before is not None else ""
        side = "above" if after.available_bytes >= self.threshold else "below"
        self.say(
            f"{self.clock.stamp()} signal: pool memory.available {mib(after.available_bytes)}"
            f"{was}, {side} the {mib(self.threshold)} threshold: {vm.name}'s memory {change}; "
            f"VMs use {mib(after.used_bytes)}"
        )

    async def api_shows(self, phase: str, names: list[str]) -> None:
        async def shown() -> bool:
            now = await phases(self.api, self.vms)
            return all(now[name] == phase for name in names)

        await async_wait_for(
            shown, API_TIMEOUT_S, interval=0.1, what=f"status.phase {phase} in the API"
        )
        self.say()
        self.say("kubectl get vpod (from the API):")
        await print_phases(self.api, self.vms, self.out)

    # ------------------------------------------------------------------ actions

    async def size_pool(self) -> None:
        """Size the pool from what the VMs use once settled, with room to spare."""
        measured = await self.pool.settled_usage()
        pool_bytes = round_up(
            measured.used_bytes
            + self.threshold
            + self.eviction.resume_margin_bytes
            + POOL_HEADROOM_BYTES,
            POOL_ROUNDING_BYTES,
        )
        self.pool.set_pool(pool_bytes)
        reading = await self.pool.sample_after(self.clock.now())
        self.reporter.narrating = True
        self.say(
            f"{self.clock.stamp()} the VM pool: {mib(pool_bytes)} allocatable (room for what "
            f"the VMs use, the threshold, the resume margin and {mib(POOL_HEADROOM_BYTES)}); "
            f"VMs use {mib(reading.used_bytes)} ({self.usages()}); available "
            f"{mib(reading.available_bytes)}"
        )

    def take(self, need_bytes: int, why: str) -> None:
        """Lower the pool's allocatable so that the monitor needs `need_bytes` back."""
        latest = self.pool.latest
        holds = self.pool.pool_bytes - latest.used_bytes - (self.floor - need_bytes)
        added = holds - self.pool.co_tenant_bytes
        now_holds = f" (it now holds {mib(holds)})" if added != holds else ""
        self.say()
        self.say(
            f"{self.clock.stamp()} a co-tenant takes {mib(added)} of the VM pool{now_holds}: "
            f"pool {mib(self.pool.pool_bytes - holds)} for VMs, VMs use "
            f"{mib(latest.used_bytes)}, available {mib(self.floor - need_bytes)} < "
            f"{mib(self.threshold)}: need {mib(need_bytes)} -- {why}"
        )
        at = self.clock.now()
        self.pool.co_tenant_takes(holds)
        self.reporter.co_tenant(at, f"co-tenant takes {mib(added)}")

    async def first_step(self) -> int:
        """What one BestEffort save covers; returns BestEffort's usage before it."""
        best_effort = self.best_effort
        usage = self.usage(best_effort)
        need = max(MIB, usage // 2 // MIB * MIB)
        self.take(need, f"one BestEffort save ({best_effort.name}, uses {mib(usage)}) covers it")
        await self.signal_after("suspended", best_effort)
        await self.pool.sample_after(self.clock.now() + HOLD_S)
        suspended = [a.name for a in self.reporter.actions if a.what == "suspended"]
        self.say(
            f"{self.clock.stamp()} {HOLD_S:g}s later: {self.burstable.name} (Burstable) is "
            f"{await self.state(self.burstable)}, suspended so far: {', '.join(suspended)} "
            "-- the fewest VMs that cover the need"
        )
        return usage

    async def second_step(self, best_effort_usage: int) -> None:
        """With every VM running, a deficit of BestEffort's usage + half Burstable's."""
        best_effort, burstable, guaranteed = self.best_effort, self.burstable, self.guaranteed
        need = max(MIB, self.usage(burstable) // 2 // MIB * MIB)
        self.take(
            need,
            f"in all, with every VM running, a deficit of {mib(best_effort_usage + need)} "
            f"({best_effort.name}'s {mib(best_effort_usage)} + half of {burstable.name}'s "
            f"{mib(self.usage(burstable))}): {best_effort.name} is saved already, so "
            f"{burstable.name} (Burstable) goes next; {guaranteed.name} (Guaranteed) never",
        )
        await self.signal_after("suspended", burstable)
        await self.pool.sample_after(self.clock.now() + HOLD_S)
        self.say(
            f"{self.clock.stamp()} {guaranteed.name} (Guaranteed) is "
            f"{await self.state(guaranteed)}: Guaranteed VMs are never suspended for host "
            "pressure"
        )
        await self.api_shows("Suspended", [best_effort.name, burstable.name])

    async def give_back(self) -> None:
        """The co-tenant leaves; the monitor resumes, highest rank first."""
        self.say()
        held = self.pool.co_tenant_bytes
        self.say(
            f"{self.clock.stamp()} pressure gone: the co-tenant gives back its {mib(held)}; "
            f"once no threshold has been met for the "
            f"{self.eviction.pressure_transition_period_s:g}s transition period the monitor "
            "resumes, highest rank first, one VM at a time, each only if the signal stays "
            "above threshold + margin after it"
        )
        at = self.clock.now()
        self.pool.co_tenant_takes(0)
        self.reporter.co_tenant(at, f"co-tenant gives back {mib(held)}")
        await self.signal_after("resumed", self.burstable)
        await self.signal_after("resumed", self.best_effort)
        await self.api_shows("Running", [vm.name for vm in self.vms])
        for vm in (self.best_effort, self.burstable):
            assert vm.uuid is not None
            if (await self.hv.lookup(vm.uuid)).state is not DomainState.RUNNING:
                raise DemoError(
                    f"{vm.name} was reported resumed but libvirt says {await self.state(vm)}"
                )

    async def play(self) -> None:
        eviction = self.eviction
        self.say()
        self.say(
            "== memory pressure on the VM pool (the monitor's pool signal; every suspend and "
            "resume below is real libvirt, and so is the memory it releases)"
        )
        self.say(
            "signal: memory.available = the pool's allocatable for VMs - the working sets of "
            f"the running VMs, measured as {self.loop.measurement}, sampled every "
            f"{eviction.sampling_interval_s:g}s"
        )
        self.say(
            f"policy: hard threshold {mib(self.threshold)}, transition period "
            f"{eviction.pressure_transition_period_s:g}s, suspend mode "
            f"{eviction.suspend_mode.value}, resume margin {mib(eviction.resume_margin_bytes)}"
        )
        await self.size_pool()
        best_effort_usage = await self.first_step()
        await self.second_step(best_effort_usage)
        await self.give_back()

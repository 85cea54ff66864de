"""The pressure loop on libvirt's test driver, with an injected signal.

Domains are planned from VirtualPod manifests by the core, defined and started through
the real hypervisor module; the monitor reads them back from libvirt alone.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest

from tests.pressure.harness import (
    MI,
    Clock,
    RecordingReporter,
    ScriptedSignal,
    StraddlingSignal,
    as_probe,
    manifest,
    unique_namespace,
)
from tests.waiting import async_wait_for
from virtualpod.core.plan import VMPlan, plan_virtualpod
from virtualpod.core.settings import EvictionSettings, PressureSignal, Settings
from virtualpod.core.spec import SuspendMode
from virtualpod.libvirt.hypervisor import DomainState, Hypervisor, Unsupported
from virtualpod.pressure.monitor import (
    INTENT_KEY,
    MEMORY_PRESSURE,
    SAVED_OUTSIDE,
    Action,
    DomainIntentStore,
    Intent,
    Inventory,
    Monitor,
    PoolSignal,
    SignalReading,
    signal_from_settings,
)

URI = "test:///default"
QEMU_URI = os.environ.get("VIRTUALPOD_QEMU_URI", "")
#: For tests worth repeating on a real libvirtd: firmware-only KVM guests, cheap to save.
BOTH_DRIVERS = pytest.mark.parametrize(
    "hv",
    [
        pytest.param(URI, id="test-driver"),
        pytest.param(
            QEMU_URI,
            id="qemu",
            marks=[
                pytest.mark.qemu,
                pytest.mark.skipif(not QEMU_URI, reason="VIRTUALPOD_QEMU_URI not set"),
            ],
        ),
    ],
    indirect=True,
)
EVICTION = EvictionSettings(pressure_transition_period_s=30.0, sampling_interval_s=0.05)
SETTINGS = Settings(eviction=EVICTION)


class Fleet:
    def __init__(self, hv: Hypervisor) -> None:
        self.hv = hv
        self.namespace = unique_namespace()
        self.plans: dict[str, VMPlan] = {}

    async def add(self, name: str, qos: str, **spec: object) -> VMPlan:
        vm = plan_virtualpod(
            manifest(name, self.namespace, qos, **spec),
            SETTINGS,
            cgroup_version=self.hv.cgroup_version,
        )
        self.plans[name] = vm
        await self.hv.ensure_defined(vm.domain_xml)
        await self.hv.start(vm.uuid)
        return vm

    def inventory(self) -> Inventory:
        return Inventory(self.hv, scope=lambda meta: meta.namespace == self.namespace)

    async def state(self, name: str) -> DomainState:
        return (await self.hv.lookup(self.plans[name].uuid)).state

    async def saved(self, name: str) -> bool:
        info = await self.hv.lookup(self.plans[name].uuid)
        return info.state is DomainState.SHUTOFF and info.has_managed_save


@pytest.fixture
async def hv(request: pytest.FixtureRequest) -> AsyncIterator[Hypervisor]:
    async with Hypervisor(getattr(request, "param", URI)) as h:
        yield h


@pytest.fixture
async def fleet(hv: Hypervisor) -> AsyncIterator[Fleet]:
    f = Fleet(hv)
    yield f
    for vm in f.plans.values():
        await hv.undefine(vm.uuid)


async def three_classes(fleet: Fleet) -> None:
    await fleet.add("guaranteed", "Guaranteed")
    await fleet.add("burstable", "Burstable")
    await fleet.add("besteffort", "BestEffort")


def monitor(fleet: Fleet, signal: object, reporter: RecordingReporter, **kw: object) -> Monitor:
    return Monitor(
        fleet.hv,
        signal,  # type: ignore[arg-type]
        reporter,
        SETTINGS,
        inventory=fleet.inventory(),
        **kw,  # type: ignore[arg-type]
    )


async def test_suspends_in_qos_order_and_resumes_in_reverse(fleet: Fleet):
    await three_classes(fleet)
    signal, reporter, clock = ScriptedSignal(2000 * MI), RecordingReporter(), Clock()
    loop = monitor(fleet, signal, reporter, clock=clock)

    decision = await loop.step()
    assert decision.suspend == ()
    assert reporter.names("suspending") == []

    signal.available_bytes = 50 * MI  # below the 100Mi hard threshold: need 50Mi
    decision = await loop.step()
    assert [vm.name for vm in decision.suspend] == ["besteffort"]
    await loop.idle()
    assert await fleet.saved("besteffort")
    assert await fleet.state("burstable") is DomainState.RUNNING
    suspended = reporter.of("suspended")[-1]
    assert suspended.reason == MEMORY_PRESSURE
    assert "memory.available 50Mi < hard threshold 100Mi" in suspended.message

    clock.advance(0.5)  # still short: the next class goes, the Guaranteed VM never
    decision = await loop.step()
    assert [vm.name for vm in decision.suspend] == ["burstable"]
    await loop.idle()
    assert await fleet.saved("burstable")

    clock.advance(0.5)
    signal.available_bytes = 10 * MI
    decision = await loop.step()
    assert decision.suspend == ()
    assert await fleet.state("guaranteed") is DomainState.RUNNING
    assert len(reporter.of("guaranteed-only")) == 1
    assert "only Guaranteed VMs are left" in reporter.of("guaranteed-only")[0].message
    status = reporter.of("pressure")[-1].extra
    assert status.under_pressure
    assert dict(status.suspended_by_class) == {"BestEffort": 1, "Burstable": 1, "Guaranteed": 0}

    clock.advance(0.5)
    signal.available_bytes = 4000 * MI  # plenty, but within the transition period
    assert (await loop.step()).resume == ()
    clock.advance(EVICTION.pressure_transition_period_s)
    first = await loop.step()
    assert [vm.name for vm in first.resume] == ["burstable"]  # one at a time
    await loop.idle()
    assert await fleet.state("burstable") is DomainState.RUNNING
    second = await loop.step()
    assert [vm.name for vm in second.resume] == ["besteffort"]
    await loop.idle()
    assert await fleet.state("besteffort") is DomainState.RUNNING
    assert reporter.names("suspended") == ["besteffort", "burstable"]
    assert reporter.names("resumed") == ["burstable", "besteffort"]
    assert dict(reporter.of("pressure")[-1].extra.suspended_by_class) == {
        "BestEffort": 0,
        "Burstable": 0,
        "Guaranteed": 0,
    }


async def test_pool_signal_feeds_back_what_a_save_released(fleet: Fleet):
    """allocatable - summed RSS: saving a VM really raises the signal, so one is enough."""
    await three_classes(fleet)
    inventory = fleet.inventory()
    domains = await inventory.refresh()
    used = sum(d.rss_bytes or 0 for d in domains.values())
    pool = PoolSignal(inventory, used + 50 * MI)
    reporter, clock = RecordingReporter(), Clock()
    loop = Monitor(fleet.hv, pool, reporter, SETTINGS, inventory=inventory, clock=clock)

    decision = await loop.step()
    assert decision.state.available_bytes == 50 * MI
    assert [vm.name for vm in decision.suspend] == ["besteffort"]
    await loop.idle()
    clock.advance(0.5)
    decision = await loop.step()
    assert decision.suspend == ()
    assert decision.state.available_bytes is not None
    assert decision.state.available_bytes > 100 * MI

    clock.advance(EVICTION.pressure_transition_period_s)
    assert (await loop.step()).resume == ()  # resuming would put it right back under
    pool.allocatable_bytes += 1024 * MI  # the load went down
    clock.advance(0.5)
    assert [vm.name for vm in (await loop.step()).resume] == ["besteffort"]
    await loop.idle()
    assert await fleet.state("besteffort") is DomainState.RUNNING


async def test_a_read_that_straddles_a_save_does_not_suspend_one_vm_too_many(
    fleet: Fleet,
) -> None:
    """A sample begun before a Save landed, consumed after it settled, still counts it."""
    await three_classes(fleet)
    signal, reporter, clock = StraddlingSignal(50 * MI), RecordingReporter(), Clock()
    loop = monitor(fleet, signal, reporter, clock=clock)
    assert [vm.name for vm in (await loop.step()).suspend] == ["besteffort"]

    signal.straddle(until=lambda: reporter.names("suspended"))  # still the pre-save 50Mi
    clock.advance(0.5)
    assert (await loop.step()).suspend == ()
    assert await fleet.saved("besteffort")
    assert await fleet.state("burstable") is DomainState.RUNNING

    clock.advance(0.5)  # read wholly after the save and still short: the next VM goes
    assert [vm.name for vm in (await loop.step()).suspend] == ["burstable"]
    await loop.idle()


class StraddlingPool(PoolSignal):
    """The pool signal with one read armed to straddle a Save (see `StraddlingSignal`).

    `stale`: the read took its inventory snapshot before the Save and returns it after
    the suspend settled (the VM's memory is in it). Otherwise the read waits first and
    then reads libvirt (the release is in it already).
    """

    def __init__(self, inventory: Inventory, allocatable_bytes: int, *, stale: bool) -> None:
        super().__init__(inventory, allocatable_bytes)
        self.stale = stale
        self.until: Callable[[], object] | None = None
        self.last: SignalReading | None = None

    async def read(self) -> SignalReading:
        until, self.until = self.until, None
        if until is None or not self.stale:
            if until is not None:
                await async_wait_for(as_probe(until), what="the suspend to settle")
            self.last = await super().read()
            return self.last
        assert self.last is not None
        await async_wait_for(as_probe(until), what="the suspend to settle")
        return self.last  # and the monitor's inventory is still that pre-save snapshot


@pytest.mark.parametrize("stale", [True, False], ids=["counted-in-read", "gone-from-read"])
async def test_pool_read_straddling_a_save_counts_its_release_exactly_once(
    fleet: Fleet, stale: bool
) -> None:
    await three_classes(fleet)
    inventory = fleet.inventory()
    domains = await inventory.refresh()
    by_name = {d.meta.name: d.rss_bytes or d.info.memory_bytes for d in domains.values()}
    used = sum(by_name.values())
    pool = StraddlingPool(inventory, used + 50 * MI, stale=stale)  # 50Mi short: one VM
    reporter, clock = RecordingReporter(), Clock()
    loop = Monitor(fleet.hv, pool, reporter, SETTINGS, inventory=inventory, clock=clock)
    assert [vm.name for vm in (await loop.step()).suspend] == ["besteffort"]

    # Meanwhile the load grows by the BestEffort VM's memory: its release alone is not enough.
    pool.allocatable_bytes -= by_name["besteffort"]
    pool.until = lambda: reporter.names("suspended")
    clock.advance(0.5)
    decision = await loop.step()
    assert await fleet.saved("besteffort")
    if stale:  # the pre-save reading: the release is still to come, nothing more to do
        assert decision.state.available_bytes == 50 * MI
        assert decision.suspend == ()
    else:  # the reading has the release and a real shortfall: the next VM goes right now
        assert decision.state.available_bytes == 50 * MI
        assert [vm.name for vm in decision.suspend] == ["burstable"]
    await loop.idle()


async def test_pause_mode_vm_is_paused_and_not_counted_as_reclaim(fleet: Fleet):
    await fleet.add("paused-be", "BestEffort", suspendMode="Pause")
    await fleet.add("burstable", "Burstable")
    signal, reporter = ScriptedSignal(90 * MI), RecordingReporter()
    loop = monitor(fleet, signal, reporter, clock=Clock())
    decision = await loop.step()
    # Pausing frees nothing, so the Burstable VM must go too; the order still holds.
    assert [vm.name for vm in decision.suspend] == ["paused-be", "burstable"]
    await loop.idle()
    assert await fleet.state("paused-be") is DomainState.PAUSED
    assert await fleet.saved("burstable")
    paused = next(c for c in reporter.of("suspended") if c.vm and c.vm.name == "paused-be")
    assert "Pause keeps the VM's memory" in paused.message


async def test_run_loop_reacts_within_a_sampling_interval(fleet: Fleet):
    await fleet.add("besteffort", "BestEffort")
    signal, reporter = ScriptedSignal(2000 * MI), RecordingReporter()
    loop = monitor(fleet, signal, reporter)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        await async_wait_for(_async(lambda: signal.reads >= 2), what="two samples")
        signal.available_bytes = 10 * MI
        await async_wait_for(_async(lambda: reporter.names("suspended")), timeout=5)
        assert await fleet.saved("besteffort")
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


def _async(probe):  # type: ignore[no-untyped-def]
    async def wrapped():  # type: ignore[no-untyped-def]
        return probe()

    return wrapped


# --------------------------------------------------------------------- crash safety


@BOTH_DRIVERS
async def test_restart_keeps_a_saved_vm_suspended_and_can_resume_it(fleet: Fleet):
    await three_classes(fleet)
    be = fleet.plans["besteffort"]
    # 10Mi short: one VM covers it on either driver (a firmware-only KVM guest: ~40Mi RSS)
    signal, clock = ScriptedSignal(90 * MI), Clock()
    first = monitor(fleet, signal, RecordingReporter())  # intents in the domains: the default
    await first.step()
    await first.idle()
    assert await fleet.saved("besteffort")
    intent = (await DomainIntentStore(fleet.hv).load())[be.uuid]
    assert (intent.action, intent.mode, intent.done) == ("suspend", "Save", True)
    assert "memory.available 90Mi" in intent.message

    # The VirtualPod is reconciled meanwhile: its re-rendered XML must not drop the intent.
    assert not (await fleet.hv.ensure_defined(be.domain_xml)).changed

    # A new process: it knows only libvirt (and the intents stored in the domains).
    reporter = RecordingReporter()
    second = monitor(fleet, signal, reporter, clock=clock)
    await second.reconcile()
    assert reporter.names("suspended") == ["besteffort"]
    assert reporter.of("suspended")[0].reason == MEMORY_PRESSURE
    assert "after an operator restart" in reporter.of("suspended")[0].message
    signal.available_bytes = 4000 * MI
    assert (await second.step()).resume == ()  # the restart counts as under pressure
    clock.advance(EVICTION.pressure_transition_period_s)
    assert [vm.name for vm in (await second.step()).resume] == ["besteffort"]
    await second.idle()
    assert await fleet.state("besteffort") is DomainState.RUNNING
    assert await fleet.hv.metadata(be.uuid, INTENT_KEY) is None


@BOTH_DRIVERS
async def test_restart_rolls_back_or_completes_interrupted_actions(fleet: Fleet):
    await three_classes(fleet)
    hv = fleet.hv
    be, bu = fleet.plans["besteffort"], fleet.plans["burstable"]
    await hv.suspend(bu.uuid, SuspendMode.SAVE)  # saved; the process died before "done"
    store = DomainIntentStore(hv)
    # Died after recording a suspend it never issued: the VM still runs.
    await store.put(be.uuid, Intent(Action.SUSPEND, "Save", False, 300 * MI, "pressure"))
    # Died in a resume before libvirt restored the VM: still saved.
    await store.put(bu.uuid, Intent(Action.RESUME, "Save", False, 300 * MI))
    reporter = RecordingReporter()
    loop = monitor(fleet, ScriptedSignal(4000 * MI), reporter)
    await loop.reconcile()
    assert reporter.names("resumed") == ["besteffort"]
    assert "rolled back" in reporter.of("resumed")[0].message
    assert reporter.names("suspended") == ["burstable"]
    assert await fleet.state("besteffort") is DomainState.RUNNING
    assert await fleet.saved("burstable")
    intents = {
        uuid: intent for uuid, intent in (await store.load()).items() if uuid in (be.uuid, bu.uuid)
    }
    assert list(intents) == [bu.uuid]
    assert intents[bu.uuid].action == "suspend"
    assert intents[bu.uuid].done


async def test_an_intent_that_does_not_parse_is_ignored(fleet: Fleet):
    await fleet.add("besteffort", "BestEffort")
    uuid = fleet.plans["besteffort"].uuid
    await fleet.hv.set_metadata(uuid, INTENT_KEY, '<intent action="explode" mode="Save"/>')
    assert uuid not in await DomainIntentStore(fleet.hv).load()
    reporter = RecordingReporter()
    await monitor(fleet, ScriptedSignal(4000 * MI), reporter).reconcile()
    assert reporter.names("suspended") == reporter.names("resumed") == []
    assert await fleet.state("besteffort") is DomainState.RUNNING


async def test_intents_of_other_loops_are_left_alone(fleet: Fleet, hv: Hypervisor):
    """One libvirtd, several loops (scopes): each reconciles only its own VMs' intents."""
    await fleet.add("besteffort", "BestEffort")
    other = Fleet(hv)
    try:
        theirs = await other.add("theirs", "BestEffort")
        await hv.suspend(theirs.uuid, SuspendMode.SAVE)
        await DomainIntentStore(hv).put(theirs.uuid, Intent(Action.SUSPEND, "Save", True, MI))
        reporter = RecordingReporter()
        await monitor(fleet, ScriptedSignal(4000 * MI), reporter).reconcile()
        assert reporter.names("suspended") == []
        assert (await hv.metadata(theirs.uuid, INTENT_KEY)) is not None
    finally:
        for vm in other.plans.values():
            await hv.undefine(vm.uuid)


async def test_a_vm_saved_by_someone_else_is_reported_but_left_alone(fleet: Fleet):
    await fleet.add("besteffort", "BestEffort")
    await fleet.hv.suspend(fleet.plans["besteffort"].uuid, SuspendMode.SAVE)
    reporter, clock = RecordingReporter(), Clock()
    loop = monitor(fleet, ScriptedSignal(4000 * MI), reporter, clock=clock)
    await loop.reconcile()
    assert [(c.vm.name, c.reason) for c in reporter.of("suspended") if c.vm] == [
        ("besteffort", SAVED_OUTSIDE)
    ]
    clock.advance(100)
    assert (await loop.step()).resume == ()
    assert await fleet.saved("besteffort")


async def test_balloon_step_comes_before_suspending(fleet: Fleet):
    await fleet.add("burstable", "Burstable")
    reporter = RecordingReporter()
    settings = replace(SETTINGS, eviction=replace(EVICTION, balloon_burstable=True))
    loop = Monitor(
        fleet.hv,
        ScriptedSignal(80 * MI),
        reporter,
        settings,
        inventory=fleet.inventory(),
        clock=Clock(),
    )
    decision = await loop.step()
    assert [b.vm.name for b in decision.balloon] == ["burstable"]
    assert decision.suspend == ()
    assert reporter.of("ballooned")[0].extra == 64 * MI
    info = await fleet.hv.lookup(fleet.plans["burstable"].uuid)
    assert info.memory_bytes == 64 * MI


async def test_pool_allocatable_comes_from_the_argument_then_settings_then_host(
    hv: Hypervisor,
) -> None:
    inventory = Inventory(hv)
    pool = replace(Settings().eviction, signal=PressureSignal.POOL)
    configured = replace(Settings(), eviction=replace(pool, pool_allocatable_bytes=896 * MI))
    from_settings = await signal_from_settings(configured, hv, inventory)
    assert isinstance(from_settings, PoolSignal)
    assert from_settings.allocatable_bytes == 896 * MI
    explicit = await signal_from_settings(configured, hv, inventory, allocatable_bytes=64 * MI)
    assert isinstance(explicit, PoolSignal)
    assert explicit.allocatable_bytes == 64 * MI
    unconfigured = replace(Settings(), eviction=pool)
    try:
        host = (await hv.host_memory()).total_bytes
    except Unsupported:  # the test driver has no host memory stats: the fallback asks for them
        with pytest.raises(Unsupported):
            await signal_from_settings(unconfigured, hv, inventory)
        return
    derived = await signal_from_settings(unconfigured, hv, inventory)
    assert isinstance(derived, PoolSignal)
    assert derived.allocatable_bytes == host - Settings().reserved.memory_bytes

"""The pressure loop on a real libvirtd + QEMU: three TCG guests that fill their memory.

A VM pool with a small allocatable (signal = pool): the BestEffort guest is saved first
and its QEMU process (its memory) leaves the host, then the Burstable one; the
Guaranteed guest keeps running; with the load lowered they come back in reverse order,
still the same booted guests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import os
import subprocess
import time
import uuid as uuidlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from tests.pressure.harness import MI, RecordingReporter, manifest
from tests.waiting import async_wait_for, wait_for
from virtualpod.core.host_paths import HostPaths
from virtualpod.core.plan import VMPlan, plan_virtualpod
from virtualpod.core.settings import (
    Amount,
    EvictionSettings,
    PressureSignal,
    Settings,
)
from virtualpod.libvirt.hypervisor import DomainState, Hypervisor
from virtualpod.pressure.monitor import DomainIntentStore, Inventory, Monitor, PoolSignal
from virtualpod.pressure.policy import VMView

T = TypeVar("T")
QEMU_URI = os.environ.get("VIRTUALPOD_QEMU_URI", "")
REPO = Path(__file__).resolve().parents[2]
TOUCH_MIB = 96

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.slow,
    pytest.mark.skipif(
        not QEMU_URI,
        reason='VIRTUALPOD_QEMU_URI not set: run `eval "$(scripts/libvirtd.sh start)"` (root)',
    ),
]


class TimedReporter(RecordingReporter):
    def __init__(self) -> None:
        super().__init__()
        self.stamps: list[tuple[str, str, float]] = []

    async def vm_suspending(self, vm: VMView, reason: str, message: str) -> None:
        self.stamps.append(("issued", vm.name, time.monotonic()))
        await super().vm_suspending(vm, reason, message)

    async def vm_suspended(self, vm: VMView, reason: str, message: str) -> None:
        self.stamps.append(("released", vm.name, time.monotonic()))
        await super().vm_suspended(vm, reason, message)

    def stamp(self, what: str, name: str) -> float:
        return next(t for w, n, t in self.stamps if w == what and n == name)


@pytest.fixture(scope="module")
def guest_image() -> tuple[str, str]:
    if not list(Path("/boot").glob("vmlinuz-*")):
        pytest.skip("no /boot/vmlinuz-*: install linux-image-amd64")
    out = subprocess.run(
        [str(REPO / "scripts" / "guest.sh")], check=True, capture_output=True, text=True
    ).stdout
    values = dict(line.split("=", 1) for line in out.split())
    return values["GUEST_KERNEL"], values["GUEST_INITRD"]


def allowing(settings: Settings, kernel: str) -> Settings:
    """`settings` with the test guest's directory (scripts/guest.sh) in hostPaths.allowed."""
    return dataclasses.replace(settings, host_paths=HostPaths(allowed=(str(Path(kernel).parent),)))


SETTINGS = Settings(
    default_container_size=Amount(cpu_millis=1000, memory_bytes=128 * MI),
    padding=Amount(cpu_millis=0, memory_bytes=64 * MI),
    domain_type="qemu",
    memory_stats_period_s=1,
    eviction=EvictionSettings(signal=PressureSignal.POOL, pressure_transition_period_s=3.0),
)


@pytest.fixture
async def guests(
    guest_image: tuple[str, str],
) -> AsyncIterator[tuple[Hypervisor, dict[str, VMPlan]]]:
    kernel, initrd = guest_image
    namespace = f"pq-{uuidlib.uuid4().hex[:6]}"
    boot = {
        "kernel": {
            "path": kernel,
            "initrd": initrd,
            "cmdline": f"console=ttyS0 quiet vp.touch={TOUCH_MIB}",
        }
    }
    async with Hypervisor(QEMU_URI) as hv:
        plans = {
            qos: plan_virtualpod(
                manifest(qos.lower(), namespace, qos, boot=boot),
                allowing(SETTINGS, kernel),
                cgroup_version=hv.cgroup_version,
            )
            for qos in ("BestEffort", "Burstable", "Guaranteed")
        }
        try:
            for vm in plans.values():
                await hv.ensure_defined(vm.domain_xml)
                await hv.start(vm.uuid)
            for vm in plans.values():
                log = Path(vm.domain.console_log or "")
                wait_for(
                    guest_touched(log, TOUCH_MIB),
                    timeout=150,
                    interval=0.5,
                    what=f"{vm.name} booted and filled {TOUCH_MIB} MiB",
                )
            yield hv, plans
        finally:
            for vm in plans.values():
                await hv.undefine(vm.uuid)
                Path(vm.domain.console_log or "").unlink(missing_ok=True)


async def test_saves_in_qos_order_frees_memory_and_resumes_in_reverse(
    guests: tuple[Hypervisor, dict[str, VMPlan]],
) -> None:
    hv, plans = guests
    be, bu, gu = plans["BestEffort"], plans["Burstable"], plans["Guaranteed"]
    namespace = be.namespace
    inventory = Inventory(hv, scope=lambda meta: meta.namespace == namespace)
    domains = await inventory.refresh()
    used = sum(d.rss_bytes or 0 for d in domains.values())
    assert all((d.rss_bytes or 0) > TOUCH_MIB * MI for d in domains.values()), domains
    pool = PoolSignal(inventory, used + 400 * MI)  # room to spare: nothing happens
    reporter = TimedReporter()
    monitor = Monitor(hv, pool, reporter, SETTINGS, inventory=inventory)
    unused_before = {}
    for vm in (be, bu):
        unused = (await hv.memory_stats(vm.uuid)).unused_bytes
        assert unused is not None, "guest balloon stats needed (virtio_balloon)"
        unused_before[vm.name] = unused
    be_pid = await hv.qemu_pid(be.uuid)
    bu_pid = await hv.qemu_pid(bu.uuid)
    assert be_pid is not None
    assert bu_pid is not None
    stop = asyncio.Event()
    task = asyncio.create_task(monitor.run(stop))
    try:
        await async_wait_for(_probe(lambda: monitor.last_decision is not None))
        assert reporter.names("suspending") == []

        # The pool shrinks to 50Mi available: one VM (the BestEffort one) covers it.
        pool.allocatable_bytes = used + 50 * MI
        crossed = time.monotonic()
        await async_wait_for(_probe(lambda: reporter.names("suspended")), timeout=30)
        assert reporter.names("suspended") == ["besteffort"]
        assert not Path(f"/proc/{be_pid}").exists(), "QEMU of the saved VM still runs"
        info = await hv.lookup(be.uuid)
        assert info.state is DomainState.SHUTOFF
        assert info.has_managed_save
        intent = (await DomainIntentStore(hv).load())[be.uuid]  # kept in the domain itself
        assert (intent.action, intent.done) == ("suspend", True)
        first_issued = reporter.stamp("issued", "besteffort") - crossed
        first_released = reporter.stamp("released", "besteffort") - crossed

        # More load: the Burstable VM goes next; the Guaranteed one never.
        pool.allocatable_bytes -= 250 * MI
        await async_wait_for(_probe(lambda: len(reporter.names("suspended")) == 2), timeout=30)
        assert reporter.names("suspended") == ["besteffort", "burstable"]
        assert not Path(f"/proc/{bu_pid}").exists()
        assert (await hv.lookup(gu.uuid)).state is DomainState.RUNNING

        # The load goes away: after the transition period, reverse order, one at a time.
        pool.allocatable_bytes += 2048 * MI
        await async_wait_for(_probe(lambda: len(reporter.names("resumed")) == 2), timeout=60)
        assert reporter.names("resumed") == ["burstable", "besteffort"]
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await monitor.idle()

    for vm in (be, bu, gu):
        assert (await hv.lookup(vm.uuid)).state is DomainState.RUNNING
    intents = await DomainIntentStore(hv).load()
    assert not {be.uuid, bu.uuid, gu.uuid} & set(intents)  # resumed: intents cleared
    for vm in (be, bu):
        # The restored guest kernel is alive (its balloon stats move on) and it is the same
        # guest: its tmpfs still holds the touched memory (a reboot would free ~96 MiB).
        first = await _last_update(hv, vm.uuid)
        await async_wait_for(
            _aprobe(functools.partial(_last_update, hv, vm.uuid), first), timeout=20, interval=0.25
        )
        stats = await hv.memory_stats(vm.uuid)
        assert stats.unused_bytes is not None
        # One-sided: a reboot frees the touched memory (unused up by ~96 MiB); the guest's
        # own page cache may take some after the restore (measured: up to ~35 MiB less).
        assert stats.unused_bytes < unused_before[vm.name] + TOUCH_MIB * MI // 2, (
            vm.name,
            stats.unused_bytes,
            unused_before[vm.name],
        )
        assert (stats.rss_bytes or 0) > TOUCH_MIB * MI
    print(
        f"\nreal QEMU reaction: suspend issued {first_issued * 1000:.0f} ms, "
        f"memory released {first_released * 1000:.0f} ms after the crossing"
    )


async def _last_update(hv: Hypervisor, uuid: str) -> int:
    return (await hv.memory_stats(uuid)).raw.get("last_update", 0)


def guest_touched(log: Path, mib: int) -> Callable[[], bool]:
    """Whether the guest wrote that it filled `mib` MiB to its console log."""

    def touched() -> bool:
        return log.exists() and f"VPGUEST TOUCHED {mib}" in log.read_text(errors="replace")

    return touched


def _probe(fn: Callable[[], T]) -> Callable[[], Awaitable[T]]:
    async def probe() -> T:
        return fn()

    return probe


def _aprobe(fn: Callable[[], Awaitable[int]], first: int) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return (await fn()) > first

    return probe


class TimedPool(PoolSignal):
    """The pool signal, noting when each of its reads finished."""

    def __init__(self, inventory: Inventory, allocatable_bytes: int) -> None:
        super().__init__(inventory, allocatable_bytes)
        self.finished: list[float] = []

    async def read(self):  # type: ignore[no-untyped-def]
        reading = await super().read()
        self.finished.append(time.monotonic())
        return reading


BIG_MIB = 512
BIG_SETTINGS = Settings(
    default_container_size=Amount(cpu_millis=1000, memory_bytes=(BIG_MIB - 64) * MI),
    padding=Amount(cpu_millis=0, memory_bytes=64 * MI),
    domain_type="qemu",
    memory_stats_period_s=1,
    eviction=EvictionSettings(
        signal=PressureSignal.POOL, pressure_transition_period_s=60.0, sampling_interval_s=0.1
    ),
)


async def test_sampling_goes_on_while_a_save_is_written(guest_image: tuple[str, str]) -> None:
    """libvirtd holds a domain while it writes its save image (listing waits for it, up
    to seconds): the loop must keep sampling the other VMs meanwhile."""
    kernel, initrd = guest_image
    namespace = f"pq-{uuidlib.uuid4().hex[:6]}"
    touched = {"BestEffort": BIG_MIB - 128, "Guaranteed": 32}
    async with Hypervisor(QEMU_URI) as hv:
        plans = {
            qos: plan_virtualpod(
                manifest(
                    qos.lower(),
                    namespace,
                    qos,
                    boot={
                        "kernel": {
                            "path": kernel,
                            "initrd": initrd,
                            "cmdline": f"console=ttyS0 quiet vp.touch={mib}",
                        }
                    },
                ),
                allowing(BIG_SETTINGS, kernel),
                cgroup_version=hv.cgroup_version,
            )
            for qos, mib in touched.items()
        }
        try:
            for vm in plans.values():
                await hv.ensure_defined(vm.domain_xml)
                await hv.start(vm.uuid)
            for qos, vm in plans.items():
                log = Path(vm.domain.console_log or "")
                wait_for(
                    guest_touched(log, touched[qos]),
                    timeout=150,
                    interval=0.5,
                    what=f"{vm.name} booted and filled {touched[qos]} MiB",
                )
            inventory = Inventory(hv, scope=lambda meta: meta.namespace == namespace)
            used = sum(d.rss_bytes or 0 for d in (await inventory.refresh()).values())
            pool = TimedPool(inventory, used + 50 * MI)  # 50Mi available: the big one goes
            reporter = TimedReporter()
            monitor = Monitor(hv, pool, reporter, BIG_SETTINGS, inventory=inventory)
            stop = asyncio.Event()
            task = asyncio.create_task(monitor.run(stop))
            try:
                await async_wait_for(_probe(lambda: reporter.names("suspended")), timeout=60)
            finally:
                stop.set()
                await asyncio.wait_for(task, 10)
                await monitor.idle()
            assert reporter.names("suspended") == ["besteffort"]
            issued = reporter.stamp("issued", "besteffort")
            released = reporter.stamp("released", "besteffort")
            during = [t for t in pool.finished if issued < t < released]
            ticks = [issued, *during, released]
            longest_gap = max(b - a for a, b in itertools.pairwise(ticks))
            print(
                f"\nsave {released - issued:.2f}s: {len(during)} samples meanwhile, "
                f"longest gap {longest_gap:.2f}s"
            )
            assert released - issued > 1.0, "save too short to tell"
            assert len(set(during)) >= 5
            # interval 0.1 s + listing and stats deadlines 0.25 s each + slack (stalls: 1.8-3 s)
            assert longest_gap < 1.0
        finally:
            for vm in plans.values():
                await hv.undefine(vm.uuid)
                Path(vm.domain.console_log or "").unlink(missing_ok=True)

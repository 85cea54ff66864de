"""The VM pool the demo puts under pressure: the monitor's own pool signal, with a knob.

memory.available = (pool - what a co-tenant holds) - the summed working sets of the
demo's running VMs, read from libvirt on every sample (`PoolSignal`): a saved VM's
memory leaves the sum, a resumed one comes back into it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace

from virtualpod.core.quantity import GIB, MIB
from virtualpod.core.spec import SuspendMode
from virtualpod.demo.output import Clock, DemoError
from virtualpod.libvirt.hypervisor import Hypervisor, SuspendResult, VMMemory
from virtualpod.pressure.monitor import Inventory, PoolSignal, SignalReading
from virtualpod.testing import async_wait_for

#: The pool's allocatable until the demo sizes it from what its VMs use.
PLENTY_BYTES = 8 * GIB
#: How long the demo waits for the monitor's next sample.
SAMPLE_TIMEOUT_S = 60.0
#: The VMs' usage has settled when it moved at most this much within the window.
SETTLED_BYTES = 2 * MIB
SETTLE_WINDOW_S = 1.0
SETTLE_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class PoolReading:
    """One sample of the pool signal; times are the demo clock's."""

    started: float
    finished: float
    allocatable_bytes: int
    used_bytes: int
    #: UUIDs of the VMs whose working sets the sample counted (the running ones).
    counted: frozenset[str]

    @property
    def available_bytes(self) -> int:
        return self.allocatable_bytes - self.used_bytes


class DemoPool(PoolSignal):
    """`PoolSignal` with the one knob the demo turns: a co-tenant taking part of the pool.

    The monitor samples in the operator's thread; the demo turns the knob from its own.
    A new setting takes effect at the start of the next sample, so each sample reads one
    allocatable. Every reading is kept, so the timeline can show the signal before and
    after each action.
    """

    def __init__(self, inventory: Inventory, clock: Clock) -> None:
        super().__init__(inventory, PLENTY_BYTES)
        self.clock = clock
        #: (pool, what the co-tenant holds of it), as the demo last set them.
        self.setting = (PLENTY_BYTES, 0)
        self.readings: list[PoolReading] = []

    @property
    def pool_bytes(self) -> int:
        return self.setting[0]

    @property
    def co_tenant_bytes(self) -> int:
        return self.setting[1]

    def set_pool(self, pool_bytes: int, co_tenant_bytes: int = 0) -> None:
        self.setting = (pool_bytes, co_tenant_bytes)

    def co_tenant_takes(self, co_tenant_bytes: int) -> None:
        self.set_pool(self.pool_bytes, co_tenant_bytes)

    async def read(self) -> SignalReading:
        started = self.clock.now()
        pool_bytes, co_tenant_bytes = self.setting
        allocatable = self.allocatable_bytes = pool_bytes - co_tenant_bytes
        reading = await super().read()
        used = allocatable - reading.available_bytes
        counted = reading.counted or frozenset()
        self.readings.append(PoolReading(started, self.clock.now(), allocatable, used, counted))
        return reading

    @property
    def latest(self) -> PoolReading:
        if not self.readings:
            raise DemoError("the pressure monitor has not sampled the pool yet")
        return self.readings[-1]

    def before(
        self, at: float, uuid: str | None = None, counted: bool = True
    ) -> PoolReading | None:
        """The last sample read completely before `at`; with `uuid`, the last one that
        still saw that VM as it was before the action (`counted` or not)."""
        done = [
            r
            for r in self.readings
            if r.finished <= at and (uuid is None or (uuid in r.counted) == counted)
        ]
        return done[-1] if done else None

    def after(self, at: float, uuid: str | None = None, counted: bool = True) -> PoolReading | None:
        """The first sample whose reading started after `at`; with `uuid`, the first one
        that saw that VM as the action left it (`counted` or not): a listing that lags
        behind libvirt can carry the VM's old state into a sample or two."""
        return next(
            (
                r
                for r in self.readings
                if r.started >= at and (uuid is None or (uuid in r.counted) == counted)
            ),
            None,
        )

    async def sample_after(
        self, at: float, uuid: str | None = None, counted: bool = True
    ) -> PoolReading:
        async def sampled() -> PoolReading | None:
            return self.after(at, uuid, counted)

        return await async_wait_for(
            sampled, SAMPLE_TIMEOUT_S, interval=0.1, what="the monitor's next sample"
        )

    async def settled_usage(self) -> PoolReading:
        """A sample taken once the VMs' working sets stopped growing (guests just booted).

        A pressure step is sized from what the VMs use; if they were still growing, the
        growth alone would need more VMs suspended than the step means to.
        """
        deadline = self.clock.now() + SETTLE_TIMEOUT_S
        previous = await self.sample_after(self.clock.now())
        while True:
            current = await self.sample_after(self.clock.now() + SETTLE_WINDOW_S)
            if abs(current.used_bytes - previous.used_bytes) <= SETTLED_BYTES:
                return current
            if self.clock.now() > deadline:
                return current
            previous = current


class ConfiguredMemoryHypervisor(Hypervisor):
    """The libvirt shell, taking a VM's working set to be its configured memory.

    For libvirt's test driver, whose memory stats are canned (every domain reports the
    same 1Gi RSS): without RSS the inventory counts a VM's configured memory, and a Save
    releases exactly that, so the signal and the monitor's accounting agree.
    """

    measurement = "configured VM memory (test driver: its memory stats are canned)"

    async def all_memory_stats(self, uuids: Collection[str] | None = None) -> dict[str, VMMemory]:
        stats = await super().all_memory_stats(uuids)
        return {uuid: replace(memory, rss_bytes=None) for uuid, memory in stats.items()}

    async def suspend(self, uuid: str, mode: SuspendMode) -> SuspendResult:
        memory = (await self.lookup(uuid)).memory_bytes
        result = await super().suspend(uuid, mode)
        released = mode is SuspendMode.SAVE and result.changed
        return replace(result, rss_before_bytes=memory, rss_after_bytes=0 if released else memory)


#: How the working sets are measured on real libvirt + QEMU (the real shell as it is).
MEASURED_RSS = "RSS of the QEMU processes"

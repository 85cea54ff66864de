"""Pressure controller benchmark; prints JSON.

* reaction: from the signal crossing the hard threshold to the suspend being issued
  (`vm_suspending`) and to the memory being released (`vm_suspended`, after the Save),
  p50/p99, for fleets of 10, 100 and 1000 VMs on libvirt's test driver with an injected
  signal and the default settings (sampling every 500 ms). The crossing happens at a
  random moment relative to the sampling tick, as it would on a host.
* decision: time of one `pressure.decide` over 10 000 VMs, p50/p99 over `--runs` runs
  after a warm-up. Each run starts from a `gc.collect()` and runs with the collector
  off, so the figures are the policy's own work and not a collection of whatever the
  process allocated before; `with_gc` repeats the hard case with the collector on.

Usage: python bench/pressure_bench.py [--trials N] [--sizes 10,100,1000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.pressure.harness import MI, RecordingReporter, ScriptedSignal, plan

from virtualpod.core.qos import QOSClass
from virtualpod.core.settings import Settings
from virtualpod.libvirt.hypervisor import Hypervisor
from virtualpod.pressure.monitor import Inventory, Monitor
from virtualpod.pressure.policy import PressureState, Sample, VMView, decide
from virtualpod.testing.measure import percentile

SETTINGS = Settings()
CLASSES = ("BestEffort", "Burstable", "Guaranteed")


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 0.50) * 1000, 2),
        "p99_ms": round(percentile(values, 0.99) * 1000, 2),
        "max_ms": round(max(values) * 1000, 2),
    }


class TimedReporter(RecordingReporter):
    """Stamps the first suspend issued and the first suspend done after `armed`."""

    def __init__(self) -> None:
        super().__init__()
        self.issued: float | None = None
        self.released: float | None = None

    async def vm_suspending(self, vm: VMView, reason: str, message: str) -> None:
        if self.issued is None:
            self.issued = time.perf_counter()
        await super().vm_suspending(vm, reason, message)

    async def vm_suspended(self, vm: VMView, reason: str, message: str) -> None:
        if self.released is None:
            self.released = time.perf_counter()
        await super().vm_suspended(vm, reason, message)


async def reaction(hv: Hypervisor, size: int, trials: int) -> dict[str, object]:
    namespace = f"bench-{size}-{random.randrange(1 << 30):x}"
    plans = [plan(f"vm{i:04d}", namespace, CLASSES[i % 3], SETTINGS) for i in range(size)]
    t0 = time.perf_counter()
    for vm in plans:
        await hv.ensure_defined(vm.domain_xml)
        await hv.start(vm.uuid)
    setup = time.perf_counter() - t0
    inventory = Inventory(hv, scope=lambda meta: meta.namespace == namespace)
    await inventory.refresh()  # metadata is cached across samples in production too
    issued, released, steps = [], [], []
    interval = SETTINGS.eviction.sampling_interval_s
    try:
        for _ in range(trials):
            signal = ScriptedSignal(4000 * MI)
            reporter = TimedReporter()
            monitor = Monitor(hv, signal, reporter, SETTINGS, inventory=inventory)
            stop = asyncio.Event()
            task = asyncio.create_task(monitor.run(stop))
            while signal.reads < 1:
                await asyncio.sleep(0.01)
            await asyncio.sleep(random.uniform(0, interval))
            signal.available_bytes = 50 * MI  # crosses the 100Mi hard threshold now
            crossed = time.perf_counter()
            while reporter.released is None:
                await asyncio.sleep(0.002)
            stop.set()
            await task
            await monitor.idle()
            assert reporter.issued is not None
            issued.append(reporter.issued - crossed)
            released.append(reporter.released - crossed)
            s0 = time.perf_counter()
            await monitor.step()  # one full sample + decision at this fleet size
            steps.append(time.perf_counter() - s0)
            for vm in plans:  # back to all running for the next trial
                await hv.resume(vm.uuid)
    finally:
        for vm in plans:
            await hv.undefine(vm.uuid)
    return {
        "vms": size,
        "trials": trials,
        "to_suspend_issued": summary(issued),
        "to_memory_released": summary(released),
        "sample_and_decide": summary(steps),
        "setup_s": round(setup, 2),
    }


def timed_decisions(
    fleet: list[VMView], available: int, runs: int, *, collector: bool
) -> tuple[list[float], int]:
    """Seconds per `decide` and how many VMs it suspended (see the module docstring)."""
    times = []
    suspended = 0
    for run in range(runs + 10):  # the first 10 warm caches up and are dropped
        gc.collect()
        if not collector:
            gc.disable()
        try:
            t0 = time.perf_counter()
            decision = decide(PressureState(), Sample(available, 0.0), fleet, SETTINGS.eviction)
            elapsed = time.perf_counter() - t0
        finally:
            gc.enable()
        if run >= 10:
            times.append(elapsed)
        suspended = len(decision.suspend)
    return times, suspended


def decision_time(size: int = 10_000, runs: int = 500) -> dict[str, object]:
    rng = random.Random(7)
    qos = list(QOSClass)
    fleet = []
    for i in range(size):
        request = rng.randrange(64, 1024) * MI
        usage = rng.randrange(64, 2048) * MI
        fleet.append(
            VMView(
                key=f"vm{i:05d}",
                namespace="bench",
                name=f"vm{i:05d}",
                qos_class=rng.choice(qos),
                priority=rng.randrange(4),
                memory_request_bytes=request,
                usage_bytes=usage,
                memory_bytes=usage,
            )
        )
    results: dict[str, object] = {}
    for label, available in (("hard-50Mi", 50 * MI), ("deficit-100Gi", -100 * 1024 * MI)):
        times, suspended = timed_decisions(fleet, available, runs, collector=False)
        results[label] = {**summary(times), "suspended": suspended}
    with_gc, _ = timed_decisions(fleet, 50 * MI, runs, collector=True)
    return {"vms": size, "runs": runs, "cases": results, "with_gc": {"hard-50Mi": summary(with_gc)}}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--runs", type=int, default=500, help="decisions per case")
    args = parser.parse_args()
    out: dict[str, object] = {
        "settings": {
            "sampling_interval_s": SETTINGS.eviction.sampling_interval_s,
            "hard_memory_available": "100Mi",
            "libvirt": "test:///default",
        },
        "decision": decision_time(runs=args.runs),
    }
    async with Hypervisor("test:///default") as hv:
        out["reaction"] = [
            await reaction(hv, int(size), args.trials) for size in args.sizes.split(",")
        ]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    asyncio.run(main())

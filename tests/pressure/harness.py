"""Test-side parts for the monitor: an injected signal, a recording reporter, a clock.

These are real implementations of the monitor's ports (`SignalSource`, `Reporter`), not
stand-ins for our own code: the loop, the policy and libvirt underneath are the real ones.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tests.waiting import async_wait_for
from virtualpod.core.plan import VMPlan, plan_virtualpod
from virtualpod.core.settings import Settings
from virtualpod.pressure.monitor import PressureStatus, SignalReading
from virtualpod.pressure.policy import VMView

MI = 1024**2


class ScriptedSignal:
    """memory.available as the test sets it."""

    def __init__(self, available_bytes: int, psi: float | None = None) -> None:
        self.available_bytes = available_bytes
        self.psi = psi
        self.reads = 0

    async def read(self) -> SignalReading:
        self.reads += 1
        return SignalReading(self.available_bytes, self.psi, "test")


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Call:
    what: str
    vm: VMView | None = None
    reason: str = ""
    message: str = ""
    extra: Any = None


@dataclass
class RecordingReporter:
    """Keeps every call in order; what the operator's reporter would turn into status."""

    calls: list[Call] = field(default_factory=list)

    async def vm_suspending(self, vm: VMView, reason: str, message: str) -> None:
        self.calls.append(Call("suspending", vm, reason, message))

    async def vm_suspended(self, vm: VMView, reason: str, message: str) -> None:
        self.calls.append(Call("suspended", vm, reason, message))

    async def vm_resumed(self, vm: VMView, message: str) -> None:
        self.calls.append(Call("resumed", vm, "", message))

    async def vm_ballooned(self, vm: VMView, target_bytes: int, message: str) -> None:
        self.calls.append(Call("ballooned", vm, "", message, target_bytes))

    async def action_failed(self, vm: VMView, action: str, message: str) -> None:
        self.calls.append(Call("failed", vm, action, message))

    async def pressure_changed(self, status: PressureStatus) -> None:
        self.calls.append(Call("pressure", None, status.reason, "", status))

    async def guaranteed_only_pressure(self, message: str) -> None:
        self.calls.append(Call("guaranteed-only", None, "", message))

    def names(self, what: str) -> list[str]:
        return [c.vm.name for c in self.calls if c.what == what and c.vm is not None]

    def of(self, what: str) -> list[Call]:
        return [c for c in self.calls if c.what == what]


def manifest(name: str, namespace: str, qos: str, **spec: Any) -> dict[str, Any]:
    """One container per pod; memory small so real guests stay cheap."""
    resources = {
        "BestEffort": {},
        "Burstable": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1"}},
        "Guaranteed": {
            "requests": {"cpu": "1", "memory": "192Mi"},
            "limits": {"cpu": "1", "memory": "192Mi"},
        },
    }[qos]
    return {
        "apiVersion": "virtualpod.dev/v1alpha1",
        "kind": "VirtualPod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "app", "image": "app", "resources": resources}], **spec},
    }


def unique_namespace() -> str:
    return f"pressure-{uuidlib.uuid4().hex[:8]}"


def plan(name: str, namespace: str, qos: str, settings: Settings, **spec: Any) -> VMPlan:
    return plan_virtualpod(manifest(name, namespace, qos, **spec), settings)


class StraddlingSignal(ScriptedSignal):
    """A read that begins before a Save finishes and returns after it (armed per read).

    `straddle(until)`: the next read takes the value it was set to (the pre-save level),
    then waits until `until()` is true (the monitor has settled the suspend) before
    returning it: what a slow sample does when a Save lands while it is being read.
    """

    def __init__(self, available_bytes: int) -> None:
        super().__init__(available_bytes)
        self._until: Callable[[], object] | None = None

    def straddle(self, until: Callable[[], object]) -> None:
        self._until = until

    async def read(self) -> SignalReading:
        reading = await super().read()
        until, self._until = self._until, None
        if until is not None:
            await async_wait_for(as_probe(until), what="the suspend to settle during the read")
        return reading


def as_probe(condition: Callable[[], object]) -> Callable[[], Awaitable[object]]:
    async def probe() -> object:
        return condition()

    return probe

"""The demo's timeline: every suspend and resume as the monitor reports it, printed live,
kept, and printed again at the end with the pool signal around each, then a summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TextIO

from virtualpod.core.qos import QOSClass
from virtualpod.core.quantity import format_bytes
from virtualpod.core.status import Suspension
from virtualpod.demo.output import Clock, say, table
from virtualpod.demo.pool import DemoPool, PoolReading
from virtualpod.kube.context import AgentContext
from virtualpod.kube.pressure_reporter import StatusReporter
from virtualpod.pressure.monitor import PressureStatus, mib
from virtualpod.pressure.policy import VMView


@dataclass
class Action:
    """A line of the timeline: a suspend or resume, or a step of the co-tenant."""

    at: float
    what: str  # "suspended" | "resumed" | "pressure"
    name: str
    qos: QOSClass | None
    message: str
    #: The VM's domain UUID; None for a step of the co-tenant.
    uuid: str | None = None


@dataclass
class Outcome:
    """What the summary reports and the exit code checks."""

    created: list[QOSClass] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    guaranteed_suspended: bool = False
    pool: DemoPool | None = None
    domains_left: int | None = None
    running_left: int | None = None
    #: What the workload VM did (`demo.workload`).
    workload: str = "not shown"


def signal_before(pool: DemoPool, action: Action) -> PoolReading | None:
    """The last sample before the action took effect: for a VM, the last one that still
    saw it as it was (running before a suspend, not running before a resume)."""
    return pool.before(action.at, action.uuid, counted=action.what == "suspended")


def signal_after(pool: DemoPool, action: Action) -> PoolReading | None:
    """The first sample after the action took effect: for a VM, the first one that saw
    it as the action left it."""
    return pool.after(action.at, action.uuid, counted=action.what == "resumed")


class DemoReporter:
    """`monitor.Reporter`: prints the timeline live and keeps it; forwards to the operator.

    The operator's own `StatusReporter` writes status and Events, so `kubectl get vpod`
    and `kubectl describe vpod` show what the timeline shows.
    """

    def __init__(self, ctx: AgentContext, clock: Clock, out: TextIO) -> None:
        self.ctx = ctx
        self.status = StatusReporter(ctx)
        self.clock = clock
        self.out = out
        self.actions: list[Action] = []
        self.guaranteed_only = False
        #: False until the demo has sized the pool: before that the signal means nothing
        self.narrating = False
        self._pressure: tuple[bool, str] | None = None

    def _line(self, text: str) -> None:
        say(self.out, f"{self.clock.stamp()} {text}")

    def _record(self, what: str, vm: VMView, message: str) -> None:
        self.actions.append(Action(self.clock.now(), what, vm.name, vm.qos_class, message, vm.key))

    def co_tenant(self, at: float, message: str) -> None:
        self.actions.append(Action(at, "pressure", "-", None, message))

    async def vm_suspending(self, vm: VMView, reason: str, message: str) -> None:
        self.ctx.suspensions[vm.key] = Suspension(vm.suspend_mode, reason, message)
        self._line(
            f"suspending {vm.name} ({vm.qos_class.value}, priority {vm.priority}, "
            f"uses {mib(vm.memory_bytes)}) with {vm.suspend_mode.value}: {message}"
        )

    async def vm_suspended(self, vm: VMView, reason: str, message: str) -> None:
        self._record("suspended", vm, message)
        self._line(f"SUSPENDED {vm.name} ({vm.qos_class.value}) -- {reason}: {message}")
        await self.status.suspended(vm.key, vm.suspend_mode, reason, message)

    async def vm_resumed(self, vm: VMView, message: str) -> None:
        self._record("resumed", vm, message)
        self._line(f"RESUMED {vm.name} ({vm.qos_class.value}) -- {message}")
        await self.status.resumed(vm.key, message)

    async def vm_ballooned(self, vm: VMView, target_bytes: int, message: str) -> None:
        self._line(f"ballooned {vm.name} to {format_bytes(target_bytes)}: {message}")

    async def action_failed(self, vm: VMView, action: str, message: str) -> None:
        self._line(f"FAILED to {action} {vm.name}: {message}")
        await self.status.failed(vm.key, f"{action} failed: {message}")

    async def pressure_changed(self, status: PressureStatus) -> None:
        if not self.narrating or (status.under_pressure, status.reason) == self._pressure:
            return
        self._pressure = (status.under_pressure, status.reason)
        state = "under pressure" if status.under_pressure else "no pressure"
        self._line(
            f"monitor: {state} ({status.reason}), {status.signal} memory.available "
            f"{mib(status.available_bytes)}, threshold {mib(status.threshold_bytes)}"
        )

    async def guaranteed_only_pressure(self, message: str) -> None:
        self.guaranteed_only = True
        self._line(f"only Guaranteed VMs left: {message}")


def _classes(actions: list[Action]) -> str:
    return ", ".join(a.qos.value for a in actions if a.qos is not None) or "none"


def suspended_per_step(actions: list[Action]) -> list[list[Action]]:
    """The suspensions that followed each step of the co-tenant."""
    steps: list[list[Action]] = []
    for action in actions:
        if action.what == "pressure":
            steps.append([])
        elif action.what == "suspended" and steps:
            steps[-1].append(action)
    return steps


def summary(outcome: Outcome) -> list[str]:
    suspended = [a for a in outcome.actions if a.what == "suspended"]
    resumed = [a for a in outcome.actions if a.what == "resumed"]
    guaranteed = [a for a in suspended if a.qos is QOSClass.GUARANTEED]
    return [
        "created: " + (", ".join(q.value for q in outcome.created) or "none"),
        "suspend order: " + _classes(suspended),
        "suspended per co-tenant step: "
        + " | ".join(_classes(step) for step in suspended_per_step(outcome.actions)),
        "Guaranteed suspended: " + ("never" if not guaranteed else f"{len(guaranteed)} time(s)"),
        "resumed: " + _classes(resumed),
        f"domains left: {outcome.domains_left}",
        f"left running: {outcome.running_left}",
        f"workload: {outcome.workload}",
    ]


def _signal_around(pool: DemoPool | None, action: Action) -> str:
    if pool is None:
        return "-"
    before, after = signal_before(pool, action), signal_after(pool, action)
    return (
        f"{mib(before.available_bytes if before else None)} -> "
        f"{mib(after.available_bytes if after else None)}"
    )


def print_timeline(outcome: Outcome, out: TextIO) -> None:
    """Every action with the pool signal of the last sample before it and the first after."""
    rows: list[tuple[str, ...]] = [("TIME", "EVENT", "VM", "QOS", "AVAILABLE", "WHY")]
    for action in sorted(outcome.actions, key=lambda a: a.at):
        co_tenant = action.what == "pressure"
        rows.append(
            (
                f"{action.at:.1f}s",
                action.message if co_tenant else action.what,
                action.name,
                action.qos.value if action.qos is not None else "-",
                _signal_around(outcome.pool, action),
                "" if co_tenant else action.message,
            )
        )
    say(out, table(rows))
    say(
        out,
        "(AVAILABLE: pool memory.available of the last sample before the action took effect "
        "-> of the first sample that shows it)",
    )

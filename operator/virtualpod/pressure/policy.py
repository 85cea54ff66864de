"""Memory-pressure policy: kubelet eviction, made VM-aware. Pure: time is an argument.

Vocabulary
    *signal*      memory.available in bytes (host, or VM pool: allocatable - working sets).
    *threshold*   the hard threshold, or the soft one once it has held for its grace period.
    *reclaim*     what suspending a VM gives back: its RSS for `Save`, nothing for `Pause`
                  (a paused QEMU keeps every byte of guest RAM).
    *tier*        (QoS class, priority). Tiers are strictly ordered: no VM of a higher tier
                  is suspended while a VM of a lower tier runs, and Guaranteed VMs are never
                  suspended for host pressure.

Minimality (what `pick_victims` promises)
    Among all victim sets that respect the strict tier order, the one with the fewest VMs
    that covers the needed reclaim. Such a set always takes every running VM of the tiers
    below the *last tier needed* (the order forces it), and within that last tier takes a
    minimum-count subset covering the remainder. Among minimum-count subsets it prefers the
    one first in rank order (larger usage above request first, then key), so the choice is
    deterministic. Priority is part of the strict order on purpose: a user who raises a
    VM's priority never sees it suspended to spare a lower-priority VM of its class.
    If even every non-Guaranteed VM cannot cover the need, all of them are chosen and the
    shortfall is reported.

Anti-flapping (kubelet's pressure-transition period)
    Once a threshold is met the host is "under pressure" until the signal has stayed clear
    for the whole transition period. Suspensions happen only while a threshold is met
    *now*; resumptions only when not under pressure, one VM at a time, highest rank first,
    and only if `available - vm memory >= threshold + margin`, so the sample after a resume
    does not meet the threshold again.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from virtualpod.core.qos import QOSClass
from virtualpod.core.settings import EvictionSettings
from virtualpod.core.spec import SuspendMode

__all__ = [
    "Balloon",
    "Decision",
    "PressureState",
    "Sample",
    "VMState",
    "VMView",
    "Victims",
    "as_suspended",
    "balloon_targets",
    "decide",
    "effective_threshold",
    "pick_resumptions",
    "pick_victims",
    "reclaim_needed",
    "resume_threshold",
    "step_pressure",
    "suspend_order",
]


class VMState(StrEnum):
    RUNNING = "running"
    SUSPENDING = "suspending"
    SUSPENDED = "suspended"
    RESUMING = "resuming"


@dataclass(frozen=True, slots=True)
class VMView:
    """One VM as the policy sees it; `key` is the libvirt UUID.

    `usage_bytes` is the working set (ranks VMs by usage above request);
    `memory_bytes` is what the VM holds while running (~QEMU RSS): what a Save releases
    and, for a suspended VM, what a resume takes back.
    """

    key: str
    namespace: str
    name: str
    qos_class: QOSClass
    priority: int
    memory_request_bytes: int
    usage_bytes: int
    memory_bytes: int
    state: VMState = VMState.RUNNING
    suspend_mode: SuspendMode = SuspendMode.SAVE

    @property
    def reclaim_bytes(self) -> int:
        """What suspending it frees: nothing for Pause, by design of `virDomainSuspend`."""
        return self.memory_bytes if self.suspend_mode is SuspendMode.SAVE else 0

    @property
    def usage_above_request_bytes(self) -> int:
        return self.usage_bytes - self.memory_request_bytes

    @property
    def tier(self) -> tuple[int, int]:
        return (_CLASS_RANK[self.qos_class], self.priority)

    @property
    def display(self) -> str:
        return f"{self.namespace}/{self.name}"


_CLASS_RANK = {qos: qos.rank for qos in QOSClass}  # `QOSClass.rank`, looked up fast
#: Classes host pressure may suspend, lowest rank first.
_SUSPENDABLE = tuple(
    sorted((q for q in QOSClass if q is not QOSClass.GUARANTEED), key=_CLASS_RANK.__getitem__)
)


def _rank_key(vm: VMView) -> tuple[int, int, int, str]:
    return (
        _CLASS_RANK[vm.qos_class],
        vm.priority,
        vm.memory_request_bytes - vm.usage_bytes,
        vm.key,
    )


def suspend_order(vms: Iterable[VMView]) -> list[VMView]:
    """All VMs, first to be suspended first: QoS class, priority, usage above request."""
    return sorted(vms, key=_rank_key)


@dataclass(frozen=True, slots=True)
class Victims:
    """`shortfall_bytes` > 0: even all suspendable VMs do not cover the need."""

    vms: tuple[VMView, ...]
    reclaim_bytes: int
    shortfall_bytes: int


def pick_victims(vms: Iterable[VMView], needed_bytes: int) -> Victims:
    """The fewest running non-Guaranteed VMs, in strict tier order, that free `needed_bytes`.

    See the module docstring for the precise meaning of "fewest".
    """
    if needed_bytes <= 0:
        return Victims((), 0, 0)
    chosen: list[VMView] = []
    covered = 0
    for tier in _suspendable_tiers(vms):  # only the tiers actually reached get sorted
        members = sorted(tier, key=_rank_key)
        tier_reclaim = sum([vm.reclaim_bytes for vm in members])
        if covered + tier_reclaim < needed_bytes:
            chosen.extend(members)
            covered += tier_reclaim
            continue
        subset = _fewest_covering(members, needed_bytes - covered)
        chosen.extend(subset)
        covered += sum([vm.reclaim_bytes for vm in subset])
        return Victims(tuple(chosen), covered, 0)
    return Victims(tuple(chosen), covered, needed_bytes - covered)


def _suspendable_tiers(vms: Iterable[VMView]) -> Iterator[list[VMView]]:
    """Running non-Guaranteed VMs grouped by tier, lowest tier first, members unsorted.

    One pass that allocates nothing per VM (no key tuple, no fresh list per lookup):
    at 10 000 VMs the garbage of the naive grouping was what made decisions jitter.
    """
    by_class: dict[QOSClass, defaultdict[int, list[VMView]]] = {
        qos: defaultdict(list) for qos in _SUSPENDABLE
    }
    running = VMState.RUNNING
    for vm in vms:
        if vm.state is running:
            by_priority = by_class.get(vm.qos_class)
            if by_priority is not None:
                by_priority[vm.priority].append(vm)
    for qos in _SUSPENDABLE:
        by_priority = by_class[qos]
        for priority in sorted(by_priority):
            yield by_priority[priority]


def _fewest_covering(ranked: Sequence[VMView], remainder: int) -> list[VMView]:
    """Minimum-count subset of `ranked` with reclaim >= remainder, first in rank order.

    The caller guarantees the whole sequence covers `remainder`. The minimum count k is
    that of the k largest reclaims. Then walk in rank order and take a VM whenever a cover
    of size k can still be completed with it: the lexicographically first k-subset.
    """
    if remainder <= 0:
        return []
    sizes = sorted((vm.reclaim_bytes for vm in ranked), reverse=True)
    count, total = 0, 0
    while total < remainder:
        total += sizes[count]
        count += 1
    prefix, prefix_total = 0, 0
    while prefix_total < remainder:  # fast path: the first `count` in rank order suffice
        prefix_total += ranked[prefix].reclaim_bytes
        prefix += 1
    if prefix == count:
        return list(ranked[:count])
    rest = sorted(vm.reclaim_bytes for vm in ranked)  # ascending: reclaims not yet passed
    chosen: list[VMView] = []
    covered = 0
    for vm in ranked:
        slots = count - len(chosen)
        if slots == 0:
            break
        del rest[bisect.bisect_left(rest, vm.reclaim_bytes)]
        best_rest = sum(rest[len(rest) - (slots - 1) :]) if slots > 1 else 0
        if covered + vm.reclaim_bytes + best_rest >= remainder:
            chosen.append(vm)
            covered += vm.reclaim_bytes
    return chosen


def resume_threshold(settings: EvictionSettings) -> int:
    """The signal level a resume must leave intact: the highest configured threshold."""
    soft = settings.soft_memory_available_bytes or 0
    return max(settings.hard_memory_available_bytes, soft)


def pick_resumptions(
    suspended: Iterable[VMView], available_bytes: int, threshold_bytes: int, margin_bytes: int
) -> list[VMView]:
    """At most one VM: the highest-ranked suspended one, if resuming it leaves headroom.

    Strict reverse order: if the highest-ranked VM does not fit, none is resumed (resuming a
    lower one would leave a higher-tier VM suspended while a lower-tier one runs).
    A paused (Pause-mode) VM takes nothing back, so it always fits.
    """
    waiting = [vm for vm in suspended if vm.state is VMState.SUSPENDED]
    if not waiting:
        return []
    head = max(waiting, key=_rank_key)  # the exact reverse of the suspend order
    if available_bytes - head.reclaim_bytes >= threshold_bytes + margin_bytes:
        return [head]
    return []


@dataclass(frozen=True, slots=True)
class Balloon:
    vm: VMView
    target_bytes: int

    @property
    def reclaim_bytes(self) -> int:
        return max(0, self.vm.usage_bytes - self.target_bytes)


def balloon_targets(vms: Iterable[VMView], needed_bytes: int) -> list[Balloon]:
    """Optional first step: shrink running Burstable VMs above their request to it.

    In rank order until the estimated reclaim covers the need. A guest may not give all
    of it back, which is why the shell only credits it for a short while.
    """
    plan: list[Balloon] = []
    covered = 0
    for vm in suspend_order(vm for vm in vms if _balloonable(vm)):  # filter, then sort
        if covered >= needed_bytes:
            break
        balloon = Balloon(vm, vm.memory_request_bytes)
        plan.append(balloon)
        covered += balloon.reclaim_bytes
    return plan


def _balloonable(vm: VMView) -> bool:
    return (
        vm.state is VMState.RUNNING
        and vm.qos_class is QOSClass.BURSTABLE
        and vm.memory_request_bytes > 0
        and vm.usage_above_request_bytes > 0
    )


# ----------------------------------------------------------------- pressure state


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of the signal; `at` is a monotonic time in seconds."""

    available_bytes: int
    at: float
    psi_some_avg10: float | None = None


@dataclass(frozen=True, slots=True)
class PressureState:
    """kubelet's bookkeeping: when each threshold was first/last seen met.

    `hard_met`/`soft_met`/`psi_met` describe the latest sample; `under_pressure` stays
    true until no threshold has been met for the whole transition period.
    """

    under_pressure: bool = False
    hard_met: bool = False
    soft_met: bool = False
    psi_met: bool = False
    soft_since: float | None = None
    last_met_at: float | None = None
    available_bytes: int | None = None

    @property
    def threshold_met(self) -> bool:
        return self.hard_met or self.soft_met or self.psi_met

    @property
    def reason(self) -> str:
        if self.hard_met:
            return "hard threshold"
        if self.soft_met:
            return "soft threshold"
        if self.psi_met:
            return "PSI"
        return "transition period" if self.under_pressure else "none"


def step_pressure(
    state: PressureState, sample: Sample, settings: EvictionSettings
) -> PressureState:
    """Fold one sample into the state (kubelet `thresholdsMet` + transition period)."""
    hard = sample.available_bytes < settings.hard_memory_available_bytes
    soft_threshold = settings.soft_memory_available_bytes
    soft_below = soft_threshold is not None and sample.available_bytes < soft_threshold
    soft_since: float | None = None
    if soft_below:
        soft_since = sample.at if state.soft_since is None else state.soft_since
    soft = soft_since is not None and sample.at - soft_since >= settings.soft_grace_period_s
    psi = (
        settings.psi_enabled
        and sample.psi_some_avg10 is not None
        and sample.psi_some_avg10 > settings.psi_some_avg10_threshold
    )
    met = hard or soft or psi
    last_met_at = sample.at if met else state.last_met_at
    under = met or (
        last_met_at is not None and sample.at - last_met_at < settings.pressure_transition_period_s
    )
    return PressureState(
        under_pressure=under,
        hard_met=hard,
        soft_met=soft,
        psi_met=psi,
        soft_since=soft_since,
        last_met_at=last_met_at,
        available_bytes=sample.available_bytes,
    )


def effective_threshold(state: PressureState, settings: EvictionSettings) -> int:
    """The signal level to restore now: the soft one when it (or PSI) triggered, else hard.

    PSI is an early warning: it enforces the soft threshold at once, without its grace
    period (hard + resume margin when no soft threshold is set).
    """
    hard = settings.hard_memory_available_bytes
    soft = settings.soft_memory_available_bytes
    if state.soft_met and soft is not None:
        return max(hard, soft)
    if state.psi_met:
        return max(hard, soft if soft is not None else hard + settings.resume_margin_bytes)
    return hard


def reclaim_needed(
    state: PressureState, settings: EvictionSettings, in_flight_bytes: int = 0
) -> int:
    """Bytes to free now: back above the threshold plus the minimum reclaim.

    `in_flight_bytes` is what suspensions already issued will free: counting it avoids
    suspending more VMs while a Save is still writing RAM to disk.
    """
    if not state.threshold_met or state.available_bytes is None:
        return 0
    threshold = effective_threshold(state, settings)
    needed = threshold + settings.minimum_reclaim_bytes - state.available_bytes
    return max(0, needed - max(0, in_flight_bytes))


@dataclass(frozen=True, slots=True)
class Decision:
    state: PressureState
    needed_bytes: int
    balloon: tuple[Balloon, ...]
    suspend: tuple[VMView, ...]
    resume: tuple[VMView, ...]
    shortfall_bytes: int

    @property
    def guaranteed_only(self) -> bool:
        """Pressure persists and nothing but Guaranteed VMs (or nothing) is left to suspend."""
        return self.shortfall_bytes > 0


def decide(
    state: PressureState,
    sample: Sample,
    vms: Sequence[VMView],
    settings: EvictionSettings,
    *,
    in_flight_bytes: int = 0,
    resume_allowed: bool = True,
) -> Decision:
    """One control step: new state, then what to balloon, suspend or resume.

    `resume_allowed` False while a suspension or resumption is still in flight (one step
    at a time: the next resume waits for a sample that includes the last one).
    """
    new = step_pressure(state, sample, settings)
    needed = reclaim_needed(new, settings, in_flight_bytes)
    balloons: list[Balloon] = []
    remaining = needed
    if needed > 0 and settings.balloon_burstable:
        balloons = balloon_targets(vms, needed)
        remaining = max(0, needed - sum(b.reclaim_bytes for b in balloons))
    victims = pick_victims(vms, remaining)
    resume: list[VMView] = []
    if not new.under_pressure and resume_allowed and needed == 0:
        resume = pick_resumptions(
            vms, sample.available_bytes, resume_threshold(settings), settings.resume_margin_bytes
        )
    return Decision(
        state=new,
        needed_bytes=needed,
        balloon=tuple(balloons),
        suspend=victims.vms,
        resume=tuple(resume),
        shortfall_bytes=victims.shortfall_bytes,
    )


def as_suspended(vm: VMView) -> VMView:
    """The view of `vm` after a suspension (for simulations and the shell's bookkeeping)."""
    return replace(vm, state=VMState.SUSPENDED)

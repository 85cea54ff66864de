"""The pressure policy, as the spec states it: tables first, then properties."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.pressure.fleet import BE, BU, GU, MI, fleets, vm
from virtualpod.core.settings import EvictionSettings
from virtualpod.core.spec import SuspendMode
from virtualpod.pressure.policy import (
    PressureState,
    Sample,
    VMState,
    VMView,
    balloon_targets,
    decide,
    pick_resumptions,
    pick_victims,
    reclaim_needed,
    resume_threshold,
    step_pressure,
    suspend_order,
)

DEFAULTS = EvictionSettings()


def keys(vms: object) -> list[str]:
    return [v.key for v in vms]  # type: ignore[attr-defined]


# ------------------------------------------------------------------------ ranking


def test_suspend_order_is_class_then_priority_then_usage_above_request() -> None:
    fleet = [
        vm("guaranteed", GU, request_mi=512, usage_mi=512),
        vm("burstable-high-prio", BU, priority=10, request_mi=100, usage_mi=900),
        vm("burstable-over", BU, request_mi=100, usage_mi=600),
        vm("burstable-under", BU, request_mi=500, usage_mi=200),
        vm("besteffort-prio", BE, priority=5, usage_mi=50),
        vm("besteffort-big", BE, usage_mi=700),
        vm("besteffort-small", BE, usage_mi=70),
    ]
    assert keys(suspend_order(fleet)) == [
        "besteffort-big",
        "besteffort-small",
        "besteffort-prio",
        "burstable-over",
        "burstable-under",
        "burstable-high-prio",
        "guaranteed",
    ]


def test_ties_are_broken_by_key_so_the_order_is_stable() -> None:
    fleet = [vm("b"), vm("c"), vm("a")]
    assert keys(suspend_order(fleet)) == ["a", "b", "c"]


# ------------------------------------------------------------------------ victims


@pytest.mark.parametrize(
    ("fleet", "needed_mi", "expected", "shortfall_mi"),
    [
        pytest.param([vm("be", BE), vm("bu", BU, request_mi=50)], 0, [], 0, id="nothing needed"),
        pytest.param(
            [vm("bu", BU, request_mi=50, usage_mi=900), vm("be", BE, usage_mi=100)],
            50,
            ["be"],
            0,
            id="BestEffort first even if a Burstable VM is bigger",
        ),
        pytest.param(
            [vm("be", BE, usage_mi=100), vm("bu", BU, request_mi=50, usage_mi=900)],
            300,
            ["be", "bu"],
            0,
            id="a Burstable VM only once every BestEffort VM is suspended",
        ),
        pytest.param(
            [vm("be1", BE, usage_mi=100), vm("be2", BE, usage_mi=100), vm("be3", BE, usage_mi=500)],
            400,
            ["be3"],
            0,
            id="fewest VMs within the last class needed",
        ),
        pytest.param(
            [vm("be1", BE, usage_mi=300), vm("be2", BE, usage_mi=300), vm("be3", BE, usage_mi=200)],
            250,
            ["be1"],
            0,
            id="among equally few, the first in rank order",
        ),
        pytest.param(
            [vm("low", BE, usage_mi=100), vm("high", BE, priority=1, usage_mi=5000)],
            500,
            ["low", "high"],
            0,
            id="priority is strict: a high-priority VM is never spared for a low one",
        ),
        pytest.param(
            [vm("g", GU, request_mi=4096, usage_mi=4096), vm("be", BE, usage_mi=100)],
            1000,
            ["be"],
            900,
            id="Guaranteed never, the shortfall is reported",
        ),
        pytest.param(
            [vm("paused", BE, usage_mi=800, mode=SuspendMode.PAUSE), vm("bu", BU, request_mi=1)],
            50,
            ["paused", "bu"],
            0,
            id="a Pause-mode VM frees nothing but still goes before a higher class",
        ),
        pytest.param(
            [vm("gone", BE, state=VMState.SUSPENDED), vm("bu", BU, request_mi=1)],
            50,
            ["bu"],
            0,
            id="already suspended VMs are not candidates",
        ),
    ],
)
def test_pick_victims(
    fleet: list[VMView], needed_mi: int, expected: list[str], shortfall_mi: int
) -> None:
    victims = pick_victims(fleet, needed_mi * MI)
    assert keys(victims.vms) == expected
    assert victims.shortfall_bytes == shortfall_mi * MI


def _order_respecting_covers(fleet: list[VMView], needed: int) -> list[tuple[VMView, ...]]:
    """Brute force: every victim set that respects the strict tier order and covers."""
    candidates = [v for v in fleet if v.state is VMState.RUNNING and v.qos_class is not GU]
    found = []
    for size in range(len(candidates) + 1):
        for subset in itertools.combinations(candidates, size):
            if sum(v.reclaim_bytes for v in subset) < needed:
                continue
            top = max((v.tier for v in subset), default=None)
            if top is None or all(v in subset for v in candidates if v.tier < top):
                found.append(subset)
    return found


@settings(max_examples=300, deadline=None)
@given(fleet=fleets(), needed_mi=st.integers(0, 6000))
def test_victims_are_a_minimum_order_respecting_cover(fleet: list[VMView], needed_mi: int) -> None:
    needed = needed_mi * MI
    victims = pick_victims(fleet, needed)
    chosen = set(victims.vms)
    # Guaranteed never; only running VMs.
    assert all(v.qos_class is not GU and v.state is VMState.RUNNING for v in chosen)
    # Strict order: nothing of a higher tier is chosen while a lower-tier VM stays running.
    running_left = [v for v in fleet if v not in chosen and v.state is VMState.RUNNING]
    for victim in chosen:
        assert all(v.tier >= victim.tier for v in running_left if v.qos_class is not GU)
    assert victims.reclaim_bytes == sum(v.reclaim_bytes for v in chosen)
    covers = _order_respecting_covers(fleet, needed)
    if not covers:
        # Not coverable: every suspendable VM is chosen, and the gap is reported.
        assert chosen == {v for v in fleet if v.qos_class is not GU}
        assert victims.shortfall_bytes == needed - victims.reclaim_bytes > 0
        return
    assert victims.shortfall_bytes == 0
    assert victims.reclaim_bytes >= needed
    fewest = min(len(c) for c in covers)
    assert len(chosen) == fewest
    # Among the fewest, the first in rank order.
    rank = {v.key: i for i, v in enumerate(suspend_order(fleet))}
    best = min(sorted(rank[v.key] for v in c) for c in covers if len(c) == fewest)
    assert sorted(rank[v.key] for v in chosen) == best


def test_pick_victims_handles_a_large_class_without_blowing_up() -> None:
    fleet = [vm(f"be{i:05d}", BE, usage_mi=1 + i % 7) for i in range(10_000)]
    victims = pick_victims(fleet, 20_000 * MI)
    assert victims.reclaim_bytes >= 20_000 * MI
    assert len(victims.vms) == len({v.key for v in victims.vms})


# ---------------------------------------------------------------------- resumption


@pytest.mark.parametrize(
    ("suspended", "available_mi", "expected"),
    [
        pytest.param([], 10_000, [], id="nothing suspended"),
        pytest.param(
            [vm("be", BE, usage_mi=100), vm("bu", BU, request_mi=50, usage_mi=100)],
            10_000,
            ["bu"],
            id="highest rank first, one at a time",
        ),
        pytest.param(
            [vm("be", BE, usage_mi=10), vm("bu", BU, request_mi=50, usage_mi=1000)],
            1100,
            [],
            id="no skipping: the small BestEffort waits for the Burstable",
        ),
        pytest.param(
            [vm("bu", BU, request_mi=50, usage_mi=1000)],
            100 + 64 + 1000,
            ["bu"],
            id="exactly threshold + margin + its memory is enough",
        ),
        pytest.param(
            [vm("bu", BU, request_mi=50, usage_mi=1000)],
            100 + 64 + 999,
            [],
            id="one MiB less is not",
        ),
        pytest.param(
            [vm("p", BE, usage_mi=4000, mode=SuspendMode.PAUSE)],
            100 + 64,
            ["p"],
            id="a paused VM takes nothing back",
        ),
    ],
)
def test_pick_resumptions(suspended: list[VMView], available_mi: int, expected: list[str]) -> None:
    waiting = [replace(v, state=VMState.SUSPENDED) for v in suspended]
    chosen = pick_resumptions(waiting, available_mi * MI, 100 * MI, 64 * MI)
    assert keys(chosen) == expected


def test_resume_threshold_is_the_highest_configured_one() -> None:
    assert resume_threshold(DEFAULTS) == 100 * MI
    assert resume_threshold(replace(DEFAULTS, soft_memory_available_bytes=300 * MI)) == 300 * MI


# -------------------------------------------------------------------- balloon step


def test_balloon_targets_burstable_vms_above_their_request_in_rank_order() -> None:
    fleet = [
        vm("be", BE, usage_mi=900),
        vm("bu-over", BU, request_mi=200, usage_mi=700),
        vm("bu-under", BU, request_mi=800, usage_mi=700),
        vm("bu-over-prio", BU, priority=1, request_mi=100, usage_mi=300),
        vm("g", GU, request_mi=100, usage_mi=100),
    ]
    plan = balloon_targets(fleet, 400 * MI)
    assert [(b.vm.key, b.target_bytes // MI, b.reclaim_bytes // MI) for b in plan] == [
        ("bu-over", 200, 500)
    ]
    plan = balloon_targets(fleet, 600 * MI)
    assert keys(b.vm for b in plan) == ["bu-over", "bu-over-prio"]


# ----------------------------------------------------------------- pressure state


def run(
    samples: list[tuple[float, int]], eviction: EvictionSettings = DEFAULTS
) -> list[PressureState]:
    state = PressureState()
    out: list[PressureState] = []
    for at, available_mi in samples:
        state = step_pressure(state, Sample(available_mi * MI, at), eviction)
        out.append(state)
    return out


def test_hard_threshold_is_met_at_once_and_pressure_outlives_it_by_the_transition_period() -> None:
    states = run([(0, 500), (0.5, 99), (1.0, 500), (30.5, 500), (31.0, 500)])
    assert [s.hard_met for s in states] == [False, True, False, False, False]
    assert [s.under_pressure for s in states] == [False, True, True, False, False]


def test_soft_threshold_needs_its_grace_period() -> None:
    eviction = replace(DEFAULTS, soft_memory_available_bytes=300 * MI, soft_grace_period_s=10)
    states = run([(0, 200), (5, 200), (9.9, 200), (10, 200), (11, 400), (12, 200)], eviction)
    assert [s.soft_met for s in states] == [False, False, False, True, False, False]
    assert states[-1].under_pressure  # within the transition period of the soft breach


def test_psi_is_an_early_warning_that_enforces_the_soft_threshold_at_once() -> None:
    eviction = replace(
        DEFAULTS, psi_enabled=True, soft_memory_available_bytes=300 * MI, soft_grace_period_s=10
    )
    state = step_pressure(PressureState(), Sample(250 * MI, 0, psi_some_avg10=40.0), eviction)
    assert state.psi_met
    assert not state.soft_met
    assert reclaim_needed(state, eviction) == 50 * MI
    calm = step_pressure(PressureState(), Sample(250 * MI, 0, psi_some_avg10=1.0), eviction)
    assert reclaim_needed(calm, eviction) == 0


def test_reclaim_needed_counts_minimum_reclaim_and_what_is_already_in_flight() -> None:
    eviction = replace(DEFAULTS, minimum_reclaim_bytes=50 * MI)
    state = step_pressure(PressureState(), Sample(40 * MI, 0), eviction)
    assert reclaim_needed(state, eviction) == 110 * MI
    assert reclaim_needed(state, eviction, in_flight_bytes=100 * MI) == 10 * MI
    assert reclaim_needed(state, eviction, in_flight_bytes=500 * MI) == 0


def test_decide_suspends_in_order_and_resumes_in_reverse() -> None:
    fleet = [
        vm("be", BE, usage_mi=300),
        vm("bu", BU, request_mi=100, usage_mi=300),
        vm("g", GU, request_mi=300, usage_mi=300),
    ]
    state = PressureState()
    first = decide(state, Sample(50 * MI, 0), fleet, DEFAULTS)
    assert keys(first.suspend) == ["be"]
    fleet = [replace(v, state=VMState.SUSPENDED) if v.key == "be" else v for v in fleet]
    second = decide(first.state, Sample(90 * MI, 0.5), fleet, DEFAULTS)
    assert keys(second.suspend) == ["bu"]
    assert second.resume == ()
    fleet = [replace(v, state=VMState.SUSPENDED) if v.key == "bu" else v for v in fleet]
    calm = second.state
    calm_decision = decide(calm, Sample(2000 * MI, 10), fleet, DEFAULTS)
    assert calm_decision.resume == ()  # still within the transition period
    later = decide(calm_decision.state, Sample(2000 * MI, 31), fleet, DEFAULTS)
    assert keys(later.resume) == ["bu"]


def test_only_guaranteed_left_is_reported_as_a_shortfall() -> None:
    fleet = [vm("g", GU, request_mi=300, usage_mi=300)]
    decision = decide(PressureState(), Sample(10 * MI, 0), fleet, DEFAULTS)
    assert decision.suspend == ()
    assert decision.guaranteed_only
    assert decision.shortfall_bytes == 90 * MI


# -------------------------------------------------------- properties over signals

FAST = replace(DEFAULTS, pressure_transition_period_s=5.0, soft_grace_period_s=2.0)


@st.composite
def signal_runs(draw: st.DrawFn) -> list[tuple[float, int]]:
    """Samples at a jittered interval; available memory wandering around the thresholds."""
    at, out = 0.0, []
    for _ in range(draw(st.integers(1, 60))):
        at += draw(st.sampled_from([0.1, 0.5, 0.5, 1.0, 3.0]))
        out.append((at, draw(st.integers(0, 600)) * MI))
    return out


@settings(max_examples=200, deadline=None)
@given(samples=signal_runs(), soft=st.one_of(st.none(), st.integers(100, 400)))
def test_under_pressure_lasts_until_clear_for_the_whole_transition_period(
    samples: list[tuple[float, int]], soft: int | None
) -> None:
    eviction = replace(FAST, soft_memory_available_bytes=None if soft is None else soft * MI)
    state = PressureState()
    met_times: list[float] = []
    for at, available in samples:
        state = step_pressure(state, Sample(available, at), eviction)
        if state.threshold_met:
            met_times.append(at)
        recently_met = any(at - t < eviction.pressure_transition_period_s for t in met_times)
        assert state.under_pressure == recently_met
        if state.hard_met:
            assert available < eviction.hard_memory_available_bytes


@settings(max_examples=200, deadline=None)
@given(
    low=st.integers(0, 99),
    high=st.integers(101, 10_000),
    period=st.sampled_from([0.1, 0.5, 1.0]),
    cycles=st.integers(1, 40),
    flip_every=st.integers(1, 5),
)
def test_an_oscillating_signal_does_not_flap_within_the_transition_period(
    low: int, high: int, period: float, cycles: int, flip_every: int
) -> None:
    """Around the hard threshold, pressure turns on once and stays on: no resumes at all."""
    fleet = [
        replace(vm("be", BE, usage_mi=50), state=VMState.SUSPENDED),
        vm("bu", BU, request_mi=10, usage_mi=20),
    ]
    state, at, transitions, resumes = PressureState(), 0.0, 0, 0
    clear_run = flip_every * period
    for i in range(cycles * 2 * flip_every):
        available = (low if (i // flip_every) % 2 == 0 else high) * MI
        decision = decide(state, Sample(available, at), fleet, FAST)
        if decision.state.under_pressure != state.under_pressure:
            transitions += 1
        resumes += len(decision.resume)
        state = decision.state
        at += period
    if clear_run < FAST.pressure_transition_period_s:
        assert transitions == 1
        assert resumes == 0


@st.composite
def host_runs(draw: st.DrawFn) -> tuple[list[VMView], list[int]]:
    fleet = draw(fleets(min_size=1, max_size=8))
    base = [draw(st.integers(-3000, 3000)) * MI for _ in range(draw(st.integers(2, 40)))]
    return fleet, base


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(run_=host_runs(), eviction=st.sampled_from([DEFAULTS, FAST]))
def test_simulated_host_never_violates_order_and_never_undoes_a_resume(
    run_: tuple[list[VMView], list[int]], eviction: EvictionSettings
) -> None:
    """A host whose free memory is `base[t]` plus what suspended VMs gave back.

    Every step: Guaranteed never suspended; no running VM sits in a lower tier than a
    suspended one; a resume is never followed by a threshold met on the next sample
    (when nothing but the resume changed).
    """
    fleet, base = run_
    by_key = {v.key: v for v in fleet}
    state = PressureState()
    at = 0.0

    def available(level: int) -> int:
        freed = sum(v.reclaim_bytes for v in by_key.values() if v.state is VMState.SUSPENDED)
        return max(0, level + int(freed))

    for level in base:
        decision = decide(state, Sample(available(level), at), list(by_key.values()), eviction)
        state = decision.state
        for victim in decision.suspend:
            assert victim.qos_class is not GU
            by_key[victim.key] = replace(victim, state=VMState.SUSPENDED)
        for back in decision.resume:
            by_key[back.key] = replace(back, state=VMState.RUNNING)
            at += eviction.sampling_interval_s
            after = step_pressure(state, Sample(available(level), at), eviction)
            assert not after.threshold_met, "the sample after a resume met a threshold"
        suspended = [v for v in by_key.values() if v.state is VMState.SUSPENDED]
        running = [
            v for v in by_key.values() if v.state is VMState.RUNNING and v.qos_class is not GU
        ]
        for s in suspended:
            assert all(r.tier >= s.tier for r in running), (s, running)
        at += eviction.sampling_interval_s

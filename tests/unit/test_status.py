"""Conditions in the standard shape, and the status fields an agent never writes."""

from __future__ import annotations

import pytest

from virtualpod.core.spec import SuspendMode
from virtualpod.core.status import (
    PowerState,
    Suspension,
    agent_fields,
    condition_status,
    observe,
    set_condition,
)
from virtualpod.libvirt.state import DomainState

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"


def test_a_new_condition_is_appended_with_its_transition_time() -> None:
    assert set_condition([], "Ready", True, "Running", "up", 3, now=T0) == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Running",
            "message": "up",
            "lastTransitionTime": T0,
            "observedGeneration": 3,
        }
    ]


@pytest.mark.parametrize(
    ("before", "after", "moved"),
    [(True, True, False), (True, False, True), (False, True, True), (False, False, False)],
)
def test_the_transition_time_moves_only_when_the_status_flips(
    before: bool, after: bool, moved: bool
) -> None:
    first = set_condition([], "Ready", before, "A", now=T0)
    second = set_condition(first, "Ready", after, "B", now=T1)
    assert second[0]["lastTransitionTime"] == (T1 if moved else T0)
    assert second[0]["reason"] == "B"


def test_other_conditions_are_kept_in_place() -> None:
    scheduled = set_condition([], "Scheduled", True, "Scheduled", "on node-a", now=T0)
    both = set_condition(scheduled, "Ready", False, "Pending", now=T1)
    assert [c["type"] for c in both] == ["Scheduled", "Ready"]
    assert both[0] == scheduled[0]


@pytest.mark.parametrize(
    ("type_", "status"), [("Ready", "True"), ("Valid", "False"), ("Suspended", None)]
)
def test_condition_status(type_: str, status: str | None) -> None:
    conditions = set_condition(set_condition([], "Ready", True, "R"), "Valid", False, "V")
    assert condition_status(conditions, type_) == status


def test_an_agent_never_writes_the_controllers_fields() -> None:
    status = {
        "phase": "Running",
        "podName": "p",
        "nodeName": "n",
        "admitted": {"containers": []},
        "conditions": [],
    }
    assert agent_fields(status) == {"phase": "Running", "conditions": []}


PRESSURE = "MemoryPressure"
HELD_PAUSED = Suspension(SuspendMode.PAUSE, PRESSURE, "memory.available 80Mi")
HELD_SAVED = Suspension(SuspendMode.SAVE, PRESSURE, "memory.available 80Mi")


@pytest.mark.parametrize(
    ("state", "reason", "saved", "suspension", "phase", "why", "mode"),
    [
        (PowerState.RUNNING, "booted", False, None, "Running", "Running", None),
        (PowerState.BLOCKED, "unknown", False, None, "Running", "Running", None),
        (PowerState.PAUSED, "user", False, None, "Paused", "Paused", None),
        # a Save in progress pauses the VM: still the monitor's suspension
        (
            PowerState.PAUSED,
            "save",
            False,
            HELD_SAVED,
            "Suspended",
            PRESSURE,
            "Save",
        ),
        (
            PowerState.PAUSED,
            "user",
            False,
            HELD_PAUSED,
            "Suspended",
            PRESSURE,
            "Pause",
        ),
        (PowerState.PMSUSPENDED, "unknown", False, None, "Paused", "GuestSuspended", None),
        (PowerState.SHUTOFF, "saved", True, None, "Suspended", "Saved", "Save"),
        (
            PowerState.SHUTOFF,
            "saved",
            True,
            HELD_SAVED,
            "Suspended",
            PRESSURE,
            "Save",
        ),
        (PowerState.SHUTOFF, "destroyed", False, None, "Failed", "Stopped", None),
        (PowerState.SHUTOFF, "crashed", False, None, "Failed", "Crashed", None),
        (PowerState.CRASHED, "panicked", False, None, "Failed", "Crashed", None),
    ],
)
def test_a_domains_state_is_the_virtualpods_phase(
    state: PowerState,
    reason: str,
    saved: bool,
    suspension: Suspension | None,
    phase: str,
    why: str,
    mode: str | None,
) -> None:
    seen = observe(state, reason, saved, suspension)
    assert (seen.phase, seen.reason, seen.suspend_mode) == (phase, why, mode)


def test_libvirts_states_all_have_a_name_in_the_core() -> None:
    assert [s.name for s in DomainState] == [s.name for s in PowerState]


@pytest.mark.parametrize(
    ("state", "shown"),
    [
        (PowerState.BLOCKED, "Running"),
        (PowerState.SHUTOFF, "Shutoff"),
        (PowerState.NOSTATE, "NoState"),
    ],
)
def test_status_vm_state_spelling(state: PowerState, shown: str) -> None:
    assert state.shown == shown

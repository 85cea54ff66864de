"""The agent's host-capacity check (the second line behind kube-scheduler), as tables."""

from __future__ import annotations

import pytest

from virtualpod.core.admission import (
    PlacedRequests,
    allocatable,
    insufficient,
    sum_requests,
    too_large,
    unschedulable_message,
)
from virtualpod.core.restarts import needs_restart
from virtualpod.core.settings import Amount
from virtualpod.core.sizing import VMSize

GIB = 2**30
HOST = Amount(4000, 8 * GIB)


@pytest.mark.parametrize(
    ("size", "short"),
    [
        (VMSize(4000, 8 * GIB), []),
        (VMSize(4001, 8 * GIB), ["cpu"]),  # 5 vCPUs on a 4-cpu host
        (VMSize(1000, 8 * GIB + 1), ["memory"]),
        (VMSize(8000, 16 * GIB), ["cpu", "memory"]),
    ],
)
def test_a_vm_larger_than_the_whole_host_never_fits(size: VMSize, short: list[str]) -> None:
    assert too_large(size, HOST) == short


@pytest.mark.parametrize(
    ("requests", "used", "short"),
    [
        (Amount(1000, GIB), Amount(3000, 7 * GIB), []),
        (Amount(1001, GIB), Amount(3000, 7 * GIB), ["cpu"]),
        (Amount(1000, GIB + 1), Amount(3000, 7 * GIB), ["memory"]),
        (Amount(0, 0), Amount(9000, 9 * GIB), []),  # BestEffort always fits, as for pods
    ],
)
def test_requests_must_fit_next_to_what_is_placed(
    requests: Amount, used: Amount, short: list[str]
) -> None:
    assert insufficient(requests, used, HOST) == short


def test_requests_add_up() -> None:
    assert sum_requests([Amount(1, 2), Amount(3, 4)]) == Amount(4, 6)
    assert sum_requests([]) == Amount(0, 0)


def _ledger(steps: list[tuple[str, str, Amount | None]]) -> PlacedRequests:
    placed = PlacedRequests({"a": Amount(1000, GIB)})
    for step, uuid, requests in steps:
        if step == "add":
            placed.add(uuid, requests)
        elif step == "resize":
            placed.resize(uuid, requests)
        else:
            placed.discard(uuid)
    return placed


@pytest.mark.parametrize(
    ("steps", "total", "members"),
    [
        pytest.param([], Amount(1000, GIB), ["a"], id="placed-at-start"),
        pytest.param(
            [("add", "b", Amount(500, GIB))], Amount(1500, 2 * GIB), ["a", "b"], id="added"
        ),
        pytest.param(
            [("add", "a", Amount(2000, GIB))], Amount(2000, GIB), ["a"], id="added-again-replaces"
        ),
        pytest.param(
            [("add", "b", None)], Amount(1000, GIB), ["a", "b"], id="size-unknown-counts-0"
        ),
        pytest.param(
            [("add", "b", None), ("resize", "b", Amount(1, 1))],
            Amount(1001, GIB + 1),
            ["a", "b"],
            id="resized-once-known",
        ),
        pytest.param(
            [("resize", "c", Amount(1, 1))], Amount(1000, GIB), ["a"], id="resize-never-places"
        ),
        pytest.param([("discard", "a", None)], Amount(0, 0), [], id="discarded"),
        pytest.param([("discard", "z", None)], Amount(1000, GIB), ["a"], id="discard-unknown"),
    ],
)
def test_placed_requests_follow_adds_resizes_and_discards(
    steps: list[tuple[str, str, Amount | None]], total: Amount, members: list[str]
) -> None:
    placed = _ledger(steps)
    assert placed.total() == total
    assert sorted(placed) == members
    assert len(placed) == len(members)


def test_placed_requests_leave_out_the_vm_being_admitted() -> None:
    placed = PlacedRequests({"a": Amount(1000, GIB), "b": Amount(500, 2 * GIB), "c": None})
    assert placed.total(exclude="b") == Amount(1000, GIB)
    assert placed.total(exclude="c") == Amount(1500, 3 * GIB)
    assert "c" in placed
    assert "d" not in placed


@pytest.mark.parametrize(
    ("reserved", "result"),
    [(Amount(0, GIB), Amount(4000, 7 * GIB)), (Amount(5000, 9 * GIB), Amount(0, 0))],
)
def test_allocatable_is_capacity_minus_reserved_never_negative(
    reserved: Amount, result: Amount
) -> None:
    assert allocatable(HOST, reserved) == result


def test_the_message_is_the_schedulers() -> None:
    assert unschedulable_message(["cpu", "memory"]) == (
        "0/1 hosts are available: 1 insufficient cpu, 1 insufficient memory"
    )


@pytest.mark.parametrize(
    ("stopped", "saved", "placed", "suspended", "deleting", "restart"),
    [
        (True, False, True, False, False, True),
        (False, False, True, False, False, False),  # running
        (True, True, True, False, False, False),  # managed save: restored by a start
        (True, False, False, False, False, False),  # never placed here
        (True, False, True, True, False, False),  # the pressure monitor holds it
        (True, False, True, False, True, False),  # being deleted
    ],
)
def test_restart_policy_always_restarts_only_a_vm_that_stopped_on_its_own(
    stopped: bool, saved: bool, placed: bool, suspended: bool, deleting: bool, restart: bool
) -> None:
    assert (
        needs_restart(
            stopped=stopped,
            has_managed_save=saved,
            placed=placed,
            suspended=suspended,
            deleting=deleting,
        )
        is restart
    )

"""The per-host Lease: what an agent publishes and what the controller reads back."""

from __future__ import annotations

import datetime

import pytest

from virtualpod.core.lease import (
    ALLOCATABLE_MEMORY,
    MEMORY_AVAILABLE,
    VM_WORKING_SET,
    HostUsage,
    lease_body,
    lease_duration_seconds,
    lease_fresh,
    lease_name,
    usage_from_lease,
)

NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=datetime.UTC)
GIB = 2**30


def test_one_lease_per_host_named_after_it() -> None:
    assert lease_name("node-a") == "virtualpod-node-node-a"


@pytest.mark.parametrize(("interval", "duration"), [(5.0, 15), (0.2, 1), (1.5, 5)])
def test_a_lease_lasts_three_renew_intervals(interval: float, duration: int) -> None:
    assert lease_duration_seconds(interval) == duration


def test_the_lease_carries_bytes_as_integer_strings() -> None:
    body = lease_body(
        "node-a", "virtualpod-system", HostUsage(8 * GIB, GIB, 6 * GIB), renew_interval_s=5, now=NOW
    )
    assert body["metadata"]["name"] == "virtualpod-node-node-a"
    assert body["metadata"]["namespace"] == "virtualpod-system"
    assert body["metadata"]["annotations"] == {
        ALLOCATABLE_MEMORY: str(8 * GIB),
        VM_WORKING_SET: str(GIB),
        MEMORY_AVAILABLE: str(6 * GIB),
    }
    assert body["spec"] == {
        "holderIdentity": "node-a",
        "leaseDurationSeconds": 15,
        "renewTime": "2026-01-02T03:04:05.678901Z",
    }


def test_no_pressure_monitor_no_memory_available() -> None:
    body = lease_body("a", "ns", HostUsage(GIB, 0), renew_interval_s=5, now=NOW)
    assert MEMORY_AVAILABLE not in body["metadata"]["annotations"]


@pytest.mark.parametrize(
    "usage", [HostUsage(8 * GIB, GIB, 6 * GIB), HostUsage(GIB, 0), HostUsage(GIB, 2 * GIB, -5)]
)
def test_the_controller_reads_back_what_the_agent_wrote(usage: HostUsage) -> None:
    assert usage_from_lease(lease_body("a", "ns", usage, renew_interval_s=5, now=NOW)) == usage


@pytest.mark.parametrize(
    "annotations",
    [{}, {ALLOCATABLE_MEMORY: "1"}, {ALLOCATABLE_MEMORY: "1Gi", VM_WORKING_SET: "0"}],
)
def test_a_lease_without_usable_numbers_reports_nothing(annotations: dict[str, str]) -> None:
    assert usage_from_lease({"metadata": {"annotations": annotations}}) is None


@pytest.mark.parametrize(
    ("usage", "headroom"),
    [
        (HostUsage(8 * GIB, 3 * GIB), 5 * GIB),
        (HostUsage(8 * GIB, 3 * GIB, 2 * GIB), 2 * GIB),  # the host is short: the signal wins
        (HostUsage(8 * GIB, 3 * GIB, 7 * GIB), 5 * GIB),
    ],
)
def test_headroom_is_the_smaller_of_pool_and_signal(usage: HostUsage, headroom: int) -> None:
    assert usage.headroom_bytes == headroom


@pytest.mark.parametrize(("age", "fresh"), [(0, True), (15, True), (16, False)])
def test_a_lease_not_renewed_within_its_duration_is_stale(age: int, fresh: bool) -> None:
    body = lease_body("a", "ns", HostUsage(GIB, 0), renew_interval_s=5, now=NOW)
    assert lease_fresh(body, NOW + datetime.timedelta(seconds=age)) is fresh


def test_a_lease_without_renew_time_is_stale() -> None:
    assert lease_fresh({"spec": {"leaseDurationSeconds": 15}}, NOW) is False

"""The per-host Lease an agent renews: its measured memory, for usage-aware placement.

One `coordination.k8s.io/v1` Lease per host, `virtualpod-node-<host>` in the operator's
namespace; the annotations carry byte counts as integer strings (the controller reads
them to prefer the hosts with the most measured headroom).
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from virtualpod.core.spec import API_GROUP

LEASE_PREFIX = "virtualpod-node-"
ALLOCATABLE_MEMORY = f"{API_GROUP}/allocatable-memory"
VM_WORKING_SET = f"{API_GROUP}/vm-working-set"
MEMORY_AVAILABLE = f"{API_GROUP}/memory-available"
#: A Lease not renewed for this many renew intervals is stale (its host is gone).
DURATION_INTERVALS = 3


@dataclass(frozen=True)
class HostUsage:
    """What one host measured: the pool for VMs, what they use, what the host has free."""

    allocatable_bytes: int
    vm_working_set_bytes: int
    #: memory.available from the pressure monitor's signal; None when it does not run.
    memory_available_bytes: int | None = None

    @property
    def headroom_bytes(self) -> int:
        """Measured room for another VM: the smaller of the pool's and the signal's."""
        pool = self.allocatable_bytes - self.vm_working_set_bytes
        if self.memory_available_bytes is None:
            return pool
        return min(pool, self.memory_available_bytes)


def lease_name(host_name: str) -> str:
    return f"{LEASE_PREFIX}{host_name}"


def lease_duration_seconds(renew_interval_s: float) -> int:
    return max(1, math.ceil(renew_interval_s * DURATION_INTERVALS))


def micro_time(moment: datetime.datetime) -> str:
    """Kubernetes MicroTime (RFC 3339, microseconds, UTC)."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def usage_annotations(usage: HostUsage) -> dict[str, str]:
    annotations = {
        ALLOCATABLE_MEMORY: str(usage.allocatable_bytes),
        VM_WORKING_SET: str(usage.vm_working_set_bytes),
    }
    if usage.memory_available_bytes is not None:
        annotations[MEMORY_AVAILABLE] = str(usage.memory_available_bytes)
    return annotations


def lease_body(
    host_name: str,
    namespace: str,
    usage: HostUsage,
    *,
    renew_interval_s: float,
    now: datetime.datetime,
) -> dict[str, Any]:
    """The whole Lease, as created or replaced: the holder is the host's agent."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": lease_name(host_name),
            "namespace": namespace,
            "labels": {f"{API_GROUP}/host": host_name},
            "annotations": usage_annotations(usage),
        },
        "spec": {
            "holderIdentity": host_name,
            "leaseDurationSeconds": lease_duration_seconds(renew_interval_s),
            "renewTime": micro_time(now),
        },
    }


def _count(value: object) -> int | None:
    if not isinstance(value, str) or not value.lstrip("-").isdigit():
        return None
    return int(value)


def usage_from_lease(lease: Mapping[str, Any]) -> HostUsage | None:
    """The usage a Lease reports; None when its annotations are missing or garbled."""
    annotations = (lease.get("metadata") or {}).get("annotations") or {}
    allocatable = _count(annotations.get(ALLOCATABLE_MEMORY))
    working_set = _count(annotations.get(VM_WORKING_SET))
    if allocatable is None or working_set is None:
        return None
    return HostUsage(allocatable, working_set, _count(annotations.get(MEMORY_AVAILABLE)))


def parse_micro_time(value: object) -> datetime.datetime | None:
    if not isinstance(value, str):
        return None
    for layout in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.datetime.strptime(value, layout).replace(tzinfo=datetime.UTC)
        except ValueError:
            continue
    return None


def lease_fresh(lease: Mapping[str, Any], now: datetime.datetime) -> bool:
    """Renewed within its duration: its host's agent is alive."""
    spec = lease.get("spec") or {}
    renewed = parse_micro_time(spec.get("renewTime"))
    duration = spec.get("leaseDurationSeconds")
    if renewed is None or not isinstance(duration, int):
        return False
    return (now - renewed).total_seconds() <= duration

"""The agent's host-capacity check: the second line behind kube-scheduler.

The scheduler counts the companion Pods' requests against the node's allocatable; the
agent still checks what it sees on its host (the VM's size against the whole host, and
the summed requests of the VMs it placed against allocatable), with the scheduler's
own wording.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from virtualpod.core.quantity import MILLICPU_PER_CPU
from virtualpod.core.settings import Amount
from virtualpod.core.sizing import VMSize

CPU = "cpu"
MEMORY = "memory"


def sum_requests(amounts: Iterable[Amount]) -> Amount:
    cpu = memory = 0
    for amount in amounts:
        cpu += amount.cpu_millis
        memory += amount.memory_bytes
    return Amount(cpu, memory)


class PlacedRequests:
    """The VMs placed on a host and their summed requests, kept as either changes.

    Admission reads the sum for every new VM; summing on demand made admitting N VMs
    cost N^2/2 lookups. A VM whose size is not known yet (None) is placed but counts
    nothing until `resize` tells its requests.
    """

    def __init__(self, placed: Mapping[str, Amount | None] | None = None) -> None:
        self._requests: dict[str, Amount | None] = {}
        self._cpu_millis = 0
        self._memory_bytes = 0
        for uuid, requests in (placed or {}).items():
            self.add(uuid, requests)

    def __contains__(self, uuid: object) -> bool:
        return uuid in self._requests

    def __iter__(self) -> Iterator[str]:
        return iter(self._requests)

    def __len__(self) -> int:
        return len(self._requests)

    def add(self, uuid: str, requests: Amount | None) -> None:
        self.discard(uuid)
        self._requests[uuid] = requests
        if requests is not None:
            self._cpu_millis += requests.cpu_millis
            self._memory_bytes += requests.memory_bytes

    def resize(self, uuid: str, requests: Amount | None) -> None:
        """New requests of a placed VM (its spec or its admitted Pod changed)."""
        if uuid in self._requests:
            self.add(uuid, requests)

    def discard(self, uuid: str) -> None:
        requests = self._requests.pop(uuid, None)
        if requests is not None:
            self._cpu_millis -= requests.cpu_millis
            self._memory_bytes -= requests.memory_bytes

    def total(self, exclude: str | None = None) -> Amount:
        """Summed requests of the placed VMs but `exclude`."""
        left_out = self._requests.get(exclude) if exclude is not None else None
        if left_out is None:
            return Amount(self._cpu_millis, self._memory_bytes)
        return Amount(
            self._cpu_millis - left_out.cpu_millis, self._memory_bytes - left_out.memory_bytes
        )


def allocatable(capacity: Amount, reserved: Amount) -> Amount:
    """capacity - reserved, never below zero (kubelet's allocatable)."""
    return Amount(
        max(0, capacity.cpu_millis - reserved.cpu_millis),
        max(0, capacity.memory_bytes - reserved.memory_bytes),
    )


def too_large(size: VMSize, capacity: Amount) -> list[str]:
    """What the VM alone needs more of than the whole host has."""
    short = []
    if size.vcpus * MILLICPU_PER_CPU > capacity.cpu_millis:
        short.append(CPU)
    if size.memory_bytes > capacity.memory_bytes:
        short.append(MEMORY)
    return short


def insufficient(requests: Amount, used: Amount, available: Amount) -> list[str]:
    """What is missing for `requests` next to what is already placed (scheduler's fit)."""
    short = []
    if requests.cpu_millis and used.cpu_millis + requests.cpu_millis > available.cpu_millis:
        short.append(CPU)
    if requests.memory_bytes and used.memory_bytes + requests.memory_bytes > available.memory_bytes:
        short.append(MEMORY)
    return short


def unschedulable_message(short: Iterable[str]) -> str:
    """The scheduler's wording for one host ("0/1 hosts are available: ...")."""
    return "0/1 hosts are available: " + ", ".join(f"1 insufficient {r}" for r in short)

"""Pod QoS class, computed exactly as Kubernetes' `ComputePodQOS` does.

Source: kubernetes/kubernetes pkg/apis/core/v1/helper/qos/qos.go. Only cpu and memory
count; init containers count; zero quantities are ignored; Guaranteed compares the
*summed* requests against the *summed* limits, after requests were defaulted from
limits (see `spec`).
"""

from __future__ import annotations

from enum import StrEnum

from virtualpod.core.spec import Resources, VirtualPod


class QOSClass(StrEnum):
    """Kubernetes spelling, ordered from first to be suspended to last."""

    BEST_EFFORT = "BestEffort"
    BURSTABLE = "Burstable"
    GUARANTEED = "Guaranteed"

    @property
    def rank(self) -> int:
        """0 for BestEffort, 1 for Burstable, 2 for Guaranteed: lower goes first."""
        return list(QOSClass).index(self)


def _positive(resources: Resources) -> dict[str, int]:
    amounts = {"cpu": resources.cpu_millis, "memory": resources.memory_bytes}
    return {name: amount for name, amount in amounts.items() if amount}


def qos_class(pod: VirtualPod) -> QOSClass:
    requests: dict[str, int] = {}
    limits: dict[str, int] = {}
    is_guaranteed = True
    for container in pod.all_containers:
        for name, amount in _positive(container.requests).items():
            requests[name] = requests.get(name, 0) + amount
        limits_found = _positive(container.limits)
        for name, amount in limits_found.items():
            limits[name] = limits.get(name, 0) + amount
        if set(limits_found) != {"cpu", "memory"}:
            is_guaranteed = False
    if not requests and not limits:
        return QOSClass.BEST_EFFORT
    if is_guaranteed and requests == limits:
        return QOSClass.GUARANTEED
    return QOSClass.BURSTABLE

"""Stand-ins for the API server's Pod admission, on the emulator only.

A real API server defaults and admits every Pod through a chain of plugins; the
emulator has none. `StandInPodAdmission` plays the four the companion Pods meet, with
the real messages (measured on kube-apiserver v1.32): Pod defaulting (a request left
unset takes the limit), LimitRanger (container defaults, with its annotation),
Priority (the value from the PriorityClass), RuntimeClass (`spec.overhead` from
`overhead.podFixed`) and ResourceQuota (403 when a Pod would exceed a quota's `hard`).

Never used by the operator: tests and the demo install it with `install(emulator)`;
against a real cluster the API server does all of this itself.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from virtualpod.core.quantity import parse_decimal
from virtualpod.testing.emulator import KubernetesApiEmulator
from virtualpod.testing.objects import JSON, ApiError, ResourceSpec

PODS = "v1/pods"
LIMIT_RANGES = "v1/limitranges"
QUOTAS = "v1/resourcequotas"
PRIORITY_CLASSES = "scheduling.k8s.io/v1/priorityclasses"
RUNTIME_CLASSES = "node.k8s.io/v1/runtimeclasses"
LIMIT_RANGER_ANNOTATION = "kubernetes.io/limit-ranger"
COMPUTE = ("cpu", "memory")
TERMINAL_PHASES = ("Succeeded", "Failed")


@functools.lru_cache(maxsize=4096, typed=True)
def _parsed(value: str | int | float) -> float:
    return float(parse_decimal(value, "quantity"))


def quantity_value(value: object) -> float:
    """A quantity's value (`parse_decimal`), parsed once per spelling: the stand-ins
    read the same few spellings again and again (the binder, on every pass)."""
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return _parsed(value)
    return float(parse_decimal(value, "quantity"))  # not one: its error


def _containers(spec: Mapping[str, Any]) -> list[JSON]:
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def default_requests_from_limits(pod: JSON) -> None:
    """Pod defaulting: a container's unset request takes its limit's value."""
    for container in _containers(pod.get("spec") or {}):
        resources = container.get("resources") or {}
        limits = resources.get("limits") or {}
        requests = resources.setdefault("requests", {}) if limits else {}
        for name, value in limits.items():
            requests.setdefault(name, value)
        if limits:
            container["resources"] = resources


def apply_limit_ranges(pod: JSON, limit_ranges: Iterable[Mapping[str, Any]]) -> None:
    """LimitRanger: fill each container's missing limits (`default`) and requests
    (`defaultRequest`, else `default`) from the namespace's Container limits."""
    notes: list[str] = []
    for limit_range in limit_ranges:
        for item in (limit_range.get("spec") or {}).get("limits") or []:
            if item.get("type") != "Container":
                continue
            default = item.get("default") or {}
            default_request = {**default, **(item.get("defaultRequest") or {})}
            for container in _containers(pod.get("spec") or {}):
                resources = container.setdefault("resources", {})
                set_requests = _fill(resources, "requests", default_request)
                set_limits = _fill(resources, "limits", default)
                name = container.get("name")
                if set_requests:
                    notes.append(f"{', '.join(set_requests)} request for container {name}")
                if set_limits:
                    notes.append(f"{', '.join(set_limits)} limit for container {name}")
                if not resources:
                    del container["resources"]
    if notes:
        annotations = pod.setdefault("metadata", {}).setdefault("annotations", {})
        annotations[LIMIT_RANGER_ANNOTATION] = "LimitRanger plugin set: " + "; ".join(notes)


def _fill(resources: JSON, key: str, defaults: Mapping[str, Any]) -> list[str]:
    current = resources.get(key) or {}
    missing = [name for name in sorted(defaults) if name not in current]
    if missing:
        resources[key] = {**current, **{name: defaults[name] for name in missing}}
    return missing


def pod_request(pod: Mapping[str, Any], resource: str) -> float:
    """The scheduler's effective request: max(sum of app containers, largest init
    container) plus the Pod's overhead."""
    spec = pod.get("spec") or {}

    def request(container: Mapping[str, Any]) -> float:
        value = ((container.get("resources") or {}).get("requests") or {}).get(resource)
        return quantity_value(value) if value is not None else 0.0

    apps = sum(request(c) for c in spec.get("containers") or [])
    inits = max((request(c) for c in spec.get("initContainers") or []), default=0.0)
    overhead = (spec.get("overhead") or {}).get(resource)
    return max(apps, inits) + (quantity_value(overhead) if overhead is not None else 0.0)


def pod_limit(pod: Mapping[str, Any], resource: str) -> float:
    spec = pod.get("spec") or {}
    total = 0.0
    for container in spec.get("containers") or []:
        value = ((container.get("resources") or {}).get("limits") or {}).get(resource)
        total += quantity_value(value) if value is not None else 0.0
    return total


def _usage(pod: Mapping[str, Any], name: str) -> float | None:
    """What a Pod counts against one quota resource name (None: not a compute quota)."""
    if name == "pods":
        return 1.0
    kind, _, resource = name.rpartition(".")
    if resource not in COMPUTE:
        return None
    if kind in ("", "requests"):
        return pod_request(pod, resource)
    if kind == "limits":
        return pod_limit(pod, resource)
    return None


def _quantity(amount: float, resource: str) -> str:
    if resource.endswith("memory"):
        mib = amount / 2**20
        return f"{mib:g}Mi" if mib == int(mib) else str(int(amount))
    if resource.endswith("cpu"):
        return f"{round(amount * 1000)}m" if amount != int(amount) else str(int(amount))
    return str(int(amount))


def check_quotas(
    pod: Mapping[str, Any], quotas: Iterable[Mapping[str, Any]], others: Sequence[Mapping[str, Any]]
) -> None:
    """ResourceQuota: refuse (403) a Pod that would take a quota's `used` over `hard`."""
    name = (pod.get("metadata") or {}).get("name")
    live = [p for p in others if (p.get("status") or {}).get("phase") not in TERMINAL_PHASES]
    for quota in quotas:
        hard = (quota.get("spec") or {}).get("hard") or {}
        over, requested, used, limited = [], [], [], []
        for resource, limit in sorted(hard.items()):
            wanted = _usage(pod, resource)
            if wanted is None:
                continue
            in_use = sum(_usage(other, resource) or 0.0 for other in live)
            if in_use + wanted > quantity_value(limit):
                over.append(resource)
                requested.append(f"{resource}={_quantity(wanted, resource)}")
                used.append(f"{resource}={_quantity(in_use, resource)}")
                limited.append(f"{resource}={limit}")
        if over:
            quota_name = (quota.get("metadata") or {}).get("name")
            raise ApiError(
                403,
                "Forbidden",
                f'pods "{name}" is forbidden: exceeded quota: {quota_name}, '
                f"requested: {','.join(requested)}, used: {','.join(used)}, "
                f"limited: {','.join(limited)}",
            )


class StandInPodAdmission:
    """The admission chain for Pods on the emulator (see the module docstring)."""

    def __init__(self, emulator: KubernetesApiEmulator) -> None:
        self.emulator = emulator

    def __call__(self, resource: ResourceSpec, namespace: str | None, obj: JSON) -> None:
        if resource.key != PODS:
            return
        default_requests_from_limits(obj)
        # The stored objects are read, never changed: no copies (see `read_objects`).
        apply_limit_ranges(obj, self.emulator.read_objects(LIMIT_RANGES, namespace))
        self._priority(obj)
        self._runtime_class(obj)
        quotas = list(self.emulator.read_objects(QUOTAS, namespace))
        if quotas:  # the namespace's Pods are read only when a quota counts them
            check_quotas(obj, quotas, list(self.emulator.read_objects(PODS, namespace)))

    def _priority(self, pod: JSON) -> None:
        spec = pod.setdefault("spec", {})
        name = (pod.get("metadata") or {}).get("name")
        class_name = spec.get("priorityClassName")
        classes = list(self.emulator.read_objects(PRIORITY_CLASSES))
        if class_name:
            found = [c for c in classes if c["metadata"]["name"] == class_name]
            if not found:
                raise ApiError(
                    403,
                    "Forbidden",
                    f'pods "{name}" is forbidden: no PriorityClass with name {class_name} '
                    "was found",
                )
            value = int(found[0].get("value", 0))
        else:
            value = next((int(c.get("value", 0)) for c in classes if c.get("globalDefault")), 0)
        if spec.get("priority") is not None and spec["priority"] != value:
            raise ApiError(
                403,
                "Forbidden",
                f'pods "{name}" is forbidden: the integer value of priority '
                f"({spec['priority']}) must not be provided in pod spec; priority admission "
                f"controller computed {value} from the given PriorityClass name",
            )
        spec["priority"] = value

    def _runtime_class(self, pod: JSON) -> None:
        spec = pod.setdefault("spec", {})
        class_name = spec.get("runtimeClassName")
        if not class_name:
            return
        found = self.emulator.read_object(RUNTIME_CLASSES, None, class_name)
        if found is None:
            raise ApiError(403, "Forbidden", f'pod rejected: RuntimeClass "{class_name}" not found')
        fixed = (found.get("overhead") or {}).get("podFixed")
        if fixed:
            spec["overhead"] = dict(fixed)


def install(emulator: KubernetesApiEmulator) -> StandInPodAdmission:
    """Put the Pod admission stand-ins into the emulator's create path."""
    admission = StandInPodAdmission(emulator)
    emulator.admission.append(admission)
    return admission

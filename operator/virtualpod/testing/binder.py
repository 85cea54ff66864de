"""A stand-in for kube-scheduler on the emulator: binds pending companion Pods to Nodes.

The emulator has no scheduler. `StandInBinder` plays the part of it the companion Pods
need, on the Nodes a test registers: filter (nodeSelector, required node affinity,
taints vs tolerations, cpu/memory requests plus overhead against `status.allocatable`),
score (preferred node-affinity weights, then the most free memory), bind (`spec.nodeName`
and `PodScheduled=True`), or report `PodScheduled=False` reason `Unschedulable` with a
message shaped like the scheduler's. It retries unschedulable Pods whenever it runs.

Never used by the operator: tests and the demo start it; with a real cluster the real
kube-scheduler binds. It reads and writes the emulator directly, one pass at a time
(`testing.control_plane` runs the passes).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from virtualpod.core.companion import RUNTIME_CLASS
from virtualpod.core.quantity import parse_decimal
from virtualpod.testing.admission import PODS, TERMINAL_PHASES, pod_request
from virtualpod.testing.emulator import KubernetesApiEmulator
from virtualpod.testing.objects import JSON

NODES = "v1/nodes"
AFFINITY_MISMATCH = "node(s) didn't match Pod's node affinity/selector"
SCHEDULE_EFFECTS = ("NoSchedule", "NoExecute")


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _requirement_holds(requirement: Mapping[str, Any], values: Mapping[str, str]) -> bool:
    key, operator = str(requirement.get("key")), requirement.get("operator")
    wanted = requirement.get("values") or []
    present = key in values
    if operator == "In":
        return present and values[key] in wanted
    if operator == "NotIn":
        return not present or values[key] not in wanted
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt") and present and wanted:
        have, limit = int(values[key]), int(wanted[0])
        return have > limit if operator == "Gt" else have < limit
    return False


def term_matches(term: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """A NodeSelectorTerm: every matchExpression on labels, every matchField on fields."""
    fields = {"metadata.name": (node.get("metadata") or {}).get("name", "")}
    return all(
        _requirement_holds(r, _labels(node)) for r in term.get("matchExpressions") or []
    ) and all(_requirement_holds(r, fields) for r in term.get("matchFields") or [])


def _node_affinity(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    return ((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {}


def selects(pod: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """nodeSelector and required node affinity (any of its terms)."""
    selector = (pod.get("spec") or {}).get("nodeSelector") or {}
    labels = _labels(node)
    if any(labels.get(key) != value for key, value in selector.items()):
        return False
    required = _node_affinity(pod).get("requiredDuringSchedulingIgnoredDuringExecution")
    if required:
        return any(term_matches(term, node) for term in required.get("nodeSelectorTerms") or [])
    return True


def _tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    if toleration.get("operator") == "Exists":
        return not toleration.get("key") or toleration["key"] == taint.get("key")
    return toleration.get("key") == taint.get("key") and toleration.get("value", "") == taint.get(
        "value", ""
    )


def untolerated_taint(pod: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any] | None:
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") in SCHEDULE_EFFECTS and not any(
            _tolerates(t, taint) for t in tolerations
        ):
            return dict(taint)
    return None


def _allocatable(node: Mapping[str, Any], resource: str) -> float:
    value = ((node.get("status") or {}).get("allocatable") or {}).get(resource)
    return float(parse_decimal(value, "quantity")) if value is not None else 0.0


#: Requests already placed per node name: {"cpu": cores, "memory": bytes}.
Usage = Mapping[str, Mapping[str, float]]
#: A Pod's effective request of one resource (`admission.pod_request`, or a cache of it).
Request = Callable[[Mapping[str, Any], str], float]
RESOURCES = ("cpu", "memory")


def _live(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") not in TERMINAL_PHASES and not (
        pod.get("metadata") or {}
    ).get("deletionTimestamp")


def usage(
    pods: Iterable[Mapping[str, Any]], request: Request = pod_request
) -> dict[str, dict[str, float]]:
    """What the live Pods bound to each node request (overhead included): one pass
    over the Pods, as the scheduler's cache keeps it."""
    used: dict[str, dict[str, float]] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if node and _live(pod):
            place(used, node, pod, request)
    return used


def place(
    used: dict[str, dict[str, float]],
    node: str,
    pod: Mapping[str, Any],
    request: Request = pod_request,
) -> None:
    """Count one more Pod on `node`."""
    on_node = used.setdefault(node, dict.fromkeys(RESOURCES, 0.0))
    for resource in RESOURCES:
        on_node[resource] += request(pod, resource)


def free(node: Mapping[str, Any], used: Usage, resource: str) -> float:
    name = str((node.get("metadata") or {}).get("name"))
    return _allocatable(node, resource) - (used.get(name) or {}).get(resource, 0.0)


def filter_reason(pod: Mapping[str, Any], node: Mapping[str, Any], used: Usage) -> str | None:
    """Why the node cannot take the pod (the scheduler's wording), or None when it fits."""
    if not selects(pod, node):
        return AFFINITY_MISMATCH
    taint = untolerated_taint(pod, node)
    if taint is not None:
        return f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value', '')}}}"
    for resource in RESOURCES:
        if pod_request(pod, resource) > free(node, used, resource):
            return f"Insufficient {resource}"
    return None


def score(pod: Mapping[str, Any], node: Mapping[str, Any]) -> int:
    preferred = _node_affinity(pod).get("preferredDuringSchedulingIgnoredDuringExecution") or []
    return sum(
        int(item.get("weight", 0))
        for item in preferred
        if term_matches(item.get("preference") or {}, node)
    )


def unschedulable_message(reasons: Counter[str], nodes: int) -> str:
    if not nodes:
        return "no nodes available to schedule pods"
    listed = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
    return (
        f"0/{nodes} nodes are available: {listed}. preemption: 0/{nodes} nodes are "
        f"available: {nodes} No preemption victims found for incoming pod."
    )


def choose(
    pod: Mapping[str, Any], nodes: Sequence[Mapping[str, Any]], used: Usage
) -> tuple[str | None, str]:
    """(node name, "") for the best fitting node, or (None, the scheduler's message)."""
    reasons: Counter[str] = Counter()
    fitting = []
    for node in nodes:
        reason = filter_reason(pod, node, used)
        if reason is None:
            fitting.append(node)
        else:
            reasons[reason] += 1
    if not fitting:
        return None, unschedulable_message(reasons, len(nodes))
    ranked = sorted(
        fitting,
        key=lambda node: (-score(pod, node), -free(node, used, "memory"), node["metadata"]["name"]),
    )
    return ranked[0]["metadata"]["name"], ""


def _pending(pod: Mapping[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    return (
        spec.get("runtimeClassName") == RUNTIME_CLASS
        and not spec.get("nodeName")
        and not (pod.get("metadata") or {}).get("deletionTimestamp")
    )


def _condition(status: str, reason: str | None = None, message: str = "") -> JSON:
    condition: JSON = {"type": "PodScheduled", "status": status}
    if reason:
        condition.update(reason=reason, message=message)
    return condition


class StandInBinder:
    """kube-scheduler's part for companion Pods, on the emulator (see the module doc)."""

    def __init__(self, emulator: KubernetesApiEmulator) -> None:
        self.emulator = emulator
        #: How many Pods it bound (tests may check the binder, not the operator, bound).
        self.bound = 0
        #: Each Pod's requests by (uid, resource): a Pod's resources do not change, and
        #: every pass sums them for every bound Pod.
        self._requests: dict[tuple[str, str], float] = {}

    def request(self, pod: Mapping[str, Any], resource: str) -> float:
        key = (str((pod.get("metadata") or {}).get("uid")), resource)
        if key not in self._requests:
            self._requests[key] = pod_request(pod, resource)
        return self._requests[key]

    def bind_pending(self) -> None:
        """One scheduling pass over every pending companion Pod, highest priority first."""
        emu = self.emulator
        nodes = list(emu.read_objects(NODES))
        pods = list(emu.read_objects(PODS))
        live = {str(pod["metadata"].get("uid")) for pod in pods}
        self._requests = {key: v for key, v in self._requests.items() if key[0] in live}
        used = usage(pods, self.request)
        pending = sorted(
            (pod for pod in pods if _pending(pod)),
            key=lambda pod: (
                -int((pod.get("spec") or {}).get("priority") or 0),
                pod["metadata"].get("creationTimestamp", ""),
            ),
        )
        for pod in pending:
            meta = pod["metadata"]
            node, message = choose(pod, nodes, used)
            if node is None:
                wanted = _condition("False", "Unschedulable", message)
                if wanted not in (pod.get("status") or {}).get("conditions", []):
                    emu.patch_object(
                        PODS,
                        meta["namespace"],
                        meta["name"],
                        {"status": {"phase": "Pending", "conditions": [wanted]}},
                        "status",
                    )
                continue
            place(used, node, emu.bind_pod(meta["namespace"], meta["name"], node), self.request)
            self.bound += 1

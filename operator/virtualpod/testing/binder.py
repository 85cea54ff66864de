"""A stand-in for kube-scheduler on the emulator: binds pending companion Pods to Nodes.

The emulator has no scheduler. `StandInBinder` plays the part of it the companion Pods
need, on the Nodes a test registers: filter (nodeSelector, required node affinity,
taints vs tolerations, cpu/memory requests plus overhead against `status.allocatable`),
score (preferred node-affinity weights, then the most free memory), bind (`spec.nodeName`
and `PodScheduled=True`), or report `PodScheduled=False` reason `Unschedulable` with a
message shaped like the scheduler's. It retries unschedulable Pods whenever it runs.

Never used by the operator: tests and the demo start it; with a real cluster the real
kube-scheduler binds. It reads and writes the emulator directly, one pass at a time
(`testing.control_plane` runs the passes), and keeps what it knows of the Pods as the
scheduler's cache does: the pending ones and what each node's Pods request, updated
from the Pods changed since the last pass (`testing.informer`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from virtualpod.core.companion import RUNTIME_CLASS
from virtualpod.testing.admission import PODS, TERMINAL_PHASES, pod_request, quantity_value
from virtualpod.testing.emulator import KubernetesApiEmulator
from virtualpod.testing.informer import Informer, object_key
from virtualpod.testing.objects import JSON
from virtualpod.testing.store import Key

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
    return quantity_value(value) if value is not None else 0.0


#: Requests already placed per node name: {"cpu": cores, "memory": bytes}.
Usage = Mapping[str, Mapping[str, float]]
#: A Pod's effective request of one resource (`admission.pod_request`, or a cache of it).
Request = Callable[[Mapping[str, Any], str], float]
RESOURCES = ("cpu", "memory")


def _live(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") not in TERMINAL_PHASES and not (
        pod.get("metadata") or {}
    ).get("deletionTimestamp")


def bound_node(pod: Mapping[str, Any]) -> str | None:
    """The node a Pod's requests count against: its `nodeName` while it is live; None
    when it counts nowhere."""
    node = (pod.get("spec") or {}).get("nodeName")
    return node if node and _live(pod) else None


def usage(
    pods: Iterable[Mapping[str, Any]], request: Request = pod_request
) -> dict[str, dict[str, float]]:
    """What the live Pods bound to each node request (overhead included): one pass
    over the Pods, as the scheduler's cache keeps it."""
    used: dict[str, dict[str, float]] = {}
    for pod in pods:
        node = bound_node(pod)
        if node:
            place(used, node, pod, request)
    return used


def summed(requests: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Per resource, the requests added one after the other, as `usage` and `place` add
    them: a float sum depends on the order of its terms."""
    total = dict.fromkeys(RESOURCES, 0.0)
    for request in requests:
        for resource in RESOURCES:
            total[resource] += request[resource]
    return total


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


class NodeRequests:
    """The requests of the Pods counted on one node and their sum, kept as `usage` sums
    them: in list order. A Pod listed after all the others adds to the sum; any other
    change has it summed again when next read."""

    def __init__(self) -> None:
        self.requests: dict[Key, tuple[int, Mapping[str, float]]] = {}
        self._total = summed(())
        self._last = -1
        self._stale = False

    def add(self, key: Key, position: int, requests: Mapping[str, float]) -> None:
        """Count a Pod (again: a no-op unless its requests changed)."""
        if key in self.requests:
            if self.requests[key] == (position, requests):
                return
            self.remove(key)
        self.requests[key] = (position, requests)
        if self._stale or position < self._last:
            self._stale = True
            return
        self._last = position
        for resource in RESOURCES:
            self._total[resource] += requests[resource]

    def remove(self, key: Key) -> None:
        """Stop counting a Pod (a float sum cannot take a term back exactly)."""
        del self.requests[key]
        self._stale = True

    def total(self) -> Mapping[str, float]:
        """The sum per resource: read it, never change it."""
        if self._stale:
            ordered = sorted(self.requests.values(), key=lambda item: item[0])
            self._total = summed(requests for _, requests in ordered)
            self._last = ordered[-1][0] if ordered else -1
            self._stale = False
        return self._total


class StandInBinder:
    """kube-scheduler's part for companion Pods, on the emulator (see the module doc)."""

    def __init__(self, emulator: KubernetesApiEmulator) -> None:
        self.emulator = emulator
        #: How many Pods it bound (tests may check the binder, not the operator, bound).
        self.bound = 0
        self._pods = Informer(emulator.store, PODS)
        #: Each Pod's requests with its uid: a Pod's resources do not change, and a
        #: Pod created again under the same name is another Pod.
        self._requests: dict[Key, tuple[str, dict[str, float]]] = {}
        #: The pending companion Pods, as stored.
        self._pending: dict[Key, Mapping[str, Any]] = {}
        #: The node each live bound Pod counts against, and per node those Pods' requests:
        #: what `usage()` of every Pod would say.
        self._placed: dict[Key, str] = {}
        self._nodes: dict[str, NodeRequests] = {}

    def request(self, pod: Mapping[str, Any], resource: str) -> float:
        """`pod_request`, computed once per Pod."""
        return self._requests_of(pod)[resource]

    def _requests_of(self, pod: Mapping[str, Any]) -> Mapping[str, float]:
        key = object_key(PODS, pod)
        uid = str((pod.get("metadata") or {}).get("uid"))
        cached = self._requests.get(key)
        if cached is None or cached[0] != uid:
            cached = self._requests[key] = (uid, {r: pod_request(pod, r) for r in RESOURCES})
        return cached[1]

    def bind_pending(self) -> None:
        """One scheduling pass over every pending companion Pod, highest priority first."""
        emu = self.emulator
        nodes = list(emu.read_objects(NODES))
        used = self.used()
        order = self._pods.order
        pending = sorted(
            self._pending.items(),
            key=lambda item: (
                -int((item[1].get("spec") or {}).get("priority") or 0),
                item[1]["metadata"].get("creationTimestamp", ""),
                order[item[0]],
            ),
        )
        for _, pod in pending:
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

    def used(self) -> dict[str, dict[str, float]]:
        """What `usage()` of every stored Pod says (to the last bit), from the cache."""
        self._catch_up()
        return {node: dict(counted.total()) for node, counted in self._nodes.items()}

    def _catch_up(self) -> None:
        """Update the cache with the Pods changed since the last pass (all of them after
        a rebuild); a failure leaves it to be rebuilt."""
        try:
            changed = self._pods.changed()
            if changed is None:
                self._requests = {k: v for k, v in self._requests.items() if k in self._pods.order}
                self._pending, self._placed, self._nodes = {}, {}, {}
                changed = list(self._pods.order)
            for key in changed:
                self._update(key)
        except BaseException:
            self._pods.reset()
            raise

    def _update(self, key: Key) -> None:
        """Take one Pod's current version (or its deletion)."""
        pod = self.emulator.store.objects.get(key)
        if pod is not None and _pending(pod):
            self._pending[key] = pod
        else:
            self._pending.pop(key, None)
        node = bound_node(pod) if pod is not None else None
        was = self._placed.pop(key, None)
        if was is not None and was != node:
            self._nodes[was].remove(key)
            if not self._nodes[was].requests:
                del self._nodes[was]
        if pod is None:
            self._requests.pop(key, None)
        elif node is not None:
            self._placed[key] = node
            counted = self._nodes.setdefault(node, NodeRequests())
            counted.add(key, self._pods.order[key], self._requests_of(pod))

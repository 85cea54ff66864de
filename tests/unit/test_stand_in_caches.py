"""The stand-in binder and garbage collector keep caches updated from the store's
changes; they must decide exactly what a pass over every stored object decides (the
scheduler's float sums included), whatever happens between passes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from virtualpod.core.companion import RUNTIME_CLASS
from virtualpod.testing.admission import PODS
from virtualpod.testing.binder import (
    NODES,
    NodeRequests,
    StandInBinder,
    bound_node,
    choose,
    place,
    summed,
    usage,
)
from virtualpod.testing.control_plane import StandInGarbageCollector
from virtualpod.testing.emulator import KubernetesApiEmulator
from virtualpod.testing.informer import Informer
from virtualpod.testing.objects import JSON, VIRTUALPODS


def cpu(*values: float) -> list[dict[str, float]]:
    return [{"cpu": value, "memory": 1.0} for value in values]


@pytest.mark.parametrize(
    ("requests", "total"),
    [
        ([], 0.0),
        (cpu(*[0.1] * 10), 0.9999999999999999),
        (cpu(0.7, 0.2, 0.1), 0.9999999999999999),
        (cpu(0.1, 0.2, 0.7), 1.0),
    ],
    ids=["nothing", "ten tenths are not one", "one order", "another order, another sum"],
)
def test_summed_adds_in_the_given_order_as_usage_does(
    requests: list[dict[str, float]], total: float
) -> None:
    assert summed(requests)["cpu"] == total
    pods = [{"spec": {"nodeName": "n"}, "request": request} for request in requests]
    counted = usage(pods, lambda pod, resource: float(pod["request"][resource]))
    assert counted.get("n", summed([])) == summed(requests)


@pytest.mark.parametrize(
    ("additions", "removed", "expected"),
    [
        ([0.1, 0.2, 0.7], [], [0.1, 0.2, 0.7]),
        ([0.7, 0.2, 0.1], [], [0.1, 0.2, 0.7]),
        ([0.1, 0.2, 0.7], [1], [0.1, 0.7]),
        ([0.1, 0.2, 0.2, 0.7], [], [0.1, 0.2, 0.7]),
    ],
    ids=[
        "appended in list order",
        "added out of order: summed in list order",
        "one removed: summed again",
        "counted again unchanged: once",
    ],
)
def test_node_requests_sum_in_list_order(
    additions: list[float], removed: list[int], expected: list[float]
) -> None:
    counted = NodeRequests()
    positions = {value: index for index, value in enumerate(sorted(set(additions)))}
    for value in additions:
        counted.add(("v1/pods", "ns", str(value)), positions[value], {"cpu": value, "memory": 0})
    for index in removed:
        counted.remove(("v1/pods", "ns", str(sorted(set(additions))[index])))
    assert counted.total()["cpu"] == summed({"cpu": v, "memory": 0} for v in expected)["cpu"]


@pytest.mark.parametrize(
    ("pod", "node"),
    [
        ({"spec": {"nodeName": "a"}}, "a"),
        ({"spec": {}}, None),
        ({"spec": {"nodeName": "a"}, "status": {"phase": "Failed"}}, None),
        ({"spec": {"nodeName": "a"}, "status": {"phase": "Running"}}, "a"),
        ({"spec": {"nodeName": "a"}, "metadata": {"deletionTimestamp": "t"}}, None),
    ],
    ids=["bound", "not bound", "ended", "running", "being deleted"],
)
def test_bound_node_is_where_a_pod_counts(pod: dict[str, Any], node: str | None) -> None:
    assert bound_node(pod) == node


class RecordingEmulator(KubernetesApiEmulator):
    """Records the stand-ins' writes as they make them (a short history may already have
    lost them by the time a test looks)."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.written: list[tuple[str, str]] = []

    def bind_pod(self, namespace: str, name: str, node: str) -> JSON:
        self.written.append((name, node))
        return super().bind_pod(namespace, name, node)

    def delete_object(self, resource_key: str, namespace: str | None, name: str) -> JSON:
        before = self.store.rv
        deleted = super().delete_object(resource_key, namespace, name)
        if self.store.rv != before:
            gone = self.read_object(resource_key, namespace, name) is None
            self.written.append(("DELETED" if gone else "MODIFIED", name))
        return deleted


def emulator(history: int = 100_000) -> RecordingEmulator:
    emu = RecordingEmulator()
    emu.store.history_limit = history
    return emu


def put_pod(emu: KubernetesApiEmulator, name: str, **spec: Any) -> None:
    emu.put_object(PODS, {"metadata": {"name": name}, "spec": spec})


def test_informer_gives_each_changed_key_once_and_keeps_list_order() -> None:
    emu = emulator()
    pods = Informer(emu.store, PODS)
    put_pod(emu, "a")
    assert pods.changed() is None
    assert list(pods.order) == [(PODS, "default", "a")]
    put_pod(emu, "b")
    emu.patch_object(PODS, "default", "a", {"metadata": {"labels": {"x": "1"}}})
    emu.put_object(NODES, {"metadata": {"name": "n"}})
    emu.delete_object(PODS, "default", "a")
    put_pod(emu, "a")
    assert pods.changed() == [(PODS, "default", "b"), (PODS, "default", "a")]
    assert sorted(pods.order, key=pods.order.__getitem__) == [
        (PODS, "default", "b"),
        (PODS, "default", "a"),
    ]
    assert [key for key, _ in zip(pods.order, emu.read_objects(PODS), strict=True)]
    assert pods.changed() == []


def test_informer_asks_for_a_rebuild_once_the_history_lost_its_changes() -> None:
    emu = emulator(history=4)
    pods = Informer(emu.store, PODS)
    assert pods.changed() is None
    for index in range(6):
        put_pod(emu, f"p{index}")
    assert pods.changed() is None
    assert len(pods.order) == 6
    pods.reset()
    assert pods.changed() is None


# ------------------------------------------------------------ the binder, generated

CPUS = ("100m", "200m", "250m", "300m", "700m", "1")
MEMORIES = ("128Mi", "256Mi", "384Mi", "1Gi")
NODE_NAMES = ("a", "b", "c")

#: A Pod created (mostly a pending companion one), deleted, or ended.
creations = st.tuples(
    st.just("create"),
    st.integers(0, 5),
    st.sampled_from(CPUS),
    st.sampled_from(MEMORIES),
    st.sampled_from((0, 0, 10)),
    st.sampled_from((None, None, None, *NODE_NAMES)),
    st.sampled_from((True, True, False)),
)
pod_ops = st.one_of(
    creations,
    creations,
    st.tuples(st.just("delete"), st.integers(0, 5)),
    st.tuples(st.just("end"), st.integers(0, 5), st.sampled_from(("Failed", "Running"))),
)


def _pending(pod: dict[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    return (
        spec.get("runtimeClassName") == RUNTIME_CLASS
        and not spec.get("nodeName")
        and not pod["metadata"].get("deletionTimestamp")
    )


def full_pass(emu: KubernetesApiEmulator) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """What a pass over every stored Pod decides: the binds in order and the messages of
    the Pods left pending."""
    pods, nodes = list(emu.read_objects(PODS)), list(emu.read_objects(NODES))
    used = usage(pods)
    pending = sorted(
        filter(_pending, pods),
        key=lambda pod: (
            -int(pod["spec"].get("priority") or 0),
            pod["metadata"]["creationTimestamp"],
        ),
    )
    binds, messages = [], {}
    for pod in pending:
        node, message = choose(pod, nodes, used)
        if node is None:
            messages[pod["metadata"]["name"]] = message
        else:
            place(used, node, pod)
            binds.append((pod["metadata"]["name"], node))
    return binds, messages


def apply_pod_op(emu: KubernetesApiEmulator, op: tuple[Any, ...]) -> None:
    name = f"p{op[1]}" if len(op) > 1 else ""
    exists = emu.read_object(PODS, "default", name) is not None
    if op[0] == "create" and not exists:
        _, _, cpu, memory, priority, node, companion = op
        spec: dict[str, Any] = {
            "containers": [
                {"name": "c", "resources": {"requests": {"cpu": cpu, "memory": memory}}}
            ],
            "priority": priority,
        }
        if companion:
            spec["runtimeClassName"] = RUNTIME_CLASS
        if node:
            spec["nodeName"] = node
        put_pod(emu, name, **spec)
    elif op[0] == "delete" and exists:
        emu.delete_object(PODS, "default", name)
    elif op[0] == "end" and exists:
        emu.patch_object(PODS, "default", name, {"status": {"phase": op[2]}}, "status")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(st.tuples(pod_ops, st.booleans()), min_size=3, max_size=40),
    history=st.sampled_from((3, 10, 100_000)),
)
def test_the_binder_decides_as_a_pass_over_every_pod(
    steps: list[tuple[tuple[Any, ...], bool]], history: int
) -> None:
    """Each step changes the Pods, then (or not) the binder makes a pass."""
    emu = emulator(history)
    for index, name in enumerate(NODE_NAMES):
        emu.put_object(NODES, {"metadata": {"name": name}})
        allocatable = {"cpu": str(index + 1), "memory": "1Gi"}
        emu.patch_object(NODES, None, name, {"status": {"allocatable": allocatable}}, "status")
    binder = StandInBinder(emu)
    for op, then_pass in steps:
        apply_pod_op(emu, op)
        if not then_pass:
            continue
        assert binder.used() == usage(emu.read_objects(PODS))
        binds, messages = full_pass(emu)
        emu.written.clear()
        binder.bind_pending()
        assert emu.written == binds
        for name, message in messages.items():
            pod = emu.read_object(PODS, "default", name)
            assert pod is not None
            assert {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
            } in pod["status"]["conditions"]


# ------------------------------------------------------- the collector, generated

owner_ops = st.one_of(
    st.tuples(st.just("owner"), st.integers(0, 2)),
    st.tuples(st.just("owner"), st.integers(0, 2)),
    st.tuples(st.just("disown"), st.integers(0, 2)),
    st.tuples(st.just("pod"), st.integers(0, 4), st.integers(-1, 2), st.booleans()),
    st.tuples(st.just("pod"), st.integers(0, 4), st.integers(0, 2), st.booleans()),
    st.tuples(st.just("repoint"), st.integers(0, 4), st.integers(-1, 2)),
    st.tuples(st.just("delete"), st.integers(0, 4)),
)


def expected_events(emu: KubernetesApiEmulator) -> list[tuple[str, str]]:
    """What a scan of every stored Pod would write: a deletion (or, with finalizers, the
    mark) of each Pod whose controllers are all gone, in list order."""
    owners = {vpod["metadata"]["uid"] for vpod in emu.read_objects(VIRTUALPODS.key)}
    events = []
    for pod in emu.read_objects(PODS):
        meta = pod["metadata"]
        refs = [ref for ref in meta.get("ownerReferences") or [] if ref.get("controller")]
        if refs and all(ref.get("uid") not in owners for ref in refs):
            if not meta.get("finalizers"):
                events.append(("DELETED", meta["name"]))
            elif not meta.get("deletionTimestamp"):
                events.append(("MODIFIED", meta["name"]))
    return events


def owner_uid(emu: KubernetesApiEmulator, uids: dict[int, str], index: int) -> str:
    """A VirtualPod's uid, also once it is deleted (-1: one that never was)."""
    if index < 0:
        return "never-there"
    vpod = emu.read_object(VIRTUALPODS.key, "default", f"v{index}")
    if vpod is not None:
        uids[index] = vpod["metadata"]["uid"]
    return uids.get(index, f"not-yet-{index}")


def apply_owner_op(emu: KubernetesApiEmulator, op: tuple[Any, ...], uids: dict[int, str]) -> None:
    kind = op[0]
    if kind in ("owner", "disown"):
        name = f"v{op[1]}"
        exists = emu.read_object(VIRTUALPODS.key, "default", name) is not None
        if kind == "owner" and not exists:
            created = emu.put_object(VIRTUALPODS.key, {"metadata": {"name": name}})
            uids[op[1]] = created["metadata"]["uid"]
        elif kind == "disown" and exists:
            emu.delete_object(VIRTUALPODS.key, "default", name)
        return
    name = f"p{op[1]}"
    pod = emu.read_object(PODS, "default", name)
    if kind == "pod" and pod is None:
        meta: dict[str, Any] = {
            "name": name,
            "ownerReferences": [{"uid": owner_uid(emu, uids, op[2]), "controller": True}],
        }
        if op[3]:
            meta["finalizers"] = ["f"]
        emu.put_object(PODS, {"metadata": meta, "spec": {}})
    elif kind == "repoint" and pod is not None:
        refs = [{"uid": owner_uid(emu, uids, op[2]), "controller": True}] if op[2] >= 0 else None
        emu.patch_object(PODS, "default", name, {"metadata": {"ownerReferences": refs}})
    elif kind == "delete" and pod is not None:
        emu.patch_object(PODS, "default", name, {"metadata": {"finalizers": None}})
        if emu.read_object(PODS, "default", name) is not None:
            emu.delete_object(PODS, "default", name)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(st.tuples(owner_ops, st.booleans()), min_size=3, max_size=40),
    history=st.sampled_from((3, 10, 100_000)),
)
def test_the_collector_deletes_as_a_scan_of_every_pod(
    steps: list[tuple[tuple[Any, ...], bool]], history: int
) -> None:
    """Each step changes the VirtualPods or Pods, then (or not) the collector makes a pass."""
    emu = emulator(history)
    collector = StandInGarbageCollector(emu)
    uids: dict[int, str] = {}
    for op, then_collect in steps:
        apply_owner_op(emu, op, uids)
        if not then_collect:
            continue
        expected = expected_events(emu)
        emu.written.clear()
        collector.collect()
        assert emu.written == expected

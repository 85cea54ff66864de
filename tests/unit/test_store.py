"""The emulator's object store, as the API server behaves where Kopf and the stand-ins
depend on it: server-owned metadata, resourceVersions, the status subresource, and
stored versions that never change once written (watch history shares them)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from virtualpod.testing.objects import VIRTUALPODS, ApiError, ResourceSpec, Target
from virtualpod.testing.store import Change, ObjectStore

PODS = ResourceSpec("", "v1", "pods", "Pod", namespaced=True, subresources=frozenset({"status"}))
MERGE = "application/merge-patch+json"


def target(name: str, subresource: str | None = None, spec: ResourceSpec = PODS) -> Target:
    return Target(spec, "default", name, subresource)


def stored_pod(store: ObjectStore, name: str = "p", **extra: Any) -> dict[str, Any]:
    return store.create(
        PODS,
        "default",
        {
            "metadata": {"name": name, "labels": {"app": "a"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            **extra,
        },
    )


def snapshot(store: ObjectStore) -> list[str]:
    """Every recorded version, serialized: equal before and after a write means no stored
    version was changed in place."""
    return [json.dumps(change.obj, sort_keys=True) for change in store.history]


def test_create_sets_server_metadata_and_drops_status() -> None:
    store = ObjectStore()
    sent = {"metadata": {"generateName": "p-", "resourceVersion": "7"}, "status": {"x": 1}}
    before = copy.deepcopy(sent)
    obj = store.create(PODS, "default", sent)
    meta = obj["metadata"]
    assert meta["name"].startswith("p-")
    assert len(meta["name"]) == len("p-") + 5
    assert (meta["namespace"], meta["generation"], meta["resourceVersion"]) == ("default", 1, "1")
    assert {"uid", "creationTimestamp"} <= meta.keys()
    assert "status" not in obj
    assert (obj["apiVersion"], obj["kind"]) == ("v1", "Pod")
    assert sent == before


def test_create_of_an_existing_name_is_a_conflict() -> None:
    store = ObjectStore()
    stored_pod(store)
    with pytest.raises(ApiError) as refused:
        stored_pod(store)
    assert refused.value.code == 409


@pytest.mark.parametrize(
    ("subresource", "patch", "expected_spec", "expected_status", "generation"),
    [
        (None, {"spec": {"nodeName": "n"}}, "n", {"phase": "Pending"}, 2),
        (None, {"status": {"phase": "Running"}}, None, {"phase": "Pending"}, 1),
        ("status", {"status": {"phase": "Running"}}, None, {"phase": "Running"}, 1),
        ("status", {"spec": {"nodeName": "n"}}, None, {"phase": "Pending"}, 1),
        ("status", {"status": None}, None, None, 1),
    ],
    ids=[
        "main URL changes spec and bumps generation",
        "main URL cannot change status",
        "status URL changes status, not generation",
        "status URL cannot change spec",
        "status URL can remove status",
    ],
)
def test_merge_patch_splits_spec_and_status(
    subresource: str | None,
    patch: dict[str, Any],
    expected_spec: str | None,
    expected_status: dict[str, Any] | None,
    generation: int,
) -> None:
    store = ObjectStore()
    stored_pod(store)
    store.patch(target("p", "status"), MERGE, {"status": {"phase": "Pending"}})
    before = snapshot(store)
    obj = store.patch(target("p", subresource), MERGE, patch)
    assert obj["spec"].get("nodeName") == expected_spec
    assert obj.get("status") == expected_status
    assert obj["metadata"]["generation"] == generation
    assert snapshot(store)[: len(before)] == before


def test_a_no_op_patch_keeps_the_resource_version() -> None:
    store = ObjectStore()
    old = stored_pod(store)
    assert store.patch(target("p"), MERGE, {"metadata": {"labels": {"app": "a"}}}) is old
    assert store.rv == 1


def test_a_stale_resource_version_is_a_conflict() -> None:
    store = ObjectStore()
    stored_pod(store)
    store.patch(target("p"), MERGE, {"metadata": {"labels": {"b": "1"}}})
    with pytest.raises(ApiError) as refused:
        store.patch(target("p"), MERGE, {"metadata": {"resourceVersion": "1"}})
    assert refused.value.code == 409


def test_server_owned_metadata_survives_a_patch() -> None:
    store = ObjectStore()
    old = stored_pod(store)
    patch = {"metadata": {"uid": "mine", "name": "other", "labels": {"app": None, "b": "1"}}}
    new = store.patch(target("p"), MERGE, patch)
    assert (new["metadata"]["uid"], new["metadata"]["name"]) == (
        old["metadata"]["uid"],
        "p",
    )
    assert new["metadata"]["labels"] == {"b": "1"}
    assert old["metadata"]["labels"] == {"app": "a"}


def test_a_json_patch_failing_its_test_is_unprocessable() -> None:
    store = ObjectStore()
    stored_pod(store)
    ops = [{"op": "test", "path": "/spec/nodeName", "value": "x"}]
    with pytest.raises(ApiError) as refused:
        store.patch(target("p"), "application/json-patch+json", ops)
    assert refused.value.code == 422


def test_bind_sets_node_and_scheduled_once() -> None:
    store = ObjectStore()
    stored_pod(store, status={"conditions": [{"type": "Ready", "status": "False"}]})
    store.patch(
        target("p", "status"),
        MERGE,
        {"status": {"conditions": [{"type": "PodScheduled", "status": "False"}]}},
    )
    before = snapshot(store)
    bound = store.bind(target("p"), "n")
    assert bound["spec"]["nodeName"] == "n"
    assert bound["status"] == {
        "conditions": [{"type": "PodScheduled", "status": "True"}],
        "phase": "Pending",
    }
    assert snapshot(store)[: len(before)] == before
    with pytest.raises(ApiError) as refused:
        store.bind(target("p"), "m")
    assert refused.value.code == 409


def test_delete_waits_for_finalizers() -> None:
    store = ObjectStore()
    store.create(VIRTUALPODS, "default", {"metadata": {"name": "v", "finalizers": ["f"]}})
    vpod = target("v", spec=VIRTUALPODS)
    marked = store.delete(vpod)
    assert marked["metadata"]["deletionTimestamp"]
    assert store.delete(vpod) is marked
    gone = store.patch(vpod, MERGE, {"metadata": {"finalizers": None}})
    assert [c.type for c in store.history] == ["ADDED", "MODIFIED", "DELETED"]
    assert store.history[-1].obj is gone
    assert store.history[1].obj["metadata"]["finalizers"] == ["f"]
    with pytest.raises(ApiError) as missing:
        store.existing(vpod)
    assert missing.value.code == 404


def test_delete_without_finalizers_reports_the_last_version() -> None:
    store = ObjectStore()
    created = stored_pod(store)
    deleted = store.delete(target("p"))
    assert deleted["metadata"]["resourceVersion"] == "2"
    assert created["metadata"]["resourceVersion"] == "1"
    assert [c.type for c in store.history] == ["ADDED", "DELETED"]


@pytest.mark.parametrize(
    "obj",
    [{}, {"metadata": {"name": "é", "labels": {"a": "b"}}, "spec": [1, 2.5, None, True]}],
    ids=["empty object", "nested, non-ASCII"],
)
def test_a_watch_line_is_the_event_as_json(obj: dict[str, Any]) -> None:
    change = Change(3, PODS.key, "MODIFIED", obj)
    assert change.line() == json.dumps({"type": "MODIFIED", "object": obj}).encode() + b"\n"
    assert change.body() == json.dumps(obj).encode()


def test_history_expires_oldest_first() -> None:
    store = ObjectStore(history_limit=4)
    for index in range(5):
        stored_pod(store, f"p{index}")
    assert [c.rv for c in store.history] == [4, 5]
    assert store.expired(2)
    assert not store.expired(3)
    assert [c.rv for c in store.changes_after(4)] == [5]


async def test_a_change_wakes_the_watches_of_its_resource_only() -> None:
    store = ObjectStore()
    pods, vpods, anything = (
        store.changed_for(PODS.key),
        store.changed_for(VIRTUALPODS.key),
        store.changed,
    )
    stored_pod(store)
    assert (pods.is_set(), vpods.is_set(), anything.is_set()) == (True, False, True)
    assert store.changed_for(PODS.key) is not pods
    assert store.changed_for(VIRTUALPODS.key) is vpods
    store.notify()
    assert vpods.is_set()


def test_a_write_answer_is_the_bytes_of_its_watch_event() -> None:
    store = ObjectStore()
    created = stored_pod(store)
    assert store.serialized(created) is store.history[-1].body()
    assert store.serialized(created) == json.dumps(created).encode()
    store.patch(target("p"), MERGE, {"metadata": {"labels": {"b": "1"}}})
    assert store.serialized(created) == json.dumps(created).encode()

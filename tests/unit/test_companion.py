"""The companion Pod builder and the readings of Pods and Leases, as tables."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from virtualpod.core.companion import (
    PodState,
    admitted_resources,
    companion_pod,
    is_quota_refusal,
    measured_headroom,
    mirrors,
    owned_by,
    placement,
    preferred_terms,
    resources_annotation,
)

IMAGE = "registry.k8s.io/pause:3.10"
MI = 2**20
NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)


def vpod(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "virtualpod.dev/v1alpha1",
        "kind": "VirtualPod",
        "metadata": {"name": "web", "namespace": "team", "uid": "u-1"},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "debian.qcow2",
                    "resources": {"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}},
                }
            ],
            **spec,
        },
    }


def test_pod_has_the_name_namespace_labels_and_controlling_owner() -> None:
    pod = companion_pod(vpod(), image=IMAGE)
    meta = pod["metadata"]
    assert (pod["apiVersion"], pod["kind"]) == ("v1", "Pod")
    assert (meta["name"], meta["namespace"]) == ("web", "team")
    assert meta["labels"] == {"virtualpod.dev/virtualpod": "web", "virtualpod.dev/uid": "u-1"}
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "virtualpod.dev/v1alpha1",
            "kind": "VirtualPod",
            "name": "web",
            "uid": "u-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert owned_by(pod, "u-1")
    assert not owned_by(pod, "u-2")


def test_containers_mirror_names_and_resources_exactly_with_the_pause_image() -> None:
    obj = vpod(
        initContainers=[{"name": "fetch", "resources": {"limits": {"cpu": 2}}}],
    )
    spec = companion_pod(obj, image=IMAGE)["spec"]
    assert spec["containers"] == [
        {
            "name": "app",
            "image": IMAGE,
            "resources": {"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}},
        }
    ]
    # The pause binary exits at once with -v: the Pod's app containers can start.
    assert spec["initContainers"] == [
        {"name": "fetch", "image": IMAGE, "args": ["-v"], "resources": {"limits": {"cpu": 2}}}
    ]


def test_a_container_without_resources_gets_none_for_limitrange_to_default() -> None:
    obj = vpod(containers=[{"name": "app"}])
    assert companion_pod(obj, image=IMAGE)["spec"]["containers"] == [
        {"name": "app", "image": IMAGE}
    ]


def test_pod_runs_nothing_of_the_cluster_and_counts_the_vmm_overhead() -> None:
    spec = companion_pod(vpod(), image=IMAGE)["spec"]
    assert spec["runtimeClassName"] == "virtualpod"
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert "priority" not in spec  # the Priority admission computes it from the class


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, {"virtualpod.dev/libvirt-host": "true"}),
        (
            {"nodeSelector": {"disk": "ssd"}},
            {"virtualpod.dev/libvirt-host": "true", "disk": "ssd"},
        ),
    ],
    ids=["libvirt hosts only", "merged with the VirtualPod's selector"],
)
def test_node_selector(spec: dict[str, Any], expected: dict[str, str]) -> None:
    assert companion_pod(vpod(**spec), image=IMAGE)["spec"]["nodeSelector"] == expected


TOLERATIONS = [{"key": "dedicated", "operator": "Equal", "value": "vm", "effect": "NoSchedule"}]
REQUIRED = {
    "requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
        ]
    }
}
TERM = {
    "weight": 100,
    "preference": {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]},
}


def test_priority_class_affinity_and_tolerations_are_copied() -> None:
    obj = vpod(
        priorityClassName="batch-low", tolerations=TOLERATIONS, affinity={"nodeAffinity": REQUIRED}
    )
    spec = companion_pod(obj, image=IMAGE)["spec"]
    assert spec["priorityClassName"] == "batch-low"
    assert spec["tolerations"] == TOLERATIONS
    assert spec["affinity"] == {"nodeAffinity": REQUIRED}


def test_usage_preference_is_appended_to_the_virtualpods_affinity() -> None:
    obj = vpod(affinity={"nodeAffinity": REQUIRED})
    spec = companion_pod(obj, image=IMAGE, preferred=[TERM])["spec"]
    assert spec["affinity"]["nodeAffinity"] == {
        **REQUIRED,
        "preferredDuringSchedulingIgnoredDuringExecution": [TERM],
    }
    assert obj["spec"]["affinity"] == {"nodeAffinity": REQUIRED}  # not mutated


@pytest.mark.parametrize(
    ("spec", "node_name", "expected"),
    [
        ({}, None, None),
        ({"nodeName": "node-a"}, None, "node-a"),
        ({}, "node-b", "node-b"),
        ({"nodeName": "node-a"}, "node-b", "node-b"),
    ],
    ids=["scheduler places it", "spec.nodeName binds", "sticky or single host", "sticky wins"],
)
def test_binding(spec: dict[str, Any], node_name: str | None, expected: str | None) -> None:
    pod = companion_pod(vpod(**spec), image=IMAGE, node_name=node_name, preferred=[TERM])
    assert pod["spec"].get("nodeName") == expected
    # A bound Pod needs no preference.
    assert ("affinity" in pod["spec"]) is (expected is None)


def test_mirrors_tells_a_changed_virtualpod_from_admission_defaults() -> None:
    obj = vpod()
    pod = companion_pod(obj, image=IMAGE)
    pod["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "1"  # LimitRange default
    assert mirrors(pod, resources_annotation(obj))
    obj["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "750m"
    assert not mirrors(pod, resources_annotation(obj))


def test_admitted_resources_are_the_pods_after_admission() -> None:
    pod = companion_pod(vpod(containers=[{"name": "app"}]), image=IMAGE)
    pod["spec"]["containers"][0]["resources"] = {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }
    assert admitted_resources(pod) == {
        "containers": [{"name": "app", "resources": pod["spec"]["containers"][0]["resources"]}],
        "initContainers": [],
    }


def scheduled(status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {
        "conditions": [
            {"type": "PodScheduled", "status": status, "reason": reason, "message": message}
        ]
    }


UNFIT = "0/2 nodes are available: 2 Insufficient memory."


@pytest.mark.parametrize(
    ("pod", "state", "node", "phrase"),
    [
        (None, PodState.GONE, None, "does not exist"),
        ({"spec": {}}, PodState.PENDING, None, ""),
        (
            {"spec": {}, "status": scheduled("False", "Unschedulable", UNFIT)},
            PodState.UNSCHEDULABLE,
            None,
            UNFIT,
        ),
        ({"spec": {"nodeName": "n1"}, "status": scheduled("True")}, PodState.BOUND, "n1", ""),
        (
            {
                "spec": {"nodeName": "n1"},
                "status": {"phase": "Failed", "reason": "Evicted", "message": "low memory"},
            },
            PodState.GONE,
            "n1",
            "low memory",
        ),
        (
            {"metadata": {"deletionTimestamp": "x"}, "spec": {"nodeName": "n1"}},
            PodState.GONE,
            "n1",
            "deleted",
        ),
    ],
    ids=["missing", "waiting for the scheduler", "unschedulable", "bound", "evicted", "deleting"],
)
def test_placement(
    pod: dict[str, Any] | None, state: PodState, node: str | None, phrase: str
) -> None:
    seen = placement(pod)
    assert (seen.state, seen.node) == (state, node)
    assert phrase in seen.message


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (
            403,
            'pods "r2" is forbidden: exceeded quota: mem, requested: requests.memory=600Mi',
            True,
        ),
        (
            403,
            'pods "r2" is forbidden: failed quota: mem: must specify requests.memory for: pause',
            True,
        ),
        (403, 'pods "r2" is forbidden: maximum memory usage per Container is 1Gi', False),
        (422, "exceeded quota", False),
    ],
    ids=["exceeded", "must specify", "limitrange maximum", "not a 403"],
)
def test_quota_refusal(code: int, message: str, expected: bool) -> None:
    assert is_quota_refusal(code, message) is expected


def lease(name: str, renewed: datetime.datetime, **annotations: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "virtualpod-system", "annotations": annotations},
        "spec": {
            "holderIdentity": name.removeprefix("virtualpod-node-"),
            "leaseDurationSeconds": 15,
            "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        },
    }


A = "virtualpod.dev/allocatable-memory"
W = "virtualpod.dev/vm-working-set"
AV = "virtualpod.dev/memory-available"


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (
            lease("virtualpod-node-a", NOW, **{A: str(4096 * MI), W: str(1024 * MI)}),
            {"a": 3072 * MI},
        ),
        (
            lease(
                "virtualpod-node-a",
                NOW,
                **{A: str(4096 * MI), W: str(1024 * MI), AV: str(512 * MI)},
            ),
            {"a": 512 * MI},
        ),
        (lease("virtualpod-node-a", NOW, **{A: "1", W: "5"}), {"a": 0}),
        (lease("virtualpod-node-a", NOW - datetime.timedelta(seconds=16), **{A: "9", W: "1"}), {}),
        (lease("kube-scheduler", NOW, **{A: "9", W: "1"}), {}),
        (lease("virtualpod-node-a", NOW, **{A: "lots", W: "1"}), {}),
    ],
    ids=[
        "allocatable - working set",
        "pressure signal is lower",
        "never negative",
        "stale",
        "not ours",
        "garbage",
    ],
)
def test_measured_headroom_from_leases(obj: dict[str, Any], expected: dict[str, int]) -> None:
    assert measured_headroom([obj], NOW) == expected


def test_preference_weights_follow_measured_headroom() -> None:
    terms = preferred_terms({"a": 1024 * MI, "b": 4096 * MI, "c": 0})
    assert [(t["weight"], t["preference"]["matchFields"][0]["values"]) for t in terms] == [
        (100, ["b"]),
        (25, ["a"]),
    ]
    assert preferred_terms({}) == []
    assert preferred_terms({"a": 1, "b": 10**12})[1]["weight"] == 1

"""The emulator's stand-ins for Pod admission and kube-scheduler, as tables: they must
say what the real ones say (messages measured on kube-apiserver/kube-scheduler v1.32)."""

from __future__ import annotations

from typing import Any

import pytest

from virtualpod.testing.admission import (
    apply_limit_ranges,
    check_quotas,
    default_requests_from_limits,
    pod_request,
)
from virtualpod.testing.binder import choose, usage
from virtualpod.testing.objects import ApiError

MI = 2**20


def pod(name: str = "p", node: str | None = None, **resources: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "app", "resources": resources}]}
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": name}, "spec": spec}


def node(name: str, memory: str = "1Gi", cpu: str = "2", **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels},
        "status": {"allocatable": {"cpu": cpu, "memory": memory}},
    }


def test_a_limit_without_request_defaults_the_request() -> None:
    obj = pod(limits={"memory": "1Gi"})
    default_requests_from_limits(obj)
    assert obj["spec"]["containers"][0]["resources"]["requests"] == {"memory": "1Gi"}


LIMIT_RANGE = {
    "spec": {
        "limits": [
            {
                "type": "Container",
                "default": {"cpu": "1", "memory": "512Mi"},
                "defaultRequest": {"cpu": "100m"},
            }
        ]
    }
}


@pytest.mark.parametrize(
    ("resources", "expected", "note"),
    [
        (
            {},
            {
                "limits": {"cpu": "1", "memory": "512Mi"},
                "requests": {"cpu": "100m", "memory": "512Mi"},
            },
            "cpu, memory request for container app; cpu, memory limit for container app",
        ),
        (
            {"limits": {"memory": "2Gi"}, "requests": {"memory": "2Gi"}},
            {"limits": {"cpu": "1", "memory": "2Gi"}, "requests": {"cpu": "100m", "memory": "2Gi"}},
            "cpu request for container app; cpu limit for container app",
        ),
    ],
    ids=["nothing set: all defaults", "set values are kept"],
)
def test_limit_range_defaults_and_annotation(
    resources: dict[str, Any], expected: dict[str, Any], note: str
) -> None:
    obj = pod(**resources)
    apply_limit_ranges(obj, [LIMIT_RANGE])
    assert obj["spec"]["containers"][0]["resources"] == expected
    annotation = obj["metadata"]["annotations"]["kubernetes.io/limit-ranger"]
    assert annotation == f"LimitRanger plugin set: {note}"


QUOTA = {"metadata": {"name": "mem"}, "spec": {"hard": {"requests.memory": "1Gi"}}}


def test_quota_refusal_has_the_api_servers_message() -> None:
    used = pod("r1", requests={"memory": "600Mi"})
    with pytest.raises(ApiError) as refused:
        check_quotas(pod("r2", requests={"memory": "600Mi"}), [QUOTA], [used])
    assert refused.value.code == 403
    assert refused.value.message == (
        'pods "r2" is forbidden: exceeded quota: mem, requested: requests.memory=600Mi, '
        "used: requests.memory=600Mi, limited: requests.memory=1Gi"
    )


def test_quota_admits_what_fits_and_ignores_ended_pods() -> None:
    ended = pod("old", requests={"memory": "900Mi"})
    ended["status"] = {"phase": "Failed"}
    check_quotas(pod("r2", requests={"memory": "600Mi"}), [QUOTA], [ended])


def test_effective_request_counts_init_containers_and_overhead() -> None:
    obj = pod(requests={"memory": "100Mi"})
    obj["spec"]["initContainers"] = [{"name": "i", "resources": {"requests": {"memory": "300Mi"}}}]
    obj["spec"]["overhead"] = {"memory": "256Mi"}
    assert pod_request(obj, "memory") == (300 + 256) * MI


PREFER_B = {
    "nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {
                "weight": 100,
                "preference": {
                    "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]
                },
            }
        ]
    }
}


@pytest.mark.parametrize(
    ("candidate", "nodes", "others", "expected"),
    [
        (pod(requests={"memory": "256Mi"}), [node("a"), node("b", "2Gi")], [], ("b", "")),
        (
            {**pod(requests={"memory": "256Mi"}), "spec": {**pod()["spec"], "affinity": PREFER_B}},
            [node("a", "4Gi"), node("b")],
            [],
            ("b", ""),
        ),
        (
            {**pod(), "spec": {**pod()["spec"], "nodeSelector": {"disk": "ssd"}}},
            [node("a"), node("b", disk="ssd")],
            [],
            ("b", ""),
        ),
        (
            pod(requests={"memory": "768Mi"}),
            [node("a"), node("b")],
            [
                pod("x", "a", requests={"memory": "512Mi"}),
                pod("y", "b", requests={"memory": "512Mi"}),
            ],
            (
                None,
                "0/2 nodes are available: 2 Insufficient memory. preemption: 0/2 nodes are "
                "available: 2 No preemption victims found for incoming pod.",
            ),
        ),
        (
            {**pod(), "spec": {**pod()["spec"], "nodeSelector": {"disk": "ssd"}}},
            [node("a")],
            [],
            (
                None,
                "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. "
                "preemption: 0/1 nodes are available: 1 No preemption victims found for "
                "incoming pod.",
            ),
        ),
        (pod(), [], [], (None, "no nodes available to schedule pods")),
    ],
    ids=[
        "most free memory",
        "preferred affinity beats free memory",
        "node selector",
        "insufficient memory everywhere",
        "selector matches nothing",
        "no nodes",
    ],
)
def test_binder_chooses_like_the_scheduler(
    candidate: dict[str, Any],
    nodes: list[dict[str, Any]],
    others: list[dict[str, Any]],
    expected: tuple[str | None, str],
) -> None:
    assert choose(candidate, nodes, usage(others)) == expected


def test_an_untolerated_taint_keeps_a_pod_off_the_node() -> None:
    tainted = node("a")
    tainted["spec"] = {"taints": [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]}
    name, message = choose(pod(), [tainted], {})
    assert name is None
    assert "1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }" in message
    tolerant = pod()
    tolerant["spec"]["tolerations"] = [
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert choose(tolerant, [tainted], {}) == ("a", "")

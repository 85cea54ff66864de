"""Which host serves a VirtualPod, and the resources its VM is sized from."""

from __future__ import annotations

from typing import Any

import pytest

from virtualpod.core.binding import (
    NODE_LABEL,
    bound_node,
    node_selector,
    serves,
    with_admitted_resources,
)

SPEC_RESOURCES = {"requests": {"memory": "64Mi"}}
ADMITTED_RESOURCES = {"requests": {"memory": "128Mi"}, "limits": {"memory": "256Mi"}}


def vpod(*, node: str | None = None, spec_node: str | None = None, **status: Any) -> dict[str, Any]:
    labels = {NODE_LABEL: node} if node is not None else {}
    spec: dict[str, Any] = {
        "containers": [{"name": "app", "resources": SPEC_RESOURCES}],
        "initContainers": [{"name": "init", "resources": SPEC_RESOURCES}],
    }
    if spec_node is not None:
        spec["nodeName"] = spec_node
    return {"metadata": {"name": "v", "labels": labels}, "spec": spec, "status": status}


ADMITTED = {
    "containers": [{"name": "app", "resources": ADMITTED_RESOURCES}],
    "initContainers": [{"name": "init", "resources": {}}],
}


def test_the_selector_of_a_host_is_its_node_label() -> None:
    assert node_selector("node-a") == "virtualpod.dev/node=node-a"


@pytest.mark.parametrize(
    ("body", "node"),
    [
        (vpod(), None),
        (vpod(node="node-a"), "node-a"),
        (vpod(node=""), None),
        ({"metadata": {"labels": {NODE_LABEL: 7}}}, None),
        ({}, None),
    ],
)
def test_bound_node_is_the_label(body: dict[str, Any], node: str | None) -> None:
    assert bound_node(body) == node


@pytest.mark.parametrize(
    ("body", "host", "served"),
    [
        (vpod(node="node-a"), "node-a", True),
        (vpod(node="node-b"), "node-a", False),
        # unbound: nobody's, whatever spec.nodeName says (the controller binds it)
        (vpod(), "node-a", False),
        (vpod(spec_node="node-a"), "node-a", False),
        (vpod(node="node-b", spec_node="node-a"), "node-a", False),
    ],
)
def test_an_agent_serves_only_what_is_bound_to_its_host(
    body: dict[str, Any], host: str, served: bool
) -> None:
    assert serves(body, host) is served


def test_admitted_resources_replace_the_spec_by_container_name() -> None:
    resized = with_admitted_resources(vpod(node="node-a", admitted=ADMITTED))
    assert resized is not None
    assert resized["spec"]["containers"][0]["resources"] == ADMITTED_RESOURCES
    assert resized["spec"]["initContainers"][0]["resources"] == {}


def test_a_container_the_admitted_pod_lacks_gets_no_resources() -> None:
    admitted = {"containers": [{"name": "other", "resources": ADMITTED_RESOURCES}]}
    resized = with_admitted_resources(vpod(admitted=admitted))
    assert resized is not None
    assert resized["spec"]["containers"][0]["resources"] == {}


@pytest.mark.parametrize("garbage", [None, "x", {}, {"containers": "x"}, []])
def test_nothing_admitted_is_no_manifest(garbage: object) -> None:
    assert with_admitted_resources(vpod(admitted=garbage)) is None

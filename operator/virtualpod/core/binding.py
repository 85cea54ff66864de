"""Which host serves a VirtualPod, and with which resources (the Pod as admitted).

The controller binds a VirtualPod through its companion Pod: it writes
`status.admitted` (the Pod's containers' resources after admission, e.g. LimitRange
defaults) and then labels the VirtualPod with its node, adding the agent's finalizer in
the same write. An agent serves exactly the VirtualPods labelled with its host, and only
once `status.admitted` is there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from virtualpod.core.spec import API_GROUP

#: The label an agent's watch selects on: the node the companion Pod is bound to.
NODE_LABEL = f"{API_GROUP}/node"
#: The agent's finalizer: a bound VirtualPod goes away only once its VM has.
FINALIZER = f"{API_GROUP}/finalizer"
#: The containers lists that carry resources, as in a PodSpec.
CONTAINER_LISTS = ("containers", "initContainers")


def node_selector(host_name: str) -> str:
    """The server-side label selector of one host's agent."""
    return f"{NODE_LABEL}={host_name}"


def bound_node(body: Mapping[str, Any]) -> str | None:
    """The node the VirtualPod is bound to (its label), or None while unbound."""
    labels = (body.get("metadata") or {}).get("labels") or {}
    node = labels.get(NODE_LABEL)
    return node if isinstance(node, str) and node else None


def admitted(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """`status.admitted` when it is a usable mapping, else None (not admitted yet)."""
    value = (body.get("status") or {}).get("admitted")
    if not isinstance(value, Mapping) or not isinstance(value.get("containers"), list):
        return None
    return value


def _resources_by_name(entries: object) -> dict[str, Any]:
    if not isinstance(entries, Sequence) or isinstance(entries, str):
        return {}
    return {
        entry["name"]: entry.get("resources") or {}
        for entry in entries
        if isinstance(entry, Mapping) and isinstance(entry.get("name"), str)
    }


def with_admitted_resources(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The manifest with each container's `resources` replaced by the admitted ones.

    None while nothing is admitted. A container the admitted Pod does not list keeps
    no resources at all (the Pod is what the cluster accounts for, never the spec).
    """
    accepted = admitted(body)
    if accepted is None:
        return None
    raw = body.get("spec")
    spec = dict(raw) if isinstance(raw, Mapping) else {}
    for key in CONTAINER_LISTS:
        resources = _resources_by_name(accepted.get(key))
        containers = spec.get(key)
        if not isinstance(containers, list):
            continue
        spec[key] = [
            {**container, "resources": resources.get(str(container.get("name")), {})}
            if isinstance(container, Mapping)
            else container
            for container in containers
        ]
    return {**body, "spec": spec}


def serves(body: Mapping[str, Any], host_name: str) -> bool:
    """Whether this host's agent serves the VirtualPod: bound (labelled) to this host.

    Unbound VirtualPods are nobody's: the controller binds each, also for one host.
    """
    return bound_node(body) == host_name

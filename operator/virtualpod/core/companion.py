"""The companion Pod: how a VirtualPod shows up to kube-scheduler and the API server.

For every VirtualPod the controller creates one Pod that mirrors its containers'
resources exactly, with a pause image and the `virtualpod` RuntimeClass (whose
`overhead.podFixed` is the VMM's memory). The scheduler places that Pod like any other,
the node's allocatable counts it, and LimitRange, ResourceQuota and PriorityClass apply
through the API server's own admission; the VM then follows the Pod as admitted.

Everything here is pure: manifests in, manifests (or small values) out.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from virtualpod.core.lease import LEASE_PREFIX, lease_fresh, usage_from_lease
from virtualpod.core.spec import API_GROUP, API_VERSION, KIND

#: On the companion Pod: the VirtualPod's name and uid.
VIRTUALPOD_LABEL = f"{API_GROUP}/virtualpod"
UID_LABEL = f"{API_GROUP}/uid"
#: On the Nodes that run libvirtd (and an agent).
LIBVIRT_HOST_LABEL = f"{API_GROUP}/libvirt-host"
#: On the companion Pod: the containers' resources it was created from (JSON), so a
#: changed VirtualPod is told apart from admission's defaulting.
RESOURCES_ANNOTATION = f"{API_GROUP}/resources"
#: On the VirtualPod with the node label: a digest of `status.admitted`. Kopf handlers
#: react to metadata, never to status (nor to annotations under their own prefix), so
#: this label is how an agent learns of a new size.
ADMITTED_LABEL = f"{API_GROUP}/admitted"
RUNTIME_CLASS = "virtualpod"
#: The pause binary prints its version and exits 0 with this argument: an init
#: container must terminate for the Pod's app containers to start.
PAUSE_EXIT_ARGS = ("-v",)
#: nodeAffinity weights range over 1..100 (the API server refuses others).
MAX_WEIGHT = 100
NODE_NAME_FIELD = "metadata.name"

JSON = dict[str, Any]


# ------------------------------------------------------------------- the Pod


def requested_resources(vpod: Mapping[str, Any]) -> JSON:
    """The containers' names and resources, exactly as the VirtualPod states them."""
    spec = vpod.get("spec") or {}
    return {
        kind: [
            {"name": c.get("name"), "resources": copy.deepcopy(c.get("resources") or {})}
            for c in spec.get(kind) or []
        ]
        for kind in ("initContainers", "containers")
    }


def resources_annotation(vpod: Mapping[str, Any]) -> str:
    return json.dumps(requested_resources(vpod), sort_keys=True, separators=(",", ":"))


def _containers(items: Iterable[Mapping[str, Any]], image: str, *, init: bool) -> list[JSON]:
    result = []
    for item in items:
        container: JSON = {"name": item["name"], "image": image}
        if init:
            container["args"] = list(PAUSE_EXIT_ARGS)
        if item["resources"]:
            container["resources"] = item["resources"]
        result.append(container)
    return result


def _affinity(spec: Mapping[str, Any], preferred: Sequence[JSON]) -> JSON | None:
    affinity = copy.deepcopy(spec.get("affinity") or {})
    if preferred:
        node_affinity = affinity.setdefault("nodeAffinity", {})
        key = "preferredDuringSchedulingIgnoredDuringExecution"
        node_affinity[key] = [*node_affinity.get(key, []), *copy.deepcopy(list(preferred))]
    return affinity or None


def companion_pod(
    vpod: Mapping[str, Any],
    *,
    image: str,
    node_name: str | None = None,
    preferred: Sequence[JSON] = (),
) -> JSON:
    """The Pod that stands for `vpod` in the cluster.

    `node_name` binds it directly (the VirtualPod's `spec.nodeName`, a sticky
    re-creation, or a single-host operator); else the scheduler places it, with
    `preferred` node-affinity terms appended to the VirtualPod's own.
    """
    meta = vpod.get("metadata") or {}
    spec = vpod.get("spec") or {}
    name, uid = meta["name"], meta.get("uid")
    resources = requested_resources(vpod)
    labels = {VIRTUALPOD_LABEL: name}
    if uid:
        labels[UID_LABEL] = uid
    pod_spec: JSON = {
        "containers": _containers(resources["containers"], image, init=False),
        "nodeSelector": {LIBVIRT_HOST_LABEL: "true", **(spec.get("nodeSelector") or {})},
        "runtimeClassName": RUNTIME_CLASS,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
    }
    if resources["initContainers"]:
        pod_spec["initContainers"] = _containers(resources["initContainers"], image, init=True)
    bound = node_name or spec.get("nodeName")
    affinity = _affinity(spec, [] if bound else preferred)
    if affinity:
        pod_spec["affinity"] = affinity
    if spec.get("tolerations"):
        pod_spec["tolerations"] = copy.deepcopy(spec["tolerations"])
    if spec.get("priorityClassName"):
        pod_spec["priorityClassName"] = spec["priorityClassName"]
    if bound:
        pod_spec["nodeName"] = bound
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": meta.get("namespace", "default"),
            "labels": labels,
            "annotations": {RESOURCES_ANNOTATION: resources_annotation(vpod)},
            "ownerReferences": [
                {
                    "apiVersion": f"{API_GROUP}/{API_VERSION}",
                    "kind": KIND,
                    "name": name,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": pod_spec,
    }


def owned_by(pod: Mapping[str, Any], uid: str | None) -> bool:
    refs = (pod.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid and ref.get("controller") for ref in refs)


def mirrors(pod: Mapping[str, Any], resources: str) -> bool:
    """The Pod was made from the VirtualPod's current containers and resources (its
    `resources_annotation`)."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return bool(annotations.get(RESOURCES_ANNOTATION) == resources)


def admitted_resources(pod: Mapping[str, Any]) -> JSON:
    """`status.admitted`: the Pod's containers' resources as the API server admitted them."""
    spec = pod.get("spec") or {}
    return {
        kind: [
            {"name": c.get("name"), "resources": copy.deepcopy(c.get("resources") or {})}
            for c in spec.get(kind) or []
        ]
        for kind in ("containers", "initContainers")
    }


def admitted_digest(admitted: Mapping[str, Any]) -> str:
    text = json.dumps(admitted, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ------------------------------------------------------------- where it stands


class PodState(StrEnum):
    PENDING = "Pending"
    UNSCHEDULABLE = "Unschedulable"
    BOUND = "Bound"
    #: Deleted, being deleted, evicted or otherwise finished: to be created again.
    GONE = "Gone"


@dataclass(frozen=True)
class Placement:
    state: PodState
    node: str | None = None
    message: str = ""


def placement(pod: Mapping[str, Any] | None) -> Placement:
    """Where a companion Pod stands, as its spec and status say."""
    if pod is None:
        return Placement(PodState.GONE, message="the Pod does not exist")
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    node = spec.get("nodeName") or None
    if meta.get("deletionTimestamp"):
        return Placement(PodState.GONE, node, "the Pod is being deleted")
    if status.get("phase") in ("Failed", "Succeeded"):
        why = status.get("message") or status.get("reason") or f"phase {status['phase']}"
        return Placement(PodState.GONE, node, f"the Pod ended: {why}")
    if node:
        return Placement(PodState.BOUND, node)
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            return Placement(PodState.UNSCHEDULABLE, message=condition.get("message") or "")
    return Placement(PodState.PENDING)


def scheduled_message(namespace: str, name: str, node: str) -> str:
    """The scheduler's own wording for a bound Pod."""
    return f"Successfully assigned {namespace}/{name} to {node}"


def is_quota_refusal(code: int, message: str) -> bool:
    """The API server's ResourceQuota admission said no (403 `exceeded quota` / `failed quota`)."""
    return code == 403 and ("exceeded quota" in message or "failed quota" in message)


# ------------------------------------------------------- usage-aware preference


def lease_host(lease: Mapping[str, Any]) -> str | None:
    """The host a `virtualpod-node-<host>` Lease speaks for (its holder), else None."""
    meta, spec = lease.get("metadata") or {}, lease.get("spec") or {}
    name = str(meta.get("name") or "")
    if not name.startswith(LEASE_PREFIX) or len(name) == len(LEASE_PREFIX):
        return None
    holder = spec.get("holderIdentity")
    return holder if isinstance(holder, str) and holder else name[len(LEASE_PREFIX) :]


def measured_headroom(
    leases: Iterable[Mapping[str, Any]], now: datetime.datetime
) -> dict[str, int]:
    """Host -> measured headroom (bytes) from the agents' fresh, readable Leases."""
    headroom: dict[str, int] = {}
    for lease in leases:
        host = lease_host(lease)
        usage = usage_from_lease(lease)
        if host is not None and usage is not None and lease_fresh(lease, now):
            headroom[host] = max(0, usage.headroom_bytes)
    return headroom


def preferred_terms(headroom: Mapping[str, int]) -> list[JSON]:
    """Preferred node-affinity terms: weight 1..100 in proportion to measured headroom.

    The host with the most headroom gets 100; a host without any gets no term (the
    vSphere DRS rule: place new VMs where real usage leaves the most room).
    """
    known = {host: room for host, room in headroom.items() if room > 0}
    if not known:
        return []
    best = max(known.values())
    return [
        {
            "weight": max(1, round(MAX_WEIGHT * room / best)),
            "preference": {
                "matchFields": [{"key": NODE_NAME_FIELD, "operator": "In", "values": [host]}]
            },
        }
        for host, room in sorted(known.items(), key=lambda item: (-item[1], item[0]))
    ]

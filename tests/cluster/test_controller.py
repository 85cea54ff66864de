"""The controller role end to end: companion Pods through admission and scheduling,
and the binding recorded on the VirtualPod."""

from __future__ import annotations

from typing import Any

from tests.cluster.conftest import GI, Cluster
from tests.waiting import async_wait_for
from virtualpod.kube.controller import RECREATE_INTERVAL_SECONDS, controller


async def pod_of(cluster: Cluster, name: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        return await cluster.api.get(cluster.pod_path(name))

    return await async_wait_for(probe, timeout=15, what=f"companion Pod {name}")


async def test_companion_pod_mirrors_the_virtualpod_and_the_binding_is_recorded(
    cluster: Cluster,
) -> None:
    node = await cluster.node("node-a")
    await cluster.apply(
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": f"vp-batch-{cluster.test_id}"},
            "value": 1234,
        }
    )
    await cluster.start_controller()
    resources = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}
    created = await cluster.apply(
        cluster.vpod(
            "web",
            containers=[{"name": "app", "image": "debian.qcow2", "resources": resources}],
            initContainers=[{"name": "fetch", "resources": {"limits": {"cpu": "1"}}}],
            priorityClassName=f"vp-batch-{cluster.test_id}",
        )
    )
    vpod = await cluster.wait_scheduled("web", "True", "Scheduled")
    pod = await pod_of(cluster, "web")

    meta, spec = pod["metadata"], pod["spec"]
    assert meta["labels"]["virtualpod.dev/virtualpod"] == "web"
    assert meta["labels"]["virtualpod.dev/uid"] == created["metadata"]["uid"]
    (owner,) = meta["ownerReferences"]
    assert owner["uid"] == created["metadata"]["uid"]
    assert (owner["kind"], owner["controller"], owner["blockOwnerDeletion"]) == (
        "VirtualPod",
        True,
        True,
    )
    assert [c["name"] for c in spec["containers"]] == ["app"]
    assert [c["name"] for c in spec["initContainers"]] == ["fetch"]
    assert spec["containers"][0]["image"] == "registry.k8s.io/pause:3.10"
    assert spec["containers"][0]["resources"]["requests"]["memory"] == "256Mi"
    assert spec["runtimeClassName"] == "virtualpod"
    assert spec["overhead"] == {"memory": "256Mi"}  # RuntimeClass admission
    assert spec["priority"] == 1234  # Priority admission, from the class
    assert spec["automountServiceAccountToken"] is False
    assert spec["nodeSelector"]["virtualpod.dev/libvirt-host"] == "true"
    assert spec["nodeName"] == node

    status = vpod["status"]
    assert (status["podName"], status["nodeName"]) == ("web", node)
    assert status["admitted"]["containers"] == [
        {"name": "app", "resources": spec["containers"][0]["resources"]}
    ]
    (scheduled,) = [c for c in status["conditions"] if c["type"] == "Scheduled"]
    assert scheduled["message"] == f"Successfully assigned {cluster.namespace}/web to {node}"

    async def labelled() -> bool:
        obj = await cluster.api.get(cluster.vpod_path("web"))
        return bool(obj and obj["metadata"].get("labels", {}).get("virtualpod.dev/node") == node)

    await async_wait_for(labelled, timeout=10, what="the node label")
    # The agent's finalizer comes with the label: a bound VirtualPod outlives its VM.
    bound = await cluster.api.get(cluster.vpod_path("web"))
    assert bound is not None
    assert "virtualpod.dev/finalizer" in bound["metadata"]["finalizers"]


async def test_a_reverted_scheduled_condition_is_written_again(cluster: Cluster) -> None:
    """A stale writer (an agent's merge patch replaces the conditions list as a whole)
    drops `Scheduled`: the controller, level-triggered, puts it back."""
    node = await cluster.node("node-a")
    await cluster.start_controller()
    await cluster.apply(cluster.vpod("web"))
    await cluster.wait_scheduled("web", "True", "Scheduled")
    stale = [{"type": "Ready", "status": "True", "reason": "Running", "message": ""}]
    await cluster.api.merge_patch(
        cluster.vpod_path("web", "status"), {"status": {"conditions": stale}}
    )
    vpod = await cluster.wait_scheduled("web", "True", "Scheduled")
    types = {c["type"] for c in vpod["status"]["conditions"]}
    assert types == {"Ready", "Scheduled"}
    assert vpod["status"]["nodeName"] == node


async def test_node_selector_picks_the_node(cluster: Cluster) -> None:
    await cluster.node("plain", memory="8Gi")
    fast = await cluster.node("fast", disk="ssd")
    await cluster.start_controller()
    await cluster.apply(cluster.vpod("db", nodeSelector={"disk": "ssd"}))
    vpod = await cluster.wait_scheduled("db", "True", "Scheduled")
    assert vpod["status"]["nodeName"] == fast


async def test_limitrange_defaults_reach_status_admitted(cluster: Cluster) -> None:
    await cluster.node("node-a")
    await cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": {"name": "defaults"},
            "spec": {
                "limits": [
                    {
                        "type": "Container",
                        "default": {"cpu": "1", "memory": "768Mi"},
                        "defaultRequest": {"cpu": "250m", "memory": "384Mi"},
                    }
                ]
            },
        }
    )
    await cluster.start_controller()
    await cluster.apply(cluster.vpod("bare", containers=[{"name": "app"}]))
    vpod = await cluster.wait_scheduled("bare", "True", "Scheduled")
    (app,) = vpod["status"]["admitted"]["containers"]
    assert app == {
        "name": "app",
        "resources": {
            "limits": {"cpu": "1", "memory": "768Mi"},
            "requests": {"cpu": "250m", "memory": "384Mi"},
        },
    }
    pod = await pod_of(cluster, "bare")
    assert "LimitRanger plugin set" in pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"]


async def test_quota_refusal_is_a_condition_and_an_event_until_the_quota_frees(
    cluster: Cluster,
) -> None:
    await cluster.node("node-a")
    quota = await cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "mem"},
            "spec": {"hard": {"requests.memory": "1Gi"}},
        }
    )
    await cluster.start_controller()
    await cluster.apply(cluster.vpod("first", memory="600Mi"))
    await cluster.wait_scheduled("first", "True", "Scheduled")
    await cluster.apply(cluster.vpod("second", memory="600Mi"))
    refused = await cluster.wait_scheduled("second", "False", "QuotaExceeded")
    (condition,) = [c for c in refused["status"]["conditions"] if c["type"] == "Scheduled"]
    assert 'pods "second" is forbidden: exceeded quota: mem' in condition["message"]
    assert refused["status"]["phase"] == "Pending"
    assert "nodeName" not in refused["status"]

    async def warned() -> list[dict[str, Any]]:
        return [
            e
            for e in await cluster.events("second")
            if e["type"] == "Warning" and "exceeded quota" in e["message"]
        ]

    await async_wait_for(warned, timeout=10, what="a Warning Event about the quota")
    await cluster.api.merge_patch(
        cluster.path(quota, "mem"), {"spec": {"hard": {"requests.memory": "2Gi"}}}
    )
    placed = await cluster.wait_scheduled("second", "True", "Scheduled", timeout=20)
    assert placed["status"]["podName"] == "second"


async def test_unschedulable_pod_shows_the_schedulers_message(cluster: Cluster) -> None:
    await cluster.node("small", memory="1Gi")
    await cluster.start_controller()
    await cluster.apply(cluster.vpod("huge", memory="64Gi"))
    vpod = await cluster.wait_scheduled("huge", "False", "Unschedulable", timeout=30)
    (condition,) = [c for c in vpod["status"]["conditions"] if c["type"] == "Scheduled"]
    assert "0/" in condition["message"]
    assert "Insufficient memory" in condition["message"]
    assert vpod["status"]["phase"] == "Pending"
    assert "virtualpod.dev/node" not in vpod["metadata"].get("labels", {})


async def test_a_deleted_pod_is_created_again_on_the_same_node(cluster: Cluster) -> None:
    node = await cluster.node("node-a")
    await cluster.start_controller()
    await cluster.apply(cluster.vpod("sticky"))
    await cluster.wait_scheduled("sticky", "True", "Scheduled")
    first = await pod_of(cluster, "sticky")
    # Another node with far more room joins: a scheduler would prefer it now.
    await cluster.node("roomy", memory="64Gi")
    await cluster.api.delete(cluster.pod_path("sticky"), now=True)

    seen = {first["metadata"]["uid"]}

    async def replaced() -> dict[str, Any] | None:
        pod = await cluster.api.get(cluster.pod_path("sticky"))
        if pod is None or pod["metadata"]["uid"] in seen:
            return None
        seen.add(pod["metadata"]["uid"])
        return pod

    again = await async_wait_for(replaced, timeout=15, what="the Pod created again")
    assert again["spec"]["nodeName"] == node

    async def told() -> list[dict[str, Any]]:
        return [e for e in await cluster.events("sticky") if e["reason"] == "PodRecreated"]

    (event,) = await async_wait_for(told, timeout=10, what="the PodRecreated Event")
    assert node in event["message"]
    vpod = await cluster.api.get(cluster.vpod_path("sticky"))
    assert vpod is not None
    assert vpod["status"]["nodeName"] == node

    # Gone again at once (a node that keeps refusing it): the next one waits its turn.
    (run,) = cluster.controllers
    state = controller(run.memo)
    await cluster.api.delete(cluster.pod_path("sticky"), now=True)

    async def held_back() -> bool:
        pod = await cluster.api.get(cluster.pod_path("sticky"))
        return pod is None and (cluster.namespace, "sticky") in state.retries

    await async_wait_for(held_back, timeout=10, what="the re-creation held back")
    third = await async_wait_for(replaced, timeout=RECREATE_INTERVAL_SECONDS + 10, what="again")
    assert third["spec"]["nodeName"] == node


async def test_new_pods_prefer_the_host_with_the_most_measured_headroom(
    cluster: Cluster,
) -> None:
    busy = await cluster.node("busy")
    idle = await cluster.node("idle")
    # Equal allocatable and requests; the agents measured different real usage.
    await cluster.lease(busy, allocatable=4 * GI, working_set=3 * GI)
    await cluster.lease(idle, allocatable=4 * GI, working_set=1 * GI)
    await cluster.start_controller()

    async def leases_seen() -> bool:
        (run,) = cluster.controllers
        from virtualpod.kube.controller import controller

        return len(controller(run.memo).leases) >= 2

    await async_wait_for(leases_seen, timeout=10, what="the controller reading both Leases")
    await cluster.apply(cluster.vpod("first"))
    vpod = await cluster.wait_scheduled("first", "True", "Scheduled")
    assert vpod["status"]["nodeName"] == idle
    pod = await pod_of(cluster, "first")
    terms = pod["spec"]["affinity"]["nodeAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    weights = {t["preference"]["matchFields"][0]["values"][0]: t["weight"] for t in terms}
    assert weights[idle] == 100
    assert weights[busy] < weights[idle]

    # The usage flips: the next VM goes to the other host.
    await cluster.lease(busy, allocatable=4 * GI, working_set=0)
    await cluster.lease(idle, allocatable=4 * GI, working_set=3 * GI)

    async def flipped() -> bool:
        (run,) = cluster.controllers
        from virtualpod.core.companion import measured_headroom
        from virtualpod.kube.controller import _now, controller

        room = measured_headroom(controller(run.memo).leases.values(), _now())
        return room.get(busy, 0) > room.get(idle, 0)

    await async_wait_for(flipped, timeout=10, what="the controller reading the new usage")
    await cluster.apply(cluster.vpod("second"))
    vpod = await cluster.wait_scheduled("second", "True", "Scheduled")
    assert vpod["status"]["nodeName"] == busy

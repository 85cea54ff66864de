"""Two hosts, one agent each: a VirtualPod bound to a node has exactly one VM, on that node.

The test binds VirtualPods as the controller does (status.admitted and the Scheduled
condition first, then the node label), so the agents are checked on their own: each
sees only its node's VirtualPods, sizes the VM from the Pod as admitted, leaves the
controller's fields alone, and keeps one domain per VirtualPod across restarts and a
late join. Every host is a libvirt test-driver connection of its own
(`virtualpod.testing.hosts`), whose domains outlive the agent, as under libvirtd.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Env, unique, vpod
from tests.e2e.test_lifecycle import condition, wait_phase
from tests.waiting import async_wait_for
from virtualpod.core.binding import NODE_LABEL
from virtualpod.core.domain import domain_name, parse_domain
from virtualpod.core.lease import lease_name, usage_from_lease
from virtualpod.core.plan import plan_virtualpod
from virtualpod.core.quantity import MIB
from virtualpod.core.settings import Amount
from virtualpod.kube.context import Role
from virtualpod.testing import InProcessOperator
from virtualpod.testing.hosts import EmulatedHost, EmulatedHosts

GIB = 2**30
#: What the test driver host of each node has.
HOST_MEMORY = 16 * GIB
ADMITTED = {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "384Mi"}}


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[EmulatedHosts]:
    with EmulatedHosts(tmp_path) as emulated:
        for name in ("node-a", "node-b", "node-c"):
            emulated.add(name, cpus=8, memory_bytes=HOST_MEMORY)
        yield emulated


@pytest.fixture
def cluster(env: Env, hosts: EmulatedHosts) -> Env:
    if env.name != "emulator-test":
        pytest.skip("several libvirt hosts in one process need the test driver")
    return env


def agent_settings(env: Env, host: EmulatedHost) -> Any:
    return replace(
        env.settings,
        host_name=host.name,
        libvirt_uri=host.uri,
        reserved=Amount(0, 0),
        namespace=env.namespace,
        lease_renew_interval_s=0.2,
    )


async def start_agent(env: Env, host: EmulatedHost) -> InProcessOperator:
    return await env.start_operator(agent_settings(env, host), role=Role.AGENT)


async def bind(env: Env, name: str, node: str, resources: dict[str, Any] = ADMITTED) -> None:
    """What the controller writes once the companion Pod is bound: status, then the label."""
    await env.kube.merge_patch(
        env.namespace,
        name,
        {
            "status": {
                "podName": name,
                "nodeName": node,
                "admitted": {"containers": [{"name": "app", "resources": resources}]},
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "Scheduled",
                        "status": "True",
                        "reason": "Scheduled",
                        "message": f"Successfully assigned {env.namespace}/{name} to {node}",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }
                ],
            }
        },
        sub="status",
    )
    await env.kube.merge_patch(env.namespace, name, {"metadata": {"labels": {NODE_LABEL: node}}})


def placements(hosts: EmulatedHosts, env: Env, names: list[str]) -> dict[str, list[str]]:
    """Each VirtualPod's domains, by the hosts that have one."""
    return {
        name: [h.name for h in hosts if domain_name(env.namespace, name) in h.domain_names()]
        for name in names
    }


async def wait_placed(
    hosts: EmulatedHosts, env: Env, wanted: dict[str, str], timeout: float = 20
) -> None:
    """Every VirtualPod Running with exactly one domain, on the node it is bound to."""
    for name in wanted:
        await wait_phase(env, name, "Running", timeout=timeout)

    async def placed() -> bool:
        return placements(hosts, env, list(wanted)) == {n: [h] for n, h in wanted.items()}

    with contextlib.suppress(AssertionError):
        await async_wait_for(placed, timeout=timeout, what="one domain per VirtualPod")
    assert placements(hosts, env, list(wanted)) == {n: [h] for n, h in wanted.items()}


async def test_each_agent_serves_only_what_is_bound_to_its_node(
    cluster: Env, hosts: EmulatedHosts
) -> None:
    env = cluster
    agent_a = await start_agent(env, hosts.hosts["node-a"])
    await start_agent(env, hosts.hosts["node-b"])
    wanted = {unique("a1"): "node-a", unique("b1"): "node-b", unique("a2"): "node-a"}
    unbound = unique("unbound")
    for name in [*wanted, unbound]:
        await env.kube.create(vpod(name, limits=False))
    for name, node in wanted.items():
        await bind(env, name, node)
    await wait_placed(hosts, env, wanted)

    for name, node in wanted.items():
        obj = await env.kube.get(env.namespace, name)
        assert obj is not None
        assert obj["status"]["vm"]["host"] == node
        # the controller's fields and condition are untouched by the agent
        assert obj["status"]["nodeName"] == node
        assert obj["status"]["podName"] == name
        assert obj["status"]["admitted"]["containers"][0]["resources"] == ADMITTED
        scheduled = condition(obj, "Scheduled")
        assert scheduled is not None
        assert scheduled["message"].endswith(f"/{name} to {node}")
        assert condition(obj, "Ready")["status"] == "True"

    # The API server sends an agent only its node's VirtualPods (its index has no filter).
    index = agent_a.ctx.by_uuid
    assert index is not None
    seen = {owner.ref.name for uuid in index for owner in index[uuid]}
    assert seen == {name for name, node in wanted.items() if node == "node-a"}
    # Unbound: no agent touched it (no domain, no finalizer, no status).
    assert placements(hosts, env, [unbound]) == {unbound: []}
    untouched = await env.kube.get(env.namespace, unbound)
    assert untouched is not None
    assert not untouched.get("status")
    assert not untouched["metadata"].get("finalizers")


async def test_the_vm_is_sized_from_the_pod_as_admitted(cluster: Env, hosts: EmulatedHosts) -> None:
    env = cluster
    host = hosts.hosts["node-b"]
    await start_agent(env, host)
    name = unique("sized")
    created = await env.kube.create(vpod(name, limits=False))  # spec: requests only
    await bind(env, name, host.name)
    obj = await wait_phase(env, name, "Running")

    admitted = {**created, "spec": {"containers": [{"name": "app", "resources": ADMITTED}]}}
    plan = plan_virtualpod(admitted, agent_settings(env, host))
    from_spec = plan_virtualpod(created, agent_settings(env, host))
    live = parse_domain(host.connection.lookupByName(plan.domain_name).XMLDesc(0))
    assert live.memory_bytes == plan.size.memory_bytes == 384 * MIB + 64 * MIB
    assert live.memory_bytes != from_spec.size.memory_bytes
    assert obj["status"]["qosClass"] == plan.qos_class.value


async def test_one_domain_per_virtualpod_across_restarts_and_a_late_join(
    cluster: Env, hosts: EmulatedHosts
) -> None:
    env = cluster
    agent_a = await start_agent(env, hosts.hosts["node-a"])
    agent_b = await start_agent(env, hosts.hosts["node-b"])
    wanted = {unique("x"): "node-a", unique("y"): "node-b", unique("z"): "node-c"}
    for name in wanted:
        await env.kube.create(vpod(name, limits=False))
    for name, node in wanted.items():
        await bind(env, name, node)
    late = [name for name, node in wanted.items() if node == "node-c"]
    early = {name: node for name, node in wanted.items() if node != "node-c"}
    await wait_placed(hosts, env, early)
    # node-c has no agent yet: its VirtualPod waits, and nobody else runs it.
    assert placements(hosts, env, late) == {late[0]: []}
    uuids = {n: (await env.kube.get(env.namespace, n))["status"]["vm"]["uuid"] for n in early}

    await agent_a.stop()
    await start_agent(env, hosts.hosts["node-a"])  # restarted agent adopts its VM
    await agent_b.kill()  # a crashed agent: nothing cleaned up
    await start_agent(env, hosts.hosts["node-b"])
    await start_agent(env, hosts.hosts["node-c"])  # joins late
    await wait_placed(hosts, env, wanted)
    for name, uuid in uuids.items():
        obj = await env.kube.get(env.namespace, name)
        assert obj["status"]["vm"]["uuid"] == uuid
        events = [e["reason"] for e in await env.kube.events(env.namespace, name)]
        assert events.count("Created") == 1, events

    for name in wanted:
        await env.kube.delete(env.namespace, name)

    async def gone() -> bool:
        objects = [await env.kube.get(env.namespace, n) for n in wanted]
        return objects == [None] * len(wanted) and all(
            placements(hosts, env, list(wanted))[n] == [] for n in wanted
        )

    await async_wait_for(gone, timeout=20, what="VirtualPods and their domains gone")


async def test_each_agent_renews_its_hosts_lease_with_measured_memory(
    cluster: Env, hosts: EmulatedHosts
) -> None:
    env = cluster
    host = hosts.hosts["node-a"]
    await start_agent(env, host)
    name = unique("leased")
    await env.kube.create(vpod(name, limits=False))
    await bind(env, name, host.name)
    await wait_phase(env, name, "Running")
    domain = host.connection.lookupByName(domain_name(env.namespace, name))
    rss_kib = domain.memoryStats().get("rss")  # the test driver's canned statistics
    working_set = (rss_kib if rss_kib is not None else domain.info()[2]) * 1024

    async def measured() -> dict[str, Any] | None:
        lease = await env.kube.get_lease(env.namespace, lease_name(host.name))
        usage = usage_from_lease(lease) if lease else None
        return lease if usage is not None and usage.vm_working_set_bytes > 0 else None

    lease = await async_wait_for(measured, timeout=10, what="the host's Lease with a VM in it")
    usage = usage_from_lease(lease)
    assert usage is not None
    assert lease["spec"]["holderIdentity"] == host.name
    assert usage.allocatable_bytes == HOST_MEMORY  # reserved is 0 here
    # A running VM's working set is its QEMU RSS (else its current memory).
    assert usage.vm_working_set_bytes == working_set
    first = lease["spec"]["renewTime"]

    async def renewed() -> bool:
        again = await env.kube.get_lease(env.namespace, lease_name(host.name))
        return again is not None and again["spec"]["renewTime"] != first

    await async_wait_for(renewed, timeout=5, what="the Lease renewed")

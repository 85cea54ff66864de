"""The whole cluster mode: one controller, two agents on two hosts, the stand-in binder.

Every VirtualPod has exactly one domain across both hosts, on the node its companion
Pod is bound to: after create, after either agent restarts or crashes, after an agent
joins late and after the controller is killed mid-create; deleting the VirtualPods
leaves no domain on either host and no Pod. Each host is a libvirt test-driver
connection of its own whose domains outlive the agent (`virtualpod.testing.hosts`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.conftest import Cluster
from tests.waiting import async_wait_for
from virtualpod.core.binding import NODE_LABEL
from virtualpod.core.companion import VIRTUALPOD_LABEL
from virtualpod.core.domain import domain_name
from virtualpod.core.settings import Amount, Settings
from virtualpod.kube.context import Role
from virtualpod.testing import InProcessOperator
from virtualpod.testing.hosts import EmulatedHost, EmulatedHosts

#: A small VirtualPod: no disk image (a diskless VM), Burstable.
RESOURCES = {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}
TIMEOUT = 30.0


@dataclass
class Fleet:
    """The cluster's libvirt hosts, their agents and the controller (all in-process)."""

    cluster: Cluster
    hosts: EmulatedHosts
    nodes: list[str]
    operators: list[InProcessOperator] = field(default_factory=list)

    def host(self, node: str) -> EmulatedHost:
        return self.hosts.hosts[node]

    async def start(self, role: Role, settings: Settings) -> InProcessOperator:
        op = InProcessOperator(settings, self.cluster.api_url, self.cluster.emulator, role=role)
        self.operators.append(op)
        await op.start(timeout=TIMEOUT)
        return op

    async def agent(self, node: str) -> InProcessOperator:
        host = self.host(node)
        settings = replace(
            Settings(),
            host_name=node,
            libvirt_uri=host.uri,
            reserved=Amount(0, 0),
            lease_renew_interval_s=0.5,
        )
        return await self.start(Role.AGENT, settings)

    async def controller(self) -> InProcessOperator:
        return await self.start(Role.CONTROLLER, Settings())

    def vpod(self, name: str) -> dict[str, Any]:
        return self.cluster.vpod(name, containers=[{"name": "app", "resources": RESOURCES}])

    def domains(self, name: str) -> list[str]:
        """The nodes whose libvirt has a domain for this VirtualPod."""
        wanted = domain_name(self.cluster.namespace, name)
        return [node for node in self.nodes if wanted in self.host(node).domain_names()]

    async def pods(self) -> list[dict[str, Any]]:
        body = await self.cluster.api.get(f"/api/v1/namespaces/{self.cluster.namespace}/pods")
        assert body is not None
        return [p for p in body["items"] if VIRTUALPOD_LABEL in p["metadata"].get("labels", {})]

    async def placement(self, names: list[str]) -> dict[str, Any]:
        """Per VirtualPod: its phase, label, VM host, Pod node(s), domain host(s)."""
        pods = await self.pods()
        seen: dict[str, Any] = {}
        for name in names:
            obj = await self.cluster.api.get(self.cluster.vpod_path(name)) or {}
            status = obj.get("status") or {}
            seen[name] = {
                "phase": status.get("phase"),
                "label": (obj.get("metadata") or {}).get("labels", {}).get(NODE_LABEL),
                "vmHost": (status.get("vm") or {}).get("host"),
                "podNodes": sorted(
                    p["spec"].get("nodeName") or ""
                    for p in pods
                    if p["metadata"]["labels"][VIRTUALPOD_LABEL] == name
                ),
                "domains": self.domains(name),
            }
        return seen

    async def one_vm_each(self, names: list[str], timeout: float = TIMEOUT) -> dict[str, str]:
        """Wait until each VirtualPod runs exactly one domain, on its Pod's node."""

        def settled(seen: dict[str, Any]) -> bool:
            return all(
                s["phase"] == "Running"
                and len(s["podNodes"]) == 1
                and s["domains"] == s["podNodes"] == [s["label"]] == [s["vmHost"]]
                for s in seen.values()
            )

        async def probe() -> dict[str, Any] | None:
            seen = await self.placement(names)
            return seen if settled(seen) else None

        try:
            seen = await async_wait_for(probe, timeout=timeout, what="one VM per VirtualPod")
        except AssertionError:
            raise AssertionError(f"not settled: {await self.placement(names)}") from None
        return {name: s["label"] for name, s in seen.items()}


@pytest.fixture
async def fleet(cluster: Cluster, tmp_path: Path) -> AsyncIterator[Fleet]:
    if cluster.emulator is None:
        pytest.skip("the agents' hosts are emulated libvirt hosts of this process")
    nodes = [
        await cluster.node(name, memory="8Gi", cpu="8", vphost=name)
        for name in ("node-a", "node-b")
    ]
    with EmulatedHosts(tmp_path) as hosts:
        for node in nodes:
            hosts.add(node, cpus=8, memory_bytes=8 * 2**30)
        fleet = Fleet(cluster, hosts, nodes)
        try:
            yield fleet
        finally:
            for op in fleet.operators:
                await op.stop()


async def test_one_vm_per_virtualpod_on_the_node_its_pod_is_bound_to(fleet: Fleet) -> None:
    cluster = fleet.cluster
    node_a, node_b = fleet.nodes
    agent_a = await fleet.agent(node_a)
    agent_b = await fleet.agent(node_b)
    await fleet.controller()
    names = [f"vm-{i}" for i in range(6)]
    for name in names:
        await cluster.apply(fleet.vpod(name))
    placed = await fleet.one_vm_each(names)
    assert set(placed.values()) <= {node_a, node_b}

    # Either agent restarts (cleanly, or dies): the VMs are adopted, none is added.
    await agent_a.stop()
    await fleet.agent(node_a)
    await agent_b.kill()
    await fleet.agent(node_b)
    assert await fleet.one_vm_each(names) == placed
    for name in names:
        reasons = [e["reason"] for e in await cluster.events(name)]
        assert reasons.count("Created") == 1, (name, reasons)

    for name in names:
        await cluster.api.delete(cluster.vpod_path(name))

    async def gone() -> bool:
        left = [await cluster.api.get(cluster.vpod_path(n)) for n in names]
        return (
            left == [None] * len(names)
            and not await fleet.pods()
            and not any(fleet.domains(n) for n in names)
        )

    await async_wait_for(gone, timeout=TIMEOUT, what="no VirtualPod, no Pod, no domain")


async def test_an_agent_that_joins_late_starts_the_vms_bound_to_its_node(fleet: Fleet) -> None:
    cluster = fleet.cluster
    node_a, node_b = fleet.nodes
    await fleet.agent(node_a)
    await fleet.controller()
    # Bound to node-b by their own nodeSelector, before node-b has an agent.
    late = ["late-0", "late-1"]
    for name in late:
        manifest = fleet.vpod(name)
        manifest["spec"]["nodeSelector"]["vphost"] = "node-b"
        await cluster.apply(manifest)

    async def bound() -> bool:
        seen = await fleet.placement(late)
        return all(s["label"] == node_b for s in seen.values())

    await async_wait_for(bound, timeout=TIMEOUT, what="bound to node-b")
    seen = await fleet.placement(late)
    assert all(s["domains"] == [] and s["phase"] != "Running" for s in seen.values()), seen

    await fleet.agent(node_b)
    assert await fleet.one_vm_each(late) == {name: node_b for name in late}


async def test_the_controller_killed_mid_create_leaves_one_pod_and_one_vm(
    fleet: Fleet,
) -> None:
    cluster = fleet.cluster
    emulator = cluster.emulator
    assert emulator is not None
    for node in fleet.nodes:
        await fleet.agent(node)
    controller = await fleet.controller()
    names = ["mid-0", "mid-1", "mid-2"]
    # The binding (status, then label) never gets through: the controller is caught
    # after it created and the binder bound the Pods, before it recorded anything.
    emulator.hold_writes(
        lambda method, _type, namespace, name: (
            method == "PATCH" and namespace == cluster.namespace and name in names
        )
    )
    for name in names:
        await cluster.apply(fleet.vpod(name))

    async def pods_bound() -> bool:
        pods = await fleet.pods()
        return len(pods) == len(names) and all(p["spec"].get("nodeName") for p in pods)

    await async_wait_for(pods_bound, timeout=TIMEOUT, what="companion Pods bound")
    await controller.kill()
    emulator.release_writes()
    assert all(s["domains"] == [] for s in (await fleet.placement(names)).values())

    await fleet.controller()
    await fleet.one_vm_each(names)
    assert len(await fleet.pods()) == len(names)

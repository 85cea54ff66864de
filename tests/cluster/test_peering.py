"""The controller's replicas as `virtualpod run --role=controller` processes: they
create their Kopf peering object, Kopf peering makes one of them active, and that one
places the VirtualPods."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cluster.conftest import Cluster
from tests.waiting import async_wait_for
from virtualpod.core.settings import Settings
from virtualpod.kube.controller import ensure_peering
from virtualpod.kube.rest import RestClient
from virtualpod.testing.emulator import write_kubeconfig
from virtualpod.testing.operator import OperatorProcess

PEERINGS = "kopf.dev/v1/clusterkopfpeerings"


async def test_two_controller_replicas_peer_and_one_places_the_virtualpods(
    cluster: Cluster, tmp_path: Path
) -> None:
    if cluster.emulator is None or cluster.api_url is None:
        pytest.skip("on a real cluster the peering CRD is installed with the manifests")
    emulator = cluster.emulator
    node = await cluster.node("node-a")
    # The manifests ship Kopf's CRD only: the replicas create the object they share.
    assert emulator.get_object(PEERINGS, None, Settings().peering) is None
    kubeconfig = write_kubeconfig(cluster.api_url, tmp_path / "kubeconfig")
    config = tmp_path / "settings.yaml"
    config.write_text("{}\n")
    replicas = [
        OperatorProcess(
            kubeconfig, config, emulator=emulator, standalone=False, args=("--role=controller",)
        )
        for _ in range(2)
    ]
    try:
        for replica in replicas:  # the one of lower priority never watches: it stands by
            await replica.start(watching=False)

        async def both_announced() -> list[int] | None:
            for replica in replicas:
                if replica.returncode is not None:
                    raise AssertionError(f"a replica exited: {await replica.stop()}")
            found = emulator.get_object(PEERINGS, None, Settings().peering) or {}
            peers = (found.get("status") or {}).values()
            return [peer["priority"] for peer in peers] if len(peers) == 2 else None

        priorities = await async_wait_for(
            both_announced, timeout=20, what="both replicas in the peering"
        )
        # Equal priorities would pause both: each replica draws its own, one stands by.
        assert len(set(priorities)) == 2, priorities
        await cluster.apply(cluster.vpod("web"))
        vpod = await cluster.wait_scheduled("web", "True", "Scheduled", timeout=30)
        assert vpod["status"]["nodeName"] == node
    finally:
        outputs = [await replica.stop() for replica in replicas]
    assert not any("Pausing all operators" in out for out in outputs), outputs


async def test_the_peering_object_is_created_once_kopfs_crd_is_served(cluster: Cluster) -> None:
    """`kubectl apply -k` sends Kopf's CRD and the controller together: until the CRD is
    served, creating the object is refused (404) and the startup tries again."""
    if cluster.emulator is None or cluster.api_url is None:
        pytest.skip("the CRD cannot be taken away from a real cluster under test")
    emulator = cluster.emulator
    spec = emulator.undeclare(PEERINGS)
    rest = await RestClient.connect(cluster.api_url)
    try:
        assert await ensure_peering(rest, "vp-peering") is False
        emulator.declare(spec)
        assert await ensure_peering(rest, "vp-peering") is True
        assert await ensure_peering(rest, "vp-peering") is True  # exists already: fine
    finally:
        await rest.close()
    assert emulator.get_object(PEERINGS, None, "vp-peering") is not None

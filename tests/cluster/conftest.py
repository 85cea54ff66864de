"""Cluster-mode fixtures: the controller role against a Kubernetes API over HTTP.

Backends (the `cluster` fixture's parameter):
* `emulator`: the KMock-based emulator with the stand-in control plane
  (`virtualpod.testing.control_plane`: Pod admission, binder, garbage collector);
* `real`: the cluster of $VIRTUALPOD_E2E_KUBECONFIG, where kube-apiserver admits and
  kube-scheduler binds; skipped when the variable is unset.

Each test gets its own namespace and registers its own Nodes (no kubelet), labelled with
the test's id; its VirtualPods select them, and tolerate the `not-ready` taint a real
control plane puts on a Node without a kubelet.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import uuid as uuidlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.waiting import async_wait_for
from virtualpod.core.companion import LIBVIRT_HOST_LABEL
from virtualpod.core.lease import HostUsage, lease_body
from virtualpod.core.settings import Settings
from virtualpod.kube.context import Role
from virtualpod.testing.control_plane import ControlPlane, running_control_plane
from virtualpod.testing.emulator import KubernetesApiEmulator, serve_emulator
from virtualpod.testing.operator import InProcessOperator

KUBECONFIG = os.environ.get("VIRTUALPOD_E2E_KUBECONFIG")
MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
TEST_LABEL = "virtualpod.dev/test"
GI = 2**30

pytestmark = pytest.mark.e2e

#: Collection paths by (apiVersion, kind).
PATHS = {
    ("v1", "Namespace"): "/api/v1/namespaces",
    ("v1", "Node"): "/api/v1/nodes",
    ("v1", "LimitRange"): "/api/v1/namespaces/{ns}/limitranges",
    ("v1", "ResourceQuota"): "/api/v1/namespaces/{ns}/resourcequotas",
    ("v1", "Pod"): "/api/v1/namespaces/{ns}/pods",
    ("coordination.k8s.io/v1", "Lease"): "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
    ("node.k8s.io/v1", "RuntimeClass"): "/apis/node.k8s.io/v1/runtimeclasses",
    ("scheduling.k8s.io/v1", "PriorityClass"): "/apis/scheduling.k8s.io/v1/priorityclasses",
    ("virtualpod.dev/v1alpha1", "VirtualPod"): (
        "/apis/virtualpod.dev/v1alpha1/namespaces/{ns}/virtualpods"
    ),
}


class Api:
    """JSON over HTTP, as kubectl would talk to the emulator or a real API server."""

    def __init__(self, server: str, headers: dict[str, str], tls: ssl.SSLContext | bool) -> None:
        self.server = server.rstrip("/")
        self.tls = tls
        self.session = aiohttp.ClientSession(headers=headers)

    async def call(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, Any]:
        async with self.session.request(
            method,
            self.server + path,
            data=json.dumps(body) if body is not None else None,
            headers={"Content-Type": content_type},
            ssl=self.tls,
        ) as response:
            text = await response.text()
            return response.status, json.loads(text) if text else None

    async def get(self, path: str) -> dict[str, Any] | None:
        status, body = await self.call("GET", path)
        if status == 404:
            return None
        assert status == 200, (status, body)
        return body  # type: ignore[no-any-return]

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        status, body = await self.call("PATCH", path, patch, "application/merge-patch+json")
        assert status == 200, (status, body)
        return body  # type: ignore[no-any-return]

    async def delete(self, path: str, *, now: bool = False) -> None:
        options = {"gracePeriodSeconds": 0} if now else None
        status, body = await self.call("DELETE", path, options)
        assert status in (200, 202, 404), (status, body)


def _real_api(path: str) -> Api:
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=path, client_configuration=cfg)  # type: ignore[no-untyped-call]
    headers = {}
    token = cfg.api_key.get("authorization") or cfg.api_key.get("BearerToken")
    if token:
        headers["Authorization"] = token if token.startswith("Bearer") else f"Bearer {token}"
    tls: ssl.SSLContext | bool = False
    if cfg.host.startswith("https"):
        tls = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
        if cfg.cert_file:
            tls.load_cert_chain(cfg.cert_file, cfg.key_file)
    return Api(cfg.host, headers, tls)


@dataclass
class Cluster:
    name: str
    api: Api
    emulator: KubernetesApiEmulator | None
    plane: ControlPlane | None
    api_url: str | None
    test_id: str = field(default_factory=lambda: uuidlib.uuid4().hex[:6])
    namespace: str = ""
    #: Paths of cluster-scoped objects to delete afterwards (namespaces take the rest).
    cleanup: list[str] = field(default_factory=list)
    controllers: list[InProcessOperator] = field(default_factory=list)

    def path(self, obj: dict[str, Any], name: str | None = None) -> str:
        namespace = obj.get("metadata", {}).get("namespace") or self.namespace
        collection = PATHS[obj["apiVersion"], obj["kind"]].format(ns=namespace)
        return f"{collection}/{name}" if name else collection

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create the object (the test namespace when none is given); 409 means it is there."""
        status, body = await self.api.call("POST", self.path(obj), obj)
        if status == 409:
            found = await self.api.get(self.path(obj, obj["metadata"]["name"]))
            assert found is not None
            return found
        assert status == 201, (status, body)
        if "{ns}" not in PATHS[obj["apiVersion"], obj["kind"]]:
            self.cleanup.append(self.path(obj, body["metadata"]["name"]))
        return body  # type: ignore[no-any-return]

    async def start_controller(self, settings: Settings | None = None) -> InProcessOperator:
        """The controller role, in this process (the shared operator starter)."""
        run = InProcessOperator(
            settings or Settings(), self.api_url, self.emulator, role=Role.CONTROLLER
        )
        self.controllers.append(run)
        await run.start()
        return run

    async def node(self, name: str, *, memory: str = "4Gi", cpu: str = "4", **labels: str) -> str:
        """Register a Node of this test (no kubelet) with the given allocatable."""
        full = f"{name}-{self.test_id}"
        await self.apply(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": full,
                    "labels": {LIBVIRT_HOST_LABEL: "true", TEST_LABEL: self.test_id, **labels},
                },
            }
        )
        resources = {"cpu": cpu, "memory": memory, "pods": "110"}
        await self.api.merge_patch(
            f"/api/v1/nodes/{full}/status",
            {"status": {"capacity": resources, "allocatable": resources}},
        )
        return full

    async def lease(self, host: str, *, allocatable: int, working_set: int) -> None:
        """A host Lease as an agent publishes it (the controller's usage input)."""
        namespace = Settings().namespace
        await self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        import datetime

        body = lease_body(
            host,
            namespace,
            HostUsage(allocatable, working_set),
            renew_interval_s=60,
            now=datetime.datetime.now(tz=datetime.UTC),
        )
        path = PATHS["coordination.k8s.io/v1", "Lease"].format(ns=namespace)
        await self.api.delete(f"{path}/{body['metadata']['name']}")
        await self.apply(body)
        self.cleanup.append(f"{path}/{body['metadata']['name']}")

    def vpod(self, name: str, *, memory: str = "256Mi", **spec: Any) -> dict[str, Any]:
        """A VirtualPod placed on this test's Nodes."""
        spec.setdefault(
            "containers",
            [
                {
                    "name": "app",
                    "image": "debian.qcow2",
                    "resources": {"requests": {"memory": memory}},
                }
            ],
        )
        spec["nodeSelector"] = {TEST_LABEL: self.test_id, **spec.get("nodeSelector", {})}
        spec.setdefault("tolerations", []).append(
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoSchedule"}
        )
        return {
            "apiVersion": "virtualpod.dev/v1alpha1",
            "kind": "VirtualPod",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": spec,
        }

    def vpod_path(self, name: str, sub: str = "") -> str:
        path = f"/apis/virtualpod.dev/v1alpha1/namespaces/{self.namespace}/virtualpods/{name}"
        return f"{path}/{sub}" if sub else path

    def pod_path(self, name: str) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{name}"

    async def wait_scheduled(
        self, name: str, status: str, reason: str, timeout: float = 15
    ) -> dict[str, Any]:
        """The VirtualPod once its `Scheduled` condition has this status and reason."""

        async def probe() -> dict[str, Any] | None:
            obj = await self.api.get(self.vpod_path(name))
            for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
                if condition["type"] == "Scheduled" and (
                    condition["status"],
                    condition.get("reason"),
                ) == (status, reason):
                    return obj
            return None

        return await async_wait_for(probe, timeout=timeout, what=f"{name} Scheduled={status}")

    async def events(self, name: str) -> list[dict[str, Any]]:
        body = await self.api.get(f"/api/v1/namespaces/{self.namespace}/events")
        assert body is not None
        return [e for e in body["items"] if e["involvedObject"].get("name") == name]


def runtime_class() -> dict[str, Any]:
    (doc,) = yaml.safe_load_all((MANIFESTS / "runtimeclass.yaml").read_text())
    return doc  # type: ignore[no-any-return]


@pytest.fixture(params=["emulator", "real"])
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    if request.param == "real" and not KUBECONFIG:
        pytest.skip("VIRTUALPOD_E2E_KUBECONFIG is not set: no real cluster to test against")
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "real":
            assert KUBECONFIG is not None
            os.environ["KUBECONFIG"] = KUBECONFIG
            api, emulator, plane, url = _real_api(KUBECONFIG), None, None, None
        else:
            url, emulator = await stack.enter_async_context(serve_emulator())
            plane = await stack.enter_async_context(running_control_plane(emulator))
            api = Api(url, {}, False)
        env = Cluster(request.param, api, emulator, plane, url)
        env.namespace = f"vp-{env.test_id}"
        status, body = await api.call(
            "POST", "/api/v1/namespaces", {"metadata": {"name": env.namespace}}
        )
        assert status == 201, (status, body)
        status, body = await api.call(
            "POST", PATHS["node.k8s.io/v1", "RuntimeClass"], runtime_class()
        )
        assert status in (201, 409), (status, body)
        try:
            yield env
        finally:
            for run in env.controllers:
                await run.stop()
            for path in reversed(env.cleanup):
                await api.delete(path)
            await api.delete(f"/api/v1/namespaces/{env.namespace}")
            await api.session.close()

"""End-to-end fixtures: the real operator (kopf, in-process) against a Kubernetes API
over HTTP and real libvirt.

Backends, each a parameter of the `env` fixture:
* `emulator-test`: the KMock-based emulator on loopback + libvirt's test driver
  (`test:///default` is per process, so the operator runs in the test's process);
* `emulator-qemu`: the emulator + real libvirtd/QEMU at $VIRTUALPOD_QEMU_URI (diskless
  kvm domains), marked `qemu`;
* `cluster`: a real cluster from $VIRTUALPOD_E2E_KUBECONFIG (CRD installed) + the test
  driver; skipped, with the reason, when the variable is unset.
"""

from __future__ import annotations

import contextlib
import os
import uuid as uuidlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from virtualpod.core.domain import domain_name
from virtualpod.core.settings import Settings
from virtualpod.kube.context import AgentContext, Role
from virtualpod.libvirt.hypervisor import Hypervisor
from virtualpod.testing import InProcessOperator, KubeClient, KubernetesApiEmulator, serve_emulator

QEMU_URI = os.environ.get("VIRTUALPOD_QEMU_URI")
KUBECONFIG = os.environ.get("VIRTUALPOD_E2E_KUBECONFIG")
HOST = "e2e-host"
OPERATOR_START_TIMEOUT_S = 20.0

pytestmark = pytest.mark.e2e


@dataclass
class Env:
    name: str
    kube: KubeClient
    libvirt_uri: str
    settings: Settings
    api_url: str | None
    emulator: KubernetesApiEmulator | None
    hv: Hypervisor
    namespace: str = "default"
    operators: list[InProcessOperator] = field(default_factory=list)

    def operator(
        self,
        settings: Settings | None = None,
        *,
        pressure: bool = False,
        prepare: Callable[[AgentContext], None] | None = None,
        role: Role = Role.ALL,
    ) -> InProcessOperator:
        """An operator against this environment's API (not started yet); several may run
        side by side, each with its own settings (host name, libvirt URI)."""
        op = InProcessOperator(
            settings or self.settings, self.api_url, self.emulator, pressure, prepare, role=role
        )
        self.operators.append(op)
        return op

    async def start_operator(
        self,
        settings: Settings | None = None,
        *,
        pressure: bool = False,
        prepare: Callable[[AgentContext], None] | None = None,
        role: Role = Role.ALL,
    ) -> InProcessOperator:
        op = self.operator(settings, pressure=pressure, prepare=prepare, role=role)
        await op.start(timeout=OPERATOR_START_TIMEOUT_S)
        return op


def _settings(uri: str) -> Settings:
    return replace(Settings(), libvirt_uri=uri, host_name=HOST, domain_type="kvm")


@pytest.fixture(
    params=[
        "emulator-test",
        pytest.param("emulator-qemu", marks=pytest.mark.qemu),
        "cluster",
    ]
)
async def env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    name = request.param
    if name == "emulator-qemu" and not QEMU_URI:
        pytest.skip("VIRTUALPOD_QEMU_URI is not set: no real libvirtd + QEMU to test against")
    if name == "cluster" and not KUBECONFIG:
        pytest.skip("VIRTUALPOD_E2E_KUBECONFIG is not set: no real cluster to test against")
    uri = QEMU_URI if name == "emulator-qemu" and QEMU_URI else "test:///default"
    settings = _settings(uri)
    async with Hypervisor(uri) as hv, contextlib.AsyncExitStack() as stack:
        if name == "cluster":
            assert KUBECONFIG is not None
            os.environ["KUBECONFIG"] = KUBECONFIG
            kube = KubeClient.from_kubeconfig(KUBECONFIG)
            emulator, api_url = None, None
        else:
            api_url, emulator = await stack.enter_async_context(serve_emulator())
            kube = KubeClient(api_url)
        environment = Env(name, kube, uri, settings, api_url, emulator, hv)
        try:
            yield environment
        finally:
            if name == "cluster":  # while an operator runs, so finalizers are removed
                for ns, obj_name in kube.created:
                    await kube.delete(ns, obj_name)
            for op in environment.operators:
                await op.stop()
            # Only this test's domains: libvirtd may be shared with other test runs.
            ours = {domain_name(ns, name) for ns, name in kube.created}
            await kube.close()
            for info in await hv.list_domains():
                if info.name in ours:
                    await hv.undefine(info.uuid)


def vpod(
    name: str,
    *,
    cpu: str = "500m",
    memory: str = "256Mi",
    limits: bool = True,
    namespace: str = "default",
    **spec: Any,
) -> dict[str, Any]:
    """A VirtualPod manifest (Burstable: requests are half the limits)."""
    resources: dict[str, Any] = {"requests": {"cpu": cpu, "memory": memory}}
    if limits:
        resources["limits"] = {"cpu": "1", "memory": "512Mi"}
    return {
        "apiVersion": "virtualpod.dev/v1alpha1",
        "kind": "VirtualPod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "containers": [
                {"name": "app", "image": "busybox", "resources": resources},
            ],
            **spec,
        },
    }


def unique(prefix: str) -> str:
    return f"{prefix}-{uuidlib.uuid4().hex[:6]}"

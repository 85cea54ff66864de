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

import asyncio
import contextlib
import os
import ssl
import threading
import uuid as uuidlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import kopf
import pytest

from tests.e2e.kube import Kube
from tests.waiting import async_wait_for
from virtualpod.core.domain import domain_name
from virtualpod.core.settings import Settings
from virtualpod.kube.context import AgentContext, Role, context
from virtualpod.kube.runner import build_memo, build_registry
from virtualpod.libvirt.hypervisor import Hypervisor
from virtualpod.testing.emulator import KubernetesApiEmulator, serve_emulator

QEMU_URI = os.environ.get("VIRTUALPOD_QEMU_URI")
KUBECONFIG = os.environ.get("VIRTUALPOD_E2E_KUBECONFIG")
HOST = "e2e-host"
VPODS = "virtualpod.dev/v1alpha1/virtualpods"

pytestmark = pytest.mark.e2e


@dataclass
class Operator:
    """One operator run in its own thread and event loop, as `kopf run` would have it.

    Kopf cancels every task created in its loop after it started, so it gets a loop of
    its own; the emulator keeps serving from the test's loop. `kill` cancels the
    operator mid-work (no graceful finish of handlers), like a dying process.
    """

    api_url: str | None
    settings: Settings
    emulator: KubernetesApiEmulator | None
    #: Run the pressure monitor, as `virtualpod run` does.
    pressure: bool = False
    #: Adjusts the context before the operator starts (e.g. a shorter restart back-off).
    prepare: Callable[[AgentContext], None] | None = None
    role: Role = Role.ALL
    memo: Any = None
    thread: threading.Thread | None = None
    loop: asyncio.AbstractEventLoop | None = None
    main: asyncio.Task[None] | None = None
    error: BaseException | None = None
    stop_flag: threading.Event = field(default_factory=threading.Event)
    ready_flag: threading.Event = field(default_factory=threading.Event)

    @property
    def ctx(self) -> AgentContext:
        return context(self.memo)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        settings = kopf.OperatorSettings()
        settings.process.ultimate_exiting_timeout = None  # never SIGKILL the test process
        self.main = loop.create_task(
            kopf.operator(
                clusterwide=True,
                standalone=True,
                registry=build_registry(self.role),
                memo=self.memo,
                stop_flag=self.stop_flag,
                ready_flag=self.ready_flag,
                settings=settings,
            )
        )
        try:
            loop.run_until_complete(self.main)
        except BaseException as error:
            self.error = error
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def start(self) -> None:
        self.memo = build_memo(
            self.settings, self.role, api_url=self.api_url, pressure=self.pressure
        )
        if self.prepare is not None:
            self.prepare(self.ctx)
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        # Another operator's watch may be open already: wait for one more.
        baseline = self.emulator.watchers.get(VPODS, 0) if self.emulator is not None else 0
        self.thread = threading.Thread(target=self._run, name="operator", daemon=True)
        self.thread.start()
        with_libvirt = self.role is not Role.CONTROLLER

        async def watching() -> bool:
            assert self.thread is not None
            if not self.thread.is_alive():
                raise AssertionError(f"the operator exited: {self.error!r}")
            if not self.ready_flag.is_set() or (with_libvirt and self.ctx.hypervisor is None):
                return False
            if self.pressure and self.ctx.pressure is None:
                return False
            if self.emulator is not None:
                return self.emulator.watchers.get(VPODS, 0) > baseline
            return True

        await async_wait_for(watching, timeout=20, what="operator watching VirtualPods")

    async def kill(self) -> None:
        """Cancel the operator mid-work: handlers do not finish, nothing is cleaned up."""
        assert self.loop is not None
        assert self.main is not None
        assert self.thread is not None
        tasks = list(self.ctx.tasks)

        def cancel_all() -> None:
            for task in tasks:
                task.cancel()
            assert self.main is not None
            self.main.cancel()

        with contextlib.suppress(RuntimeError):  # loop already closed
            self.loop.call_soon_threadsafe(cancel_all)
        await asyncio.to_thread(self.thread.join, 30)
        # Kopf waits for a threading.Event stop flag in an executor thread; a killed
        # operator never sets it, and that thread would keep the interpreter alive.
        self.stop_flag.set()

    async def stop(self) -> None:
        self.stop_flag.set()
        if self.thread is None or not self.thread.is_alive():
            return
        await asyncio.to_thread(self.thread.join, 30)
        if self.thread.is_alive():
            await self.kill()


@dataclass
class Env:
    name: str
    kube: Kube
    libvirt_uri: str
    settings: Settings
    api_url: str | None
    emulator: KubernetesApiEmulator | None
    hv: Hypervisor
    namespace: str = "default"
    operators: list[Operator] = field(default_factory=list)

    def operator(
        self,
        settings: Settings | None = None,
        *,
        pressure: bool = False,
        prepare: Callable[[AgentContext], None] | None = None,
        role: Role = Role.ALL,
    ) -> Operator:
        op = Operator(
            self.api_url, settings or self.settings, self.emulator, pressure, prepare, role
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
    ) -> Operator:
        op = self.operator(settings, pressure=pressure, prepare=prepare, role=role)
        await op.start()
        return op


def _settings(uri: str) -> Settings:
    return replace(Settings(), libvirt_uri=uri, host_name=HOST, domain_type="kvm")


def _cluster_kube(path: str) -> tuple[str, Kube]:
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=path, client_configuration=cfg)
    headers = {}
    token = cfg.api_key.get("authorization") or cfg.api_key.get("BearerToken")
    if token:
        headers["Authorization"] = token if token.startswith("Bearer") else f"Bearer {token}"
    context_ = ssl.create_default_context(cafile=cfg.ssl_ca_cert) if cfg.ssl_ca_cert else None
    if context_ is not None and cfg.cert_file:
        context_.load_cert_chain(cfg.cert_file, cfg.key_file)
    return cfg.host, Kube(cfg.host, headers, context_ if context_ else (cfg.verify_ssl or False))


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
            _, kube = _cluster_kube(KUBECONFIG)
            emulator, api_url = None, None
            namespace = "default"
        else:
            api_url, emulator = await stack.enter_async_context(serve_emulator())
            kube = Kube(api_url)
            namespace = "default"
        environment = Env(name, kube, uri, settings, api_url, emulator, hv, namespace)
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

"""`virtualpod demo`: the whole mission in a minute, on whatever this machine has.

It runs the real operator (the Kopf handlers, in this process) and the real pressure
monitor, against:

* **libvirt**: real libvirtd + QEMU (`qemu:///system`) when it answers, else libvirt's
  in-process test driver (`test:///default`) -- and says which;
* **Kubernetes**: the cluster of `--kubeconfig` (or of the current kubeconfig) when it
  is reachable and has the VirtualPod CRD, else the in-process emulated API
  (`virtualpod.testing.emulator`) on 127.0.0.1 -- and says which.

It applies one VirtualPod per QoS class (`manifests/demo/`), prints what libvirt holds
for each VM (read back from the domain, not from the plan), then puts the VM pool under
pressure. The monitor runs on its own pool signal (`monitor.PoolSignal`: allocatable
minus the summed working sets of the running VMs, read from libvirt every sample), so a
saved VM's memory really leaves the signal; the one knob the demo turns is the pool's
allocatable, narrated as a co-tenant taking part of it, in steps sized from what the VMs
use at that moment. It prints a timeline and a summary that tests assert on, and removes
everything it created -- VirtualPods, domains, managed-save images, the namespace it
made -- also on Ctrl-C or failure.

The demo's VirtualPods carry `spec.nodeName` set to a host name of the demo's own, so an
operator already serving that cluster leaves them alone (`core.binding.serves`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import ssl
import time
import uuid as uuidlib
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import kopf
import yaml

from virtualpod.core.domain import DomainSummary, parse_domain
from virtualpod.core.plan import plan_virtualpod
from virtualpod.core.qos import QOSClass
from virtualpod.core.quantity import MIB, format_bytes
from virtualpod.core.settings import Settings, SettingsError, load_settings
from virtualpod.core.spec import API_GROUP, API_VERSION, SuspendMode
from virtualpod.kube.context import AgentContext, Role, Suspension, context
from virtualpod.kube.pressure_reporter import StatusReporter
from virtualpod.kube.runner import build_memo, build_registry
from virtualpod.libvirt.hypervisor import (
    DomainInfo,
    DomainState,
    HostMemory,
    Hypervisor,
    HypervisorError,
    ResumeResult,
    SuspendResult,
    TuneResult,
    VMMemory,
)
from virtualpod.pressure.monitor import (
    HypervisorPort,
    Inventory,
    Monitor,
    PoolSignal,
    PressureStatus,
    SignalReading,
    mib,
)
from virtualpod.pressure.policy import VMView
from virtualpod.testing.emulator import KubernetesApiEmulator, serve_emulator

QEMU_URI = "qemu:///system"
TEST_URI = "test:///default"
NAMESPACE = "vpod-demo"
PLURAL = "virtualpods"
MANIFESTS = ("besteffort.yaml", "burstable.yaml", "guaranteed.yaml")
#: The pool's allocatable until the demo sizes it from what its VMs use.
PLENTY_BYTES = 8 * 1024 * MIB
#: The sized pool leaves this much beyond threshold + resume margin, rounded up.
POOL_HEADROOM_BYTES = 64 * MIB
POOL_ROUNDING_BYTES = 32 * MIB
#: How long the demo watches after a save that the monitor suspends nothing more.
HOLD_S = 1.0
#: The VMs' usage has settled when it moved at most this much within the window.
SETTLED_BYTES = 2 * MIB
SETTLE_WINDOW_S = 1.0
SETTLE_TIMEOUT_S = 15.0
#: Upper bounds for each stage; the whole demo stays well under three minutes.
OPERATOR_START_TIMEOUT = 30.0
RUNNING_TIMEOUT = 60.0
PRESSURE_TIMEOUT = 60.0
CLEANUP_TIMEOUT = 45.0

log = logging.getLogger(__name__)


class DemoError(RuntimeError):
    """The demo cannot go on; the message says why and what to do."""


def demo_manifest_dir() -> Path:
    """manifests/demo of the source checkout this package is installed from."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "manifests" / "demo"
        if (candidate / MANIFESTS[0]).is_file():
            return candidate
    raise DemoError("manifests/demo not found: run the demo from a source checkout")


# ------------------------------------------------------------------ the environment


async def choose_libvirt(requested: str | None, out: TextIO) -> str:
    """The URI to use: the requested one, else qemu:///system if it answers, else test."""
    if requested:
        await _probe_libvirt(requested)
        say(out, f"libvirt: {requested} (as requested)")
        return requested
    try:
        await _probe_libvirt(QEMU_URI)
    except HypervisorError as error:
        say(
            out,
            f"libvirt: {TEST_URI} -- libvirt's in-process TEST DRIVER, no real VMs "
            f"({QEMU_URI} does not answer: {error.message}; `make demo` starts libvirtd "
            "where the machine allows it)",
        )
        return TEST_URI
    say(out, f"libvirt: {QEMU_URI} -- real libvirtd + QEMU")
    return QEMU_URI


async def _probe_libvirt(uri: str) -> None:
    hv = Hypervisor(uri, reconnect_timeout=2.0)
    try:
        await hv.connect()
        await hv.list_domains()
    finally:
        await hv.close()


@dataclass
class Cluster:
    """Where the VirtualPods live: a real API server, or the emulator (`url` only)."""

    server: str
    headers: dict[str, str] = field(default_factory=dict)
    ssl: ssl.SSLContext | bool | None = None
    kubeconfig: str | None = None

    @property
    def emulated(self) -> bool:
        return self.kubeconfig is None


def _kubeconfig_path(requested: str | None) -> str | None:
    if requested:
        return requested
    env = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    if env:
        return env
    default = Path.home() / ".kube" / "config"
    return str(default) if default.is_file() else None


def _cluster_from_kubeconfig(path: str) -> Cluster:
    from kubernetes import client, config  # only needed for a real cluster

    cfg = client.Configuration()
    config.load_kube_config(config_file=path, client_configuration=cfg)  # type: ignore[no-untyped-call]
    headers: dict[str, str] = {}
    token = cfg.api_key.get("authorization") or cfg.api_key.get("BearerToken")
    if token:
        headers["Authorization"] = token if token.startswith("Bearer") else f"Bearer {token}"
    tls: ssl.SSLContext | bool = bool(cfg.verify_ssl)
    if cfg.verify_ssl:
        tls = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
    if isinstance(tls, ssl.SSLContext) and cfg.cert_file:
        tls.load_cert_chain(cfg.cert_file, cfg.key_file)
    elif cfg.cert_file:
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
        tls.load_cert_chain(cfg.cert_file, cfg.key_file)
    return Cluster(str(cfg.host), headers, tls, kubeconfig=path)


async def choose_cluster(requested: str | None, out: TextIO) -> Cluster | None:
    """A reachable cluster with the CRD, or None for the emulator. Explicit + broken = error."""
    path = _kubeconfig_path(requested)
    if path is None:
        say(out, "kubernetes: no kubeconfig -- using the in-process EMULATED Kubernetes API")
        return None
    try:
        cluster = _cluster_from_kubeconfig(path)
        async with Api(cluster) as api:
            status, _ = await api.request("GET", f"/apis/{API_GROUP}/{API_VERSION}", timeout=5)
    except Exception as error:  # any failure to reach it is "not reachable"
        if requested:
            raise DemoError(f"cannot reach the cluster of {path}: {error}") from error
        say(
            out,
            f"kubernetes: the cluster of {path} is not reachable ({error}) -- using the "
            "in-process EMULATED Kubernetes API",
        )
        return None
    if status != 200:
        message = (
            f"the cluster of {path} has no {PLURAL}.{API_GROUP} CRD "
            "(install it: kubectl apply -k crds/)"
        )
        if requested:
            raise DemoError(message)
        say(out, f"kubernetes: {message} -- using the in-process EMULATED Kubernetes API")
        return None
    say(out, f"kubernetes: the cluster of {path} ({cluster.server})")
    return cluster


# --------------------------------------------------------------- a tiny API client


class Api:
    """JSON over HTTP, as kubectl speaks it: the demo sees what a user sees."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Api:
        self.session = aiohttp.ClientSession(headers=self.cluster.headers)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.session is not None:
            await self.session.close()

    async def request(
        self, method: str, path: str, body: Any = None, *, timeout: float = 10.0, **kw: Any
    ) -> tuple[int, Any]:
        assert self.session is not None
        async with self.session.request(
            method,
            self.cluster.server.rstrip("/") + path,
            json=body,
            ssl=self.cluster.ssl if self.cluster.ssl is not None else False,
            timeout=aiohttp.ClientTimeout(total=timeout),
            **kw,
        ) as response:
            data = await response.json(content_type=None) if response.content_length != 0 else None
            return response.status, data

    @staticmethod
    def vpod_path(namespace: str, name: str = "") -> str:
        base = f"/apis/{API_GROUP}/{API_VERSION}/namespaces/{namespace}/{PLURAL}"
        return f"{base}/{name}" if name else base

    async def ensure_namespace(self, name: str) -> bool:
        """Create the namespace; True if this call created it."""
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        status, data = await self.request("POST", "/api/v1/namespaces", body)
        if status in (200, 201):
            return True
        if status == 409:
            return False
        raise DemoError(f"cannot create namespace {name}: HTTP {status}: {_message(data)}")

    async def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        namespace = manifest["metadata"]["namespace"]
        status, data = await self.request("POST", self.vpod_path(namespace), manifest)
        if status not in (200, 201):
            name = manifest["metadata"]["name"]
            raise DemoError(f"cannot create VirtualPod {name}: HTTP {status}: {_message(data)}")
        return dict(data)

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        status, data = await self.request("GET", self.vpod_path(namespace, name))
        return dict(data) if status == 200 else None

    async def delete(self, namespace: str, name: str) -> None:
        await self.request("DELETE", self.vpod_path(namespace, name))

    async def drop_finalizers(self, namespace: str, name: str) -> None:
        await self.request(
            "PATCH",
            self.vpod_path(namespace, name),
            {"metadata": {"finalizers": None}},
            headers={"Content-Type": "application/merge-patch+json"},
        )

    async def delete_namespace(self, name: str) -> None:
        await self.request("DELETE", f"/api/v1/namespaces/{name}")


def _message(data: Any) -> str:
    return str(data.get("message", data)) if isinstance(data, dict) else str(data)


# ------------------------------------------------------------------- output helpers


def say(out: TextIO, line: str = "") -> None:
    out.write(line + "\n")
    out.flush()


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _maybe_bytes(count: int | None) -> str:
    return "-" if count is None else format_bytes(count)


class Clock:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.start

    def stamp(self) -> str:
        return f"[{self.now():6.1f}s]"


async def wait_until(
    probe: Callable[[], Any], timeout: float, what: str, interval: float = 0.1
) -> Any:
    """Await `probe()` (sync or async) until truthy; DemoError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


# ------------------------------------------------------------- the pool and its signal


@dataclass(frozen=True)
class PoolReading:
    """One sample of the pool signal; times are the demo clock's."""

    started: float
    finished: float
    allocatable_bytes: int
    used_bytes: int
    counted: int

    @property
    def available_bytes(self) -> int:
        return self.allocatable_bytes - self.used_bytes


class DemoPool(PoolSignal):
    """The monitor's own pool signal, with the one knob the demo turns: a co-tenant.

    memory.available = (pool - what the co-tenant holds) - the summed working sets of the
    demo's running VMs, read from libvirt on every sample (`PoolSignal`): a saved VM's
    memory leaves the sum, a resumed one comes back into it. Every reading is kept, so
    the timeline can show the signal before and after each action.
    """

    def __init__(self, inventory: Inventory, hv: HypervisorPort, clock: Clock) -> None:
        super().__init__(inventory, PLENTY_BYTES)
        self.hv = hv
        self.clock = clock
        self.pool_bytes = PLENTY_BYTES
        self.co_tenant_bytes = 0
        self.readings: list[PoolReading] = []

    def set_pool(self, pool_bytes: int, co_tenant_bytes: int = 0) -> None:
        self.pool_bytes = pool_bytes
        self.co_tenant_bytes = co_tenant_bytes
        self.allocatable_bytes = pool_bytes - co_tenant_bytes

    def co_tenant_takes(self, co_tenant_bytes: int) -> None:
        self.set_pool(self.pool_bytes, co_tenant_bytes)

    async def read(self) -> SignalReading:
        started = self.clock.now()
        reading = await super().read()
        allocatable = self.allocatable_bytes  # no await since the sum: the same value
        counted = sum(1 for d in self.inventory.domains.values() if d.info.active)
        self.readings.append(
            PoolReading(
                started,
                self.clock.now(),
                allocatable,
                allocatable - reading.available_bytes,
                counted,
            )
        )
        return reading

    @property
    def latest(self) -> PoolReading:
        if not self.readings:
            raise DemoError("the pressure monitor has not sampled the pool yet")
        return self.readings[-1]

    def before(self, at: float) -> PoolReading | None:
        """The last sample read completely before `at`."""
        done = [r for r in self.readings if r.finished <= at]
        return done[-1] if done else None

    def after(self, at: float) -> PoolReading | None:
        """The first sample whose reading started after `at`."""
        return next((r for r in self.readings if r.started >= at), None)

    async def sample_after(self, at: float) -> PoolReading:
        reading: PoolReading = await wait_until(
            lambda: self.after(at), PRESSURE_TIMEOUT, "the monitor's next sample"
        )
        return reading


class DemoHypervisor:
    """The hypervisor as the demo's monitor sees it (`monitor.HypervisorPort`).

    Notes when each suspend and resume is issued, for the timeline. On the test driver,
    whose memory stats are canned (every domain reports the same 1Gi RSS), a VM's
    working set is its configured memory: the inventory falls back to it when RSS is
    absent, and a Save releases exactly it. On QEMU everything is passed through.
    """

    def __init__(self, hv: Hypervisor, clock: Clock, *, measured_rss: bool) -> None:
        self.hv = hv
        self.clock = clock
        self.measured_rss = measured_rss
        self.issued: dict[str, float] = {}

    @property
    def measurement(self) -> str:
        if self.measured_rss:
            return "RSS of the QEMU processes"
        return "configured VM memory (test driver: its memory stats are canned)"

    async def list_domains(self) -> list[DomainInfo]:
        return await self.hv.list_domains()

    async def lookup(self, uuid: str) -> DomainInfo:
        return await self.hv.lookup(uuid)

    async def xml(self, uuid: str, *, inactive: bool = False) -> str:
        return await self.hv.xml(uuid, inactive=inactive)

    async def all_memory_stats(self, uuids: Collection[str] | None = None) -> dict[str, VMMemory]:
        stats = await self.hv.all_memory_stats(uuids)
        if self.measured_rss:
            return stats
        return {uuid: replace(memory, rss_bytes=None) for uuid, memory in stats.items()}

    async def host_memory(self) -> HostMemory:
        return await self.hv.host_memory()

    async def suspend(self, uuid: str, mode: SuspendMode) -> SuspendResult:
        self.issued[uuid] = self.clock.now()
        if self.measured_rss:
            return await self.hv.suspend(uuid, mode)
        memory = (await self.hv.lookup(uuid)).memory_bytes
        result = await self.hv.suspend(uuid, mode)
        if mode is SuspendMode.SAVE and result.changed:
            return replace(result, rss_before_bytes=memory, rss_after_bytes=0)
        return replace(result, rss_before_bytes=memory, rss_after_bytes=memory)

    async def resume(self, uuid: str, mode: SuspendMode | None = None) -> ResumeResult:
        self.issued[uuid] = self.clock.now()
        return await self.hv.resume(uuid, mode)

    async def set_balloon(self, uuid: str, memory_bytes: int) -> TuneResult:
        return await self.hv.set_balloon(uuid, memory_bytes)

    async def set_metadata(self, uuid: str, key: str, xml: str | None) -> None:
        await self.hv.set_metadata(uuid, key, xml)

    async def metadata(self, uuid: str, key: str) -> str | None:
        return await self.hv.metadata(uuid, key)

    async def metadata_of_all(self, key: str) -> dict[str, str]:
        return await self.hv.metadata_of_all(key)


@dataclass
class Action:
    """A line of the timeline: a suspend or resume, or a step of the co-tenant."""

    at: float
    what: str  # "suspended" | "resumed" | "pressure"
    name: str
    qos: QOSClass | None
    message: str
    issued: float | None = None


class DemoReporter:
    """`monitor.Reporter`: prints the timeline live and keeps it; forwards to the operator.

    The operator's own `StatusReporter` writes status and Events, so `kubectl get vpod`
    and `kubectl describe vpod` show what the timeline shows.
    """

    def __init__(self, ctx: AgentContext, hv: DemoHypervisor, clock: Clock, out: TextIO) -> None:
        self.ctx = ctx
        self.status = StatusReporter(ctx)
        self.hv = hv
        self.clock = clock
        self.out = out
        self.actions: list[Action] = []
        self.guaranteed_only = False
        #: False until the demo has sized the pool: before that the signal means nothing
        self.narrating = False
        self._pressure: tuple[bool, str] | None = None

    def _line(self, text: str) -> None:
        say(self.out, f"{self.clock.stamp()} {text}")

    def _record(self, what: str, vm: VMView, message: str) -> None:
        issued = self.hv.issued.get(vm.key)
        self.actions.append(Action(self.clock.now(), what, vm.name, vm.qos_class, message, issued))

    async def vm_suspending(self, vm: VMView, reason: str, message: str) -> None:
        self.ctx.suspensions[vm.key] = Suspension(vm.suspend_mode, reason, message)
        self._line(
            f"suspending {vm.name} ({vm.qos_class.value}, priority {vm.priority}, "
            f"uses {mib(vm.memory_bytes)}) with {vm.suspend_mode.value}: {message}"
        )

    async def vm_suspended(self, vm: VMView, reason: str, message: str) -> None:
        self._record("suspended", vm, message)
        self._line(f"SUSPENDED {vm.name} ({vm.qos_class.value}) -- {reason}: {message}")
        await self.status.suspended(vm.key, vm.suspend_mode, reason, message)

    async def vm_resumed(self, vm: VMView, message: str) -> None:
        self._record("resumed", vm, message)
        self._line(f"RESUMED {vm.name} ({vm.qos_class.value}) -- {message}")
        await self.status.resumed(vm.key, message)

    async def vm_ballooned(self, vm: VMView, target_bytes: int, message: str) -> None:
        self._line(f"ballooned {vm.name} to {format_bytes(target_bytes)}: {message}")

    async def action_failed(self, vm: VMView, action: str, message: str) -> None:
        self._line(f"FAILED to {action} {vm.name}: {message}")
        await self.status.failed(vm.key, f"{action} failed: {message}")

    async def pressure_changed(self, status: PressureStatus) -> None:
        if not self.narrating or (status.under_pressure, status.reason) == self._pressure:
            return
        self._pressure = (status.under_pressure, status.reason)
        state = "under pressure" if status.under_pressure else "no pressure"
        self._line(
            f"monitor: {state} ({status.reason}), {status.signal} memory.available "
            f"{mib(status.available_bytes)}, threshold {mib(status.threshold_bytes)}"
        )

    async def guaranteed_only_pressure(self, message: str) -> None:
        self.guaranteed_only = True
        self._line(f"only Guaranteed VMs left: {message}")


# -------------------------------------------------------------------- the operator


@dataclass
class RunningOperator:
    task: asyncio.Task[None]
    memo: Any
    stop_flag: asyncio.Event

    @property
    def ctx(self) -> AgentContext:
        return context(self.memo)

    async def stop(self) -> None:
        if self.task.done():
            return
        self.stop_flag.set()
        try:
            await asyncio.wait_for(asyncio.shield(self.task), timeout=15)
        except (TimeoutError, Exception):
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


def take_signals() -> None:
    """Ctrl-C and SIGTERM cancel the demo's main task, once, so that it cleans up.

    Kopf installs its own handlers when it starts; they would stop the operator first
    (deleting a VirtualPod then hangs on its finalizer) and arm a SIGKILL. Installed
    after Kopf's, these replace them; the operator is then stopped by its stop flag.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    if task is None:
        return

    def cancel_once() -> None:
        if not task.cancelling():
            task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, cancel_once)


@contextlib.asynccontextmanager
async def operator(
    settings: Settings,
    api_url: str | None,
    emulator: KubernetesApiEmulator | None,
    on_ready: Callable[[AgentContext], Any],
) -> AsyncIterator[RunningOperator]:
    """The real operator (all handlers) in this process, stopped on exit.

    `on_ready` runs inside the operator once libvirt is open (how `virtualpod run` starts
    its pressure monitor too): tasks it returns live in Kopf's context, which the
    Kubernetes calls of the status reporter need.
    """
    memo = build_memo(settings, Role.ALL, api_url=api_url, pressure=False)
    context(memo).on_ready.append(on_ready)
    stop_flag = asyncio.Event()
    ready = asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(
            clusterwide=True,
            standalone=True,
            registry=build_registry(Role.ALL),
            memo=memo,
            stop_flag=stop_flag,
            ready_flag=ready,
            settings=kopf.OperatorSettings(),
        ),
        name="virtualpod-operator",
    )
    running = RunningOperator(task, memo, stop_flag)
    try:

        def watching() -> bool:
            if task.done():
                task.result()  # raise what stopped it
                raise DemoError("the operator stopped during start-up")
            if running.ctx.hypervisor is None:
                return False
            if emulator is not None:
                return emulator.watchers.get(f"{API_GROUP}/{API_VERSION}/{PLURAL}", 0) > 0
            return ready.is_set()

        await wait_until(watching, OPERATOR_START_TIMEOUT, "the operator to watch VirtualPods")
        take_signals()
        yield running
    finally:
        await running.stop()


@dataclass
class PressureLoop:
    """The monitor the operator runs for the demo, on the demo's pool signal."""

    settings: Settings
    clock: Clock
    out: TextIO
    measured_rss: bool
    monitor: Monitor | None = None
    reporter: DemoReporter | None = None
    pool: DemoPool | None = None
    hv: DemoHypervisor | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def start(self, ctx: AgentContext) -> Any:
        """`AgentContext.on_ready` hook: build the monitor, return its loop."""
        self.hv = DemoHypervisor(ctx.hv, self.clock, measured_rss=self.measured_rss)
        inventory = Inventory(self.hv, scope=lambda meta: meta.namespace == NAMESPACE)
        self.pool = DemoPool(inventory, self.hv, self.clock)
        self.reporter = DemoReporter(ctx, self.hv, self.clock, self.out)
        self.monitor = Monitor(
            self.hv, self.pool, self.reporter, self.settings, inventory=inventory
        )
        return self._run(self.monitor)

    async def _run(self, monitor: Monitor) -> None:
        try:
            await monitor.run(self.stop)
            await monitor.idle()
        finally:
            self.finished.set()

    async def close(self) -> None:
        self.stop.set()
        if self.monitor is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.finished.wait(), timeout=15)


# ------------------------------------------------------------------------ the demo


@dataclass
class DemoVM:
    name: str
    manifest: dict[str, Any]
    qos: QOSClass | None = None
    uuid: str | None = None


@dataclass
class Outcome:
    created: list[QOSClass] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    guaranteed_suspended: bool = False
    pool: DemoPool | None = None
    domains_left: int | None = None
    running_left: int | None = None


def load_demo_vms(directory: Path, host_name: str) -> list[DemoVM]:
    vms = []
    for filename in MANIFESTS:
        manifest = yaml.safe_load((directory / filename).read_text(encoding="utf-8"))
        manifest["metadata"]["namespace"] = NAMESPACE
        manifest["spec"]["nodeName"] = host_name
        vms.append(DemoVM(manifest["metadata"]["name"], manifest))
    return vms


def demo_settings(args: argparse.Namespace, directory: Path, uri: str) -> Settings:
    base = load_settings(args.config or directory / "settings.yaml")
    domain_type = base.domain_type
    if uri.startswith("qemu") and domain_type == "kvm" and not os.access("/dev/kvm", os.W_OK):
        domain_type = "qemu"
    host = f"virtualpod-demo-{uuidlib.uuid4().hex[:8]}"
    return replace(base, libvirt_uri=uri, host_name=host, domain_type=domain_type)


async def _status(api: Api, vm: DemoVM) -> dict[str, Any]:
    obj = await api.get(NAMESPACE, vm.name)
    return dict((obj or {}).get("status") or {})


async def _phases(api: Api, vms: list[DemoVM]) -> dict[str, str | None]:
    return {vm.name: (await _status(api, vm)).get("phase") for vm in vms}


async def print_vm_table(
    api: Api, hv: Hypervisor, settings: Settings, vms: list[DemoVM], out: TextIO
) -> None:
    """Each VM as libvirt holds it now, next to what the plan asked for."""
    rows: list[tuple[str, ...]] = [
        ("NAME", "QOS", "STATE", "VCPUS", "MEMORY", "SHARES", "QUOTA", "HARD", "SOFT", "PLAN")
    ]
    for vm in vms:
        assert vm.uuid is not None
        info = await hv.lookup(vm.uuid)
        live = parse_domain(await hv.xml(vm.uuid))
        obj = await api.get(NAMESPACE, vm.name) or vm.manifest
        plan = plan_virtualpod(obj, settings, cgroup_version=hv.cgroup_version)
        rows.append(
            (
                vm.name,
                str(vm.qos),
                info.state.name.lower(),
                str(live.vcpus),
                format_bytes(live.memory_bytes),
                str(live.cputune.shares),
                "-"
                if live.cputune.quota_us is None
                else f"{live.cputune.quota_us}/{live.cputune.period_us}",
                _maybe_bytes(live.memtune.hard_limit_bytes),
                _maybe_bytes(live.memtune.soft_limit_bytes),
                "matches" if _matches(live, parse_domain(plan.domain_xml)) else "DIFFERS",
            )
        )
    say(out, table(rows))
    unit = "cpu.weight (cgroup v2)" if hv.cgroup_version == 2 else "cpu.shares (cgroup v1)"
    say(
        out,
        f"(read back from libvirt's live domain XML; SHARES as libvirt writes {unit}; "
        "QUOTA = global_quota/global_period in us; HARD/SOFT = memtune)",
    )


def _matches(live: DomainSummary, planned: DomainSummary) -> bool:
    return (
        live.vcpus == planned.vcpus
        and live.memory_bytes == planned.memory_bytes
        and live.cputune == planned.cputune
        and live.memtune == planned.memtune
    )


async def run_demo(args: argparse.Namespace, out: TextIO, outcome: Outcome) -> Outcome:
    clock = Clock()
    directory = demo_manifest_dir()
    say(out, "== virtualpod demo: VMs sized from containers, tuned by QoS, suspended in order")
    uri = await choose_libvirt(args.libvirt_uri, out)
    cluster = await choose_cluster(args.kubeconfig, out)
    settings = demo_settings(args, directory, uri)
    if uri == QEMU_URI:
        say(out, f"guests: diskless {settings.domain_type} VMs (they idle in firmware)")
    async with contextlib.AsyncExitStack() as stack:
        emulator: KubernetesApiEmulator | None = None
        if cluster is None:
            url, emulator = await stack.enter_async_context(serve_emulator())
            cluster = Cluster(url)
            say(out, f"kubernetes: emulated API serving on {url}")
        else:
            assert cluster.kubeconfig is not None
            os.environ["KUBECONFIG"] = cluster.kubeconfig  # for kopf's login
        hv = await stack.enter_async_context(Hypervisor(uri))
        api = await stack.enter_async_context(Api(cluster))
        vms = load_demo_vms(directory, settings.host_name)
        await remove_domains(hv, out, "left over from an earlier run")
        if await api.ensure_namespace(NAMESPACE) and not cluster.emulated:
            stack.push_async_callback(delete_namespace, api, out)

        loop = PressureLoop(settings, clock, out, measured_rss=not uri.startswith("test:"))
        api_url = None if cluster.kubeconfig else cluster.server
        await stack.enter_async_context(operator(settings, api_url, emulator, loop.start))
        # Runs before the operator stops: deleting goes through its finalizer.
        stack.push_async_callback(cleanup, api, hv, vms, outcome, out)
        stack.push_async_callback(loop.close)
        reporter, pool = loop.reporter, loop.pool
        if loop.monitor is None or reporter is None or pool is None:
            raise DemoError("the operator did not start the pressure monitor")
        outcome.pool = pool
        say(out, f"operator: running in this process as host {settings.host_name}")

        await apply_and_show(api, hv, settings, vms, outcome, clock, out)
        await create_pressure(api, hv, vms, loop, clock, out)
        outcome.actions = list(reporter.actions)
        outcome.guaranteed_suspended = any(
            a.qos is QOSClass.GUARANTEED and a.what == "suspended" for a in reporter.actions
        )
        say(out)
        say(out, "== cleaning up")
    return outcome


async def apply_and_show(
    api: Api,
    hv: Hypervisor,
    settings: Settings,
    vms: list[DemoVM],
    outcome: Outcome,
    clock: Clock,
    out: TextIO,
) -> None:
    say(out)
    say(out, f"== applying one VirtualPod per QoS class (manifests/demo/, namespace {NAMESPACE})")
    for vm in vms:
        await api.create(vm.manifest)
        say(out, f"{clock.stamp()} created virtualpod/{vm.name}")

    async def all_running() -> bool:
        return all(phase == "Running" for phase in (await _phases(api, vms)).values())

    await wait_until(all_running, RUNNING_TIMEOUT, "every demo VirtualPod to be Running")
    for vm in vms:
        status = await _status(api, vm)
        vm.qos = QOSClass(status["qosClass"])
        vm.uuid = status["vm"]["uuid"]
        outcome.created.append(vm.qos)
    say(out, f"{clock.stamp()} all Running")
    say(out)
    await print_vm_table(api, hv, settings, vms, out)


async def create_pressure(
    api: Api,
    hv: Hypervisor,
    vms: list[DemoVM],
    loop: PressureLoop,
    clock: Clock,
    out: TextIO,
) -> None:
    """Three steps of a co-tenant on the VM pool; the monitor does the rest.

    Each step is sized from what the VMs use at that moment: the first one BestEffort
    save covers; the second (with every VM running, a deficit of BestEffort's usage plus
    half of Burstable's) also needs the Burstable VM; the third gives it all back.
    """
    monitor, pool, reporter, demo_hv = loop.monitor, loop.pool, loop.reporter, loop.hv
    if monitor is None or pool is None or reporter is None or demo_hv is None:
        raise DemoError("the operator did not start the pressure monitor")
    eviction = monitor.eviction
    threshold = eviction.hard_memory_available_bytes
    floor = threshold + eviction.minimum_reclaim_bytes  # what the monitor restores
    by_qos = {vm.qos: vm for vm in vms}
    best_effort = by_qos[QOSClass.BEST_EFFORT]
    burstable = by_qos[QOSClass.BURSTABLE]
    guaranteed = by_qos[QOSClass.GUARANTEED]
    say(out)
    say(
        out,
        "== memory pressure on the VM pool (the monitor's pool signal; every suspend and "
        "resume below is real libvirt, and so is the memory it releases)",
    )
    say(
        out,
        "signal: memory.available = the pool's allocatable for VMs - the working sets of "
        f"the running VMs, measured as {demo_hv.measurement}, sampled every "
        f"{eviction.sampling_interval_s:g}s",
    )
    say(
        out,
        f"policy: hard threshold {mib(threshold)}, transition period "
        f"{eviction.pressure_transition_period_s:g}s, suspend mode "
        f"{eviction.suspend_mode.value}, resume margin {mib(eviction.resume_margin_bytes)}",
    )

    def usage(vm: DemoVM) -> int:
        assert vm.uuid is not None
        tracked = pool.inventory.domains.get(vm.uuid)
        if tracked is None or not tracked.info.active:
            return 0
        return tracked.rss_bytes if tracked.rss_bytes is not None else tracked.info.memory_bytes

    def usages() -> str:
        return ", ".join(f"{vm.name} {mib(usage(vm))}" for vm in vms if usage(vm))

    measured = await settled_usage(pool, clock)
    pool_bytes = _round_up(
        measured.used_bytes + threshold + eviction.resume_margin_bytes + POOL_HEADROOM_BYTES,
        POOL_ROUNDING_BYTES,
    )
    pool.set_pool(pool_bytes)
    reading = await pool.sample_after(clock.now())
    reporter.narrating = True
    say(
        out,
        f"{clock.stamp()} the VM pool: {mib(pool_bytes)} allocatable (room for what the VMs "
        f"use, the threshold, the resume margin and {mib(POOL_HEADROOM_BYTES)}); VMs use "
        f"{mib(reading.used_bytes)} ({usages()}); available {mib(reading.available_bytes)}",
    )

    async def co_tenant_step(need_bytes: int, why: str) -> None:
        """Lower the pool's allocatable so that the monitor needs `need_bytes` back."""
        latest = pool.latest
        holds = pool.pool_bytes - latest.used_bytes - (floor - need_bytes)
        added = holds - pool.co_tenant_bytes
        now_holds = f" (it now holds {mib(holds)})" if added != holds else ""
        say(out)
        say(
            out,
            f"{clock.stamp()} a co-tenant takes {mib(added)} of the VM pool{now_holds}: "
            f"pool {mib(pool.pool_bytes - holds)} for VMs, VMs use "
            f"{mib(latest.used_bytes)}, available {mib(floor - need_bytes)} < "
            f"{mib(threshold)}: need {mib(need_bytes)} -- {why}",
        )
        at = clock.now()
        pool.co_tenant_takes(holds)
        reporter.actions.append(
            Action(at, "pressure", "-", None, f"co-tenant takes {mib(added)}", at)
        )

    def done(what: str, vm: DemoVM) -> Action | None:
        return next((a for a in reporter.actions if a.what == what and a.name == vm.name), None)

    async def signal_after(what: str, vm: DemoVM) -> None:
        action: Action = await wait_until(
            lambda: done(what, vm), PRESSURE_TIMEOUT, f"{vm.name} to be {what}"
        )
        before = pool.before(action.issued if action.issued is not None else action.at)
        after = await pool.sample_after(action.at)
        change = "released" if what == "suspended" else "taken back"
        was = f" (was {mib(before.available_bytes)})" if before is not None else ""
        side = "above" if after.available_bytes >= threshold else "below"
        say(
            out,
            f"{clock.stamp()} signal: pool memory.available {mib(after.available_bytes)}"
            f"{was}, {side} the {mib(threshold)} threshold: {vm.name}'s memory {change}; "
            f"VMs use {mib(after.used_bytes)}",
        )

    async def state(vm: DemoVM) -> str:
        assert vm.uuid is not None
        return (await hv.lookup(vm.uuid)).state.name.lower()

    # Step 1: what one BestEffort save covers.
    best_effort_usage = usage(best_effort)
    need = max(MIB, best_effort_usage // 2 // MIB * MIB)
    await co_tenant_step(
        need,
        f"one BestEffort save ({best_effort.name}, uses {mib(usage(best_effort))}) covers it",
    )
    await signal_after("suspended", best_effort)
    await pool.sample_after(clock.now() + HOLD_S)
    suspended = [a.name for a in reporter.actions if a.what == "suspended"]
    say(
        out,
        f"{clock.stamp()} {HOLD_S:g}s later: {burstable.name} (Burstable) is "
        f"{await state(burstable)}, suspended so far: {', '.join(suspended)} -- the fewest "
        "VMs that cover the need",
    )

    # Step 2: with every VM running, a deficit of BestEffort's usage + half Burstable's.
    need = max(MIB, usage(burstable) // 2 // MIB * MIB)
    await co_tenant_step(
        need,
        f"in all, with every VM running, a deficit of {mib(best_effort_usage + need)} "
        f"({best_effort.name}'s {mib(best_effort_usage)} + half of {burstable.name}'s "
        f"{mib(usage(burstable))}): {best_effort.name} is saved already, so "
        f"{burstable.name} (Burstable) goes next; {guaranteed.name} (Guaranteed) never",
    )
    await signal_after("suspended", burstable)
    await pool.sample_after(clock.now() + HOLD_S)
    say(
        out,
        f"{clock.stamp()} {guaranteed.name} (Guaranteed) is {await state(guaranteed)}: "
        "Guaranteed VMs are never suspended for host pressure",
    )
    lower = [best_effort.name, burstable.name]

    async def api_shows_suspended() -> bool:
        phases = await _phases(api, vms)
        return all(phases[name] == "Suspended" for name in lower)

    await wait_until(api_shows_suspended, 15, "status.phase Suspended in the API")
    say(out)
    say(out, "kubectl get vpod (from the API):")
    await print_phases(api, vms, out)

    # Step 3: the co-tenant leaves.
    say(out)
    held = pool.co_tenant_bytes
    say(
        out,
        f"{clock.stamp()} pressure gone: the co-tenant gives back its {mib(held)}; once no "
        f"threshold has been met for the {eviction.pressure_transition_period_s:g}s "
        "transition period the monitor resumes, highest rank first, one VM at a time, "
        "each only if the signal stays above threshold + margin after it",
    )
    at = clock.now()
    pool.co_tenant_takes(0)
    reporter.actions.append(
        Action(at, "pressure", "-", None, f"co-tenant gives back {mib(held)}", at)
    )
    await signal_after("resumed", burstable)
    await signal_after("resumed", best_effort)

    async def api_shows_running() -> bool:
        return all(phase == "Running" for phase in (await _phases(api, vms)).values())

    await wait_until(api_shows_running, 15, "status.phase Running in the API")
    for vm in (best_effort, burstable):
        assert vm.uuid is not None
        if (await hv.lookup(vm.uuid)).state is not DomainState.RUNNING:
            raise DemoError(f"{vm.name} was reported resumed but libvirt says {await state(vm)}")
    say(out)
    say(out, "kubectl get vpod (from the API):")
    await print_phases(api, vms, out)


async def settled_usage(pool: DemoPool, clock: Clock) -> PoolReading:
    """A sample taken once the VMs' working sets stopped growing (guests just booted).

    A pressure step is sized from what the VMs use; if they were still growing, the
    growth alone would need more VMs suspended than the step means to.
    """
    deadline = clock.now() + SETTLE_TIMEOUT_S
    previous = await pool.sample_after(clock.now())
    while True:
        current = await pool.sample_after(clock.now() + SETTLE_WINDOW_S)
        if abs(current.used_bytes - previous.used_bytes) <= SETTLED_BYTES:
            return current
        if clock.now() > deadline:
            return current
        previous = current


def _round_up(count: int, unit: int) -> int:
    return -(-count // unit) * unit


async def print_phases(api: Api, vms: list[DemoVM], out: TextIO) -> None:
    rows: list[tuple[str, ...]] = [("NAME", "QOS", "PHASE", "REASON")]
    for vm in vms:
        status = await _status(api, vm)
        rows.append(
            (
                vm.name,
                str(status.get("qosClass", "")),
                str(status.get("phase", "")),
                str(status.get("reason", "")),
            )
        )
    say(out, table(rows))


DOMAIN_PREFIX = f"vpod_{NAMESPACE}_"


async def remove_domains(hv: Hypervisor, out: TextIO, why: str) -> None:
    """Undefine the demo's domains (destroying them, dropping managed-save images)."""
    for info in await hv.list_domains():
        if info.name.startswith(DOMAIN_PREFIX):
            await hv.undefine(info.uuid)
            say(out, f"removed domain {info.name} {why} (and any managed-save image)")


async def cleanup(
    api: Api, hv: Hypervisor, vms: list[DemoVM], outcome: Outcome, out: TextIO
) -> None:
    """Remove what the demo created; runs on success, failure and Ctrl-C alike.

    Deleting goes through the operator (its finalizer undefines the domain); whatever
    is left after that -- the operator died, libvirt refused -- is removed directly.
    """
    for vm in vms:
        with contextlib.suppress(Exception):
            await api.delete(NAMESPACE, vm.name)

    async def gone() -> bool:
        for vm in vms:
            with contextlib.suppress(Exception):
                if await api.get(NAMESPACE, vm.name) is not None:
                    return False
        return True

    try:
        await wait_until(gone, CLEANUP_TIMEOUT, "the operator to delete the VirtualPods")
        say(out, "deleted the VirtualPods (the operator destroyed and undefined their VMs)")
    except DemoError as error:
        say(out, f"warning: {error}; removing finalizers and domains directly")
        for vm in vms:
            with contextlib.suppress(Exception):
                await api.drop_finalizers(NAMESPACE, vm.name)
    try:
        await remove_domains(hv, out, "the operator left behind")
        ours = [i for i in await hv.list_domains() if i.name.startswith(DOMAIN_PREFIX)]
        outcome.domains_left = len(ours)
        outcome.running_left = sum(1 for info in ours if info.active)
    except HypervisorError as error:
        say(out, f"warning: cannot list or remove domains: {error.message}")


async def delete_namespace(api: Api, out: TextIO) -> None:
    with contextlib.suppress(Exception):
        await api.delete_namespace(NAMESPACE)
        say(out, f"deleted namespace {NAMESPACE} (the demo created it)")


def summary(outcome: Outcome) -> list[str]:
    suspended = [a for a in outcome.actions if a.what == "suspended"]
    resumed = [a for a in outcome.actions if a.what == "resumed"]

    def classes(actions: list[Action]) -> str:
        return ", ".join(a.qos.value for a in actions if a.qos is not None) or "none"

    steps: list[list[Action]] = []
    for action in outcome.actions:
        if action.what == "pressure":
            steps.append([])
        elif action.what == "suspended" and steps:
            steps[-1].append(action)
    guaranteed = [a for a in suspended if a.qos is QOSClass.GUARANTEED]
    return [
        "created: " + (", ".join(q.value for q in outcome.created) or "none"),
        "suspend order: " + classes(suspended),
        "suspended per co-tenant step: " + " | ".join(classes(step) for step in steps),
        "Guaranteed suspended: " + ("never" if not guaranteed else f"{len(guaranteed)} time(s)"),
        "resumed: " + classes(resumed),
        f"domains left: {outcome.domains_left}",
        f"left running: {outcome.running_left}",
    ]


def print_timeline(outcome: Outcome, out: TextIO) -> None:
    """Every action with the pool signal of the last sample before it and the first after."""
    rows: list[tuple[str, ...]] = [("TIME", "EVENT", "VM", "QOS", "AVAILABLE", "WHY")]
    pool = outcome.pool
    for action in sorted(outcome.actions, key=lambda a: a.at):
        signal = "-"
        if pool is not None:
            before = pool.before(action.issued if action.issued is not None else action.at)
            after = pool.after(action.at)
            signal = (
                f"{mib(before.available_bytes if before else None)} -> "
                f"{mib(after.available_bytes if after else None)}"
            )
        rows.append(
            (
                f"{action.at:.1f}s",
                action.what if action.what != "pressure" else action.message,
                action.name,
                action.qos.value if action.qos is not None else "-",
                signal,
                action.message if action.what != "pressure" else "",
            )
        )
    say(out, table(rows))
    say(
        out,
        "(AVAILABLE: pool memory.available of the last sample before the action was issued "
        "-> of the first sample after it took effect)",
    )


def cmd_demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`virtualpod demo`: exit 0 when every step worked, 1 on failure, 130 on Ctrl-C."""
    logging.basicConfig(
        level=logging.WARNING, stream=err, format="%(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("kopf", "virtualpod.kube", "aiohttp"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    outcome = Outcome()

    async def main() -> Outcome:
        take_signals()
        return await run_demo(args, out, outcome)

    try:
        asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        if outcome.domains_left == 0:
            err.write("demo interrupted; everything it created was removed\n")
        else:
            err.write("demo interrupted; cleanup incomplete (see above)\n")
        return 130
    except (DemoError, SettingsError) as error:
        err.write(f"demo failed: {error}\n")
        return 1
    say(out)
    say(out, "== timeline (seconds since the demo started)")
    print_timeline(outcome, out)
    say(out)
    say(out, "== summary")
    for line in summary(outcome):
        say(out, line)
    ok = (
        outcome.created == [QOSClass.BEST_EFFORT, QOSClass.BURSTABLE, QOSClass.GUARANTEED]
        and outcome.domains_left == 0
        and outcome.running_left == 0
    )
    return 0 if ok else 1

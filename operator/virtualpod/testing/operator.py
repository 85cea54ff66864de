"""Starting the real operator (every Kopf handler) for the tests, the bench and the demo.

* `InProcessOperator`: in this process, in a thread and event loop of its own. Kopf
  cancels every task created in its loop after it started, so the caller's loop (where
  the emulator and the client run) must not be Kopf's. Several may run side by side
  against one API, each with its own settings (host name, libvirt URI).
* `OperatorProcess`: `virtualpod run` as a process, configured by a kubeconfig, as in a
  cluster (what the process test and the operator benchmark measure).

Both are ready once the operator watches VirtualPods: on the emulator, once a watch
stream opened after the start; on a real cluster, once Kopf says it is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import kopf

from virtualpod.core.settings import Settings
from virtualpod.core.spec import API_GROUP, API_VERSION
from virtualpod.kube.context import AgentContext, Role, context
from virtualpod.kube.runner import build_memo, build_registry
from virtualpod.testing.emulator import KubernetesApiEmulator
from virtualpod.testing.waiting import async_wait_for

T = TypeVar("T")

VPODS_KEY = f"{API_GROUP}/{API_VERSION}/virtualpods"
PODS_KEY = "v1/pods"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
#: Runs inside the operator once libvirt is open; may return a coroutine to run there.
ReadyHook = Callable[[AgentContext], Any]


class WatchProbe:
    """Whether an operator started after this probe was made watches the resources."""

    def __init__(
        self, emulator: KubernetesApiEmulator | None, keys: Sequence[str] = (VPODS_KEY,)
    ) -> None:
        self.emulator = emulator
        opened = emulator.watches_opened if emulator else {}
        self.baseline = {key: opened.get(key, 0) for key in keys}

    def watching(self) -> bool | None:
        """True/False on the emulator; None where only the operator itself can tell."""
        if self.emulator is None:
            return None
        opened = self.emulator.watches_opened
        return all(opened.get(key, 0) > count for key, count in self.baseline.items())


@dataclass
class InProcessOperator:
    """One operator in a thread of this process: `start()`, then `stop()` or `kill()`."""

    settings: Settings
    #: The API to log in to; None: the kubeconfig or service account, as `kopf run`.
    api_url: str | None = None
    emulator: KubernetesApiEmulator | None = None
    #: Run the pressure monitor, as `virtualpod run` does.
    pressure: bool = False
    #: Adjusts the context before the operator starts (e.g. a shorter restart back-off).
    prepare: Callable[[AgentContext], None] | None = None
    on_ready: Sequence[ReadyHook] = ()
    #: Which handlers: the controller, a host's agent, or all of them for a single host.
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
        settings.process.ultimate_exiting_timeout = None  # never SIGKILL this process
        self.main = loop.create_task(
            kopf.operator(
                clusterwide=True,
                standalone=True,
                registry=build_registry(self.role, self.ctx.host_name),
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

    def _ready(self, probe: WatchProbe) -> bool:
        assert self.thread is not None
        if not self.thread.is_alive():
            raise RuntimeError(f"the operator exited during start-up: {self.error!r}")
        with_libvirt = self.role is not Role.CONTROLLER
        if not self.ready_flag.is_set() or (with_libvirt and self.ctx.hypervisor is None):
            return False
        if self.pressure and self.ctx.pressure is None:
            return False
        watching = probe.watching()
        return True if watching is None else watching

    async def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start it and return once it watches VirtualPods."""
        self.memo = build_memo(
            self.settings, self.role, api_url=self.api_url, pressure=self.pressure
        )
        self.ctx.on_ready.extend(self.on_ready)
        if self.prepare is not None:
            self.prepare(self.ctx)
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        watched = (VPODS_KEY, PODS_KEY) if self.role is Role.CONTROLLER else (VPODS_KEY,)
        probe = WatchProbe(self.emulator, watched)
        self.thread = threading.Thread(target=self._run, name="operator", daemon=True)
        self.thread.start()

        async def ready() -> bool:
            return self._ready(probe)

        await async_wait_for(ready, timeout=timeout, what="the operator to watch VirtualPods")

    async def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine in the operator's loop (where its tasks and Kopf context live)."""
        assert self.loop is not None
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self.loop))

    async def kill(self) -> None:
        """Cancel the operator mid-work: handlers do not finish, nothing is cleaned up."""
        assert self.loop is not None
        assert self.main is not None
        assert self.thread is not None
        tasks = list(self.ctx.tasks)
        main = self.main

        def cancel_all() -> None:
            for task in tasks:
                task.cancel()
            main.cancel()

        with contextlib.suppress(RuntimeError):  # loop already closed
            self.loop.call_soon_threadsafe(cancel_all)
        await asyncio.to_thread(self.thread.join, STOP_TIMEOUT_S)
        # Kopf waits for a threading.Event stop flag in an executor thread; a killed
        # operator never sets it, and that thread would keep the interpreter alive.
        self.stop_flag.set()

    async def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop it as SIGTERM would (cleanup handlers run); kill it if that hangs."""
        self.stop_flag.set()
        if self.thread is None or not self.thread.is_alive():
            return
        await asyncio.to_thread(self.thread.join, timeout)
        if self.thread.is_alive():
            await self.kill()


@contextlib.asynccontextmanager
async def running_operator(
    settings: Settings,
    *,
    api_url: str | None = None,
    emulator: KubernetesApiEmulator | None = None,
    pressure: bool = False,
    on_ready: Sequence[ReadyHook] = (),
    timeout: float = START_TIMEOUT_S,
) -> AsyncIterator[InProcessOperator]:
    """An `InProcessOperator`, started, and stopped on exit."""
    operator = InProcessOperator(
        settings, api_url, emulator, pressure=pressure, on_ready=tuple(on_ready)
    )
    try:
        await operator.start(timeout)
        yield operator
    finally:
        await operator.stop()


@dataclass
class OperatorProcess:
    """`virtualpod run` as a process of its own, on a kubeconfig."""

    kubeconfig: Path
    config: Path
    libvirt_uri: str = "test:///default"
    emulator: KubernetesApiEmulator | None = None
    #: Keep its output (stdout and stderr) for `stop()` to return; else discard it.
    capture: bool = True
    process: asyncio.subprocess.Process | None = None
    #: More `virtualpod run` options, e.g. `("--role=agent", "--host-name=node-a")`.
    args: Sequence[str] = ()
    #: `--standalone` (no Kopf peering); the controller role peers without it.
    standalone: bool = True
    #: Write its output to this file instead (for a long run whose output is not read).
    log: Path | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self, timeout: float = START_TIMEOUT_S, *, watching: bool = True) -> None:
        """Start it and return once it watches VirtualPods (on the emulator); at once with
        `watching=False` (e.g. a controller replica that peering keeps on standby)."""
        output: int | IO[bytes] = (
            asyncio.subprocess.PIPE if self.capture else asyncio.subprocess.DEVNULL
        )
        probe = WatchProbe(self.emulator)
        with contextlib.ExitStack() as files:
            if self.log is not None:
                output = files.enter_context(self.log.open("wb"))
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "virtualpod.cli",
                "run",
                *(["--standalone"] if self.standalone else []),
                "--config",
                str(self.config),
                "--libvirt-uri",
                self.libvirt_uri,
                *self.args,
                env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
                stdout=output,
                stderr=asyncio.subprocess.STDOUT if self.capture or self.log else output,
            )

        async def ready() -> bool:
            if self.process is not None and self.process.returncode is not None:
                raise RuntimeError(f"`virtualpod run` exited: {await self.stop()}")
            return probe.watching() is not False

        if watching:
            await async_wait_for(
                ready, timeout=timeout, what="`virtualpod run` to watch VirtualPods"
            )

    async def stop(self, timeout: float = STOP_TIMEOUT_S) -> str:
        """SIGTERM (SIGKILL if it hangs); its output, when captured."""
        process = self.process
        if process is None:
            return ""
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        try:
            out, _ = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            process.kill()
            out, _ = await process.communicate()
        return out.decode(errors="replace") if out else ""

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

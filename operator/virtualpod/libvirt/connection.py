"""The libvirt connection: worker threads, reconnect, lifecycle events, one call helper.

* **Never block the asyncio loop.** Every libvirt call runs in a small thread pool;
  the coroutine API awaits it. libvirt connections are thread-safe.
* **Reconnect, don't die.** A close callback marks the connection dead when libvirtd
  goes away; the next call (or a background task, so events resume) reopens it with
  exponential backoff. A call that fails because the connection dropped is retried
  once on the new connection; every operation of the shell is idempotent, so that is
  safe.
* **Keyed by UUID.** `_with_domain(uuid, fn)` is the one way an operation reaches a
  domain: looked up by UUID in a worker thread, libvirt's errors translated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import libvirt

from virtualpod.core.domain import METADATA_NS
from virtualpod.libvirt.errors import DomainNotFound, HypervisorError, Unreachable, translate
from virtualpod.libvirt.events import (
    DomainEvent,
    EventKind,
    EventStream,
    ensure_event_loop,
    event_kind,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_URI = "test:///default"
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_COUNT = 3
FIRST_RETRY_S = 0.05
MAX_RETRY_S = 2.0
#: Enough for a save, a stalled listing and a stalled stats query at once (3) and more.
DEFAULT_WORKERS = 8
LOCAL_SCHEMES = ("qemu", "kvm")


def detect_cgroup_version(root: Path = Path("/sys/fs/cgroup")) -> int:
    """2 when the cpu controller is on the unified hierarchy (libvirt writes cpu.weight)."""
    controllers = root / "cgroup.controllers"
    with contextlib.suppress(OSError):
        if "cpu" in controllers.read_text().split():
            return 2
    return 1


def is_local_uri(uri: str) -> bool:
    """A QEMU URI of this host (`qemu:///system`), not a remote or test one."""
    scheme, sep, rest = uri.partition("://")
    return bool(sep) and scheme in LOCAL_SCHEMES and rest.startswith("/")


class Connection:
    """An async libvirt connection. `async with Hypervisor(uri) as hv: ...`."""

    def __init__(
        self,
        uri: str = DEFAULT_URI,
        *,
        cgroup_version: int | None = None,
        reconnect_timeout: float = 30.0,
        max_workers: int = DEFAULT_WORKERS,
        metadata_ns: str = METADATA_NS,
    ) -> None:
        self.uri = uri
        self.metadata_ns = metadata_ns
        self.reconnect_timeout = reconnect_timeout
        self.local = is_local_uri(uri)
        if cgroup_version is None:
            cgroup_version = detect_cgroup_version() if self.local else 1
        #: On 2, cpu shares are converted to cpu.weight before libvirt sees them.
        self.cgroup_version = cgroup_version
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="libvirt")
        self._conn: Any = None
        self._conn_lock: asyncio.Lock | None = None
        self._subscribers: set[EventStream] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._closed = False
        #: Times the connection was (re)opened; tests and metrics read it.
        self.connects = 0

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the connection now (otherwise the first call does); raises Unreachable."""
        await self._connection()

    async def close(self) -> None:
        self._closed = True
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect_task
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._thread(self._close_conn, conn)
        self._executor.shutdown(wait=False)

    def subscribe(self) -> EventStream:
        """A stream of lifecycle events for every domain on this connection."""
        return EventStream(self._subscribers)

    # ------------------------------------------------------------- calls

    async def _thread(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(conn, *args) in a thread; on a dropped connection reconnect, retry once."""
        for attempt in (1, 2):
            conn = await self._connection()
            try:
                return await self._thread(fn, conn, *args)
            except libvirt.libvirtError as e:
                if attempt == 1 and not await self._thread(self._alive, conn):
                    log.warning("libvirt connection lost (%s); reconnecting", e.get_error_message())
                    self._discard(conn)
                    continue
                raise translate(e) from e
        raise AssertionError("unreachable")  # pragma: no cover

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(conn, *args)` in the libvirt thread pool, for the other libvirt/ modules."""
        return await self._call(fn, *args)

    async def _with_domain(self, uuid: str, fn: Callable[[Any], T]) -> T:
        """Run fn(domain) in a thread on the domain with `uuid`; raises DomainNotFound."""
        return await self._call(lambda conn: fn(self._dom(conn, uuid)))

    @staticmethod
    def _dom(conn: Any, uuid: str) -> Any:
        try:
            return conn.lookupByUUIDString(uuid)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise DomainNotFound(
                    f"no domain with uuid {uuid}", libvirt_code=e.get_error_code()
                ) from e
            raise

    @staticmethod
    def _alive(conn: Any) -> bool:
        try:
            return bool(conn.isAlive())
        except libvirt.libvirtError:
            return False

    # ------------------------------------------------------- (re)connecting

    async def _connection(self) -> Any:
        if self._closed:
            raise HypervisorError("hypervisor connection closed")
        if self._conn_lock is None:
            self._conn_lock = asyncio.Lock()
            self._loop = asyncio.get_running_loop()
        async with self._conn_lock:
            if self._conn is None:
                self._conn = await self._open_with_backoff()
                self.connects += 1
                if self.connects > 1:
                    self._publish(DomainEvent(EventKind.RECONNECTED, None, None))
            return self._conn

    async def _open_with_backoff(self) -> Any:
        delay, deadline = FIRST_RETRY_S, time.monotonic() + self.reconnect_timeout
        while True:
            try:
                return await self._thread(self._open)
            except libvirt.libvirtError as e:
                if time.monotonic() + delay > deadline:
                    raise Unreachable(
                        f"cannot connect to {self.uri}: {e.get_error_message()}",
                        libvirt_code=e.get_error_code(),
                    ) from e
                log.info(
                    "libvirt %s unreachable (%s); retrying in %.2fs",
                    self.uri,
                    e.get_error_message(),
                    delay,
                )
                await asyncio.sleep(delay)  # backoff between attempts
                delay = min(delay * 2, MAX_RETRY_S)

    def _open(self) -> Any:
        """Blocking: open, watch for close, subscribe to lifecycle events."""
        ensure_event_loop()
        conn = libvirt.open(self.uri)
        with contextlib.suppress(libvirt.libvirtError):  # test driver: no keepalive
            conn.setKeepAlive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT)
        with contextlib.suppress(libvirt.libvirtError):
            conn.registerCloseCallback(self._on_close, None)
        conn._virtualpod_lifecycle_id = conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None
        )
        return conn

    @staticmethod
    def _close_conn(conn: Any) -> None:
        """Blocking, best effort: a dead connection still holds callbacks and a socket."""
        with contextlib.suppress(libvirt.libvirtError):
            conn.unregisterCloseCallback()
        with contextlib.suppress(libvirt.libvirtError, AttributeError, KeyError):
            conn.domainEventDeregisterAny(conn._virtualpod_lifecycle_id)
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()

    def _discard(self, conn: Any) -> None:
        """Forget a dead connection (loop thread) and close it in the pool."""
        if self._conn is conn:
            self._conn = None
        with contextlib.suppress(RuntimeError):  # executor already shut down
            self._executor.submit(self._close_conn, conn)

    def _on_close(self, conn: Any, reason: int, _opaque: object) -> None:
        """libvirt event thread: the daemon went away. Reconnect in the background."""
        log.warning("libvirt connection to %s closed (reason %d)", self.uri, reason)
        loop = self._loop
        if loop is not None and not self._closed:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._discard, conn)
                loop.call_soon_threadsafe(self._start_reconnect)
        elif self._conn is conn:
            self._conn = None

    def _start_reconnect(self) -> None:
        if self._closed or (self._reconnect_task and not self._reconnect_task.done()):
            return

        async def reconnect() -> None:
            with contextlib.suppress(HypervisorError):
                await self._connection()

        self._reconnect_task = asyncio.get_running_loop().create_task(reconnect())

    # -------------------------------------------------------------- events

    def _on_lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: object) -> None:
        kind = event_kind(event, detail)
        if kind is not None:
            self._publish(DomainEvent(kind, dom.UUIDString(), dom.name(), event, detail))

    def _publish(self, event: DomainEvent) -> None:
        for subscriber in list(self._subscribers):
            subscriber.push(event)


def affect_flags(dom: Any) -> int:
    """LIVE|CONFIG for an active domain, else CONFIG: a change reaches both or the config."""
    if dom.isActive():
        return int(libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    return int(libvirt.VIR_DOMAIN_AFFECT_CONFIG)


def is_live(flags: int) -> bool:
    return bool(flags & libvirt.VIR_DOMAIN_AFFECT_LIVE)


def apply_both(call: Callable[[int], object], flags: int) -> None:
    """Apply with LIVE|CONFIG; drivers that refuse the pair (test) get two calls."""
    try:
        call(flags)
    except libvirt.libvirtError as e:
        both = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG
        if flags != both or "mutually exclusive" not in (e.get_error_message() or ""):
            raise
        call(libvirt.VIR_DOMAIN_AFFECT_LIVE)
        call(libvirt.VIR_DOMAIN_AFFECT_CONFIG)

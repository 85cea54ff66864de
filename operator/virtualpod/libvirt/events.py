"""Lifecycle events: the process-wide libvirt event thread, and streams for subscribers.

libvirt accepts exactly one event implementation per process and binds it forever. Its
default (C, thread-safe) implementation runs here in a daemon thread; events reach
subscribers through `call_soon_threadsafe`. `libvirtaio` is not used: libvirt calls the
event hooks from whichever thread makes an API call, and libvirtaio touches its asyncio
loop from there without `call_soon_threadsafe`, so with calls in worker threads events
were silently lost (measured). This way lifecycle events, the close callback and
keepalive work whichever loop (kopf's, a test's) uses the connection, even while that
loop is busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import threading
from collections.abc import MutableSet
from dataclasses import dataclass
from types import TracebackType

import libvirt

log = logging.getLogger(__name__)


class EventKind(enum.StrEnum):
    DEFINED = "defined"
    UNDEFINED = "undefined"
    STARTED = "started"
    PAUSED = "paused"
    RESUMED = "resumed"
    SAVED = "saved"
    STOPPED = "stopped"
    CRASHED = "crashed"
    #: The connection was re-established: events may have been missed, resync.
    RECONNECTED = "reconnected"


@dataclass(frozen=True)
class DomainEvent:
    kind: EventKind
    uuid: str | None
    name: str | None
    event: int = -1
    detail: int = -1


_KIND_OF_EVENT = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: EventKind.DEFINED,
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: EventKind.UNDEFINED,
    libvirt.VIR_DOMAIN_EVENT_STARTED: EventKind.STARTED,
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: EventKind.PAUSED,
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: EventKind.PAUSED,
    libvirt.VIR_DOMAIN_EVENT_RESUMED: EventKind.RESUMED,
    libvirt.VIR_DOMAIN_EVENT_CRASHED: EventKind.CRASHED,
}
_KIND_OF_STOP = {
    libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED: EventKind.SAVED,
    libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED: EventKind.CRASHED,
    libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED: EventKind.CRASHED,
}


def event_kind(event: int, detail: int) -> EventKind | None:
    """Map virDomainEventType + detail onto what the operator mirrors into status.

    None for SHUTDOWN (the guest is shutting down): the STOPPED that follows matters.
    """
    if event == libvirt.VIR_DOMAIN_EVENT_STOPPED:
        return _KIND_OF_STOP.get(detail, EventKind.STOPPED)
    return _KIND_OF_EVENT.get(event)


class EventStream:
    """Lifecycle events for one subscriber; registered from creation, so none are missed.

    Use as `async with hv.subscribe() as events: ev = await events.next(timeout=5)`
    or `async for ev in events`.
    """

    def __init__(self, subscribers: MutableSet[EventStream]) -> None:
        self._subscribers = subscribers
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[DomainEvent] = asyncio.Queue()
        subscribers.add(self)

    def push(self, event: DomainEvent) -> None:
        """Called from the libvirt event thread."""
        with contextlib.suppress(RuntimeError):  # subscriber's loop already closed
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)

    async def next(self, timeout: float | None = None) -> DomainEvent:
        return await asyncio.wait_for(self._queue.get(), timeout)

    def close(self) -> None:
        self._subscribers.discard(self)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> DomainEvent:
        return await self._queue.get()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


_event_lock = threading.Lock()
_event_thread: threading.Thread | None = None


def _ignore_libvirt_error(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; we raise them instead."""


def ensure_event_loop() -> None:
    """Start the process-wide libvirt event loop thread once (see module docstring)."""
    global _event_thread
    with _event_lock:
        if _event_thread is not None:
            return
        libvirt.registerErrorHandler(_ignore_libvirt_error, None)
        try:
            libvirt.virEventRegisterDefaultImpl()
        except (libvirt.libvirtError, RuntimeError) as e:  # the application has its own
            log.warning("libvirt event loop already registered elsewhere: %s", e)

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        _event_thread = threading.Thread(target=run, name="libvirt-events", daemon=True)
        _event_thread.start()

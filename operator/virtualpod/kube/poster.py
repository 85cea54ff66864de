"""The operator's Events, posted in the background in the order they were said.

Every Event of the operator's own, from inside a handler or outside, goes through one
`EventPoster`: its body is made when the Event is said (the timestamps are when it
happened) and one task posts the bodies one at a time over the process's aiohttp
session (`kube.rest.RestClient`). Kopf's `kopf.info()` would post through Kopf's own
API client, which costs about as much CPU per Event as a handler's whole status write,
and the `kubernetes` client would block a thread for each.

Events are auxiliary: a post that fails is logged and dropped, never raised to the
caller. The queue is bounded, so an API server that does not answer costs memory for
at most `QUEUE_LIMIT` Events (the newest beyond it are dropped, and counted); closing
waits up to `DRAIN_SECONDS` for what is queued, so the Events of a last change still
reach the API server when the operator stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp

from virtualpod.kube.api import ObjectRef, event_body
from virtualpod.kube.rest import RestClient, RestError

log = logging.getLogger(__name__)

#: Events waiting to be posted at most; more are dropped (and counted).
QUEUE_LIMIT = 1000
#: How long closing waits for the queued Events to be posted.
DRAIN_SECONDS = 5.0

Queued = tuple[ObjectRef, dict[str, Any]]


def object_ref(obj: Mapping[str, Any]) -> ObjectRef:
    """The object an Event is about, from its body."""
    meta = obj.get("metadata") or {}
    return ObjectRef(
        str(obj.get("apiVersion", "")),
        str(obj.get("kind", "")),
        str(meta.get("namespace", "")),
        str(meta.get("name", "")),
        meta.get("uid"),
    )


class EventPoster:
    """Events for one reporting instance (`kubectl describe`: `From: virtualpod, <it>`)."""

    def __init__(self, rest: RestClient, instance: str, *, limit: int = QUEUE_LIMIT) -> None:
        self.rest = rest
        self.instance = instance
        #: Events dropped because the queue was full.
        self.dropped = 0
        self._queue: asyncio.Queue[Queued] = asyncio.Queue(limit)
        self._task: asyncio.Task[None] | None = None

    def post(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
        """Queue one Event; it is posted after the ones queued before it."""
        body = event_body(ref, type_, reason, message, self.instance, _now())
        try:
            self._queue.put_nowait((ref, body))
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning(f"dropped the {reason} Event on {ref.namespace}/{ref.name}: queue full")
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="events")

    def info(self, obj: Mapping[str, Any], *, reason: str, message: str) -> None:
        """A Normal Event on the object."""
        self.post(object_ref(obj), "Normal", reason, message)

    def warn(self, obj: Mapping[str, Any], *, reason: str, message: str) -> None:
        """A Warning Event on the object."""
        self.post(object_ref(obj), "Warning", reason, message)

    async def _run(self) -> None:
        while True:
            ref, body = await self._queue.get()
            try:
                await self.rest.create(f"/api/v1/namespaces/{ref.namespace}/events", body)
            except (TimeoutError, RestError, OSError, aiohttp.ClientError) as error:
                log.warning(
                    f"cannot post the {body['reason']} Event on {ref.namespace}/{ref.name}: {error}"
                )
            finally:
                self._queue.task_done()

    async def close(self, timeout: float = DRAIN_SECONDS) -> None:
        """Post what is queued (for at most `timeout` seconds), then stop."""
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _now() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)

"""The newest version of each object a controller knows: its watch's, or its own writes'.

A write's answer is newer than anything the watch has delivered so far, and stays so
until the watch delivers that same version: a watch delivers in order, so every event
before it is older and must not replace the answer (a sync from it would write onto a
stale resourceVersion and get 409). resourceVersions are only compared for equality, as
the API conventions require. The watch may deliver a version before the write's answer
arrives; versions seen while a write is in flight are remembered for that. After
`lag` seconds without the answer's version, any event counts again (a watch that
restarted from a fresh list never delivers it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
JSON = dict[str, Any]

#: How long an answer's version is waited for on the watch.
WATCH_LAG_SECONDS = 10.0


def version_of(obj: JSON) -> str | None:
    version = (obj.get("metadata") or {}).get("resourceVersion")
    return str(version) if version is not None else None


@dataclass
class _Writes:
    """A key's writes: the version an answer returned that the watch has not delivered
    yet, and the versions delivered while a write was in flight."""

    answer: str | None = None
    since: float = 0.0
    in_flight: bool = False
    seen: set[str | None] = field(default_factory=set)

    @property
    def idle(self) -> bool:
        return self.answer is None and not self.in_flight


class NewestObjects(Generic[K]):
    """Objects by key, from watch events (`watched`) and write answers (`answered`)."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, lag: float = WATCH_LAG_SECONDS
    ) -> None:
        self.objects: dict[K, JSON] = {}
        self._writes: dict[K, _Writes] = {}
        self._clock = clock
        self._lag = lag

    def get(self, key: K) -> JSON | None:
        return self.objects.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self.objects

    def sending(self, key: K) -> None:
        """A write of `key` is about to be sent."""
        writes = self._writes.setdefault(key, _Writes())
        writes.in_flight, writes.seen = True, set()

    def answered(self, key: K, obj: JSON) -> None:
        """The answer to the write `sending` announced."""
        writes = self._writes.setdefault(key, _Writes())
        version = version_of(obj)
        writes.in_flight = False
        if version in writes.seen:
            writes.answer = None  # the watch delivered it already, and maybe newer ones
        else:
            self.objects[key] = obj
            writes.answer, writes.since = version, self._clock()
        self._settle(key, writes)

    def failed(self, key: K) -> None:
        """The write `sending` announced did not happen (a conflict, an error)."""
        writes = self._writes.get(key)
        if writes is not None:
            writes.in_flight = False
            self._settle(key, writes)

    def watched(self, key: K, obj: JSON) -> bool:
        """A watch event's object; True when it is news (newer than what was known)."""
        writes = self._writes.get(key)
        if writes is not None:
            version = version_of(obj)
            if writes.in_flight:
                writes.seen.add(version)
            if writes.answer is not None:
                own = version == writes.answer
                if not own and self._clock() - writes.since < self._lag:
                    return False  # older than the answer of a write
                writes.answer = None
                self._settle(key, writes)
                if own:
                    return False  # the answer itself: known already
        self.objects[key] = obj
        return True

    def forget(self, key: K) -> None:
        self.objects.pop(key, None)
        self._writes.pop(key, None)

    def _settle(self, key: K, writes: _Writes) -> None:
        if writes.idle:
            self._writes.pop(key, None)

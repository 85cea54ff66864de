"""What a client-go informer gives a controller, read in-process from the emulator's store.

The stand-in control plane keeps caches as kube-scheduler and kube-controller-manager
do: built once from a list, then kept up to date from the changes since (the store's
watch history), so a pass costs what changed, not every object there is. When the
history no longer has the changes (or at the start), the cache is rebuilt from a list.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from virtualpod.testing.store import Key, ObjectStore


def object_key(resource_key: str, obj: Mapping[str, Any]) -> Key:
    """The store's key of a stored object of `resource_key` (a cluster-scoped one has no
    namespace in its metadata)."""
    meta = obj["metadata"]
    return (resource_key, meta.get("namespace"), meta["name"])


class Informer:
    """The objects of one resource that changed since the last look, and their list order
    (the store's: the order in which they were created)."""

    def __init__(self, store: ObjectStore, resource_key: str) -> None:
        self.store = store
        self.resource_key = resource_key
        #: The resourceVersion the caller's cache is at; None: it must be rebuilt.
        self.position: int | None = None
        #: List position of every stored object of the resource.
        self.order: dict[Key, int] = {}
        self._next = 0

    def changed(self) -> list[Key] | None:
        """Keys of the objects changed since the last call, each once (look their current
        version up in the store: None there means deleted); None when the caller must
        rebuild from all of them (`order` lists them then)."""
        store = self.store
        if self.position is None or store.expired(self.position):
            self.position = store.rv
            self.order = {
                object_key(self.resource_key, obj): index
                for index, obj in enumerate(store.of_resource(self.resource_key))
            }
            self._next = len(self.order)
            return None
        keys: dict[Key, None] = {}
        for change in store.changes_after(self.position):
            if change.resource_key != self.resource_key:
                continue
            key = object_key(self.resource_key, change.obj)
            if change.type == "ADDED":  # (again, after its deletion): listed last
                self.order[key] = self._next
                self._next += 1
            elif change.type == "DELETED":
                self.order.pop(key, None)
            keys[key] = None
        self.position = store.rv
        return list(keys)

    def reset(self) -> None:
        """Rebuild at the next look (the caller failed to apply what it was given)."""
        self.position = None

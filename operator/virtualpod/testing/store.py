"""Objects kept as an API server keeps them, for the emulator.

Where Kopf depends on it, this behaves like a real server: `uid`, `creationTimestamp`,
`generation` and a cluster-wide `resourceVersion` bumped on every write; `generateName`;
`status` as a real subresource; finalizers and `deletionTimestamp`; 201 on create, 409
on conflicts; a history of changes that watches stream from (410 Gone when too old).
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import json
import secrets
import string
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from virtualpod.testing.objects import (
    JSON,
    ApiError,
    ResourceSpec,
    Target,
    apply_json_patch,
    apply_merge_patch,
    matches_selectors,
)

#: How many changes the watch history keeps; older resourceVersions get 410 Gone.
DEFAULT_HISTORY = 100_000
_NAME_ALPHABET = string.ascii_lowercase + string.digits
#: Metadata that is the server's, whatever a client writes.
_SERVER_OWNED = ("uid", "creationTimestamp", "name", "namespace", "deletionTimestamp")
_MERGE_PATCHES = ("application/merge-patch+json", "application/strategic-merge-patch+json")

Key = tuple[str, str | None, str]


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Change:
    """One write, as a watch reports it."""

    rv: int
    resource_key: str
    type: str
    obj: JSON
    _line: bytes | None = field(default=None, repr=False, compare=False)

    def line(self) -> bytes:
        """The watch event as one JSON line, serialized once for every watcher (as the
        API server's watch cache does)."""
        if self._line is None:
            event = {"type": self.type, "object": self.obj}
            self._line = json.dumps(event).encode() + b"\n"
        return self._line


def _spec_part(obj: JSON) -> JSON:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


class ObjectStore:
    """Every object of every resource, and the history of changes to them."""

    def __init__(self, history_limit: int = DEFAULT_HISTORY) -> None:
        self.objects: dict[Key, JSON] = {}
        #: The same objects by resource key, so a list reads one resource, not all.
        self._by_resource: dict[str, dict[Key, JSON]] = {}
        self.history: list[Change] = []
        self.first_rv = 1  # rv of history[0]
        self.rv = 0
        self.history_limit = history_limit
        #: Set (and replaced) on every change; watches wait on the current one.
        self.changed = asyncio.Event()

    # ---------------------------------------------------------------- reading

    def existing(self, t: Target) -> JSON:
        obj = self.objects.get(self.key(t))
        if obj is None:
            raise ApiError(
                404, "NotFound", f'{t.resource.plural}.{t.resource.group} "{t.name}" not found'
            )
        return obj

    def of_resource(self, resource_key: str, namespace: str | None = None) -> Iterator[JSON]:
        """The stored objects of one resource (in one namespace): read them, never change
        them (a write replaces an object, so one read stays consistent)."""
        for (_, ns, _), obj in list(self._by_resource.get(resource_key, {}).items()):
            if namespace is None or ns == namespace:
                yield obj

    def _put(self, key: Key, obj: JSON) -> None:
        self.objects[key] = obj
        self._by_resource.setdefault(key[0], {})[key] = obj

    def _remove(self, key: Key) -> None:
        del self.objects[key]
        del self._by_resource[key[0]][key]

    def list_of(self, t: Target, query: Mapping[str, str]) -> JSON:
        items = [
            obj
            for obj in self.of_resource(t.resource.key, t.namespace)
            if matches_selectors(obj, query.get("labelSelector"), query.get("fieldSelector"))
        ]
        return {
            "apiVersion": t.resource.api_version,
            "kind": f"{t.resource.kind}List",
            "metadata": {"resourceVersion": str(self.rv)},
            "items": items,
        }

    def changes_after(self, position: int) -> list[Change]:
        """The recorded changes newer than resourceVersion `position`."""
        index = max(0, position + 1 - self.first_rv)
        return [c for c in self.history[index:] if c.rv > position]

    def expired(self, position: int) -> bool:
        """Whether changes after `position` have already left the history."""
        return bool(self.history) and position + 1 < self.first_rv

    # ---------------------------------------------------------------- writing

    @staticmethod
    def key(t: Target) -> Key:
        assert t.name is not None
        return (t.resource.key, t.namespace if t.resource.namespaced else None, t.name)

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def _record(self, spec: ResourceSpec, kind: str, obj: JSON) -> None:
        # Not copied: a stored object is never changed in place, a write stores a new one.
        self.history.append(Change(self.rv, spec.key, kind, obj))
        if len(self.history) > self.history_limit:
            drop = len(self.history) - self.history_limit // 2
            del self.history[:drop]
            self.first_rv = self.history[0].rv
        self.notify()

    def _bump(self, obj: JSON) -> None:
        self.rv += 1
        if not self.history:
            self.first_rv = self.rv
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)

    def _generated_name(self, spec: ResourceSpec, namespace: str | None, prefix: str) -> str:
        name = prefix
        for _ in range(100):
            name = prefix + "".join(secrets.choice(_NAME_ALPHABET) for _ in range(5))
            if (spec.key, namespace, name) not in self.objects:
                break
        return name

    def create(self, spec: ResourceSpec, namespace: str | None, data: JSON) -> JSON:
        obj = copy.deepcopy(data)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise ApiError(422, "Invalid", "metadata.name or generateName is required")
            meta["name"] = self._generated_name(spec, namespace, prefix)
        if spec.namespaced:
            if meta.get("namespace") not in (None, namespace):
                raise ApiError(
                    400, "BadRequest", "the namespace of the object does not match the URL"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        key = (spec.key, namespace if spec.namespaced else None, meta["name"])
        if key in self.objects:
            raise ApiError(
                409, "AlreadyExists", f'{spec.plural}.{spec.group} "{meta["name"]}" already exists'
            )
        obj.setdefault("apiVersion", spec.api_version)
        obj.setdefault("kind", spec.kind)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta["generation"] = 1
        for transient in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion"):
            meta.pop(transient, None)
        if "status" in spec.subresources:
            obj.pop("status", None)
        self._bump(obj)
        self._put(key, obj)
        self._record(spec, "ADDED", obj)
        return obj

    def _commit(self, t: Target, old: JSON, new: JSON) -> JSON:
        """Store an updated object: generation, rv, finalizer-driven removal, watch event."""
        key = self.key(t)
        new_meta = new.setdefault("metadata", {})
        old_meta = old.get("metadata", {})
        for fixed in _SERVER_OWNED:
            if fixed in old_meta:
                new_meta[fixed] = old_meta[fixed]
            else:
                new_meta.pop(fixed, None)
        new_meta["generation"] = old_meta.get("generation", 1)
        if t.subresource is None and _spec_part(new) != _spec_part(old):
            new_meta["generation"] = old_meta.get("generation", 1) + 1
        new_meta["resourceVersion"] = old_meta.get("resourceVersion")
        if new == old:
            return old  # a no-op write does not bump resourceVersion (as on a real server)
        self._bump(new)
        if new_meta.get("deletionTimestamp") and not new_meta.get("finalizers"):
            self._remove(key)
            self._record(t.resource, "DELETED", new)
            return new
        self._put(key, new)
        self._record(t.resource, "MODIFIED", new)
        return new

    @staticmethod
    def _split_status(t: Target, old: JSON, patched: JSON) -> JSON:
        """With a status subresource, the main URL cannot change status and vice versa."""
        if "status" not in t.resource.subresources:
            return patched
        if t.subresource == "status":
            result = copy.deepcopy(old)
            if "status" in patched:
                result["status"] = patched["status"]
            else:
                result.pop("status", None)
            return result
        if "status" in old:
            patched["status"] = copy.deepcopy(old["status"])
        else:
            patched.pop("status", None)
        return patched

    @staticmethod
    def _precondition(old: JSON, data: object) -> None:
        if isinstance(data, Mapping):
            wanted = (data.get("metadata") or {}).get("resourceVersion")
            current = old.get("metadata", {}).get("resourceVersion")
            if wanted and wanted != current:
                raise ApiError(
                    409,
                    "Conflict",
                    "the object has been modified; please apply your changes "
                    "to the latest version and try again",
                )

    def patch(self, t: Target, content_type: str, data: object) -> JSON:
        old = self.existing(t)
        if content_type == "application/json-patch+json":
            patched = apply_json_patch(old, data)
        elif content_type in _MERGE_PATCHES:
            self._precondition(old, data)
            patched = apply_merge_patch(copy.deepcopy(old), data)
        else:
            raise ApiError(
                415, "UnsupportedMediaType", f"the patch type {content_type!r} is not supported"
            )
        return self._commit(t, old, self._split_status(t, old, patched))

    def bind(self, t: Target, node: str) -> JSON:
        """A `binding` subresource write: the node and `PodScheduled=True`, at once; 409
        when the Pod is bound already."""
        old = self.existing(t)
        if (old.get("spec") or {}).get("nodeName"):
            raise ApiError(409, "Conflict", f'pod "{t.name}" is already assigned to a node')
        new = copy.deepcopy(old)
        new.setdefault("spec", {})["nodeName"] = node
        status = new.setdefault("status", {})
        status.setdefault("phase", "Pending")
        others = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
        status["conditions"] = [{"type": "PodScheduled", "status": "True"}, *others]
        return self._commit(Target(t.resource, t.namespace, t.name, "binding"), old, new)

    def replace(self, t: Target, data: JSON) -> JSON:
        old = self.existing(t)
        self._precondition(old, data)
        new = copy.deepcopy(data)
        new.setdefault("apiVersion", old.get("apiVersion"))
        new.setdefault("kind", old.get("kind"))
        return self._commit(t, old, self._split_status(t, old, new))

    def delete(self, t: Target) -> JSON:
        old = self.existing(t)
        meta = old.get("metadata", {})
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return old
            new = copy.deepcopy(old)
            new["metadata"]["deletionTimestamp"] = _now()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            self._bump(new)
            self._put(self.key(t), new)
            self._record(t.resource, "MODIFIED", new)
            return new
        self._remove(self.key(t))
        old = copy.deepcopy(old)
        self._bump(old)
        self._record(t.resource, "DELETED", old)
        return old

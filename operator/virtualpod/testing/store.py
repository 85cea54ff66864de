"""Objects kept as an API server keeps them, for the emulator.

Where Kopf depends on it, this behaves like a real server: `uid`, `creationTimestamp`,
`generation` and a cluster-wide `resourceVersion` bumped on every write; `generateName`;
`status` as a real subresource; finalizers and `deletionTimestamp`; 201 on create, 409
on conflicts; a history of changes that watches stream from (410 Gone when too old).

A stored object is never changed in place: a write stores a new one, which shares the
parts it did not change with the version before (as the history keeps every version,
copying whole objects on every write would be most of the emulator's work). Nothing may
change what the store returns or records; a write keeps the values of the body it is
given, so callers hand over bodies they no longer change (a parsed request is one).
"""

from __future__ import annotations

import asyncio
import functools
import json
import secrets
import string
import time
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

#: `json.dumps` without its check for reference cycles (JSON from requests has none).
_ENCODER = json.JSONEncoder(check_circular=False)
#: How many changes the watch history keeps; older resourceVersions get 410 Gone.
DEFAULT_HISTORY = 100_000
_NAME_ALPHABET = string.ascii_lowercase + string.digits
#: Metadata that is the server's, whatever a client writes.
_SERVER_OWNED = ("uid", "creationTimestamp", "name", "namespace", "deletionTimestamp")
_MERGE_PATCHES = ("application/merge-patch+json", "application/strategic-merge-patch+json")

Key = tuple[str, str | None, str]


@functools.lru_cache(maxsize=1)
def _timestamp(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


def _now() -> str:
    """The time as the API server writes it, to the second: formatted once a second."""
    return _timestamp(int(time.time()))


@dataclass
class Change:
    """One write, as a watch reports it."""

    rv: int
    resource_key: str
    type: str
    obj: JSON
    _body: bytes | None = field(default=None, repr=False, compare=False)
    _line: bytes | None = field(default=None, repr=False, compare=False)

    def body(self) -> bytes:
        """The object as JSON, serialized once for the write's answer and every watcher
        (as the API server's watch cache does)."""
        if self._body is None:
            self._body = _ENCODER.encode(self.obj).encode()
        return self._body

    def line(self) -> bytes:
        """The watch event as one JSON line: what `json.dumps` makes of the event, built
        around `body()`."""
        if self._line is None:
            self._line = b'{"type": "%s", "object": %s}\n' % (self.type.encode(), self.body())
        return self._line


def _with_own_metadata(obj: JSON) -> JSON:
    """A new version of `obj` whose metadata may be written (the rest is shared)."""
    return {**obj, "metadata": dict(obj.get("metadata") or {})}


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
        #: Set (and replaced) on every change; the stand-in control plane waits on it.
        self.changed = asyncio.Event()
        #: The same per resource, for watches (see `changed_for`).
        self._changed_for: dict[str, asyncio.Event] = {}

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

    def serialized(self, obj: JSON) -> bytes:
        """`obj` as JSON: the bytes of its watch event when it is the latest write's."""
        if self.history and self.history[-1].obj is obj:
            return self.history[-1].body()
        return _ENCODER.encode(obj).encode()

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

    def changed_for(self, resource_key: str) -> asyncio.Event:
        """Set on the next change of one resource: a watch waits on this one, so changes
        to the others do not wake it for nothing."""
        event = self._changed_for.get(resource_key)
        if event is None:
            event = self._changed_for[resource_key] = asyncio.Event()
        return event

    def notify(self, resource_key: str | None = None) -> None:
        """Wake who waits for a change of `resource_key` (None: of any resource)."""
        self.changed.set()
        self.changed = asyncio.Event()
        if resource_key is None:
            woken, self._changed_for = list(self._changed_for.values()), {}
        else:
            event = self._changed_for.pop(resource_key, None)
            woken = [event] if event is not None else []
        for event in woken:
            event.set()

    def _record(self, spec: ResourceSpec, kind: str, obj: JSON) -> None:
        # Not copied: a stored object is never changed in place, a write stores a new one.
        self.history.append(Change(self.rv, spec.key, kind, obj))
        if len(self.history) > self.history_limit:
            drop = len(self.history) - self.history_limit // 2
            del self.history[:drop]
            self.first_rv = self.history[0].rv
        self.notify(spec.key)

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
        """Store `data` as a new object; `data` itself is left as it is, its values are
        kept (see the module docstring)."""
        obj = dict(data)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")
        meta = obj["metadata"] = dict(meta)
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
        new_meta = new["metadata"] = dict(new.setdefault("metadata", {}))  # may be shared
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
            result = dict(old)
            if "status" in patched:
                result["status"] = patched["status"]
            else:
                result.pop("status", None)
            return result
        if "status" in old:
            patched["status"] = old["status"]
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
            patched = apply_merge_patch(old, data)
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
        new = dict(old)
        new["spec"] = {**(old.get("spec") or {}), "nodeName": node}
        status = new["status"] = dict(old.get("status") or {})
        status.setdefault("phase", "Pending")
        others = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
        status["conditions"] = [{"type": "PodScheduled", "status": "True"}, *others]
        return self._commit(Target(t.resource, t.namespace, t.name, "binding"), old, new)

    def replace(self, t: Target, data: JSON) -> JSON:
        old = self.existing(t)
        self._precondition(old, data)
        new = dict(data)
        new.setdefault("apiVersion", old.get("apiVersion"))
        new.setdefault("kind", old.get("kind"))
        return self._commit(t, old, self._split_status(t, old, new))

    def delete(self, t: Target) -> JSON:
        old = self.existing(t)
        meta = old.get("metadata", {})
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return old
            new = _with_own_metadata(old)
            new["metadata"]["deletionTimestamp"] = _now()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            self._bump(new)
            self._put(self.key(t), new)
            self._record(t.resource, "MODIFIED", new)
            return new
        self._remove(self.key(t))
        last = _with_own_metadata(old)
        self._bump(last)
        self._record(t.resource, "DELETED", last)
        return last

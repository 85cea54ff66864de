"""A Kubernetes API emulator good enough to run the real operator against, over HTTP.

Built on KMock's `KubernetesEmulator` (discovery, the HTTP server), with object storage
that behaves like an API server where Kopf depends on it: `uid`, `creationTimestamp`,
`generation` and a cluster-wide `resourceVersion` bumped on every write; `generateName`;
JSON patch (a failed `test` op is 422), merge patch, `status` as a real subresource;
finalizers and `deletionTimestamp`; list with a `resourceVersion` and watch that streams
only changes newer than it (410 Gone when too old); 201 on create, 409 on conflicts.

Object requests are served here directly from the raw aiohttp request, because KMock's
request parser misreads cluster-scoped core paths such as `/api/v1/namespaces`;
everything else (discovery, user-defined reactions) goes to KMock unchanged.

`serve_emulator()` runs it on 127.0.0.1 and yields the URL: KMock's server replaces
aiohttp's resolver process-wide, so clients must use the IP address, never a host name.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import json
import secrets
import string
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp.web
import kmock
import yaml

from virtualpod.core.spec import API_GROUP, API_VERSION, KIND

JSON = dict[str, Any]

#: How many changes the watch history keeps; older resourceVersions get 410 Gone.
DEFAULT_HISTORY = 100_000
_NAME_ALPHABET = string.ascii_lowercase + string.digits


class ApiError(Exception):
    """An error answered as a Kubernetes `Status` object."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message

    def status(self) -> JSON:
        return {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


@dataclass(frozen=True)
class ResourceSpec:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    subresources: frozenset[str] = frozenset()

    @property
    def key(self) -> str:
        return (
            f"{self.group}/{self.version}/{self.plural}"
            if self.group
            else (f"{self.version}/{self.plural}")
        )

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


@dataclass(frozen=True)
class Target:
    """What an object URL addresses."""

    resource: ResourceSpec
    namespace: str | None
    name: str | None
    subresource: str | None


@dataclass
class _Change:
    rv: int
    resource_key: str
    type: str
    obj: JSON


@dataclass
class _Store:
    objects: dict[tuple[str, str | None, str], JSON] = field(default_factory=dict)
    history: list[_Change] = field(default_factory=list)
    first_rv: int = 1  # rv of history[0]
    rv: int = 0


VERBS = {"create", "delete", "get", "list", "patch", "update", "watch"}

#: Resources Kopf and this operator use, besides the VirtualPod CRD itself.
BUILTIN_RESOURCES = (
    ResourceSpec(
        "", "v1", "namespaces", "Namespace", namespaced=False, subresources=frozenset({"status"})
    ),
    ResourceSpec("", "v1", "events", "Event", namespaced=True),
    ResourceSpec("", "v1", "configmaps", "ConfigMap", namespaced=True),
    ResourceSpec("", "v1", "secrets", "Secret", namespaced=True),
    ResourceSpec("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", namespaced=False),
    ResourceSpec("coordination.k8s.io", "v1", "leases", "Lease", namespaced=True),
    ResourceSpec(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        subresources=frozenset({"status"}),
    ),
    # Cluster mode: companion Pods, the Nodes they bind to, the admission objects that
    # apply to them, the agents' host Leases and Kopf's peering for the controller.
    ResourceSpec("", "v1", "pods", "Pod", namespaced=True, subresources=frozenset({"status"})),
    ResourceSpec("", "v1", "nodes", "Node", namespaced=False, subresources=frozenset({"status"})),
    ResourceSpec("", "v1", "limitranges", "LimitRange", namespaced=True),
    ResourceSpec(
        "",
        "v1",
        "resourcequotas",
        "ResourceQuota",
        namespaced=True,
        subresources=frozenset({"status"}),
    ),
    ResourceSpec("coordination.k8s.io", "v1", "leases", "Lease", namespaced=True),
    ResourceSpec("node.k8s.io", "v1", "runtimeclasses", "RuntimeClass", namespaced=False),
    ResourceSpec("kopf.dev", "v1", "clusterkopfpeerings", "ClusterKopfPeering", namespaced=False),
    ResourceSpec("kopf.dev", "v1", "kopfpeerings", "KopfPeering", namespaced=True),
)
VIRTUALPODS = ResourceSpec(
    API_GROUP, API_VERSION, "virtualpods", KIND, namespaced=True, subresources=frozenset({"status"})
)


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------ patches


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f"JSON pointer {path!r} must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str]) -> Any:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[int(part)]
        elif isinstance(node, dict):
            node = node[part]
        else:
            raise KeyError(part)
    return node


def _get(doc: Any, parts: list[str]) -> Any:
    node = doc
    for part in parts:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent = _parent(doc, parts)
    key = parts[-1]
    if isinstance(parent, list):
        if key == "-":
            parent.append(value)
        else:
            index = int(key)
            if not 0 <= index <= len(parent):
                raise IndexError(key)
            parent.insert(index, value)
    else:
        parent[key] = value
    return doc


def _remove(doc: Any, parts: list[str]) -> Any:
    parent = _parent(doc, parts)
    if isinstance(parent, list):
        del parent[int(parts[-1])]
    else:
        del parent[parts[-1]]
    return doc


def apply_json_patch(doc: JSON, ops: object) -> JSON:
    """RFC 6902; a failed `test` is 422 Unprocessable, as on a real API server."""
    if not isinstance(ops, list):
        raise ApiError(400, "BadRequest", "a JSON patch must be a list of operations")
    result: Any = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, Mapping) or "op" not in op or "path" not in op:
            raise ApiError(400, "BadRequest", f"malformed JSON patch operation {op!r}")
        kind, parts = op["op"], _pointer(str(op["path"]))
        try:
            if kind == "test":
                if _get(result, parts) != op.get("value"):
                    raise ApiError(
                        422,
                        "Invalid",
                        f"the server rejected our request due to an error in our "
                        f"request: testing value {op['path']} failed",
                    )
            elif kind == "add":
                result = _add(result, parts, copy.deepcopy(op.get("value")))
            elif kind == "remove":
                result = _remove(result, parts)
            elif kind == "replace":
                _get(result, parts)  # must exist
                result = _add(_remove(result, parts), parts, copy.deepcopy(op.get("value")))
            elif kind in ("move", "copy"):
                source = _pointer(str(op.get("from", "")))
                value = copy.deepcopy(_get(result, source))
                if kind == "move":
                    result = _remove(result, source)
                result = _add(result, parts, value)
            else:
                raise ApiError(400, "BadRequest", f"unknown JSON patch op {kind!r}")
        except (KeyError, IndexError, ValueError, TypeError) as e:
            if kind == "test":
                raise ApiError(422, "Invalid", f"testing value {op['path']} failed") from e
            raise ApiError(
                422, "Invalid", f"JSON patch {kind} {op['path']}: path does not exist"
            ) from e
    if not isinstance(result, dict):
        raise ApiError(422, "Invalid", "a JSON patch must leave an object")
    return result


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, everything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


# ---------------------------------------------------------------------- selectors


def _dotted(obj: Mapping[str, Any], path: str) -> Any:
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _matches(obj: JSON, label_selector: str | None, field_selector: str | None) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, (label_selector or "").split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term.strip() not in labels:
            return False
    for term in filter(None, (field_selector or "").split(",")):
        negate = "!=" in term
        key, value = term.replace("!=", "=").replace("==", "=").split("=", 1)
        actual = _dotted(obj, key.strip())
        if (str(actual) if actual is not None else "") == value.strip():
            if negate:
                return False
        elif not negate:
            return False
    return True


# ---------------------------------------------------------------------- emulator


class KubernetesApiEmulator(kmock.KubernetesEmulator):
    """An in-memory Kubernetes API server for the operator's end-to-end tests and demo."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._store = _Store()
        self._specs: dict[str, ResourceSpec] = {}
        self._changed = asyncio.Event()
        self._closing = False
        #: Open watch streams per resource key (tests wait for the operator's watch).
        self.watchers: dict[str, int] = {}
        self._holding: Callable[[str, str, str | None, str | None], bool] | None = None
        self._released = asyncio.Event()
        self.history_limit = DEFAULT_HISTORY
        #: Called on every create before it is stored, as admission plugins are: each may
        #: change the object or refuse it with an `ApiError` (see `testing.admission`).
        self.admission: list[Callable[[ResourceSpec, str | None, JSON], None]] = []
        for spec in (*BUILTIN_RESOURCES, VIRTUALPODS):
            self.declare(spec)
        self.put_object("v1/namespaces", {"metadata": {"name": "default"}})

    # --------------------------------------------------------------- public API

    def declare(self, spec: ResourceSpec) -> None:
        """Serve a resource (discovery + objects)."""
        self._specs[spec.key] = spec
        self.resources[spec.key] = kmock.ResourceInfo(
            kind=spec.kind,
            namespaced=spec.namespaced,
            verbs=set(VERBS),
            subresources=set(spec.subresources),
            singular=spec.kind.lower(),
        )

    @property
    def resource_version(self) -> int:
        return self._store.rv

    def get_object(self, resource_key: str, namespace: str | None, name: str) -> JSON | None:
        """A deep copy of a stored object, or None."""
        obj = self._store.objects.get((resource_key, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list_objects(self, resource_key: str, namespace: str | None = None) -> list[JSON]:
        return [
            copy.deepcopy(obj)
            for (key, ns, _), obj in self._store.objects.items()
            if key == resource_key and (namespace is None or ns == namespace)
        ]

    def put_object(self, resource_key: str, obj: JSON) -> JSON:
        """Create an object directly (as if POSTed), for fixtures."""
        spec = self._specs[resource_key]
        namespace = obj.get("metadata", {}).get("namespace") if spec.namespaced else None
        return self._create(spec, namespace or ("default" if spec.namespaced else None), obj)

    def patch_object(
        self,
        resource_key: str,
        namespace: str | None,
        name: str,
        patch: JSON,
        subresource: str | None = None,
    ) -> JSON:
        """Merge-patch a stored object (as a PATCH would), for the test stand-ins."""
        target = Target(self._specs[resource_key], namespace, name, subresource)
        return self._patch(target, "application/merge-patch+json", patch)

    def delete_object(self, resource_key: str, namespace: str | None, name: str) -> JSON:
        """Delete a stored object (as a DELETE would), for the test stand-ins."""
        return self._delete(Target(self._specs[resource_key], namespace, name, None))

    def hold_writes(self, predicate: Callable[[str, str, str | None, str | None], bool]) -> None:
        """Stall matching writes, as an unreachable API server would; `release_writes()`
        then fails them with 503 without applying them.

        `predicate(method, content_type, namespace, name)` picks the writes to stall.
        """
        self._holding = predicate
        self._released = asyncio.Event()

    def release_writes(self) -> None:
        self._holding = None
        self._released.set()

    def close_watches(self) -> None:
        """End every open watch stream (the server is going away)."""
        self._closing = True
        self._notify()

    # ------------------------------------------------------------------- HTTP

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        target = self._target(raw.path)
        if target is None:
            response: aiohttp.web.StreamResponse = await super().__call__(raw)
            return response
        try:
            return await self._serve(raw, target)
        except ApiError as e:
            return aiohttp.web.json_response(e.status(), status=e.code)

    def _target(self, path: str) -> Target | None:
        """Parse an object URL; None for discovery and everything that is not an object URL."""
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 3 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) >= 4 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            candidate = self._specs.get(
                f"{group}/{version}/{rest[2]}" if group else f"{version}/{rest[2]}"
            )
            if candidate is not None and candidate.namespaced:
                namespace, rest = rest[1], rest[2:]
        key = f"{group}/{version}/{rest[0]}" if group else f"{version}/{rest[0]}"
        spec = self._specs.get(key)
        if spec is None:
            return None
        name = rest[1] if len(rest) > 1 else None
        subresource = "/".join(rest[2:]) or None
        return Target(spec, namespace, name, subresource)

    async def _serve(self, raw: aiohttp.web.BaseRequest, t: Target) -> aiohttp.web.StreamResponse:
        method, query = raw.method.upper(), raw.query
        if t.subresource is not None and t.subresource not in t.resource.subresources:
            raise ApiError(404, "NotFound", f"no subresource {t.subresource!r}")
        if method == "GET" and query.get("watch") in ("true", "1"):
            return await self._watch(raw, t)
        if method == "GET" and t.name is None:
            return aiohttp.web.json_response(self._list(t, query))
        if method == "GET":
            return aiohttp.web.json_response(self._fetch(t))
        if self._holding is not None and self._holding(
            method, raw.content_type, t.namespace, t.name
        ):
            await self._released.wait()
            raise ApiError(503, "ServiceUnavailable", "the server is currently unavailable")
        body = await raw.read()
        try:
            data = json.loads(body) if body else None
        except ValueError as e:
            raise ApiError(400, "BadRequest", f"request body is not JSON: {e}") from e
        if method == "POST" and t.name is None:
            if not isinstance(data, dict):
                raise ApiError(400, "BadRequest", "the body must be an object")
            namespace = t.namespace or data.get("metadata", {}).get("namespace")
            if t.resource.namespaced and not namespace:
                namespace = "default"
            for admit in self.admission:
                admit(t.resource, namespace, data)
            created = self._create(t.resource, namespace, data)
            return aiohttp.web.json_response(created, status=201)
        if t.name is None:
            raise ApiError(405, "MethodNotAllowed", f"{method} on a collection")
        if method == "PATCH":
            ctype = raw.content_type
            return aiohttp.web.json_response(self._patch(t, ctype, data))
        if method == "PUT":
            if not isinstance(data, dict):
                raise ApiError(400, "BadRequest", "the body must be an object")
            return aiohttp.web.json_response(self._replace(t, data))
        if method == "DELETE":
            return aiohttp.web.json_response(self._delete(t))
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")

    # ------------------------------------------------------------- operations

    def _key(self, t: Target) -> tuple[str, str | None, str]:
        assert t.name is not None
        return (t.resource.key, t.namespace if t.resource.namespaced else None, t.name)

    def _existing(self, t: Target) -> JSON:
        obj = self._store.objects.get(self._key(t))
        if obj is None:
            raise ApiError(
                404, "NotFound", f'{t.resource.plural}.{t.resource.group} "{t.name}" not found'
            )
        return obj

    def _fetch(self, t: Target) -> JSON:
        return self._existing(t)

    def _list(self, t: Target, query: Mapping[str, str]) -> JSON:
        items = [
            obj
            for (key, ns, _), obj in self._store.objects.items()
            if key == t.resource.key
            and (t.namespace is None or ns == t.namespace)
            and _matches(obj, query.get("labelSelector"), query.get("fieldSelector"))
        ]
        return {
            "apiVersion": t.resource.api_version,
            "kind": f"{t.resource.kind}List",
            "metadata": {"resourceVersion": str(self._store.rv)},
            "items": items,
        }

    def _record(self, spec: ResourceSpec, kind: str, obj: JSON) -> None:
        store = self._store
        store.history.append(_Change(store.rv, spec.key, kind, copy.deepcopy(obj)))
        if len(store.history) > self.history_limit:
            drop = len(store.history) - self.history_limit // 2
            del store.history[:drop]
            store.first_rv = store.history[0].rv
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _bump(self, obj: JSON) -> None:
        self._store.rv += 1
        if not self._store.history:
            self._store.first_rv = self._store.rv
        obj.setdefault("metadata", {})["resourceVersion"] = str(self._store.rv)

    def _create(self, spec: ResourceSpec, namespace: str | None, data: JSON) -> JSON:
        obj = copy.deepcopy(data)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise ApiError(422, "Invalid", "metadata.name or generateName is required")
            for _ in range(100):
                name = prefix + "".join(secrets.choice(_NAME_ALPHABET) for _ in range(5))
                if (spec.key, namespace, name) not in self._store.objects:
                    break
            meta["name"] = name
        if spec.namespaced:
            if meta.get("namespace") not in (None, namespace):
                raise ApiError(
                    400, "BadRequest", "the namespace of the object does not match the URL"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        key = (spec.key, namespace if spec.namespaced else None, meta["name"])
        if key in self._store.objects:
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
        self._store.objects[key] = obj
        self._record(spec, "ADDED", obj)
        return obj

    def _commit(self, t: Target, old: JSON, new: JSON) -> JSON:
        """Store an updated object: generation, rv, finalizer-driven removal, watch event."""
        key = self._key(t)
        new_meta = new.setdefault("metadata", {})
        old_meta = old.get("metadata", {})
        # Identity and deletion state are the server's, whatever the client sent.
        for fixed in ("uid", "creationTimestamp", "name", "namespace", "deletionTimestamp"):
            if fixed in old_meta:
                new_meta[fixed] = old_meta[fixed]
            else:
                new_meta.pop(fixed, None)
        new_meta["generation"] = old_meta.get("generation", 1)

        def spec_part(o: JSON) -> JSON:
            return {k: v for k, v in o.items() if k not in ("metadata", "status")}

        if t.subresource is None and spec_part(new) != spec_part(old):
            new_meta["generation"] = old_meta.get("generation", 1) + 1
        new_meta["resourceVersion"] = old_meta.get("resourceVersion")
        if new == old:
            return old  # a no-op write does not bump resourceVersion (as on a real server)
        self._bump(new)
        if new_meta.get("deletionTimestamp") and not new_meta.get("finalizers"):
            del self._store.objects[key]
            self._record(t.resource, "DELETED", new)
            return new
        self._store.objects[key] = new
        self._record(t.resource, "MODIFIED", new)
        return new

    def _split_status(self, t: Target, old: JSON, patched: JSON) -> JSON:
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

    def _precondition(self, old: JSON, data: object) -> None:
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

    def _patch(self, t: Target, content_type: str, data: object) -> JSON:
        old = self._existing(t)
        if content_type == "application/json-patch+json":
            patched = apply_json_patch(old, data)
        elif content_type in (
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
        ):
            self._precondition(old, data)
            patched = apply_merge_patch(copy.deepcopy(old), data)
        else:
            raise ApiError(
                415, "UnsupportedMediaType", f"the patch type {content_type!r} is not supported"
            )
        return self._commit(t, old, self._split_status(t, old, patched))

    def _replace(self, t: Target, data: JSON) -> JSON:
        old = self._existing(t)
        self._precondition(old, data)
        new = copy.deepcopy(data)
        new.setdefault("apiVersion", old.get("apiVersion"))
        new.setdefault("kind", old.get("kind"))
        return self._commit(t, old, self._split_status(t, old, new))

    def _delete(self, t: Target) -> JSON:
        old = self._existing(t)
        meta = old.get("metadata", {})
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return old
            new = copy.deepcopy(old)
            new["metadata"]["deletionTimestamp"] = _now()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            self._bump(new)
            self._store.objects[self._key(t)] = new
            self._record(t.resource, "MODIFIED", new)
            return new
        del self._store.objects[self._key(t)]
        self._bump(old)
        self._record(t.resource, "DELETED", old)
        return old

    # ------------------------------------------------------------------ watch

    async def _watch(self, raw: aiohttp.web.BaseRequest, t: Target) -> aiohttp.web.StreamResponse:
        response = aiohttp.web.StreamResponse(
            status=200, headers={"Content-Type": "application/json"}
        )
        await response.prepare(raw)
        key = t.resource.key
        self.watchers[key] = self.watchers.get(key, 0) + 1
        try:
            return await self._stream(raw, t, response)
        finally:
            self.watchers[key] -= 1

    async def _stream(
        self, raw: aiohttp.web.BaseRequest, t: Target, response: aiohttp.web.StreamResponse
    ) -> aiohttp.web.StreamResponse:
        query = raw.query
        labels, fields = query.get("labelSelector"), query.get("fieldSelector")
        timeout = float(query.get("timeoutSeconds") or 0) or None
        deadline = time.monotonic() + timeout if timeout else None

        def wanted(obj: JSON) -> bool:
            ns = obj.get("metadata", {}).get("namespace")
            name_ok = t.name is None or obj.get("metadata", {}).get("name") == t.name
            return (
                (t.namespace is None or ns == t.namespace)
                and name_ok
                and _matches(obj, labels, fields)
            )

        async def send(event: JSON) -> None:
            await response.write(json.dumps(event).encode() + b"\n")

        store = self._store
        since = query.get("resourceVersion") or "0"
        try:
            if since == "0":
                # No version: a synthetic ADDED for everything, then changes from now on.
                position = store.rv
                for (key, _, _), obj in list(store.objects.items()):
                    if key == t.resource.key and wanted(obj):
                        await send({"type": "ADDED", "object": obj})
            else:
                position = int(since)
                if position + 1 < store.first_rv and store.history:
                    await send(
                        {
                            "type": "ERROR",
                            "object": ApiError(
                                410, "Expired", f"too old resource version: {since}"
                            ).status(),
                        }
                    )
                    return response
            while not self._closing:
                changed = self._changed
                index = max(0, position + 1 - store.first_rv)
                pending = store.history[index:] if store.history else []
                for change in pending:
                    if change.rv <= position:
                        continue
                    position = change.rv
                    if change.resource_key == t.resource.key and wanted(change.obj):
                        await send({"type": change.type, "object": change.obj})
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                if not pending or position >= store.rv:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), remaining)
        except (ConnectionResetError, asyncio.CancelledError):
            return response
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response


@contextlib.asynccontextmanager
async def serve_emulator(
    emulator: KubernetesApiEmulator | None = None,
) -> AsyncIterator[tuple[str, KubernetesApiEmulator]]:
    """Run the emulator on 127.0.0.1 (a free port) and yield `(url, emulator)`."""
    emu = emulator if emulator is not None else KubernetesApiEmulator()
    async with emu, kmock.Server(emu, host="127.0.0.1") as server:
        url = f"http://127.0.0.1:{server.port}"
        try:
            yield url, emu
        finally:
            emu.close_watches()


def write_kubeconfig(url: str, path: Path) -> Path:
    """A kubeconfig pointing at the emulator, for a `virtualpod run` or kubectl process."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "emulator",
                "clusters": [{"name": "emulator", "cluster": {"server": url}}],
                "users": [{"name": "emulator", "user": {"token": "emulator"}}],
                "contexts": [
                    {"name": "emulator", "context": {"cluster": "emulator", "user": "emulator"}}
                ],
            }
        )
    )
    return path

"""A Kubernetes API emulator good enough to run the real operator against, over HTTP.

Built on KMock's `KubernetesEmulator` (discovery, the HTTP server), with object storage
that behaves like an API server where Kopf depends on it (`store.ObjectStore`): list
with a `resourceVersion` and watch that streams only changes newer than it (410 Gone
when too old).

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
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp.web
import kmock
import yaml

from virtualpod.testing.objects import (
    BUILTIN_RESOURCES,
    JSON,
    VERBS,
    VIRTUALPODS,
    ApiError,
    ResourceSpec,
    Target,
    matches_selectors,
)
from virtualpod.testing.store import DEFAULT_HISTORY, ObjectStore

#: Decides which writes `hold_writes` stalls: (method, content type, namespace, name).
WritePredicate = Callable[[str, str, str | None, str | None], bool]
#: An admission plugin: (resource, namespace, object to create).
Admission = Callable[[ResourceSpec, str | None, JSON], None]


class KubernetesApiEmulator(kmock.KubernetesEmulator):
    """An in-memory Kubernetes API server for the operator's end-to-end tests and demo."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.store = ObjectStore(DEFAULT_HISTORY)
        self._specs: dict[str, ResourceSpec] = {}
        self._closing = False
        #: Open watch streams per resource key.
        self.watchers: dict[str, int] = {}
        #: Watch streams ever opened per resource key: a client that starts watching
        #: raises it, whatever other clients' streams do meanwhile.
        self.watches_opened: dict[str, int] = {}
        self._holding: WritePredicate | None = None
        self._released = asyncio.Event()
        #: Called on every create before it is stored, as admission plugins are: each may
        #: change the object or refuse it with an `ApiError` (see `testing.admission`).
        self.admission: list[Admission] = []
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

    def undeclare(self, resource_key: str) -> ResourceSpec:
        """Stop serving a resource, as before its CRD is applied (404 on its URLs);
        `declare` the returned spec to serve it again."""
        self.resources.pop(resource_key, None)
        return self._specs.pop(resource_key)

    @property
    def resource_version(self) -> int:
        return self.store.rv

    def get_object(self, resource_key: str, namespace: str | None, name: str) -> JSON | None:
        """A deep copy of a stored object, or None."""
        obj = self.store.objects.get((resource_key, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def read_object(self, resource_key: str, namespace: str | None, name: str) -> JSON | None:
        """The stored object itself, or None, for stand-ins that only read it."""
        return self.store.objects.get((resource_key, namespace, name))

    def list_objects(self, resource_key: str, namespace: str | None = None) -> list[JSON]:
        """Deep copies of the stored objects of one resource (in one namespace)."""
        return [copy.deepcopy(obj) for obj in self.store.of_resource(resource_key, namespace)]

    def read_objects(self, resource_key: str, namespace: str | None = None) -> Iterator[JSON]:
        """The stored objects themselves, for stand-ins that only read them: no copies
        (a write replaces an object, it never changes one in place)."""
        return self.store.of_resource(resource_key, namespace)

    def bind_pod(self, namespace: str, name: str, node: str) -> JSON:
        """What a `pods/binding` POST does: `spec.nodeName` and `PodScheduled=True`, in one
        write (one watch event), as kube-scheduler binds. The stored Pod: read it only."""
        target = Target(self._specs["v1/pods"], namespace, name, None)
        return self.store.bind(target, node)

    def put_object(self, resource_key: str, obj: JSON) -> JSON:
        """Create an object directly (as if POSTed), for fixtures: the store keeps a copy."""
        spec = self._specs[resource_key]
        namespace = obj.get("metadata", {}).get("namespace") if spec.namespaced else None
        namespace = namespace or ("default" if spec.namespaced else None)
        return copy.deepcopy(self.store.create(spec, namespace, copy.deepcopy(obj)))

    def patch_object(
        self,
        resource_key: str,
        namespace: str | None,
        name: str,
        patch: JSON,
        subresource: str | None = None,
    ) -> JSON:
        """Merge-patch a stored object (as a PATCH would), for the test stand-ins: the
        store keeps a copy of the patch's values."""
        target = Target(self._specs[resource_key], namespace, name, subresource)
        merge = "application/merge-patch+json"
        return copy.deepcopy(self.store.patch(target, merge, copy.deepcopy(patch)))

    def delete_object(self, resource_key: str, namespace: str | None, name: str) -> JSON:
        """Delete a stored object (as a DELETE would), for the test stand-ins."""
        target = Target(self._specs[resource_key], namespace, name, None)
        return copy.deepcopy(self.store.delete(target))

    def hold_writes(self, predicate: WritePredicate) -> None:
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
        self.store.notify()

    # ------------------------------------------------------------------- HTTP

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        target = self._target(raw.path)
        if target is None and raw.method != "GET" and raw.path.startswith(("/api/", "/apis/")):
            # A write to a resource not served (e.g. a CRD not applied yet): a real API
            # server answers 404 (KMock would echo the body back with 200).
            gone = ApiError(404, "NotFound", "the server could not find the requested resource")
            return aiohttp.web.json_response(gone.status(), status=404)
        if target is None:
            response: aiohttp.web.StreamResponse = await super().__call__(raw)
            return response
        try:
            return await self._serve(raw, target)
        except ApiError as e:
            return aiohttp.web.json_response(e.status(), status=e.code)

    def _spec(self, group: str, version: str, plural: str) -> ResourceSpec | None:
        return self._specs.get(f"{group}/{version}/{plural}" if group else f"{version}/{plural}")

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
            candidate = self._spec(group, version, rest[2])
            if candidate is not None and candidate.namespaced:
                namespace, rest = rest[1], rest[2:]
        spec = self._spec(group, version, rest[0])
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
            return aiohttp.web.json_response(self.store.list_of(t, query))
        if method == "GET":
            return self._object_response(self.store.existing(t), 200)
        if self._holding is not None and self._holding(
            method, raw.content_type, t.namespace, t.name
        ):
            await self._released.wait()
            raise ApiError(503, "ServiceUnavailable", "the server is currently unavailable")
        answer, status = self._write(method, raw.content_type, t, await raw.read())
        return self._object_response(answer, status)

    def _object_response(self, obj: JSON, status: int) -> aiohttp.web.Response:
        """What `json_response(obj)` answers, with the bytes of the write's watch event
        (an object is serialized once, not once more for the answer)."""
        return aiohttp.web.Response(
            body=self.store.serialized(obj),
            status=status,
            content_type="application/json",
            charset="utf-8",
        )

    def _write(self, method: str, content_type: str, t: Target, body: bytes) -> tuple[JSON, int]:
        """A write request's answer and HTTP status."""
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
            return self.store.create(t.resource, namespace, data), 201
        if t.name is None:
            raise ApiError(405, "MethodNotAllowed", f"{method} on a collection")
        if method == "PATCH":
            return self.store.patch(t, content_type, data), 200
        if method == "PUT":
            if not isinstance(data, dict):
                raise ApiError(400, "BadRequest", "the body must be an object")
            return self.store.replace(t, data), 200
        if method == "DELETE":
            return self.store.delete(t), 200
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")

    # ------------------------------------------------------------------ watch

    async def _watch(self, raw: aiohttp.web.BaseRequest, t: Target) -> aiohttp.web.StreamResponse:
        response = aiohttp.web.StreamResponse(
            status=200, headers={"Content-Type": "application/json"}
        )
        await response.prepare(raw)
        key = t.resource.key
        self.watchers[key] = self.watchers.get(key, 0) + 1
        self.watches_opened[key] = self.watches_opened.get(key, 0) + 1
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
                and matches_selectors(obj, labels, fields)
            )

        async def send(event: JSON) -> None:
            await response.write(json.dumps(event).encode() + b"\n")

        store, key = self.store, t.resource.key
        since = query.get("resourceVersion") or "0"
        try:
            if since == "0":
                # No version: a synthetic ADDED for everything, then changes from now on.
                position = store.rv
                for obj in store.of_resource(key, t.namespace):
                    if wanted(obj):
                        await send({"type": "ADDED", "object": obj})
            else:
                position = int(since)
                if store.expired(position):
                    gone = ApiError(410, "Expired", f"too old resource version: {since}")
                    await send({"type": "ERROR", "object": gone.status()})
                    return response
            while not self._closing:
                changed = store.changed_for(key)
                pending = store.changes_after(position)
                if pending:
                    position = pending[-1].rv
                    # The events since the last look in one write (the same bytes as one
                    # write each, in fewer chunks and system calls).
                    lines = [
                        change.line()
                        for change in pending
                        if change.resource_key == key and wanted(change.obj)
                    ]
                    if lines:
                        await response.write(b"".join(lines))
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                if not pending or position >= store.rv:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(remaining):
                            await changed.wait()
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

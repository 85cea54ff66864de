"""A small async Kubernetes client over plain HTTP, for the tests, the bench and the demo.

It talks to the API exactly as kubectl would (JSON over HTTP), whether the API is the
emulator or a real cluster, so what its callers see is what a user sees. Only what they
need: VirtualPods, namespaces, Events, Leases and a watch.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from virtualpod.core.spec import API_GROUP, API_VERSION

PLURAL = "virtualpods"
LEASES = "/apis/coordination.k8s.io/v1"
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
DEFAULT_TIMEOUT_S = 10.0

#: `ssl=` for aiohttp: a context, True for the default checks, False to skip them.
TLS = ssl.SSLContext | bool


class ApiRequestError(RuntimeError):
    """The API answered with a status the caller did not expect."""

    def __init__(self, what: str, status: int, body: Any) -> None:
        message = body.get("message", body) if isinstance(body, dict) else body
        super().__init__(f"{what}: HTTP {status}: {message}")
        self.status = status
        self.body = body


def vpod_path(namespace: str, name: str = "", subresource: str = "") -> str:
    """The URL path of a namespace's VirtualPods, or of one of them."""
    path = f"/apis/{API_GROUP}/{API_VERSION}/namespaces/{namespace}/{PLURAL}"
    for part in (name, subresource):
        if part:
            path += f"/{part}"
    return path


def _tls_from(cfg: Any) -> TLS:
    """What a kubeconfig says about TLS, as aiohttp's `ssl=` argument."""
    if not cfg.verify_ssl:
        if not cfg.cert_file:
            return False
        unverified = ssl.create_default_context()
        unverified.check_hostname = False
        unverified.verify_mode = ssl.CERT_NONE
        unverified.load_cert_chain(cfg.cert_file, cfg.key_file)
        return unverified
    verified = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
    if cfg.cert_file:
        verified.load_cert_chain(cfg.cert_file, cfg.key_file)
    return verified


class KubeClient:
    """JSON over HTTP to one API server. Use as `async with`, or call `close()`."""

    def __init__(
        self, server: str, headers: dict[str, str] | None = None, tls: TLS = False
    ) -> None:
        self.server = server.rstrip("/")
        self.headers = dict(headers or {})
        self.tls = tls
        self._session: aiohttp.ClientSession | None = None
        #: (namespace, name) of every VirtualPod created here, for cleanup.
        self.created: set[tuple[str, str]] = set()

    @classmethod
    def from_kubeconfig(cls, path: str) -> KubeClient:
        """The cluster of a kubeconfig file: its server, token and TLS settings."""
        from kubernetes import client, config  # only needed for a real cluster

        cfg = client.Configuration()
        config.load_kube_config(config_file=path, client_configuration=cfg)  # type: ignore[no-untyped-call]
        headers: dict[str, str] = {}
        token = cfg.api_key.get("authorization") or cfg.api_key.get("BearerToken")
        if token:
            headers["Authorization"] = token if token.startswith("Bearer") else f"Bearer {token}"
        return cls(str(cfg.host), headers, _tls_from(cfg))

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self.headers)
        return self._session

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        **kwargs: Any,
    ) -> tuple[int, Any]:
        """(HTTP status, decoded JSON body or None) of one request."""
        async with self.session.request(
            method,
            self.server + path,
            json=body,
            ssl=self.tls,
            timeout=aiohttp.ClientTimeout(total=timeout),
            **kwargs,
        ) as response:
            text = await response.text()
            return response.status, json.loads(text) if text else None

    async def _expect(
        self,
        what: str,
        statuses: tuple[int, ...],
        method: str,
        path: str,
        body: Any = None,
        **kwargs: Any,
    ) -> Any:
        status, data = await self.request(method, path, body, **kwargs)
        if status not in statuses:
            raise ApiRequestError(what, status, data)
        return data

    # ------------------------------------------------------------- VirtualPods

    async def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        status, data = await self.try_create(manifest)
        if status != 201:
            name = manifest.get("metadata", {}).get("name")
            raise ApiRequestError(f"cannot create VirtualPod {name}", status, data)
        return dict(data)

    async def try_create(self, manifest: dict[str, Any]) -> tuple[int, Any]:
        """POST the VirtualPod; the answer as it is (a real server may refuse it: 422)."""
        namespace = manifest.get("metadata", {}).get("namespace", "default")
        status, data = await self.request("POST", vpod_path(namespace), manifest)
        if status == 201:
            self.created.add((namespace, data["metadata"]["name"]))
        return status, data

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        status, data = await self.request("GET", vpod_path(namespace, name))
        if status == 404:
            return None
        if status != 200:
            raise ApiRequestError(f"cannot get VirtualPod {namespace}/{name}", status, data)
        return dict(data)

    async def merge_patch(
        self, namespace: str, name: str, patch: dict[str, Any], sub: str = ""
    ) -> dict[str, Any]:
        """A merge patch of the VirtualPod, or of its `sub`resource (e.g. "status")."""
        patched: dict[str, Any] = await self._expect(
            f"cannot patch VirtualPod {namespace}/{name}",
            (200,),
            "PATCH",
            vpod_path(namespace, name, sub),
            patch,
            headers=MERGE_PATCH,
        )
        return patched

    async def delete(self, namespace: str, name: str) -> None:
        await self._expect(
            f"cannot delete VirtualPod {namespace}/{name}",
            (200, 202, 404),
            "DELETE",
            vpod_path(namespace, name),
        )

    async def drop_finalizers(self, namespace: str, name: str) -> None:
        """Let a VirtualPod go without its operator (one that died or never came)."""
        await self._expect(
            f"cannot remove the finalizers of VirtualPod {namespace}/{name}",
            (200, 404),
            "PATCH",
            vpod_path(namespace, name),
            {"metadata": {"finalizers": None}},
            headers=MERGE_PATCH,
        )

    async def watch(
        self, namespace: str, resource_version: int | str
    ) -> AsyncIterator[dict[str, Any]]:
        """The namespace's VirtualPod watch events newer than `resource_version`."""
        params = {"watch": "true", "resourceVersion": str(resource_version)}
        async with self.session.get(
            self.server + vpod_path(namespace),
            params=params,
            ssl=self.tls,
            timeout=aiohttp.ClientTimeout(total=None),
        ) as stream:
            async for line in stream.content:
                yield json.loads(line)

    # ----------------------------------------------- namespaces, Events, Leases

    async def ensure_namespace(self, name: str) -> bool:
        """Create the namespace; True if this call created it."""
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        status, data = await self.request("POST", "/api/v1/namespaces", body)
        if status in (200, 201):
            return True
        if status == 409:
            return False
        raise ApiRequestError(f"cannot create namespace {name}", status, data)

    async def delete_namespace(self, name: str) -> None:
        await self._expect(
            f"cannot delete namespace {name}",
            (200, 202, 404),
            "DELETE",
            f"/api/v1/namespaces/{name}",
        )

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        status, data = await self.request("GET", f"{LEASES}/namespaces/{namespace}/leases/{name}")
        if status == 404:
            return None
        if status != 200:
            raise ApiRequestError(f"cannot get Lease {namespace}/{name}", status, data)
        return dict(data)

    async def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """The Events about the object called `name` in the namespace."""
        data = await self._expect(
            f"cannot list Events in {namespace}",
            (200,),
            "GET",
            f"/api/v1/namespaces/{namespace}/events",
            params={"fieldSelector": f"involvedObject.name={name}"},
        )
        return [e for e in data["items"] if e.get("involvedObject", {}).get("name") == name]

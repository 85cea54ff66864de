"""A tiny async Kubernetes client over plain HTTP, for the end-to-end tests.

The tests talk to the API exactly as kubectl would (JSON over HTTP), whether it is the
emulator or a real cluster, so what they see is what a user sees.
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import yaml

GROUP, VERSION, PLURAL = "virtualpod.dev", "v1alpha1", "virtualpods"


class Kube:
    def __init__(
        self,
        server: str,
        headers: dict[str, str] | None = None,
        ssl_context: ssl.SSLContext | bool | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.session = aiohttp.ClientSession(headers=headers or {})
        self.ssl = ssl_context
        #: (namespace, name) of every object created here, for the tests' cleanup.
        self.created: set[tuple[str, str]] = set()

    async def close(self) -> None:
        await self.session.close()

    def _url(self, namespace: str, name: str | None = None, sub: str | None = None) -> str:
        url = f"{self.server}/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
        if name:
            url += f"/{name}"
        if sub:
            url += f"/{sub}"
        return url

    async def _json(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.session.request(method, url, ssl=self.ssl, **kwargs) as response:
            text = await response.text()
            return response.status, json.loads(text) if text else None

    async def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        status, body = await self.try_create(manifest)
        assert status == 201, (status, body)
        return body

    async def try_create(self, manifest: dict[str, Any]) -> tuple[int, Any]:
        """POST the object; the answer as it is (a real server may refuse it: 422)."""
        namespace = manifest.get("metadata", {}).get("namespace", "default")
        status, body = await self._json("POST", self._url(namespace), json=manifest)
        if status == 201:
            self.created.add((namespace, body["metadata"]["name"]))
        return status, body

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        status, body = await self._json("GET", self._url(namespace, name))
        if status == 404:
            return None
        assert status == 200, (status, body)
        return body

    async def merge_patch(
        self, namespace: str, name: str, patch: dict[str, Any], sub: str | None = None
    ) -> dict[str, Any]:
        """A merge patch of the object, or of its `sub`resource (e.g. "status")."""
        status, body = await self._json(
            "PATCH",
            self._url(namespace, name, sub),
            data=json.dumps(patch),
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert status == 200, (status, body)
        return body

    async def delete(self, namespace: str, name: str) -> None:
        status, body = await self._json("DELETE", self._url(namespace, name))
        assert status in (200, 202, 404), (status, body)

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        url = f"{self.server}/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        status, body = await self._json("GET", url)
        if status == 404:
            return None
        assert status == 200, (status, body)
        return body

    async def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        url = f"{self.server}/api/v1/namespaces/{namespace}/events"
        status, body = await self._json(
            "GET", url, params={"fieldSelector": f"involvedObject.name={name}"}
        )
        assert status == 200, (status, body)
        return [e for e in body["items"] if e.get("involvedObject", {}).get("name") == name]


CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / "virtualpod.dev_virtualpods.yaml"


def printer_columns(obj: dict[str, Any]) -> dict[str, Any]:
    """What `kubectl get vpod` shows for `obj`: the CRD's printer columns, evaluated."""
    crd = yaml.safe_load(CRD_PATH.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == VERSION)
    row: dict[str, Any] = {}
    for column in version["additionalPrinterColumns"]:
        value: Any = obj
        for key in column["jsonPath"].lstrip(".").split("."):
            value = value.get(key) if isinstance(value, dict) else None
        row[column["name"]] = value
    return row

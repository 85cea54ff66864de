"""JSON over HTTP to the API server, for the controller's own writes (Pods, binding).

The controller creates and deletes companion Pods and patches VirtualPods outside any
Kopf handler's body. Those calls are few and plain, so they go over one aiohttp session
with the credentials `kube.api.load_configuration` finds (the emulator's URL, else the
service account, else the kubeconfig). Failures come back as `RestError` with the API
server's code and message, which the controller turns into conditions.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any

import aiohttp

from virtualpod.kube.api import MERGE_PATCH, REQUEST_TIMEOUT_SECONDS, load_configuration

JSON = dict[str, Any]


class RestError(Exception):
    """The API server refused a request: its HTTP code and `Status` message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"HTTP {code}: {message}")
        self.code = code
        self.message = message


def _tls(cfg: Any) -> ssl.SSLContext | bool:
    if not cfg.host.startswith("https"):
        return False
    context = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
    if not cfg.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cfg.cert_file:
        context.load_cert_chain(cfg.cert_file, cfg.key_file)
    return context


class RestClient:
    def __init__(self, server: str, headers: dict[str, str], tls: ssl.SSLContext | bool) -> None:
        self.server = server.rstrip("/")
        self.tls = tls
        self.session = aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
        )

    @classmethod
    async def connect(cls, api_url: str | None) -> RestClient:
        cfg = await asyncio.to_thread(load_configuration, api_url)
        token = cfg.api_key.get("authorization") or cfg.api_key.get("BearerToken")
        headers = {}
        if token:
            headers["Authorization"] = token if token.startswith("Bearer") else f"Bearer {token}"
        return cls(cfg.host, headers, _tls(cfg))

    async def request(
        self, method: str, path: str, body: JSON | None = None, content_type: str | None = None
    ) -> JSON:
        headers = {"Content-Type": content_type} if content_type else {}
        data = json.dumps(body) if body is not None else None
        async with self.session.request(
            method, self.server + path, data=data, headers=headers, ssl=self.tls
        ) as response:
            text = await response.text()
            parsed = json.loads(text) if text else {}
            if response.status >= 400:
                message = parsed.get("message", text) if isinstance(parsed, dict) else text
                raise RestError(response.status, str(message))
            return parsed if isinstance(parsed, dict) else {}

    async def create(self, path: str, body: JSON) -> JSON:
        return await self.request("POST", path, body, "application/json")

    async def merge_patch(self, path: str, patch: JSON) -> JSON:
        return await self.request("PATCH", path, patch, MERGE_PATCH)

    async def delete(self, path: str, uid: str | None = None) -> bool:
        """Delete (only that incarnation, when `uid` is given); False when already gone."""
        options: JSON = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if uid:
            options["preconditions"] = {"uid": uid}
        try:
            await self.request("DELETE", path, options, "application/json")
        except RestError as error:
            if error.code in (404, 409):
                return False
            raise
        return True

    async def close(self) -> None:
        await self.session.close()

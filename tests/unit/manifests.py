"""Builders for VirtualPod manifests, so tables read like pod specs."""

from __future__ import annotations

from typing import Any


def resources(
    requests: dict[str, Any] | None = None, limits: dict[str, Any] | None = None
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if requests is not None:
        result["requests"] = requests
    if limits is not None:
        result["limits"] = limits
    return result


def container(
    name: str = "app", requests: dict[str, Any] | None = None, limits: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"name": name, "image": "busybox", "resources": resources(requests, limits)}


def virtualpod(
    *containers: dict[str, Any],
    init: tuple[dict[str, Any], ...] = (),
    name: str = "vp",
    namespace: str = "default",
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"containers": list(containers), **spec}
    if init:
        body["initContainers"] = list(init)
    return {
        "apiVersion": "virtualpod.dev/v1alpha1",
        "kind": "VirtualPod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }

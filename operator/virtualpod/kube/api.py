"""The operator's own Kubernetes writes outside Kopf's handlers, and what Events say.

Kopf patches status only for the object a handler runs for; the lifecycle mirror, the
restart policy and the pressure monitor act outside any handler. They patch status
through the official `kubernetes` client here, with the same credentials Kopf uses (the
emulator's URL, else the service account, else the kubeconfig).

Every Event (`event_body`, posted by `kube.poster`) says who acted: the reporting
component `virtualpod` and this host as the reporting instance, so `kubectl describe`
shows `From: virtualpod, <host>`. Kopf's own Events (a handler that failed) carry the
same pair through `settings.posting` (see `kube.common.configure`).
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config

#: The reporting component of every Event this operator posts.
REPORTING_COMPONENT = "virtualpod"
#: The API server refuses longer `reportingInstance` and `action` values.
REPORTING_INSTANCE_MAX = 128
#: The API server refuses longer Event messages; longer ones are cut in the middle.
EVENT_MESSAGE_MAX = 1024
CUT_INFIX = "..."
#: Seconds one API request may take before it is given up (Events and mirrors are retried
#: by the next change, never awaited forever).
REQUEST_TIMEOUT_SECONDS = 10.0
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class ObjectRef:
    """The object an Event is about, or whose status is patched."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str | None = None


def reporting_instance(host_name: str) -> str:
    return host_name[:REPORTING_INSTANCE_MAX]


def shorten(message: str, limit: int = EVENT_MESSAGE_MAX) -> str:
    """`message` cut in the middle to `limit` characters (both ends usually matter)."""
    if len(message) <= limit:
        return message
    head = (limit - len(CUT_INFIX)) // 2
    tail = limit - len(CUT_INFIX) - head
    return f"{message[:head]}{CUT_INFIX}{message[-tail:]}"


def event_body(
    ref: ObjectRef,
    type_: str,
    reason: str,
    message: str,
    instance: str,
    now: datetime.datetime,
) -> dict[str, Any]:
    """A core/v1 Event as the API server validates it (eventTime wants component+action)."""
    seconds = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    involved = {
        "apiVersion": ref.api_version,
        "kind": ref.kind,
        "namespace": ref.namespace,
        "name": ref.name,
    }
    if ref.uid:
        involved["uid"] = ref.uid
    return {
        "metadata": {"generateName": f"{ref.name}.", "namespace": ref.namespace},
        "involvedObject": involved,
        "type": type_,
        "reason": reason,
        "action": reason[:REPORTING_INSTANCE_MAX],
        "message": shorten(message),
        "reportingComponent": REPORTING_COMPONENT,
        "reportingInstance": reporting_instance(instance),
        "source": {"component": REPORTING_COMPONENT, "host": instance},
        "firstTimestamp": seconds,
        "lastTimestamp": seconds,
        "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "count": 1,
    }


def load_configuration(api_url: str | None) -> client.Configuration:
    """Where and how to talk to the API: the given URL, else in-cluster, else kubeconfig."""
    configuration = client.Configuration()
    if api_url:
        configuration.host = api_url
        configuration.verify_ssl = False
        return configuration
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return configuration


class KubeApi:
    """Status patches (and the Lease, the workloads' reads) through the kubernetes client,
    off the event loop."""

    def __init__(self, configuration: client.Configuration, instance: str) -> None:
        self.api_client = client.ApiClient(configuration)
        self.core = client.CoreV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.instance = instance

    @classmethod
    async def connect(cls, api_url: str | None, instance: str) -> KubeApi:
        configuration = await asyncio.to_thread(load_configuration, api_url)
        return cls(configuration, instance)

    async def patch_status(self, ref: ObjectRef, plural: str, status: Mapping[str, Any]) -> bool:
        """Merge-patch an object's status subresource; False when the object is gone."""
        group, _, version = ref.api_version.rpartition("/")
        try:
            await asyncio.to_thread(
                self.custom.patch_namespaced_custom_object_status,
                group,
                version,
                ref.namespace,
                plural,
                ref.name,
                {"status": dict(status)},
                _content_type=MERGE_PATCH,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
        except client.ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    def close(self) -> None:
        self.api_client.close()  # type: ignore[no-untyped-call]

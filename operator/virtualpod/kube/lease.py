"""The host's Lease: the agent publishes its measured memory every few seconds.

`coordination.k8s.io/v1` Lease `virtualpod-node-<host>` in the operator's namespace,
renewed every `leaseRenewInterval` with the pool's allocatable, the VMs' summed working
sets and memory.available from the pressure monitor (when it runs). The controller
reads it to prefer the hosts with the most measured headroom.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from typing import Any, cast

from kubernetes import client

from virtualpod.core.lease import HostUsage, lease_body, lease_name
from virtualpod.kube.api import MERGE_PATCH, REQUEST_TIMEOUT_SECONDS, KubeApi
from virtualpod.kube.context import AgentContext

log = logging.getLogger(__name__)

NOT_FOUND = 404


async def measure(ctx: AgentContext) -> HostUsage:
    """What the host uses now: running VMs' working sets (RSS, else their memory)."""
    hv = ctx.hv
    running = {found.uuid: found for found in await hv.list_domains() if found.active}
    stats = await hv.all_memory_stats(list(running)) if running else {}
    working_set = 0
    for uuid, found in running.items():
        rss = stats[uuid].rss_bytes if uuid in stats else None
        working_set += rss if rss is not None else found.memory_bytes
    monitor = ctx.pressure
    available = monitor.state.available_bytes if monitor is not None else None
    return HostUsage(ctx.allocatable.memory_bytes, working_set, available)


class LeaseWriter:
    """Create or update one Lease through the kubernetes client, off the event loop."""

    def __init__(self, api: KubeApi) -> None:
        self.leases = client.CoordinationV1Api(api.api_client)

    def _put(self, body: dict[str, Any]) -> None:
        """Merge-patch the Lease (one request per renewal); create it the first time."""
        meta = body["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        try:
            self.leases.patch_namespaced_lease(
                name,
                namespace,
                body,
                _content_type=MERGE_PATCH,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
        except client.ApiException as error:
            if error.status != NOT_FOUND:
                raise
            self.leases.create_namespaced_lease(
                namespace, cast(client.V1Lease, body), _request_timeout=REQUEST_TIMEOUT_SECONDS
            )

    async def put(self, body: dict[str, Any]) -> None:
        await asyncio.to_thread(self._put, body)


async def renew_once(ctx: AgentContext, writer: LeaseWriter) -> HostUsage:
    usage = await measure(ctx)
    now = datetime.datetime.now(tz=datetime.UTC)
    settings = ctx.settings
    body = lease_body(
        ctx.host_name,
        settings.namespace,
        usage,
        renew_interval_s=settings.lease_renew_interval_s,
        now=now,
    )
    await writer.put(body)
    return usage


async def publish_lease(ctx: AgentContext) -> None:
    """Renew the host's Lease forever; a failed renewal is logged and tried again."""
    if ctx.api is None:
        return
    writer = LeaseWriter(ctx.api)
    while True:
        try:
            await renew_once(ctx, writer)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the Lease is advisory: never take the agent down
            log.warning(f"cannot renew the Lease {lease_name(ctx.host_name)}: {error}")
        await asyncio.sleep(ctx.settings.lease_renew_interval_s)

"""The agent role: one per libvirt host, the VMs of the VirtualPods bound to it.

`register(registry)` puts the agent's handlers onto an explicit Kopf registry. In
cluster mode the agent watches only VirtualPods labelled with its node (a server-side
label selector: no host streams every object in the cluster) and never defines a domain
for one that is unbound, bound elsewhere or not yet admitted; the VM is sized from
`status.admitted`, the companion Pod as admitted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

import kopf

from virtualpod.core.admission import PlacedRequests
from virtualpod.core.binding import NODE_LABEL, serves
from virtualpod.core.quantity import MILLICPU_PER_CPU, format_bytes
from virtualpod.core.settings import Amount
from virtualpod.core.spec import API_GROUP, API_VERSION, SpecError
from virtualpod.core.status import condition_status
from virtualpod.kube import common
from virtualpod.kube.api import KubeApi
from virtualpod.kube.context import PLURAL, AgentContext, Owner, Sizing, context, vpod_ref
from virtualpod.kube.lease import publish_lease
from virtualpod.kube.mirror import mirror_lifecycle
from virtualpod.kube.plans import plan_key, planned
from virtualpod.kube.poster import EventPoster
from virtualpod.kube.reconcile import body_uuid, reconcile
from virtualpod.kube.reporters import info, warn
from virtualpod.kube.rest import RestClient
from virtualpod.kube.restart_policy import cancel_restart
from virtualpod.kube.workload import (
    ADDRESS_INTERVAL_SECONDS,
    Workloads,
    delete_volumes,
    mirror_addresses,
    runs_workload,
)
from virtualpod.libvirt.hypervisor import Hypervisor, HypervisorError

#: How often a Pending VirtualPod retries (admission, or waiting for `status.admitted`).
PENDING_RETRY_SECONDS = 1.0


def served_here(body: kopf.Body, memo: Any, **_: Any) -> bool:
    """The object is bound to this agent's host (the handlers say so declaratively:
    a label filter, which Kopf checks without building a callback's arguments)."""
    ctx = context(memo)
    return serves(body, ctx.host_name)


def serves_workload(body: kopf.Body, **_: Any) -> bool:
    """Kopf filter (after the label filter): running, and its first container names a VM
    disk image."""
    return runs_workload(body)


def is_pending(body: kopf.Body, **_: Any) -> bool:
    """Kopf filter (after the label filter): Pending (not admitted yet, or no room on the
    host yet).

    A callback, not a `field=` filter: Kopf adds a filtered field to what it diffs for
    changes, and a phase written by the lifecycle mirror would count as a spec update.
    """
    status = body.get("status")
    return isinstance(status, Mapping) and status.get("phase") == "Pending"


def sized(ctx: AgentContext, uuid: str, body: kopf.Body) -> Sizing:
    """The size the VirtualPod's plan gives it (`kube.plans`: planned again only when
    the plan can change)."""
    key = plan_key(ctx, body)
    known = ctx.sizing.get(uuid)
    if known is not None and known[0] == key:
        return known[1]
    sizing = Sizing()
    with contextlib.suppress(SpecError):
        plan = planned(ctx, uuid, body, key)
        if plan is not None:
            sizing = Sizing(
                plan.requests,
                (plan.size.vcpus, plan.size.memory_bytes),
                plan.qos_class.value,
                plan.oom_score_adj(ctx.capacity.memory_bytes),
            )
    ctx.sizing[uuid] = (key, sizing)
    ctx.placed.resize(uuid, sizing.requests)
    return sizing


def sizing_requests(ctx: AgentContext, uuid: str) -> Amount | None:
    known = ctx.sized(uuid)
    return known.requests if known is not None else None


async def virtualpods_by_uuid(
    body: kopf.Body, meta: kopf.Meta, status: kopf.Status, memo: Any, **_: Any
) -> dict[str, Owner]:
    """Each VirtualPod by domain UUID: its ref, admitted requests, size and status.

    Async, as every handler here: Kopf runs a sync one in a thread, once per watch event."""
    ctx = context(memo)
    uuid = body_uuid(body)
    sizing = sized(ctx, uuid, body)
    conditions = tuple(dict(c) for c in status.get("conditions") or [])
    return {
        uuid: Owner(
            ref=vpod_ref(str(meta.get("namespace")), str(meta.get("name")), meta.get("uid")),
            generation=meta.get("generation"),
            deleting=bool(meta.get("deletionTimestamp")),
            here=served_here(body, memo),
            sizing=sizing,
            phase=status.get("phase"),
            conditions=conditions,
            restart_required=condition_status(conditions, "RestartRequired") == "True",
            restart_count=(status.get("vm") or {}).get("restartCount") or 0,
            observed_generation=status.get("observedGeneration"),
        )
    }


async def priority_class_values(name: str, body: kopf.Body, **_: Any) -> dict[str, int]:
    value = body.get("value", 0)
    return {name: int(value) if isinstance(value, int) else 0}


async def startup(settings: kopf.OperatorSettings, memo: Any, logger: Any, **kwargs: Any) -> None:
    """Open libvirt, learn the host's capacity and its domains, start the background tasks."""
    ctx = context(memo)
    common.configure(settings, ctx.host_name)
    if ctx.selector is not None:
        settings.watching.label_selectors[API_GROUP, PLURAL] = ctx.selector
    if ctx.api is None:  # Kopf retries a startup that failed later on (e.g. libvirt)
        ctx.api = await KubeApi.connect(ctx.api_url, ctx.host_name)
    if ctx.rest is None:
        ctx.rest = await RestClient.connect(ctx.api_url)
        ctx.events = EventPoster(ctx.rest, ctx.host_name)
    ctx.by_uuid = kwargs["virtualpods_by_uuid"]
    ctx.priority_class_index = kwargs["priority_class_values"]
    wanted = ctx.settings.cgroup_version
    hv = Hypervisor(
        ctx.settings.libvirt_uri, cgroup_version=None if wanted == "auto" else int(wanted)
    )
    await hv.connect()
    ctx.hypervisor = hv
    ctx.workloads = Workloads(hv, ctx.settings, ctx.api.core)
    ctx.cgroup_version = hv.cgroup_version
    capacity = await hv.host_capacity()
    ctx.capacity = Amount(capacity.cpus * MILLICPU_PER_CPU, capacity.memory_bytes)
    ctx.placed = PlacedRequests(
        {found.uuid: sizing_requests(ctx, found.uuid) for found in await hv.list_domains()}
    )
    ctx.tasks.append(asyncio.create_task(mirror_lifecycle(ctx), name="libvirt-lifecycle"))
    ctx.tasks.append(asyncio.create_task(publish_lease(ctx), name="host-lease"))
    for hook in ctx.on_ready:
        task = hook(ctx)
        if asyncio.iscoroutine(task):
            ctx.tasks.append(asyncio.create_task(task))
    logger.info(
        f"agent of host {ctx.host_name} via {hv.uri}: capacity {ctx.capacity.cpu_millis}m cpu, "
        f"{format_bytes(ctx.capacity.memory_bytes)} memory; {len(ctx.placed)} domain(s) found"
    )


async def cleanup(memo: Any, **_: Any) -> None:
    ctx = context(memo)
    for uuid in list(ctx.restarts):
        cancel_restart(ctx, uuid)
    for task in ctx.tasks:
        task.cancel()
    for task in ctx.tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    ctx.tasks.clear()
    if ctx.hypervisor is not None:
        await ctx.hypervisor.close()
        ctx.hypervisor = None
    if ctx.events is not None:
        await ctx.events.close()
        ctx.events = None
    if ctx.rest is not None:
        await ctx.rest.close()
        ctx.rest = None
    if ctx.api is not None:
        ctx.api.close()
        ctx.api = None


async def reconcile_virtualpod(
    body: kopf.Body, patch: kopf.Patch, memo: Any, logger: Any, retry: int, **_: Any
) -> None:
    await reconcile(context(memo), body, patch, logger, retry)


async def retry_pending(
    body: kopf.Body, patch: kopf.Patch, memo: Any, logger: Any, **kwargs: Any
) -> None:
    """A Pending VirtualPod starts as soon as it is admitted and room appears."""
    await reconcile(context(memo), body, patch, logger, kwargs.get("retry", 0))


async def delete_virtualpod(body: kopf.Body, memo: Any, **_: Any) -> None:
    """Destroy, undefine and drop the managed-save image; then kopf removes the finalizer."""
    ctx = context(memo)
    uuid = body_uuid(body)
    ctx.deleting.add(uuid)
    async with ctx.vm_lock(uuid):
        try:
            removed = await ctx.hv.undefine(uuid)
        except HypervisorError as error:
            ctx.deleting.discard(uuid)
            warn(ctx, body, reason="Failed", message=f"cannot remove the VM: {error}")
            raise kopf.TemporaryError(f"cannot undefine: {error}", delay=5) from error
        await delete_volumes(ctx, body, uuid)
    ctx.vm_locks.pop(uuid, None)
    ctx.refresh_locks.pop(uuid, None)
    ctx.sizing.pop(uuid, None)
    ctx.plans.pop(uuid, None)
    ctx.placed.discard(uuid)
    ctx.suspensions.pop(uuid, None)
    ctx.reserving.pop(uuid, None)
    cancel_restart(ctx, uuid)
    if removed:
        info(ctx, body, reason="Deleted", message="VM destroyed and undefined, save image removed")


def register(registry: kopf.OperatorRegistry, host_name: str) -> None:
    """The agent's handlers on `registry`, for the VirtualPods bound to `host_name` (the
    rest of its configuration comes from the memo)."""
    vpods: Mapping[str, Any] = {
        "group": API_GROUP,
        "version": API_VERSION,
        "plural": PLURAL,
        "registry": registry,
    }
    here: Mapping[str, Any] = {**vpods, "labels": {NODE_LABEL: host_name}}
    kopf.index(**vpods)(virtualpods_by_uuid)
    kopf.index("scheduling.k8s.io", "v1", "priorityclasses", registry=registry)(
        priority_class_values
    )
    kopf.on.startup(registry=registry)(startup)
    kopf.on.cleanup(registry=registry)(cleanup)
    kopf.on.create(**here)(reconcile_virtualpod)
    kopf.on.update(**here)(reconcile_virtualpod)
    kopf.on.resume(**here)(reconcile_virtualpod)
    kopf.timer(
        **here,
        interval=PENDING_RETRY_SECONDS,
        initial_delay=PENDING_RETRY_SECONDS,  # the create/update handler goes first
        when=is_pending,
    )(retry_pending)
    kopf.on.delete(**here)(delete_virtualpod)
    kopf.timer(**here, interval=ADDRESS_INTERVAL_SECONDS, when=serves_workload)(mirror_addresses)

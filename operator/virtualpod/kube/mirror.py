"""Libvirt is the truth for runtime state: lifecycle events mirrored into status.

A task started with the agent follows libvirt's lifecycle events and writes each
domain's state into its owner's status within seconds; a domain a handler is busy with
is re-checked a moment later instead (the handler writes what its own actions caused),
and an event that says what the last status written says (a VM runs) is not read again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from virtualpod.core.quantity import format_bytes
from virtualpod.core.status import condition_status, set_condition
from virtualpod.kube.context import AgentContext, Written
from virtualpod.kube.reporters import announce, patch_status, post
from virtualpod.kube.restart_policy import needs_restart, schedule_restart
from virtualpod.kube.runtime import runs_size, runtime_status
from virtualpod.libvirt.hypervisor import DomainNotFound, EventKind

log = logging.getLogger(__name__)

MIRROR_RECHECK_SECONDS = 1.0


async def refresh_status(ctx: AgentContext, uuid: str, *, announce_change: bool = True) -> None:
    """Re-read one domain and write its runtime state into its owner's status.

    One refresh of a VM at a time: the lifecycle mirror, a restart task and the pressure
    monitor all refresh, and two interleaved read-then-write pairs could land the older
    state last. (Not the reconcile's lock: the pressure monitor must not wait for a
    reconcile that downloads an image.)
    """
    if ctx.owner(uuid) is None or uuid in ctx.deleting:
        return
    async with ctx.refresh_locks.setdefault(uuid, asyncio.Lock()):
        await _refresh(ctx, uuid, announce_change)


async def _refresh(ctx: AgentContext, uuid: str, announce_change: bool) -> None:
    owner = ctx.owner(uuid)
    if owner is None or uuid in ctx.deleting or owner.deleting:
        return
    last = ctx.written.get(uuid) or Written(
        owner.conditions, owner.phase, owner.observed_generation
    )
    conditions, before = list(last.conditions), last.phase
    try:
        info = await ctx.hv.lookup(uuid)
    except DomainNotFound:
        info = None
    if info is None:
        if uuid not in ctx.placed:
            return  # never placed (Pending, Failed): nothing to mirror
        message = "the domain was removed outside the operator"
        conditions = set_condition(
            conditions, "Ready", False, "DomainMissing", message, owner.generation
        )
        status: dict[str, Any] = {
            "phase": "Failed",
            "reason": "DomainMissing",
            "message": message,
            "conditions": conditions,
            "vm": {"state": "Missing"},
        }
        ctx.placed.discard(uuid)
        if announce_change and before != "Failed":
            post(ctx, owner.ref, "Warning", "Failed", message)
    else:
        status = runtime_status(info, ctx, conditions, owner.generation)
        status["qosClass"] = owner.sizing.qos_class
        if condition_status(conditions, "RestartRequired") == "True" and runs_size(
            info, owner.sizing.size
        ):
            status["conditions"] = set_condition(
                status["conditions"],
                "RestartRequired",
                False,
                "Restarted",
                f"the VM was restarted with {info.vcpus} vCPU(s) and "
                f"{format_bytes(info.max_memory_bytes)} memory",
                owner.generation,
            )
        delay = None
        if owner.here and needs_restart(info, ctx, uuid):
            delay = schedule_restart(ctx, uuid, info.reason, refresh_quietly)
        if delay:
            status["message"] += f"; restarting in {delay:g}s (back-off)"
        if announce_change and status["phase"] != before:
            announce(ctx, owner.ref, before, status)
        if delay and announce_change:
            post(
                ctx,
                owner.ref,
                "Warning",
                "BackOff",
                f"back-off restarting the VM: next start in {delay:g}s",
            )
    # The generation the last reconcile handled: also in a mirror write that lands first.
    if last.observed_generation is not None:
        status["observedGeneration"] = last.observed_generation
    if last.status and all(last.status.get(key) == value for key, value in status.items()):
        return  # what the last reconcile reported (e.g. the start it caused itself)
    # Not kept for that check: two writes from outside handlers may land out of order,
    # and the next lifecycle event must then write again.
    ctx.written[uuid] = Written(
        tuple(status["conditions"]), status["phase"], last.observed_generation
    )
    await patch_status(ctx, owner.ref, status)


async def refresh_quietly(ctx: AgentContext, uuid: str) -> None:
    """Refresh without Events (the caller posted its own)."""
    await refresh_status(ctx, uuid, announce_change=False)


#: Events that say a VM runs now: nothing to mirror when the last status written says so
#: (any later change away from running has an event of its own, which is mirrored).
TO_RUNNING = frozenset({EventKind.STARTED, EventKind.RESUMED})


def already_mirrored(ctx: AgentContext, uuid: str, kind: EventKind | None) -> bool:
    """The event says what the last status written (by a reconcile, which started the VM
    itself, or by a refresh) already says: no need to read libvirt again."""
    last = ctx.written.get(uuid)
    return kind in TO_RUNNING and last is not None and last.phase == "Running"


async def mirror_lifecycle(ctx: AgentContext) -> None:
    """Follow libvirt lifecycle events; mirror each into the owning VirtualPod's status."""
    hv = ctx.hv
    loop = asyncio.get_running_loop()
    #: (domain UUID, what happened); (None, None): reconnected, resync every VM.
    todo: asyncio.Queue[tuple[str | None, EventKind | None]] = asyncio.Queue()

    async def pump() -> None:
        async with hv.subscribe() as events:
            async for event in events:
                if event.uuid is None:  # reconnected: events may be lost, resync all
                    todo.put_nowait((None, None))
                elif event.kind is not EventKind.DEFINED:
                    todo.put_nowait((event.uuid, event.kind))

    pumping = asyncio.create_task(pump(), name="libvirt-events")
    try:
        while True:
            uuid, kind = await todo.get()
            uuids = list(ctx.placed) if uuid is None else [uuid]
            for one in uuids:
                if one in ctx.busy:
                    loop.call_later(MIRROR_RECHECK_SECONDS, todo.put_nowait, (one, kind))
                    continue
                if already_mirrored(ctx, one, kind):
                    continue
                try:
                    await refresh_status(ctx, one, announce_change=uuid is not None)
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    log.warning(f"cannot mirror the state of domain {one}: {error}")
    finally:
        pumping.cancel()

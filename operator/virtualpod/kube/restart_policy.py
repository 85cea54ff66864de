"""Restart policy Always: a VM that stopped outside the agent is started again.

A crash, a guest shutdown or a `virsh destroy` restarts the VM with kubelet's crash-loop
back-off (`core.restarts`), counted in `status.vm.restartCount`; a VM suspended by the
pressure monitor (or saved by an admin) is never restarted by this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from virtualpod.core.restarts import crash_loop_over, restart_delay
from virtualpod.core.restarts import needs_restart as policy_applies
from virtualpod.kube.context import AgentContext
from virtualpod.kube.reporters import post
from virtualpod.libvirt.hypervisor import DomainInfo, DomainNotFound, DomainState, HypervisorError

log = logging.getLogger(__name__)

#: Re-reads a domain and writes its owner's status (the lifecycle mirror's refresh).
Refresh = Callable[[AgentContext, str], Awaitable[None]]


def needs_restart(info: DomainInfo, ctx: AgentContext, uuid: str) -> bool:
    """Shut off or crashed with nothing to restore, placed here, not held or deleted."""
    return policy_applies(
        stopped=info.state in (DomainState.SHUTOFF, DomainState.CRASHED),
        has_managed_save=info.has_managed_save,
        placed=uuid in ctx.placed,
        suspended=uuid in ctx.suspensions,
        deleting=uuid in ctx.deleting,
    )


def schedule_restart(ctx: AgentContext, uuid: str, why: str, refresh: Refresh) -> float:
    """Start the VM again after its back-off; returns the delay (0: at once)."""
    record = ctx.restart_record(uuid)
    if record.task is not None and not record.task.done():
        return 0.0  # already scheduled (several events for one stop)
    backoff = ctx.settings.restart_backoff
    if record.started_at and crash_loop_over(backoff, time.monotonic() - record.started_at):
        record.streak = 0
    delay = restart_delay(backoff, record.streak)
    record.task = asyncio.create_task(
        _restart(ctx, uuid, delay, why, refresh), name=f"restart-{uuid}"
    )
    return delay


def cancel_restart(ctx: AgentContext, uuid: str) -> None:
    record = ctx.restarts.pop(uuid, None)
    if record is not None and record.task is not None:
        record.task.cancel()


async def _restart(ctx: AgentContext, uuid: str, delay: float, why: str, refresh: Refresh) -> None:
    if delay:
        await asyncio.sleep(delay)
    owner = ctx.owner(uuid)
    if owner is None or owner.deleting or not owner.here:
        return
    record = ctx.restart_record(uuid)
    ctx.busy.add(uuid)  # the mirror waits: this task writes the status of its own start
    try:
        try:
            info = await ctx.hv.lookup(uuid)
        except DomainNotFound:
            return
        if not needs_restart(info, ctx, uuid):
            return  # started, saved, suspended or removed in the meantime
        try:
            result = await ctx.hv.start(uuid)
        except HypervisorError as error:
            record.streak += 1
            post(ctx, owner.ref, "Warning", "Failed", f"cannot restart the VM: {error}")
            record.task = None
            schedule_restart(ctx, uuid, why, refresh)
            return
        if result.started:
            record.count += 1
            record.streak += 1
            record.started_at = time.monotonic()
            oom_score_adj = owner.sizing.oom_score_adj
            if oom_score_adj is not None:
                with contextlib.suppress(HypervisorError):
                    await ctx.hv.set_oom_score_adj(uuid, oom_score_adj)
            post(
                ctx,
                owner.ref,
                "Normal",
                "Restarted",
                f"{info.name} started again after it stopped ({why}); restart {record.count}",
            )
        await refresh(ctx, uuid)
    except asyncio.CancelledError:
        raise
    except Exception as error:  # a restart must never take the agent down
        log.warning(f"cannot restart domain {uuid}: {error}")
    finally:
        ctx.busy.discard(uuid)

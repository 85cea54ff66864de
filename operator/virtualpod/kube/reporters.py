"""How the agent tells the user: status patches and Events, inside and outside handlers.

Inside a handler, Kopf patches status; the lifecycle mirror, the restart policy and the
pressure monitor act outside any handler and write status here. Events, from anywhere,
go through the agent's `EventPoster` (`kube.poster`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from virtualpod.kube.api import ObjectRef
from virtualpod.kube.context import PLURAL, AgentContext


def info(ctx: AgentContext, obj: Mapping[str, Any], *, reason: str, message: str) -> None:
    """A Normal Event on the object."""
    if ctx.events is not None:
        ctx.events.info(obj, reason=reason, message=message)


def warn(ctx: AgentContext, obj: Mapping[str, Any], *, reason: str, message: str) -> None:
    """A Warning Event on the object."""
    if ctx.events is not None:
        ctx.events.warn(obj, reason=reason, message=message)


def post(ctx: AgentContext, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
    """An Event on the object `ref` names (outside handlers, where no body is at hand)."""
    if ctx.events is not None:
        ctx.events.post(ref, type_, reason, message)


async def patch_status(ctx: AgentContext, ref: ObjectRef, status: Mapping[str, Any]) -> None:
    """Patch an object's status from outside a handler (lifecycle events, pressure)."""
    if ctx.api is not None:
        await ctx.api.patch_status(ref, PLURAL, status)


def announce(
    ctx: AgentContext, ref: ObjectRef, before: str | None, status: Mapping[str, Any]
) -> None:
    """The Event for a phase the VM moved to on its own (seen by the lifecycle mirror)."""
    phase, message = status["phase"], status["message"]
    if phase == "Running" and before in ("Paused", "Suspended"):
        post(ctx, ref, "Normal", "Resumed", message)
    elif phase == "Running":
        post(ctx, ref, "Normal", "Started", message)
    elif phase == "Paused":
        post(ctx, ref, "Warning", "Paused", message)
    elif phase == "Suspended":
        post(ctx, ref, "Normal", "Suspended", message)
    elif phase == "Failed":
        post(ctx, ref, "Warning", "Failed", message)

"""How the agent tells the user: status patches and Events, inside and outside handlers.

Inside a handler, Kopf posts (`info`/`warn`) and patches status. The lifecycle mirror,
the restart policy and the pressure monitor act outside any handler: they write here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import kopf

from virtualpod.kube.api import ObjectRef
from virtualpod.kube.context import PLURAL, AgentContext


def info(obj: Mapping[str, Any], *, reason: str, message: str) -> None:
    """A Normal Event on the object, from inside a handler (kopf posts it)."""
    kopf.info(cast(kopf.Body, obj), reason=reason, message=message)


def warn(obj: Mapping[str, Any], *, reason: str, message: str) -> None:
    """A Warning Event on the object, from inside a handler."""
    kopf.warn(cast(kopf.Body, obj), reason=reason, message=message)


async def post(ctx: AgentContext, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
    """Post an Event from outside a handler (kopf.info/warn only work inside handlers)."""
    if ctx.api is not None:
        await ctx.api.post_event(ref, type_, reason, message)


async def patch_status(ctx: AgentContext, ref: ObjectRef, status: Mapping[str, Any]) -> None:
    """Patch an object's status from outside a handler (lifecycle events, pressure)."""
    if ctx.api is not None:
        await ctx.api.patch_status(ref, PLURAL, status)


async def announce(
    ctx: AgentContext, ref: ObjectRef, before: str | None, status: Mapping[str, Any]
) -> None:
    """The Event for a phase the VM moved to on its own (seen by the lifecycle mirror)."""
    phase, message = status["phase"], status["message"]
    if phase == "Running" and before in ("Paused", "Suspended"):
        await post(ctx, ref, "Normal", "Resumed", message)
    elif phase == "Running":
        await post(ctx, ref, "Normal", "Started", message)
    elif phase == "Paused":
        await post(ctx, ref, "Warning", "Paused", message)
    elif phase == "Suspended":
        await post(ctx, ref, "Normal", "Suspended", message)
    elif phase == "Failed":
        await post(ctx, ref, "Warning", "Failed", message)

"""How the agent tells the user: status patches and Events, inside and outside handlers.

Inside a handler, Kopf posts (`info`/`warn`) and patches status. The lifecycle mirror,
the restart policy and the pressure monitor act outside any handler: they write here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

import kopf
from kopf._cogs.clients.events import post_event
from kopf._cogs.clients.patching import patch_obj

from virtualpod.core.spec import API_GROUP, API_VERSION, KIND
from virtualpod.kube.context import PLURAL, AgentContext, ObjectRef

log = logging.getLogger(__name__)

RESOURCE = kopf.Resource(
    API_GROUP,
    API_VERSION,
    PLURAL,
    kind=KIND,
    namespaced=True,
    subresources=frozenset({"status"}),
)
EVENTS = kopf.Resource("", "v1", "events", kind="Event", namespaced=True)


def info(obj: Mapping[str, Any], *, reason: str, message: str) -> None:
    """A Normal Event on the object, from inside a handler (kopf posts it)."""
    kopf.info(cast(kopf.Body, obj), reason=reason, message=message)


def warn(obj: Mapping[str, Any], *, reason: str, message: str) -> None:
    """A Warning Event on the object, from inside a handler."""
    kopf.warn(cast(kopf.Body, obj), reason=reason, message=message)


async def post(ctx: AgentContext, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
    """Post an Event from outside a handler."""
    if ctx.kopf_settings is None:
        return
    await post_event(
        ref=cast(
            Any,
            {
                "apiVersion": ref.api_version,
                "kind": ref.kind,
                "name": ref.name,
                "namespace": ref.namespace,
                "uid": ref.uid,
            },
        ),
        type=type_,
        reason=reason,
        message=message,
        resource=EVENTS,
        settings=ctx.kopf_settings,
        logger=log,
    )


async def patch_status(ctx: AgentContext, ref: ObjectRef, status: Mapping[str, Any]) -> None:
    """Patch an object's status from outside a handler (lifecycle events, pressure)."""
    if ctx.kopf_settings is None:
        return
    await patch_obj(
        settings=ctx.kopf_settings,
        resource=RESOURCE,
        namespace=cast(Any, ref.namespace),
        name=ref.name,
        patch=kopf.Patch({"status": dict(status)}),
        logger=log,
    )


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

"""Each VirtualPod's plan, made once per change that can alter it.

The index needs a VM's size on every watch event, the reconcile the whole plan: both
get the same plan until the spec (generation), the Pod as admitted, or the value of
its priority class changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from virtualpod.core.binding import with_admitted_resources
from virtualpod.core.plan import VMPlan, plan_virtualpod
from virtualpod.core.spec import SpecError
from virtualpod.kube.context import AgentContext, PlanKey


def plan_key(ctx: AgentContext, body: Mapping[str, Any]) -> PlanKey:
    """What a VirtualPod's plan depends on besides its identity and the settings."""
    class_name = _priority_class_name(body)
    return (
        (body.get("metadata") or {}).get("generation"),
        (body.get("status") or {}).get("admitted"),
        ctx.priority_of(class_name) if class_name is not None else None,
    )


def planned(
    ctx: AgentContext, uuid: str, body: Mapping[str, Any], key: PlanKey | None = None
) -> VMPlan | None:
    """The VirtualPod's plan; None while nothing is admitted. Raises `SpecError` (an
    invalid spec stays invalid until it changes). `key`: its `plan_key`, when the caller
    has it already."""
    key = plan_key(ctx, body) if key is None else key
    known = ctx.plans.get(uuid)
    if known is not None and known[0] == key:
        result = known[1]
    else:
        result = _plan(ctx, body, key)
        ctx.plans[uuid] = (key, result)
    if isinstance(result, SpecError):
        raise SpecError(result.errors)
    return result


def _priority_class_name(body: Mapping[str, Any]) -> str | None:
    spec = body.get("spec")
    name = spec.get("priorityClassName") if isinstance(spec, Mapping) else None
    return name if isinstance(name, str) else None


def _plan(ctx: AgentContext, body: Mapping[str, Any], key: PlanKey) -> VMPlan | SpecError | None:
    manifest = with_admitted_resources(body)
    if manifest is None:
        return None
    class_name, value = _priority_class_name(body), key[2]
    try:
        return plan_virtualpod(
            manifest,
            ctx.settings,
            cgroup_version=ctx.cgroup_version,
            priority_classes={class_name: value} if class_name and value is not None else {},
        )
    except SpecError as error:
        return error

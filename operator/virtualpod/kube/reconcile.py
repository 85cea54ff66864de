"""One reconcile: make a VirtualPod's domain match the object, idempotently.

What the VM becomes is decided by the core (`plan_virtualpod`, sized from the Pod as
admitted); libvirt is driven by the shell in one call (`DomainManager.sync`). Here: when
to call it, admission and the workload's disks (its `prepare` hook), what the status and
Events say.

* **Keyed by uid.** The domain UUID is the object's uid, so a reconcile that finds the
  domain adopts it (agent restarted mid-create, or a resume): never a second VM.
* **Admission, second line.** kube-scheduler placed the companion Pod; the agent still
  refuses a VM bigger than the host (`Failed`) and waits (`Pending`, retried) while one
  does not fit next to the VMs already placed here.
* **Bad input never crashes the agent.** An invalid spec gets `Valid=False`, a Warning
  Event and a permanent error: no retries, other objects keep being served.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from typing import Any

import kopf

from virtualpod.core.admission import insufficient, sum_requests, too_large, unschedulable_message
from virtualpod.core.domain import domain_uuid
from virtualpod.core.plan import VMPlan
from virtualpod.core.quantity import format_bytes
from virtualpod.core.settings import Amount
from virtualpod.core.spec import SpecError
from virtualpod.core.status import Conditions, condition_status, set_condition
from virtualpod.kube.api import shorten
from virtualpod.kube.common import KOPF_STATUS
from virtualpod.kube.context import AgentContext, Written
from virtualpod.kube.plans import planned
from virtualpod.kube.reporters import info, warn
from virtualpod.kube.runtime import runtime_status
from virtualpod.kube.workload import discard_workload, prepare_workload
from virtualpod.libvirt.host_paths import HostFileMissing, checked_plan
from virtualpod.libvirt.hypervisor import (
    DefineResult,
    DomainInfo,
    HardLimitBelowUsage,
    HypervisorError,
    LiveTune,
    SyncResult,
    Unsupported,
)

Body = Mapping[str, Any]
Logger = logging.Logger | logging.LoggerAdapter[Any]

NOT_ADMITTED_MESSAGE = "waiting for the companion Pod's admitted resources (status.admitted)"
#: How often a VirtualPod whose `spec.boot` file is not there yet looks again.
HOST_FILE_RETRY_SECONDS = 10.0


def body_uuid(body: Body) -> str:
    meta = body.get("metadata", {})
    return domain_uuid(str(meta.get("namespace")), str(meta.get("name")), meta.get("uid"))


async def reconcile(
    ctx: AgentContext,
    body: Body,
    patch: MutableMapping[str, Any],
    logger: Logger,
    retry: int = 0,
) -> None:
    """Make the domain match the object; idempotent, keyed by the object's uid.

    What the object says wrong is a `PermanentError` (see `_reconcile`); anything else
    unexpected becomes `Ready=False`/`ReconcileError`, one Warning Event per distinct
    error, and Kopf's retry after a growing delay: never a silent traceback loop.
    """
    uuid = body_uuid(body)
    async with ctx.vm_lock(uuid):
        ctx.busy.add(uuid)
        try:
            await _reconcile(ctx, body, patch, logger)
        except (kopf.PermanentError, kopf.TemporaryError):
            raise
        except Exception as error:
            message = shorten(f"{type(error).__name__}: {error}")
            logger.error(f"reconcile failed (attempt {retry + 1}): {message}", exc_info=retry == 0)
            _reconcile_failed(ctx, body, patch, message)
            raise kopf.TemporaryError(message, delay=reconcile_backoff(retry)) from error
        finally:
            ctx.busy.discard(uuid)


#: Seconds before the next attempt after an unexpected error, by attempt (last repeats).
RECONCILE_BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def reconcile_backoff(retry: int) -> float:
    return RECONCILE_BACKOFF_SECONDS[min(max(retry, 0), len(RECONCILE_BACKOFF_SECONDS) - 1)]


def _reconcile_failed(
    ctx: AgentContext, body: Body, patch: MutableMapping[str, Any], message: str
) -> None:
    """Ready=False with the error's message; a Warning Event when the error is new."""
    meta = body.get("metadata", {})
    status = body.get("status") or {}
    conditions: Conditions = list(status.get("conditions") or [])
    known = next((c for c in conditions if c.get("type") == "Ready"), {})
    conditions = set_condition(
        conditions, "Ready", False, "ReconcileError", message, meta.get("generation")
    )
    written = patch.setdefault("status", {})
    for key in [key for key in written if key != KOPF_STATUS]:
        del written[key]  # nothing half-done by the failed attempt goes out (Kopf's stays)
    written.update(reason="ReconcileError", message=message, conditions=conditions)
    if known.get("reason") != "ReconcileError" or known.get("message") != message:
        warn(ctx, body, reason="ReconcileError", message=message)


def placed_requests(ctx: AgentContext, exclude: str) -> Amount:
    """Summed requests of the VMs placed (or being placed) here, but `exclude`."""
    return sum_requests([ctx.placed.total(exclude), *ctx.reserving.values()])


async def _reconcile(
    ctx: AgentContext, body: Body, patch: MutableMapping[str, Any], logger: Logger
) -> None:
    meta = body.get("metadata", {})
    generation = meta.get("generation")
    status = body.get("status") or {}
    conditions: Conditions = list(status.get("conditions") or [])
    out: dict[str, Any] = {"observedGeneration": generation}
    patch.setdefault("status", {})
    try:
        plan = planned(ctx, body_uuid(body), body)
        if plan is not None:
            plan = checked_plan(plan, ctx.settings)  # host files (spec.boot, image), here
    except SpecError as error:
        raise _invalid_spec(ctx, body, patch, conditions, out, error) from error
    except HostFileMissing as error:
        raise _host_file_missing(ctx, body, patch, conditions, out, error) from error
    if plan is None:
        conditions = set_condition(
            conditions, "Ready", False, "NotAdmitted", NOT_ADMITTED_MESSAGE, generation
        )
        patch["status"].update(
            out,
            phase="Pending",
            reason="NotAdmitted",
            message=NOT_ADMITTED_MESSAGE,
            conditions=conditions,
        )
        return
    conditions = set_condition(conditions, "Valid", True, "Valid", "", generation)
    out["qosClass"] = plan.qos_class.value
    new = defined_now = False

    async def prepare(found: DomainInfo | None) -> bool:
        """Admit a new VM; get a stopped VM's disks ready before it is (re)defined."""
        nonlocal new
        new = found is None
        if new and not await _admit(ctx, body, plan, conditions, out, patch, status):
            return False
        if found is None or not found.active:
            await prepare_workload(ctx, body, patch, conditions, plan)
        return True

    def on_defined(defined: DefineResult) -> None:
        nonlocal defined_now
        defined_now = True
        ctx.placed.add(plan.uuid, plan.requests)
        ctx.reserving.pop(plan.uuid, None)
        if defined.created:
            info(ctx, body, reason="Created", message=f"defined domain {plan.domain_name}")

    try:
        synced = await ctx.hv.sync(
            plan,
            start=plan.uuid not in ctx.suspensions,
            oom_score_adj=plan.oom_score_adj(ctx.capacity.memory_bytes),
            prepare=prepare,
            on_defined=on_defined,
        )
    except HypervisorError:
        if new and not defined_now:
            await discard_workload(ctx, plan)  # a failed first definition leaves nothing
        raise
    finally:
        ctx.reserving.pop(plan.uuid, None)
    if not synced.admitted or synced.defined is None or synced.info is None:
        return  # refused: `_admit` wrote why
    _report_sync(ctx, body, plan, synced, logger)
    restart_needed = synced.defined.restart_needed
    conditions = _restart_required(ctx, body, conditions, restart_needed, generation)
    final = runtime_status(synced.info, ctx, conditions, generation)
    written = {**out, **final}
    ctx.written[plan.uuid] = Written(
        tuple(final["conditions"]), final["phase"], generation, written
    )
    patch["status"].update(written)


def _invalid_spec(
    ctx: AgentContext,
    body: Body,
    patch: MutableMapping[str, Any],
    conditions: Conditions,
    out: dict[str, Any],
    error: SpecError,
) -> kopf.PermanentError:
    """`Valid=False`, `Failed` with the validation message, a Warning when it is new."""
    generation = out["observedGeneration"]
    message = str(error)
    conditions = set_condition(conditions, "Valid", False, "InvalidSpec", message, generation)
    conditions = set_condition(conditions, "Ready", False, "InvalidSpec", message, generation)
    patch["status"].update(
        out, phase="Failed", reason="InvalidSpec", message=message, conditions=conditions
    )
    status = body.get("status") or {}
    if status.get("message") != message or status.get("reason") != "InvalidSpec":
        warn(ctx, body, reason="InvalidSpec", message=message)
    return kopf.PermanentError(f"invalid VirtualPod: {message}")


def _host_file_missing(
    ctx: AgentContext,
    body: Body,
    patch: MutableMapping[str, Any],
    conditions: Conditions,
    out: dict[str, Any],
    error: HostFileMissing,
) -> kopf.TemporaryError:
    """A `spec.boot` file not there yet: Pending with a Warning, no domain, retried."""
    generation = out["observedGeneration"]
    message = f"{error}; retrying in {HOST_FILE_RETRY_SECONDS:g}s"
    conditions = set_condition(conditions, "Valid", True, "Valid", "", generation)
    conditions = set_condition(conditions, "Ready", False, "HostFileMissing", message, generation)
    patch["status"].update(
        out, phase="Pending", reason="HostFileMissing", message=message, conditions=conditions
    )
    if (body.get("status") or {}).get("reason") != "HostFileMissing":
        warn(ctx, body, reason="HostFileMissing", message=str(error))
    return kopf.TemporaryError(str(error), delay=HOST_FILE_RETRY_SECONDS)


def _restart_required(
    ctx: AgentContext,
    body: Body,
    conditions: Conditions,
    restart_needed: tuple[str, ...],
    generation: int | None,
) -> Conditions:
    if not restart_needed:
        return set_condition(conditions, "RestartRequired", False, "UpToDate", "", generation)
    message = f"{' and '.join(restart_needed)} change(s) take effect at the VM's next start"
    if condition_status(conditions, "RestartRequired") != "True":
        info(ctx, body, reason="RestartRequired", message=message)
    return set_condition(
        conditions, "RestartRequired", True, "RestartRequired", message, generation
    )


async def _admit(
    ctx: AgentContext,
    body: Body,
    plan: VMPlan,
    conditions: Conditions,
    out: dict[str, Any],
    patch: MutableMapping[str, Any],
    status: Mapping[str, Any],
) -> bool:
    """Capacity check before a VM is first defined; on refusal, write why into status."""
    generation = out["observedGeneration"]
    short = too_large(plan.size, ctx.capacity)
    phase = "Failed"
    if not short:
        async with ctx.admission_lock:
            used = placed_requests(ctx, exclude=plan.uuid)
            short = insufficient(plan.requests, used, ctx.allocatable)
            if not short:
                ctx.reserving[plan.uuid] = plan.requests
                return True
        phase = "Pending"
    message = unschedulable_message(short)
    conditions = set_condition(conditions, "Ready", False, "Unschedulable", message, generation)
    patch["status"].update(
        out, phase=phase, reason="Unschedulable", message=message, conditions=conditions
    )
    if status.get("message") != message or status.get("phase") != phase:
        warn(ctx, body, reason="FailedScheduling", message=message)
    return False


def _report_sync(
    ctx: AgentContext, body: Body, plan: VMPlan, synced: SyncResult, logger: Logger
) -> None:
    """Events for what `sync` did (`Created` was said as it happened); a failed start is
    retried later."""
    if synced.tuned is not None:
        _report_tuning(ctx, body, plan, synced.tuned, logger)
    if synced.start_error is not None:
        error = synced.start_error
        warn(ctx, body, reason="Failed", message=f"cannot start {plan.domain_name}: {error}")
        raise kopf.TemporaryError(f"cannot start: {error}", delay=10) from error
    if synced.started is not None and synced.started.started:
        how = "restored from its saved memory" if synced.started.restored else "booted"
        console = f"console: virtualpod logs {plan.name} -n {plan.namespace}"
        info(ctx, body, reason="Started", message=f"{plan.domain_name} {how}; {console}")


def _report_tuning(
    ctx: AgentContext, body: Body, plan: VMPlan, tuned: LiveTune, logger: Logger
) -> None:
    """What was applied live (one Event), and why the rest was not."""
    applied: list[str] = []
    if isinstance(tuned.cputune, Unsupported):
        logger.info(f"cputune not applied live: {tuned.cputune}")
    elif isinstance(tuned.cputune, HypervisorError):
        logger.warning(f"cputune not applied live: {tuned.cputune}")
    else:
        applied.append(f"cpu shares {plan.cputune.shares}, quota {plan.cputune.quota_us}")
    if isinstance(tuned.memtune, HardLimitBelowUsage):
        warn(ctx, body, reason="Failed", message=f"memory limit not applied: {tuned.memtune}")
    elif isinstance(tuned.memtune, HypervisorError):
        warn(ctx, body, reason="Failed", message=f"memtune not applied: {tuned.memtune}")
    else:
        applied.append(
            f"memory hard_limit {_maybe(plan.memtune.hard_limit_bytes)}, "
            f"soft_limit {_maybe(plan.memtune.soft_limit_bytes)}"
        )
    if isinstance(tuned.balloon, HypervisorError):
        logger.warning(f"balloon not applied: {tuned.balloon}")
    elif tuned.balloon is not None and tuned.balloon_bytes is not None:
        applied.append(f"balloon {format_bytes(tuned.balloon_bytes)}")
    if applied:
        info(ctx, body, reason="Tuned", message="applied live: " + "; ".join(applied))


def _maybe(value: int | None) -> str:
    return "unlimited" if value is None else format_bytes(value)

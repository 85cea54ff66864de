"""The Kopf handlers: the only module that registers kopf handlers. Thin on purpose.

What a VirtualPod becomes is decided by the core (`plan_virtualpod`); how libvirt is
driven is `hypervisor`'s. Here: when to do it, and how to tell the user (status,
conditions, Events).

* **Keyed by uid.** The domain UUID is the object's uid, so a reconcile that finds the
  domain adopts it (operator restarted mid-create, or a resume): never a second VM.
* **One host per operator.** Objects with `spec.nodeName` set to another host are not
  touched (kopf `when=` filters); unset means "this host".
* **Admission like the scheduler.** A VM bigger than the host fails `Unschedulable`;
  one that does not fit next to the VMs already placed (summed requests vs allocatable)
  waits `Pending` and is retried by a timer until room appears.
* **Bad input never crashes the operator.** An invalid spec gets `Valid=False`, a
  Warning Event and a permanent error: no retries, other objects keep being served.
* **Libvirt is the truth for runtime state.** A task started at operator startup follows
  libvirt's lifecycle events and mirrors them into the owner's status within seconds.
* **Restart policy Always.** A VM that stops on its own or is stopped outside the operator
  (crash, guest shutdown, `virsh destroy`) is started again with kubelet's crash-loop
  back-off and counted in `status.vm.restartCount`; a VM suspended by the pressure
  monitor (or saved by an admin) is never restarted by this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from virtualpod.core.admission import (
    allocatable,
    insufficient,
    sum_requests,
    too_large,
    unschedulable_message,
)
from virtualpod.core.domain import domain_uuid
from virtualpod.core.plan import VMPlan, plan_virtualpod
from virtualpod.core.quantity import format_bytes
from virtualpod.core.restarts import crash_loop_over, restart_delay
from virtualpod.core.restarts import needs_restart as restart_policy_applies
from virtualpod.core.settings import Amount, Settings
from virtualpod.core.spec import API_GROUP, API_VERSION, KIND, SpecError, SuspendMode
from virtualpod.core.status import Conditions, condition_status, set_condition
from virtualpod.kube.api import (
    REPORTING_COMPONENT,
    KubeApi,
    ObjectRef,
    reporting_instance,
    shorten,
)
from virtualpod.libvirt.hypervisor import (
    DomainInfo,
    DomainNotFound,
    DomainState,
    HardLimitBelowUsage,
    Hypervisor,
    HypervisorError,
    Unsupported,
)

log = logging.getLogger(__name__)

PLURAL = "virtualpods"
FINALIZER = f"{API_GROUP}/finalizer"
#: How often a Pending VirtualPod retries admission.
PENDING_RETRY_SECONDS = 1.0

Body = Mapping[str, Any]


# ------------------------------------------------------------------ context (memo)


@dataclass
class Suspension:
    """Why the pressure monitor suspended a VM (kept for status until it is resumed)."""

    mode: SuspendMode
    reason: str
    message: str


@dataclass
class RestartRecord:
    """Restarts of one VM by this operator."""

    #: Restarts so far (status.vm.restartCount; carried over from status on startup).
    count: int = 0
    #: Consecutive restarts without a run of `restartBackoff.reset` in between.
    streak: int = 0
    #: Monotonic time of the last restart.
    started_at: float = 0.0
    task: asyncio.Task[None] | None = None


@dataclass
class OperatorContext:
    """Everything handlers share, loaded once at startup and carried in kopf's memo."""

    settings: Settings
    host_name: str
    api_url: str | None = None
    hypervisor: Hypervisor | None = None
    cgroup_version: int = 1
    capacity: Amount = field(default_factory=lambda: Amount(0, 0))
    #: Domain UUIDs of VMs placed on this host (what counts against allocatable).
    placed: set[str] = field(default_factory=set)
    #: Admitted but not yet defined (between the capacity check and defineXML).
    reserving: dict[str, Amount] = field(default_factory=dict)
    admission_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    deleting: set[str] = field(default_factory=set)
    suspensions: dict[str, Suspension] = field(default_factory=dict)
    #: The last status this process wrote per domain UUID: fresher than any watch event,
    #: so the lifecycle mirror never rewrites conditions from a stale snapshot.
    written: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: UUIDs a handler is reconciling right now; the mirror re-checks them a bit later.
    busy: set[str] = field(default_factory=set)
    #: kopf indexes, captured at startup (they are live views).
    by_uuid: Any = None
    priority_class_index: Any = None
    #: Events and status writes from outside handlers (connected at startup).
    api: KubeApi | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    #: Called once the hypervisor is open, e.g. to start the pressure monitor.
    on_ready: list[Any] = field(default_factory=list)
    #: The pressure monitor (`monitor.Monitor`) once it runs; its `signal` is its input.
    pressure: Any = None
    restarts: dict[str, RestartRecord] = field(default_factory=dict)

    @property
    def allocatable(self) -> Amount:
        return allocatable(self.capacity, self.settings.reserved)

    @property
    def hv(self) -> Hypervisor:
        if self.hypervisor is None:
            raise kopf.TemporaryError("libvirt is not connected yet", delay=1)
        return self.hypervisor

    def priority_classes(self) -> dict[str, int]:
        index = self.priority_class_index
        if index is None:
            return {}
        return {name: int(next(iter(values), 0)) for name, values in index.items()}

    def owner(self, uuid: str) -> dict[str, Any] | None:
        """The indexed summary of the VirtualPod owning a domain, if known."""
        if self.by_uuid is None or uuid not in self.by_uuid:
            return None
        return cast(dict[str, Any], next(iter(self.by_uuid[uuid]), None))

    def restart_record(self, uuid: str) -> RestartRecord:
        """This VM's restart record; its count starts from what status last said."""
        record = self.restarts.get(uuid)
        if record is None:
            owner = self.owner(uuid) or {}
            record = self.restarts[uuid] = RestartRecord(count=owner.get("restartCount") or 0)
        return record


def default_host_name() -> str:
    return socket.gethostname()


def make_memo(settings: Settings, *, api_url: str | None = None) -> kopf.Memo:
    """The memo to pass to kopf: one shared OperatorContext."""
    ctx = OperatorContext(
        settings=settings, host_name=settings.host_name or default_host_name(), api_url=api_url
    )
    return kopf.Memo(ctx=ctx)


def context(memo: Any) -> OperatorContext:
    return cast(OperatorContext, memo.ctx)


# ------------------------------------------------------------ status (pure helpers)


_STATE_NAMES = {
    DomainState.NOSTATE: "NoState",
    DomainState.RUNNING: "Running",
    DomainState.BLOCKED: "Running",
    DomainState.PAUSED: "Paused",
    DomainState.SHUTDOWN: "ShuttingDown",
    DomainState.SHUTOFF: "Shutoff",
    DomainState.CRASHED: "Crashed",
    DomainState.PMSUSPENDED: "PMSuspended",
}


@dataclass(frozen=True)
class Observed:
    """Phase, reason and message of a VirtualPod as its domain shows it."""

    phase: str
    reason: str
    message: str
    suspend_mode: str | None = None


def observe(info: DomainInfo, suspension: Suspension | None) -> Observed:
    """Map a libvirt domain state onto the VirtualPod phase."""
    if info.state in (DomainState.RUNNING, DomainState.BLOCKED):
        return Observed("Running", "Running", "the VM is running")
    if info.state is DomainState.PAUSED:
        if suspension is not None:
            # Pause mode, or a Save in progress (libvirt pauses the VM while it writes)
            mode = suspension.mode.value
            return Observed("Suspended", suspension.reason, suspension.message, mode)
        return Observed("Paused", "Paused", f"the VM is paused ({info.reason})")
    if info.state is DomainState.PMSUSPENDED:
        return Observed("Paused", "GuestSuspended", "the guest suspended itself")
    if info.state is DomainState.SHUTOFF and info.has_managed_save:
        if suspension is not None:
            return Observed("Suspended", suspension.reason, suspension.message, "Save")
        return Observed("Suspended", "Saved", "the VM's memory is saved to disk", "Save")
    if info.state is DomainState.CRASHED or info.reason in ("crashed", "failed"):
        return Observed("Failed", "Crashed", f"the VM crashed ({info.reason})")
    return Observed("Failed", "Stopped", f"the VM is shut off ({info.reason})")


def vm_status(
    info: DomainInfo, host: str, suspend_mode: str | None, restart_count: int = 0
) -> dict[str, Any]:
    return {
        "domainName": info.name,
        "uuid": info.uuid,
        "host": host,
        "vcpus": info.vcpus,
        "memory": format_bytes(info.max_memory_bytes),
        "state": _STATE_NAMES.get(info.state, str(info.state)),
        "suspendMode": suspend_mode,
        "restartCount": restart_count,
    }


def runtime_status(
    info: DomainInfo,
    ctx: OperatorContext,
    conditions: Iterable[Mapping[str, Any]],
    generation: int | None,
) -> dict[str, Any]:
    """The status block for an existing domain (phase, vm, Ready/Suspended)."""
    seen = observe(info, ctx.suspensions.get(info.uuid))
    conds = set_condition(
        conditions, "Ready", seen.phase == "Running", seen.reason, seen.message, generation
    )
    conds = set_condition(
        conds,
        "Suspended",
        seen.phase == "Suspended",
        seen.reason if seen.phase == "Suspended" else "NotSuspended",
        seen.message if seen.phase == "Suspended" else "",
        generation,
    )
    return {
        "phase": seen.phase,
        "reason": seen.reason,
        "message": seen.message,
        "vm": vm_status(
            info, ctx.host_name, seen.suspend_mode, ctx.restart_record(info.uuid).count
        ),
        "conditions": conds,
    }


def object_ref(namespace: str, name: str, uid: str | None) -> ObjectRef:
    """The VirtualPod an Event or a status write from outside a handler is about."""
    return ObjectRef(f"{API_GROUP}/{API_VERSION}", KIND, namespace, name, uid)


def _info(obj: Mapping[str, Any], *, reason: str, message: str) -> None:
    """A Normal Event on the object (kopf posts it in the background)."""
    kopf.info(cast(kopf.Body, obj), reason=reason, message=message)


def _warn(obj: Mapping[str, Any], *, reason: str, message: str) -> None:
    """A Warning Event on the object."""
    kopf.warn(cast(kopf.Body, obj), reason=reason, message=message)


# -------------------------------------------------------------------- admission


def placed_requests(ctx: OperatorContext, exclude: str) -> Amount:
    amounts: list[Amount] = list(ctx.reserving.values())
    for uuid in ctx.placed:
        if uuid == exclude:
            continue
        owner = ctx.owner(uuid)
        if owner is not None and owner.get("requests") is not None:
            cpu, memory = owner["requests"]
            amounts.append(Amount(cpu, memory))
    return sum_requests(amounts)


# -------------------------------------------------------------------- reconcile


async def _lookup(hv: Hypervisor, uuid: str) -> DomainInfo | None:
    try:
        return await hv.lookup(uuid)
    except DomainNotFound:
        return None


async def reconcile(
    ctx: OperatorContext,
    body: Body,
    patch: MutableMapping[str, Any],
    logger: logging.Logger | logging.LoggerAdapter[Any],
    retry: int = 0,
) -> None:
    """Make the domain match the object; idempotent, keyed by the object's uid.

    What the object says wrong is a `PermanentError` (see `_reconcile`); anything else
    unexpected becomes `Ready=False`/`ReconcileError`, one Warning Event per distinct
    error, and Kopf's retry after a growing delay: never a silent traceback loop.
    """
    meta = body.get("metadata", {})
    uuid = domain_uuid(str(meta.get("namespace")), str(meta.get("name")), meta.get("uid"))
    ctx.busy.add(uuid)
    try:
        await _reconcile(ctx, body, patch, logger)
    except (kopf.PermanentError, kopf.TemporaryError):
        raise
    except Exception as error:
        message = shorten(f"{type(error).__name__}: {error}")
        logger.error(f"reconcile failed (attempt {retry + 1}): {message}", exc_info=retry == 0)
        _reconcile_failed(body, patch, message)
        raise kopf.TemporaryError(message, delay=reconcile_backoff(retry)) from error
    finally:
        ctx.busy.discard(uuid)


#: Seconds before the next attempt after an unexpected error, by attempt (last repeats).
RECONCILE_BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def reconcile_backoff(retry: int) -> float:
    return RECONCILE_BACKOFF_SECONDS[min(max(retry, 0), len(RECONCILE_BACKOFF_SECONDS) - 1)]


def _reconcile_failed(body: Body, patch: MutableMapping[str, Any], message: str) -> None:
    """Ready=False with the error's message; a Warning Event when the error is new."""
    meta = body.get("metadata", {})
    status = body.get("status") or {}
    conditions: Conditions = list(status.get("conditions") or [])
    known = next((c for c in conditions if c.get("type") == "Ready"), {})
    conditions = set_condition(
        conditions, "Ready", False, "ReconcileError", message, meta.get("generation")
    )
    written = patch.setdefault("status", {})
    written.clear()  # nothing half-done by the failed attempt goes out
    written.update(reason="ReconcileError", message=message, conditions=conditions)
    if known.get("reason") != "ReconcileError" or known.get("message") != message:
        _warn(body, reason="ReconcileError", message=message)


async def _reconcile(
    ctx: OperatorContext,
    body: Body,
    patch: MutableMapping[str, Any],
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    meta = body.get("metadata", {})
    generation = meta.get("generation")
    status = body.get("status") or {}
    conditions: Conditions = list(status.get("conditions") or [])
    out: dict[str, Any] = {"observedGeneration": generation}
    patch.setdefault("status", {})
    try:
        plan = plan_virtualpod(
            dict(body),
            ctx.settings,
            cgroup_version=ctx.cgroup_version,
            priority_classes=ctx.priority_classes(),
        )
    except SpecError as error:
        message = str(error)
        conditions = set_condition(conditions, "Valid", False, "InvalidSpec", message, generation)
        conditions = set_condition(conditions, "Ready", False, "InvalidSpec", message, generation)
        patch["status"].update(
            out, phase="Failed", reason="InvalidSpec", message=message, conditions=conditions
        )
        if status.get("message") != message or status.get("reason") != "InvalidSpec":
            _warn(body, reason="InvalidSpec", message=message)
        raise kopf.PermanentError(f"invalid VirtualPod: {message}") from error

    hv = ctx.hv
    conditions = set_condition(conditions, "Valid", True, "Valid", "", generation)
    out["qosClass"] = plan.qos_class.value
    info = await _lookup(hv, plan.uuid)
    restart_needed: tuple[str, ...] = ()
    if info is None:
        admitted = await _admit(ctx, body, plan, conditions, out, patch, status)
        if not admitted:
            return
        try:
            defined = await hv.ensure_defined(plan.domain_xml)
            ctx.placed.add(plan.uuid)
        finally:
            ctx.reserving.pop(plan.uuid, None)
        if defined.created:
            _info(body, reason="Created", message=f"defined domain {plan.domain_name}")
        await _start(ctx, body, plan)
    else:
        ctx.placed.add(plan.uuid)
        conditions = set_condition(
            conditions, "Scheduled", True, "Scheduled", f"placed on {ctx.host_name}", generation
        )
        defined = await hv.ensure_defined(plan.domain_xml)
        restart_needed = defined.restart_needed
        if info.active and defined.changed:
            await _tune_live(ctx, body, plan, info, logger)
        if not info.active and not info.has_managed_save and plan.uuid not in ctx.suspensions:
            await _start(ctx, body, plan)
    conditions = set_condition(
        conditions, "Scheduled", True, "Scheduled", f"placed on {ctx.host_name}", generation
    )
    if restart_needed:
        what = " and ".join(restart_needed)
        message = f"{what} change(s) take effect at the VM's next start"
        if condition_status(conditions, "RestartRequired") != "True":
            _info(body, reason="RestartRequired", message=message)
        conditions = set_condition(
            conditions, "RestartRequired", True, "RestartRequired", message, generation
        )
    else:
        conditions = set_condition(conditions, "RestartRequired", False, "UpToDate", "", generation)
    info = await hv.lookup(plan.uuid)
    final = runtime_status(info, ctx, conditions, generation)
    ctx.written[plan.uuid] = {
        "conditions": final["conditions"],
        "phase": final["phase"],
        "observedGeneration": generation,
    }
    patch["status"].update(out, **final)


async def _admit(
    ctx: OperatorContext,
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
    conditions = set_condition(conditions, "Scheduled", False, "Unschedulable", message, generation)
    conditions = set_condition(conditions, "Ready", False, "Unschedulable", message, generation)
    patch["status"].update(
        out, phase=phase, reason="Unschedulable", message=message, conditions=conditions
    )
    if status.get("message") != message or status.get("phase") != phase:
        _warn(body, reason="FailedScheduling", message=message)
    return False


async def _start(ctx: OperatorContext, body: Body, plan: VMPlan) -> None:
    try:
        result = await ctx.hv.start(plan.uuid)
    except HypervisorError as error:
        _warn(body, reason="Failed", message=f"cannot start {plan.domain_name}: {error}")
        raise kopf.TemporaryError(f"cannot start: {error}", delay=10) from error
    if result.started:
        how = "restored from its saved memory" if result.restored else "booted"
        _info(body, reason="Started", message=f"{plan.domain_name} {how}")
        with contextlib.suppress(HypervisorError):
            await ctx.hv.set_oom_score_adj(plan.uuid, plan.oom_score_adj(ctx.capacity.memory_bytes))


async def _tune_live(
    ctx: OperatorContext,
    body: Body,
    plan: VMPlan,
    info: DomainInfo,
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    """Apply what libvirt can change on a running VM: shares, quota, memtune, balloon."""
    hv = ctx.hv
    applied: list[str] = []
    try:
        await hv.set_cputune(plan.uuid, plan.cputune)
        applied.append(f"cpu shares {plan.cputune.shares}, quota {plan.cputune.quota_us}")
    except Unsupported as error:
        logger.info(f"cputune not applied live: {error}")
    except HypervisorError as error:
        logger.warning(f"cputune not applied live: {error}")
    try:
        await hv.set_memtune(plan.uuid, plan.memtune)
        applied.append(
            f"memory hard_limit {_maybe(plan.memtune.hard_limit_bytes)}, "
            f"soft_limit {_maybe(plan.memtune.soft_limit_bytes)}"
        )
    except HardLimitBelowUsage as error:
        _warn(body, reason="Failed", message=f"memory limit not applied: {error}")
    except HypervisorError as error:
        _warn(body, reason="Failed", message=f"memtune not applied: {error}")
    target = plan.size.memory_bytes
    if target <= info.max_memory_bytes and target != info.memory_bytes:
        try:
            await hv.set_balloon(plan.uuid, target)
            applied.append(f"balloon {format_bytes(target)}")
        except HypervisorError as error:
            logger.warning(f"balloon not applied: {error}")
    if applied:
        _info(body, reason="Tuned", message="applied live: " + "; ".join(applied))


def _maybe(value: int | None) -> str:
    return "unlimited" if value is None else format_bytes(value)


# ------------------------------------------------------------ lifecycle mirroring


async def patch_status(ctx: OperatorContext, ref: ObjectRef, status: Mapping[str, Any]) -> None:
    """Patch an object's status from outside a handler (lifecycle events, pressure)."""
    if ctx.api is not None:
        await ctx.api.patch_status(ref, PLURAL, status)


async def refresh_status(ctx: OperatorContext, uuid: str, *, announce: bool = True) -> None:
    """Re-read one domain and write its runtime state into its owner's status."""
    owner = ctx.owner(uuid)
    if owner is None or uuid in ctx.deleting or owner.get("deleting"):
        return
    ref = object_ref(owner["namespace"], owner["name"], owner["uid"])
    last = ctx.written.get(uuid) or owner
    conditions, before = last["conditions"], last.get("phase")
    info = await _lookup(ctx.hv, uuid)
    if info is None:
        if uuid not in ctx.placed:
            return  # never placed (Pending, Failed): nothing to mirror
        message = "the domain was removed outside the operator"
        conditions = set_condition(
            conditions, "Ready", False, "DomainMissing", message, owner["generation"]
        )
        status: dict[str, Any] = {
            "phase": "Failed",
            "reason": "DomainMissing",
            "message": message,
            "conditions": conditions,
            "vm": {"state": "Missing"},
        }
        ctx.placed.discard(uuid)
        if announce and before != "Failed":
            await post(ctx, ref, "Warning", "Failed", message)
    else:
        status = runtime_status(info, ctx, conditions, owner["generation"])
        status["qosClass"] = owner.get("qosClass")
        if condition_status(conditions, "RestartRequired") == "True" and _runs_new_size(
            info, owner
        ):
            status["conditions"] = set_condition(
                status["conditions"],
                "RestartRequired",
                False,
                "Restarted",
                f"the VM was restarted with {info.vcpus} vCPU(s) and "
                f"{format_bytes(info.max_memory_bytes)} memory",
                owner["generation"],
            )
        delay = None
        if owner.get("here") and needs_restart(info, ctx, uuid):
            delay = schedule_restart(ctx, uuid, info.reason)
        if delay:
            status["message"] += f"; restarting in {delay:g}s (back-off)"
        if announce and status["phase"] != before:
            await _announce(ctx, ref, before, status)
        if delay and announce:
            await post(
                ctx,
                ref,
                "Warning",
                "BackOff",
                f"back-off restarting the VM: next start in {delay:g}s",
            )
    # The generation the last reconcile handled: also in a mirror write that lands first.
    observed = last.get("observedGeneration")
    if observed is not None:
        status["observedGeneration"] = observed
    ctx.written[uuid] = {
        "conditions": status["conditions"],
        "phase": status["phase"],
        "observedGeneration": observed,
    }
    await patch_status(ctx, ref, status)


def _runs_new_size(info: DomainInfo, owner: Mapping[str, Any]) -> bool:
    """The VM runs with the size its spec asks for (a pending restart took place)."""
    size = owner.get("size")
    return info.active and size is not None and (info.vcpus, info.max_memory_bytes) == tuple(size)


# ------------------------------------------------------------- restart policy


def needs_restart(info: DomainInfo, ctx: OperatorContext, uuid: str) -> bool:
    """Shut off or crashed with nothing to restore (`core.restarts.needs_restart`)."""
    return restart_policy_applies(
        stopped=info.state in (DomainState.SHUTOFF, DomainState.CRASHED),
        has_managed_save=info.has_managed_save,
        placed=uuid in ctx.placed,
        suspended=uuid in ctx.suspensions,
        deleting=uuid in ctx.deleting,
    )


def schedule_restart(ctx: OperatorContext, uuid: str, why: str) -> float:
    """Start the VM again after its back-off; returns the delay (0: at once)."""
    record = ctx.restart_record(uuid)
    if record.task is not None and not record.task.done():
        return 0.0  # already scheduled (several events for one stop)
    backoff = ctx.settings.restart_backoff
    if record.started_at and crash_loop_over(backoff, time.monotonic() - record.started_at):
        record.streak = 0
    delay = restart_delay(backoff, record.streak)
    record.task = asyncio.create_task(_restart(ctx, uuid, delay, why), name=f"restart-{uuid}")
    return delay


async def _restart(ctx: OperatorContext, uuid: str, delay: float, why: str) -> None:
    if delay:
        await asyncio.sleep(delay)
    owner = ctx.owner(uuid)
    if owner is None or owner.get("deleting") or not owner.get("here"):
        return
    record = ctx.restart_record(uuid)
    ref = object_ref(owner["namespace"], owner["name"], owner["uid"])
    ctx.busy.add(uuid)  # the mirror waits: this task writes the status of its own start
    try:
        info = await _lookup(ctx.hv, uuid)
        if info is None or not needs_restart(info, ctx, uuid):
            return  # started, saved, suspended or removed in the meantime
        try:
            result = await ctx.hv.start(uuid)
        except HypervisorError as error:
            record.streak += 1
            await post(ctx, ref, "Warning", "Failed", f"cannot restart the VM: {error}")
            record.task = None
            schedule_restart(ctx, uuid, why)
            return
        if result.started:
            record.count += 1
            record.streak += 1
            record.started_at = time.monotonic()
            oom = owner.get("oomScoreAdj")
            if oom is not None:
                with contextlib.suppress(HypervisorError):
                    await ctx.hv.set_oom_score_adj(uuid, oom)
            await post(
                ctx,
                ref,
                "Normal",
                "Restarted",
                f"{info.name} started again after it stopped ({why}); restart {record.count}",
            )
        await refresh_status(ctx, uuid, announce=False)
    except asyncio.CancelledError:
        raise
    except Exception as error:  # a restart must never take the operator down
        log.warning(f"cannot restart domain {uuid}: {error}")
    finally:
        ctx.busy.discard(uuid)


async def _announce(
    ctx: OperatorContext, ref: ObjectRef, before: str | None, status: Mapping[str, Any]
) -> None:
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


async def post(ctx: OperatorContext, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
    """Post an Event from outside a handler (kopf.info/warn only work inside handlers)."""
    if ctx.api is not None:
        await ctx.api.post_event(ref, type_, reason, message)


MIRROR_RECHECK_SECONDS = 1.0


async def mirror_lifecycle(ctx: OperatorContext) -> None:
    """Follow libvirt lifecycle events; mirror each into the owning VirtualPod's status.

    A domain a handler is busy with is re-checked a moment later instead: the handler
    writes the state its own actions caused, and the re-check catches anything else.
    """
    hv = ctx.hv
    loop = asyncio.get_running_loop()
    todo: asyncio.Queue[str | None] = asyncio.Queue()

    async def pump() -> None:
        async with hv.subscribe() as events:
            async for event in events:
                if event.uuid is None:  # reconnected: events may be lost, resync all
                    todo.put_nowait(None)
                elif event.kind.value != "defined":
                    todo.put_nowait(event.uuid)

    pumping = asyncio.create_task(pump(), name="libvirt-events")
    try:
        while True:
            uuid = await todo.get()
            uuids = list(ctx.placed) if uuid is None else [uuid]
            for one in uuids:
                if one in ctx.busy:
                    loop.call_later(MIRROR_RECHECK_SECONDS, todo.put_nowait, one)
                    continue
                try:
                    await refresh_status(ctx, one, announce=uuid is not None)
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    log.warning(f"cannot mirror the state of domain {one}: {error}")
    finally:
        pumping.cancel()


class StatusReporter:
    """What the pressure monitor calls when it acts: status + Events on the owner."""

    def __init__(self, ctx: OperatorContext) -> None:
        self.ctx = ctx

    def _ref(self, uuid: str) -> ObjectRef | None:
        owner = self.ctx.owner(uuid)
        if owner is None:
            return None
        return object_ref(owner["namespace"], owner["name"], owner["uid"])

    async def suspended(self, uuid: str, mode: SuspendMode, reason: str, message: str) -> None:
        self.ctx.suspensions[uuid] = Suspension(mode, reason, message)
        ref = self._ref(uuid)
        if ref is not None:
            await post(self.ctx, ref, "Normal", "Suspended", f"{reason}: {message}")
            await refresh_status(self.ctx, uuid, announce=False)

    async def resumed(self, uuid: str, message: str = "") -> None:
        self.ctx.suspensions.pop(uuid, None)
        ref = self._ref(uuid)
        if ref is not None:
            await post(self.ctx, ref, "Normal", "Resumed", message or "resumed")
            await refresh_status(self.ctx, uuid, announce=False)

    async def failed(self, uuid: str, message: str) -> None:
        ref = self._ref(uuid)
        if ref is not None:
            await post(self.ctx, ref, "Warning", "Failed", message)

    async def host_status(self, **fields: Any) -> None:
        """Host-level pressure state: logged (there is no per-host object to patch yet)."""
        log.info("host pressure status: %s", fields)


class PressureReporter:
    """`monitor.Reporter`: the pressure monitor's actions as status and Events."""

    def __init__(self, ctx: OperatorContext) -> None:
        self.ctx = ctx
        self.status = StatusReporter(ctx)

    async def vm_suspending(self, vm: Any, reason: str, message: str) -> None:
        self.ctx.suspensions[vm.key] = Suspension(vm.suspend_mode, reason, message)

    async def vm_suspended(self, vm: Any, reason: str, message: str) -> None:
        await self.status.suspended(vm.key, vm.suspend_mode, reason, message)

    async def vm_resumed(self, vm: Any, message: str) -> None:
        await self.status.resumed(vm.key, message)

    async def vm_ballooned(self, vm: Any, target_bytes: int, message: str) -> None:
        owner = self.ctx.owner(vm.key)
        if owner is not None:
            ref = object_ref(owner["namespace"], owner["name"], owner["uid"])
            await post(self.ctx, ref, "Normal", "Ballooned", message)

    async def action_failed(self, vm: Any, action: str, message: str) -> None:
        await self.status.failed(vm.key, f"{action} failed: {message}")

    async def pressure_changed(self, status: Any) -> None:
        log.info(f"host {self.ctx.host_name} pressure: {status}")

    async def guaranteed_only_pressure(self, message: str) -> None:
        log.warning(f"host {self.ctx.host_name}: {message}")


# ------------------------------------------------------------------- kopf wiring


def assigned_here(body: Mapping[str, Any], memo: Any, **_: Any) -> bool:
    """`spec.nodeName` unset means this host; set to another host means not ours.

    Read from the raw body: kopf's `spec` view raises on a spec that is not an object,
    and such an object is ours to report as invalid, as is a nodeName that is no string.
    """
    spec = body.get("spec")
    node = spec.get("nodeName") if isinstance(spec, Mapping) else None
    return not isinstance(node, str) or not node or node == context(memo).host_name


def is_pending(body: Mapping[str, Any], memo: Any, **_: Any) -> bool:
    status = body.get("status")
    phase = status.get("phase") if isinstance(status, Mapping) else None
    return assigned_here(body, memo) and phase == "Pending"


def configure(settings: kopf.OperatorSettings, host_name: str) -> None:
    """Kopf's own features: annotations for progress, a named finalizer, Event posting.

    Handler Events say who acted, like the ones posted outside handlers: component
    `virtualpod`, this host as the instance (`kubectl describe`: `From: virtualpod, HOST`).
    """
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration"
    )
    settings.posting.enabled = True
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = REPORTING_COMPONENT
    settings.posting.reporting_instance = reporting_instance(host_name)
    settings.posting.event_name_prefix = f"{REPORTING_COMPONENT}-"
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.error_backoffs = [0.5, 1, 2, 5]


@kopf.on.login()
async def login(memo: Any, logger: Any, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """The emulator's URL when running against it; else service account or kubeconfig."""
    ctx = context(memo)
    if ctx.api_url:
        return kopf.ConnectionInfo(server=ctx.api_url, insecure=True, scheme="Bearer")
    return kopf.login_with_service_account(logger=logger, **kwargs) or kopf.login_with_kubeconfig(
        logger=logger, **kwargs
    )


@kopf.index(API_GROUP, API_VERSION, PLURAL)
def virtualpods_by_uuid(
    body: kopf.Body, meta: kopf.Meta, spec: kopf.Spec, status: kopf.Status, memo: Any, **_: Any
) -> dict[str, dict[str, Any]] | None:
    """Each VirtualPod by domain UUID: owner ref, requests, size and status snapshot."""
    ctx = context(memo)
    try:
        plan = plan_virtualpod(
            dict(body), ctx.settings, cgroup_version=ctx.cgroup_version, priority_classes={}
        )
    except SpecError:
        return None
    conditions = list(status.get("conditions") or [])
    return {
        plan.uuid: {
            "namespace": meta.get("namespace"),
            "name": meta.get("name"),
            "uid": meta.get("uid"),
            "generation": meta.get("generation"),
            "deleting": bool(meta.get("deletionTimestamp")),
            "here": assigned_here(body, memo),
            "requests": (plan.requests.cpu_millis, plan.requests.memory_bytes),
            "size": (plan.size.vcpus, plan.size.memory_bytes),
            "phase": status.get("phase"),
            "conditions": conditions,
            "restartRequired": condition_status(conditions, "RestartRequired") == "True",
            "restartCount": (status.get("vm") or {}).get("restartCount") or 0,
            "observedGeneration": status.get("observedGeneration"),
            "qosClass": plan.qos_class.value,
            "oomScoreAdj": plan.oom_score_adj(ctx.capacity.memory_bytes),
        }
    }


@kopf.index("scheduling.k8s.io", "v1", "priorityclasses")
def priority_class_values(name: str, body: kopf.Body, **_: Any) -> dict[str, int]:
    value = body.get("value", 0)
    return {name: int(value) if isinstance(value, int) else 0}


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, logger: Any, **kwargs: Any) -> None:
    """Configure kopf, open libvirt, learn the host's capacity and our domains."""
    ctx = context(memo)
    configure(settings, ctx.host_name)
    ctx.api = await KubeApi.connect(ctx.api_url, ctx.host_name)
    ctx.by_uuid = kwargs["virtualpods_by_uuid"]
    ctx.priority_class_index = kwargs["priority_class_values"]
    wanted = ctx.settings.cgroup_version
    hv = Hypervisor(
        ctx.settings.libvirt_uri, cgroup_version=None if wanted == "auto" else int(wanted)
    )
    await hv.connect()
    ctx.hypervisor = hv
    ctx.cgroup_version = hv.cgroup_version
    ctx.capacity = await host_capacity(hv)
    ctx.placed = {info.uuid for info in await hv.list_domains()}
    ctx.tasks.append(asyncio.create_task(mirror_lifecycle(ctx), name="libvirt-lifecycle"))
    for hook in ctx.on_ready:
        task = hook(ctx)
        if asyncio.iscoroutine(task):
            ctx.tasks.append(asyncio.create_task(task))
    logger.info(
        f"serving host {ctx.host_name} via {hv.uri}: capacity {ctx.capacity.cpu_millis}m cpu, "
        f"{format_bytes(ctx.capacity.memory_bytes)} memory; {len(ctx.placed)} domain(s) found"
    )


async def host_capacity(hv: Hypervisor) -> Amount:
    """Host cpus and memory as libvirt sees them."""
    capacity = await hv.host_capacity()
    return Amount(capacity.cpus * 1000, capacity.memory_bytes)


@kopf.on.cleanup()
async def cleanup(memo: Any, **_: Any) -> None:
    ctx = context(memo)
    for record in ctx.restarts.values():
        if record.task is not None:
            record.task.cancel()
    for task in ctx.tasks:
        task.cancel()
    for task in ctx.tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    ctx.tasks.clear()
    if ctx.hypervisor is not None:
        await ctx.hypervisor.close()
        ctx.hypervisor = None
    if ctx.api is not None:
        ctx.api.close()
        ctx.api = None


@kopf.on.create(API_GROUP, API_VERSION, PLURAL, when=assigned_here)
@kopf.on.update(API_GROUP, API_VERSION, PLURAL, when=assigned_here, field="spec")
@kopf.on.resume(API_GROUP, API_VERSION, PLURAL, when=assigned_here)
async def reconcile_virtualpod(
    body: kopf.Body, patch: kopf.Patch, memo: Any, logger: Any, retry: int, **_: Any
) -> None:
    await reconcile(context(memo), body, patch, logger, retry)


@kopf.timer(API_GROUP, API_VERSION, PLURAL, interval=PENDING_RETRY_SECONDS, when=is_pending)
async def retry_pending(
    body: kopf.Body, patch: kopf.Patch, memo: Any, logger: Any, **kwargs: Any
) -> None:
    """A Pending VirtualPod starts as soon as room appears on the host."""
    await reconcile(context(memo), body, patch, logger, kwargs.get("retry", 0))


@kopf.on.delete(API_GROUP, API_VERSION, PLURAL, when=assigned_here)
async def delete_virtualpod(body: kopf.Body, memo: Any, logger: Any, **_: Any) -> None:
    """Destroy, undefine and drop the managed-save image; then kopf removes the finalizer."""
    ctx = context(memo)
    meta = body.get("metadata", {})
    # the same UUID the plan gives, without parsing a spec that may be invalid
    uuid = domain_uuid(str(meta.get("namespace")), str(meta.get("name")), meta.get("uid"))
    ctx.deleting.add(uuid)
    try:
        removed = await ctx.hv.undefine(uuid)
    except HypervisorError as error:
        ctx.deleting.discard(uuid)
        _warn(body, reason="Failed", message=f"cannot remove the VM: {error}")
        raise kopf.TemporaryError(f"cannot undefine: {error}", delay=5) from error
    ctx.placed.discard(uuid)
    ctx.suspensions.pop(uuid, None)
    ctx.reserving.pop(uuid, None)
    record = ctx.restarts.pop(uuid, None)
    if record is not None and record.task is not None:
        record.task.cancel()
    if removed:
        _info(body, reason="Deleted", message="VM destroyed and undefined, save image removed")

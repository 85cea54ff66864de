"""The controller role: one companion Pod per VirtualPod, and the binding it earns.

Level-triggered: Kopf's watch events on VirtualPods, companion Pods and the agents'
host Leases only record the newest object and `kick` its VirtualPod; `sync` then
compares what is with what should be and makes one step towards it. Syncs of one
VirtualPod never overlap and coalesce while one runs.

* **The API server decides.** The Pod goes through the real admission chain: a
  ResourceQuota refusal (403) becomes `Scheduled=False` / `QuotaExceeded` with the API
  server's message and a Warning Event, retried every `QUOTA_RETRY_SECONDS` until the
  quota frees; the scheduler's `PodScheduled=False` message becomes `Unschedulable`.
* **Binding in order.** Once the Pod is bound: status (`podName`, `nodeName`, `admitted`
  = the Pod's resources as admitted, `Scheduled=True`) first, then the label
  `virtualpod.dev/node` (with a digest of `admitted` as a label: Kopf handlers
  react to metadata, not status) and the agent's finalizer, so an agent never sees a
  labelled VirtualPod without `status.admitted` or its finalizer, and sees every new
  one. Both writes carry the object's resourceVersion, so the agent's conditions and
  other finalizers are never dropped: a stale view gets 409 and the sync waits for the
  watch to bring the newer object (a 409 means there is one), which syncs again. The
  answer to a write stays the cached object until the watch catches up with it
  (`newest.NewestObjects`): no sync from an older watch event, no needless 409.
* **Sticky.** A deleted or evicted Pod is created again bound to `status.nodeName` (the
  VM is untouched; an Event says so). Changed resources replace the Pod on its node.
* **Usage-aware.** New Pods get a preferred node affinity from the agents' Leases.
* No finalizer of its own: deleting a VirtualPod deletes its Pod (owner references
  would, too); the agent's finalizer holds a bound VirtualPod until its VM is gone.
* **Peering.** The replicas share a ClusterKopfPeering, which the startup creates when
  missing (the manifests ship only Kopf's CRD: one `kubectl apply -k`). Only watch
  events are paused by Kopf peering; a retry already scheduled then finds the same
  state and makes the same (idempotent) writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from virtualpod.core.binding import FINALIZER, NODE_LABEL
from virtualpod.core.companion import (
    ADMITTED_LABEL,
    VIRTUALPOD_LABEL,
    PodState,
    admitted_digest,
    admitted_resources,
    companion_pod,
    is_quota_refusal,
    measured_headroom,
    mirrors,
    owned_by,
    placement,
    preferred_terms,
    resources_annotation,
    scheduled_message,
)
from virtualpod.core.settings import Settings
from virtualpod.core.spec import API_GROUP, API_VERSION, KIND, SpecError, parse_virtualpod
from virtualpod.core.status import condition_status, set_condition
from virtualpod.kube.api import ObjectRef
from virtualpod.kube.newest import NewestObjects
from virtualpod.kube.poster import EventPoster
from virtualpod.kube.rest import RestClient, RestError

log = logging.getLogger(__name__)

PLURAL = "virtualpods"
#: How often a Pod the ResourceQuota refused is tried again.
QUOTA_RETRY_SECONDS = 2.0
#: How soon a sync that failed otherwise (API error, name taken) is tried again.
ERROR_RETRY_SECONDS = 5.0
#: A companion Pod is created again on its node at most this often: a node that keeps
#: refusing it (a kubelet's OutOfmemory, the PodGC) gets no tight loop of Pods and Events.
RECREATE_INTERVAL_SECONDS = 10.0
#: How soon the controller's startup tries again to create its peering object while
#: Kopf's peering CRD is not served yet (applied in the same `kubectl apply -k`).
PEERING_RETRY_SECONDS = 2.0
CLUSTER_PEERINGS = "/apis/kopf.dev/v1/clusterkopfpeerings"
#: A new Pod the scheduler has neither bound nor refused within this long gets
#: `Scheduled=False` / `Scheduling` on its VirtualPod. kube-scheduler usually binds in
#: milliseconds: writing that condition for every new Pod would be one more status write
#: (and watch event for every watcher) per VirtualPod, for a state nobody gets to see.
SCHEDULING_GRACE_SECONDS = 2.0

Key = tuple[str, str]
JSON = dict[str, Any]


@dataclass(frozen=True)
class SpecFacts:
    """What the controller reads off a VirtualPod's spec."""

    #: Why the spec is invalid; "" when it is valid.
    error: str
    #: The containers' resources the companion Pod mirrors (`resources_annotation`);
    #: "" for an invalid spec (no Pod is made from it).
    resources: str


@dataclass(frozen=True)
class Admission:
    """A bound Pod's resources as the API server admitted them (`status.admitted`)."""

    resources: JSON
    #: The digest the VirtualPod's label carries (`admitted_digest`).
    digest: str


@dataclass
class ControllerContext:
    """The controller's state, in kopf's memo as `memo.controller`."""

    settings: Settings
    #: Role `all` (one host): Pods are created already bound to this node.
    bind_to: str | None = None
    #: Who posts the Events (`reportingInstance`).
    instance: str = "controller"
    rest: RestClient | None = None
    #: The controller's Events, posted over `rest`.
    events: EventPoster | None = None
    #: The newest VirtualPods known, from the watch and from the controller's writes.
    vpods: NewestObjects[Key] = field(default_factory=NewestObjects)
    pods: dict[Key, JSON] = field(default_factory=dict)
    leases: dict[str, JSON] = field(default_factory=dict)
    running: dict[Key, asyncio.Task[None]] = field(default_factory=dict)
    again: set[Key] = field(default_factory=set)
    retries: dict[Key, asyncio.TimerHandle] = field(default_factory=dict)
    #: When each VirtualPod's Pod was last created again on its node (monotonic).
    recreated: dict[Key, float] = field(default_factory=dict)
    #: When this controller created each VirtualPod's Pod (monotonic).
    created: dict[Key, float] = field(default_factory=dict)
    #: What each VirtualPod's spec says, by (uid, generation), and each bound Pod's
    #: admitted resources, by (uid, resourceVersion): a sync runs on every change of the
    #: object or its Pod; the spec and the Pod's resources change far less often.
    specs: dict[Key, tuple[tuple[object, object], SpecFacts]] = field(default_factory=dict)
    admissions: dict[Key, tuple[tuple[object, object], Admission]] = field(default_factory=dict)

    def spec_facts(self, vpod: JSON) -> SpecFacts:
        """Why the VirtualPod's spec is invalid ("" when valid) and the resources its Pod
        must mirror (read once per generation)."""
        meta = vpod["metadata"]
        version = (meta.get("uid"), meta.get("generation"))
        known = self.specs.get(_key(vpod))
        if known is not None and known[0] == version:
            return known[1]
        try:
            parse_virtualpod(vpod)
            error = ""
        except SpecError as invalid:
            error = str(invalid)
        facts = SpecFacts(error, "" if error else resources_annotation(vpod))
        self.specs[_key(vpod)] = (version, facts)
        return facts

    def admission(self, key: Key, pod: JSON) -> Admission:
        """The bound Pod's resources as admitted, and their digest (read once per version
        of the Pod)."""
        meta = pod["metadata"]
        version = (meta.get("uid"), meta.get("resourceVersion"))
        known = self.admissions.get(key)
        if known is not None and known[0] == version:
            return known[1]
        resources = admitted_resources(pod)
        admitted = Admission(resources, admitted_digest(resources))
        self.admissions[key] = (version, admitted)
        return admitted

    def forget(self, key: Key) -> None:
        """A VirtualPod is gone: nothing of it is kept."""
        self.vpods.forget(key)
        for kept in (self.recreated, self.created, self.specs, self.admissions):
            kept.pop(key, None)
        self.cancel_retry(key)

    def kick(self, key: Key) -> None:
        """Sync this VirtualPod soon; if a sync runs, once more after it."""
        if key in self.running:
            self.again.add(key)
            return
        self.running[key] = asyncio.create_task(self._run(key), name=f"sync {key[0]}/{key[1]}")

    async def _run(self, key: Key) -> None:
        try:
            while True:
                self.again.discard(key)
                try:
                    await sync(self, key)
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # a sync must never stop the controller
                    log.warning(f"cannot sync VirtualPod {key[0]}/{key[1]}: {error}")
                    self.retry(key, ERROR_RETRY_SECONDS)
                if key not in self.again:
                    break
        finally:
            self.running.pop(key, None)

    def retry(self, key: Key, delay: float) -> None:
        if key not in self.retries:
            loop = asyncio.get_running_loop()
            self.retries[key] = loop.call_later(delay, self._retry_now, key)

    def cancel_retry(self, key: Key) -> None:
        handle = self.retries.pop(key, None)
        if handle is not None:
            handle.cancel()

    def _retry_now(self, key: Key) -> None:
        self.retries.pop(key, None)
        self.kick(key)

    def api(self) -> RestClient:
        if self.rest is None:
            raise RuntimeError("the controller is not connected yet")
        return self.rest


async def ensure_peering(rest: RestClient, name: str) -> bool:
    """Create the ClusterKopfPeering its replicas share, unless it exists: Kopf's peering
    keeps a replica paused until the object is there. False while the CRD is not served
    yet (it may be applied in the same `kubectl apply -k` as the controller)."""
    body = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}
    try:
        await rest.create(CLUSTER_PEERINGS, body)
    except RestError as error:
        if error.code == 404:
            return False
        if error.code != 409:  # 409: it exists
            raise
    return True


def controller(memo: Any) -> ControllerContext:
    return cast(ControllerContext, memo.controller)


def add_to_memo(memo: kopf.Memo, settings: Settings, *, bind_to: str | None = None) -> kopf.Memo:
    """Put the controller's context into a memo (which carries `api_url` for the login)."""
    memo.controller = ControllerContext(
        settings, bind_to=bind_to, instance=bind_to or settings.peering
    )
    return memo


async def login(memo: Any, logger: Any, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """The emulator's URL (`memo.api_url`) when running against it; else service account
    or kubeconfig."""
    api_url: str | None = getattr(memo, "api_url", None)
    if api_url:
        return kopf.ConnectionInfo(server=api_url, insecure=True, scheme="Bearer")
    return kopf.login_with_service_account(logger=logger, **kwargs) or kopf.login_with_kubeconfig(
        logger=logger, **kwargs
    )


# ------------------------------------------------------------------------ paths


def vpod_path(namespace: str, name: str, sub: str = "") -> str:
    path = f"/apis/{API_GROUP}/{API_VERSION}/namespaces/{namespace}/{PLURAL}/{name}"
    return f"{path}/{sub}" if sub else path


def pod_path(namespace: str, name: str = "") -> str:
    path = f"/api/v1/namespaces/{namespace}/pods"
    return f"{path}/{name}" if name else path


# ------------------------------------------------------------------------- sync


async def sync(ctx: ControllerContext, key: Key) -> None:
    """One step towards: a Pod mirrors the VirtualPod, and the binding is recorded."""
    vpod = ctx.vpods.get(key)
    pod = ctx.pods.get(key)
    if vpod is None or vpod["metadata"].get("deletionTimestamp"):
        if pod is not None and vpod is not None and owned_by(pod, vpod["metadata"].get("uid")):
            await ctx.api().delete(pod_path(*key), pod["metadata"].get("uid"))
        return
    uid = vpod["metadata"].get("uid")
    spec = vpod.get("spec")
    wanted = spec.get("nodeName") if isinstance(spec, Mapping) else None
    if ctx.bind_to and isinstance(wanted, str) and wanted and wanted != ctx.bind_to:
        return  # one host (role all): a VirtualPod for another node is not ours at all
    facts = ctx.spec_facts(vpod)
    if facts.error:
        await write_scheduled(
            ctx, vpod, False, "InvalidSpec", facts.error, event="InvalidSpec", phase="Failed"
        )
        return
    if pod is not None and not owned_by(pod, uid):
        message = f"a Pod named {key[1]} exists and does not belong to this VirtualPod"
        await write_scheduled(ctx, vpod, False, "PodExists", message)
        ctx.retry(key, ERROR_RETRY_SECONDS)
        return
    seen = placement(pod)
    if seen.state is PodState.GONE or (pod is not None and not mirrors(pod, facts.resources)):
        pod = await replace_pod(ctx, key, vpod, pod)
        if pod is None:
            return
        seen = placement(pod)
    if seen.state is PodState.BOUND and pod is not None and seen.node is not None:
        ctx.created.pop(key, None)
        ctx.cancel_retry(key)
        await record_binding(ctx, vpod, pod, seen.node)
    elif seen.state is PodState.UNSCHEDULABLE:
        await write_scheduled(
            ctx, vpod, False, "Unschedulable", seen.message, event="FailedScheduling"
        )
    else:
        created = ctx.created.get(key)
        grace = 0.0 if created is None else created + SCHEDULING_GRACE_SECONDS - time.monotonic()
        if grace > 0:
            ctx.retry(key, grace)
            return
        message = f"waiting for the scheduler to place pod {key[0]}/{key[1]}"
        await write_scheduled(ctx, vpod, False, "Scheduling", message)


async def replace_pod(
    ctx: ControllerContext, key: Key, vpod: JSON, old: JSON | None
) -> JSON | None:
    """Create the Pod (deleting an ended or outdated one first); None when refused."""
    api = ctx.api()
    sticky = (vpod.get("status") or {}).get("nodeName") or None
    if sticky and key in ctx.recreated:
        wait = RECREATE_INTERVAL_SECONDS - (time.monotonic() - ctx.recreated[key])
        if wait > 0:
            ctx.retry(key, wait)
            return None
    if old is not None:
        await api.delete(pod_path(*key), old["metadata"].get("uid"))
        ctx.pods.pop(key, None)
    node = sticky or ctx.bind_to
    preferred = [] if node else preferred_terms(measured_headroom(ctx.leases.values(), _now()))
    body = companion_pod(
        vpod, image=ctx.settings.placeholder_image, node_name=node, preferred=preferred
    )
    try:
        created = await api.create(pod_path(key[0]), body)
    except RestError as error:
        if is_quota_refusal(error.code, error.message):
            await write_scheduled(
                ctx, vpod, False, "QuotaExceeded", error.message, event="FailedCreate"
            )
            ctx.retry(key, QUOTA_RETRY_SECONDS)
        elif error.code == 409:  # the old one is still terminating
            ctx.retry(key, QUOTA_RETRY_SECONDS)
        else:
            await write_scheduled(
                ctx, vpod, False, "FailedCreate", error.message, event="FailedCreate"
            )
            ctx.retry(key, ERROR_RETRY_SECONDS)
        return None
    ctx.pods[key] = created
    ctx.created[key] = time.monotonic()
    if sticky:
        ctx.recreated[key] = time.monotonic()
        post(
            ctx,
            vpod,
            "Normal",
            "PodRecreated",
            f"companion Pod {key[1]} created again, bound to {sticky} where the VM runs "
            "(the VM is untouched)",
        )
    return created


async def record_binding(ctx: ControllerContext, vpod: JSON, pod: JSON, node: str) -> None:
    """Status first (podName, nodeName, admitted, Scheduled=True), then the node label
    and the agent's finalizer, in one write: the agent's Kopf finds its finalizer there
    and need not add it (one write and one watch event fewer per VirtualPod)."""
    meta = vpod["metadata"]
    status = vpod.get("status") or {}
    admission = ctx.admission(_key(vpod), pod)
    admitted = admission.resources
    message = scheduled_message(meta["namespace"], meta["name"], node)
    recorded = (
        status.get("podName") == pod["metadata"]["name"]
        and status.get("nodeName") == node
        and status.get("admitted") == admitted
        and condition_status(status.get("conditions") or [], "Scheduled") == "True"
    )
    if not recorded:
        extra = {"podName": pod["metadata"]["name"], "nodeName": node, "admitted": admitted}
        if not await write_scheduled(ctx, vpod, True, "Scheduled", message, extra=extra):
            return  # lost a race: the next sync writes status, and only then the label
        meta = (ctx.vpods.get(_key(vpod)) or vpod)["metadata"]  # as the write left it
    digest = admission.digest
    labels = meta.get("labels") or {}
    finalizers = list(meta.get("finalizers") or [])
    if (
        labels.get(NODE_LABEL) == node
        and labels.get(ADMITTED_LABEL) == digest
        and FINALIZER in finalizers
    ):
        return
    patch: JSON = {
        "metadata": {
            # The finalizers list is replaced as a whole: only onto the version read.
            "resourceVersion": meta.get("resourceVersion"),
            "labels": {NODE_LABEL: node, ADMITTED_LABEL: digest},
            "finalizers": finalizers if FINALIZER in finalizers else [*finalizers, FINALIZER],
        }
    }
    await write_if_current(ctx, vpod, vpod_path(meta["namespace"], meta["name"]), patch)


async def write_scheduled(
    ctx: ControllerContext,
    vpod: JSON,
    scheduled: bool,
    reason: str,
    message: str,
    *,
    extra: Mapping[str, Any] | None = None,
    event: str | None = None,
    phase: str | None = None,
) -> bool:
    """Set the `Scheduled` condition (and `extra` status fields), against the object's
    resourceVersion; a Warning Event when the reason or message is new. False when the
    write lost a race with another writer (the object is re-read and synced again)."""
    status = vpod.get("status") or {}
    conditions = status.get("conditions") or []
    current = next((c for c in conditions if c.get("type") == "Scheduled"), None)
    same = current is not None and (
        current.get("status"),
        current.get("reason"),
        current.get("message"),
    ) == ("True" if scheduled else "False", reason, message)
    if same and not extra:
        return True
    meta = vpod["metadata"]
    generation = meta.get("generation")
    conditions = set_condition(conditions, "Scheduled", scheduled, reason, message, generation)
    if reason == "InvalidSpec":  # no agent sees an object the controller cannot place
        conditions = set_condition(conditions, "Valid", False, reason, message, generation)
    patch: JSON = {"conditions": conditions, **(extra or {})}
    if not scheduled:
        patch.update(phase=phase or "Pending", reason=reason, message=message)
    path = vpod_path(meta["namespace"], meta["name"], "status")
    body = {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "status": patch}
    if not await write_if_current(ctx, vpod, path, body):
        return False
    if event and not same:
        post(ctx, vpod, "Warning", event, message)
    return True


async def write_if_current(ctx: ControllerContext, vpod: JSON, path: str, patch: JSON) -> bool:
    """Merge-patch the VirtualPod (or its status) against the resourceVersion in `patch`.
    False on a conflict: the newer object is on its way in the watch (or already in the
    cache, and the sync then runs again), so nothing is read here."""
    key = _key(vpod)
    ctx.vpods.sending(key)
    try:
        answer = await ctx.api().merge_patch(path, patch)
    except BaseException as error:
        ctx.vpods.failed(key)
        if isinstance(error, RestError) and error.code == 409:
            return False
        raise
    ctx.vpods.answered(key, answer)
    return True


def post(ctx: ControllerContext, vpod: JSON, type_: str, reason: str, message: str) -> None:
    """An Event on the VirtualPod (posted in the background; a failure is logged)."""
    meta = vpod["metadata"]
    ref = ObjectRef(
        f"{API_GROUP}/{API_VERSION}", KIND, meta["namespace"], meta["name"], meta.get("uid")
    )
    if ctx.events is not None:
        ctx.events.post(ref, type_, reason, message)


def _now() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)


def _key(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace")), str(meta.get("name")))


# ------------------------------------------------------------------ kopf wiring


class NoDiffBase(kopf.DiffBaseStorage):
    """For a process whose handlers are all `kopf.on.event`: Kopf would still copy every
    object on every watch event to diff it against the last handled spec, which nobody
    reads. Nothing is kept and the essence is empty."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return cast(kopf.BodyEssence, {})

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def register(
    registry: kopf.OperatorRegistry, *, with_login: bool = False, alone: bool = False
) -> None:
    """The controller's handlers, onto `registry` (role `controller`, or with the agent's
    in role `all`); `with_login` when no other role registers the login; `alone` when no
    other role's handlers share the process (then Kopf keeps no diff base: `NoDiffBase`)."""

    if with_login:
        kopf.on.login(registry=registry)(login)

    @kopf.on.startup(registry=registry)
    async def controller_startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
        """Watch only companion Pods and the operator namespace's Leases (server-side);
        create the replicas' peering object when it is missing."""
        ctx = controller(memo)
        if alone:
            settings.persistence.diffbase_storage = NoDiffBase()
        settings.watching.label_selectors["v1", "pods"] = VIRTUALPOD_LABEL
        settings.watching.field_selectors["coordination.k8s.io", "leases"] = (
            f"metadata.namespace={ctx.settings.namespace}"
        )
        if ctx.rest is None:  # this handler is retried while the peering CRD is missing
            ctx.rest = await RestClient.connect(getattr(memo, "api_url", None))
            ctx.events = EventPoster(ctx.rest, ctx.instance)
        peering = settings.peering
        peers = peering.clusterwide and not peering.standalone and bool(peering.name)
        if peers and not await ensure_peering(ctx.rest, peering.name):
            raise kopf.TemporaryError(
                f"Kopf's peering CRD (clusterkopfpeerings.kopf.dev) is not served yet: "
                f"cannot create the peering {peering.name}",
                delay=PEERING_RETRY_SECONDS,
            )

    @kopf.on.cleanup(registry=registry)
    async def controller_cleanup(memo: Any, **_: Any) -> None:
        ctx = controller(memo)
        for handle in ctx.retries.values():
            handle.cancel()
        for task in list(ctx.running.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if ctx.events is not None:
            await ctx.events.close()
            ctx.events = None
        if ctx.rest is not None:
            await ctx.rest.close()
            ctx.rest = None

    @kopf.on.event(API_GROUP, API_VERSION, PLURAL, registry=registry)
    async def virtualpod_changed(
        event: Mapping[str, Any], body: kopf.Body, memo: Any, **_: Any
    ) -> None:
        ctx = controller(memo)
        key = _key(body)
        if event.get("type") == "DELETED":
            ctx.forget(key)
        elif not ctx.vpods.watched(key, dict(body)):
            return  # older than, or the same as, the answer to the controller's own write
        ctx.kick(key)

    @kopf.on.event("v1", "pods", labels={VIRTUALPOD_LABEL: kopf.PRESENT}, registry=registry)
    async def companion_pod_changed(
        event: Mapping[str, Any], body: kopf.Body, labels: kopf.Labels, memo: Any, **_: Any
    ) -> None:
        ctx = controller(memo)
        key = (str(body.get("metadata", {}).get("namespace")), str(labels[VIRTUALPOD_LABEL]))
        known = ctx.pods.get(key)
        if event.get("type") == "DELETED":
            if known is not None and known["metadata"].get("uid") == body["metadata"].get("uid"):
                ctx.pods.pop(key, None)
        else:
            ctx.pods[key] = dict(body)
        if key in ctx.vpods:
            ctx.kick(key)

    @kopf.on.event("coordination.k8s.io", "v1", "leases", registry=registry)
    async def host_lease_changed(
        event: Mapping[str, Any], body: kopf.Body, memo: Any, **_: Any
    ) -> None:
        ctx = controller(memo)
        name = str(body.get("metadata", {}).get("name"))
        if event.get("type") == "DELETED":
            ctx.leases.pop(name, None)
        else:
            ctx.leases[name] = dict(body)

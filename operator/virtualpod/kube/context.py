"""What the agent's handlers share, typed: one `AgentContext` per process, in kopf's memo.

Loaded once at startup (settings, host, libvirt connection, capacity) and then kept
current by the handlers (which domains are placed here, what is being deleted or
suspended, the last status written per domain).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, cast

import kopf

from virtualpod.core.admission import PlacedRequests, allocatable
from virtualpod.core.binding import node_selector
from virtualpod.core.plan import VMPlan
from virtualpod.core.settings import Amount, Settings
from virtualpod.core.spec import API_GROUP, API_VERSION, KIND, SpecError
from virtualpod.core.status import Suspension
from virtualpod.kube.api import KubeApi, ObjectRef
from virtualpod.kube.poster import EventPoster
from virtualpod.kube.rest import RestClient
from virtualpod.kube.workload import Workloads
from virtualpod.libvirt.hypervisor import Hypervisor

if TYPE_CHECKING:
    from virtualpod.pressure.monitor import Monitor

PLURAL = "virtualpods"


class Role(StrEnum):
    """What one `virtualpod run` process does."""

    #: Cluster-level: companion Pods and binding (no libvirt).
    CONTROLLER = "controller"
    #: One per libvirt host: the VMs of the VirtualPods bound to it.
    AGENT = "agent"
    #: Both, for a single host.
    ALL = "all"


@dataclass(frozen=True)
class Sizing:
    """What a VirtualPod's plan says about its size, for the index (None: not admitted
    yet, or invalid)."""

    #: Summed requests of the Pod as admitted.
    requests: Amount | None = None
    #: (vCPUs, memory bytes) the VM is sized to.
    size: tuple[int, int] | None = None
    qos_class: str | None = None
    oom_score_adj: int | None = None


@dataclass(frozen=True)
class Owner:
    """A VirtualPod as the agent's index keeps it, by domain UUID."""

    ref: ObjectRef
    generation: int | None
    deleting: bool
    #: Bound to this host: served by its agent.
    here: bool
    sizing: Sizing
    phase: str | None
    conditions: tuple[dict[str, object], ...]
    restart_required: bool
    restart_count: int
    observed_generation: int | None = None


@dataclass
class RestartRecord:
    """Restarts of one VM by this agent."""

    #: Restarts so far (status.vm.restartCount; carried over from status on startup).
    count: int = 0
    #: Consecutive restarts without a run of `restartBackoff.reset` in between.
    streak: int = 0
    #: Monotonic time of the last restart.
    started_at: float = 0.0
    task: asyncio.Task[None] | None = None


@dataclass(frozen=True)
class Written:
    """The last status this process wrote for a domain: fresher than any watch event."""

    conditions: tuple[dict[str, object], ...]
    phase: str | None
    observed_generation: int | None = None
    #: The whole status a reconcile wrote (Kopf applies it after the handler), so the
    #: mirror does not write the same again.
    status: Mapping[str, object] = field(default_factory=dict)


#: What a VirtualPod's plan depends on: (generation, status.admitted, priority value).
PlanKey = tuple[object, object, int | None]

ReadyHook = Callable[["AgentContext"], Awaitable[None] | None]


@dataclass
class AgentContext:
    """Everything the agent's handlers share, loaded once at startup."""

    settings: Settings
    host_name: str
    #: Server-side label selector of the VirtualPod watch (the agent role: its node).
    selector: str | None = None
    api_url: str | None = None
    hypervisor: Hypervisor | None = None
    cgroup_version: int = 1
    capacity: Amount = field(default_factory=lambda: Amount(0, 0))
    #: The VMs placed on this host by domain UUID, with the requests that count against
    #: allocatable.
    placed: PlacedRequests = field(default_factory=PlacedRequests)
    #: Admitted but not yet defined (between the capacity check and defineXML).
    reserving: dict[str, Amount] = field(default_factory=dict)
    admission_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    deleting: set[str] = field(default_factory=set)
    suspensions: dict[str, Suspension] = field(default_factory=dict)
    written: dict[str, Written] = field(default_factory=dict)
    #: UUIDs a handler is reconciling right now; the mirror re-checks them a bit later.
    busy: set[str] = field(default_factory=set)
    #: One reconcile or delete of a VM at a time: Kopf runs the Pending timer beside the
    #: create/update handlers, and two first defines would each count as the creation.
    vm_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    #: One status refresh of a VM at a time (`mirror.refresh_status`).
    refresh_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    #: Each VirtualPod's plan (or why it has none) by domain UUID, with what it was made
    #: from (`kube.plans`): the index runs on every watch event, most change nothing.
    plans: dict[str, tuple[PlanKey, VMPlan | SpecError | None]] = field(default_factory=dict)
    #: The size the index took from that plan.
    sizing: dict[str, tuple[PlanKey, Sizing]] = field(default_factory=dict)
    #: kopf indexes, captured at startup (live views).
    by_uuid: kopf.Index[str, Owner] | None = None
    priority_class_index: kopf.Index[str, int] | None = None
    #: Status writes and the Lease from outside handlers (connected at startup).
    api: KubeApi | None = None
    #: Every Event of the agent's, and the HTTP session it is posted over.
    rest: RestClient | None = None
    events: EventPoster | None = None
    #: Disks, seeds and addresses of VMs that run an image (connected at startup).
    workloads: Workloads | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    #: Called once the hypervisor is open, e.g. to start the pressure monitor.
    on_ready: list[ReadyHook] = field(default_factory=list)
    #: The pressure monitor once it runs (its state feeds the host's Lease).
    pressure: Monitor | None = None
    restarts: dict[str, RestartRecord] = field(default_factory=dict)

    @property
    def allocatable(self) -> Amount:
        return allocatable(self.capacity, self.settings.reserved)

    @property
    def hv(self) -> Hypervisor:
        if self.hypervisor is None:
            raise kopf.TemporaryError("libvirt is not connected yet", delay=1)
        return self.hypervisor

    def priority_of(self, class_name: str) -> int | None:
        """The value of a PriorityClass (None: not known here)."""
        index = self.priority_class_index
        if index is None or class_name not in index:
            return None
        return next(iter(index[class_name]), None)

    def sized(self, uuid: str) -> Sizing | None:
        """What the index last computed for this VM's size (None: never seen)."""
        known = self.sizing.get(uuid)
        return known[1] if known is not None else None

    def owner(self, uuid: str) -> Owner | None:
        """The indexed VirtualPod owning a domain, if known."""
        if self.by_uuid is None or uuid not in self.by_uuid:
            return None
        return next(iter(self.by_uuid[uuid]), None)

    def vm_lock(self, uuid: str) -> asyncio.Lock:
        """The lock that keeps this VM's reconciles and delete one after another."""
        return self.vm_locks.setdefault(uuid, asyncio.Lock())

    def restart_record(self, uuid: str) -> RestartRecord:
        """This VM's restart record; its count starts from what status last said."""
        record = self.restarts.get(uuid)
        if record is None:
            owner = self.owner(uuid)
            count = owner.restart_count if owner is not None else 0
            record = self.restarts[uuid] = RestartRecord(count=count)
        return record


def vpod_ref(namespace: str, name: str, uid: str | None) -> ObjectRef:
    """The VirtualPod an Event or a status write from outside a handler is about."""
    return ObjectRef(f"{API_GROUP}/{API_VERSION}", KIND, namespace, name, uid)


def default_host_name() -> str:
    return socket.gethostname()


def agent_context(
    settings: Settings, role: Role = Role.ALL, *, api_url: str | None = None
) -> AgentContext:
    """The agent's context for a role: it serves only what is bound to its host (in
    role `all` by the controller of the same process); the agent role also asks the
    API server for nothing else (the controller of role `all` needs every object)."""
    host_name = settings.host_name or default_host_name()
    agent_only = role is Role.AGENT
    return AgentContext(
        settings=settings,
        host_name=host_name,
        selector=node_selector(host_name) if agent_only else None,
        api_url=api_url,
    )


def make_memo(
    settings: Settings, role: Role = Role.ALL, *, api_url: str | None = None
) -> kopf.Memo:
    """The memo to pass to kopf: the API URL (for the login) and the agent's context."""
    return kopf.Memo(api_url=api_url, ctx=agent_context(settings, role, api_url=api_url))


def context(memo: object) -> AgentContext:
    return cast(AgentContext, cast(kopf.Memo, memo).ctx)

"""The loop's inventory: our domains, read from libvirt alone, and the views it decides on.

Our domains carry `<metadata>` with namespace, name, QoS class, priority and memory
request (`domain.parse_domain`), so the loop works without the Kubernetes layer. QoS
class and priority are read from there, never recomputed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from virtualpod.core.domain import DomainMetadata, parse_domain
from virtualpod.core.qos import QOSClass
from virtualpod.core.spec import SuspendMode
from virtualpod.libvirt.hypervisor import DomainInfo, DomainState, HypervisorError, VMMemory
from virtualpod.pressure.intents import Intent
from virtualpod.pressure.ordering import NEVER, tick
from virtualpod.pressure.policy import VMState, VMView
from virtualpod.pressure.ports import HypervisorPort

log = logging.getLogger(__name__)

#: How long a refresh waits for a listing or stats query before using the last values.
LIST_TIMEOUT_S = 0.25
RUNNING_STATES = (DomainState.RUNNING, DomainState.BLOCKED)


@dataclass(frozen=True)
class Tracked:
    info: DomainInfo
    meta: DomainMetadata
    rss_bytes: int | None

    @property
    def running(self) -> bool:
        return self.info.state in RUNNING_STATES

    @property
    def saved(self) -> bool:
        return not self.info.active and self.info.has_managed_save

    @property
    def usage_bytes(self) -> int:
        """RSS where libvirt reports it, else the guest memory."""
        return self.rss_bytes if self.rss_bytes is not None else self.info.memory_bytes


def vm_view(
    tracked: Tracked, state: VMState, intent: Intent | None, default_mode: SuspendMode
) -> VMView | None:
    """What the policy sees of a domain; None (logged) for a QoS class it does not know.

    A suspended (or resuming) VM counts with the memory its intent recorded at suspend
    time: what a resume will take back.
    """
    meta = tracked.meta
    try:
        qos = QOSClass(meta.qos_class)
    except ValueError:
        log.warning("domain %s: unknown qosClass %r, ignored", tracked.info.name, meta.qos_class)
        return None
    if state in (VMState.SUSPENDED, VMState.RESUMING) and intent is not None:
        memory = intent.memory_bytes
    else:
        memory = tracked.usage_bytes
    return VMView(
        key=tracked.info.uuid,
        namespace=meta.namespace,
        name=meta.name,
        qos_class=qos,
        priority=meta.priority,
        memory_request_bytes=meta.memory_request_bytes,
        usage_bytes=memory,
        memory_bytes=memory,
        state=state,
        suspend_mode=meta.suspend_mode or default_mode,
    )


@dataclass(frozen=True)
class _Stats:
    asked: frozenset[str]
    memory: Mapping[str, VMMemory]


class Inventory:
    """Our domains, read from libvirt; metadata parsed once per domain and cached.

    A refresh never waits on a domain libvirtd is saving: while it writes the image it
    holds the domain, and every call that lists domains waits for it (measured: up to
    1.8 s of a 3.4 s Save); stats of other domains were seen to stall too. So the
    domains in `busy` (set by the monitor: those with a suspend or resume in flight)
    are not queried, and a listing or stats query that takes longer than
    `list_timeout_s` is left running while the refresh goes on with the last values;
    a later refresh picks the result up (at most one of each runs at a time).
    """

    def __init__(
        self,
        hv: HypervisorPort,
        scope: Callable[[DomainMetadata], bool] | None = None,
        *,
        list_timeout_s: float = LIST_TIMEOUT_S,
    ) -> None:
        """`scope` narrows the VMs this loop manages (e.g. one namespace); default all."""
        self.hv = hv
        self.scope = scope
        self.list_timeout_s = list_timeout_s
        self.domains: dict[str, Tracked] = {}
        #: when (`ordering.tick`) the listing behind `domains` started: its states are
        #: at least this old
        self.refreshed_at = NEVER
        #: domains not to query (an action in flight): their last values are carried
        self.busy: Collection[str] = frozenset()
        self._meta: dict[str, DomainMetadata | None] = {}
        self._listing: asyncio.Task[list[DomainInfo]] | None = None
        self._stats_query: asyncio.Task[_Stats] | None = None
        self._listing_started = NEVER

    async def refresh(self, *, usage: bool = True) -> dict[str, Tracked]:
        listed = await self._list()
        if listed is None:  # libvirtd is busy with a domain: the last listing
            infos = [tracked.info for tracked in self.domains.values()]
        else:
            infos, started = listed
        current: dict[str, Tracked] = {}
        running: list[DomainInfo] = []
        for info in infos:
            meta = await self._metadata(info.uuid)
            if meta is None or (self.scope is not None and not self.scope(meta)):
                continue
            old = self.domains.get(info.uuid)
            current[info.uuid] = Tracked(info, meta, old.rss_bytes if old else None)
            if info.state in RUNNING_STATES:
                running.append(info)
        wanted = [info.uuid for info in running if info.uuid not in self.busy]
        stats = await self._stats(wanted) if usage and wanted else None
        if stats is not None:  # None: not in time, the last values are carried
            for uuid in wanted:
                if uuid not in stats.asked:
                    continue  # listed after this query was sent
                memory = stats.memory.get(uuid)  # missing: stopped in the meantime
                rss = memory.rss_bytes if memory is not None else None
                current[uuid] = Tracked(current[uuid].info, current[uuid].meta, rss)
        if listed is not None:
            for uuid in set(self._meta) - set(current):
                self._meta.pop(uuid, None)
            self.refreshed_at = started
        self.domains = current
        return current

    async def _list(self) -> tuple[list[DomainInfo], int] | None:
        """A new listing (and when it started), or None if it does not come in time."""
        if self._listing is None:
            self._listing_started = tick()
            self._listing = asyncio.ensure_future(self.hv.list_domains())
        task = self._listing
        await asyncio.wait({task}, timeout=self.list_timeout_s if self.domains else None)
        if not task.done():
            return None
        self._listing = None
        return task.result(), self._listing_started

    async def _stats(self, wanted: list[str]) -> _Stats | None:
        """Memory stats of `wanted` (or of what the still-running query asked), in time."""
        if self._stats_query is None:
            asked = frozenset(wanted)
            self._stats_query = asyncio.ensure_future(self._query_stats(asked))
        task = self._stats_query
        await asyncio.wait({task}, timeout=self.list_timeout_s if self.domains else None)
        if not task.done():
            return None
        self._stats_query = None
        return task.result()

    async def _query_stats(self, asked: frozenset[str]) -> _Stats:
        return _Stats(asked, await self.hv.all_memory_stats(asked))

    async def _metadata(self, uuid: str) -> DomainMetadata | None:
        if uuid not in self._meta:
            try:
                self._meta[uuid] = parse_domain(await self.hv.xml(uuid, inactive=True)).metadata
            except (HypervisorError, ValueError, SyntaxError) as error:
                log.warning("cannot read metadata of domain %s: %s", uuid, error)
                return None
        return self._meta[uuid]

    def forget(self, uuid: str) -> None:
        """Re-read metadata next time (after the domain was redefined)."""
        self._meta.pop(uuid, None)

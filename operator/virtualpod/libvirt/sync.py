"""One reconcile, one call: `DomainManager.sync(plan)` makes a domain match its plan.

As KubeVirt's `SyncVMI`: the handler hands over the plan and gets back what libvirt did
and shows, and decides only when to call and how to report. In order: look up; prepare
(the caller's hook: admission, disks); define (runtime metadata kept); tune live what
changed on a running VM; start when stopped (not when saved: resuming is the pressure
loop's) and observe in the same call; write the OOM score of a fresh QEMU process.
Failures of single steps that do not stop the rest (live tuning, the start, the OOM
score) are returned, not raised.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from virtualpod.core.plan import VMPlan
from virtualpod.libvirt.domains import DefineResult, Domains, StartResult
from virtualpod.libvirt.errors import DomainNotFound, HypervisorError
from virtualpod.libvirt.host import Host, OomScoreResult
from virtualpod.libvirt.live_tuning import LiveTuning, TuneResult
from virtualpod.libvirt.state import DomainInfo

#: Called before the domain is defined, with what the lookup found; False: stop.
Prepare = Callable[[DomainInfo | None], Awaitable[bool]]


@dataclass(frozen=True)
class LiveTune:
    """Each live change: its result, or why libvirt refused it; None: not attempted."""

    cputune: TuneResult | HypervisorError
    memtune: TuneResult | HypervisorError
    balloon: TuneResult | HypervisorError | None
    balloon_bytes: int | None


@dataclass(frozen=True)
class SyncResult:
    """What `sync` did and saw. `admitted` False: `prepare` refused the domain;
    nothing else happened (and `info`, `defined` are None). `start_error`: why the start
    failed; `info` is still what libvirt shows after it."""

    admitted: bool
    info: DomainInfo | None = None
    defined: DefineResult | None = None
    tuned: LiveTune | None = None
    started: StartResult | None = None
    start_error: HypervisorError | None = None
    oom_score: OomScoreResult | None = None

    @property
    def created(self) -> bool:
        return self.defined is not None and self.defined.created


def balloon_target(memory_bytes: int, info: DomainInfo) -> int | None:
    """The guest memory to balloon to, when it moved and fits the maximum memory."""
    if memory_bytes <= info.max_memory_bytes and memory_bytes != info.memory_bytes:
        return memory_bytes
    return None


def needs_start(info: DomainInfo, *, allowed: bool) -> bool:
    """A stopped VM is started; a saved one is left to whoever saved it."""
    return allowed and not info.active and not info.has_managed_save


class DomainManager(Domains, LiveTuning, Host):
    """Lifecycle + live tuning + host: the whole of one reconcile."""

    async def lookup_or_none(self, uuid: str) -> DomainInfo | None:
        try:
            return await self.lookup(uuid)
        except DomainNotFound:
            return None

    async def sync(
        self,
        plan: VMPlan,
        *,
        start: bool = True,
        oom_score_adj: int | None = None,
        prepare: Prepare | None = None,
        on_defined: Callable[[DefineResult], None] | None = None,
    ) -> SyncResult:
        """Make the domain of `plan` match it; idempotent.

        `start` False keeps a stopped VM stopped (e.g. suspended by the pressure loop);
        `prepare` is called with what the lookup found (None: a new domain) before the
        domain is defined, to admit it and get its disks ready (False: refused, stop
        here); `on_defined` is told at once when the domain is defined (so a caller
        stopped during a long start still said so); `oom_score_adj` is written for a
        QEMU process this call started.
        """
        info = await self.lookup_or_none(plan.uuid)
        if prepare is not None and not await prepare(info):
            return SyncResult(admitted=False)
        defined = await self.ensure_defined(plan.domain_xml, plan.uuid)
        if on_defined is not None:
            on_defined(defined)
        tuned = None
        if info is not None and info.active and defined.changed:
            tuned = await self.tune_live(plan, info)
        started = start_error = oom = observed = None
        if info is None or needs_start(info, allowed=start):
            try:
                started, observed = await self.start_observed(plan.uuid)
            except HypervisorError as error:
                start_error = error
            if started is not None and started.started:
                oom = await self._oom_score(plan.uuid, oom_score_adj)
        if observed is None:  # not started, or the start failed
            observed = await self.lookup(plan.uuid)
        return SyncResult(True, observed, defined, tuned, started, start_error, oom)

    async def tune_live(self, plan: VMPlan, info: DomainInfo) -> LiveTune:
        """Apply what libvirt can change on a running VM: shares, quota, memtune, balloon."""
        cputune = await _attempt(self.set_cputune(plan.uuid, plan.cputune))
        memtune = await _attempt(self.set_memtune(plan.uuid, plan.memtune))
        target = balloon_target(plan.size.memory_bytes, info)
        balloon = None if target is None else await _attempt(self.set_balloon(plan.uuid, target))
        return LiveTune(cputune, memtune, balloon, target)

    async def _oom_score(self, uuid: str, value: int | None) -> OomScoreResult | None:
        if value is None:
            return None
        with contextlib.suppress(HypervisorError):
            return await self.set_oom_score_adj(uuid, value)
        return None


async def _attempt(call: Awaitable[TuneResult]) -> TuneResult | HypervisorError:
    try:
        return await call
    except HypervisorError as error:
        return error

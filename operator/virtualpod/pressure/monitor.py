"""The pressure loop: sample memory.available, ask `pressure` what to do, act via libvirt.

Thin shell around the pure policy in `pressure`:

* **Signal** (`SignalSource`, injectable): `HostSignal` reads host memory through the
  hypervisor (free + buffers + cache, as /proc/meminfo); `PoolSignal` is kubelet's
  allocatable signal for the VM pool: allocatable minus the summed QEMU RSS of our VMs.
  Either may add kernel PSI (`/proc/pressure/memory`, `some avg10`) as an early warning.
* **Inventory** comes from libvirt alone: our domains carry `<metadata>` with namespace,
  name, QoS class, priority and memory request (`domain.parse_domain`), so the loop works
  without the Kubernetes layer. QoS class and priority are read from there, never
  recomputed.
* **Action**: Save (managed save: RAM to disk, freed) for memory pressure; a VM whose
  suspend mode is Pause (`spec.suspendMode` or the setting) is paused, which frees no
  memory and is never counted as reclaim. Suspensions run as tasks, so sampling goes on
  while a Save writes RAM to disk; what they will free is counted as in flight, so the
  next sample does not pick more victims for the same shortfall.
* **Reporting** goes through an injected `Reporter` (the operator patches status and
  emits Events from it).

Crash safety: an *intent* is written before every suspend or resume and updated after
it, by default into the domain itself (`DomainIntentStore`: a `<pressure:intent>` element
in its `<metadata>`, persistent definition and live), so it survives the operator, the
node's disk layout and a redefinition, and leaves with the VM. On start, `reconcile()`
compares the intents of its VMs with what libvirt says:

====================================  ===============================================
intent / libvirt state                what reconcile does
====================================  ===============================================
suspend, domain saved (or paused      completed: stays suspended, reported suspended
for Pause mode)
suspend, domain paused for "save"     libvirtd still writing it: wait, then decide
suspend, domain running               never happened: rolled back, reported running
resume, domain saved                  never happened: rolled back to suspended (the
                                      loop resumes it again when there is room)
resume, domain paused after restore   completed (resumed), reported running
resume, domain running                completed, reported running
domain shut off without image, gone   intent dropped
no intent, domain saved               reported suspended (reason `Saved`), not resumed
====================================  ===============================================

So status never says Running for a saved VM, nor Suspended for a running one. After a
restart with VMs still suspended the host counts as under pressure from that moment, so
they are resumed only after a whole transition period of clear signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from virtualpod.core.domain import DomainMetadata, parse_domain
from virtualpod.core.qos import QOSClass
from virtualpod.core.quantity import MIB
from virtualpod.core.settings import PressureSignal, Settings
from virtualpod.core.spec import SuspendMode
from virtualpod.libvirt.hypervisor import (
    DomainInfo,
    DomainNotFound,
    DomainState,
    HostMemory,
    HypervisorError,
    ResumeResult,
    SuspendResult,
    TuneResult,
    VMMemory,
)
from virtualpod.pressure.policy import (
    Decision,
    PressureState,
    Sample,
    VMState,
    VMView,
    decide,
    effective_threshold,
    resume_threshold,
)

log = logging.getLogger(__name__)

MEMORY_PRESSURE = "MemoryPressure"
SAVED_OUTSIDE = "Saved"
PSI_PATH = Path("/proc/pressure/memory")


def mib(value: int | None) -> str:
    """Rounded MiB for messages (`format_bytes` is exact, and so too long for them)."""
    return "?" if value is None else f"{value / MIB:.0f}Mi"


# ------------------------------------------------------------------ ports (protocols)


class HypervisorPort(Protocol):
    """The part of `hypervisor.Hypervisor` the loop uses (so tests can read what it needs)."""

    async def list_domains(self) -> list[DomainInfo]: ...
    async def lookup(self, uuid: str) -> DomainInfo: ...
    async def xml(self, uuid: str, *, inactive: bool = False) -> str: ...
    async def all_memory_stats(
        self, uuids: Collection[str] | None = None
    ) -> dict[str, VMMemory]: ...
    async def host_memory(self) -> HostMemory: ...
    async def suspend(self, uuid: str, mode: SuspendMode) -> SuspendResult: ...
    async def resume(self, uuid: str, mode: SuspendMode | None = None) -> ResumeResult: ...
    async def set_balloon(self, uuid: str, memory_bytes: int) -> TuneResult: ...
    async def set_metadata(self, uuid: str, key: str, xml: str | None) -> None: ...
    async def metadata(self, uuid: str, key: str) -> str | None: ...
    async def metadata_of_all(self, key: str) -> dict[str, str]: ...


@dataclass(frozen=True)
class SignalReading:
    """One sample. `counted`: the VMs whose memory the reading counts as used, where the
    source knows it (the pool signal); None (host) means any VM may be in it."""

    available_bytes: int
    psi_some_avg10: float | None = None
    source: str = "host"
    counted: frozenset[str] | None = None


class SignalSource(Protocol):
    async def read(self) -> SignalReading: ...


@dataclass(frozen=True)
class PressureStatus:
    """Host-level picture for status and metrics; reported when anything but the bytes moves."""

    under_pressure: bool
    reason: str
    signal: str
    available_bytes: int | None
    threshold_bytes: int
    suspended_by_class: Mapping[str, int]
    guaranteed_only: bool

    def key(self) -> tuple[object, ...]:
        return (
            self.under_pressure,
            self.reason,
            tuple(sorted(self.suspended_by_class.items())),
            self.guaranteed_only,
        )


class Reporter(Protocol):
    """Implemented by the operator: status patches, Events, host-level warnings."""

    async def vm_suspending(self, vm: VMView, reason: str, message: str) -> None: ...
    async def vm_suspended(self, vm: VMView, reason: str, message: str) -> None: ...
    async def vm_resumed(self, vm: VMView, message: str) -> None: ...
    async def vm_ballooned(self, vm: VMView, target_bytes: int, message: str) -> None: ...
    async def action_failed(self, vm: VMView, action: str, message: str) -> None: ...
    async def pressure_changed(self, status: PressureStatus) -> None: ...
    async def guaranteed_only_pressure(self, message: str) -> None: ...


# -------------------------------------------------------------------------- intents


@dataclass
class Intent:
    """What the loop is doing or did to one VM; written before acting.

    `action` is "suspend" or "resume"; `done` False while libvirt is at it.
    `memory_bytes` is the RSS at suspend time: what a resume will take back.
    """

    action: str
    mode: str
    done: bool
    memory_bytes: int
    message: str = ""
    at: float = field(default_factory=time.time)

    @property
    def suspend_mode(self) -> SuspendMode:
        return SuspendMode(self.mode)


INTENT_KEY = "pressure"


class IntentStore(Protocol):
    async def load(self) -> dict[str, Intent]: ...
    async def put(self, uuid: str, intent: Intent) -> None: ...
    async def delete(self, uuid: str) -> None: ...


class IntentPort(Protocol):
    """The hypervisor's runtime metadata (`Hypervisor.set_metadata` and friends)."""

    async def set_metadata(self, uuid: str, key: str, xml: str | None) -> None: ...
    async def metadata(self, uuid: str, key: str) -> str | None: ...
    async def metadata_of_all(self, key: str) -> dict[str, str]: ...


def intent_to_xml(intent: Intent) -> str:
    element = ET.Element(
        "intent",
        action=intent.action,
        mode=intent.mode,
        done="true" if intent.done else "false",
        memoryBytes=str(intent.memory_bytes),
        at=repr(intent.at),
    )
    if intent.message:
        ET.SubElement(element, "message").text = intent.message
    return ET.tostring(element, encoding="unicode")


def intent_from_xml(xml: str) -> Intent:
    """Raises ValueError (or ET.ParseError, a SyntaxError) on what we did not write."""
    element = ET.fromstring(xml)
    action = element.get("action", "")
    if action not in ("suspend", "resume"):
        raise ValueError(f"unknown intent action {action!r}")
    return Intent(
        action=action,
        mode=SuspendMode(element.get("mode", "")).value,
        done=element.get("done") == "true",
        memory_bytes=int(element.get("memoryBytes", "0")),
        message=element.findtext("message") or "",
        at=float(element.get("at", "0")),
    )


class DomainIntentStore:
    """Intents kept in the domain itself (`<pressure:intent>` in its `<metadata>`).

    They live and die with the VM: written to the persistent definition (and the live
    one), kept by a managed save and by a redefinition, gone when the domain is
    undefined, shared by every operator process that talks to this libvirtd.
    An element that does not parse is logged and ignored: libvirt's state still decides.
    """

    def __init__(self, hv: IntentPort, key: str = INTENT_KEY) -> None:
        self.hv = hv
        self.key = key

    async def load(self) -> dict[str, Intent]:
        out = {}
        for uuid, xml in (await self.hv.metadata_of_all(self.key)).items():
            try:
                out[uuid] = intent_from_xml(xml)
            except (ValueError, SyntaxError) as error:
                log.warning("ignoring unreadable pressure intent of domain %s: %s", uuid, error)
        return out

    async def put(self, uuid: str, intent: Intent) -> None:
        await self.hv.set_metadata(uuid, self.key, intent_to_xml(intent))

    async def delete(self, uuid: str) -> None:
        with contextlib.suppress(DomainNotFound):  # the intent went with the domain
            await self.hv.set_metadata(uuid, self.key, None)


# ------------------------------------------------------------------------ inventory


@dataclass(frozen=True)
class Tracked:
    info: DomainInfo
    meta: DomainMetadata
    rss_bytes: int | None

    @property
    def running(self) -> bool:
        return self.info.state in (DomainState.RUNNING, DomainState.BLOCKED)

    @property
    def saved(self) -> bool:
        return not self.info.active and self.info.has_managed_save


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
        list_timeout_s: float = 0.25,
    ) -> None:
        """`scope` narrows the VMs this loop manages (e.g. one namespace); default all."""
        self.hv = hv
        self.scope = scope
        self.list_timeout_s = list_timeout_s
        self.domains: dict[str, Tracked] = {}
        #: monotonic time the listing behind `domains` started: its states are at least this old
        self.refreshed_at = 0.0
        #: domains not to query (an action in flight): their last values are carried
        self.busy: Collection[str] = frozenset()
        self._meta: dict[str, DomainMetadata | None] = {}
        self._listing: asyncio.Task[list[DomainInfo]] | None = None
        self._stats_query: asyncio.Task[_Stats] | None = None
        self._listing_started = 0.0

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
            if info.state in (DomainState.RUNNING, DomainState.BLOCKED):
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

    async def _list(self) -> tuple[list[DomainInfo], float] | None:
        """A new listing (and when it started), or None if it does not come in time."""
        if self._listing is None:
            self._listing_started = time.monotonic()
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


# -------------------------------------------------------------------------- signals


def read_psi(path: Path = PSI_PATH) -> float | None:
    """`some avg10` of /proc/pressure/memory in percent; None where PSI is unavailable."""
    try:
        for line in path.read_text(encoding="ascii").splitlines():
            if line.startswith("some "):
                fields = dict(part.split("=", 1) for part in line.split()[1:])
                return float(fields["avg10"])
    except (OSError, ValueError, KeyError):
        return None
    return None


class HostSignal:
    """memory.available of the whole host, from libvirt's node memory stats."""

    def __init__(self, hv: HypervisorPort, *, psi: bool = False, psi_path: Path = PSI_PATH) -> None:
        self.hv = hv
        self.psi = psi
        self.psi_path = psi_path

    async def read(self) -> SignalReading:
        memory = await self.hv.host_memory()
        psi = read_psi(self.psi_path) if self.psi else None
        return SignalReading(memory.available_bytes, psi, "host")


class PoolSignal:
    """kubelet's allocatable signal for the VM pool: allocatable - summed RSS of our VMs."""

    def __init__(
        self,
        inventory: Inventory,
        allocatable_bytes: int,
        *,
        psi: bool = False,
        psi_path: Path = PSI_PATH,
    ) -> None:
        self.inventory = inventory
        self.allocatable_bytes = allocatable_bytes
        self.psi = psi
        self.psi_path = psi_path

    async def read(self) -> SignalReading:
        domains = await self.inventory.refresh(usage=True)
        active = {uuid: d for uuid, d in domains.items() if d.info.active}
        used = sum(
            (d.rss_bytes if d.rss_bytes is not None else d.info.memory_bytes)
            for d in active.values()
        )
        psi = read_psi(self.psi_path) if self.psi else None
        return SignalReading(self.allocatable_bytes - used, psi, "pool", frozenset(active))


async def signal_from_settings(
    settings: Settings,
    hv: HypervisorPort,
    inventory: Inventory,
    *,
    allocatable_bytes: int | None = None,
) -> SignalSource:
    """The configured signal. The pool's allocatable is, first found: the argument,
    `eviction.poolAllocatable`, host capacity - `reserved.memory`."""
    eviction = settings.eviction
    if eviction.signal is PressureSignal.POOL:
        if allocatable_bytes is None:
            allocatable_bytes = eviction.pool_allocatable_bytes
        if allocatable_bytes is None:
            total = (await hv.host_memory()).total_bytes
            allocatable_bytes = total - settings.reserved.memory_bytes
        return PoolSignal(inventory, allocatable_bytes, psi=eviction.psi_enabled)
    return HostSignal(hv, psi=eviction.psi_enabled)


# ------------------------------------------------------------------------- the loop


@dataclass
class InFlight:
    action: str
    reclaim_bytes: int
    task: asyncio.Task[None] | None = None
    expires_at: float | None = None


class Monitor:
    """Samples, decides, acts. `await reconcile()` once, then `await run()` (or `step()`).

    `clock` is monotonic seconds; tests pass their own to drive grace and transition
    periods without waiting for them.
    """

    def __init__(
        self,
        hv: HypervisorPort,
        signal: SignalSource,
        reporter: Reporter,
        settings: Settings,
        *,
        inventory: Inventory | None = None,
        intents: IntentStore | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hv = hv
        self.signal = signal
        self.reporter = reporter
        self.settings = settings
        self.eviction = settings.eviction
        self.inventory = inventory or Inventory(hv)
        self.intents = intents if intents is not None else DomainIntentStore(hv)
        self.clock = clock
        self.state = PressureState()
        self.last_decision: Decision | None = None
        self._ours: dict[str, Intent] = {}
        #: when each VM's last action finished (monotonic): older inventories predate it
        self._settled_at: dict[str, float] = {}
        self._last_resume_landed = 0.0
        self._in_flight: dict[str, InFlight] = {}
        self._last_status: tuple[object, ...] | None = None
        self._guaranteed_only = False
        self._reading: SignalReading | None = None

    # ------------------------------------------------------------- crash safety

    async def reconcile(self, settle_timeout_s: float = 120.0) -> None:
        """Finish or roll back what a previous process left half done (table above)."""
        intents = await self.intents.load()
        domains = await self.inventory.refresh(usage=False)
        for uuid, intent in intents.items():
            tracked = domains.get(uuid)
            if tracked is None:
                continue  # another loop's VM (or gone, and its intent with it)
            tracked = await self._settle(tracked, settle_timeout_s)
            await self._reconcile_one(uuid, intent, tracked)
        for uuid, tracked in domains.items():
            if uuid not in intents and tracked.saved:
                vm = self._view(tracked, VMState.SUSPENDED)
                if vm is not None:
                    await self.reporter.vm_suspended(
                        vm, SAVED_OUTSIDE, "saved (managed save) outside the pressure controller"
                    )
        if self._ours:
            # The pressure that suspended them predates us: resume only after a whole
            # transition period of clear signal, as if it had just been met.
            self.state = PressureState(under_pressure=True, last_met_at=self.clock())
        await self._report_status()

    async def _settle(self, tracked: Tracked, timeout_s: float) -> Tracked:
        """Wait while libvirtd is still saving or restoring the domain."""
        deadline = time.monotonic() + timeout_s
        info = tracked.info
        while info.state is DomainState.PAUSED and info.reason in ("save", "starting-up"):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)  # libvirtd's job, not ours: poll its state
            try:
                info = await self.hv.lookup(info.uuid)
            except HypervisorError:
                break
        return Tracked(info, tracked.meta, tracked.rss_bytes)

    async def _reconcile_one(self, uuid: str, intent: Intent, tracked: Tracked) -> None:
        info = tracked.info
        mode = intent.suspend_mode
        suspended = tracked.saved if mode is SuspendMode.SAVE else info.state is DomainState.PAUSED
        vm = self._view(tracked, VMState.SUSPENDED if suspended else VMState.RUNNING, intent)
        if vm is None:
            await self.intents.delete(uuid)
            return
        if (
            intent.action == "resume"
            and info.state is DomainState.PAUSED
            and mode is SuspendMode.SAVE
        ):
            with contextlib.suppress(HypervisorError):
                await self.hv.resume(uuid, mode)  # restored but not yet running: finish it
                suspended = False
        if suspended:
            kept = Intent("suspend", intent.mode, True, intent.memory_bytes, intent.message)
            await self.intents.put(uuid, kept)
            self._ours[uuid] = kept
            await self.reporter.vm_suspended(
                vm, MEMORY_PRESSURE, f"still suspended after an operator restart; {intent.message}"
            )
        elif info.active:
            await self.intents.delete(uuid)
            what = (
                "suspend rolled back"
                if intent.action == "suspend" and not intent.done
                else ("resume completed")
            )
            await self.reporter.vm_resumed(vm, f"{what} after an operator restart")
        else:
            await self.intents.delete(uuid)

    # ----------------------------------------------------------------- the loop

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Sample every `eviction.sampling_interval_s` until `stop` is set (or cancelled)."""
        stop = stop or asyncio.Event()
        interval = self.eviction.sampling_interval_s
        while not stop.is_set():
            started = time.monotonic()
            try:
                await self.step()
            except HypervisorError as error:
                log.warning("pressure step failed: %s", error)
            except Exception:  # a bug must not stop memory protection
                log.exception("pressure step crashed")
            delay = max(0.0, interval - (time.monotonic() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def step(self) -> Decision:
        """One sample, one decision, actions started (not awaited)."""
        read_started = time.monotonic()
        self.inventory.busy = {
            uuid for uuid, f in self._in_flight.items() if f.action in ("suspend", "resume")
        }
        reading = await self.signal.read()
        self._reading = reading
        now = self.clock()
        sample = Sample(reading.available_bytes, now, reading.psi_some_avg10)
        domains = (
            self.inventory.domains
            if isinstance(self.signal, PoolSignal)
            else await self.inventory.refresh(usage=True)
        )
        await self._forget_changed_outside(domains)
        self._expire_credits(now)
        views = self.views()
        # One resume at a time, and the next only on a sample read after the last landed.
        busy = any(f.action in ("suspend", "resume") for f in self._in_flight.values())
        busy = busy or self._last_resume_landed >= read_started
        in_flight_bytes = self._pending_release_bytes(views, reading, read_started)
        decision = decide(
            self.state,
            sample,
            views,
            self.eviction,
            in_flight_bytes=in_flight_bytes,
            resume_allowed=not busy,
        )
        self.state = decision.state
        self.last_decision = decision
        message = self._signal_message(decision)
        for balloon in decision.balloon:
            await self._balloon(balloon.vm, balloon.target_bytes, balloon.reclaim_bytes, now)
        for vm in decision.suspend:
            await self._start_suspend(vm, message)
        for vm in decision.resume:
            await self._start_resume(vm, decision)
        await self._report_guaranteed_only(decision, message)
        await self._report_status()
        return decision

    def _pending_release_bytes(
        self, views: Collection[VMView], reading: SignalReading, read_started: float
    ) -> int:
        """What actions will free that `reading` still counts as used.

        A suspend in flight, and also one that settled after the reading began: the read
        may have seen the VM's memory before the Save released it, while the suspend is
        no longer in flight when the decision is made; asking for that memory again
        would suspend the next VM as well. Where the reading says which VMs it counted
        (pool), that decides; otherwise (host) the timing does, erring towards
        suspending one sample later rather than one VM too many.
        """
        counted = reading.counted
        total = 0
        for uuid, flight in self._in_flight.items():
            if flight.action == "suspend" and counted is not None and uuid not in counted:
                continue  # already gone from the reading
            total += flight.reclaim_bytes
        for vm in views:
            if vm.state is not VMState.SUSPENDED:
                continue
            if self._settled_at.get(vm.key, 0.0) < read_started:
                continue  # released before the read began: the reading has it
            if counted is None or vm.key in counted:
                total += vm.reclaim_bytes
        return total

    async def idle(self) -> None:
        """Wait for every suspend/resume started so far (tests, benchmarks, shutdown)."""
        tasks = [f.task for f in self._in_flight.values() if f.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------- views

    def views(self) -> list[VMView]:
        out = []
        for uuid, tracked in self.inventory.domains.items():
            state = self._state_of(uuid, tracked)
            if state is None:
                continue  # shut off, or paused/saved by someone else: not ours to touch
            vm = self._view(tracked, state, self._ours.get(uuid))
            if vm is not None:
                out.append(vm)
        return out

    def _state_of(self, uuid: str, tracked: Tracked) -> VMState | None:
        flight = self._in_flight.get(uuid)
        if flight is not None and flight.action in ("suspend", "resume"):
            return VMState.SUSPENDING if flight.action == "suspend" else VMState.RESUMING
        intent = self._ours.get(uuid)
        if intent is not None and intent.action == "suspend" and intent.done:
            return VMState.SUSPENDED
        return VMState.RUNNING if tracked.running else None

    def _view(
        self, tracked: Tracked, state: VMState, intent: Intent | None = None
    ) -> VMView | None:
        meta = tracked.meta
        try:
            qos = QOSClass(meta.qos_class)
        except ValueError:
            log.warning(
                "domain %s: unknown qosClass %r, ignored", tracked.info.name, meta.qos_class
            )
            return None
        if state in (VMState.SUSPENDED, VMState.RESUMING) and intent is not None:
            memory = intent.memory_bytes
        else:
            memory = (
                tracked.rss_bytes if tracked.rss_bytes is not None else tracked.info.memory_bytes
            )
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
            suspend_mode=meta.suspend_mode or self.eviction.suspend_mode,
        )

    async def _forget_changed_outside(self, domains: Mapping[str, Tracked]) -> None:
        """A VM we suspended that someone else started or removed is no longer ours."""
        for uuid in list(self._ours):
            if uuid in self._in_flight:
                continue
            if self._settled_at.get(uuid, 0.0) >= self.inventory.refreshed_at:
                continue  # the inventory was read before our own action finished
            tracked = domains.get(uuid)
            intent = self._ours.get(uuid)
            if intent is None:
                continue  # settled by its own task during an earlier await
            still = tracked is not None and (
                tracked.saved
                if intent.suspend_mode is SuspendMode.SAVE
                else tracked.info.state is DomainState.PAUSED
            )
            if not still:
                del self._ours[uuid]
                with contextlib.suppress(HypervisorError):
                    await self.intents.delete(uuid)

    def _expire_credits(self, now: float) -> None:
        for uuid, flight in list(self._in_flight.items()):
            if flight.expires_at is not None and now >= flight.expires_at:
                del self._in_flight[uuid]

    # ------------------------------------------------------------------ actions

    async def _start_suspend(self, vm: VMView, message: str) -> None:
        intent = Intent("suspend", vm.suspend_mode.value, False, vm.memory_bytes, message)
        try:
            await self.intents.put(vm.key, intent)
        except HypervisorError as error:  # no crash-safe suspend without its intent
            await self.reporter.action_failed(vm, "suspend", error.message)
            return
        self._ours[vm.key] = intent
        flight = InFlight("suspend", vm.reclaim_bytes)
        self._in_flight[vm.key] = flight
        await self.reporter.vm_suspending(vm, MEMORY_PRESSURE, message)
        flight.task = asyncio.create_task(self._suspend(vm, intent, message))

    async def _suspend(self, vm: VMView, intent: Intent, message: str) -> None:
        try:
            result = await self.hv.suspend(vm.key, vm.suspend_mode)
        except HypervisorError as error:
            self._in_flight.pop(vm.key, None)
            self._ours.pop(vm.key, None)
            with contextlib.suppress(HypervisorError):
                await self.intents.delete(vm.key)
            await self.reporter.action_failed(vm, "suspend", error.message)
            return
        intent.done = True
        with contextlib.suppress(HypervisorError):  # reconcile reads "saved" from libvirt
            await self.intents.put(vm.key, intent)
        self._in_flight.pop(vm.key, None)
        self._settled_at[vm.key] = time.monotonic()
        released = result.released_bytes
        detail = (
            f"{message}; {vm.suspend_mode.value} took {result.seconds:.2f}s, "
            f"released {mib(released)}"
            if vm.suspend_mode is SuspendMode.SAVE
            else f"{message}; paused (Pause keeps the VM's memory)"
        )
        await self.reporter.vm_suspended(
            replace(vm, state=VMState.SUSPENDED), MEMORY_PRESSURE, detail
        )

    async def _start_resume(self, vm: VMView, decision: Decision) -> None:
        intent = Intent("resume", vm.suspend_mode.value, False, vm.memory_bytes)
        try:
            await self.intents.put(vm.key, intent)
        except HypervisorError as error:
            await self.reporter.action_failed(vm, "resume", error.message)
            return
        self._ours[vm.key] = intent
        flight = InFlight("resume", 0)
        self._in_flight[vm.key] = flight
        available = decision.state.available_bytes
        message = (
            f"memory pressure over: {self._source()} memory.available {mib(available)}, "
            f"{mib(vm.reclaim_bytes)} needed, threshold "
            f"{mib(resume_threshold(self.eviction))} + margin "
            f"{mib(self.eviction.resume_margin_bytes)} still free after resume"
        )
        flight.task = asyncio.create_task(self._resume(vm, message))

    async def _resume(self, vm: VMView, message: str) -> None:
        try:
            await self.hv.resume(vm.key, vm.suspend_mode)
        except HypervisorError as error:
            self._in_flight.pop(vm.key, None)
            kept = Intent("suspend", vm.suspend_mode.value, True, vm.memory_bytes)
            self._ours[vm.key] = kept  # still suspended: the loop tries again later
            with contextlib.suppress(HypervisorError):
                await self.intents.put(vm.key, kept)
            await self.reporter.action_failed(vm, "resume", error.message)
            return
        self._ours.pop(vm.key, None)
        with contextlib.suppress(HypervisorError):
            await self.intents.delete(vm.key)
        self._in_flight.pop(vm.key, None)
        self._settled_at[vm.key] = self._last_resume_landed = time.monotonic()
        await self.reporter.vm_resumed(replace(vm, state=VMState.RUNNING), message)

    async def _balloon(self, vm: VMView, target: int, reclaim: int, now: float) -> None:
        try:
            await self.hv.set_balloon(vm.key, target)
        except HypervisorError as error:
            await self.reporter.action_failed(vm, "balloon", error.message)
            return
        # Credit the estimate for two samples: if the guest does not give it back, the
        # next decisions suspend instead.
        expires = now + 2 * self.eviction.sampling_interval_s
        self._in_flight[vm.key] = InFlight("balloon", reclaim, expires_at=expires)
        await self.reporter.vm_ballooned(
            vm, target, f"ballooned to its request {mib(target)} to free ~{mib(reclaim)}"
        )

    # ---------------------------------------------------------------- reporting

    def _source(self) -> str:
        return self._reading.source if self._reading else self.eviction.signal.value

    def _signal_message(self, decision: Decision) -> str:
        state = decision.state
        threshold = effective_threshold(state, self.eviction)
        psi = ""
        if self._reading is not None and self._reading.psi_some_avg10 is not None:
            psi = f", PSI some avg10 {self._reading.psi_some_avg10:.1f}%"
        return (
            f"{self._source()} memory.available {mib(state.available_bytes)} < "
            f"{state.reason} {mib(threshold)}{psi}; need {mib(decision.needed_bytes)}"
        )

    async def _report_guaranteed_only(self, decision: Decision, message: str) -> None:
        only = decision.guaranteed_only and decision.state.threshold_met
        if only and not self._guaranteed_only:
            await self.reporter.guaranteed_only_pressure(
                f"{message}; only Guaranteed VMs are left running and they are never "
                f"suspended for host pressure: {mib(decision.shortfall_bytes)} short"
            )
        self._guaranteed_only = only

    def status(self) -> PressureStatus:
        counts = {qos.value: 0 for qos in QOSClass}
        for uuid in self._ours.keys() | self._in_flight.keys():  # not every VM's view
            tracked = self.inventory.domains.get(uuid)
            if tracked is None or tracked.meta.qos_class not in counts:
                continue
            if self._state_of(uuid, tracked) in (VMState.SUSPENDED, VMState.SUSPENDING):
                counts[tracked.meta.qos_class] += 1
        return PressureStatus(
            under_pressure=self.state.under_pressure,
            reason=self.state.reason,
            signal=self._source(),
            available_bytes=self.state.available_bytes,
            threshold_bytes=effective_threshold(self.state, self.eviction),
            suspended_by_class=counts,
            guaranteed_only=self._guaranteed_only,
        )

    async def _report_status(self) -> None:
        status = self.status()
        if status.key() != self._last_status:
            self._last_status = status.key()
            await self.reporter.pressure_changed(status)

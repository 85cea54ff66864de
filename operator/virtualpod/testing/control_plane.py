"""The emulator's stand-in control plane for cluster mode: admission, binder, collector.

`running_control_plane(emulator)` installs the Pod admission stand-ins and runs the
stand-in binder (kube-scheduler's part) and garbage collector (kube-controller-manager's
owner-reference part) for the duration of a block. Tests and the demo use it on the
emulator only; a real cluster has the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from virtualpod.testing import admission
from virtualpod.testing.admission import PODS, StandInPodAdmission
from virtualpod.testing.binder import NODES, StandInBinder
from virtualpod.testing.emulator import KubernetesApiEmulator
from virtualpod.testing.objects import VIRTUALPODS
from virtualpod.testing.store import ObjectStore

TICK_SECONDS = 0.05


class StandInGarbageCollector:
    """Deletes companion Pods whose controlling VirtualPod is gone (ownerReferences)."""

    def __init__(self, emulator: KubernetesApiEmulator) -> None:
        self.emulator = emulator

    def collect(self) -> int:
        owners = {vpod["metadata"]["uid"] for vpod in self.emulator.read_objects(VIRTUALPODS.key)}
        collected = 0
        for pod in list(self.emulator.read_objects(PODS)):
            meta = pod["metadata"]
            refs = [ref for ref in meta.get("ownerReferences") or [] if ref.get("controller")]
            if refs and all(ref.get("uid") not in owners for ref in refs):
                self.emulator.delete_object(PODS, meta["namespace"], meta["name"])
                collected += 1
        return collected


@dataclass
class ControlPlane:
    admission: StandInPodAdmission
    binder: StandInBinder
    collector: StandInGarbageCollector


def _wanted(store: ObjectStore, since: int | None) -> tuple[bool, bool]:
    """Whether the binder and the collector have work after the changes since `since`
    (both, when the history no longer has them): the binder after any Pod or Node
    change, the collector after a VirtualPod is deleted or a Pod added."""
    if since is None or store.expired(since):
        return True, True
    bind = collect = False
    for change in store.changes_after(since):
        bind = bind or change.resource_key in (PODS, NODES)
        collect = collect or (change.resource_key, change.type) in (
            (VIRTUALPODS.key, "DELETED"),
            (PODS, "ADDED"),
        )
    return bind, collect


async def _loop(plane: ControlPlane, emulator: KubernetesApiEmulator, tick: float) -> None:
    """A pass after changes that concern it, at most one per `tick`; none while nothing
    changes (as the real ones work from watches, not by polling)."""
    store = emulator.store
    seen: int | None = None
    while True:
        bind, collect = _wanted(store, seen)
        seen = store.rv
        try:
            if bind:
                plane.binder.bind_pending()
            if collect:
                plane.collector.collect()
        except Exception:  # an object changed mid-pass: a whole pass next time
            seen = None
        await asyncio.sleep(tick)
        while store.rv == seen:
            await store.changed.wait()


@contextlib.asynccontextmanager
async def running_control_plane(
    emulator: KubernetesApiEmulator, tick: float = TICK_SECONDS
) -> AsyncIterator[ControlPlane]:
    plane = ControlPlane(
        admission.install(emulator), StandInBinder(emulator), StandInGarbageCollector(emulator)
    )
    task = asyncio.create_task(_loop(plane, emulator, tick), name="stand-in control plane")
    try:
        yield plane
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        emulator.admission.remove(plane.admission)

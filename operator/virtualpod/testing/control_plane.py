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
from virtualpod.testing.informer import Informer
from virtualpod.testing.objects import JSON, VIRTUALPODS
from virtualpod.testing.store import Key, ObjectStore

TICK_SECONDS = 0.05


class StandInGarbageCollector:
    """Deletes companion Pods whose controlling VirtualPod is gone (ownerReferences).

    As kube-controller-manager's collector does from its informers, it keeps the
    VirtualPods' uids and which Pods each controls, and checks only the Pods that changed
    and those of VirtualPods that went since its last pass: after every pass no Pod is
    left without its controller (but for ones whose finalizers hold them), so those are
    the only ones that can have become orphans.
    """

    def __init__(self, emulator: KubernetesApiEmulator) -> None:
        self.emulator = emulator
        self._pods = Informer(emulator.store, PODS)
        self._vpods = Informer(emulator.store, VIRTUALPODS.key)
        #: The uid of every VirtualPod, and the set of them.
        self._uid_of: dict[Key, str] = {}
        self._owners: set[str] = set()
        #: The uids of each Pod's controllers (Pods with any), and the Pods of each uid.
        self._controllers: dict[Key, frozenset[str]] = {}
        self._controlled: dict[str, set[Key]] = {}

    def collect(self) -> int:
        """Delete the orphans among the Pods that may have become ones, in list order; a
        failure leaves the cache to be rebuilt (and every Pod checked) next time."""
        try:
            suspects, collected = self._suspects(), 0
            for key in sorted(suspects, key=self._pods.order.__getitem__):
                refs = self._controllers.get(key)
                if refs and refs.isdisjoint(self._owners):
                    self.emulator.delete_object(PODS, key[1], key[2])
                    collected += 1
        except BaseException:
            self._pods.reset()
            self._vpods.reset()
            raise
        return collected

    def _suspects(self) -> set[Key]:
        """Update the cache; the stored Pods that may have become orphans since."""
        store = self.emulator.store
        vpods, pods = self._vpods.changed(), self._pods.changed()
        rebuilt = vpods is None or pods is None
        if vpods is None:
            self._uid_of, self._owners = {}, set()
            vpods = list(self._vpods.order)
        if pods is None:
            self._controllers, self._controlled = {}, {}
            pods = list(self._pods.order)
        suspects = {key for key in map(self._index, pods) if key is not None}
        for key in vpods:
            gone = self._owner(key, store.objects.get(key))
            if gone is not None:
                suspects.update(self._controlled.get(gone, ()))
        return set(self._pods.order) if rebuilt else suspects

    def _owner(self, key: Key, vpod: JSON | None) -> str | None:
        """Take one VirtualPod's current version (or its deletion); the uid gone, if any."""
        was = self._uid_of.pop(key, None)
        if vpod is not None:
            self._uid_of[key] = uid = vpod["metadata"]["uid"]
            self._owners.add(uid)
            if was == uid:
                return None
        if was is not None:
            self._owners.discard(was)
        return was

    def _index(self, key: Key) -> Key | None:
        """Take one Pod's current version (or its deletion); its key while it is stored."""
        for uid in self._controllers.pop(key, ()):
            self._controlled[uid].discard(key)
            if not self._controlled[uid]:
                del self._controlled[uid]
        pod = self.emulator.store.objects.get(key)
        if pod is None:
            return None
        refs = frozenset(
            ref.get("uid")
            for ref in pod["metadata"].get("ownerReferences") or []
            if ref.get("controller")
        )
        if refs:
            self._controllers[key] = refs
            for uid in refs:
                self._controlled.setdefault(uid, set()).add(key)
        return key


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

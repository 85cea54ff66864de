"""Suspend and resume: Pause stops the vCPUs (memory stays), Save writes RAM to disk.

Save is libvirt's managed save: the QEMU process ends and its memory is freed; the next
start restores the image. Both are idempotent: a VM already paused (Pause) or saved
(Save) is left as is, and resuming a running VM does nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import libvirt

from virtualpod.core.spec import SuspendMode
from virtualpod.libvirt.connection import Connection
from virtualpod.libvirt.errors import InvalidState
from virtualpod.libvirt.state import DomainState
from virtualpod.libvirt.stats import rss_bytes


@dataclass(frozen=True)
class SuspendResult:
    """`released_bytes` is QEMU's RSS before minus after (0 for Pause by design)."""

    mode: SuspendMode
    changed: bool
    seconds: float
    rss_before_bytes: int | None
    rss_after_bytes: int | None

    @property
    def released_bytes(self) -> int | None:
        if self.rss_before_bytes is None or self.rss_after_bytes is None:
            return None
        return max(0, self.rss_before_bytes - self.rss_after_bytes)


@dataclass(frozen=True)
class ResumeResult:
    mode: SuspendMode
    changed: bool
    seconds: float


def _pause(dom: Any) -> SuspendResult:
    before = rss_bytes(dom) if dom.isActive() else None
    if DomainState(dom.state()[0]) is DomainState.PAUSED:
        return SuspendResult(SuspendMode.PAUSE, False, 0.0, before, before)
    if not dom.isActive():
        raise InvalidState(f"cannot pause {dom.name()}: not running")
    t0 = time.monotonic()
    dom.suspend()
    seconds = time.monotonic() - t0
    return SuspendResult(SuspendMode.PAUSE, True, seconds, before, rss_bytes(dom))


def _save(dom: Any) -> SuspendResult:
    if not dom.isActive():
        if dom.hasManagedSaveImage(0):
            return SuspendResult(SuspendMode.SAVE, False, 0.0, 0, 0)
        raise InvalidState(f"cannot save {dom.name()}: not running")
    before = rss_bytes(dom)
    t0 = time.monotonic()
    dom.managedSave(libvirt.VIR_DOMAIN_SAVE_RUNNING)
    seconds = time.monotonic() - t0
    after = rss_bytes(dom) if dom.isActive() else 0
    return SuspendResult(SuspendMode.SAVE, True, seconds, before, after)


def _resume(dom: Any, mode: SuspendMode | None) -> ResumeResult:
    state = DomainState(dom.state()[0])
    saved = not dom.isActive() and bool(dom.hasManagedSaveImage(0))
    actual = mode or (SuspendMode.SAVE if saved else SuspendMode.PAUSE)
    t0 = time.monotonic()
    if state is DomainState.PAUSED:
        dom.resume()  # also covers a SAVE image restored paused
    elif saved:
        dom.create()
        if DomainState(dom.state()[0]) is DomainState.PAUSED:
            dom.resume()
    elif dom.isActive():
        return ResumeResult(actual, False, 0.0)
    else:
        raise InvalidState(f"cannot resume {dom.name()}: shut off, no saved image")
    return ResumeResult(actual, True, time.monotonic() - t0)


class Suspender(Connection):
    """Pause or save a VM, and undo it."""

    async def suspend(self, uuid: str, mode: SuspendMode) -> SuspendResult:
        """PAUSE stops the vCPUs (RAM stays); SAVE writes RAM to disk and frees it."""
        return await self._with_domain(uuid, _pause if mode is SuspendMode.PAUSE else _save)

    async def resume(self, uuid: str, mode: SuspendMode | None = None) -> ResumeResult:
        """Undo `suspend`: resume a paused VM, or restore a saved one.

        mode None infers it from the state. Idempotent when already running.
        """
        return await self._with_domain(uuid, lambda dom: _resume(dom, mode))

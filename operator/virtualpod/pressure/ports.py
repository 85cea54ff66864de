"""What the pressure package needs from the hypervisor and gives to a reporter."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Protocol

from virtualpod.core.spec import SuspendMode
from virtualpod.libvirt.hypervisor import (
    DomainInfo,
    HostMemory,
    ResumeResult,
    SuspendResult,
    TuneResult,
    VMMemory,
)
from virtualpod.pressure.policy import VMView


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

"""Pressure signals: memory.available of the host, or of the VM pool, plus optional PSI.

`HostSignal` reads host memory through the hypervisor (free + buffers + cache, as
/proc/meminfo); `PoolSignal` is kubelet's allocatable signal for the VM pool: allocatable
minus the summed QEMU RSS of our VMs. Either may add kernel PSI (`/proc/pressure/memory`,
`some avg10`) as an early warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from virtualpod.core.settings import PressureSignal, Settings
from virtualpod.pressure.inventory import Inventory
from virtualpod.pressure.ports import HypervisorPort

PSI_PATH = Path("/proc/pressure/memory")


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


def parse_psi(text: str) -> float | None:
    """`some avg10` of a /proc/pressure file's text, in percent; None if it has none."""
    for line in text.splitlines():
        if line.startswith("some "):
            try:
                fields = dict(part.split("=", 1) for part in line.split()[1:])
                return float(fields["avg10"])
            except (ValueError, KeyError):
                return None
    return None


def read_psi(path: Path = PSI_PATH) -> float | None:
    """`some avg10` of /proc/pressure/memory in percent; None where PSI is unavailable."""
    try:
        return parse_psi(path.read_text(encoding="ascii"))
    except (OSError, ValueError):
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
        used = sum(d.usage_bytes for d in active.values())
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

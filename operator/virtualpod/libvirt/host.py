"""The host: its memory and cpus as libvirt reports them, and the QEMU processes on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt

from virtualpod.core.quantity import MIB, kib_to_bytes
from virtualpod.libvirt.connection import Connection
from virtualpod.libvirt.errors import Unsupported
from virtualpod.libvirt.state import domain_info

QEMU_PID_DIR = Path("/run/libvirt/qemu")
PROC = Path("/proc")


@dataclass(frozen=True)
class HostMemory:
    """Node memory from getMemoryStats(ALL_CELLS), i.e. /proc/meminfo, in bytes."""

    total_bytes: int
    free_bytes: int
    buffers_bytes: int
    cached_bytes: int

    @property
    def available_bytes(self) -> int:
        """Free plus reclaimable page cache: what a new VM could get without swapping."""
        return self.free_bytes + self.buffers_bytes + self.cached_bytes


@dataclass(frozen=True)
class HostCpus:
    cpus: int
    model: str
    mhz: int


@dataclass(frozen=True)
class HostCapacity:
    """What the host offers VMs before reservations: cpus and total memory."""

    cpus: int
    memory_bytes: int


@dataclass(frozen=True)
class OomScoreResult:
    """Best effort: `applied` False with a `detail` is not an error."""

    applied: bool
    pid: int | None
    value: int
    detail: str = ""


def host_memory_from(stats: dict[str, int]) -> HostMemory:
    """getMemoryStats' KiB fields to bytes."""
    return HostMemory(
        total_bytes=kib_to_bytes(stats["total"]),
        free_bytes=kib_to_bytes(stats["free"]),
        buffers_bytes=kib_to_bytes(stats.get("buffers", 0)),
        cached_bytes=kib_to_bytes(stats.get("cached", 0)),
    )


def write_oom_score_adj(pid: int, value: int, proc: Path = PROC) -> OomScoreResult:
    """Blocking: write `value` to the oom_score_adj of `pid`, if it is a QEMU process."""
    process = proc / str(pid)
    try:
        if not (process / "comm").read_text().startswith("qemu"):
            return OomScoreResult(False, pid, value, "pid is not a QEMU process")
        (process / "oom_score_adj").write_text(f"{value}\n")
    except OSError as e:
        return OomScoreResult(False, pid, value, str(e))
    return OomScoreResult(True, pid, value)


class Host(Connection):
    """Host memory and cpus, and the per-process settings libvirt has no API for."""

    async def host_memory(self) -> HostMemory:
        """Whole-host memory (all NUMA cells). Unsupported on the test driver."""
        all_cells = libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS
        return await self._call(lambda conn: host_memory_from(conn.getMemoryStats(all_cells, 0)))

    async def host_cpus(self) -> HostCpus:
        def read(conn: Any) -> HostCpus:
            model, _mem_mib, cpus, mhz, *_ = conn.getInfo()
            return HostCpus(cpus=int(cpus), model=str(model), mhz=int(mhz))

        return await self._call(read)

    async def host_capacity(self) -> HostCapacity:
        """Host cpus and total memory: node memory stats over all NUMA cells where the
        driver has them, else node info (the test driver has no memory stats)."""
        cpus = (await self.host_cpus()).cpus
        try:
            memory = (await self.host_memory()).total_bytes
        except Unsupported:
            memory = await self._call(lambda conn: int(conn.getInfo()[1]) * MIB)
        return HostCapacity(cpus=cpus, memory_bytes=memory)

    async def qemu_pid(self, uuid: str) -> int | None:
        """The QEMU pid of a running domain on this host (from libvirt's pid file)."""
        if not self.local:
            return None
        info = await self._with_domain(uuid, domain_info)
        if not info.active:
            return None
        try:
            return int((QEMU_PID_DIR / f"{info.name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    async def set_oom_score_adj(self, uuid: str, value: int) -> OomScoreResult:
        """Write the kubelet-policy OOM score (computed by `tuning`) for the QEMU process.

        Best effort: only possible when the operator runs on the host; reported, not raised.
        """
        pid = await self.qemu_pid(uuid)
        if pid is None:
            return OomScoreResult(False, None, value, "no local QEMU process")
        return await self._thread(write_oom_score_adj, pid, value)

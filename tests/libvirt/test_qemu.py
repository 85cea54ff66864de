"""What only a real libvirtd + QEMU can show: cgroup files, processes, RSS, restarts."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import tempfile
import uuid as uuidlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.libvirt.conftest import QEMU_URI, REPO, VMs, qemu_only
from tests.waiting import async_wait_for, wait_for
from virtualpod.core.plan import VMPlan
from virtualpod.libvirt.hypervisor import (
    CpuTune,
    DiskImageMissing,
    DomainState,
    EventKind,
    Hypervisor,
    MemTune,
    SuspendMode,
    Unreachable,
)

pytestmark = qemu_only
MIB = 1024 * 1024
PAGE = 4096
CGROUP_V1 = Path("/sys/fs/cgroup")
LIBVIRTD_SH = REPO / "scripts" / "libvirtd.sh"


@pytest.fixture
def uri() -> str:
    return QEMU_URI


def cgroup_dir(pid: int, controller: str) -> Path:
    """The domain's cgroup (QEMU's main thread sits in its `emulator` child)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            domain = path.removesuffix("/emulator")
            return CGROUP_V1 / controller / domain.lstrip("/")
    raise AssertionError(f"no {controller} cgroup for {pid}")


def read_int(path: Path) -> int:
    return int(path.read_text().split()[0])


def memcg_bytes(limit: int | None) -> int | None:
    """What the kernel stores for a limit libvirt writes in KiB: whole pages."""
    if limit is None:
        return None
    return (-(-limit // 1024) * 1024) // PAGE * PAGE


UNLIMITED_MEMCG = 2**62  # cgroup v1 reports "no limit" as ~2^63 rounded to pages


def assert_cgroups_match(pid: int, cputune: CpuTune, memtune: MemTune) -> None:
    cpu, memory = cgroup_dir(pid, "cpu"), cgroup_dir(pid, "memory")
    assert read_int(cpu / "cpu.shares") == cputune.shares
    if cputune.quota_us is None:
        assert read_int(cpu / "cpu.cfs_quota_us") == -1
    else:
        assert read_int(cpu / "cpu.cfs_period_us") == cputune.period_us
        assert read_int(cpu / "cpu.cfs_quota_us") == cputune.quota_us
    for name, expected in (
        ("memory.limit_in_bytes", memtune.hard_limit_bytes),
        ("memory.soft_limit_in_bytes", memtune.soft_limit_bytes),
    ):
        value = read_int(memory / name)
        if expected is None:
            assert value >= UNLIMITED_MEMCG, name
        else:
            assert value == memcg_bytes(expected), name


async def qemu_pid(hv: Hypervisor, plan: VMPlan) -> int:
    pid = await hv.qemu_pid(plan.uuid)
    assert pid is not None
    return pid


@pytest.mark.parametrize("kind", ["burstable", "burstable-limited", "guaranteed", "besteffort"])
async def test_cgroups_equal_what_the_core_computed(hv: Hypervisor, vms: VMs, kind: str) -> None:
    if hv.cgroup_version != 1:
        pytest.skip("cgroup v1 file layout checked here; v2 host")
    plan = await vms.running(kind)
    assert plan.qos_class.value.lower().replace("-", "") in kind.replace("-limited", "")
    assert_cgroups_match(await qemu_pid(hv, plan), plan.cputune, plan.memtune)


async def test_live_tuning_changes_the_cgroup(hv: Hypervisor, vms: VMs) -> None:
    plan = await vms.running("burstable")
    pid = await qemu_pid(hv, plan)
    cputune = CpuTune(shares=3072, period_us=50000, quota_us=75000)
    memtune = MemTune(hard_limit_bytes=700 * MIB + 123, soft_limit_bytes=200 * MIB)
    await hv.set_cputune(plan.uuid, cputune)
    await hv.set_memtune(plan.uuid, memtune)
    assert_cgroups_match(pid, cputune, memtune)
    # Removing the quota and the limits again.
    await hv.set_cputune(plan.uuid, CpuTune(shares=2))
    await hv.set_memtune(plan.uuid, MemTune())
    assert_cgroups_match(pid, CpuTune(shares=2), MemTune())


async def test_save_removes_the_process_and_resume_brings_it_back(hv: Hypervisor, vms: VMs) -> None:
    plan = await vms.running("guaranteed")
    pid = await qemu_pid(hv, plan)
    cpu_cgroup = cgroup_dir(pid, "cpu")
    tuned = CpuTune(shares=777, period_us=100000, quota_us=60000)
    await hv.set_cputune(plan.uuid, tuned)
    result = await hv.suspend(plan.uuid, SuspendMode.SAVE)
    assert result.released_bytes is not None
    assert result.released_bytes > 10 * MIB  # a firmware-only guest: QEMU's ~40 MB
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 10, what="QEMU process to exit")
    wait_for(lambda: not cpu_cgroup.exists(), 10, what="cgroup removal")
    assert await hv.qemu_pid(plan.uuid) is None
    await hv.resume(plan.uuid)
    info = await hv.lookup(plan.uuid)
    assert info.state is DomainState.RUNNING
    new_pid = await qemu_pid(hv, plan)
    assert new_pid != pid
    assert_cgroups_match(new_pid, tuned, plan.memtune)  # live tuning survived the save


async def test_pause_keeps_the_process(hv: Hypervisor, vms: VMs) -> None:
    plan = await vms.running("besteffort")
    pid = await qemu_pid(hv, plan)
    result = await hv.suspend(plan.uuid, SuspendMode.PAUSE)
    assert result.seconds < 1.0
    assert Path(f"/proc/{pid}").exists()
    assert await hv.qemu_pid(plan.uuid) == pid


async def test_oom_score_adj(hv: Hypervisor, vms: VMs) -> None:
    plan = await vms.running("burstable")
    capacity = (await hv.host_memory()).total_bytes
    value = plan.oom_score_adj(capacity)
    result = await hv.set_oom_score_adj(plan.uuid, value)
    assert result.applied, result.detail
    assert read_int(Path(f"/proc/{result.pid}/oom_score_adj")) == value
    await hv.destroy(plan.uuid)
    stopped = await hv.set_oom_score_adj(plan.uuid, value)
    assert not stopped.applied


async def test_missing_disk_image(hv: Hypervisor, vms: VMs, tmp_path: Path) -> None:
    plan = vms.plan("burstable")
    missing = tmp_path / "gone.qcow2"
    xml = plan.domain_xml.replace(
        "<devices>",
        f"<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file='{missing}'/><target dev='vda' bus='virtio'/></disk>",
        1,
    )
    await hv.ensure_defined(xml)
    with pytest.raises(DiskImageMissing, match=str(missing)):
        await hv.start(plan.uuid)
    assert not (await hv.lookup(plan.uuid)).active


def libvirtd(command: str) -> str:
    return subprocess.run(
        [str(LIBVIRTD_SH), command], check=True, capture_output=True, text=True, timeout=120
    ).stdout


@pytest.fixture
def owned_libvirtd() -> None:
    status = subprocess.run([str(LIBVIRTD_SH), "status"], capture_output=True, text=True)
    # "libvirtd: running (PID, started here)"; another checkout's daemon is "(not started here)"
    if not re.search(r"^libvirtd: running \(\d+, started here\)", status.stdout, flags=re.M):
        pytest.skip("libvirtd was not started by scripts/libvirtd.sh: not restarting it")


@pytest.mark.usefixtures("owned_libvirtd")
async def test_libvirtd_restart_does_not_break_the_backend(hv: Hypervisor, vms: VMs) -> None:
    plan = await vms.running("burstable")
    connects = hv.connects
    async with hv.subscribe() as events:
        await asyncio.to_thread(libvirtd, "restart")
        # The very next call succeeds (reconnect + retry) ...
        info = await hv.lookup(plan.uuid)
        assert info.state is DomainState.RUNNING  # domains survive a daemon restart
        assert hv.connects > connects
        # ... and lifecycle events flow again on the new connection.
        await hv.suspend(plan.uuid, SuspendMode.PAUSE)

        async def paused() -> bool:
            while True:
                event = await events.next()
                if event.uuid == plan.uuid and event.kind is EventKind.PAUSED:
                    return True

        assert await asyncio.wait_for(paused(), 10)


@pytest.mark.usefixtures("owned_libvirtd")
async def test_daemon_down_is_unreachable_then_recovers(uri: str) -> None:
    async with Hypervisor(uri, reconnect_timeout=1.0) as hv:
        await hv.host_cpus()
        await asyncio.to_thread(libvirtd, "stop-libvirtd")
        try:
            with pytest.raises(Unreachable):
                await hv.host_cpus()
        finally:
            await asyncio.to_thread(libvirtd, "start")
        assert (await hv.host_cpus()).cpus >= 1


# ----------------------------------------------------------------- a real guest (TCG)


class Guest:
    """The TCG test guest's serial console, as a unix socket (see scripts/guest.sh)."""

    def __init__(self, socket: Path, log: Path) -> None:
        self.socket, self.log = socket, log
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        await self.disconnect()
        self.reader, self.writer = await asyncio.open_unix_connection(str(self.socket))

    async def disconnect(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def command(self, line: str, expect: str, timeout: float = 60) -> None:
        assert self.reader is not None
        assert self.writer is not None
        self.writer.write(line.encode() + b"\n")
        await self.writer.drain()
        seen = b""

        async def read() -> None:
            nonlocal seen
            while expect.encode() not in seen:
                chunk = await self.reader.read(4096)  # type: ignore[union-attr]
                assert chunk, f"console closed; got {seen!r}"
                seen += chunk

        await asyncio.wait_for(read(), timeout)


def guest_xml(
    name: str, uuid: str, kernel: str, initrd: str, socket: Path, log: Path, memory_mib: int
) -> str:
    return f"""<domain type='qemu'>
  <name>{name}</name><uuid>{uuid}</uuid>
  <memory unit='MiB'>{memory_mib}</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd><cmdline>console=ttyS0 quiet</cmdline></os>
  <on_crash>destroy</on_crash>
  <devices>
    <serial type='unix'><source mode='bind' path='{socket}'/>
      <log file='{log}' append='off'/><target port='0'/></serial>
    <memballoon model='virtio'><stats period='1'/></memballoon>
  </devices>
</domain>"""


@pytest.fixture
async def guest(
    hv: Hypervisor, vms: VMs, guest_image: tuple[str, str]
) -> AsyncIterator[tuple[str, Guest]]:
    kernel, initrd = guest_image
    work = Path(tempfile.mkdtemp(prefix="vpg-"))  # short: unix socket paths are limited
    uuid = vms.track(str(uuidlib.uuid4()))
    # Not <name>.log: that is the domain's own QEMU log.
    socket = work / "console.sock"
    log = Path(f"/var/log/libvirt/qemu/vpg-{uuid[:8]}.serial.log")
    await hv.ensure_defined(
        guest_xml(f"vpg-{uuid[:8]}", uuid, kernel, initrd, socket, log, memory_mib=384)
    )
    await hv.start(uuid)
    wait_for(
        lambda: log.exists() and "VPGUEST READY" in log.read_text(errors="replace"),
        90,
        interval=0.2,
        what="guest boot",
    )
    console = Guest(socket, log)
    await console.connect()
    yield uuid, console
    await console.disconnect()
    log.unlink(missing_ok=True)


async def rss(hv: Hypervisor, uuid: str) -> int:
    value = (await hv.memory_stats(uuid)).rss_bytes
    assert value is not None
    return value


async def test_guest_memory_rss_balloon_and_save(hv: Hypervisor, guest: tuple[str, Guest]) -> None:
    uuid, console = guest
    assert "balloon=yes" in console.log.read_text(errors="replace")
    before = await rss(hv, uuid)
    await console.command("touch 192", "VPGUEST TOUCHED 192")
    grown = await rss(hv, uuid)
    assert grown - before >= 150 * MIB, (before, grown)

    # The balloon driver reports guest-side numbers.
    stats = await async_wait_for(lambda: hv.memory_stats(uuid), 15, 0.2, what="balloon stats")
    await async_wait_for(lambda: _has_usable(hv, uuid), 15, 0.2, what="usable in stats")
    assert stats.actual_bytes == 384 * MIB

    # Freed in the guest, then ballooned away: the host gets the memory back.
    await console.command("free", "VPGUEST FREED")
    target = 160 * MIB
    await hv.set_balloon(uuid, target)
    await async_wait_for(lambda: _actual_is(hv, uuid, target), 30, 0.2, what="balloon")
    shrunk = await async_wait_for(
        lambda: _rss_below(hv, uuid, grown - 100 * MIB), 30, 0.2, what="RSS drop after ballooning"
    )
    assert shrunk < grown - 100 * MIB

    # Save frees everything; the restored guest still has its RAM (state counter).
    await hv.set_balloon(uuid, 384 * MIB)
    await console.command("touch 32", "VPGUEST TOUCHED 32")
    saved = await hv.suspend(uuid, SuspendMode.SAVE)
    assert saved.released_bytes is not None
    assert saved.released_bytes >= 100 * MIB
    assert (await hv.lookup(uuid)).state is DomainState.SHUTOFF
    await hv.resume(uuid)
    await console.connect()  # a new QEMU process listens on the socket
    await console.command("touch 16", "VPGUEST TOUCHED 48")


async def _has_usable(hv: Hypervisor, uuid: str) -> bool:
    return (await hv.memory_stats(uuid)).usable_bytes is not None


async def _actual_is(hv: Hypervisor, uuid: str, target: int) -> bool:
    return (await hv.memory_stats(uuid)).actual_bytes == target


async def _rss_below(hv: Hypervisor, uuid: str, limit: int) -> int:
    value = await rss(hv, uuid)
    return value if value < limit else 0

"""hypervisor.py on libvirt's test driver, and on real QEMU when available (`uri`)."""

from __future__ import annotations

import asyncio
import uuid as uuidlib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.libvirt.conftest import TEST_URI, VMs
from virtualpod.libvirt.hypervisor import (
    CpuTune,
    DomainEvent,
    DomainNotFound,
    DomainState,
    EventKind,
    EventStream,
    HardLimitBelowUsage,
    Hypervisor,
    InvalidState,
    MemTune,
    SuspendMode,
    Unsupported,
    XMLRejected,
)

MIB = 1024 * 1024


async def until_kind(
    events: EventStream, uuid: str, kind: EventKind, timeout: float = 15.0
) -> DomainEvent:
    """Next event of `kind` for `uuid` (others are skipped)."""

    async def find() -> DomainEvent:
        while True:
            event = await events.next()
            if event.uuid == uuid and event.kind is kind:
                return event

    return await asyncio.wait_for(find(), timeout)


async def test_define_twice_is_one_domain(hv: Hypervisor, vms: VMs) -> None:
    plan = vms.plan("burstable")
    first = await hv.ensure_defined(plan.domain_xml)
    second = await hv.ensure_defined(plan.domain_xml)
    assert (first.created, first.changed) == (True, True)
    assert (second.created, second.changed, second.restart_needed) == (False, False, ())
    assert first.uuid == second.uuid == plan.uuid
    ours = [d for d in await hv.list_domains() if d.uuid == plan.uuid]
    assert len(ours) == 1
    assert ours[0].name == plan.domain_name
    assert (await hv.lookup_name(plan.domain_name)).uuid == plan.uuid
    assert (await hv.lookup(plan.uuid)).state is DomainState.SHUTOFF


async def test_list_domains_only_ours(hv: Hypervisor, vms: VMs) -> None:
    plan = vms.plan("besteffort")
    await hv.ensure_defined(plan.domain_xml)
    foreign = vms.track(str(uuidlib.uuid4()))
    root = ET.fromstring(plan.domain_xml)
    root.find("name").text = f"foreign-{foreign[:8]}"  # type: ignore[union-attr]
    root.find("uuid").text = foreign  # type: ignore[union-attr]
    root.remove(root.find("metadata"))  # type: ignore[arg-type]
    await hv.ensure_defined(ET.tostring(root, encoding="unicode"))
    uuids = {d.uuid for d in await hv.list_domains()}
    assert plan.uuid in uuids
    assert foreign not in uuids


async def test_update_reports_what_needs_a_restart(hv: Hypervisor, vms: VMs) -> None:
    plan = vms.plan("burstable")
    await hv.ensure_defined(plan.domain_xml)
    await hv.start(plan.uuid)
    root = ET.fromstring(plan.domain_xml)
    root.find("vcpu").text = str(plan.size.vcpus + 1)  # type: ignore[union-attr]
    for tag in ("memory", "currentMemory"):
        element = root.find(tag)
        assert element is not None
        element.text = str(int(element.text or 0) * 2)
    result = await hv.ensure_defined(ET.tostring(root, encoding="unicode"))
    assert (result.created, result.changed) == (False, True)
    assert set(result.restart_needed) == {"vcpus", "max_memory"}
    info = await hv.lookup(plan.uuid)
    assert info.vcpus == plan.size.vcpus  # the running VM is unchanged
    config = ET.fromstring(await hv.xml(plan.uuid, inactive=True))
    assert config.findtext("vcpu") == str(plan.size.vcpus + 1)


async def test_rejected_xml_keeps_libvirts_message(hv: Hypervisor, vms: VMs) -> None:
    plan = vms.plan("burstable")
    bad = plan.domain_xml.replace('<memory unit="KiB">', '<memory unit="parsecs">')
    assert bad != plan.domain_xml
    with pytest.raises(XMLRejected) as info:
        await hv.ensure_defined(bad)
    assert "parsecs" in info.value.message or "unit" in info.value.message.lower()
    assert info.value.libvirt_code is not None
    with pytest.raises(XMLRejected, match="well-formed"):
        await hv.ensure_defined("<domain>")
    with pytest.raises(XMLRejected, match="uuid"):
        await hv.ensure_defined("<domain type='kvm'><name>x</name></domain>")
    assert not await hv.exists(plan.uuid)


async def test_same_name_other_uuid_is_rejected(hv: Hypervisor, vms: VMs) -> None:
    plan = vms.plan("burstable")
    await hv.ensure_defined(plan.domain_xml)
    other = vms.track(str(uuidlib.uuid4()))
    with pytest.raises(XMLRejected) as info:
        await hv.ensure_defined(plan.domain_xml.replace(plan.uuid, other))
    assert plan.domain_name in info.value.message
    assert not await hv.exists(other)


async def test_lifecycle_is_idempotent(hv: Hypervisor, vms: VMs) -> None:
    plan = vms.plan("guaranteed")
    await hv.ensure_defined(plan.domain_xml)
    first, again = await hv.start(plan.uuid), await hv.start(plan.uuid)
    assert (first.started, again.started) == (True, False)
    assert (await hv.lookup(plan.uuid)).state is DomainState.RUNNING
    assert await hv.destroy(plan.uuid) is True
    assert await hv.destroy(plan.uuid) is False
    info = await hv.lookup(plan.uuid)
    assert (info.state, info.reason) == (DomainState.SHUTOFF, "destroyed")
    assert await hv.undefine(plan.uuid) is True
    assert await hv.undefine(plan.uuid) is False
    with pytest.raises(DomainNotFound):
        await hv.lookup(plan.uuid)


async def test_stop_ends_a_paused_domain(hv: Hypervisor, vms: VMs) -> None:
    plan = await vms.running("besteffort")
    await hv.suspend(plan.uuid, SuspendMode.PAUSE)
    assert await hv.stop(plan.uuid, grace_seconds=5) is True
    assert not (await hv.lookup(plan.uuid)).active
    assert await hv.stop(plan.uuid) is False


async def test_unknown_domain(hv: Hypervisor) -> None:
    missing = str(uuidlib.uuid4())
    for call in (
        hv.lookup(missing),
        hv.start(missing),
        hv.destroy(missing),
        hv.suspend(missing, SuspendMode.SAVE),
        hv.memory_stats(missing),
    ):
        with pytest.raises(DomainNotFound):
            await call
    with pytest.raises(DomainNotFound):
        await hv.lookup_name(f"no-such-{missing[:8]}")
    assert await hv.undefine(missing) is False
    assert await hv.exists(missing) is False


async def test_pause_keeps_memory(hv: Hypervisor, vms: VMs) -> None:
    plan = await vms.running("burstable")
    result = await hv.suspend(plan.uuid, SuspendMode.PAUSE)
    assert result.changed
    assert result.mode is SuspendMode.PAUSE
    info = await hv.lookup(plan.uuid)
    assert (info.state, info.reason) == (DomainState.PAUSED, "user")
    assert result.rss_before_bytes is not None
    assert result.rss_after_bytes is not None
    # vCPUs stop, RAM stays: nothing is released (a page or two of QEMU's own churn
    # allowed). RSS may still grow: a guest started a moment ago is still mapping memory.
    assert result.rss_after_bytes >= result.rss_before_bytes - 2 * MIB
    assert not (await hv.suspend(plan.uuid, SuspendMode.PAUSE)).changed
    resumed = await hv.resume(plan.uuid)
    assert resumed.changed
    assert resumed.mode is SuspendMode.PAUSE
    assert (await hv.lookup(plan.uuid)).state is DomainState.RUNNING
    assert not (await hv.resume(plan.uuid)).changed


async def test_save_frees_and_restore_runs(hv: Hypervisor, vms: VMs) -> None:
    plan = await vms.running("burstable")
    result = await hv.suspend(plan.uuid, SuspendMode.SAVE)
    assert result.changed
    assert result.rss_after_bytes == 0
    assert result.released_bytes == result.rss_before_bytes
    assert result.released_bytes is not None
    assert result.released_bytes > 0
    info = await hv.lookup(plan.uuid)
    assert (info.state, info.reason, info.has_managed_save) == (DomainState.SHUTOFF, "saved", True)
    assert not (await hv.suspend(plan.uuid, SuspendMode.SAVE)).changed
    with pytest.raises(InvalidState):
        await hv.suspend(plan.uuid, SuspendMode.PAUSE)
    resumed = await hv.resume(plan.uuid)
    assert resumed.changed
    assert resumed.mode is SuspendMode.SAVE
    info = await hv.lookup(plan.uuid)
    assert info.state is DomainState.RUNNING
    assert not info.has_managed_save


async def test_start_restores_a_saved_domain(hv: Hypervisor, vms: VMs) -> None:
    plan = await vms.running("besteffort")
    await hv.suspend(plan.uuid, SuspendMode.SAVE)
    result = await hv.start(plan.uuid)
    assert (result.started, result.restored) == (True, True)


async def test_undefine_removes_managed_save(hv: Hypervisor, vms: VMs) -> None:
    plan = await vms.running("besteffort")
    await hv.suspend(plan.uuid, SuspendMode.SAVE)
    assert (await hv.lookup(plan.uuid)).has_managed_save
    assert await hv.undefine(plan.uuid) is True
    # Defining it again must boot fresh, not restore a stale image.
    await hv.ensure_defined(plan.domain_xml)
    info = await hv.lookup(plan.uuid)
    assert not info.has_managed_save
    assert (await hv.start(plan.uuid)).restored is False


async def test_lifecycle_events(hv: Hypervisor, vms: VMs) -> None:
    plan = vms.plan("burstable")
    async with hv.subscribe() as events:
        await hv.ensure_defined(plan.domain_xml)
        await until_kind(events, plan.uuid, EventKind.DEFINED)
        await hv.start(plan.uuid)
        await until_kind(events, plan.uuid, EventKind.STARTED)
        await hv.suspend(plan.uuid, SuspendMode.PAUSE)
        await until_kind(events, plan.uuid, EventKind.PAUSED)
        await hv.resume(plan.uuid)
        await until_kind(events, plan.uuid, EventKind.RESUMED)
        await hv.suspend(plan.uuid, SuspendMode.SAVE)
        saved = await until_kind(events, plan.uuid, EventKind.SAVED)
        assert saved.name == plan.domain_name
        await hv.resume(plan.uuid)
        await until_kind(events, plan.uuid, EventKind.STARTED)
        await hv.destroy(plan.uuid)
        await until_kind(events, plan.uuid, EventKind.STOPPED)
        await hv.undefine(plan.uuid)
        await until_kind(events, plan.uuid, EventKind.UNDEFINED)


async def test_memtune_live_and_persistent(hv: Hypervisor, vms: VMs) -> None:
    plan = await vms.running("burstable")
    tune = MemTune(hard_limit_bytes=512 * MIB, soft_limit_bytes=96 * MIB)
    result = await hv.set_memtune(plan.uuid, tune)
    assert result.live
    params = await hv.memory_parameters(plan.uuid)
    assert params["hard_limit"] == 512 * 1024
    assert params["soft_limit"] == 96 * 1024
    config = ET.fromstring(await hv.xml(plan.uuid, inactive=True))
    assert config.findtext("memtune/hard_limit") == str(512 * 1024)
    # Removing the limit again: libvirt's "unlimited".
    await hv.set_memtune(plan.uuid, MemTune())
    assert (await hv.memory_parameters(plan.uuid))["hard_limit"] >= 2**53 - 1


async def test_memtune_on_a_stopped_domain_is_config_only(hv: Hypervisor, vms: VMs) -> None:
    plan = vms.plan("burstable")
    await hv.ensure_defined(plan.domain_xml)
    result = await hv.set_memtune(plan.uuid, MemTune(soft_limit_bytes=64 * MIB))
    assert not result.live
    config = ET.fromstring(await hv.xml(plan.uuid, inactive=True))
    assert config.findtext("memtune/soft_limit") == str(64 * 1024)


async def test_hard_limit_below_usage_is_refused(hv: Hypervisor, vms: VMs) -> None:
    plan = await vms.running("guaranteed")
    stats = await hv.memory_stats(plan.uuid)
    assert stats.rss_bytes is not None
    assert stats.rss_bytes > 4 * MIB
    with pytest.raises(HardLimitBelowUsage) as info:
        await hv.set_memtune(plan.uuid, MemTune(hard_limit_bytes=stats.rss_bytes // 4))
    assert info.value.usage_bytes >= stats.rss_bytes // 2
    assert (await hv.lookup(plan.uuid)).state is DomainState.RUNNING


async def test_balloon_target(hv: Hypervisor, vms: VMs) -> None:
    plan = vms.plan("burstable")
    await hv.ensure_defined(plan.domain_xml)
    target = plan.size.memory_bytes // 2
    assert not (await hv.set_balloon(plan.uuid, target)).live
    assert (await hv.lookup(plan.uuid)).memory_bytes == target
    with pytest.raises(Exception, match="memory"):
        await hv.set_balloon(plan.uuid, plan.size.memory_bytes * 4)


async def test_memory_stats(hv: Hypervisor, vms: VMs) -> None:
    plan = await vms.running("besteffort")
    stats = await hv.memory_stats(plan.uuid)
    assert stats.actual_bytes == plan.size.memory_bytes
    assert stats.rss_bytes is not None
    assert stats.rss_bytes > 0
    await hv.destroy(plan.uuid)
    with pytest.raises(InvalidState):
        await hv.memory_stats(plan.uuid)


async def test_host_cpus(hv: Hypervisor) -> None:
    assert (await hv.host_cpus()).cpus >= 1


async def test_host_capacity(hv: Hypervisor, uri: str) -> None:
    capacity = await hv.host_capacity()
    assert capacity.cpus == (await hv.host_cpus()).cpus
    if uri == TEST_URI:  # no node memory stats: node info's total (all cells) is used
        assert capacity.memory_bytes > 0
        return
    assert capacity.memory_bytes == (await hv.host_memory()).total_bytes


async def test_cputune(hv: Hypervisor, vms: VMs, uri: str) -> None:
    plan = await vms.running("besteffort")
    tune = CpuTune(shares=1536, period_us=100000, quota_us=150000)
    if uri == TEST_URI:  # the test driver has no scheduler parameters
        with pytest.raises(Unsupported):
            await hv.set_cputune(plan.uuid, tune)
        return
    assert (await hv.set_cputune(plan.uuid, tune)).live
    live = await hv.scheduler_parameters(plan.uuid)
    assert live["cpu_shares"] == hv.cpu_shares_value(1536)
    assert (live["global_period"], live["global_quota"]) == (100000, 150000)
    config = await hv.scheduler_parameters(plan.uuid, live=False)
    assert config["global_quota"] == 150000
    await hv.set_cputune(plan.uuid, CpuTune(shares=2))
    assert (await hv.scheduler_parameters(plan.uuid))["global_quota"] < 0


async def test_host_memory(hv: Hypervisor, uri: str) -> None:
    if uri == TEST_URI:
        with pytest.raises(Unsupported):
            await hv.host_memory()
        return
    memory = await hv.host_memory()
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    total = int(meminfo["MemTotal"].split()[0]) * 1024
    assert memory.total_bytes == total
    assert 0 < memory.free_bytes <= memory.available_bytes <= total

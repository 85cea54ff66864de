"""`sync(plan)`: one reconcile in one call, on the test driver and on QEMU (`uri`)."""

from __future__ import annotations

import dataclasses

from tests.libvirt.conftest import TEST_URI, VMs
from virtualpod.core.domain import DomainSpec
from virtualpod.core.spec import SuspendMode
from virtualpod.libvirt.hypervisor import (
    DefineResult,
    DomainInfo,
    DomainState,
    HardLimitBelowUsage,
    Hypervisor,
    TuneResult,
)


async def test_a_new_domain_is_defined_started_and_observed(hv: Hypervisor, vms: VMs) -> None:
    plan = vms.plan("burstable")
    told: list[DefineResult] = []
    result = await hv.sync(plan, oom_score_adj=500, on_defined=told.append)
    assert [d.created for d in told] == [True]  # told as it happened, before the start
    assert result.admitted
    assert result.created
    assert result.started is not None
    assert result.started.started
    assert result.info is not None
    assert result.info.state is DomainState.RUNNING
    assert result.oom_score is not None
    assert result.oom_score.value == 500
    again = await hv.sync(plan)  # idempotent: nothing to define, start or tune
    assert not again.created
    assert again.defined is not None
    assert not again.defined.changed
    assert (again.started, again.tuned, again.oom_score) == (None, None, None)


async def test_a_refused_domain_is_not_defined(hv: Hypervisor, vms: VMs) -> None:
    plan = vms.plan("besteffort")
    asked: list[bool] = []

    async def refuse(found: DomainInfo | None) -> bool:
        asked.append(found is None)
        return False

    result = await hv.sync(plan, prepare=refuse)
    assert asked == [True]
    assert not result.admitted
    assert not await hv.exists(plan.uuid)


async def test_prepare_sees_the_domain_found(hv: Hypervisor, vms: VMs) -> None:
    plan = await vms.running("besteffort")
    seen: list[DomainInfo | None] = []

    async def prepare(found: DomainInfo | None) -> bool:
        seen.append(found)
        return True

    assert (await hv.sync(plan, prepare=prepare)).admitted
    assert len(seen) == 1
    assert seen[0] is not None
    assert seen[0].state is DomainState.RUNNING


async def test_start_false_keeps_a_stopped_vm_stopped(hv: Hypervisor, vms: VMs) -> None:
    plan = vms.plan("besteffort")
    await hv.ensure_defined(plan.domain_xml)
    result = await hv.sync(plan, start=False)
    assert result.started is None
    assert result.info is not None
    assert result.info.state is DomainState.SHUTOFF
    started = await hv.sync(plan)
    assert started.info is not None
    assert started.info.active


async def test_a_saved_vm_is_left_saved(hv: Hypervisor, vms: VMs) -> None:
    plan = await vms.running("besteffort")
    await hv.suspend(plan.uuid, SuspendMode.SAVE)
    result = await hv.sync(plan)
    assert result.started is None
    assert result.info is not None
    assert result.info.has_managed_save
    assert not result.info.active


def reprioritized(domain: DomainSpec, priority: int) -> DomainSpec:
    """The same domain with another priority in its metadata: a changed definition."""
    return dataclasses.replace(
        domain, metadata=dataclasses.replace(domain.metadata, priority=priority)
    )


async def test_a_changed_plan_is_tuned_live(hv: Hypervisor, vms: VMs, uri: str) -> None:
    plan = await vms.running("burstable")
    soft = plan.memtune.soft_limit_bytes
    assert soft is not None
    changed = dataclasses.replace(
        plan,
        memtune=dataclasses.replace(plan.memtune, soft_limit_bytes=soft * 2),
        domain=reprioritized(plan.domain, 3),
    )
    result = await hv.sync(changed)
    assert result.tuned is not None
    assert isinstance(result.tuned.memtune, TuneResult)
    assert result.tuned.memtune.live
    assert result.tuned.balloon is None  # the size did not move
    if uri != TEST_URI:  # the test driver has no scheduler parameters: the error is returned
        assert isinstance(result.tuned.cputune, TuneResult)
    assert (await hv.memory_parameters(plan.uuid))["soft_limit"] * 1024 == soft * 2


async def test_a_refused_live_change_is_returned_not_raised(hv: Hypervisor, vms: VMs) -> None:
    plan = await vms.running("burstable")
    tiny = dataclasses.replace(
        plan,
        memtune=dataclasses.replace(plan.memtune, hard_limit_bytes=1),
        domain=reprioritized(plan.domain, 3),
    )
    result = await hv.sync(tiny)
    assert result.tuned is not None
    assert isinstance(result.tuned.memtune, HardLimitBelowUsage)
    assert result.info is not None
    assert result.info.state is DomainState.RUNNING

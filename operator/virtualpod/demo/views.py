"""What a user would look at: `kubectl get vpod` from the API, and each VM as libvirt
holds it, next to what the plan asked for."""

from __future__ import annotations

from typing import Any, TextIO

from virtualpod.core.domain import DomainSummary, parse_domain
from virtualpod.core.plan import plan_virtualpod
from virtualpod.core.quantity import format_bytes
from virtualpod.core.settings import Settings
from virtualpod.demo.environment import NAMESPACE, DemoVM
from virtualpod.demo.output import maybe_bytes, say, table
from virtualpod.libvirt.hypervisor import Hypervisor
from virtualpod.testing import KubeClient


async def status_of(api: KubeClient, vm: DemoVM) -> dict[str, Any]:
    obj = await api.get(NAMESPACE, vm.name)
    return dict((obj or {}).get("status") or {})


async def phases(api: KubeClient, vms: list[DemoVM]) -> dict[str, str | None]:
    return {vm.name: (await status_of(api, vm)).get("phase") for vm in vms}


async def print_phases(api: KubeClient, vms: list[DemoVM], out: TextIO) -> None:
    rows: list[tuple[str, ...]] = [("NAME", "QOS", "PHASE", "REASON")]
    for vm in vms:
        status = await status_of(api, vm)
        rows.append(
            (
                vm.name,
                str(status.get("qosClass", "")),
                str(status.get("phase", "")),
                str(status.get("reason", "")),
            )
        )
    say(out, table(rows))


def _matches(live: DomainSummary, planned: DomainSummary) -> bool:
    return (
        live.vcpus == planned.vcpus
        and live.memory_bytes == planned.memory_bytes
        and live.cputune == planned.cputune
        and live.memtune == planned.memtune
    )


async def _vm_row(
    api: KubeClient, hv: Hypervisor, settings: Settings, vm: DemoVM
) -> tuple[str, ...]:
    assert vm.uuid is not None
    info = await hv.lookup(vm.uuid)
    live = parse_domain(await hv.xml(vm.uuid))
    obj = await api.get(NAMESPACE, vm.name) or vm.manifest
    plan = plan_virtualpod(obj, settings, cgroup_version=hv.cgroup_version)
    cputune = live.cputune
    return (
        vm.name,
        str(vm.qos),
        info.state.name.lower(),
        str(live.vcpus),
        format_bytes(live.memory_bytes),
        str(cputune.shares),
        "-" if cputune.quota_us is None else f"{cputune.quota_us}/{cputune.period_us}",
        maybe_bytes(live.memtune.hard_limit_bytes),
        maybe_bytes(live.memtune.soft_limit_bytes),
        "matches" if _matches(live, parse_domain(plan.domain_xml)) else "DIFFERS",
    )


async def print_vm_table(
    api: KubeClient, hv: Hypervisor, settings: Settings, vms: list[DemoVM], out: TextIO
) -> None:
    """Each VM as libvirt holds it now, next to what the plan asked for."""
    rows: list[tuple[str, ...]] = [
        ("NAME", "QOS", "STATE", "VCPUS", "MEMORY", "SHARES", "QUOTA", "HARD", "SOFT", "PLAN")
    ]
    rows += [await _vm_row(api, hv, settings, vm) for vm in vms]
    say(out, table(rows))
    unit = "cpu.weight (cgroup v2)" if hv.cgroup_version == 2 else "cpu.shares (cgroup v1)"
    say(
        out,
        f"(read back from libvirt's live domain XML; SHARES as libvirt writes {unit}; "
        "QUOTA = global_quota/global_period in us; HARD/SOFT = memtune)",
    )

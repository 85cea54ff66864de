"""Create, update, delete: the object and the VM follow each other."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import Env, unique, vpod
from tests.waiting import async_wait_for
from virtualpod.domain import parse_domain
from virtualpod.plan import plan_virtualpod


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c
    return None


async def wait_phase(env: Env, name: str, phase: str, timeout: float = 15) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        obj = await env.kube.get(env.namespace, name)
        return obj if obj and (obj.get("status") or {}).get("phase") == phase else None

    return await async_wait_for(probe, timeout=timeout, what=f"{name} {phase}")


async def test_create_runs_the_planned_vm(env: Env) -> None:
    await env.start_operator()
    name = unique("web")
    created = await env.kube.create(vpod(name))

    obj = await wait_phase(env, name, "Running")
    plan = plan_virtualpod(created, env.settings, cgroup_version=env.hv.cgroup_version)
    status = obj["status"]
    assert status["qosClass"] == "Burstable"
    assert status["vm"]["uuid"] == created["metadata"]["uid"] == plan.uuid
    assert status["vm"]["domainName"] == plan.domain_name
    assert status["vm"]["host"] == "e2e-host"
    assert status["vm"]["vcpus"] == plan.size.vcpus
    assert status["observedGeneration"] == 1
    assert condition(obj, "Ready")["status"] == "True"
    assert condition(obj, "Scheduled")["status"] == "True"
    assert "virtualpod.dev/finalizer" in obj["metadata"]["finalizers"]

    live = parse_domain(await env.hv.xml(plan.uuid, inactive=True))
    wanted = parse_domain(plan.domain_xml)
    assert live.vcpus == wanted.vcpus
    assert live.memory_bytes == wanted.memory_bytes
    assert live.memtune == wanted.memtune
    assert live.cputune == wanted.cputune
    assert live.metadata == wanted.metadata

    reasons = {e["reason"] for e in await env.kube.events(env.namespace, name)}
    assert {"Created", "Started"} <= reasons

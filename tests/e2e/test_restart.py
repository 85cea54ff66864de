"""Restart policy Always: a VM stopped behind the operator's back is started again, with
back-off; a pending vCPU/memory change takes effect at that next start."""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace
from typing import Any

from tests.e2e.conftest import Env, unique, vpod
from tests.e2e.test_lifecycle import condition, wait_phase
from tests.waiting import async_wait_for
from virtualpod.core.plan import plan_virtualpod
from virtualpod.core.quantity import format_bytes
from virtualpod.core.settings import RestartBackoff
from virtualpod.core.spec import SuspendMode
from virtualpod.kube.context import AgentContext
from virtualpod.libvirt.hypervisor import InvalidState

BACKOFF_S = 1.5


def short_backoff(ctx: AgentContext) -> None:
    backoff = RestartBackoff(initial_s=BACKOFF_S, max_s=10.0, reset_s=60.0)
    ctx.settings = replace(ctx.settings, restart_backoff=backoff)


async def wait_restarts(env: Env, name: str, count: int) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        obj = await env.kube.get(env.namespace, name)
        status = (obj or {}).get("status") or {}
        running = status.get("phase") == "Running"
        return obj if running and status["vm"].get("restartCount") == count else None

    obj = await async_wait_for(probe, timeout=15, what=f"{name} Running, restartCount {count}")
    assert obj is not None
    return obj


async def reasons(env: Env, name: str) -> list[str]:
    return [e["reason"] for e in await env.kube.events(env.namespace, name)]


async def test_destroyed_vm_is_restarted_with_back_off(env: Env) -> None:
    await env.start_operator(prepare=short_backoff)
    name = unique("crashy")
    await env.kube.create(vpod(name))
    obj = await wait_phase(env, name, "Running")
    uuid = obj["status"]["vm"]["uuid"]
    assert obj["status"]["vm"]["restartCount"] == 0

    assert await env.hv.destroy(uuid)  # as `virsh destroy`, or a crash
    obj = await wait_restarts(env, name, 1)  # the first restart is immediate
    assert (await env.hv.lookup(uuid)).active
    assert (condition(obj, "Ready") or {}).get("status") == "True"

    async def events(*wanted: str) -> bool:
        return set(wanted) <= set(await reasons(env, name))

    await async_wait_for(lambda: events("Failed", "Restarted"), timeout=10, what="events")

    # Stopped again right after: a crash loop; the next start waits for the back-off.
    destroyed_at = time.monotonic()
    assert await env.hv.destroy(uuid)
    obj = await wait_restarts(env, name, 2)
    assert time.monotonic() - destroyed_at >= BACKOFF_S
    backoff = [e for e in await env.kube.events(env.namespace, name) if e["reason"] == "BackOff"]
    assert backoff
    assert backoff[0]["type"] == "Warning"
    assert f"next start in {BACKOFF_S:g}s" in backoff[0]["message"]
    assert (await reasons(env, name)).count("Restarted") == 2


async def test_saved_vm_is_not_restarted(env: Env) -> None:
    await env.start_operator()
    saved, crashed = unique("saved"), unique("crashed")
    await env.kube.create(vpod(saved))
    await env.kube.create(vpod(crashed))
    saved_uuid = (await wait_phase(env, saved, "Running"))["status"]["vm"]["uuid"]
    crashed_uuid = (await wait_phase(env, crashed, "Running"))["status"]["vm"]["uuid"]

    await env.hv.suspend(saved_uuid, SuspendMode.SAVE)  # as `virsh managedsave`
    await env.hv.destroy(crashed_uuid)
    # Lifecycle events are handled in order: once the later stop was restarted, the
    # saved VM's stop has been handled too.
    await wait_restarts(env, crashed, 1)
    obj = await wait_phase(env, saved, "Suspended")
    assert obj["status"]["vm"]["restartCount"] == 0
    info = await env.hv.lookup(saved_uuid)
    assert not info.active
    assert info.has_managed_save
    assert "Restarted" not in await reasons(env, saved)


async def test_pending_resize_takes_effect_at_the_next_start(env: Env) -> None:
    await env.start_operator()
    name = unique("resize")
    created = await env.kube.create(vpod(name))
    obj = await wait_phase(env, name, "Running")
    uuid = obj["status"]["vm"]["uuid"]
    before = await env.hv.lookup(uuid)

    manifest = vpod(name)
    manifest["spec"]["containers"][0]["resources"]["limits"] = {"cpu": "2", "memory": "1Gi"}
    await env.kube.merge_patch(env.namespace, name, {"spec": manifest["spec"]})
    plan = plan_virtualpod(
        {**manifest, "metadata": created["metadata"]},
        env.settings,
        cgroup_version=env.hv.cgroup_version,
    )
    assert (plan.size.vcpus, plan.size.memory_bytes) != (before.vcpus, before.max_memory_bytes)

    async def restart_required(status: str) -> dict[str, Any] | None:
        o = await env.kube.get(env.namespace, name)
        c = condition(o, "RestartRequired")
        running = status == "True" or (o or {}).get("status", {}).get("phase") == "Running"
        return o if c and c["status"] == status and running else None

    await async_wait_for(lambda: restart_required("True"), timeout=15, what="RestartRequired")
    running = await env.hv.lookup(uuid)
    assert (running.vcpus, running.max_memory_bytes) == (before.vcpus, before.max_memory_bytes)

    await env.hv.destroy(uuid)  # an admin restarts the VM: virsh destroy; virsh start
    with contextlib.suppress(InvalidState):  # the operator's restart may come first
        await env.hv.start(uuid)

    after = await async_wait_for(
        lambda: restart_required("False"), timeout=15, what="RestartRequired=False"
    )
    assert after is not None
    cleared = condition(after, "RestartRequired") or {}
    assert cleared.get("reason") == "Restarted"
    assert after["status"]["phase"] == "Running"
    assert after["status"]["vm"]["vcpus"] == plan.size.vcpus
    assert after["status"]["vm"]["memory"] == format_bytes(plan.size.memory_bytes)
    now = await env.hv.lookup(uuid)
    assert now.active
    assert (now.vcpus, now.max_memory_bytes) == (plan.size.vcpus, plan.size.memory_bytes)

"""Crashes, bad input, changes behind the operator's back, a host that is too small."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import Env, unique, vpod
from tests.e2e.test_lifecycle import condition, wait_phase
from tests.present import present
from tests.waiting import async_wait_for
from virtualpod.core.binding import NODE_LABEL
from virtualpod.core.spec import SuspendMode
from virtualpod.libvirt.hypervisor import DomainState, EventKind

MIB = 1024 * 1024
VPODS = "virtualpod.dev/v1alpha1/virtualpods"


async def test_operator_killed_mid_create_makes_exactly_one_domain(env: Env) -> None:
    if env.emulator is None:
        pytest.skip("needs the emulator to stall the operator's writes at the right moment")
    first = await env.start_operator()
    name = unique("crash")
    emulator = env.emulator

    def agent_write(method: str, ctype: str, ns: str | None, n: str | None) -> bool:
        """Once the controller has bound it (label), the agent's writes: let kopf add its
        finalizer (a JSON patch), stall what comes after the handler ran."""
        obj = emulator.get_object(VPODS, ns, n) if n == name else None
        bound = obj is not None and NODE_LABEL in obj["metadata"].get("labels", {})
        return bound and ctype != "application/json-patch+json"

    emulator.hold_writes(agent_write)
    async with env.hv.subscribe() as events:
        created = await env.kube.create(vpod(name))
        uid = created["metadata"]["uid"]
        while True:  # the handler defined the domain: kill the operator now
            event = await events.next(timeout=15)
            if event.uuid == uid and event.kind is EventKind.DEFINED:
                break
        await first.kill()
    env.emulator.release_writes()
    obj = present(await env.kube.get(env.namespace, name))
    # It really died mid-create: nothing was recorded but the controller's binding.
    assert "vm" not in obj["status"]
    assert "phase" not in obj["status"]

    await env.start_operator()
    obj = await wait_phase(env, name, "Running")
    ours = [d for d in await env.hv.list_domains() if name in d.name]
    assert len(ours) == 1
    assert ours[0].uuid == uid == obj["status"]["vm"]["uuid"]


async def refused_or_invalid(env: Env, manifest: dict[str, Any], field: str, phrase: str) -> bool:
    """Either outcome a cluster can give for invalid input: the API server refuses it
    (422, naming the field), or it is stored and the operator marks it Valid=False with
    one Warning Event. True when it was stored."""
    status, body = await env.kube.try_create(manifest)
    if status != 201:
        assert status == 422, (status, body)
        assert field in body["message"], body["message"]
        return False
    name = manifest["metadata"]["name"]
    obj = await wait_phase(env, name, "Failed")
    valid = present(condition(obj, "Valid"))
    assert valid["status"] == "False"
    assert valid["reason"] == "InvalidSpec"
    assert field in valid["message"]
    assert phrase in valid["message"]
    await async_wait_for(
        lambda: invalid_spec_warnings(env, name), timeout=10, what="InvalidSpec Warning event"
    )
    return True


async def invalid_spec_warnings(env: Env, name: str) -> list[dict[str, Any]]:
    return [
        e
        for e in await env.kube.events(env.namespace, name)
        if e["reason"] == "InvalidSpec" and e["type"] == "Warning"
    ]


INVALID = {
    # the schema's pattern refuses it on a real server; the emulator stores it
    "garbage": ("requests", "cpu", "lots", "not a Kubernetes quantity"),
    # matches the schema's quantity pattern: only the operator can refuse it
    "beyond Kubernetes' range": ("limits", "cpu", "1e999", "at most"),
}


@pytest.mark.parametrize(("part", "resource", "value", "phrase"), INVALID.values(), ids=INVALID)
async def test_invalid_object_is_refused_or_marked_invalid_and_others_are_served(
    env: Env, part: str, resource: str, value: str, phrase: str
) -> None:
    await env.start_operator()
    bad = unique("bad")
    manifest = vpod(bad)
    manifest["spec"]["containers"][0]["resources"][part][resource] = value
    field = f"spec.containers[0].resources.{part}.{resource}"
    stored = await refused_or_invalid(env, manifest, field, phrase)

    good = unique("good")
    await env.kube.create(vpod(good))
    await wait_phase(env, good, "Running")
    if stored:  # a permanent failure: no retry storm of events on the invalid object
        assert len(await invalid_spec_warnings(env, bad)) == 1
    assert not any(bad in d.name for d in await env.hv.list_domains())


async def test_pause_behind_the_operators_back_shows_in_status(env: Env) -> None:
    await env.start_operator()
    name = unique("virsh")
    await env.kube.create(vpod(name))
    obj = await wait_phase(env, name, "Running")
    uuid = obj["status"]["vm"]["uuid"]

    await env.hv.suspend(uuid, SuspendMode.PAUSE)  # as `virsh suspend`
    obj = await wait_phase(env, name, "Paused", timeout=5)
    assert obj["status"]["vm"]["state"] == "Paused"
    assert present(condition(obj, "Ready"))["status"] == "False"

    await env.hv.resume(uuid)  # as `virsh resume`
    resumed = await wait_phase(env, name, "Running", timeout=5)
    # written by the lifecycle mirror, not a handler: still says which generation it shows
    assert resumed["status"]["observedGeneration"] == 1

    async def reported() -> bool:
        reasons = {e["reason"] for e in await env.kube.events(env.namespace, name)}
        return {"Paused", "Resumed"} <= reasons

    await async_wait_for(reported, timeout=10, what="Paused/Resumed events")
    assert (await env.hv.lookup(uuid)).state is DomainState.RUNNING  # not restarted: resumed


async def test_vm_larger_than_the_host_is_unschedulable(env: Env) -> None:
    op = await env.start_operator()
    capacity = op.ctx.capacity
    name = unique("huge")
    huge = f"{capacity.memory_bytes // MIB * 2}Mi"
    manifest = vpod(name, memory=huge)
    manifest["spec"]["containers"][0]["resources"]["limits"]["memory"] = huge
    await env.kube.create(manifest)
    obj = await wait_phase(env, name, "Failed")
    # Bound to the host (one host: no scheduler), refused by the agent's capacity check.
    assert present(condition(obj, "Scheduled"))["status"] == "True"
    ready = present(condition(obj, "Ready"))
    assert ready["status"] == "False"
    assert ready["reason"] == "Unschedulable"
    assert ready["message"] == "0/1 hosts are available: 1 insufficient memory"
    assert not any(name in d.name for d in await env.hv.list_domains())


async def test_pending_until_room_appears(env: Env) -> None:
    op = env.operator()
    await op.start()
    allocatable = op.ctx.allocatable
    first, second = unique("first"), unique("second")
    big = f"{allocatable.memory_bytes * 3 // 4 // MIB}Mi"

    def sized(name: str) -> dict[str, Any]:
        manifest = vpod(name, memory=big)
        manifest["spec"]["containers"][0]["resources"]["limits"]["memory"] = big
        return manifest

    await env.kube.create(sized(first))
    await wait_phase(env, first, "Running")
    await env.kube.create(sized(second))
    obj = await wait_phase(env, second, "Pending")
    assert present(condition(obj, "Ready"))["reason"] == "Unschedulable"
    assert "insufficient memory" in obj["status"]["message"]

    await env.kube.delete(env.namespace, first)
    obj = await wait_phase(env, second, "Running", timeout=20)
    assert present(condition(obj, "Ready"))["status"] == "True"

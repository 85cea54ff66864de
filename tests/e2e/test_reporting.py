"""Who acted and what went wrong: Events name the operator and its host; an unexpected
error while reconciling is a condition, one Warning Event and a retry with back-off."""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

from tests.e2e.conftest import HOST, Env, unique, vpod
from tests.e2e.test_lifecycle import condition, wait_phase
from tests.present import present
from tests.waiting import async_wait_for
from virtualpod.core.plan import plan_virtualpod
from virtualpod.core.spec import SuspendMode


def shown_from(event: dict[str, Any]) -> str:
    """The `From` column of `kubectl describe` (kubectl's formatEventSource)."""
    source = event.get("source") or {}
    component = source.get("component") or event.get("reportingComponent") or ""
    instance = source.get("host") or event.get("reportingInstance") or ""
    return f"{component}, {instance}" if instance else component


async def test_events_say_virtualpod_and_the_host_acted(env: Env) -> None:
    await env.start_operator()
    name = unique("from")
    await env.kube.create(vpod(name))
    obj = await wait_phase(env, name, "Running")
    await env.hv.suspend(obj["status"]["vm"]["uuid"], SuspendMode.PAUSE)  # as `virsh suspend`

    async def reported() -> list[dict[str, Any]]:
        events = await env.kube.events(env.namespace, name)
        # Started comes from a handler (kopf.info), Paused from the libvirt mirror.
        return events if {"Started", "Paused"} <= {e["reason"] for e in events} else []

    events = await async_wait_for(reported, timeout=10, what="Started and Paused events")
    assert {shown_from(e) for e in events} == {f"virtualpod, {HOST}"}
    assert {(e["reportingComponent"], e["reportingInstance"]) for e in events} == {
        ("virtualpod", HOST)
    }


async def test_unexpected_error_is_reported_once_and_retried_until_it_clears(env: Env) -> None:
    await env.start_operator()
    name = unique("clash")
    # Someone else's domain already has the name this VirtualPod's VM gets: libvirt
    # refuses to define ours. Nothing in the object is wrong, so the operator retries.
    squatter = vpod(name)
    squatter["metadata"]["uid"] = str(uuidlib.uuid4())
    plan = plan_virtualpod(squatter, env.settings, cgroup_version=env.hv.cgroup_version)
    await env.hv.ensure_defined(plan.domain_xml)
    await env.kube.create(vpod(name))

    async def failing() -> dict[str, Any] | None:
        obj = await env.kube.get(env.namespace, name)
        ready = condition(obj, "Ready")
        return obj if ready and ready["reason"] == "ReconcileError" else None

    obj = await async_wait_for(failing, timeout=10, what="Ready=False ReconcileError")
    ready = condition(obj, "Ready")
    assert ready is not None
    assert ready["status"] == "False"
    assert "already exists" in ready["message"]
    assert obj["status"]["reason"] == "ReconcileError"
    # Kopf's retry bookkeeping rides in the same status write (status.kopf), kept by the
    # failed attempt's cleanup of its half-done status.
    (progress,) = obj["status"]["kopf"]["progress"].values()
    assert progress["retries"] >= 1

    async def warnings() -> list[dict[str, Any]]:
        return [
            e
            for e in await env.kube.events(env.namespace, name)
            if e["reason"] == "ReconcileError" and e["type"] == "Warning"
        ]

    (warning,) = await async_wait_for(warnings, timeout=10, what="ReconcileError Warning")
    assert "already exists" in warning["message"]

    await env.hv.undefine(plan.uuid)  # the clash clears: the next retry succeeds
    obj = await wait_phase(env, name, "Running", timeout=20)
    assert present(condition(obj, "Ready"))["status"] == "True"
    assert obj["status"]["reason"] == "Running"
    assert len(await warnings()) == 1  # retried with back-off, reported once

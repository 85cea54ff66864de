"""The pressure monitor inside the operator, seen through the Kubernetes API."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from tests.e2e.columns import printer_columns
from tests.e2e.conftest import Env, unique
from tests.e2e.test_lifecycle import condition, wait_phase
from tests.waiting import async_wait_for
from virtualpod.core.settings import PressureSignal

MIB = 1024 * 1024
ROOMY = 64 * 1024 * MIB


def manifest(name: str, resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "virtualpod.dev/v1alpha1",
        "kind": "VirtualPod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "app", "image": "busybox", "resources": resources}]},
    }


async def reasons(env: Env, name: str) -> list[dict[str, Any]]:
    return await env.kube.events(env.namespace, name)


async def test_memory_pressure_suspends_best_effort_and_resumes_it(env: Env) -> None:
    # The pool signal (allocatable - our VMs' usage) works from libvirt state alone.
    eviction = replace(
        env.settings.eviction,
        signal=PressureSignal.POOL,
        pool_allocatable_bytes=ROOMY,
        sampling_interval_s=0.1,
        pressure_transition_period_s=0.5,
    )
    op = await env.start_operator(replace(env.settings, eviction=eviction), pressure=True)
    signal = op.ctx.pressure.signal
    assert signal.allocatable_bytes == ROOMY  # eviction.poolAllocatable is honored

    best_effort, guaranteed = unique("besteffort"), unique("guaranteed")
    size = {"cpu": "500m", "memory": "256Mi"}
    await env.kube.create(manifest(guaranteed, {"requests": size, "limits": size}))
    await env.kube.create(manifest(best_effort, {}))
    g = await wait_phase(env, guaranteed, "Running")
    be = await wait_phase(env, best_effort, "Running")
    assert (g["status"]["qosClass"], be["status"]["qosClass"]) == ("Guaranteed", "BestEffort")

    # Shrink the pool to the Guaranteed VM's usage + 60Mi: below the 100Mi hard
    # threshold whatever the BestEffort VM uses (QEMU RSS can be small); Guaranteed VMs
    # are never suspended for host pressure, so only the BestEffort one goes.
    g_uuid = g["status"]["vm"]["uuid"]
    stats = await env.hv.all_memory_stats([g_uuid])
    g_memory = stats[g_uuid].rss_bytes if g_uuid in stats else None
    g_memory = g_memory or (await env.hv.lookup(g_uuid)).memory_bytes
    signal.allocatable_bytes = g_memory + 60 * MIB

    async def saved() -> dict[str, Any] | None:
        obj = await env.kube.get(env.namespace, best_effort)
        status = (obj or {}).get("status") or {}
        done = status.get("phase") == "Suspended" and "released" in status.get("message", "")
        return obj if done else None

    be_saved = await async_wait_for(saved, timeout=30, what=f"{best_effort} saved")
    assert be_saved is not None
    be = be_saved
    suspended = condition(be, "Suspended") or {}
    assert suspended.get("status") == "True"
    assert suspended.get("reason") == "MemoryPressure"
    signal_values = r"pool memory\.available -?\d+Mi < hard threshold 100Mi; need \d+Mi"
    assert re.search(signal_values, suspended["message"]), suspended["message"]
    assert be["status"]["reason"] == "MemoryPressure"
    assert be["status"]["vm"]["suspendMode"] == "Save"
    columns = printer_columns(be)  # `kubectl get vpod`
    assert (columns["QoS"], columns["Phase"], columns["Reason"]) == (
        "BestEffort",
        "Suspended",
        "MemoryPressure",
    )
    assert (await env.hv.lookup(be["status"]["vm"]["uuid"])).has_managed_save

    async def event(name: str, reason: str, text: str) -> bool:
        return any(
            e["reason"] == reason and text in e.get("message", "") for e in await reasons(env, name)
        )

    await async_wait_for(
        lambda: event(best_effort, "Suspended", "MemoryPressure: pool memory.available"),
        timeout=10,
        what="Suspended event with the signal",
    )
    g_now = await env.kube.get(env.namespace, guaranteed)
    assert g_now is not None
    assert g_now["status"]["phase"] == "Running"  # Guaranteed VMs are never suspended

    signal.allocatable_bytes = ROOMY  # pressure goes away
    be = await wait_phase(env, best_effort, "Running", timeout=15)
    assert (condition(be, "Suspended") or {}).get("status") == "False"
    assert be["status"]["reason"] == "Running"
    assert be["status"]["vm"]["restartCount"] == 0  # resumed, not restarted
    await async_wait_for(
        lambda: event(best_effort, "Resumed", "memory pressure over"),
        timeout=10,
        what="Resumed event from the monitor",
    )
    assert printer_columns(be)["Phase"] == "Running"
    assert not any(e["reason"] == "Restarted" for e in await reasons(env, best_effort))
    assert not any(e["reason"] == "Suspended" for e in await reasons(env, guaranteed))

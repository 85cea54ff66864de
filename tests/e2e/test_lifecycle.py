"""Create, update, delete: the object and the VM follow each other."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import Env, unique, vpod
from tests.present import present
from tests.waiting import async_wait_for
from virtualpod.core.domain import parse_domain
from virtualpod.core.plan import plan_virtualpod


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    conditions: list[dict[str, Any]] = ((obj or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == type_), None)


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
    if env.emulator is not None:  # every stored version: the first Running one says it too
        first = next(
            change.obj["status"]
            for change in env.emulator.store.history
            if change.obj.get("metadata", {}).get("name") == name
            and (change.obj.get("status") or {}).get("phase") == "Running"
        )
        assert first["observedGeneration"] == 1
    assert present(condition(obj, "Ready"))["status"] == "True"
    assert present(condition(obj, "Scheduled"))["status"] == "True"
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


def _domain_id(xml: str) -> str | None:
    import xml.etree.ElementTree as ET

    return ET.fromstring(xml).get("id")


async def test_live_update_retunes_without_restart(env: Env) -> None:
    await env.start_operator()
    name = unique("tune")
    created = await env.kube.create(vpod(name))
    obj = await wait_phase(env, name, "Running")
    uuid = obj["status"]["vm"]["uuid"]
    id_before = _domain_id(await env.hv.xml(uuid))

    manifest = vpod(name, cpu="250m", memory="128Mi")
    manifest["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "800m"
    await env.kube.merge_patch(env.namespace, name, {"spec": manifest["spec"]})
    new_plan = plan_virtualpod(
        {**manifest, "metadata": created["metadata"]},
        env.settings,
        cgroup_version=env.hv.cgroup_version,
    )
    soft_kib = -(-present(new_plan.memtune.soft_limit_bytes) // 1024)

    async def retuned() -> bool:
        return (await env.hv.memory_parameters(uuid)).get("soft_limit") == soft_kib

    await async_wait_for(retuned, timeout=15, what="live soft_limit")
    if env.libvirt_uri.startswith("qemu"):
        params = await env.hv.scheduler_parameters(uuid)
        assert params["global_quota"] == new_plan.cputune.quota_us == 80000
    assert _domain_id(await env.hv.xml(uuid)) == id_before  # same QEMU run: not restarted

    async def observed() -> dict[str, Any] | None:
        o = present(await env.kube.get(env.namespace, name))
        return o if o["status"].get("observedGeneration") == 2 else None

    obj = await async_wait_for(observed, timeout=10, what="observedGeneration 2")
    assert present(condition(obj, "RestartRequired"))["status"] == "False"
    assert obj["status"]["phase"] == "Running"

    async def tuned_event() -> bool:
        return "Tuned" in {e["reason"] for e in await env.kube.events(env.namespace, name)}

    await async_wait_for(tuned_event, timeout=10, what="Tuned event")


async def test_vcpu_or_max_memory_change_requires_restart(env: Env) -> None:
    await env.start_operator()
    name = unique("grow")
    await env.kube.create(vpod(name))
    obj = await wait_phase(env, name, "Running")
    uuid = obj["status"]["vm"]["uuid"]
    vcpus_before = (await env.hv.lookup(uuid)).vcpus

    manifest = vpod(name)
    manifest["spec"]["containers"][0]["resources"]["limits"] = {"cpu": "2", "memory": "1Gi"}
    await env.kube.merge_patch(env.namespace, name, {"spec": manifest["spec"]})

    async def restart_required() -> dict[str, Any] | None:
        o = await env.kube.get(env.namespace, name)
        c = condition(o, "RestartRequired")
        return o if c and c["status"] == "True" else None

    obj = await async_wait_for(restart_required, timeout=15, what="RestartRequired=True")
    message = present(condition(obj, "RestartRequired"))["message"]
    assert "vcpus" in message
    assert "max_memory" in message
    info = await env.hv.lookup(uuid)
    assert info.active
    assert info.vcpus == vcpus_before  # the running VM keeps its size until restarted
    config = parse_domain(await env.hv.xml(uuid, inactive=True))
    assert config.vcpus == 2  # ... and gets the new one at its next start


async def test_delete_leaves_nothing_behind(env: Env) -> None:
    from virtualpod.core.spec import SuspendMode

    await env.start_operator()
    name = unique("gone")
    await env.kube.create(vpod(name))
    obj = await wait_phase(env, name, "Running")
    uuid = obj["status"]["vm"]["uuid"]
    await env.hv.suspend(uuid, SuspendMode.SAVE)  # leaves a managed-save image
    assert (await env.hv.lookup(uuid)).has_managed_save
    await wait_phase(env, name, "Suspended")

    await env.kube.delete(env.namespace, name)

    async def object_gone() -> bool:
        return await env.kube.get(env.namespace, name) is None

    await async_wait_for(object_gone, timeout=15, what="object deleted (finalizer removed)")
    assert not await env.hv.exists(uuid)
    assert all(d.uuid != uuid for d in await env.hv.list_domains())
    if env.libvirt_uri.startswith("qemu"):
        import pathlib

        assert not list(pathlib.Path("/var/lib/libvirt/qemu/save").glob(f"*{name}*"))

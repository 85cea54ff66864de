"""One operator serves one host: VirtualPods assigned elsewhere are not touched."""

from __future__ import annotations

from tests.e2e.conftest import HOST, Env, unique, vpod
from tests.e2e.test_lifecycle import wait_phase
from tests.waiting import async_wait_for
from virtualpod.core.domain import domain_uuid
from virtualpod.kube.context import Owner


async def test_only_virtualpods_assigned_to_this_host_are_served(env: Env) -> None:
    op = await env.start_operator()
    foreign, here = unique("elsewhere"), unique("here")
    created = await env.kube.create(vpod(foreign, nodeName="other-host"))
    uuid = domain_uuid(env.namespace, foreign, created["metadata"]["uid"])

    async def seen() -> Owner | None:
        index = op.ctx.by_uuid
        return next(iter(index[uuid]), None) if index is not None and uuid in index else None

    # The operator has processed the foreign object (its index has it, not as ours) ...
    indexed = await async_wait_for(seen, timeout=10, what="foreign object indexed")
    assert indexed is not None
    assert indexed.here is False
    # ... and then served one assigned to this host by name.
    await env.kube.create(vpod(here, nodeName=HOST))
    obj = await wait_phase(env, here, "Running")
    assert obj["status"]["vm"]["host"] == HOST

    untouched = await env.kube.get(env.namespace, foreign)
    assert untouched is not None
    assert "status" not in untouched or not untouched["status"]
    assert not untouched["metadata"].get("finalizers")
    ours = [k for k in untouched["metadata"].get("annotations") or {} if "virtualpod.dev" in k]
    assert ours == []
    assert await env.kube.events(env.namespace, foreign) == []
    assert not await env.hv.exists(uuid)
    assert not any(foreign in d.name for d in await env.hv.list_domains())

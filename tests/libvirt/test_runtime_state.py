"""Runtime metadata kept in the domain, and memory stats of all VMs in one call.

Both drivers (`uri`); what only QEMU can show (the save image's own XML) is marked.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from tests.libvirt.conftest import QEMU_URI, TEST_URI, VMs, qemu_only
from virtualpod.core.domain import METADATA_NS
from virtualpod.libvirt.hypervisor import (
    DomainNotFound,
    DomainState,
    Hypervisor,
    SuspendMode,
    runtime_namespace,
)

KEY = "pressure"
NS = runtime_namespace(METADATA_NS, KEY)
INTENT = '<intent action="suspend" done="false"><message>a &lt; b &amp; c</message></intent>'


def runtime_elements(xml: str) -> list[ET.Element]:
    return [e for e in ET.fromstring(xml).iterfind("metadata/*") if e.tag.startswith(f"{{{NS}}}")]


def message(stored: str | None) -> str | None:
    return None if stored is None else ET.fromstring(stored).findtext("message")


async def test_metadata_round_trip_on_a_stopped_domain(hv: Hypervisor, vms: VMs) -> None:
    plan = vms.plan("besteffort")
    await hv.ensure_defined(plan.domain_xml)
    assert await hv.metadata(plan.uuid, KEY) is None
    await hv.set_metadata(plan.uuid, KEY, INTENT)
    assert message(await hv.metadata(plan.uuid, KEY)) == "a < b & c"
    assert plan.uuid in await hv.metadata_of_all(KEY)
    # Its own namespace: the element the core renders is still there, still parsed.
    assert [d.uuid for d in await hv.list_domains() if d.uuid == plan.uuid] == [plan.uuid]
    await hv.set_metadata(plan.uuid, KEY, None)
    await hv.set_metadata(plan.uuid, KEY, None)  # removing nothing is a no-op
    assert await hv.metadata(plan.uuid, KEY) is None
    assert plan.uuid not in await hv.metadata_of_all(KEY)


async def test_metadata_of_a_running_domain_is_live_and_persistent(
    hv: Hypervisor, vms: VMs
) -> None:
    plan = await vms.running("besteffort")
    await hv.set_metadata(plan.uuid, KEY, INTENT)
    assert len(runtime_elements(await hv.xml(plan.uuid))) == 1
    assert len(runtime_elements(await hv.xml(plan.uuid, inactive=True))) == 1
    await hv.set_metadata(plan.uuid, KEY, None)
    assert runtime_elements(await hv.xml(plan.uuid)) == []
    assert runtime_elements(await hv.xml(plan.uuid, inactive=True)) == []


async def test_redefining_keeps_runtime_metadata(hv: Hypervisor, vms: VMs) -> None:
    """The operator re-renders the XML on every reconcile; that must not drop an intent."""
    plan = await vms.running("burstable")
    await hv.set_metadata(plan.uuid, KEY, INTENT)
    again = await hv.ensure_defined(plan.domain_xml)
    assert not again.changed  # same XML + kept intent = same definition
    assert message(await hv.metadata(plan.uuid, KEY)) == "a < b & c"
    # A real change (a new label in our own element) still applies, intent kept.
    changed = plan.domain_xml.replace("<vpod:priority>0<", "<vpod:priority>7<")
    assert changed != plan.domain_xml
    assert (await hv.ensure_defined(changed)).changed
    config = await hv.xml(plan.uuid, inactive=True)
    assert "<vpod:priority>7</vpod:priority>" in config
    assert len(runtime_elements(config)) == 1
    assert message(await hv.metadata(plan.uuid, KEY)) == "a < b & c"


async def test_an_explicit_runtime_element_in_the_new_xml_wins(hv: Hypervisor, vms: VMs) -> None:
    plan = vms.plan("besteffort")
    await hv.ensure_defined(plan.domain_xml)
    await hv.set_metadata(plan.uuid, KEY, INTENT)
    mine = f'<{KEY}:intent xmlns:{KEY}="{NS}" action="resume"/>'
    await hv.ensure_defined(plan.domain_xml.replace("</metadata>", f"{mine}</metadata>"))
    stored = await hv.metadata(plan.uuid, KEY)
    assert stored is not None
    assert ET.fromstring(stored).get("action") == "resume"
    assert len(runtime_elements(await hv.xml(plan.uuid, inactive=True))) == 1


async def test_metadata_survives_a_managed_save_and_restore(hv: Hypervisor, vms: VMs) -> None:
    plan = await vms.running("besteffort")
    await hv.set_metadata(plan.uuid, KEY, INTENT)  # live + config, like a suspend intent
    await hv.suspend(plan.uuid, SuspendMode.SAVE)
    done = '<intent action="suspend" done="true"/>'
    await hv.set_metadata(plan.uuid, KEY, done)  # saved: config only
    await hv.ensure_defined(plan.domain_xml)  # reconciled while saved
    assert await hv.metadata(plan.uuid, KEY) == done
    await hv.resume(plan.uuid, SuspendMode.SAVE)
    assert (await hv.lookup(plan.uuid)).state is DomainState.RUNNING
    assert await hv.metadata(plan.uuid, KEY) == done  # read from the persistent definition
    assert len(runtime_elements(await hv.xml(plan.uuid))) == 1  # and the live XML has one


@pytest.mark.parametrize("uri", [pytest.param(QEMU_URI, id="qemu", marks=qemu_only)])
async def test_the_save_image_carries_the_live_metadata(hv: Hypervisor, vms: VMs) -> None:
    """On QEMU the restored live XML is the image's, as it was when the Save began;
    only the persistent definition has what was written while saved (hence reads go there).
    """
    plan = await vms.running("besteffort")
    await hv.set_metadata(plan.uuid, KEY, INTENT)
    await hv.suspend(plan.uuid, SuspendMode.SAVE)
    await hv.set_metadata(plan.uuid, KEY, '<intent action="suspend" done="true"/>')
    await hv.resume(plan.uuid, SuspendMode.SAVE)
    live = runtime_elements(await hv.xml(plan.uuid))
    assert [e.get("done") for e in live] == ["false"]
    assert live[0].findtext(f"{{{NS}}}message") == "a < b & c"
    await hv.set_metadata(plan.uuid, KEY, None)
    assert runtime_elements(await hv.xml(plan.uuid)) == []
    assert await hv.metadata(plan.uuid, KEY) is None


async def test_metadata_of_an_unknown_domain(hv: Hypervisor) -> None:
    missing = "00000000-0000-4000-8000-0000000000aa"
    with pytest.raises(DomainNotFound):
        await hv.set_metadata(missing, KEY, INTENT)
    with pytest.raises(DomainNotFound):
        await hv.metadata(missing, KEY)


# ---------------------------------------------------------------- bulk memory stats


async def test_all_memory_stats_match_per_domain_stats(hv: Hypervisor, vms: VMs, uri: str) -> None:
    running = [await vms.running("besteffort"), await vms.running("guaranteed")]
    stopped = vms.plan("burstable")
    await hv.ensure_defined(stopped.domain_xml)
    uuids = [p.uuid for p in running] + [stopped.uuid]
    bulk = await hv.all_memory_stats(uuids)
    assert sorted(bulk) == sorted(p.uuid for p in running)  # stopped: no stats, no entry
    for plan in running:
        one = await hv.memory_stats(plan.uuid)
        assert bulk[plan.uuid].actual_bytes == one.actual_bytes == plan.size.memory_bytes
        rss = bulk[plan.uuid].rss_bytes
        assert rss is not None
        assert one.rss_bytes is not None
        if uri == TEST_URI:
            assert bulk[plan.uuid] == one
        else:  # a live QEMU's RSS moves a little between two reads
            assert abs(rss - one.rss_bytes) < 16 * 1024 * 1024
    everything = await hv.all_memory_stats()
    assert set(bulk) <= set(everything)


async def test_all_memory_stats_skip_saved_and_include_paused(hv: Hypervisor, vms: VMs) -> None:
    saved, paused = await vms.running("besteffort"), await vms.running("burstable")
    await hv.suspend(saved.uuid, SuspendMode.SAVE)
    await hv.suspend(paused.uuid, SuspendMode.PAUSE)
    stats = await hv.all_memory_stats([saved.uuid, paused.uuid])
    assert list(stats) == [paused.uuid]
    assert stats[paused.uuid].rss_bytes is not None

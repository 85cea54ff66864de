"""The pure functions of the libvirt shell, table by table (no libvirt daemon needed)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import libvirt
import pytest

from tests.present import present
from virtualpod.core.domain import METADATA_NS
from virtualpod.core.tuning import CpuTune, MemTune
from virtualpod.libvirt.connection import is_local_uri
from virtualpod.libvirt.domains import boot_files, restart_needed, same_definition, uuid_of
from virtualpod.libvirt.errors import (
    DomainNotFound,
    HypervisorError,
    InvalidState,
    Unreachable,
    Unsupported,
    XMLRejected,
    error_class,
)
from virtualpod.libvirt.events import EventKind, event_kind
from virtualpod.libvirt.host import host_memory_from
from virtualpod.libvirt.live_tuning import (
    MEMORY_UNLIMITED_KIB,
    QUOTA_UNLIMITED,
    cputune_parameters,
    memtune_parameters,
)
from virtualpod.libvirt.metadata import merge_runtime_metadata, runtime_namespace
from virtualpod.libvirt.state import DomainInfo, DomainState, reason_name
from virtualpod.libvirt.stats import balloon_record, vm_memory
from virtualpod.libvirt.sync import balloon_target, needs_start

MI = 2**20
INTENT_NS = runtime_namespace(METADATA_NS, "pressure")


@pytest.mark.parametrize(
    ("event", "detail", "kind"),
    [
        (libvirt.VIR_DOMAIN_EVENT_DEFINED, 0, EventKind.DEFINED),
        (libvirt.VIR_DOMAIN_EVENT_UNDEFINED, 0, EventKind.UNDEFINED),
        (libvirt.VIR_DOMAIN_EVENT_STARTED, 0, EventKind.STARTED),
        (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, 0, EventKind.PAUSED),
        (libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED, 0, EventKind.PAUSED),
        (libvirt.VIR_DOMAIN_EVENT_RESUMED, 0, EventKind.RESUMED),
        (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED, EventKind.SAVED),
        (
            libvirt.VIR_DOMAIN_EVENT_STOPPED,
            libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED,
            EventKind.CRASHED,
        ),
        (
            libvirt.VIR_DOMAIN_EVENT_STOPPED,
            libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED,
            EventKind.CRASHED,
        ),
        (
            libvirt.VIR_DOMAIN_EVENT_STOPPED,
            libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED,
            EventKind.STOPPED,
        ),
        (libvirt.VIR_DOMAIN_EVENT_CRASHED, 0, EventKind.CRASHED),
        (libvirt.VIR_DOMAIN_EVENT_SHUTDOWN, 0, None),
    ],
)
def test_lifecycle_events_map_onto_what_status_mirrors(
    event: int, detail: int, kind: EventKind | None
) -> None:
    assert event_kind(event, detail) is kind


@pytest.mark.parametrize(
    ("code", "message", "error"),
    [
        (libvirt.VIR_ERR_NO_DOMAIN, "", DomainNotFound),
        (libvirt.VIR_ERR_XML_ERROR, "", XMLRejected),
        (libvirt.VIR_ERR_CONFIG_UNSUPPORTED, "", XMLRejected),
        (libvirt.VIR_ERR_NO_SUPPORT, "", Unsupported),
        (libvirt.VIR_ERR_INVALID_ARG, "unsupported flags (0x3)", Unsupported),
        (libvirt.VIR_ERR_INVALID_ARG, "bad value", HypervisorError),
        (libvirt.VIR_ERR_OPERATION_INVALID, "", InvalidState),
        (libvirt.VIR_ERR_RPC, "", Unreachable),
        (libvirt.VIR_ERR_INTERNAL_ERROR, "", HypervisorError),
    ],
)
def test_libvirt_error_codes_become_our_errors(code: int, message: str, error: type[Any]) -> None:
    assert error_class(code, message) is error


@pytest.mark.parametrize(
    ("uri", "local"),
    [
        ("qemu:///system", True),
        ("qemu:///session", True),
        ("kvm:///system", True),
        ("qemu+ssh://host/system", False),
        ("qemu://host/system", False),
        ("test:///default", False),
    ],
)
def test_only_qemu_uris_of_this_host_are_local(uri: str, local: bool) -> None:
    assert is_local_uri(uri) is local


@pytest.mark.parametrize(
    ("state", "reason", "name"),
    [
        (DomainState.RUNNING, 3, "restored"),
        (DomainState.PAUSED, 3, "save"),
        (DomainState.PAUSED, 11, "starting-up"),
        (DomainState.SHUTOFF, 5, "saved"),
        (DomainState.CRASHED, 1, "panicked"),
        (DomainState.RUNNING, 99, "99"),
        (DomainState.BLOCKED, 0, "0"),
    ],
)
def test_state_reasons_are_named_as_virsh_names_them(
    state: DomainState, reason: int, name: str
) -> None:
    assert reason_name(state, reason) == name


def domain(*, vcpu: int = 1, memory_kib: int = 131072, body: str = "") -> str:
    return (
        f"<domain type='kvm'><name>d</name><uuid>1</uuid><vcpu>{vcpu}</vcpu>"
        f"<memory unit='KiB'>{memory_kib}</memory>{body}</domain>"
    )


@pytest.mark.parametrize(
    ("config", "running", "needed"),
    [
        (domain(), None, ()),
        (domain(), domain(), ()),
        (domain(vcpu=2), domain(), ("vcpus",)),
        (domain(memory_kib=1), domain(), ("max_memory",)),
        (domain(vcpu=2, memory_kib=1), domain(), ("vcpus", "max_memory")),
    ],
)
def test_only_vcpus_and_max_memory_wait_for_a_restart(
    config: str, running: str | None, needed: tuple[str, ...]
) -> None:
    assert restart_needed(config, running) == needed


@pytest.mark.parametrize(
    ("body", "files"),
    [
        ("", []),
        ("<os><kernel>/k</kernel><initrd>/i</initrd></os>", ["/k", "/i"]),
        ("<devices><disk type='file'><source file='/d.qcow2'/></disk></devices>", ["/d.qcow2"]),
        (
            "<devices><disk><source file='/default-type-is-file'/></disk></devices>",
            ["/default-type-is-file"],
        ),
        ("<devices><disk type='block'><source dev='/dev/sda'/></disk></devices>", []),
    ],
)
def test_boot_files_are_kernel_initrd_and_file_disks(body: str, files: list[str]) -> None:
    assert boot_files(domain(body=body)) == files


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ("<domain>", "not well-formed"),
        ("<domain/>", "no <uuid>"),
        ("<domain><uuid> </uuid></domain>", "no <uuid>"),
    ],
)
def test_a_domain_without_uuid_is_rejected(xml: str, message: str) -> None:
    with pytest.raises(XMLRejected, match=message):
        uuid_of(xml)


NS_ON_ROOT = f'<domain xmlns:p="{INTENT_NS}"><metadata><p:intent a="1"/></metadata></domain>'
NS_ON_ELEMENT = (
    f'<domain><metadata>\n  <p:intent xmlns:p="{INTENT_NS}" a="1"/>\n</metadata></domain>'
)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (NS_ON_ROOT, NS_ON_ELEMENT, True),
        (NS_ON_ROOT, NS_ON_ROOT.replace('a="1"', 'a="2"'), False),
        (domain(), domain(vcpu=2), False),
        (domain(), domain(body="<on_crash>destroy</on_crash>"), False),
    ],
)
def test_definitions_compare_by_meaning_not_by_text(a: str, b: str, same: bool) -> None:
    assert same_definition(a, b) is same


def runtime_tags(xml: str) -> list[str]:
    return [e.tag for e in ET.fromstring(xml).iterfind("metadata/*")]


OURS = f'<vpod:virtualpod xmlns:vpod="{METADATA_NS}"/>'
INTENT = f'<pressure:intent xmlns:pressure="{INTENT_NS}" action="suspend"/>'
OTHER = '<x:other xmlns:x="https://example.com/x"/>'


@pytest.mark.parametrize(
    ("new", "old", "tags"),
    [
        # an intent written at runtime survives a re-rendered XML
        (
            f"<domain><metadata>{OURS}</metadata></domain>",
            f"<domain><metadata>{OURS}{INTENT}</metadata></domain>",
            [f"{{{METADATA_NS}}}virtualpod", f"{{{INTENT_NS}}}intent"],
        ),
        # nothing runtime: the new XML as it is
        (
            f"<domain><metadata>{OURS}</metadata></domain>",
            "<domain/>",
            [f"{{{METADATA_NS}}}virtualpod"],
        ),
        # another tool's metadata is not ours to carry over
        ("<domain><metadata/></domain>", f"<domain><metadata>{OTHER}</metadata></domain>", []),
        # an explicit element of the same namespace in the new XML wins
        (
            f"<domain><metadata>{INTENT.replace('suspend', 'resume')}</metadata></domain>",
            f"<domain><metadata>{INTENT}</metadata></domain>",
            [f"{{{INTENT_NS}}}intent"],
        ),
        # no <metadata> at all in the new XML: one is added
        (
            "<domain/>",
            f"<domain><metadata>{INTENT}</metadata></domain>",
            [f"{{{INTENT_NS}}}intent"],
        ),
    ],
)
def test_redefinition_keeps_runtime_metadata(new: str, old: str, tags: list[str]) -> None:
    merged = merge_runtime_metadata(new, old, METADATA_NS)
    assert runtime_tags(merged) == tags
    if "resume" in new:
        assert (
            present(ET.fromstring(merged).find(f"metadata/{{{INTENT_NS}}}intent")).get("action")
            == "resume"
        )


def test_nothing_to_keep_leaves_the_text_untouched() -> None:
    new = f"<domain>\n<metadata>{OURS}</metadata>\n</domain>\n"
    assert merge_runtime_metadata(new, new, METADATA_NS) is new


@pytest.mark.parametrize(
    ("raw", "rss", "actual", "unused"),
    [
        ({"rss": 1024, "actual": 2048}, MI, 2 * MI, None),
        ({"unused": 512}, None, None, MI // 2),
        ({}, None, None, None),
    ],
)
def test_memory_stats_in_kib_become_bytes(
    raw: dict[str, int], rss: int | None, actual: int | None, unused: int | None
) -> None:
    memory = vm_memory(raw)
    assert (memory.rss_bytes, memory.actual_bytes, memory.unused_bytes) == (rss, actual, unused)
    assert memory.raw == raw


@pytest.mark.parametrize(
    ("stats", "raw"),
    [
        ({"balloon.current": 4, "balloon.rss": 2, "state.state": 1}, {"actual": 4, "rss": 2}),
        ({"balloon.last-update": 9}, {"last_update": 9}),
        ({"state.state": 1}, {}),
    ],
)
def test_bulk_balloon_fields_take_memory_stats_names(
    stats: dict[str, int], raw: dict[str, int]
) -> None:
    assert balloon_record(stats) == raw


def test_host_memory_counts_page_cache_as_available() -> None:
    memory = host_memory_from({"total": 4096, "free": 1024, "buffers": 512, "cached": 512})
    assert (memory.total_bytes, memory.available_bytes) == (4 * MI, 2 * MI)
    assert host_memory_from({"total": 1, "free": 1}).available_bytes == 1024


@pytest.mark.parametrize(
    ("tune", "cgroup_version", "params"),
    [
        (CpuTune(1024), 1, {"cpu_shares": 1024, "global_quota": QUOTA_UNLIMITED}),
        (CpuTune(1024), 2, {"cpu_shares": 39, "global_quota": QUOTA_UNLIMITED}),
        (
            CpuTune(512, 100000, 50000),
            1,
            {"cpu_shares": 512, "global_period": 100000, "global_quota": 50000},
        ),
        (CpuTune(512, None, 50000), 1, {"cpu_shares": 512, "global_quota": 50000}),
    ],
)
def test_cputune_parameters_remove_a_quota_that_is_not_planned(
    tune: CpuTune, cgroup_version: int, params: dict[str, int]
) -> None:
    assert cputune_parameters(tune, cgroup_version) == params


@pytest.mark.parametrize(
    ("tune", "params"),
    [
        (MemTune(), {"hard_limit": MEMORY_UNLIMITED_KIB, "soft_limit": MEMORY_UNLIMITED_KIB}),
        (MemTune(MI, 1025), {"hard_limit": 1024, "soft_limit": 2}),
    ],
)
def test_memtune_parameters_round_up_to_kib_and_none_is_unlimited(
    tune: MemTune, params: dict[str, int]
) -> None:
    assert memtune_parameters(tune) == params


def info(*, state: DomainState = DomainState.RUNNING, saved: bool = False) -> DomainInfo:
    return DomainInfo("u", "n", state, "", True, saved, 1, 512 * MI, 256 * MI)


@pytest.mark.parametrize(
    ("memory", "target"),
    [(256 * MI, None), (384 * MI, 384 * MI), (512 * MI, 512 * MI), (513 * MI, None)],
)
def test_the_balloon_moves_only_within_the_maximum_memory(memory: int, target: int | None) -> None:
    assert balloon_target(memory, info()) == target


@pytest.mark.parametrize(
    ("state", "saved", "allowed", "start"),
    [
        (DomainState.SHUTOFF, False, True, True),
        (DomainState.SHUTOFF, False, False, False),
        (DomainState.SHUTOFF, True, True, False),
        (DomainState.RUNNING, False, True, False),
        (DomainState.PAUSED, False, True, False),
    ],
)
def test_a_stopped_vm_starts_a_saved_one_waits(
    state: DomainState, saved: bool, allowed: bool, start: bool
) -> None:
    assert needs_start(info(state=state, saved=saved), allowed=allowed) is start

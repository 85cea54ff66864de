"""libvirt domain XML: render from a planned VM, and parse back what matters for drift.

Kept apart from the code that talks to libvirt (KubeVirt's converter split): this
module builds text with ElementTree, so names and paths from a manifest are always
escaped, never spliced into markup. The `<metadata>` element carries what the
operator needs to recognise and rank its own domains from libvirt alone.
"""

from __future__ import annotations

import functools
import uuid as uuidlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from virtualpod.core.disks import VolumeDisk, render_disk
from virtualpod.core.nic import Nic, render_nic
from virtualpod.core.quantity import LIBVIRT_UNIT_BYTES, kib_ceil
from virtualpod.core.spec import DiskBoot, KernelBoot, SuspendMode
from virtualpod.core.tuning import CpuTune, MemTune

METADATA_NS = "https://virtualpod.dev/xmlns/domain/v1alpha1"
METADATA_PREFIX = "vpod"
DOMAIN_NAME_PREFIX = "vpod"
UUID_NAMESPACE = uuidlib.uuid5(uuidlib.NAMESPACE_DNS, "virtualpod.dev")
#: How many objects' domain UUIDs are remembered (a host's VMs, with room to spare).
DOMAIN_UUIDS_CACHED = 4096

ET.register_namespace(METADATA_PREFIX, METADATA_NS)


@dataclass(frozen=True)
class DomainMetadata:
    """Who a domain belongs to and how it ranks under pressure."""

    namespace: str
    name: str
    uid: str | None
    qos_class: str
    priority: int
    memory_request_bytes: int
    suspend_mode: SuspendMode | None = None
    generation: int | None = None


@dataclass(frozen=True)
class DomainSpec:
    name: str
    uuid: str
    domain_type: str
    vcpus: int
    memory_bytes: int
    cputune: CpuTune
    memtune: MemTune
    metadata: DomainMetadata
    boot: DiskBoot | KernelBoot | None = None
    console_log: str | None = None
    memory_stats_period_s: int = 5
    #: A disk from a host path is attached `<readonly/>` unless the admin allows writing.
    disk_read_only: bool = True
    #: Storage volumes the workload runs from (root overlay, cloud-init seed).
    disks: tuple[VolumeDisk, ...] = ()
    nics: tuple[Nic, ...] = ()


def domain_name(namespace: str, name: str) -> str:
    """`vpod_<namespace>_<name>`: '_' cannot occur in DNS labels, so this never collides."""
    return f"{DOMAIN_NAME_PREFIX}_{namespace}_{name}"


@functools.lru_cache(maxsize=DOMAIN_UUIDS_CACHED)
def domain_uuid(namespace: str, name: str, uid: str | None) -> str:
    """The object's uid when it is a UUID (it is, from an API server), else a stable uuid5.

    Cached: the agent asks on every watch event of every VirtualPod it serves."""
    if uid:
        try:
            return str(uuidlib.UUID(uid))
        except ValueError:
            pass
    return str(uuidlib.uuid5(UUID_NAMESPACE, f"{namespace}/{name}/{uid or ''}"))


def _sub(parent: ET.Element, tag: str, text: object = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = str(text)
    return element


def _meta(tag: str) -> str:
    return f"{{{METADATA_NS}}}{tag}"


def render_domain(spec: DomainSpec) -> str:
    root = ET.Element("domain", type=spec.domain_type)
    _sub(root, "name", spec.name)
    _sub(root, "uuid", spec.uuid)
    meta = spec.metadata
    _sub(root, "description", f"VirtualPod {meta.namespace}/{meta.name} ({meta.qos_class})")
    _render_metadata(_sub(root, "metadata"), meta)
    _sub(root, "memory", kib_ceil(spec.memory_bytes), unit="KiB")
    _sub(root, "currentMemory", kib_ceil(spec.memory_bytes), unit="KiB")
    _render_memtune(root, spec.memtune)
    _sub(root, "vcpu", spec.vcpus, placement="static")
    cputune = _sub(root, "cputune")
    _sub(cputune, "shares", spec.cputune.shares)
    if spec.cputune.quota_us is not None:
        _sub(cputune, "global_period", spec.cputune.period_us)
        _sub(cputune, "global_quota", spec.cputune.quota_us)
    _render_os(root, spec.boot)
    features = _sub(root, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    _sub(root, "clock", offset="utc")
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", "destroy")
    _render_devices(_sub(root, "devices"), spec)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def _render_metadata(parent: ET.Element, meta: DomainMetadata) -> None:
    element = ET.SubElement(parent, _meta("virtualpod"))
    _sub(element, _meta("namespace"), meta.namespace)
    _sub(element, _meta("name"), meta.name)
    if meta.uid:
        _sub(element, _meta("uid"), meta.uid)
    _sub(element, _meta("qosClass"), meta.qos_class)
    _sub(element, _meta("priority"), meta.priority)
    _sub(element, _meta("memoryRequest"), meta.memory_request_bytes, unit="bytes")
    if meta.suspend_mode:
        _sub(element, _meta("suspendMode"), meta.suspend_mode.value)
    if meta.generation is not None:
        _sub(element, _meta("generation"), meta.generation)


def _render_memtune(root: ET.Element, memtune: MemTune) -> None:
    if memtune.hard_limit_bytes is None and memtune.soft_limit_bytes is None:
        return
    element = _sub(root, "memtune")
    if memtune.hard_limit_bytes is not None:
        _sub(element, "hard_limit", kib_ceil(memtune.hard_limit_bytes), unit="KiB")
    if memtune.soft_limit_bytes is not None:
        _sub(element, "soft_limit", kib_ceil(memtune.soft_limit_bytes), unit="KiB")


def _render_os(root: ET.Element, boot: DiskBoot | KernelBoot | None) -> None:
    os_element = _sub(root, "os")
    _sub(os_element, "type", "hvm", arch="x86_64")
    if isinstance(boot, KernelBoot):
        _sub(os_element, "kernel", boot.path)
        if boot.initrd:
            _sub(os_element, "initrd", boot.initrd)
        if boot.cmdline:
            _sub(os_element, "cmdline", boot.cmdline)
    else:
        _sub(os_element, "boot", dev="hd")


def _render_devices(devices: ET.Element, spec: DomainSpec) -> None:
    if isinstance(spec.boot, DiskBoot):
        disk = _sub(devices, "disk", type="file", device="disk")
        _sub(disk, "driver", name="qemu", type=spec.boot.format.value)
        _sub(disk, "source", file=spec.boot.path)
        _sub(disk, "target", dev="vda", bus="virtio")
        if spec.disk_read_only:
            _sub(disk, "readonly")
    for volume in spec.disks:
        render_disk(devices, volume)
    for nic in spec.nics:
        render_nic(devices, nic)
    if spec.console_log:
        serial = _sub(devices, "serial", type="file")
        _sub(serial, "source", path=spec.console_log, append="on")
        _sub(serial, "target", port="0")
    balloon = _sub(devices, "memballoon", model="virtio")
    _sub(balloon, "stats", period=str(spec.memory_stats_period_s))


@dataclass(frozen=True)
class DomainSummary:
    """What a domain XML (ours or as libvirt reports it) says about size and tuning."""

    name: str
    uuid: str
    vcpus: int
    memory_bytes: int
    cputune: CpuTune
    memtune: MemTune
    metadata: DomainMetadata | None


def _bytes(element: ET.Element | None) -> int | None:
    if element is None or element.text is None:
        return None
    return int(element.text) * LIBVIRT_UNIT_BYTES[element.get("unit", "KiB").lower()]


def _int(element: ET.Element | None) -> int | None:
    return None if element is None or element.text is None else int(element.text)


def parse_domain(xml: str) -> DomainSummary:
    """Read back size, tuning and our metadata from any domain XML."""
    root = ET.fromstring(xml)
    cputune = root.find("cputune")
    memtune = root.find("memtune")
    return DomainSummary(
        name=root.findtext("name", ""),
        uuid=root.findtext("uuid", ""),
        vcpus=_int(root.find("vcpu")) or 0,
        memory_bytes=_bytes(root.find("memory")) or 0,
        cputune=CpuTune(
            shares=_int(cputune.find("shares") if cputune is not None else None) or 0,
            period_us=_int(cputune.find("global_period") if cputune is not None else None),
            quota_us=_int(cputune.find("global_quota") if cputune is not None else None),
        ),
        memtune=MemTune(
            hard_limit_bytes=_bytes(memtune.find("hard_limit") if memtune is not None else None),
            soft_limit_bytes=_bytes(memtune.find("soft_limit") if memtune is not None else None),
        ),
        metadata=_parse_metadata(root),
    )


def _parse_metadata(root: ET.Element) -> DomainMetadata | None:
    element = root.find(f"metadata/{_meta('virtualpod')}")
    if element is None:
        return None
    suspend_mode = element.findtext(_meta("suspendMode"))
    generation = element.findtext(_meta("generation"))
    return DomainMetadata(
        namespace=element.findtext(_meta("namespace"), ""),
        name=element.findtext(_meta("name"), ""),
        uid=element.findtext(_meta("uid")),
        qos_class=element.findtext(_meta("qosClass"), ""),
        priority=int(element.findtext(_meta("priority"), "0")),
        memory_request_bytes=int(element.findtext(_meta("memoryRequest"), "0")),
        suspend_mode=SuspendMode(suspend_mode) if suspend_mode else None,
        generation=int(generation) if generation else None,
    )

"""The VM's workload disks in domain XML: its root overlay and its cloud-init seed.

Both are libvirt storage volumes (`<disk type='volume'>`), so the domain names a pool and
a volume, never a host path the tenant chose; libvirt resolves them when the VM starts.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from virtualpod.core.spec import DiskFormat
from virtualpod.core.storage import VOLUME_POOL, root_volume, seed_volume

ROOT_TARGET = "vda"
SEED_TARGET = "vdb"


@dataclass(frozen=True)
class VolumeDisk:
    pool: str
    volume: str
    target: str
    format: DiskFormat
    read_only: bool = False


def workload_disks(uuid: str) -> tuple[VolumeDisk, VolumeDisk]:
    """Root overlay (qcow2, writable, first: the guest sees it as /dev/vda) and seed."""
    return (
        VolumeDisk(VOLUME_POOL, root_volume(uuid), ROOT_TARGET, DiskFormat.QCOW2),
        VolumeDisk(VOLUME_POOL, seed_volume(uuid), SEED_TARGET, DiskFormat.RAW, read_only=True),
    )


def render_disk(devices: ET.Element, disk: VolumeDisk) -> None:
    element = ET.SubElement(devices, "disk", type="volume", device="disk")
    ET.SubElement(element, "driver", name="qemu", type=disk.format.value)
    ET.SubElement(element, "source", pool=disk.pool, volume=disk.volume)
    ET.SubElement(element, "target", dev=disk.target, bus="virtio")
    if disk.read_only:
        ET.SubElement(element, "readonly")

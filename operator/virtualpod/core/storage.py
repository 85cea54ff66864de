"""Storage pools and volumes a VM's disks live in: names, sizes and libvirt XML.

Two dir pools per host: base images (`virtualpod-images`, imported or downloaded once)
and VM volumes (`virtualpod-volumes`: each VM's qcow2 overlay and cloud-init seed).
Volumes are named by the domain UUID, so a VirtualPod recreated under the same name
never inherits the disk of the old one, and everything of one VM is found by prefix.
"""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from virtualpod.core.spec import DiskFormat

IMAGE_POOL = "virtualpod-images"
VOLUME_POOL = "virtualpod-volumes"
ROOT_SUFFIX = "-root.qcow2"
SEED_SUFFIX = "-cidata.iso"
#: Only the operator (root) reads a seed: it may carry Secret values.
SEED_MODE = "0600"
QCOW2_MAGIC = b"QFI\xfb"
#: qcow2 header: magic, version, backing offset/size, cluster bits, then the virtual size.
QCOW2_SIZE_OFFSET = 24
QCOW2_HEADER_BYTES = 32


@dataclass(frozen=True)
class ImageInfo:
    """What an image file's header says: its format and the disk size the guest sees."""

    format: DiskFormat
    virtual_size_bytes: int


def root_volume(uuid: str) -> str:
    return f"{uuid}{ROOT_SUFFIX}"


def seed_volume(uuid: str) -> str:
    return f"{uuid}{SEED_SUFFIX}"


def volumes_of(uuid: str) -> tuple[str, str]:
    return root_volume(uuid), seed_volume(uuid)


def image_info(header: bytes, file_size: int) -> ImageInfo:
    """qcow2 by its magic (virtual size from the header), else raw (the file's size)."""
    if header[:4] == QCOW2_MAGIC and len(header) >= QCOW2_HEADER_BYTES:
        (size,) = struct.unpack(">Q", header[QCOW2_SIZE_OFFSET:QCOW2_HEADER_BYTES])
        return ImageInfo(DiskFormat.QCOW2, size)
    return ImageInfo(DiskFormat.RAW, file_size)


class DiskTooSmall(ValueError):  # noqa: N818 (reads as the condition it reports)
    """The container's ephemeral-storage limit is below what the image itself needs."""


def overlay_size(limit_bytes: int | None, request_bytes: int | None, base_bytes: int) -> int:
    """The overlay's virtual size: Kubernetes' local ephemeral storage as the root disk.

    The limit when set (a limit below the image's own size cannot hold it: refused),
    else the request, never below the image, else the image's size.
    """
    if limit_bytes is not None:
        if limit_bytes < base_bytes:
            raise DiskTooSmall(
                f"ephemeral-storage limit {limit_bytes} bytes is smaller than the image's "
                f"virtual size {base_bytes} bytes"
            )
        return limit_bytes
    if request_bytes is not None:
        return max(request_bytes, base_bytes)
    return base_bytes


def _sub(parent: ET.Element, tag: str, text: object = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = str(text)
    return element


def _text(root: ET.Element) -> str:
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def pool_xml(name: str, directory: str) -> str:
    root = ET.Element("pool", type="dir")
    _sub(root, "name", name)
    _sub(_sub(root, "target"), "path", directory)
    return _text(root)


def plain_volume_xml(name: str, capacity_bytes: int, mode: str | None = None) -> str:
    """A raw file volume whose bytes are uploaded afterwards (base image, seed)."""
    root = ET.Element("volume", type="file")
    _sub(root, "name", name)
    _sub(root, "capacity", capacity_bytes, unit="bytes")
    _sub(root, "allocation", 0, unit="bytes")
    target = _sub(root, "target")
    _sub(target, "format", type=DiskFormat.RAW.value)
    if mode is not None:
        _sub(_sub(target, "permissions"), "mode", mode)
    return _text(root)


def overlay_volume_xml(
    name: str, capacity_bytes: int, backing_path: str, backing_format: DiskFormat
) -> str:
    """A qcow2 copy-on-write volume on top of a base image (`storageVolCreateXML`)."""
    root = ET.Element("volume", type="file")
    _sub(root, "name", name)
    _sub(root, "capacity", capacity_bytes, unit="bytes")
    _sub(_sub(root, "target"), "format", type=DiskFormat.QCOW2.value)
    backing = _sub(root, "backingStore")
    _sub(backing, "path", backing_path)
    _sub(backing, "format", type=backing_format.value)
    return _text(root)


def backing_path(volume_xml: str) -> str | None:
    """The base image a volume is backed by, from its libvirt XML."""
    return ET.fromstring(volume_xml).findtext("backingStore/path")

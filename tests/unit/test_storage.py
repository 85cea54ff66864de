from __future__ import annotations

import struct
import xml.etree.ElementTree as ET

import pytest

from tests.present import present
from virtualpod.core.spec import DiskFormat
from virtualpod.core.storage import (
    DiskTooSmall,
    ImageInfo,
    backing_path,
    image_info,
    overlay_size,
    overlay_volume_xml,
    plain_volume_xml,
    pool_xml,
    volumes_of,
)

GI = 1024**3


@pytest.mark.parametrize(
    ("limit", "asked", "base", "size"),
    [
        (4 * GI, None, 2 * GI, 4 * GI),  # the limit, when set
        (None, 3 * GI, 2 * GI, 3 * GI),  # else the request
        (None, 1 * GI, 2 * GI, 2 * GI),  # a request below the image: the image
        (None, None, 2 * GI, 2 * GI),  # else the image's own size
        (2 * GI, 1 * GI, 2 * GI, 2 * GI),
    ],
)
def test_overlay_size_follows_ephemeral_storage(
    limit: int | None, asked: int | None, base: int, size: int
) -> None:
    assert overlay_size(limit, asked, base) == size


def test_a_limit_below_the_image_is_refused() -> None:
    with pytest.raises(DiskTooSmall, match="smaller than the image's virtual size"):
        overlay_size(GI, None, 2 * GI)


def test_image_format_and_size_from_its_header() -> None:
    header = b"QFI\xfb" + struct.pack(">IQI", 3, 0, 0) + struct.pack(">IQ", 16, 5 * GI)
    assert image_info(header, 123) == ImageInfo(DiskFormat.QCOW2, 5 * GI)
    assert image_info(b"\x00" * 64, 4096) == ImageInfo(DiskFormat.RAW, 4096)


def test_overlay_volume_is_qcow2_backed_by_the_base() -> None:
    xml = overlay_volume_xml("u-root.qcow2", 4 * GI, "/pool/base & co.img", DiskFormat.RAW)
    root = ET.fromstring(xml)
    assert present(root.find("target/format")).get("type") == "qcow2"
    assert root.findtext("capacity") == str(4 * GI)
    assert present(root.find("backingStore/format")).get("type") == "raw"
    assert backing_path(xml) == "/pool/base & co.img"


def test_seed_volume_is_private_and_pools_are_dirs() -> None:
    root = ET.fromstring(plain_volume_xml("u-cidata.iso", 65536, mode="0600"))
    assert root.findtext("target/permissions/mode") == "0600"
    pool = ET.fromstring(pool_xml("virtualpod-images", "/var/lib/virtualpod/images"))
    assert (pool.get("type"), pool.findtext("target/path")) == ("dir", "/var/lib/virtualpod/images")


def test_volumes_are_named_by_domain_uuid() -> None:
    assert volumes_of("1234") == ("1234-root.qcow2", "1234-cidata.iso")

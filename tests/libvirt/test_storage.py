"""The storage shell on libvirt: pools, shared bases, overlays, seeds, cleanup, refusals.

Runs on the test driver (which keeps no volume content) and on real libvirtd, where the
overlay's qcow2 header and the seed's bytes are read back from the pool's files.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid as uuidlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.present import present
from virtualpod.core.image import ImageRef, parse_image
from virtualpod.core.settings import StorageSettings
from virtualpod.core.storage import overlay_size, root_volume, seed_volume
from virtualpod.libvirt.hypervisor import Hypervisor
from virtualpod.libvirt.images import local_image
from virtualpod.libvirt.storage import Storage, StorageError, VolumeInfo

MIB = 1024 * 1024


@pytest.fixture
async def storage(hv: Hypervisor) -> Storage:
    store = Storage(hv, StorageSettings())
    await store.ensure_pools()
    return store


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    """A small qcow2 (16 MiB virtual) unique to this test, so its base is its own."""
    path = tmp_path / f"img-{uuidlib.uuid4().hex[:8]}.qcow2"
    try:
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M"], check=True)
    except FileNotFoundError:
        pytest.skip("qemu-img missing: install qemu-utils (scripts/install-deps.sh)")
    return path


async def overlay(
    storage: Storage, image: ImageRef, uuid: str, limit: int | None = None
) -> VolumeInfo:
    allowed = (str(Path(image.location).parent),)
    return await storage.root_disk(
        image,
        lambda: local_image(image, 5, allowed),
        root_volume(uuid),
        lambda info: overlay_size(limit, None, info.virtual_size_bytes),
    )


def qemu_img_info(path: str) -> dict[str, Any]:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", path], check=True, capture_output=True
    ).stdout
    info: dict[str, Any] = json.loads(out)
    return info


async def test_two_vms_share_one_base_which_outlives_the_first(
    storage: Storage, image_file: Path, uri: str
) -> None:
    image = present(parse_image(str(image_file)))
    one, two = str(uuidlib.uuid4()), str(uuidlib.uuid4())
    try:
        first = await overlay(storage, image, one, limit=64 * MIB)
        second = await overlay(storage, image, two)
        base = await storage.base(image)
        assert base is not None
        assert first.backing_path == second.backing_path == base.path
        assert (first.capacity_bytes, second.capacity_bytes) == (64 * MIB, 16 * MIB)
        assert base.info.virtual_size_bytes == 16 * MIB
        if uri.startswith("qemu"):
            info = qemu_img_info(first.path)
            assert info["format"] == "qcow2"
            assert info["virtual-size"] == 64 * MIB
            assert info["backing-filename"] == base.path
        assert await storage.delete_vm(one) == [root_volume(one)]
        assert await storage.base(image) is not None  # still used by the second VM
        assert await storage.volume(root_volume(two)) is not None
        removed = await storage.delete_vm(two)
        assert removed == [root_volume(two), base.volume]
        assert await storage.base(image) is None
    finally:
        await storage.delete_vm(one)
        await storage.delete_vm(two)


async def test_an_existing_overlay_is_kept_as_it_is(storage: Storage, image_file: Path) -> None:
    image = present(parse_image(str(image_file)))
    uuid = str(uuidlib.uuid4())
    try:
        first = await overlay(storage, image, uuid, limit=32 * MIB)
        again = await overlay(storage, image, uuid, limit=64 * MIB)
        assert again == first
    finally:
        await storage.delete_vm(uuid)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda tmp: f"{tmp}/absent.qcow2", "ImageMissing"),
        (lambda tmp: _dir(tmp), "ImageRefused"),  # a directory
        (lambda tmp: _link(tmp, "/etc/hostname"), "ImageRefused"),  # real path outside
        (lambda tmp: f"{_file(tmp)}#sha256={'0' * 64}", "ChecksumMismatch"),
        (lambda tmp: _sparse(tmp, 2**43), "PoolFull"),  # 8 TiB: more than the pools hold
    ],
)
async def test_refusals_name_their_reason_and_leave_nothing(
    storage: Storage, tmp_path: Path, make: Callable[[Path], str], reason: str
) -> None:
    image = present(parse_image(make(tmp_path)))
    uuid = str(uuidlib.uuid4())
    with pytest.raises(StorageError) as caught:
        await overlay(storage, image, uuid)
    assert caught.value.reason == reason
    assert await storage.volume(root_volume(uuid)) is None
    assert await storage.base(image) is None


def _dir(tmp: Path) -> str:
    (tmp / "dir").mkdir()
    return str(tmp / "dir")


def _link(tmp: Path, target: str) -> str:
    (tmp / "link.raw").symlink_to(target)
    return str(tmp / "link.raw")


def _file(tmp: Path) -> str:
    path = tmp / "image.raw"
    path.write_bytes(b"\0" * 4096)
    return str(path)


def _sparse(tmp: Path, size: int) -> str:
    path = tmp / "huge.raw"
    with path.open("wb") as handle:
        handle.truncate(size)
    return str(path)


async def test_seed_volume_holds_the_iso_only_root_can_read(storage: Storage, uri: str) -> None:
    uuid = str(uuidlib.uuid4())
    data = os.urandom(64 * 1024)
    try:
        await storage.upload_seed(seed_volume(uuid), data)
        await storage.upload_seed(seed_volume(uuid), b"other")  # kept, not rewritten
        volume = await storage.volume(seed_volume(uuid))
        assert volume is not None
        assert volume.capacity_bytes == len(data)
        if uri.startswith("qemu"):
            assert Path(volume.path).read_bytes() == data
            assert oct(os.stat(volume.path).st_mode & 0o777) == "0o600"
    finally:
        assert seed_volume(uuid) in await storage.delete_vm(uuid)

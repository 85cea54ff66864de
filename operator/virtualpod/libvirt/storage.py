"""The VMs' disks through libvirt's storage API: pools, base images, overlays, seeds.

* Two dir pools, defined (and built, started, autostarted) by the operator on first
  use: base images and VM volumes (names and XML from `core.storage`).
* A base image enters the image pool once: a host file or a finished download is
  uploaded into a volume (`virStorageVolUpload`, so it works on a remote libvirt too).
  Its name derives from its source (`core.image.image_file_name`), so every VM of the
  same image shares it; a half-uploaded base is deleted, never left for the next VM.
* Each VM gets a qcow2 overlay (`storageVolCreateXML` with `<backingStore>`) and a seed
  volume; deleting a VM deletes both, and a base no overlay uses any more with them.
* Errors carry the condition reason a user sees (`StorageError.reason`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import xml.etree.ElementTree as ET
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt

from virtualpod.core.image import ImageRef, image_file_name
from virtualpod.core.quantity import MIB
from virtualpod.core.settings import StorageSettings
from virtualpod.core.spec import DiskFormat
from virtualpod.core.storage import (
    IMAGE_POOL,
    QCOW2_HEADER_BYTES,
    SEED_MODE,
    VOLUME_POOL,
    ImageInfo,
    backing_path,
    image_info,
    overlay_volume_xml,
    plain_volume_xml,
    pool_xml,
    volumes_of,
)
from virtualpod.libvirt.hypervisor import Hypervisor, HypervisorError

UPLOAD_CHUNK_BYTES = MIB


class StorageError(HypervisorError):
    """A disk could not be prepared; `reason` is the condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class BaseImage:
    volume: str
    path: str
    info: ImageInfo


@dataclass(frozen=True)
class VolumeInfo:
    name: str
    path: str
    capacity_bytes: int
    backing_path: str | None


def _pool(conn: Any, name: str) -> Any:
    return conn.storagePoolLookupByName(name)


def _ensure_pool(conn: Any, name: str, directory: str) -> Any:
    """Define, build and start a dir pool unless it runs; idempotent."""
    try:
        pool = _pool(conn, name)
    except libvirt.libvirtError as error:
        if error.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
            raise
        pool = conn.storagePoolDefineXML(pool_xml(name, directory), 0)
        with contextlib.suppress(libvirt.libvirtError):
            pool.setAutostart(1)
    if not pool.isActive():
        with contextlib.suppress(libvirt.libvirtError):  # exists already: fine
            pool.build(libvirt.VIR_STORAGE_POOL_BUILD_NO_OVERWRITE)
        pool.create(0)
    return pool


def _volume(pool: Any, name: str) -> Any | None:
    try:
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            return None
        raise


def _free_bytes(pool: Any) -> int:
    pool.refresh(0)
    return int(pool.info()[3])


def _check_room(pool: Any, name: str, needed: int) -> None:
    free = _free_bytes(pool)
    if needed > free:
        raise StorageError(
            "PoolFull",
            f"storage pool {name} has {free} bytes free, {needed} bytes are needed",
        )


def _upload(conn: Any, volume: Any, feed: Callable[[int], bytes], size: int) -> None:
    """Stream `size` bytes into a volume; a driver that keeps no content (test) skips it."""
    stream = conn.newStream(0)
    try:
        volume.upload(stream, 0, size, 0)
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
            return
        raise
    try:
        sent = 0
        while sent < size:
            chunk = feed(min(UPLOAD_CHUNK_BYTES, size - sent))
            if not chunk:
                raise OSError(errno.EIO, "source ended early")
            stream.send(chunk)
            sent += len(chunk)
        stream.finish()
    except BaseException:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
        raise


def _upload_file(conn: Any, volume: Any, source: Path, size: int) -> None:
    with source.open("rb") as handle:
        _upload(conn, volume, handle.read, size)


def _delete(volume: Any) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        volume.delete(0)


def _storage_error(error: libvirt.libvirtError, what: str) -> StorageError:
    message = error.get_error_message() or str(error)
    full = "No space left" in message or "ENOSPC" in message
    return StorageError("PoolFull" if full else "StorageFailed", f"{what}: {message}")


class Storage:
    """Async storage operations on the hypervisor's connection."""

    def __init__(self, hv: Hypervisor, settings: StorageSettings) -> None:
        self.hv = hv
        self.settings = settings
        self._locks: dict[str, asyncio.Lock] = {}
        #: What the source file's header said, per base imported by this process (a
        #: driver that keeps no content, like the test driver, cannot probe it later).
        self._infos: dict[str, ImageInfo] = {}

    async def ensure_pools(self) -> None:
        def fn(conn: Any) -> None:
            _ensure_pool(conn, IMAGE_POOL, self.settings.image_dir)
            _ensure_pool(conn, VOLUME_POOL, self.settings.volume_dir)

        await self.hv.run(fn)

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def base(self, image: ImageRef) -> BaseImage | None:
        """The image's base volume when it is already in the pool."""
        name = image_file_name(image)

        def fn(conn: Any) -> BaseImage | None:
            volume = _volume(_pool(conn, IMAGE_POOL), name)
            if volume is None:
                return None
            return BaseImage(name, volume.path(), self._infos.get(name) or _read_info(volume))

        return await self.hv.run(fn)

    async def root_disk(
        self,
        image: ImageRef,
        fetch: Callable[[], AbstractAsyncContextManager[Path]],
        name: str,
        size: Callable[[ImageInfo], int],
    ) -> VolumeInfo:
        """The VM's overlay on the image's base; the base is imported first if missing.

        `fetch` gives a local file of the image (only called when the base is missing);
        `size` turns the base's info into the overlay's virtual size. Holding the base's
        lock throughout keeps a concurrent deletion from collecting the new base.
        """
        async with self._lock(image_file_name(image)):
            base = await self.base(image)
            if base is None:
                async with fetch() as source:
                    base = await self._import_base(image, source)
            try:
                return await self.create_overlay(name, base, size(base.info))
            except BaseException:
                if not await self._used(base):
                    await self.hv.run(lambda conn: _delete_base(conn, base.volume))
                raise

    async def _used(self, base: BaseImage) -> bool:
        def fn(conn: Any) -> bool:
            pool = _pool(conn, VOLUME_POOL)
            return any(backing_path(v.XMLDesc(0)) == base.path for v in pool.listAllVolumes(0))

        return await self.hv.run(fn)

    async def _import_base(self, image: ImageRef, source: Path) -> BaseImage:
        """Upload a local file as the image's base volume."""
        name = image_file_name(image)
        with source.open("rb") as handle:
            header = handle.read(QCOW2_HEADER_BYTES)
        size = source.stat().st_size
        info = self._infos[name] = image_info(header, size)

        def fn(conn: Any) -> BaseImage:
            pool = _pool(conn, IMAGE_POOL)
            _check_room(pool, IMAGE_POOL, size)
            try:
                volume = pool.createXML(plain_volume_xml(name, size), 0)
            except libvirt.libvirtError as error:
                raise _storage_error(error, f"cannot create base volume {name}") from error
            try:
                _upload_file(conn, volume, source, size)
            except libvirt.libvirtError as error:
                _delete(volume)
                raise _storage_error(error, f"cannot upload {source}") from error
            except BaseException:
                _delete(volume)
                raise
            with contextlib.suppress(libvirt.libvirtError):
                pool.refresh(0)
            return BaseImage(name, volume.path(), info)

        return await self.hv.run(fn)

    async def create_overlay(self, name: str, base: BaseImage, capacity_bytes: int) -> VolumeInfo:
        """The VM's root disk: a qcow2 overlay on the base; an existing one is kept as is."""

        def fn(conn: Any) -> VolumeInfo:
            pool = _pool(conn, VOLUME_POOL)
            volume = _volume(pool, name)
            if volume is None:
                xml = overlay_volume_xml(name, capacity_bytes, base.path, base.info.format)
                try:
                    volume = pool.createXML(xml, 0)
                except libvirt.libvirtError as error:
                    raise _storage_error(error, f"cannot create overlay {name}") from error
            return _volume_info(volume)

        return await self.hv.run(fn)

    async def has_volume(self, name: str) -> bool:
        return await self.hv.run(lambda conn: _volume(_pool(conn, VOLUME_POOL), name) is not None)

    async def upload_seed(self, name: str, data: bytes) -> None:
        """The cloud-init seed volume (mode 0600: it may hold Secret values)."""

        def fn(conn: Any) -> None:
            pool = _pool(conn, VOLUME_POOL)
            if _volume(pool, name) is not None:
                return
            try:
                volume = pool.createXML(plain_volume_xml(name, len(data), SEED_MODE), 0)
            except libvirt.libvirtError as error:
                raise _storage_error(error, f"cannot create seed {name}") from error
            offset = 0

            def feed(count: int) -> bytes:
                nonlocal offset
                chunk = data[offset : offset + count]
                offset += len(chunk)
                return chunk

            try:
                _upload(conn, volume, feed, len(data))
            except BaseException as error:
                _delete(volume)
                if isinstance(error, libvirt.libvirtError):
                    raise _storage_error(error, f"cannot upload seed {name}") from error
                raise

        await self.hv.run(fn)

    async def volume(self, name: str) -> VolumeInfo | None:
        def fn(conn: Any) -> VolumeInfo | None:
            volume = _volume(_pool(conn, VOLUME_POOL), name)
            return None if volume is None else _volume_info(volume)

        return await self.hv.run(fn)

    async def delete_vm(self, uuid: str) -> list[str]:
        """Delete a VM's volumes, then every base no remaining overlay is backed by."""

        def fn(conn: Any) -> list[str]:
            try:
                pool = _pool(conn, VOLUME_POOL)
            except libvirt.libvirtError as error:
                if error.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
                    return []
                raise
            removed = []
            for name in volumes_of(uuid):
                volume = _volume(pool, name)
                if volume is not None:
                    volume.delete(0)
                    removed.append(name)
            if removed:
                removed += _collect_unused_bases(conn, pool, busy)
            return removed

        busy = {name for name, lock in self._locks.items() if lock.locked()}
        return await self.hv.run(fn)


def _read_info(volume: Any) -> ImageInfo:
    """Format and virtual size of a base volume as libvirt probed them (pool refresh)."""
    capacity = int(volume.info()[1])
    fmt = ET.fromstring(volume.XMLDesc(0)).find("target/format")
    kind = DiskFormat.QCOW2 if fmt is not None and fmt.get("type") == "qcow2" else DiskFormat.RAW
    return ImageInfo(kind, capacity)


def _volume_info(volume: Any) -> VolumeInfo:
    xml = volume.XMLDesc(0)
    return VolumeInfo(volume.name(), volume.path(), int(volume.info()[1]), backing_path(xml))


def _delete_base(conn: Any, name: str) -> None:
    volume = _volume(_pool(conn, IMAGE_POOL), name)
    if volume is not None:
        _delete(volume)


def _collect_unused_bases(conn: Any, volumes: Any, busy: set[str]) -> list[str]:
    """Base images no overlay in the volume pool is backed by (nor being set up)."""
    with contextlib.suppress(libvirt.libvirtError):
        volumes.refresh(0)
    used = {backing_path(volume.XMLDesc(0)) for volume in volumes.listAllVolumes(0)}
    images = _pool(conn, IMAGE_POOL)
    removed = []
    for base in images.listAllVolumes(0):
        if base.path() not in used and base.name() not in busy:
            _delete(base)
            removed.append(base.name())
    return removed

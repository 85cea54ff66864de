"""A local file of a VM image, for the one time its base volume is imported.

A host path is used where it is, after the `hostPaths` rule (`libvirt.host_paths`: its
real path inside an allowed directory, a regular file), and only through that real path;
an http(s) image is downloaded into a private temporary directory, checked against its
pinned digest and removed once imported. Failures carry the condition reason the user
sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from virtualpod.core.image import ImageRef, image_file_name
from virtualpod.core.quantity import MIB
from virtualpod.libvirt.download import DownloadFailed, download
from virtualpod.libvirt.host_paths import check_host_file
from virtualpod.libvirt.storage import StorageError


def check_host_image(path: str, allowed: tuple[str, ...]) -> str:
    """The real path of a usable host image; raises StorageError with the reason."""
    checked = check_host_file(path, allowed)
    if checked.refusal is not None:
        raise StorageError("ImageRefused", f"image {checked.refusal}")
    if checked.missing:
        raise StorageError("ImageMissing", f"image {path} does not exist")
    real = checked.real
    if not os.access(real, os.R_OK):
        raise StorageError("ImageUnreadable", f"image {path} is not readable")
    return real


@contextlib.asynccontextmanager
async def local_image(
    image: ImageRef, timeout: float, allowed: tuple[str, ...]
) -> AsyncIterator[Path]:
    """The image as a local file for the duration of the `async with`."""
    if not image.is_download:
        real = Path(check_host_image(image.location, allowed))
        if image.sha256 is not None:
            await asyncio.to_thread(_check_digest, real, image.sha256)
        yield real
        return
    directory = Path(tempfile.mkdtemp(prefix="virtualpod-image-"))
    try:
        dest = directory / image_file_name(image)
        try:
            await asyncio.to_thread(
                download, image.location, dest, sha256=image.sha256, timeout=timeout
            )
        except DownloadFailed as error:
            raise StorageError(error.reason, str(error)) from error
        yield dest
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _check_digest(path: Path, sha256: str) -> None:

    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(MIB):
            digest.update(chunk)
    if digest.hexdigest() != sha256:
        raise StorageError(
            "ChecksumMismatch",
            f"image {path}: sha256 is {digest.hexdigest()}, the image reference pins {sha256}",
        )

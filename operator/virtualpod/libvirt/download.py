"""Fetch an http(s) VM image into a local file, checking its sha256 while it streams.

Blocking (the caller runs it in a thread). A download that stalls longer than
`timeout` seconds (no connection, or no bytes) fails; so do HTTP errors and a digest
that differs from the pinned one. The file appears under its final name only when it
is complete and checked, so a failure leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from virtualpod.core.quantity import MIB

CHUNK_BYTES = MIB
USER_AGENT = "virtualpod-image-fetch"


class DownloadFailed(Exception):  # noqa: N818 (names the condition reason)
    """The image could not be fetched; `reason` is the condition reason."""

    reason = "DownloadFailed"


class ChecksumMismatch(DownloadFailed):
    reason = "ChecksumMismatch"


@dataclass(frozen=True)
class Downloaded:
    path: Path
    size_bytes: int
    sha256: str


def download(url: str, dest: Path, *, sha256: str | None, timeout: float) -> Downloaded:
    """Fetch `url` to `dest` (atomically); raises DownloadFailed or ChecksumMismatch."""
    partial = dest.with_name(f".{dest.name}.part")
    digest = hashlib.sha256()
    size = 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with (
            urllib.request.urlopen(request, timeout=timeout) as response,
            partial.open("wb") as out,
        ):
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
    except urllib.error.HTTPError as error:
        _remove(partial)
        raise DownloadFailed(f"{url}: HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, OSError) as error:  # refused, DNS, timeout, disk full
        _remove(partial)
        why = getattr(error, "reason", None) or error
        raise DownloadFailed(f"{url}: {why}") from error
    got = digest.hexdigest()
    if sha256 is not None and got != sha256:
        _remove(partial)
        raise ChecksumMismatch(f"{url}: sha256 is {got}, the image reference pins {sha256}")
    os.replace(partial, dest)
    return Downloaded(dest, size, got)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()

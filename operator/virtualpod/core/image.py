"""Which VM disk image a VirtualPod runs: the first app container's `image` (Virtlet's rule).

An image is a VM disk when it is an absolute host path, a `file://` URL or an
`http(s)://` URL; an optional `#sha256=<64 hex>` fragment pins its content. Anything else
(`nginx:1.27`) is an OCI reference this operator does not pull: the VM then boots only
what `spec.boot` names, as before. Only the first app container's image counts, because
one VM has one root disk; the others' images are informational.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import urllib.parse
from dataclasses import dataclass
from enum import StrEnum

SHA256_FRAGMENT = re.compile(r"^sha256=(?P<digest>[0-9a-fA-F]{64})$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Longest image reference accepted (the CRD allows the same).
MAX_IMAGE_LENGTH = 1024


class ImageKind(StrEnum):
    PATH = "path"
    HTTP = "http"


class ImageError(ValueError):
    """An image reference that looks like a disk but cannot be used, and why."""


@dataclass(frozen=True)
class ImageRef:
    """A VM disk image: a host path, or a URL fetched into the host's image store."""

    kind: ImageKind
    location: str
    sha256: str | None = None

    @property
    def is_download(self) -> bool:
        return self.kind is ImageKind.HTTP


def looks_like_disk(image: str) -> bool:
    """A path or URL names a disk; anything else is an OCI reference."""
    return image.startswith(("/", "file://", "http://", "https://"))


def parse_image(image: str) -> ImageRef | None:
    """`ImageRef` for a disk reference, None for an OCI reference; raises ImageError."""
    if not looks_like_disk(image):
        return None
    if len(image) > MAX_IMAGE_LENGTH or _CONTROL.search(image):
        raise ImageError("must be at most 1024 characters without control characters")
    location, _, fragment = image.partition("#")
    digest = _digest(fragment) if fragment else None
    if location.startswith(("http://", "https://")):
        parts = urllib.parse.urlsplit(location)
        if not parts.hostname or not parts.path.strip("/"):
            raise ImageError(f"{location!r} must name a host and a file")
        return ImageRef(ImageKind.HTTP, location, digest)
    path = urllib.parse.unquote(location.removeprefix("file://"))
    if not path.startswith("/"):
        raise ImageError(f"{location!r}: a file:// URL needs an absolute path (file:///...)")
    if posixpath.normpath(path) != path or path.endswith("/"):
        raise ImageError(f"{path!r} must be a normalized path to a file (no '..', '.' or '//')")
    return ImageRef(ImageKind.PATH, path, digest)


def _digest(fragment: str) -> str:
    match = SHA256_FRAGMENT.match(fragment)
    if not match:
        raise ImageError(f"fragment {fragment!r} must be sha256=<64 hex digits>")
    return match["digest"].lower()


def image_file_name(ref: ImageRef) -> str:
    """The base volume's name in the image pool: stable per source, safe as a file name.

    The digest when pinned (two URLs of one content share a base), else a hash of the
    location, with the source's own file name kept for people reading `virsh vol-list`.
    """

    key = ref.sha256 or hashlib.sha256(ref.location.encode()).hexdigest()
    tail = posixpath.basename(urllib.parse.urlsplit(ref.location).path) or "image"
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", tail)[-64:].lstrip(".") or "image"
    return f"{key[:16]}-{safe}"

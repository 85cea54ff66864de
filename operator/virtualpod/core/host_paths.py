"""Host files a tenant names: the rule by name, shared by `virtualpod plan` and the operator.

A host file handed to a VM is the admin's decision, never the tenant's: `spec.boot`
kernel, initrd and disk paths, and a first container's `image` given as a host path (or
`file://` URL), must lie inside a directory listed in the `hostPaths.allowed` setting,
and none is listed by default. This module holds the part of the rule that needs no
filesystem (names only), so `plan` can apply it offline. The operator also resolves the
real file on the host (`virtualpod.libvirt.host_paths`) before a domain is defined.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from virtualpod.core.image import ImageKind
from virtualpod.core.spec import DiskBoot, FieldError, KernelBoot, VirtualPod

#: Kernel interfaces and device nodes: never a VM's file, whatever an admin allows.
FORBIDDEN_ROOTS = ("/proc", "/sys", "/dev")
SETTING = "hostPaths.allowed"
IMAGE_FIELD = "spec.containers[0].image"


@dataclass(frozen=True)
class HostPaths:
    """`hostPaths`: where `spec.boot` files may come from, and whether disks are writable."""

    allowed: tuple[str, ...] = ()
    read_only: bool = True


def boot_files(boot: DiskBoot | KernelBoot | None) -> tuple[tuple[str, str], ...]:
    """(field, path) of every host file a boot section names."""
    if isinstance(boot, DiskBoot):
        return (("spec.boot.disk.path", boot.path),)
    if isinstance(boot, KernelBoot):
        files = [("spec.boot.kernel.path", boot.path)]
        if boot.initrd:
            files.append(("spec.boot.kernel.initrd", boot.initrd))
        return tuple(files)
    return ()


def host_files(pod: VirtualPod) -> tuple[tuple[str, str], ...]:
    """(field, path) of every host file a VirtualPod names: boot files and a host image."""
    image = pod.image
    if image is not None and image.kind is ImageKind.PATH:
        return (*boot_files(pod.boot), (IMAGE_FIELD, image.location))
    return boot_files(pod.boot)


def is_within(path: str, directory: str) -> bool:
    """`path` is `directory` itself or below it, comparing whole path components."""
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def forbidden_root(path: str) -> str | None:
    """The kernel interface or device tree `path` lies in, if any."""
    return next((root for root in FORBIDDEN_ROOTS if is_within(path, root)), None)


def allowed_directory_problem(directory: object) -> str | None:
    """Why a `hostPaths.allowed` entry cannot be used, or None when it can."""
    if not isinstance(directory, str) or not directory.startswith("/"):
        return f"{directory!r} must be an absolute path"
    if directory.rstrip("/") == "":
        return "'/' would allow every file of the host"
    if posixpath.normpath(directory) != directory.rstrip("/") or ".." in directory.split("/"):
        return f"{directory!r} must be a normalized path (no '..', '.' or '//')"
    root = forbidden_root(directory)
    if root is not None:
        return f"{directory!r} is inside {root}, which never holds VM files"
    return None


def lexical_refusal(path: str, allowed: tuple[str, ...]) -> str | None:
    """Why `path`, by name alone, may not be handed to a VM (None: the name is allowed)."""
    if not allowed:
        return (
            f"{path!r} refused: host paths need an admin's opt-in and {SETTING} is empty "
            "(docs/security.md)"
        )
    normal = posixpath.normpath(path)
    if normal != path or ".." in path.split("/"):
        return f"{path!r} refused: must be a normalized path (no '..', '.' or '//')"
    if not any(is_within(path, directory) and path != directory for directory in allowed):
        return f"{path!r} refused: not inside a directory of {SETTING} ({', '.join(allowed)})"
    return None


def host_file_refusals(pod: VirtualPod, allowed: tuple[str, ...]) -> list[FieldError]:
    """Every host file of `pod` the allowed directories refuse by name, with its field."""
    return [
        FieldError(field, reason)
        for field, path in host_files(pod)
        if (reason := lexical_refusal(path, allowed)) is not None
    ]


def is_remote_uri(uri: str) -> bool:
    """A libvirt URI naming another host (`qemu+ssh://host/system`): its files are not ours."""
    rest = uri.split("://", 1)[1] if "://" in uri else ""
    return bool(rest) and not rest.startswith("/")

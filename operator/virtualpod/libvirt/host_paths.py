"""The host side of the `spec.boot` host-path rule: the real file, where QEMU opens it.

Runs on the libvirt host, in the operator that defines the domain, just before the
domain is defined. The name rule (`virtualpod.core.host_paths`) is applied again, then
the real path: every symlink resolved, it must still lie inside the real path of an
allowed directory, outside /proc, /sys and /dev, and be a regular file (no block or
character device, FIFO, socket or directory). The domain is then rendered with the real
paths, so a symlink swapped afterwards changes nothing. A refusal is a `SpecError`: the
operator reports it as `Valid=False` with a Warning Event and defines no domain.
"""

from __future__ import annotations

import os
import stat

from virtualpod.core.host_paths import (
    SETTING,
    boot_files,
    forbidden_root,
    is_remote_uri,
    is_within,
    lexical_refusal,
)
from virtualpod.core.plan import VMPlan, plan_with_boot
from virtualpod.core.settings import Settings
from virtualpod.core.spec import DiskBoot, FieldError, KernelBoot, SpecError

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symlink"),
)


class HostPathError(SpecError):
    """A `spec.boot` file the host-path rule refuses; names the field and the rule."""


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def real_file_refusal(path: str, allowed: tuple[str, ...]) -> tuple[str | None, str]:
    """(why `path` may not be handed to a VM or None, its real path) on this host."""
    reason = lexical_refusal(path, allowed)
    if reason is not None:
        return reason, path
    real = os.path.realpath(path)
    roots = [os.path.realpath(directory) for directory in allowed]
    if not any(is_within(real, root) and real != root for root in roots):
        return f"{path!r} refused: its real path {real!r} is outside {SETTING}", real
    root = forbidden_root(real)
    if root is not None:
        return f"{path!r} refused: its real path {real!r} is inside {root}", real
    try:
        mode = os.lstat(real).st_mode
    except OSError as error:
        return f"{path!r} refused: {error.strerror or 'cannot be read'} on the host", real
    if not stat.S_ISREG(mode):
        return f"{path!r} refused: is {_kind(mode)}, only regular files are allowed", real
    return None, real


def checked_boot(
    boot: DiskBoot | KernelBoot, settings: Settings
) -> tuple[DiskBoot | KernelBoot, list[FieldError]]:
    """`boot` with every file replaced by its real path, and every refusal with its field."""
    allowed = settings.host_paths.allowed
    refusals: list[FieldError] = []
    real: dict[str, str] = {}
    for field, path in boot_files(boot):
        if is_remote_uri(settings.libvirt_uri):
            reason: str | None = (
                f"{path!r} refused: libvirtURI {settings.libvirt_uri!r} names another "
                "host, where this operator cannot check the file"
            )
        else:
            reason, real[path] = real_file_refusal(path, allowed)
        if reason is not None:
            refusals.append(FieldError(field, reason))
    if isinstance(boot, DiskBoot):
        return DiskBoot(path=real.get(boot.path, boot.path), format=boot.format), refusals
    initrd = real.get(boot.initrd, boot.initrd) if boot.initrd else None
    resolved = KernelBoot(path=real.get(boot.path, boot.path), initrd=initrd, cmdline=boot.cmdline)
    return resolved, refusals


def checked_plan(plan: VMPlan, settings: Settings) -> VMPlan:
    """The plan with its boot files checked on this host; raises HostPathError."""
    if plan.domain.boot is None:
        return plan
    boot, refusals = checked_boot(plan.domain.boot, settings)
    if refusals:
        raise HostPathError(refusals)
    return plan_with_boot(plan, boot)

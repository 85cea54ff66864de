"""The host side of the host-path rule: the real file, on the host where it is opened.

Runs on the libvirt host, in the operator, just before the domain is defined and before
a host-path image is imported into the image store. The name rule
(`virtualpod.core.host_paths`) is applied again, then the real path: every symlink
resolved, it must still lie inside the real path of an allowed directory, outside
/proc, /sys and /dev, and be a regular file (no block or character device, FIFO, socket
or directory). The plan then carries the real paths (the domain XML, the image to
import), so a symlink swapped afterwards changes nothing. A refusal is a `SpecError`:
the operator reports it as `Valid=False` with a Warning Event and defines no domain. A
file that is not there yet is retried, and checked again when it is.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from virtualpod.core.host_paths import (
    IMAGE_FIELD,
    SETTING,
    forbidden_root,
    host_files,
    is_remote_uri,
    is_within,
    lexical_refusal,
)
from virtualpod.core.plan import VMPlan, plan_with_real_paths
from virtualpod.core.settings import Settings
from virtualpod.core.spec import FieldError, SpecError

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symlink"),
)


class HostPathError(SpecError):
    """Host files the host-path rule refuses; each names the field and the rule."""


class HostFileMissing(Exception):  # noqa: N818 (a state, like DiskImageMissing)
    """`spec.boot` files that are allowed by name but not there (yet): retried, no domain."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = tuple(errors)
        super().__init__("; ".join(str(error) for error in self.errors))


@dataclass(frozen=True)
class Checked:
    """One host file as found on this host: its real path, and why it is refused, if so."""

    real: str
    refusal: str | None = None
    missing: bool = False


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def check_host_file(path: str, allowed: tuple[str, ...]) -> Checked:
    """The host-path rule for one file, on the real path as this host resolves it.

    A file that does not exist is not refused (it may be copied in later) but reported
    `missing`: whoever retries checks it again once it is there.
    """
    reason = lexical_refusal(path, allowed)
    if reason is not None:
        return Checked(path, reason)
    real = os.path.realpath(path)
    roots = [os.path.realpath(directory) for directory in allowed]
    if not any(is_within(real, root) and real != root for root in roots):
        return Checked(real, f"{path!r} refused: its real path {real!r} is outside {SETTING}")
    root = forbidden_root(real)
    if root is not None:
        return Checked(real, f"{path!r} refused: its real path {real!r} is inside {root}")
    try:
        mode = os.lstat(real).st_mode
    except FileNotFoundError:
        return Checked(real, missing=True)
    except OSError as error:
        return Checked(real, f"{path!r} refused: {error.strerror or 'unreadable'} on the host")
    if not stat.S_ISREG(mode):
        return Checked(real, f"{path!r} refused: is {_kind(mode)}, only regular files are allowed")
    return Checked(real)


def checked_plan(plan: VMPlan, settings: Settings) -> VMPlan:
    """The plan with its host files checked on this host and replaced by their real paths.

    Raises HostPathError naming every refused field, then HostFileMissing for `spec.boot`
    files not there yet (a missing host image is left to the image import, which says
    `ImageMissing` and retries).
    """
    files = host_files(plan.pod)
    if not files:
        return plan
    if is_remote_uri(settings.libvirt_uri):
        raise HostPathError(
            [
                FieldError(
                    field,
                    f"{path!r} refused: libvirtURI {settings.libvirt_uri!r} names another "
                    "host, where this operator cannot check the file",
                )
                for field, path in files
            ]
        )
    checked = {
        field: (path, check_host_file(path, settings.host_paths.allowed)) for field, path in files
    }
    refusals = [FieldError(field, c.refusal) for field, (_, c) in checked.items() if c.refusal]
    if refusals:
        raise HostPathError(refusals)
    missing = [
        FieldError(field, f"{path!r} does not exist on the host")
        for field, (path, c) in checked.items()
        if c.missing and field != IMAGE_FIELD
    ]
    if missing:
        raise HostFileMissing(missing)
    return plan_with_real_paths(
        plan, {path: c.real for path, c in checked.values() if not c.missing}
    )

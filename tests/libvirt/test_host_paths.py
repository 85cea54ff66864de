"""The host-path rule on a real filesystem: what the operator lets a tenant's VM open.

Each row builds files in a fresh temporary directory (`images/` is the allowed one,
`outside/` is not) and names one path as a tenant would in `spec.boot`.
"""

from __future__ import annotations

import os
import socket
import stat
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.unit.manifests import container, virtualpod
from virtualpod.core.host_paths import HostPaths
from virtualpod.core.plan import plan_virtualpod
from virtualpod.core.settings import Settings
from virtualpod.core.spec import SpecError
from virtualpod.libvirt.host_paths import (
    HostFileMissing,
    HostPathError,
    check_host_file,
    checked_plan,
)

Setup = Callable[[Path], str]


def _tree(tmp: Path) -> None:
    (tmp / "images").mkdir()
    (tmp / "outside").mkdir()
    (tmp / "images" / "disk.qcow2").write_bytes(b"QFI\xfb")
    (tmp / "outside" / "secret").write_text("host secret")


def _mknod(path: Path, kind: int, major: int, minor: int) -> None:
    try:
        os.mknod(path, kind | 0o600, os.makedev(major, minor))
    except PermissionError:
        pytest.skip("creating device nodes needs CAP_MKNOD")


def _char_device(tmp: Path) -> str:
    _mknod(tmp / "images" / "null", stat.S_IFCHR, 1, 3)
    return f"{tmp}/images/null"


def _block_device(tmp: Path) -> str:
    _mknod(tmp / "images" / "loop", stat.S_IFBLK, 7, 0)
    return f"{tmp}/images/loop"


def _fifo(tmp: Path) -> str:
    os.mkfifo(tmp / "images" / "pipe")
    return f"{tmp}/images/pipe"


def _socket(tmp: Path) -> str:
    path = tmp / "images" / "sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
    return str(path)


def _symlink(tmp: Path, name: str, target: str) -> str:
    (tmp / "images" / name).symlink_to(target)
    return f"{tmp}/images/{name}"


def _directory(tmp: Path) -> str:
    (tmp / "images" / "dir").mkdir()
    return f"{tmp}/images/dir"


def _symlink_loop(tmp: Path) -> str:
    (tmp / "images" / "a").symlink_to(tmp / "images" / "b")
    (tmp / "images" / "b").symlink_to(tmp / "images" / "a")
    return f"{tmp}/images/a"


def _symlinked_directory_out(tmp: Path) -> str:
    (tmp / "images" / "sub").symlink_to(tmp / "outside", target_is_directory=True)
    return f"{tmp}/images/sub/secret"


MISSING = "(missing: retried, not refused)"

# (setup -> path named in spec.boot, what the refusal says, or None when allowed)
RULES: dict[str, tuple[Setup, str | None]] = {
    "allowed file": (lambda tmp: f"{tmp}/images/disk.qcow2", None),
    "symlink within the allowed directory": (
        lambda tmp: _symlink(tmp, "current", f"{tmp}/images/disk.qcow2"),
        None,
    ),
    "'..' out of the allowed directory": (
        lambda tmp: f"{tmp}/images/../outside/secret",
        "must be a normalized path",
    ),
    "symlink out of the allowed directory": (
        lambda tmp: _symlink(tmp, "link", f"{tmp}/outside/secret"),
        "is outside hostPaths.allowed",
    ),
    "symlinked directory out of the allowed directory": (
        _symlinked_directory_out,
        "is outside hostPaths.allowed",
    ),
    "symlink to /etc/shadow": (
        lambda tmp: _symlink(tmp, "shadow", "/etc/shadow"),
        "real path '/etc/shadow' is outside hostPaths.allowed",
    ),
    "sibling directory sharing the allowed name as prefix": (
        lambda tmp: f"{tmp}/images-evil/disk.qcow2",
        "not inside a directory of hostPaths.allowed",
    ),
    "character device node": (_char_device, "is a character device"),
    "block device node": (_block_device, "is a block device"),
    "FIFO": (_fifo, "is a FIFO"),
    "socket": (_socket, "is a socket"),
    "/proc/self/...": (
        lambda tmp: "/proc/self/environ",
        "not inside a directory of hostPaths.allowed",
    ),
    "symlink to /proc/self/...": (
        lambda tmp: _symlink(tmp, "environ", "/proc/self/environ"),
        "is outside hostPaths.allowed",
    ),
    "/dev node named directly": (lambda tmp: "/dev/null", "not inside a directory"),
    "missing file": (lambda tmp: f"{tmp}/images/nope.qcow2", MISSING),
    "dangling symlink within the allowed directory": (
        lambda tmp: _symlink(tmp, "later", f"{tmp}/images/later.qcow2"),
        MISSING,
    ),
    "dangling symlink out of the allowed directory": (
        lambda tmp: _symlink(tmp, "away", f"{tmp}/outside/later"),
        "is outside hostPaths.allowed",
    ),
    "directory": (_directory, "is a directory"),
    "symlink loop": (_symlink_loop, "is a symlink"),
}


@pytest.mark.parametrize("case", RULES)
def test_host_path_rule(tmp_path: Path, case: str) -> None:
    _tree(tmp_path)
    setup, refused = RULES[case]
    path = setup(tmp_path)
    checked = check_host_file(path, (f"{tmp_path}/images",))
    assert checked.missing is (refused == MISSING)
    if refused in (None, MISSING):
        assert checked.refusal is None
        assert checked.real == os.path.realpath(path)
        assert Path(checked.real).parent == tmp_path / "images"
    else:
        assert checked.refusal is not None
        assert refused in checked.refusal
        assert repr(path) in checked.refusal  # the message names the path the tenant gave


def test_empty_allowed_list_refuses_even_an_ordinary_file(tmp_path: Path) -> None:
    _tree(tmp_path)
    refusal = check_host_file(f"{tmp_path}/images/disk.qcow2", ()).refusal
    assert refusal is not None
    assert "hostPaths.allowed is empty" in refusal


def test_allowed_directory_that_is_a_symlink_to_proc_still_refuses_proc(tmp_path: Path) -> None:
    (tmp_path / "procfs").symlink_to("/proc", target_is_directory=True)
    checked = check_host_file(f"{tmp_path}/procfs/self/environ", (f"{tmp_path}/procfs",))
    assert checked.real.startswith("/proc/")
    assert checked.refusal is not None
    assert "is inside /proc" in checked.refusal


def _disk_pod(path: str) -> dict[str, object]:
    return virtualpod(container(), name="vm", boot={"disk": {"path": path, "format": "raw"}})


def test_checked_plan_renders_the_real_path_read_only(tmp_path: Path) -> None:
    _tree(tmp_path)
    link = _symlink(tmp_path, "current", f"{tmp_path}/images/disk.qcow2")
    settings = Settings(host_paths=HostPaths(allowed=(f"{tmp_path}/images",)))
    plan = checked_plan(plan_virtualpod(_disk_pod(link), settings), settings)
    disk = ET.fromstring(plan.domain_xml).find("devices/disk")
    assert disk is not None
    source = disk.find("source")
    assert source is not None
    assert source.get("file") == f"{tmp_path}/images/disk.qcow2"  # not the swappable link
    assert disk.find("readonly") is not None


def test_refusal_names_every_field_and_is_a_spec_error(tmp_path: Path) -> None:
    _tree(tmp_path)
    settings = Settings(host_paths=HostPaths(allowed=(f"{tmp_path}/images",)))
    manifest = virtualpod(
        container(),
        boot={
            "kernel": {
                "path": _symlink(tmp_path, "vmlinuz", "/etc/shadow"),
                "initrd": _fifo(tmp_path),
            }
        },
    )
    with pytest.raises(HostPathError) as refused:
        checked_plan(plan_virtualpod(manifest, settings), settings)
    assert isinstance(refused.value, SpecError)
    assert [error.path for error in refused.value.errors] == [
        "spec.boot.kernel.path",
        "spec.boot.kernel.initrd",
    ]


def test_a_remote_libvirt_uri_refuses_host_paths(tmp_path: Path) -> None:
    _tree(tmp_path)
    settings = Settings(
        libvirt_uri="qemu+ssh://elsewhere/system",
        host_paths=HostPaths(allowed=(f"{tmp_path}/images",)),
    )
    plan = plan_virtualpod(_disk_pod(f"{tmp_path}/images/disk.qcow2"), settings)
    with pytest.raises(HostPathError, match="names another host"):
        checked_plan(plan, settings)


def test_a_plan_without_host_files_is_unchanged() -> None:
    plan = plan_virtualpod(virtualpod(container()), Settings())
    assert checked_plan(plan, Settings()) is plan


def test_a_host_path_image_is_imported_from_its_real_path(tmp_path: Path) -> None:
    _tree(tmp_path)
    settings = Settings(host_paths=HostPaths(allowed=(f"{tmp_path}/images",)))
    link = _symlink(tmp_path, "current", f"{tmp_path}/images/disk.qcow2")
    plan = checked_plan(
        plan_virtualpod(virtualpod({**container(), "image": link}), settings), settings
    )
    assert plan.workload is not None
    assert plan.workload.image.location == f"{tmp_path}/images/disk.qcow2"

    thief = virtualpod({**container(), "image": _symlink(tmp_path, "shadow", "/etc/shadow")})
    with pytest.raises(HostPathError) as refused:
        checked_plan(plan_virtualpod(thief, settings), settings)
    assert [error.path for error in refused.value.errors] == ["spec.containers[0].image"]
    assert "real path '/etc/shadow' is outside" in str(refused.value)


def test_a_missing_boot_file_is_retried_and_a_missing_image_left_to_its_import(
    tmp_path: Path,
) -> None:
    _tree(tmp_path)
    settings = Settings(host_paths=HostPaths(allowed=(f"{tmp_path}/images",)))
    kernel = virtualpod(
        container(),
        boot={
            "kernel": {"path": f"{tmp_path}/images/disk.qcow2", "initrd": f"{tmp_path}/images/i"}
        },
    )
    with pytest.raises(HostFileMissing) as missing:
        checked_plan(plan_virtualpod(kernel, settings), settings)
    assert [error.path for error in missing.value.errors] == ["spec.boot.kernel.initrd"]
    later = f"{tmp_path}/images/later.qcow2"
    plan = checked_plan(
        plan_virtualpod(virtualpod({**container(), "image": later}), settings), settings
    )
    assert plan.workload is not None
    assert plan.workload.image.location == later

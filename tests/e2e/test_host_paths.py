"""A tenant names host files (`spec.boot`, a host-path image): refused unless an admin
allowed the directory.

Refused: `Valid=False` naming the field and the rule, one Warning Event, no domain, and
other VirtualPods keep being served. Allowed: the disk is attached read-only, and on a
real QEMU the guest boots from it and its write to the disk is refused.
"""

from __future__ import annotations

import hashlib
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Env, unique, vpod
from tests.e2e.test_lifecycle import condition, wait_phase
from tests.waiting import async_wait_for
from virtualpod.core.host_paths import HostPaths

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """An allowed directory holding the one-sector boot disk of scripts/disk-guest.sh."""
    directory = tmp_path / "images"
    directory.mkdir()
    subprocess.run(
        ["bash", str(REPO / "scripts" / "disk-guest.sh"), str(directory / "guest.img")],
        check=True,
        capture_output=True,
    )
    (directory / "shadow").symlink_to("/etc/shadow")
    return directory


def _disk(path: str | Path) -> dict[str, Any]:
    return {"disk": {"path": str(path), "format": "raw"}}


async def _refused(env: Env, name: str, field: str, rule: str) -> None:
    obj = await wait_phase(env, name, "Failed")
    valid = condition(obj, "Valid")
    assert valid is not None
    assert valid["status"] == "False"
    assert f"{field}: " in valid["message"]
    assert rule in valid["message"]

    async def warned() -> list[dict[str, Any]]:
        return [
            e
            for e in await env.kube.events(env.namespace, name)
            if e["type"] == "Warning" and rule in e["message"]
        ]

    await async_wait_for(warned, timeout=10, what=f"Warning Event for {name}")
    assert not any(name in d.name for d in await env.hv.list_domains())


async def test_host_files_are_refused_by_default(env: Env) -> None:
    await env.start_operator()
    thief = unique("shadow")
    await env.kube.create(vpod(thief, boot=_disk("/etc/shadow")))
    await _refused(env, thief, "spec.boot.disk.path", "hostPaths.allowed is empty")

    kernel = unique("kubelet-key")
    await env.kube.create(
        vpod(
            kernel,
            boot={
                "kernel": {
                    "path": "/boot/vmlinuz",
                    "initrd": "/var/lib/kubelet/pki/kubelet-client-current.pem",
                }
            },
        )
    )
    await _refused(env, kernel, "spec.boot.kernel.initrd", "hostPaths.allowed is empty")

    image = unique("image")
    manifest = vpod(image)
    manifest["spec"]["containers"][0]["image"] = "file:///dev/vda"
    await env.kube.create(manifest)
    await _refused(env, image, "spec.containers[0].image", "hostPaths.allowed is empty")

    good = unique("good")
    await env.kube.create(vpod(good))
    await wait_phase(env, good, "Running")


async def test_allowed_directory_is_checked_on_the_real_path(env: Env, images: Path) -> None:
    settings = replace(env.settings, host_paths=HostPaths(allowed=(str(images),)))
    await env.start_operator(settings)
    named = unique("named")
    await env.kube.create(vpod(named, boot=_disk("/etc/shadow")))
    await _refused(env, named, "spec.boot.disk.path", "not inside a directory of hostPaths")

    linked = unique("linked")
    await env.kube.create(vpod(linked, boot=_disk(images / "shadow")))
    await _refused(env, linked, "spec.boot.disk.path", "real path '/etc/shadow' is outside")

    image = unique("image")
    manifest = vpod(image)
    manifest["spec"]["containers"][0]["image"] = str(images / "shadow")
    await env.kube.create(manifest)
    await _refused(env, image, "spec.containers[0].image", "real path '/etc/shadow' is outside")

    good = unique("good")
    await env.kube.create(vpod(good))
    await wait_phase(env, good, "Running")


async def test_a_boot_disk_not_there_yet_waits_without_a_domain(env: Env, images: Path) -> None:
    settings = replace(env.settings, host_paths=HostPaths(allowed=(str(images),)))
    await env.start_operator(settings)
    name = unique("later")
    later = images / "later.img"
    await env.kube.create(vpod(name, boot=_disk(later)))
    obj = await wait_phase(env, name, "Pending")
    ready = condition(obj, "Ready")
    assert ready is not None
    assert ready["reason"] == "HostFileMissing"
    assert "spec.boot.disk.path" in ready["message"]

    async def warned() -> bool:
        events = await env.kube.events(env.namespace, name)
        return any(e["reason"] == "HostFileMissing" for e in events)

    await async_wait_for(warned, timeout=10, what="HostFileMissing Warning Event")
    assert not any(name in d.name for d in await env.hv.list_domains())
    later.write_bytes((images / "guest.img").read_bytes())
    await wait_phase(env, name, "Running", timeout=30)


@pytest.mark.parametrize(
    ("read_only", "write"), [(True, "VPDISK WRITE REFUSED"), (False, "VPDISK WRITE OK")]
)
async def test_disk_from_an_allowed_directory_boots_read_only_unless_writing_is_allowed(
    env: Env, images: Path, read_only: bool, write: str
) -> None:
    disk = images / "guest.img"
    before = hashlib.sha256(disk.read_bytes()).hexdigest()
    host_paths = HostPaths(allowed=(str(images),), read_only=read_only)
    await env.start_operator(replace(env.settings, host_paths=host_paths))
    name = unique("disk")
    await env.kube.create(vpod(name, boot=_disk(disk)))
    obj = await wait_phase(env, name, "Running", timeout=30)
    valid = condition(obj, "Valid")
    assert valid is not None
    assert valid["status"] == "True"

    xml = ET.fromstring(await env.hv.xml(obj["status"]["vm"]["uuid"]))
    element = xml.find("devices/disk")
    assert element is not None
    assert (element.find("readonly") is not None) is read_only
    source = element.find("source")
    assert source is not None
    assert source.get("file") == str(disk)
    if env.libvirt_uri.startswith("test:"):
        return  # the test driver runs no guest: the rest needs a real QEMU

    serial = xml.find("devices/serial/source")
    assert serial is not None
    log = Path(serial.get("path", ""))
    try:

        async def reported() -> str:
            """The log once the guest's write line is complete (it ends in CR LF)."""
            text = log.read_text(errors="replace") if log.exists() else ""
            _, found, rest = text.partition("VPDISK WRITE")
            return text if found and "\n" in rest else ""

        seen = await async_wait_for(
            reported, timeout=60, what="the disk guest's write attempt on its serial console"
        )
        assert "VPDISK BOOTED" in seen
        assert write in seen
        changed = hashlib.sha256(disk.read_bytes()).hexdigest() != before
        assert changed is not read_only
    finally:
        log.unlink(missing_ok=True)

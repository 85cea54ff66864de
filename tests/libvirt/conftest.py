"""Fixtures for hypervisor tests: every test runs on libvirt's in-process test driver,
and again on a real libvirtd + QEMU when VIRTUALPOD_QEMU_URI is set
(`eval "$(scripts/libvirtd.sh start)"`)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import uuid as uuidlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from virtualpod.core.plan import VMPlan, plan_virtualpod
from virtualpod.core.settings import Settings
from virtualpod.libvirt.hypervisor import Hypervisor

REPO = Path(__file__).resolve().parents[2]
TEST_URI = "test:///default"
QEMU_URI = os.environ.get("VIRTUALPOD_QEMU_URI", "")
NO_QEMU = 'VIRTUALPOD_QEMU_URI not set: run `eval "$(scripts/libvirtd.sh start)"` (root)'

qemu_only = [pytest.mark.qemu, pytest.mark.skipif(not QEMU_URI, reason=NO_QEMU)]


def pytest_report_header() -> str:
    return f"libvirt: {TEST_URI}" + (f" and {QEMU_URI}" if QEMU_URI else f" only ({NO_QEMU})")


@pytest.fixture(
    params=[
        pytest.param(TEST_URI, id="test-driver"),
        pytest.param(QEMU_URI or "qemu:///system", id="qemu", marks=qemu_only),
    ]
)
def uri(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def qemu_uri() -> str:
    if not QEMU_URI:
        pytest.skip(NO_QEMU)
    return QEMU_URI


# Three pods, one per QoS class; resources small so real VMs stay cheap.
def manifest(kind: str, name: str) -> dict[str, Any]:
    resources: dict[str, list[dict[str, Any]]] = {
        "burstable": [
            {
                "name": "app",
                "image": "app",
                "resources": {
                    "requests": {"cpu": "250m", "memory": "96Mi"},
                    "limits": {"cpu": "1", "memory": "128Mi"},
                },
            },
            {
                "name": "sidecar",
                "image": "sidecar",
                "resources": {"requests": {"cpu": "100m", "memory": "32Mi"}},
            },
        ],
        "burstable-limited": [
            {
                "name": "app",
                "image": "app",
                "resources": {
                    "requests": {"cpu": "200m", "memory": "64Mi"},
                    "limits": {"cpu": "500m", "memory": "128Mi"},
                },
            },
        ],
        "guaranteed": [
            {
                "name": "app",
                "image": "app",
                "resources": {
                    "requests": {"cpu": "1", "memory": "128Mi"},
                    "limits": {"cpu": "1", "memory": "128Mi"},
                },
            },
        ],
        "besteffort": [{"name": "app", "image": "app"}],
    }
    return {
        "apiVersion": "virtualpod.dev/v1alpha1",
        "kind": "VirtualPod",
        "metadata": {"name": name, "namespace": "vptest"},
        "spec": {"containers": resources[kind]},
    }


SETTINGS = dataclasses.replace(
    Settings(),
    default_container_size=dataclasses.replace(
        Settings().default_container_size, memory_bytes=64 * 1024 * 1024
    ),
)


class VMs:
    """Plans domains from manifests (through the core) and undefines them afterwards."""

    def __init__(self, hv: Hypervisor) -> None:
        self.hv = hv
        self.uuids: list[str] = []

    def plan(self, kind: str = "burstable", **settings: Any) -> VMPlan:
        name = f"{kind}-{uuidlib.uuid4().hex[:8]}"
        s = dataclasses.replace(SETTINGS, **settings) if settings else SETTINGS
        plan = plan_virtualpod(manifest(kind, name), s, cgroup_version=self.hv.cgroup_version)
        self.uuids.append(plan.uuid)
        return plan

    def track(self, uuid: str) -> str:
        self.uuids.append(uuid)
        return uuid

    async def running(self, kind: str = "burstable") -> VMPlan:
        plan = self.plan(kind)
        await self.hv.ensure_defined(plan.domain_xml)
        await self.hv.start(plan.uuid)
        return plan


@pytest.fixture
async def hv(uri: str) -> AsyncIterator[Hypervisor]:
    async with Hypervisor(uri) as h:
        yield h


@pytest.fixture
async def vms(hv: Hypervisor) -> AsyncIterator[VMs]:
    v = VMs(hv)
    yield v
    for uuid in v.uuids:
        await hv.undefine(uuid)


@pytest.fixture(scope="session")
def guest_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """Kernel + initramfs of the TCG test guest (scripts/guest.sh)."""
    if not list(Path("/boot").glob("vmlinuz-*")):
        pytest.skip("no /boot/vmlinuz-*: install linux-image-amd64 (scripts/install-deps.sh)")
    out = subprocess.run(
        [str(REPO / "scripts" / "guest.sh")], check=True, capture_output=True, text=True
    ).stdout
    values = dict(line.split("=", 1) for line in out.split())
    return values["GUEST_KERNEL"], values["GUEST_INITRD"]

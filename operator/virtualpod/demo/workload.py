"""The demo's workload: a VM that boots an image, runs its command, gets an address.

A second operator of the demo's own (another host name, so each serves only its own
VirtualPods) runs one VirtualPod whose first container's image is the test guest of
`scripts/workload-guest.sh`: a qcow2 root filesystem booted from its own overlay. Its
command writes a greeting taken from a Secret and serves it with busybox httpd; the
container's `hostPort` is forwarded from 127.0.0.1 (QEMU user-mode networking), so the
demo fetches the answer from loopback and prints the VM's console. On libvirt's test
driver nothing boots: the demo shows the volumes and the address, and says so.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import subprocess
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from virtualpod.core.domain import domain_name
from virtualpod.core.host_paths import HostPaths
from virtualpod.core.plan import console_log_path as plan_console_path
from virtualpod.core.settings import Settings
from virtualpod.demo.environment import NAMESPACE
from virtualpod.demo.output import Clock, say
from virtualpod.libvirt.console import console_log_path, read_from
from virtualpod.libvirt.hypervisor import Hypervisor, HypervisorError
from virtualpod.libvirt.storage import Storage
from virtualpod.testing import KubeClient, WaitTimeoutError, async_wait_for, running_operator
from virtualpod.testing.emulator import KubernetesApiEmulator

NAME = "hello"
SECRET = "hello-greeting"
GREETING = "hello from a Secret, served by busybox httpd inside a VM"
SERVE = (
    'echo "$GREETING" > /srv/index.html && echo "WORKLOAD-SERVING on $(hostname)"'
    " && exec httpd -f -p 80 -h /srv"
)
RUNNING_TIMEOUT_S = 60.0
ANSWER_TIMEOUT_S = 90.0
GONE_TIMEOUT_S = 30.0
#: Console lines worth showing: the guest's own markers and the workload's output.
CONSOLE_MARKERS = ("VPWORKLOAD", "WORKLOAD-SERVING")


@dataclass(frozen=True)
class Guest:
    kernel: str
    initrd: str
    image: str


def build_guest(manifest_dir: Path) -> Guest | None:
    """The workload test guest (built once, cached), or None where it cannot be built."""
    script = manifest_dir.parents[1] / "scripts" / "workload-guest.sh"
    if not script.is_file():
        return None
    result = subprocess.run([str(script)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return None
    values = dict(line.split("=", 1) for line in result.stdout.split() if "=" in line)
    return Guest(values["WORKLOAD_KERNEL"], values["WORKLOAD_INITRD"], values["WORKLOAD_IMAGE"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def workload_settings(settings: Settings, guest: Guest, real: bool) -> Settings:
    """Its own host name; TCG for a Linux guest; user-mode network; the guest's directory
    allowed (the demo is the admin here)."""
    return replace(
        settings,
        host_name=f"{settings.host_name}-workload",
        domain_type="qemu" if real else settings.domain_type,
        network="user",
        host_paths=HostPaths(allowed=(str(Path(guest.image).parent),)),
    )


def manifest(settings: Settings, guest: Guest, port: int) -> dict[str, Any]:
    greeting = {"secretKeyRef": {"name": SECRET, "key": "text"}}
    return {
        "apiVersion": "virtualpod.dev/v1alpha1",
        "kind": "VirtualPod",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "nodeName": settings.host_name,
            "containers": [
                {
                    "name": "web",
                    "image": guest.image,
                    "command": ["/bin/sh", "-c"],
                    "args": [SERVE],
                    "env": [{"name": "GREETING", "valueFrom": greeting}],
                    "ports": [{"containerPort": 80, "hostPort": port}],
                    "resources": {
                        "limits": {"cpu": "1", "memory": "256Mi", "ephemeral-storage": "64Mi"}
                    },
                }
            ],
            "boot": {
                "kernel": {"path": guest.kernel, "initrd": guest.initrd, "cmdline": "console=ttyS0"}
            },
        },
    }


def http_get(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return None


def console_size(settings: Settings) -> int:
    """How much the VM's console log (appended across runs) holds before it starts."""
    path = Path(plan_console_path(settings.console_log_dir, domain_name(NAMESPACE, NAME)))
    return path.stat().st_size if path.exists() else 0


async def console_lines(hv: Hypervisor, uuid: str, offset: int) -> list[str]:
    """This run's console lines worth showing (what was logged after `offset`)."""
    path = console_log_path(await hv.xml(uuid, inactive=True))
    if path is None or not Path(path).exists():
        return []
    data, _ = read_from(Path(path), offset)
    return [
        line.strip()
        for line in data.decode("utf-8", errors="replace").splitlines()
        if any(marker in line for marker in CONSOLE_MARKERS)
    ]


@dataclass
class WorkloadDemo:
    api: KubeClient
    api_url: str | None
    emulator: KubernetesApiEmulator | None
    hv: Hypervisor
    settings: Settings
    clock: Clock
    out: TextIO
    #: What the summary says (`workload: ...`).
    result: str = "not shown"

    async def play(self, manifest_dir: Path) -> None:
        out = self.out
        say(out)
        say(out, "== a VM that runs the workload: the container's image is its disk")
        guest = await asyncio.to_thread(build_guest, manifest_dir)
        if guest is None:
            self.result = "skipped (scripts/workload-guest.sh cannot build the test image)"
            say(out, f"workload: {self.result}")
            return
        real = not self.settings.libvirt_uri.startswith("test:")
        settings = workload_settings(self.settings, guest, real)
        port = free_port()
        async with running_operator(settings, api_url=self.api_url, emulator=self.emulator):
            try:
                await self._run(settings, guest, port, real)
            finally:
                await self._remove()

    async def _run(self, settings: Settings, guest: Guest, port: int, real: bool) -> None:
        out, clock = self.out, self.clock
        await self._secret()
        offset = console_size(settings)
        await self.api.create(manifest(settings, guest, port))
        say(out, f"{clock.stamp()} created virtualpod/{NAME}: image {guest.image}")
        say(out, f"           env GREETING from secret/{SECRET}, hostPort {port} -> 80")

        async def addressed() -> dict[str, Any] | None:
            obj = await self.api.get(NAMESPACE, NAME)
            status = (obj or {}).get("status") or {}
            ok = status.get("phase") == "Running" and status.get("podIP")
            return status if ok and (status.get("vm") or {}).get("disk") else None

        status = await async_wait_for(
            addressed, RUNNING_TIMEOUT_S, interval=0.2, what=f"{NAME} Running with an address"
        )
        vm = status["vm"]
        say(out, f"{clock.stamp()} Running, podIP {status['podIP']}")
        disk = vm["disk"]
        say(out, f"           disk: overlay {disk['volume']} ({disk['size']}) on {disk['image']}")
        if not real:
            self.result = f"Running on the test driver with podIP {status['podIP']} (nothing boots)"
            say(out, "           (libvirt's test driver boots nothing: no answer, no console)")
            return
        answer = await async_wait_for(
            lambda: asyncio.to_thread(http_get, port),
            ANSWER_TIMEOUT_S,
            interval=0.5,
            what="the workload's answer on 127.0.0.1",
        )
        say(out, f"{clock.stamp()} GET http://127.0.0.1:{port}/ -> {answer.strip()!r}")
        say(out, f"console (virtualpod logs {NAME} -n {NAMESPACE}):")
        for line in await console_lines(self.hv, vm["uuid"], offset):
            say(out, f"  | {line}")
        self.result = f"answered {answer.strip()!r} on 127.0.0.1:{port}"

    async def _secret(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": SECRET, "namespace": NAMESPACE},
            "data": {"text": base64.b64encode(GREETING.encode()).decode()},
        }
        path = f"/api/v1/namespaces/{NAMESPACE}/secrets"
        await self.api.request("DELETE", f"{path}/{SECRET}")
        status, data = await self.api.request("POST", path, body)
        if status != 201:
            raise WaitTimeoutError(f"cannot create secret/{SECRET}: {status} {data}")

    async def _remove(self) -> None:
        """Delete through the operator (its finalizer deletes the domain and volumes)."""
        with contextlib.suppress(Exception):
            await self.api.delete(NAMESPACE, NAME)

        async def gone() -> bool:
            return await self.api.get(NAMESPACE, NAME) is None

        try:
            await async_wait_for(gone, GONE_TIMEOUT_S, interval=0.2, what=f"{NAME} deleted")
            what = "the operator removed its domain, overlay and seed"
            say(self.out, f"{self.clock.stamp()} deleted virtualpod/{NAME}: {what}")
        except WaitTimeoutError as error:
            say(self.out, f"warning: {error}")
            with contextlib.suppress(Exception):
                await self.api.drop_finalizers(NAMESPACE, NAME)
        with contextlib.suppress(Exception):
            await self.api.request("DELETE", f"/api/v1/namespaces/{NAMESPACE}/secrets/{SECRET}")
        with contextlib.suppress(HypervisorError):  # what an operator that failed left
            for info in await self.hv.list_domains():
                if info.name == domain_name(NAMESPACE, NAME):
                    await self.hv.undefine(info.uuid)
                    await Storage(self.hv, self.settings.storage).delete_vm(info.uuid)

"""VMs that run the workload: image -> overlay + seed, errors as conditions, cleanup.

On the test driver: the error paths (each a `Ready=False` reason, a Warning Event and a
retry that succeeds once the cause is fixed), addresses from the network's leases, the
volumes' lifecycle. On real QEMU: two VirtualPods boot the same test image, run their
containers' command with an env value from a Secret, and answer over a loopback port
forward; deleting one leaves the other and the base.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading
import urllib.request
import uuid as uuidlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import QEMU_URI, Env, unique
from tests.waiting import async_wait_for
from virtualpod.core.domain import domain_name
from virtualpod.core.host_paths import HostPaths
from virtualpod.core.image import parse_image
from virtualpod.core.storage import root_volume, seed_volume
from virtualpod.libvirt.storage import Storage

REPO = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024


def workload(name: str, image: str, **container: Any) -> dict[str, Any]:
    spec = container.pop("spec", {})
    return {
        "apiVersion": "virtualpod.dev/v1alpha1",
        "kind": "VirtualPod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": image,
                    "resources": {"limits": {"cpu": "1", "memory": "256Mi"}},
                    **container,
                }
            ],
            **spec,
        },
    }


async def create_object(env: Env, plural: str, manifest: dict[str, Any]) -> None:
    """A core/v1 object (Secret, ConfigMap) as kubectl would POST it."""
    path = f"/api/v1/namespaces/{env.namespace}/{plural}"
    status, body = await env.kube.request("POST", path, manifest)
    assert status == 201, body


def ready(obj: dict[str, Any] | None) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == "Ready":
            return c
    return {}


async def wait_ready_reason(env: Env, name: str, reason: str, timeout: float = 20) -> dict:
    async def probe() -> dict[str, Any] | None:
        obj = await env.kube.get(env.namespace, name)
        return obj if ready(obj).get("reason") == reason else None

    return await async_wait_for(probe, timeout=timeout, interval=0.1, what=f"{name} {reason}")


async def warnings(env: Env, name: str) -> dict[str, str]:
    return {
        e["reason"]: e["message"]
        for e in await env.kube.events(env.namespace, name)
        if e.get("type") == "Warning"
    }


@pytest.fixture
def test_driver_only(env: Env) -> None:
    if env.name != "emulator-test":
        pytest.skip("error paths on the test driver; QEMU runs the real guest below")


@pytest.fixture
def disk_file(tmp_path: Path) -> Path:
    path = tmp_path / f"disk-{uuidlib.uuid4().hex[:6]}.raw"
    path.write_bytes(b"\0" * MIB)
    return path


class Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: Files(*a, directory=str(root))
    )
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


def allowing(env: Env, directory: Path | str) -> Any:
    """The env's settings with `directory` in hostPaths.allowed."""
    return replace(env.settings, host_paths=HostPaths(allowed=(str(directory),)))


async def volumes(env: Env, uuid: str) -> list[str]:
    storage = Storage(env.hv, env.settings.storage)
    return [
        name
        for name in (root_volume(uuid), seed_volume(uuid))
        if await storage.volume(name) is not None
    ]


@pytest.mark.usefixtures("test_driver_only")
async def test_missing_image_is_a_condition_then_runs_once_it_appears(
    env: Env, tmp_path: Path
) -> None:
    await env.start_operator(allowing(env, tmp_path))
    name = unique("noimg")
    path = tmp_path / "later.raw"
    created = await env.kube.create(workload(name, str(path)))
    obj = await wait_ready_reason(env, name, "ImageMissing")
    assert obj["status"]["phase"] == "Pending"
    assert "does not exist; retrying in" in obj["status"]["message"]
    assert "ImageMissing" in await warnings(env, name)
    uid = created["metadata"]["uid"]
    assert await volumes(env, uid) == []
    assert domain_name("default", name) not in {d.name for d in await env.hv.list_domains()}
    path.write_bytes(b"\0" * MIB)
    await wait_ready_reason(env, name, "Running", timeout=30)
    assert await volumes(env, uid) == [root_volume(uid), seed_volume(uid)]


@pytest.mark.usefixtures("test_driver_only")
async def test_missing_network_and_secret_key_are_conditions(env: Env, disk_file: Path) -> None:
    await env.start_operator(allowing(env, disk_file.parent))
    no_net = unique("nonet")
    await env.kube.create(workload(no_net, str(disk_file), spec={"network": "absent"}))
    no_key = unique("nokey")
    secret = unique("creds")
    ref = {"secretKeyRef": {"name": secret, "key": "token"}}
    await env.kube.create(
        workload(no_key, str(disk_file), command=["true"], env=[{"name": "T", "valueFrom": ref}])
    )
    obj = await wait_ready_reason(env, no_net, "NetworkMissing")
    assert "libvirt network 'absent' does not exist" in obj["status"]["message"]
    obj = await wait_ready_reason(env, no_key, "SecretKeyMissing")
    assert f"Secret {secret!r} has no key 'token'" in obj["status"]["message"]
    assert "SecretKeyMissing" in await warnings(env, no_key)
    await create_object(
        env,
        "secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": secret},
            "data": {"token": "czNjcjN0"},
        },
    )
    obj = await wait_ready_reason(env, no_key, "Running", timeout=30)
    assert "s3cr3t" not in str(obj)
    assert all("s3cr3t" not in e["message"] for e in await env.kube.events(env.namespace, no_key))
    xml = await env.hv.xml(obj["status"]["vm"]["uuid"], inactive=True)
    assert "s3cr3t" not in xml


@pytest.mark.usefixtures("test_driver_only")
async def test_download_checksum_mismatch_then_a_good_image(
    env: Env, http_dir: tuple[str, Path]
) -> None:
    url, root = http_dir
    content = os.urandom(256 * 1024)
    (root / "disk.raw").write_bytes(content)
    good = hashlib.sha256(content).hexdigest()
    await env.start_operator()
    bad_name, good_name, missing = unique("badsum"), unique("goodsum"), unique("nofile")
    await env.kube.create(workload(bad_name, f"{url}/disk.raw#sha256={'0' * 64}"))
    await env.kube.create(workload(missing, f"{url}/absent.raw"))
    created = await env.kube.create(workload(good_name, f"{url}/disk.raw#sha256={good}"))
    obj = await wait_ready_reason(env, bad_name, "ChecksumMismatch")
    assert f"sha256 is {good}" in obj["status"]["message"]
    obj = await wait_ready_reason(env, missing, "DownloadFailed")
    assert "HTTP 404" in obj["status"]["message"]
    obj = await wait_ready_reason(env, good_name, "Running", timeout=30)
    storage = Storage(env.hv, env.settings.storage)
    assert await storage.base(parse_image(f"{url}/disk.raw#sha256={good}")) is not None
    uid = created["metadata"]["uid"]
    await env.kube.delete(env.namespace, good_name)
    await async_wait_for(lambda: _gone(env, good_name), timeout=15, what=f"{good_name} deleted")
    assert await volumes(env, uid) == []
    assert await storage.base(parse_image(f"{url}/disk.raw#sha256={good}")) is None


async def _gone(env: Env, name: str) -> bool:
    return await env.kube.get(env.namespace, name) is None


@pytest.mark.usefixtures("test_driver_only")
async def test_address_disk_and_columns_of_a_running_workload(env: Env, disk_file: Path) -> None:
    await env.start_operator(allowing(env, disk_file.parent))
    name = unique("addr")
    manifest = workload(name, f"file://{disk_file}")
    manifest["spec"]["containers"][0]["resources"]["limits"]["ephemeral-storage"] = "3Gi"
    await env.kube.create(manifest)

    async def addressed() -> dict[str, Any] | None:
        obj = await env.kube.get(env.namespace, name)
        status = (obj or {}).get("status") or {}
        return obj if status.get("podIP") and (status.get("vm") or {}).get("disk") else None

    obj = await async_wait_for(addressed, timeout=20, interval=0.1, what=f"{name} address")
    status = obj["status"]
    (address,) = status["vm"]["addresses"]
    assert status["podIP"] == address["ip"]
    assert address["source"] == "lease"
    assert status["vm"]["disk"] == {
        "image": str(disk_file),
        "volume": root_volume(obj["metadata"]["uid"]),
        "size": "3Gi",
    }
    reasons = {e["reason"] for e in await env.kube.events(env.namespace, name)}
    assert "AddressAssigned" in reasons


# ---------------------------------------------------------------------- real QEMU


@pytest.fixture(scope="session")
def workload_guest() -> dict[str, str]:
    if not list(Path("/boot").glob("vmlinuz-*")):
        pytest.skip("no /boot/vmlinuz-*: install linux-image-amd64 (scripts/install-deps.sh)")
    out = subprocess.run(
        [str(REPO / "scripts" / "workload-guest.sh")], check=True, capture_output=True, text=True
    ).stdout
    return dict(line.split("=", 1) for line in out.split() if "=" in line)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
            return response.read().decode()
    except OSError:
        return None


SERVE = (
    'echo "$GREETING" > /srv/index.html && echo "WORKLOAD-SERVING $(hostname)"'
    " && exec httpd -f -p 80 -h /srv"
)


@pytest.fixture
async def qemu_only(env: Env) -> AsyncIterator[None]:
    """Real QEMU only; afterwards this test's volumes are gone even if it failed midway."""
    if env.name != "emulator-qemu":
        pytest.skip("needs real QEMU")
    yield
    for operator in env.operators:
        await operator.stop()
    storage = Storage(env.hv, env.settings.storage)
    for namespace, name in env.kube.created:
        for info in await env.hv.list_domains():
            if info.name == domain_name(namespace, name):
                await env.hv.undefine(info.uuid)
                await storage.delete_vm(info.uuid)


@pytest.mark.qemu
@pytest.mark.slow
@pytest.mark.usefixtures("qemu_only")
async def test_two_vms_boot_one_image_run_their_command_and_answer_on_loopback(
    env: Env, workload_guest: dict[str, str]
) -> None:
    guest_dir = Path(workload_guest["WORKLOAD_IMAGE"]).parent
    settings = replace(allowing(env, guest_dir), domain_type="qemu", network="user")
    await env.start_operator(settings)
    secret = unique("greeting")
    await create_object(
        env,
        "secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": secret},
            "data": {"text": "aGVsbG8gZnJvbSB0aGUgc2VjcmV0"},  # hello from the secret
        },
    )
    kernel = {
        "path": workload_guest["WORKLOAD_KERNEL"],
        "initrd": workload_guest["WORKLOAD_INITRD"],
        "cmdline": "console=ttyS0",
    }
    names, ports = [unique("vm-a"), unique("vm-b")], [free_port(), free_port()]
    env_from = [
        {"name": "GREETING", "valueFrom": {"secretKeyRef": {"name": secret, "key": "text"}}}
    ]
    storage_limits = ["48Mi", None]
    for name, port, limit in zip(names, ports, storage_limits, strict=True):
        manifest = workload(
            name,
            workload_guest["WORKLOAD_IMAGE"],
            command=["/bin/sh", "-c"],
            args=[SERVE],
            env=env_from,
            ports=[{"containerPort": 80, "hostPort": port}],
            spec={"boot": {"kernel": kernel}},
        )
        if limit:
            manifest["spec"]["containers"][0]["resources"]["limits"]["ephemeral-storage"] = limit
        await env.kube.create(manifest)

    answers = [
        await async_wait_for(
            lambda p=port: _answer(p), timeout=120, interval=0.5, what=f"port {port}"
        )
        for port in ports
    ]
    assert answers == ["hello from the secret\n"] * 2
    objs = [await env.kube.get(env.namespace, name) for name in names]
    uids = [obj["metadata"]["uid"] for obj in objs]
    for obj, port in zip(objs, ports, strict=True):
        assert obj["status"]["podIP"] == "10.0.2.15"
        assert obj["status"]["vm"]["ports"] == [f"127.0.0.1:{port}->80/TCP"]
        assert "hello from the secret" not in str(obj)
    storage = Storage(env.hv, settings.storage)
    volume_a, volume_b = [await storage.volume(root_volume(uid)) for uid in uids]
    assert (volume_a.capacity_bytes, volume_b.capacity_bytes) == (48 * MIB, 32 * MIB)
    assert volume_a.backing_path == volume_b.backing_path

    logs = subprocess.run(
        [sys.executable, "-m", "virtualpod.cli", "logs", names[0], "--libvirt-uri", QEMU_URI],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "operator")},
    ).stdout
    assert f"VPWORKLOAD SEED instance={uids[0]} hostname={names[0]}" in logs
    assert f"VPWORKLOAD BOOTED root=/dev/vda disk={48 * MIB}" in logs
    assert f"WORKLOAD-SERVING {names[0]}" in logs

    await env.kube.delete(env.namespace, names[0])
    await async_wait_for(lambda: _gone(env, names[0]), timeout=30, what=f"{names[0]} deleted")
    assert await volumes(env, uids[0]) == []
    assert await storage.volume(root_volume(uids[1])) is not None
    assert http_get(ports[1]) == "hello from the secret\n"
    assert await storage.base(parse_image(workload_guest["WORKLOAD_IMAGE"])) is not None
    await env.kube.delete(env.namespace, names[1])
    await async_wait_for(lambda: _gone(env, names[1]), timeout=30, what=f"{names[1]} deleted")
    assert await storage.base(parse_image(workload_guest["WORKLOAD_IMAGE"])) is None


async def _answer(port: int) -> str | None:
    return await asyncio.to_thread(http_get, port)

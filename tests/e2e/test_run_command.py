"""`virtualpod run` as a real process, configured by a kubeconfig, like in a cluster."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.e2e.kube import Kube
from tests.e2e.test_lifecycle import condition
from tests.waiting import async_wait_for
from virtualpod.testing.emulator import serve_emulator, write_kubeconfig

pytestmark = pytest.mark.e2e


async def test_virtualpod_run_serves_virtualpods(tmp_path: Path) -> None:
    settings = tmp_path / "settings.yaml"
    settings.write_text("hostName: proc-host\nreserved: {memory: 0}\n")
    async with serve_emulator() as (url, emu):
        env = {**os.environ, "KUBECONFIG": str(write_kubeconfig(url, tmp_path / "kubeconfig"))}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "virtualpod.cli",
            "run",
            "--standalone",
            "--config",
            str(settings),
            "--libvirt-uri",
            "test:///default",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        kube = Kube(url)
        try:

            async def watching() -> bool:
                assert process.returncode is None, await process.stdout.read()
                return emu.watchers.get("virtualpod.dev/v1alpha1/virtualpods", 0) > 0

            await async_wait_for(watching, timeout=30, what="operator process watching")
            await kube.create(
                {
                    "apiVersion": "virtualpod.dev/v1alpha1",
                    "kind": "VirtualPod",
                    "metadata": {"name": "proc", "namespace": "default"},
                    "spec": {
                        "containers": [
                            {
                                "name": "app",
                                "resources": {"limits": {"cpu": "1", "memory": "256Mi"}},
                            }
                        ]
                    },
                }
            )

            async def running() -> dict | None:
                obj = await kube.get("default", "proc")
                return obj if (obj.get("status") or {}).get("phase") == "Running" else None

            obj = await async_wait_for(running, timeout=30, what="Running via virtualpod run")
            assert obj["status"]["qosClass"] == "Guaranteed"
            assert obj["status"]["vm"]["host"] == "proc-host"
            assert condition(obj, "Ready")["status"] == "True"
        finally:
            await kube.close()
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            output = (await asyncio.wait_for(process.communicate(), 30))[0].decode()
        assert process.returncode == 0, output
        assert "virtualpod operator: libvirt test:///default, host proc-host" in output

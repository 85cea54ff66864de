"""`virtualpod run` as a real process, configured by a kubeconfig, like in a cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_lifecycle import condition
from tests.waiting import async_wait_for
from virtualpod.testing import KubeClient, OperatorProcess, serve_emulator, write_kubeconfig

pytestmark = pytest.mark.e2e


async def test_virtualpod_run_serves_virtualpods(tmp_path: Path) -> None:
    settings = tmp_path / "settings.yaml"
    settings.write_text("hostName: proc-host\nreserved: {memory: 0}\n")
    async with serve_emulator() as (url, emu), KubeClient(url) as kube:
        operator = OperatorProcess(
            write_kubeconfig(url, tmp_path / "kubeconfig"), settings, emulator=emu
        )
        try:
            await operator.start()
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

            async def running() -> dict[str, Any] | None:
                obj = await kube.get("default", "proc")
                return obj if obj and (obj.get("status") or {}).get("phase") == "Running" else None

            obj = await async_wait_for(running, timeout=30, what="Running via virtualpod run")
            assert obj["status"]["qosClass"] == "Guaranteed"
            assert obj["status"]["vm"]["host"] == "proc-host"
            assert condition(obj, "Ready")["status"] == "True"
        finally:
            output = await operator.stop()
        assert operator.returncode == 0, output
        assert "virtualpod operator: libvirt test:///default, host proc-host" in output

"""Operator benchmark: create->Running latency and throughput, operator peak RSS.

Runs the real `virtualpod run` process (libvirt test driver inside it) against the
in-process Kubernetes emulator over HTTP, creates N VirtualPods at once and follows
them with a watch, as a client would. Prints one JSON document.

    python bench/operator_bench.py                 # 100 and 1000
    python bench/operator_bench.py --count 100     # one size
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from virtualpod.testing.emulator import serve_emulator, write_kubeconfig

VPODS = "/apis/virtualpod.dev/v1alpha1/namespaces/default/virtualpods"


def manifest(index: int) -> dict[str, Any]:
    return {
        "apiVersion": "virtualpod.dev/v1alpha1",
        "kind": "VirtualPod",
        "metadata": {"name": f"bench-{index:05d}", "namespace": "default"},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "resources": {
                        "requests": {"cpu": "10m", "memory": "1Mi"},
                        "limits": {"cpu": "100m", "memory": "64Mi"},
                    },
                }
            ]
        },
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def peak_rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


async def run_once(count: int, timeout: float) -> dict[str, Any]:
    async with serve_emulator() as (url, emu):
        workdir = Path(tempfile.mkdtemp(prefix="vpod-bench-"))
        kubeconfig = write_kubeconfig(url, workdir / "kubeconfig")
        settings = workdir / "settings.yaml"
        settings.write_text("hostName: bench\nreserved: {cpu: '0', memory: 0}\n")
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
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        started = time.monotonic()
        while emu.watchers.get("virtualpod.dev/v1alpha1/virtualpods", 0) == 0:
            if process.returncode is not None or time.monotonic() - started > 60:
                raise RuntimeError("the operator did not start")
            await asyncio.sleep(0.05)

        created: dict[str, float] = {}
        running: dict[str, float] = {}
        async with aiohttp.ClientSession() as session:

            async def follow() -> None:
                params = {"watch": "true", "resourceVersion": str(emu.resource_version)}
                async with session.get(
                    url + VPODS, params=params, timeout=aiohttp.ClientTimeout(total=None)
                ) as stream:
                    async for line in stream.content:
                        obj = json.loads(line)["object"]
                        name = obj["metadata"]["name"]
                        if (obj.get("status") or {}).get(
                            "phase"
                        ) == "Running" and name not in running:
                            running[name] = time.monotonic()
                            if len(running) == count:
                                return

            watcher = asyncio.create_task(follow())
            await asyncio.sleep(0)
            semaphore = asyncio.Semaphore(32)

            async def create(index: int) -> None:
                body = manifest(index)
                async with semaphore:
                    created[body["metadata"]["name"]] = time.monotonic()
                    async with session.post(url + VPODS, json=body) as response:
                        assert response.status == 201, await response.text()

            t0 = time.monotonic()
            await asyncio.gather(*(create(i) for i in range(count)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watcher, timeout)
            elapsed = time.monotonic() - t0
        rss = peak_rss_bytes(process.pid)
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 60)
        except TimeoutError:
            process.kill()
    latencies = [running[n] - created[n] for n in running]
    return {
        "count": count,
        "running": len(running),
        "seconds": round(elapsed, 2),
        "throughputPerSecond": round(len(running) / elapsed, 1) if elapsed else None,
        "latencySeconds": {
            "p50": round(percentile(latencies, 0.50), 3),
            "p99": round(percentile(latencies, 0.99), 3),
            "mean": round(statistics.fmean(latencies), 3),
        }
        if latencies
        else None,
        "operatorPeakRSSBytes": rss,
        "operatorPeakRSSMiB": round(rss / 2**20, 1) if rss else None,
        "timedOut": len(running) < count,
    }


async def main(counts: list[int], timeout: float) -> dict[str, Any]:
    results = [await run_once(count, timeout) for count in counts]
    return {
        "benchmark": "create->Running, virtualpod run + libvirt test driver + KMock emulator",
        "python": sys.version.split()[0],
        "results": results,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--count",
        type=int,
        action="append",
        help="VirtualPods per run (repeatable; default 100 and 1000)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="give up waiting for Running after this many seconds per run",
    )
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.count or [100, 1000], args.timeout)), indent=2))

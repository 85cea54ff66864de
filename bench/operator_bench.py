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
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from virtualpod.testing import KubeClient, OperatorProcess, serve_emulator, write_kubeconfig
from virtualpod.testing.measure import bench_virtualpod, latency_summary, peak_rss_bytes


async def run_once(count: int, timeout: float) -> dict[str, Any]:
    async with serve_emulator() as (url, emu), KubeClient(url) as kube:
        workdir = Path(tempfile.mkdtemp(prefix="vpod-bench-"))
        settings = workdir / "settings.yaml"
        settings.write_text("hostName: bench\nreserved: {cpu: '0', memory: 0}\n")
        operator = OperatorProcess(
            write_kubeconfig(url, workdir / "kubeconfig"), settings, emulator=emu, capture=False
        )
        await operator.start(timeout=60)

        created: dict[str, float] = {}
        running: dict[str, float] = {}

        async def follow() -> None:
            async for event in kube.watch("default", emu.resource_version):
                obj = event["object"]
                name = obj["metadata"]["name"]
                phase = (obj.get("status") or {}).get("phase")
                if phase == "Running" and name not in running:
                    running[name] = time.monotonic()
                    if len(running) == count:
                        return

        watcher = asyncio.create_task(follow())
        await asyncio.sleep(0)
        semaphore = asyncio.Semaphore(32)

        async def create(index: int) -> None:
            body = bench_virtualpod(index)
            async with semaphore:
                created[body["metadata"]["name"]] = time.monotonic()
                await kube.create(body)

        t0 = time.monotonic()
        await asyncio.gather(*(create(i) for i in range(count)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watcher, timeout)
        elapsed = time.monotonic() - t0
        rss = peak_rss_bytes(operator.pid)
        await operator.stop(timeout=60)
    latencies = [running[n] - created[n] for n in running]
    return {
        "count": count,
        "running": len(running),
        "seconds": round(elapsed, 2),
        "throughputPerSecond": round(len(running) / elapsed, 1) if elapsed else None,
        "latencySeconds": latency_summary(latencies),
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

"""Cluster benchmark: create->Running for N VirtualPods, virtualpod vs a bare Kopf operator.

One run, two measurements on the same machine, each on a fresh KMock emulator over HTTP:

* `bareKopf`: `kopf run bench/bare_kopf.py`, which only patches `status.phase: Running`
  on create (the framework's limit);
* `virtualpod`: the cluster as deployed: one `virtualpod run --role=controller` and two
  `virtualpod run --role=agent` processes (hosts `bench-node-a`, `bench-node-b`, each its
  own libvirt test driver), with the emulator's stand-in control plane (Pod admission
  with the RuntimeClass overhead, the stand-in binder as kube-scheduler, the garbage
  collector) running in this process.

The client creates N VirtualPods (32 requests in flight) and follows them with a watch.
Prints one JSON document: both results, their ratio, p50/p99 latency, the peak RSS and
CPU time of every process (whole run, and `...Measured`: from the first create to the
last Running, without the process's start), and what each could sustain on a core of
its own.

All processes share this machine's cores (`cores` in the report): the virtualpod run
has four busy processes where bare Kopf has two. `oneCorePerProcess` is derived from
the measured CPU seconds: N / the busiest operator process's CPU seconds while
measured (an agent's are for its share), the rate at which that process would saturate
a core of its own, as the controller and each agent have in a cluster. The API server
(here the emulator, in this benchmark's process) is not counted, for either.

    python bench/cluster_bench.py                  # 1000 VirtualPods
    python bench/cluster_bench.py --count 100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from virtualpod.core.binding import NODE_LABEL
from virtualpod.core.companion import LIBVIRT_HOST_LABEL
from virtualpod.kube.interpreter import tune_gc
from virtualpod.testing import OperatorProcess
from virtualpod.testing.control_plane import running_control_plane
from virtualpod.testing.emulator import KubernetesApiEmulator, serve_emulator, write_kubeconfig
from virtualpod.testing.measure import bench_virtualpod, latency_summary, peak_rss_bytes

REPO = Path(__file__).resolve().parents[1]
VPODS = "/apis/virtualpod.dev/v1alpha1/namespaces/default/virtualpods"
VPODS_KEY = "virtualpod.dev/v1alpha1/virtualpods"
HOSTS = ("bench-node-a", "bench-node-b")
IN_FLIGHT = 32
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0
#: Nodes large enough for every companion Pod (requests + the RuntimeClass overhead).
NODE_ALLOCATABLE = {"cpu": "1000", "memory": "4Ti", "pods": "10000"}


def cpu_seconds(pid: int) -> float | None:
    """user + system CPU time of a process so far (/proc/PID/stat, clock ticks)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mib(count: int | None) -> float | None:
    return round(count / 2**20, 1) if count is not None else None


@dataclass
class CpuWindow:
    """A process's CPU seconds while the VirtualPods are created and followed to Running:
    the per-object cost, without its start (imports, first listing)."""

    start: float | None = None
    seconds: float | None = None

    def open(self, pid: int) -> None:
        self.start = cpu_seconds(pid)

    def close(self, pid: int) -> None:
        now = cpu_seconds(pid)
        if now is not None and self.start is not None:
            self.seconds = round(now - self.start, 2)


@dataclass
class Process:
    """One operator process of the run, with the peak RSS read just before it stops."""

    name: str
    process: asyncio.subprocess.Process
    peak_rss: int | None = None
    cpu_seconds: float | None = None
    window: CpuWindow = field(default_factory=lambda: CpuWindow())

    async def stop(self) -> None:
        self.peak_rss = peak_rss_bytes(self.process.pid)
        self.cpu_seconds = cpu_seconds(self.process.pid)
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def spawn(name: str, args: Sequence[str], kubeconfig: Path) -> Process:
    """Start one operator process; its output goes to `<name>.log` next to the kubeconfig."""
    with (kubeconfig.parent / f"{name.replace(' ', '-')}.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *args,
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    return Process(name, process)


async def wait_until(
    ready: Callable[[], bool], processes: Sequence[Process], what: str, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        for one in processes:
            if one.process.returncode is not None:
                raise RuntimeError(f"{one.name} exited ({one.process.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what} (see the processes' logs)")
        await asyncio.sleep(0.05)


async def measure(
    url: str, emu: KubernetesApiEmulator, count: int, timeout: float
) -> dict[str, Any]:
    """Create `count` VirtualPods; follow them to Running; latency and throughput."""
    created: dict[str, float] = {}
    running: dict[str, float] = {}
    hosts: dict[str, str | None] = {}
    async with aiohttp.ClientSession() as session:

        async def follow() -> None:
            params = {"watch": "true", "resourceVersion": str(emu.resource_version)}
            async with session.get(
                url + VPODS, params=params, timeout=aiohttp.ClientTimeout(total=None)
            ) as stream:
                async for line in stream.content:
                    if b"Running" not in line:
                        continue  # parse only what can be the awaited change
                    obj = json.loads(line)["object"]
                    name = obj["metadata"]["name"]
                    status = obj.get("status") or {}
                    if status.get("phase") == "Running" and name not in running:
                        running[name] = time.monotonic()
                        labels = obj["metadata"].get("labels") or {}
                        vm_host = (status.get("vm") or {}).get("host")
                        hosts[name] = vm_host if vm_host == labels.get(NODE_LABEL) else None
                        if len(running) == count:
                            return

        watcher = asyncio.create_task(follow())
        await asyncio.sleep(0)
        semaphore = asyncio.Semaphore(IN_FLIGHT)

        async def create(index: int) -> None:
            body = bench_virtualpod(index)
            async with semaphore:
                created[body["metadata"]["name"]] = time.monotonic()
                async with session.post(url + VPODS, json=body) as response:
                    assert response.status == 201, await response.text()

        t0 = time.monotonic()
        await asyncio.gather(*(create(i) for i in range(count)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watcher, timeout)
        elapsed = time.monotonic() - t0
    latencies = [running[n] - created[n] for n in running]
    per_host: dict[str, int] = {}
    for host in hosts.values():
        per_host[str(host)] = per_host.get(str(host), 0) + 1
    return {
        "count": count,
        "running": len(running),
        "timedOut": len(running) < count,
        "seconds": round(elapsed, 2),
        "throughputPerSecond": round(len(running) / elapsed, 1) if elapsed else None,
        "latencySeconds": latency_summary(latencies),
        "runningByHost": per_host,
    }


@contextlib.asynccontextmanager
async def emulator_and_kubeconfig(workdir: Path) -> AsyncIterator[tuple[str, Any, Path]]:
    async with serve_emulator() as (url, emu):
        yield url, emu, write_kubeconfig(url, workdir / f"kubeconfig-{id(emu)}")


async def run_bare_kopf(workdir: Path, count: int, timeout: float) -> dict[str, Any]:
    async with emulator_and_kubeconfig(workdir) as (url, emu, kubeconfig):
        script = str(REPO / "bench" / "bare_kopf.py")
        operator = await spawn(
            "bare kopf",
            [sys.executable, "-m", "kopf", "run", "--standalone", "-A", "--quiet", script],
            kubeconfig,
        )
        try:
            await wait_until(
                lambda: emu.watchers.get(VPODS_KEY, 0) > 0,
                [operator],
                "bare Kopf to watch",
                START_TIMEOUT_S,
            )
            before = time.process_time()
            operator.window.open(operator.process.pid)
            result = await measure(url, emu, count, timeout)
            operator.window.close(operator.process.pid)
            result["benchProcessCPUSeconds"] = round(time.process_time() - before, 1)
        finally:
            await operator.stop()
    result.pop("runningByHost")
    result["peakRSSMiB"] = mib(operator.peak_rss)
    result["operatorCPUSeconds"] = operator.cpu_seconds
    result["operatorCPUSecondsMeasured"] = operator.window.seconds
    return result


async def register_nodes(url: str) -> None:
    """The RuntimeClass and one Node per host (no kubelet), as a cluster admin would
    (the controller creates its Kopf peering object itself)."""
    (runtime_class,) = yaml.safe_load_all((REPO / "manifests" / "runtimeclass.yaml").read_text())
    status = {"status": {"capacity": NODE_ALLOCATABLE, "allocatable": NODE_ALLOCATABLE}}
    merge = {"Content-Type": "application/merge-patch+json"}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{url}/apis/node.k8s.io/v1/runtimeclasses", json=runtime_class
        ) as response:
            assert response.status == 201, await response.text()
        for host in HOSTS:
            node = {"metadata": {"name": host, "labels": {LIBVIRT_HOST_LABEL: "true"}}}
            async with session.post(f"{url}/api/v1/nodes", json=node) as response:
                assert response.status == 201, await response.text()
            async with session.patch(
                f"{url}/api/v1/nodes/{host}/status", data=json.dumps(status), headers=merge
            ) as response:
                assert response.status == 200, await response.text()


@dataclass
class Measured:
    """One `virtualpod run` process of the run: peak RSS and CPU read just before it stops."""

    name: str
    operator: OperatorProcess
    peak_rss: int | None = None
    cpu_seconds: float | None = None
    window: CpuWindow = field(default_factory=lambda: CpuWindow())

    async def stop(self) -> None:
        if self.operator.process is not None:
            self.peak_rss = peak_rss_bytes(self.operator.pid)
            self.cpu_seconds = cpu_seconds(self.operator.pid)
        await self.operator.stop(STOP_TIMEOUT_S)


async def run_virtualpod(workdir: Path, count: int, timeout: float) -> dict[str, Any]:
    """Two agents (each its own test driver: a process's `test:///default`) and one
    controller, started one after the other, each once it watches."""
    settings = workdir / "settings.yaml"
    settings.write_text("reserved: {cpu: '0', memory: 0}\n")
    async with emulator_and_kubeconfig(workdir) as (url, emu, kubeconfig):
        await register_nodes(url)
        roles = [(host, ["--role=agent", f"--host-name={host}"]) for host in HOSTS]
        roles.append(("controller", ["--role=controller"]))
        processes = [
            Measured(
                name,
                OperatorProcess(
                    kubeconfig,
                    settings,
                    emulator=emu,
                    args=args,
                    standalone=name != "controller",
                    log=workdir / f"{name}.log",
                ),
            )
            for name, args in roles
        ]
        async with running_control_plane(emu):
            try:
                for one in processes:
                    await one.operator.start(START_TIMEOUT_S)
                before = time.process_time()
                for one in processes:
                    one.window.open(one.operator.pid)
                result = await measure(url, emu, count, timeout)
                for one in processes:
                    one.window.close(one.operator.pid)
                # the emulator, the stand-in control plane and the client
                result["benchProcessCPUSeconds"] = round(time.process_time() - before, 1)
            finally:
                for one in processes:
                    await one.stop()
    agents = [one for one in processes if one.name in HOSTS]
    result["agentsPeakRSSMiB"] = {one.name: mib(one.peak_rss) for one in agents}
    result["controllerPeakRSSMiB"] = mib(processes[-1].peak_rss)
    result["cpuSeconds"] = {one.name: one.cpu_seconds for one in processes}
    result["cpuSecondsMeasured"] = {one.name: one.window.seconds for one in processes}
    return result


def ratio(ours: float | None, theirs: float | None) -> float | None:
    return round(ours / theirs, 3) if ours and theirs else None


def per_count_ms(seconds: float | None, count: int) -> float | None:
    return round(seconds * 1000 / count, 2) if seconds is not None else None


def saturating_rate(cpu_seconds: Sequence[float | None], count: int) -> float | None:
    """Objects per second at which the busiest process would use a whole core."""
    known = [seconds for seconds in cpu_seconds if seconds]
    return round(count / max(known), 1) if known and len(known) == len(cpu_seconds) else None


async def main(count: int, timeout: float) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="vpod-cluster-bench-"))
    bare = await run_bare_kopf(workdir, count, timeout)
    ours = await run_virtualpod(workdir, count, timeout)
    bare_latency, our_latency = bare["latencySeconds"] or {}, ours["latencySeconds"] or {}
    bare["cpuMillisecondsPerObject"] = per_count_ms(bare["operatorCPUSecondsMeasured"], count)
    ours["cpuMillisecondsPerVirtualPod"] = {
        name: per_count_ms(seconds, count) for name, seconds in ours["cpuSecondsMeasured"].items()
    }
    bare_rate = saturating_rate([bare["operatorCPUSecondsMeasured"]], count)
    our_rate = saturating_rate(list(ours["cpuSecondsMeasured"].values()), count)
    return {
        "benchmark": "create->Running: 2 agents + controller vs bare Kopf, KMock emulator",
        "python": sys.version.split()[0],
        "cores": os.cpu_count(),
        "count": count,
        "bareKopf": bare,
        "virtualpod": ours,
        "throughputRatio": ratio(ours["throughputPerSecond"], bare["throughputPerSecond"]),
        "p99Ratio": ratio(our_latency.get("p99"), bare_latency.get("p99")),
        "oneCorePerProcess": {
            "bareKopfPerSecond": bare_rate,
            "virtualpodPerSecond": our_rate,
            "ratio": ratio(our_rate, bare_rate),
        },
        "agentsPeakRSSMiBMax": max(
            (v for v in ours["agentsPeakRSSMiB"].values() if v is not None), default=None
        ),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="VirtualPods (default 1000)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="give up waiting for Running after this many seconds per run",
    )
    args = parser.parse_args()
    tune_gc()  # this process is the API server of both runs: tuned as the operators are
    print(json.dumps(asyncio.run(main(args.count, args.timeout)), indent=2))

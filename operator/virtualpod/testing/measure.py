"""What the benchmarks share: the VirtualPod they create, percentiles, a process's peak RSS."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from virtualpod.core.quantity import KIB


def bench_virtualpod(index: int, namespace: str = "default") -> dict[str, Any]:
    """A small Burstable VirtualPod named by its index (`bench-00042`)."""
    return {
        "apiVersion": "virtualpod.dev/v1alpha1",
        "kind": "VirtualPod",
        "metadata": {"name": f"bench-{index:05d}", "namespace": namespace},
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


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank value at fraction `q` (0.5: median, 0.99: p99) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def peak_rss_bytes(pid: int) -> int | None:
    """A live process's peak resident memory (VmHWM), or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * KIB
    except OSError:
        return None
    return None


def latency_summary(latencies: Sequence[float]) -> dict[str, float] | None:
    """p50, p99 and mean in seconds (rounded to ms), or None when nothing finished."""
    if not latencies:
        return None
    return {
        "p50": round(percentile(latencies, 0.50), 3),
        "p99": round(percentile(latencies, 0.99), 3),
        "mean": round(statistics.fmean(latencies), 3),
    }

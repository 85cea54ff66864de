"""The cluster benchmark runs: a small count, as a user runs it (its 1000 is not CI's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

COUNT = 20


def test_the_cluster_bench_reports_both_operators_side_by_side(repo_root: Path) -> None:
    done = subprocess.run(
        [sys.executable, "bench/cluster_bench.py", "--count", str(COUNT), "--timeout", "120"],
        cwd=repo_root,
        env={**os.environ, "PYTHONPATH": str(repo_root / "operator")},
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)
    bare, ours = report["bareKopf"], report["virtualpod"]
    assert (bare["running"], ours["running"]) == (COUNT, COUNT)
    # Every VM runs on the node its VirtualPod is bound to, and both hosts got some.
    assert set(ours["runningByHost"]) == {"bench-node-a", "bench-node-b"}
    assert sum(ours["runningByHost"].values()) == COUNT
    assert report["throughputRatio"] == round(
        ours["throughputPerSecond"] / bare["throughputPerSecond"], 3
    )
    for value in (*ours["agentsPeakRSSMiB"].values(), ours["controllerPeakRSSMiB"]):
        assert value is not None
        assert value > 0
    assert ours["latencySeconds"]["p99"] >= ours["latencySeconds"]["p50"] > 0
    # CPU while measured is part of each process's whole run (its start is not).
    for name, measured in ours["cpuSecondsMeasured"].items():
        assert 0 < measured <= ours["cpuSeconds"][name]
    assert 0 < bare["operatorCPUSecondsMeasured"] <= bare["operatorCPUSeconds"]
    # The derived capacity: COUNT over the busiest process's CPU seconds while measured.
    busiest = max(ours["cpuSecondsMeasured"].values())
    assert report["oneCorePerProcess"]["virtualpodPerSecond"] == round(COUNT / busiest, 1)
    assert report["oneCorePerProcess"]["bareKopfPerSecond"] == round(
        COUNT / bare["operatorCPUSecondsMeasured"], 1
    )

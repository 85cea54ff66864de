"""`virtualpod demo`, run as a user runs it: a subprocess, its output asserted on.

On the test driver always (libvirt state lives in the demo's process, so only its own
output can tell what happened); on real libvirtd + QEMU when VIRTUALPOD_QEMU_URI is set,
where libvirt is also checked afterwards, and the demo runs twice in a row.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
QEMU_URI = os.environ.get("VIRTUALPOD_QEMU_URI")
DEMO_TIMEOUT = 180
DOMAIN_PREFIX = "vpod_vpod-demo_"

pytestmark = pytest.mark.slow


def _environment(tmp_path: Path) -> dict[str, str]:
    """No usable kubeconfig: one that points at a closed port, and no ~/.kube/config."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: nowhere\n"
        "clusters: [{name: nowhere, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "contexts: [{name: nowhere, context: {cluster: nowhere, user: nobody}}]\n"
        "users: [{name: nobody, user: {token: none}}]\n",
        encoding="utf-8",
    )
    return {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(tmp_path)}


def run_demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "virtualpod.cli", "demo", *args],
        cwd=REPO,
        env=_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT,
        check=False,
    )


def summary(output: str) -> dict[str, str]:
    tail = output.split("== summary\n", 1)
    assert len(tail) == 2, f"no summary in:\n{output}"
    return dict(line.split(": ", 1) for line in tail[1].splitlines() if ": " in line)


def assert_demo_worked(result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout
    assert result.returncode == 0, f"stdout:\n{output}\nstderr:\n{result.stderr}"
    lines = summary(output)
    assert lines["created"] == "BestEffort, Burstable, Guaranteed"
    assert lines["suspend order"] == "BestEffort, Burstable"
    assert lines["Guaranteed suspended"] == "never"
    assert lines["resumed"] == "Burstable, BestEffort"
    assert lines["domains left"] == "0"
    assert lines["left running"] == "0"
    # The fewest VMs: the first co-tenant step suspends BestEffort only, the second
    # Burstable, giving the pool back suspends nothing.
    assert lines["suspended per co-tenant step"] == "BestEffort | Burstable | none", output
    assert re.search(
        r"^\[.*\] 1s later: web \(Burstable\) is running, suspended so far: batch ",
        output,
        flags=re.M,
    )
    assert_signal_follows_libvirt(output)
    # The table is read back from libvirt and agrees with the plan for every VM.
    table = re.findall(
        r"^(batch|web|database)\s+(\w+)\s+running\s.*\s(matches|DIFFERS)$", output, flags=re.M
    )
    assert sorted(table) == [
        ("batch", "BestEffort", "matches"),
        ("database", "Guaranteed", "matches"),
        ("web", "Burstable", "matches"),
    ]
    # The API showed the phases a user would see with kubectl.
    assert re.search(r"^batch\s+BestEffort\s+Suspended\s+MemoryPressure$", output, flags=re.M)
    assert re.search(r"^database\s+Guaranteed\s+Running\b", output, flags=re.M)
    assert "deleted the VirtualPods" in output


TIMELINE_ROW = re.compile(
    r"^\d+\.\ds\s+(?P<event>suspended|resumed|co-tenant takes \d+Mi|co-tenant gives back \d+Mi)"
    r"\s+(?P<vm>\S+)\s+\S+\s+(?P<before>-?\d+)Mi -> (?P<after>-?\d+)Mi",
    flags=re.M,
)


def assert_signal_follows_libvirt(output: str) -> None:
    """The pool signal moves with what libvirt does: each save raises it, each resume
    lowers it, and the first save alone brings it back above the 100Mi threshold."""
    timeline = output.split("== timeline", 1)[1].split("== summary", 1)[0]
    rows = [m.groupdict() for m in TIMELINE_ROW.finditer(timeline)]
    events = [(re.sub(r" \d+Mi$", "", row["event"]), row["vm"]) for row in rows]
    assert events == [
        ("co-tenant takes", "-"),
        ("suspended", "batch"),
        ("co-tenant takes", "-"),
        ("suspended", "web"),
        ("co-tenant gives back", "-"),
        ("resumed", "web"),
        ("resumed", "batch"),
    ], timeline
    for row in rows:
        before, after = int(row["before"]), int(row["after"])
        if row["event"] == "suspended":
            assert before < 100 <= after, row
        elif row["event"] == "resumed":
            assert after < before, row
        elif row["event"].startswith("co-tenant takes"):
            assert after < 100 <= before, row
        else:
            assert after > before, row


def test_demo_on_the_test_driver_says_what_it_uses(tmp_path: Path) -> None:
    result = run_demo(tmp_path, "--libvirt-uri", "test:///default")
    assert_demo_worked(result)
    output = result.stdout
    assert "libvirt: test:///default" in output
    assert "is not reachable" in output
    assert "using the in-process EMULATED Kubernetes API" in output
    assert "measured as configured VM memory (test driver" in output
    workload = summary(output)["workload"]
    assert workload == "Running on the test driver with podIP 10.0.2.15 (nothing boots)"
    assert "deleted virtualpod/hello: the operator removed its domain, overlay and seed" in output


def test_demo_cleans_up_on_ctrl_c(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "virtualpod.cli", "demo", "--libvirt-uri", "test:///default"],
        cwd=REPO,
        env=_environment(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        seen.extend(process.stdout)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(
            lambda: any("SUSPENDED batch" in line for line in seen),
            timeout=60,
            what="the demo to suspend a VM",
        )
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(timeout=10)
    assert code == 130
    output = "".join(seen)
    assert "deleted the VirtualPods" in output
    assert "== summary" not in output
    assert process.stderr is not None
    assert "everything it created was removed" in process.stderr.read()


@pytest.mark.qemu
@pytest.mark.skipif(not QEMU_URI, reason="VIRTUALPOD_QEMU_URI is not set: no real libvirtd")
def test_demo_on_real_qemu_twice_leaves_nothing_behind(tmp_path: Path) -> None:
    import libvirt

    assert QEMU_URI is not None
    for _ in range(2):
        result = run_demo(tmp_path, "--libvirt-uri", QEMU_URI)
        assert_demo_worked(result)
        assert f"libvirt: {QEMU_URI}" in result.stdout
        assert re.search(r"Save took \d+\.\d+s", result.stdout)
        assert "measured as RSS of the QEMU processes" in result.stdout
        # the workload VM booted its image, ran its command with the Secret's value, and
        # answered on loopback; its console shows the seed it read
        assert re.search(
            r"^workload: answered 'hello from a Secret, served by busybox httpd inside a VM' "
            r"on 127\.0\.0\.1:\d+$",
            result.stdout,
            flags=re.M,
        ), result.stdout
        assert re.search(r"^  \| VPWORKLOAD SEED instance=\S+ hostname=hello$", result.stdout, re.M)
        assert re.search(r"^  \| WORKLOAD-SERVING on hello$", result.stdout, re.M)
        conn = libvirt.open(QEMU_URI)
        try:
            names = [dom.name() for dom in conn.listAllDomains(0)]
        finally:
            conn.close()
        assert not [name for name in names if name.startswith(DOMAIN_PREFIX)]
        save_dir = Path("/var/lib/libvirt/qemu/save")
        if save_dir.is_dir():
            assert not list(save_dir.glob(f"{DOMAIN_PREFIX}*"))

"""`virtualpod plan`: offline, every example accepted, bad input -> message, never a traceback."""

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from virtualpod.cli import main

EXAMPLES = ["guaranteed", "burstable", "besteffort", "multi-container", "init-container"]


def run_plan(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed console entry point, in a subprocess, like a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "virtualpod.cli", "plan", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def example_args(repo_root: Path) -> list[str]:
    args: list[str] = []
    for name in EXAMPLES:
        args += ["-f", str(repo_root / "manifests/examples" / f"{name}.yaml")]
    return args


def test_every_example_is_planned_as_json(repo_root: Path) -> None:
    result = run_plan(*example_args(repo_root), "-o", "json")
    assert result.returncode == 0, result.stderr
    plans = {p["name"]: p for p in json.loads(result.stdout)}
    assert {p["qosClass"] for p in plans.values()} == {"Guaranteed", "Burstable", "BestEffort"}
    for plan in plans.values():
        assert {"name", "namespace", "qosClass", "domainXML"} <= set(plan)
        ET.fromstring(plan["domainXML"])
    assert plans["web"]["cputune"] == {"shares": 307, "globalPeriod": 100000, "globalQuota": 50000}
    assert plans["batch"]["cputune"]["shares"] == 2
    assert plans["migrate-then-serve"]["vcpus"] == 2


def test_table_shows_the_tuning(repo_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", *example_args(repo_root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "NAMESPACE",
        "NAME",
        "QOS",
        "VCPUS",
        "MEMORY",
        "SHARES",
        "QUOTA",
        "HARD",
        "SOFT",
    ]
    web = next(line.split() for line in lines if " web " in line)
    assert web[2:] == ["Burstable", "1", "320Mi", "307", "50000/100000", "584Mi", "128Mi"]
    assert len(lines) == 1 + len(EXAMPLES)


def test_xml_output_is_the_domain(repo_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["plan", "-f", str(repo_root / "manifests/examples/burstable.yaml"), "-o", "xml"]) == 0
    )
    root = ET.fromstring(capsys.readouterr().out)
    assert root.findtext("name") == "vpod_default_web"


BAD_DOCUMENT = """\
apiVersion: virtualpod.dev/v1alpha1
kind: VirtualPod
metadata: {name: broken, namespace: team-a}
spec:
  containers:
    - name: app
      resources:
        requests: {cpu: "2", memory: 1Gi}
        limits: {cpu: "1", memory: lots}
      volumeMounts: []
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ignored}
---
apiVersion: virtualpod.dev/v1alpha1
kind: VirtualPod
metadata: {name: fine}
spec:
  containers: [{name: app}]
"""


def test_bad_input_names_file_object_and_field_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "pods.yaml"
    path.write_text(BAD_DOCUMENT)
    result = run_plan("-f", str(path), "-o", "json")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = result.stderr.splitlines()
    prefix = f"error: {path}: VirtualPod team-a/broken: spec.containers[0]."
    assert (
        f"{prefix}resources.limits.memory: invalid quantity 'lots': not a Kubernetes quantity"
        in errors
    )
    assert (
        f"{prefix}volumeMounts: unknown field (known: name, image, resources, command, args, "
        "env, ports)" in errors
    )
    assert [p["name"] for p in json.loads(result.stdout)] == ["fine"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("key: [unclosed", "not valid YAML"),
        ("apiVersion: v1\nkind: ConfigMap\n", "no VirtualPod found"),
        ("- just\n- a list\n", "not an object"),
    ],
)
def test_unusable_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(content)
    result = run_plan("-f", str(path))
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_file_and_bad_settings(tmp_path: Path, repo_root: Path) -> None:
    result = run_plan("-f", str(tmp_path / "absent.yaml"))
    assert result.returncode == 1
    assert "cannot read" in result.stderr
    config = tmp_path / "settings.yaml"
    config.write_text("defaultContainerSize: {cpu: two}\n")
    result = run_plan(
        "-f", str(repo_root / "manifests/examples/besteffort.yaml"), "--config", str(config)
    )
    assert result.returncode == 2
    assert "defaultContainerSize.cpu" in result.stderr


def test_settings_change_the_plan(tmp_path: Path, repo_root: Path) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text("defaultContainerSize: {cpu: 250m, memory: 128Mi}\npadding: {memory: 0}\n")
    result = run_plan(
        "-f",
        str(repo_root / "manifests/examples/besteffort.yaml"),
        "--config",
        str(config),
        "-o",
        "json",
    )
    assert result.returncode == 0, result.stderr
    (plan,) = json.loads(result.stdout)
    assert (plan["vcpus"], plan["memoryBytes"]) == (1, 128 * 2**20)

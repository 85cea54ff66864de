"""The Vagrant box is not booted in CI, so check what can be checked without it:
the Vagrantfile's Ruby syntax, and that every script and manifest it provisions
exists, is `bash -n` clean and plans."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from virtualpod.core.plan import plan_virtualpod
from virtualpod.core.qos import QOSClass
from virtualpod.core.settings import PressureSignal, settings_from_mapping

REPO = Path(__file__).resolve().parents[2]
VAGRANTFILE = REPO / "Vagrantfile"
PROVISION = REPO / "scripts" / "vagrant-provision.sh"


def _provision_paths() -> list[str]:
    return re.findall(r'path:\s*"([^"]+)"', VAGRANTFILE.read_text(encoding="utf-8"))


def _referenced_from_provisioning(prefix: str) -> set[str]:
    """Repository files the provision and demo scripts use, as `$SRC/...` or `$REPO/...`."""
    found: set[str] = set()
    for script in (PROVISION, REPO / "scripts" / "pressure-demo.sh"):
        text = script.read_text(encoding="utf-8")
        found.update(re.findall(rf"\$(?:SRC|REPO)/({prefix}[\w./$-]+)", text))
    return found


@pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby is not installed")
def test_vagrantfile_is_valid_ruby():
    result = subprocess.run(
        ["ruby", "-c", str(VAGRANTFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Syntax OK" in result.stdout


def test_vagrantfile_uses_libvirt_with_nested_virtualization():
    text = VAGRANTFILE.read_text(encoding="utf-8")
    assert "config.vm.provider :libvirt" in text
    assert re.search(r"libvirt\.nested\s*=\s*true", text)
    assert 'config.vm.box = "debian/bookworm64"' in text


def test_vagrantfile_provisions_with_the_project_scripts():
    assert _provision_paths() == ["scripts/vagrant-provision.sh"]
    scripts = _referenced_from_provisioning("scripts/")
    # The box reuses what CI runs: the installer and the daemon script.
    assert {"scripts/install-deps.sh", "scripts/libvirtd.sh", "scripts/guest.sh"} <= scripts


@pytest.mark.parametrize(
    "script",
    sorted(
        {"scripts/vagrant-provision.sh", "scripts/pressure-demo.sh"}
        | _referenced_from_provisioning("scripts/")
    ),
)
def test_provision_scripts_exist_and_parse(script: str):
    path = REPO / script
    assert path.is_file(), f"{script} is referenced by the Vagrant provisioning but missing"
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_provisioned_manifests_exist_and_plan():
    manifests = _referenced_from_provisioning("manifests/") | _referenced_from_provisioning("crds/")
    # `$qos.yaml` in a loop: expand it as the scripts do.
    expanded = {
        m.replace("$qos", qos)
        for m in manifests
        for qos in ("besteffort", "burstable", "guaranteed")
    }
    assert "manifests/demo/pressure/hog.yaml" in expanded
    settings = settings_from_mapping(_box_settings())  # what the box's operator runs with
    classes = set()
    for name in sorted(expanded):
        path = REPO / name
        assert path.is_file(), f"{name} is applied by the Vagrant provisioning but missing"
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document and document.get("kind") == "VirtualPod":
                classes.add(plan_virtualpod(document, settings).qos_class)
    assert classes == set(QOSClass)


def test_hog_guest_does_not_outgrow_its_hard_limit():
    """The hog must fill the VM pool, not be OOM-killed by its own cgroup; the box's
    settings allow the directory its kernel and initramfs come from."""
    settings = settings_from_mapping(_box_settings())
    hog = yaml.safe_load((REPO / "manifests/demo/pressure/hog.yaml").read_text(encoding="utf-8"))
    plan = plan_virtualpod(hog, settings)
    touch_mib = int(re.search(r"vp\.touch=(\d+)", hog["spec"]["boot"]["kernel"]["cmdline"])[1])
    assert plan.qos_class is QOSClass.GUARANTEED
    assert touch_mib * 2**20 < plan.size.memory_bytes
    assert plan.memtune.hard_limit_bytes is not None
    assert touch_mib * 2**20 + 128 * 2**20 < plan.memtune.hard_limit_bytes


def _box_settings() -> dict:
    text = PROVISION.read_text(encoding="utf-8")
    block = re.search(r'cat >"\$SETTINGS" <<YAML\n(.*?)\nYAML\n', text, flags=re.DOTALL)
    assert block, "the provision script no longer writes the settings heredoc"
    guest_dir = re.search(r"^GUEST_DIR=(\S+)$", text, flags=re.M)
    assert guest_dir, "the provision script no longer names GUEST_DIR"
    rendered = (
        block[1]
        .replace("$(hostname)", "virtualpod")
        .replace("$domain_type", "kvm")
        .replace("$GUEST_DIR", guest_dir[1])
    )
    return yaml.safe_load(rendered)


def test_box_settings_load_and_the_hog_exhausts_the_pool():
    """The in-box demo only works if the hog's touched memory alone nearly fills the pool."""
    settings = settings_from_mapping(_box_settings())
    assert settings.libvirt_uri == "qemu:///system"
    assert settings.eviction.signal is PressureSignal.POOL
    pool = settings.eviction.pool_allocatable_bytes
    assert pool is not None
    hog = yaml.safe_load((REPO / "manifests/demo/pressure/hog.yaml").read_text(encoding="utf-8"))
    touch = int(re.search(r"vp\.touch=(\d+)", hog["spec"]["boot"]["kernel"]["cmdline"])[1])
    demo_vms_at_least = 3 * 32 * 2**20  # a diskless QEMU guest's RSS is ~40 MiB
    assert touch * 2**20 + demo_vms_at_least > pool - settings.eviction.hard_memory_available_bytes
    # ...and without the hog the demo VMs leave the pool far from its threshold.
    assert pool - 3 * 160 * 2**20 > settings.eviction.hard_memory_available_bytes


def test_the_box_runs_both_roles_with_command_lines_virtualpod_run_accepts():
    """Two systemd units: the controller and this host's agent, as in a cluster."""
    from virtualpod.cli import build_parser

    text = PROVISION.read_text(encoding="utf-8")
    units = dict(re.findall(r'^unit (virtualpod-\w+) "[^"]*" \\\n\s+(run [^\n]+)$', text, re.M))
    assert set(units) == {"virtualpod-controller", "virtualpod-agent"}
    roles = {}
    for name, line in units.items():
        argv = line.replace('"$SETTINGS"', "/etc/virtualpod/settings.yaml")
        argv = argv.replace('"$(hostname)"', "virtualpod").split()
        args = build_parser().parse_args(argv)
        assert args.config == "/etc/virtualpod/settings.yaml"
        roles[name] = args.role
    assert roles == {"virtualpod-controller": "controller", "virtualpod-agent": "agent"}
    assert "manifests/runtimeclass.yaml" in _referenced_from_provisioning("manifests/")
    assert "virtualpod.dev/libvirt-host=true" in text

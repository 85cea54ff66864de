"""Host detection that needs no libvirt daemon."""

from __future__ import annotations

from pathlib import Path

import pytest

from virtualpod.core.tuning import cpu_weight_from_shares
from virtualpod.libvirt.hypervisor import Hypervisor, detect_cgroup_version


def test_cgroup_v2_when_cpu_is_on_the_unified_hierarchy(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    assert detect_cgroup_version(tmp_path) == 2


@pytest.mark.parametrize("controllers", [None, "", "memory pids\n"])
def test_cgroup_v1_otherwise(tmp_path: Path, controllers: str | None) -> None:
    # No file: v1 (or hybrid); a unified hierarchy without cpu: libvirt uses v1 cpu.shares.
    if controllers is not None:
        (tmp_path / "cgroup.controllers").write_text(controllers)
    assert detect_cgroup_version(tmp_path) == 1


@pytest.mark.parametrize("shares", [2, 1024, 262144])
def test_shares_become_weights_only_on_v2(shares: int) -> None:
    v1 = Hypervisor("test:///default", cgroup_version=1)
    v2 = Hypervisor("test:///default", cgroup_version=2)
    assert v1.cpu_shares_value(shares) == shares
    assert v2.cpu_shares_value(shares) == cpu_weight_from_shares(shares)
    assert 1 <= v2.cpu_shares_value(shares) <= 10000


def test_this_hosts_version_is_detected_for_local_uris() -> None:
    assert Hypervisor("qemu:///system").cgroup_version == detect_cgroup_version()
    assert Hypervisor("test:///default").cgroup_version == 1  # no cgroups there
    assert not Hypervisor("qemu+ssh://host/system").local

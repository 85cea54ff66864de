"""kubelet's formulas (pkg/kubelet/cm/helpers_linux_test.go, pkg/kubelet/qos/policy_test.go)
and their mapping onto <cputune>/<memtune>."""

from typing import Any

import pytest

from tests.unit.manifests import container, virtualpod
from virtualpod.core.qos import QOSClass, qos_class
from virtualpod.core.settings import Settings
from virtualpod.core.sizing import VMSize, vm_size
from virtualpod.core.spec import parse_virtualpod
from virtualpod.core.tuning import (
    CpuTune,
    MemTune,
    cpu_quota,
    cpu_shares,
    cpu_weight_from_shares,
    cputune,
    cputune_for_cgroup,
    memtune,
    oom_score_adj,
    shares_for_cgroup,
)

Mi = 2**20
Gi = 2**30


@pytest.mark.parametrize(
    ("millis", "shares"),
    [
        (0, 2),
        (1, 2),
        (2, 2),
        (3, 3),
        (300, 307),
        (500, 512),
        (1000, 1024),
        (1500, 1536),
        (256000, 262144),
        (300000, 262144),
    ],
)
def test_milli_cpu_to_shares(millis: int, shares: int) -> None:
    assert cpu_shares(millis) == shares


@pytest.mark.parametrize(
    ("millis", "period", "quota"),
    [
        (0, 100000, 0),
        (5, 100000, 1000),
        (9, 100000, 1000),
        (10, 100000, 1000),
        (200, 100000, 20000),
        (500, 100000, 50000),
        (1000, 100000, 100000),
        (1500, 100000, 150000),
        (1500, 50000, 75000),
    ],
)
def test_milli_cpu_to_quota(millis: int, period: int, quota: int) -> None:
    assert cpu_quota(millis, period) == quota


@pytest.mark.parametrize(
    ("shares", "weight"), [(2, 1), (1024, 39), (262144, 10000), (0, 1), (10**7, 10000)]
)
def test_cgroup_v2_weight(shares: int, weight: int) -> None:
    assert cpu_weight_from_shares(shares) == weight


@pytest.mark.parametrize(
    ("shares", "cgroup_version", "written"),
    [(1024, 1, 1024), (2, 1, 2), (262144, 1, 262144), (1024, 2, 39), (2, 2, 1), (262144, 2, 10000)],
)
def test_shares_become_weights_only_on_cgroup_v2(
    shares: int, cgroup_version: int, written: int
) -> None:
    assert shares_for_cgroup(shares, cgroup_version) == written


def test_the_written_cputune_keeps_period_and_quota() -> None:
    tune = CpuTune(shares=1024, period_us=100000, quota_us=50000)
    assert cputune_for_cgroup(tune, 2) == CpuTune(39, 100000, 50000)
    assert cputune_for_cgroup(tune, 1) == tune


def tuned(manifest: dict[str, Any]) -> tuple[QOSClass, CpuTune, MemTune, VMSize]:
    pod = parse_virtualpod(manifest)
    qos = qos_class(pod)
    size = vm_size(pod, Settings())
    return qos, cputune(pod), memtune(pod, qos, size, Settings().vmm_overhead), size


def test_burstable_300m_500m() -> None:
    qos, cpu, memory, size = tuned(
        virtualpod(
            container(
                requests={"cpu": "300m", "memory": "1.5Gi"}, limits={"cpu": "500m", "memory": "2Gi"}
            )
        )
    )
    assert qos is QOSClass.BURSTABLE
    assert cpu == CpuTune(shares=307, period_us=100000, quota_us=50000)
    overhead = 256 * Mi + 8 * Mi * size.vcpus
    assert memory == MemTune(
        hard_limit_bytes=size.memory_bytes + overhead, soft_limit_bytes=1536 * Mi
    )


def test_guaranteed_limits_only() -> None:
    qos, cpu, memory, size = tuned(virtualpod(container(limits={"cpu": "10m", "memory": "1Gi"})))
    assert qos is QOSClass.GUARANTEED
    assert cpu == CpuTune(shares=10, period_us=100000, quota_us=1000)
    assert memory.soft_limit_bytes == Gi
    assert memory.hard_limit_bytes == size.memory_bytes + 264 * Mi


def test_best_effort_gets_minimum_shares_and_no_memtune() -> None:
    qos, cpu, memory, _ = tuned(virtualpod(container("a"), container("b")))
    assert qos is QOSClass.BEST_EFFORT
    assert cpu == CpuTune(shares=2)
    assert memory == MemTune()


def test_quota_and_hard_limit_only_when_every_container_is_limited() -> None:
    qos, cpu, memory, _ = tuned(
        virtualpod(
            container(
                "a",
                requests={"cpu": "250m", "memory": "256Mi"},
                limits={"cpu": "500m", "memory": "512Mi"},
            ),
            container("b"),
        )
    )
    assert qos is QOSClass.BURSTABLE
    assert cpu == CpuTune(shares=256)
    assert memory == MemTune(hard_limit_bytes=None, soft_limit_bytes=256 * Mi)


def test_init_container_rule_applies_to_shares_and_quota() -> None:
    _, cpu, _, _ = tuned(
        virtualpod(
            container("a", limits={"cpu": "500m", "memory": "256Mi"}),
            init=(container("init", limits={"cpu": "2", "memory": "1Gi"}),),
        )
    )
    assert cpu == CpuTune(shares=2048, period_us=100000, quota_us=200000)


CAPACITY = 4 * Gi


@pytest.mark.parametrize(
    ("qos", "memory_request", "adj"),
    [
        (QOSClass.GUARANTEED, Gi, -997),
        (QOSClass.BEST_EFFORT, 0, 1000),
        (QOSClass.BURSTABLE, CAPACITY // 2, 500),
        (QOSClass.BURSTABLE, CAPACITY, 3),  # never below Guaranteed's 1000-997
        (QOSClass.BURSTABLE, 2 * CAPACITY, 3),
        (QOSClass.BURSTABLE, 0, 999),  # never as low-priority as BestEffort
        (QOSClass.BURSTABLE, Gi, 750),
    ],
)
def test_oom_score_adj(qos: QOSClass, memory_request: int, adj: int) -> None:
    assert oom_score_adj(qos, memory_request, CAPACITY) == adj

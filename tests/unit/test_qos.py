"""QoS class, table-driven from Kubernetes' qos_test.go and the 'Configure Quality of
Service for Pods' task page (qos-demo, qos-demo-2, qos-demo-3, qos-demo-4)."""

from typing import Any

import pytest

from tests.unit.manifests import container, virtualpod
from virtualpod.core.qos import QOSClass, qos_class
from virtualpod.core.spec import parse_virtualpod

GUARANTEED = QOSClass.GUARANTEED
BURSTABLE = QOSClass.BURSTABLE
BEST_EFFORT = QOSClass.BEST_EFFORT


def cpu_mem(cpu: str | None = None, memory: str | None = None) -> dict[str, str]:
    return {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}


CASES = [
    # --- the cases the issue names ---
    (
        "requests 300m/1.5Gi, limits 500m/2Gi",
        virtualpod(container(requests=cpu_mem("300m", "1.5Gi"), limits=cpu_mem("500m", "2Gi"))),
        BURSTABLE,
    ),
    (
        "only limits 10m/1Gi: requests default to limits",
        virtualpod(container(limits=cpu_mem("10m", "1Gi"))),
        GUARANTEED,
    ),
    (
        "two containers, one sets nothing",
        virtualpod(container("a", limits=cpu_mem("1", "1Gi")), container("b")),
        BURSTABLE,
    ),
    ("every container empty", virtualpod(container("a"), container("b")), BEST_EFFORT),
    (
        "guaranteed with an init container larger than the app containers",
        virtualpod(
            container("a", limits=cpu_mem("500m", "256Mi")),
            init=(container("init", limits=cpu_mem("2", "1Gi")),),
        ),
        GUARANTEED,
    ),
    # --- Kubernetes docs: Configure Quality of Service for Pods ---
    (
        "qos-demo: requests equal limits",
        virtualpod(container(requests=cpu_mem("700m", "200Mi"), limits=cpu_mem("700m", "200Mi"))),
        GUARANTEED,
    ),
    (
        "qos-demo-2: memory request below limit, no cpu",
        virtualpod(container(requests=cpu_mem(memory="100Mi"), limits=cpu_mem(memory="200Mi"))),
        BURSTABLE,
    ),
    ("qos-demo-3: nothing set", virtualpod(container()), BEST_EFFORT),
    (
        "qos-demo-4: one container with a memory request, one with nothing",
        virtualpod(container("a", requests=cpu_mem(memory="200Mi")), container("b")),
        BURSTABLE,
    ),
    # --- kubernetes/kubernetes pkg/apis/core/v1/helper/qos/qos_test.go ---
    (
        "best-effort-burstable",
        virtualpod(container("a"), container("b", requests=cpu_mem(cpu="1"))),
        BURSTABLE,
    ),
    (
        "best-effort-guaranteed",
        virtualpod(container("a"), container("b", limits=cpu_mem("1", "10Gi"))),
        BURSTABLE,
    ),
    (
        "burstable-cpu-guaranteed-memory",
        virtualpod(container(requests=cpu_mem(memory="10Gi"), limits=cpu_mem(memory="10Gi"))),
        BURSTABLE,
    ),
    ("burstable-no-limits", virtualpod(container(requests=cpu_mem("100m", "100Mi"))), BURSTABLE),
    (
        "burstable-unbounded-but-requests-match-limits: sums match, one container unbounded",
        virtualpod(
            container("a", requests=cpu_mem("100m", "100Mi"), limits=cpu_mem("200m", "200Mi")),
            container("b", requests=cpu_mem("100m", "100Mi")),
        ),
        BURSTABLE,
    ),
    (
        "guaranteed-guaranteed",
        virtualpod(
            container("a", limits=cpu_mem("100m", "100Mi")),
            container("b", limits=cpu_mem("200m", "200Mi")),
        ),
        GUARANTEED,
    ),
    (
        "best-effort app with a guaranteed init container",
        virtualpod(container("a"), init=(container("init", limits=cpu_mem("1", "1Gi")),)),
        BURSTABLE,
    ),
    (
        "explicit zero request below a limit is not Guaranteed",
        virtualpod(container(requests=cpu_mem("0", "1Gi"), limits=cpu_mem("1", "1Gi"))),
        BURSTABLE,
    ),
    (
        "zero quantities count as unset",
        virtualpod(container(requests=cpu_mem("0", "0"), limits=cpu_mem("0", "0"))),
        BEST_EFFORT,
    ),
]


@pytest.mark.parametrize(
    ("manifest", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_qos_class(manifest: dict[str, Any], expected: QOSClass) -> None:
    assert qos_class(parse_virtualpod(manifest)) is expected


def test_rank_orders_suspension() -> None:
    assert [c.rank for c in (BEST_EFFORT, BURSTABLE, GUARANTEED)] == [0, 1, 2]

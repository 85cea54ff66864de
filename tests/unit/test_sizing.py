"""VM size: limit if set, else max(request, default container size); init-container rule;
guest padding; vCPUs rounded up. Defaults: container 1 cpu / 512Mi, padding 0 / 64Mi."""

from typing import Any

import pytest

from tests.unit.manifests import container, virtualpod
from virtualpod.core.settings import Amount, Settings
from virtualpod.core.sizing import VMSize, vm_size
from virtualpod.core.spec import parse_virtualpod

Mi = 2**20
DEFAULTS = Settings()

CASES = [
    (
        "limits only 10m/1Gi",
        virtualpod(container(limits={"cpu": "10m", "memory": "1Gi"})),
        VMSize(cpu_millis=10, memory_bytes=1024 * Mi + 64 * Mi),
        1,
    ),
    (
        "requests without limits are raised to the default container size",
        virtualpod(container(requests={"cpu": "300m", "memory": "256Mi"})),
        VMSize(1000, 512 * Mi + 64 * Mi),
        1,
    ),
    (
        "requests above the default size are kept",
        virtualpod(container(requests={"cpu": "1500m", "memory": "1.5Gi"})),
        VMSize(1500, 1536 * Mi + 64 * Mi),
        2,
    ),
    (
        "limit wins over the default even when smaller",
        virtualpod(
            container(
                requests={"cpu": "300m", "memory": "1.5Gi"}, limits={"cpu": "500m", "memory": "2Gi"}
            )
        ),
        VMSize(500, 2048 * Mi + 64 * Mi),
        1,
    ),
    (
        "an empty container gets the default size, never the host's",
        virtualpod(container()),
        VMSize(1000, 512 * Mi + 64 * Mi),
        1,
    ),
    (
        "app containers add up",
        virtualpod(container("a", limits={"cpu": "500m", "memory": "512Mi"}), container("b")),
        VMSize(1500, 1024 * Mi + 64 * Mi),
        2,
    ),
    (
        "an init container larger than the app containers sizes the VM",
        virtualpod(
            container("a", limits={"cpu": "500m", "memory": "256Mi"}),
            container("b", limits={"cpu": "100m", "memory": "64Mi"}),
            init=(container("init", limits={"cpu": "2", "memory": "1Gi"}),),
        ),
        VMSize(2000, 1024 * Mi + 64 * Mi),
        2,
    ),
    (
        "per resource: init is larger in cpu, apps in memory",
        virtualpod(
            container("a", limits={"cpu": "500m", "memory": "2Gi"}),
            init=(container("init", limits={"cpu": "3", "memory": "1Gi"}),),
        ),
        VMSize(3000, 2048 * Mi + 64 * Mi),
        3,
    ),
    (
        "memory is rounded up to whole MiB",
        virtualpod(container(limits={"cpu": "1", "memory": "1000000"})),
        VMSize(1000, 1 * Mi + 64 * Mi),
        1,
    ),
]


@pytest.mark.parametrize(
    ("manifest", "size", "vcpus"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_vm_size(manifest: dict[str, Any], size: VMSize, vcpus: int) -> None:
    result = vm_size(parse_virtualpod(manifest), DEFAULTS)
    assert result == size
    assert result.vcpus == vcpus


def test_sizing_policy_is_an_admin_setting() -> None:
    settings = Settings(default_container_size=Amount(250, 128 * Mi), padding=Amount(500, 0))
    result = vm_size(parse_virtualpod(virtualpod(container())), settings)
    assert result == VMSize(750, 128 * Mi)
    assert result.vcpus == 1

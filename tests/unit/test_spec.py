"""Manifest validation and defaulting: every bad input gets a message naming its field."""

from typing import Any

import pytest

from tests.unit.manifests import container, virtualpod
from virtualpod.core.plan import plan_virtualpod
from virtualpod.core.settings import Settings
from virtualpod.core.spec import (
    DiskBoot,
    KernelBoot,
    Resources,
    SpecError,
    SuspendMode,
    parse_virtualpod,
)


def test_requests_default_to_limits() -> None:
    pod = parse_virtualpod(virtualpod(container(limits={"cpu": "10m", "memory": "1Gi"})))
    assert pod.containers[0].requests == Resources(cpu_millis=10, memory_bytes=2**30)


def test_explicit_request_is_kept_even_when_zero() -> None:
    pod = parse_virtualpod(
        virtualpod(container(requests={"cpu": "0"}, limits={"cpu": "1", "memory": "1Gi"}))
    )
    assert pod.containers[0].requests == Resources(cpu_millis=0, memory_bytes=2**30)


def test_defaults_namespace_and_reads_everything() -> None:
    manifest = virtualpod(
        container(),
        init=(container("init"),),
        priority=10,
        priorityClassName="batch-low",
        suspendMode="Pause",
        nodeName="host-1",
        boot={
            "kernel": {
                "path": "/boot/vmlinuz",
                "initrd": "/boot/initrd.img",
                "cmdline": "console=ttyS0",
            }
        },
    )
    del manifest["metadata"]["namespace"]
    manifest["metadata"]["uid"] = "0b7f3c52-4e2a-4a55-9c1e-1f0e2c1d9a10"
    pod = parse_virtualpod(manifest)
    assert pod.namespace == "default"
    assert pod.priority == 10
    assert pod.priority_class_name == "batch-low"
    assert pod.suspend_mode is SuspendMode.PAUSE
    assert pod.node_name == "host-1"
    assert pod.boot == KernelBoot("/boot/vmlinuz", "/boot/initrd.img", "console=ttyS0")
    assert [c.name for c in pod.all_containers] == ["init", "app"]


def test_disk_boot_defaults_to_qcow2() -> None:
    pod = parse_virtualpod(virtualpod(container(), boot={"disk": {"path": "/var/lib/vm.img"}}))
    assert pod.boot == DiskBoot("/var/lib/vm.img")


def errors_of_plan(manifest: dict[str, Any]) -> dict[str, str]:
    """Errors of the whole plan: the spec, and the VM size it leads to."""
    with pytest.raises(SpecError) as caught:
        plan_virtualpod(manifest, Settings())
    return {error.path: error.message for error in caught.value.errors}


def errors_of(manifest: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        parse_virtualpod(manifest)
    return {error.path: error.message for error in caught.value.errors}


BAD = [
    (
        "invalid quantity",
        virtualpod(container(limits={"memory": "lots"})),
        "spec.containers[0].resources.limits.memory",
        "invalid quantity 'lots'",
    ),
    (
        "negative quantity",
        virtualpod(container(requests={"cpu": "-1"})),
        "spec.containers[0].resources.requests.cpu",
        "must not be negative",
    ),
    (
        "request above limit",
        virtualpod(container(requests={"memory": "2Gi"}, limits={"memory": "1Gi"})),
        "spec.containers[0].resources.requests.memory",
        "2Gi must be less than or equal to memory limit of 1Gi",
    ),
    (
        "name that is not a DNS label",
        virtualpod(container(), name="My_VM"),
        "metadata.name",
        "not a DNS-1123 label",
    ),
    (
        "name that would break XML",
        virtualpod(container(), name="a<b>&'c"),
        "metadata.name",
        "not a DNS-1123 label",
    ),
    (
        "name that would break paths",
        virtualpod(container(), name="../etc"),
        "metadata.name",
        "not a DNS-1123 label",
    ),
    (
        "container name too long",
        virtualpod(container("x" * 64)),
        "spec.containers[0].name",
        "not a DNS-1123 label",
    ),
    ("unknown spec field", virtualpod(container(), replicas=3), "spec.replicas", "unknown field"),
    (
        "unknown container field",
        virtualpod({**container(), "volumeMounts": []}),
        "spec.containers[0].volumeMounts",
        "unknown field",
    ),
    (
        "unsupported resource",
        virtualpod(container(limits={"nvidia.com/gpu": 1})),
        "spec.containers[0].resources.limits.nvidia.com/gpu",
        "unsupported resource",
    ),
    ("no containers", virtualpod(), "spec.containers", "at least one container"),
    (
        "duplicate container names",
        virtualpod(container("a"), init=(container("a"),)),
        "spec.containers",
        "duplicate container name 'a'",
    ),
    (
        "priority not an integer",
        virtualpod(container(), priority="high"),
        "spec.priority",
        "32-bit integer",
    ),
    (
        "priority out of int32 range",
        virtualpod(container(), priority=2**31),
        "spec.priority",
        "32-bit integer",
    ),
    (
        "unknown suspend mode",
        virtualpod(container(), suspendMode="Hibernate"),
        "spec.suspendMode",
        "Save, Pause",
    ),
    (
        "relative disk path",
        virtualpod(container(), boot={"disk": {"path": "images/vm.qcow2"}}),
        "spec.boot.disk.path",
        "absolute path",
    ),
    (
        "path escaping with ..",
        virtualpod(container(), boot={"disk": {"path": "/var/lib/../../etc/shadow"}}),
        "spec.boot.disk.path",
        "normalized path",
    ),
    (
        "control character in a path",
        virtualpod(container(), boot={"kernel": {"path": "/boot/vmlinuz\n"}}),
        "spec.boot.kernel.path",
        "control characters",
    ),
    (
        "disk and kernel together",
        virtualpod(container(), boot={"disk": {"path": "/a"}, "kernel": {"path": "/b"}}),
        "spec.boot",
        "either disk or kernel",
    ),
    (
        "containers not a list",
        virtualpod(container()) | {"spec": {"containers": {"name": "a"}}},
        "spec.containers",
        "must be a list",
    ),
    (
        "cpu beyond Kubernetes' int64 milli-unit range",
        virtualpod(container(limits={"cpu": "1e999"})),
        "spec.containers[0].resources.limits.cpu",
        "must be at most 9223372036854775807m",
    ),
    (
        "a 60-digit memory",
        virtualpod(container(requests={"memory": "9" * 60})),
        "spec.containers[0].resources.requests.memory",
        "must be at most",
    ),
    (
        "exponent Decimal cannot hold",
        virtualpod(container(requests={"cpu": "1e999999999"})),
        "spec.containers[0].resources.requests.cpu",
        "at most",
    ),
    (
        "spelling the CRD's pattern refuses",
        virtualpod(container(requests={"cpu": "1e-100"})),
        "spec.containers[0].resources.requests.cpu",
        "must match",
    ),
    (
        "a VM with more vCPUs than any QEMU/KVM guest",
        virtualpod(container(limits={"cpu": "5000"})),
        "spec.containers",
        "at most 4096",
    ),
    (
        "a null name",
        virtualpod(container()) | {"metadata": {"name": None}},
        "metadata.name",
        "is required",
    ),
    (
        "a null container name",
        virtualpod({"name": None}),
        "spec.containers[0].name",
        "is required",
    ),
    (
        "wrong apiVersion",
        virtualpod(container()) | {"apiVersion": "virtualpod.dev/v1"},
        "apiVersion",
        "must be 'virtualpod.dev/v1alpha1'",
    ),
]


@pytest.mark.parametrize(
    ("manifest", "path", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_input_names_the_field(manifest: dict[str, Any], path: str, message: str) -> None:
    errors = errors_of_plan(manifest)
    assert path in errors, errors
    assert message in errors[path]


def test_every_problem_is_reported_at_once() -> None:
    errors = errors_of(virtualpod(container("A", limits={"cpu": "x", "memory": "-1"}), foo=1))
    assert set(errors) == {
        "spec.containers[0].name",
        "spec.containers[0].resources.limits.cpu",
        "spec.containers[0].resources.limits.memory",
        "spec.foo",
    }


def test_nulls_are_unset_as_the_api_server_prunes_them() -> None:
    manifest = virtualpod(container(limits={"cpu": None, "memory": "1Gi"}), boot={"disk": None})
    manifest["metadata"]["namespace"] = None
    pod = parse_virtualpod(manifest)
    assert pod.namespace == "default"
    assert pod.containers[0].limits == Resources(cpu_millis=None, memory_bytes=2**30)
    assert pod.boot is None


def test_the_largest_kubernetes_quantity_is_accepted() -> None:
    pod = parse_virtualpod(virtualpod(container(requests={"memory": "9223372036854775807m"})))
    assert pod.containers[0].requests.memory_bytes == 9223372036854776  # rounded up


@pytest.mark.parametrize("garbage", [None, "text", 42, [1, 2], {"spec": "x"}])
def test_garbage_objects_raise_spec_error_not_crash(garbage: Any) -> None:
    with pytest.raises(SpecError):
        parse_virtualpod(garbage)

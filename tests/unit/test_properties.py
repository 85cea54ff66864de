"""Invariants of the core over generated manifests (hypothesis)."""

from typing import Any

import libvirt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.manifests import virtualpod
from virtualpod.core.domain import parse_domain
from virtualpod.core.host_paths import HostPaths
from virtualpod.core.plan import plan_virtualpod
from virtualpod.core.qos import QOSClass, qos_class
from virtualpod.core.settings import Settings
from virtualpod.core.sizing import vm_size
from virtualpod.core.spec import Container, VirtualPod, parse_virtualpod
from virtualpod.core.tuning import MAX_SHARES, MIN_QUOTA_US, MIN_SHARES, cpu_quota, cpu_shares

dns_labels = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?\Z")
cpu_millis = st.integers(min_value=0, max_value=64_000)
memory_mib = st.integers(min_value=0, max_value=64 * 1024)


@st.composite
def cpu_spelling(draw: st.DrawFn, millis: int) -> str | float:
    spellings: list[str | float] = [
        f"{millis}m",
        str(millis / 1000) if millis % 1000 else str(millis // 1000),
        millis / 1000,
    ]
    return draw(st.sampled_from(spellings))


@st.composite
def memory_spelling(draw: st.DrawFn, mib: int) -> str:
    return draw(st.sampled_from([f"{mib}Mi", str(mib * 2**20), f"{mib * 1024}Ki"]))


@st.composite
def resource_pair(draw: st.DrawFn) -> tuple[int | None, int | None]:
    """(request, limit) for one resource, each maybe unset; request <= limit when both set."""
    limit = draw(st.none() | st.integers(min_value=0, max_value=64_000))
    if limit is None:
        request = draw(st.none() | st.integers(min_value=0, max_value=64_000))
    else:
        request = draw(st.none() | st.integers(min_value=0, max_value=limit))
    return request, limit


@st.composite
def containers(draw: st.DrawFn, name: str) -> dict[str, Any]:
    requests: dict[str, str | float] = {}
    limits: dict[str, str | float] = {}
    cpu_request, cpu_limit = draw(resource_pair())
    mem_request, mem_limit = draw(resource_pair())
    if cpu_request is not None:
        requests["cpu"] = draw(cpu_spelling(cpu_request))
    if cpu_limit is not None:
        limits["cpu"] = draw(cpu_spelling(cpu_limit))
    if mem_request is not None:
        requests["memory"] = draw(memory_spelling(mem_request))
    if mem_limit is not None:
        limits["memory"] = draw(memory_spelling(mem_limit))
    resources: dict[str, Any] = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return {"name": name, "resources": resources}


@st.composite
def manifests(draw: st.DrawFn, max_containers: int = 4) -> dict[str, Any]:
    count = draw(st.integers(min_value=1, max_value=max_containers))
    init_count = draw(st.integers(min_value=0, max_value=2))
    apps = [draw(containers(f"c{i}")) for i in range(count)]
    inits = [draw(containers(f"i{i}")) for i in range(init_count)]
    return virtualpod(*apps, init=tuple(inits), name=draw(dns_labels), namespace=draw(dns_labels))


def restated_qos(pod: VirtualPod) -> QOSClass:
    """The rule in words: Guaranteed when every container has non-zero cpu and memory
    limits and requests equal to them; BestEffort when nobody sets any (non-zero) amount."""
    everything = pod.all_containers

    def amounts(c: Container) -> tuple[int | None, ...]:
        return (
            c.requests.cpu_millis,
            c.requests.memory_bytes,
            c.limits.cpu_millis,
            c.limits.memory_bytes,
        )

    if all(not any(amounts(c)) for c in everything):
        return QOSClass.BEST_EFFORT
    if all(
        c.limits.cpu_millis
        and c.limits.memory_bytes
        and c.requests.cpu_millis == c.limits.cpu_millis
        and c.requests.memory_bytes == c.limits.memory_bytes
        for c in everything
    ):
        return QOSClass.GUARANTEED
    return QOSClass.BURSTABLE


@given(manifests())
def test_qos_class_matches_the_rule_in_words(manifest: dict[str, Any]) -> None:
    pod = parse_virtualpod(manifest)
    assert qos_class(pod) is restated_qos(pod)


@given(manifests(max_containers=3), containers("extra"))
def test_adding_a_container_never_shrinks_the_vm(
    manifest: dict[str, Any], extra: dict[str, Any]
) -> None:
    before = vm_size(parse_virtualpod(manifest), Settings())
    manifest["spec"]["containers"].append(extra)
    after = vm_size(parse_virtualpod(manifest), Settings())
    assert after.cpu_millis >= before.cpu_millis
    assert after.memory_bytes >= before.memory_bytes
    assert after.vcpus >= before.vcpus


@given(st.integers(min_value=0, max_value=10**9))
def test_shares_stay_in_range(millis: int) -> None:
    assert MIN_SHARES <= cpu_shares(millis) <= MAX_SHARES


@given(st.integers(min_value=0, max_value=10**9))
def test_quota_is_absent_or_at_least_minimum(millis: int) -> None:
    quota = cpu_quota(millis)
    assert quota == 0 or quota >= MIN_QUOTA_US


@given(manifests())
def test_plan_tuning_invariants(manifest: dict[str, Any]) -> None:
    plan = plan_virtualpod(manifest, Settings())
    assert MIN_SHARES <= plan.cputune.shares <= MAX_SHARES
    assert plan.cputune.quota_us is None or plan.cputune.quota_us >= MIN_QUOTA_US
    if plan.memtune.hard_limit_bytes is not None:
        assert plan.memtune.hard_limit_bytes > plan.size.memory_bytes
    if plan.qos_class is QOSClass.BEST_EFFORT:
        assert plan.cputune.shares == MIN_SHARES
        assert plan.memtune.hard_limit_bytes is None
        assert plan.memtune.soft_limit_bytes is None


CONN = libvirt.open("test:///default")


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    manifests(),
    st.sampled_from([None, "disk", "kernel"]),
    st.text(alphabet="ab&<>'\" ;$é", min_size=1, max_size=8),
)
def test_every_rendered_domain_is_accepted_by_libvirt(
    manifest: dict[str, Any], boot: str | None, odd: str
) -> None:
    if boot == "disk":
        manifest["spec"]["boot"] = {"disk": {"path": f"/var/lib/{odd}.qcow2"}}
    elif boot == "kernel":
        manifest["spec"]["boot"] = {"kernel": {"path": f"/boot/{odd}", "cmdline": odd}}
    plan = plan_virtualpod(manifest, Settings(host_paths=HostPaths(("/var/lib", "/boot"))))
    domain = CONN.defineXML(plan.domain_xml)
    try:
        echoed = parse_domain(domain.XMLDesc())
        assert echoed.name == plan.domain_name
        assert echoed.uuid == plan.uuid
        assert echoed.vcpus == plan.size.vcpus
        assert echoed.memory_bytes == plan.size.memory_bytes
        assert echoed.cputune == plan.cputune
        assert echoed.memtune == plan.memtune
    finally:
        domain.undefine()

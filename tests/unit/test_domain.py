"""Domain XML: rendered from the plan, escaped, read back, and accepted by libvirt."""

import xml.etree.ElementTree as ET

import libvirt
import pytest

from tests.unit.manifests import container, virtualpod
from virtualpod.core.domain import domain_name, domain_uuid, parse_domain
from virtualpod.core.plan import plan_virtualpod
from virtualpod.core.settings import HostPaths, Settings
from virtualpod.core.spec import SuspendMode

Mi = 2**20


def burstable(**spec):
    return virtualpod(
        container(
            requests={"cpu": "300m", "memory": "1.5Gi"}, limits={"cpu": "500m", "memory": "2Gi"}
        ),
        name="web",
        **spec,
    )


def test_domain_name_cannot_collide():
    assert domain_name("a-b", "c") != domain_name("a", "b-c")
    assert domain_name("default", "web") == "vpod_default_web"


def test_uuid_is_the_object_uid_or_stable():
    uid = "0b7f3c52-4e2a-4a55-9c1e-1f0e2c1d9a10"
    assert domain_uuid("ns", "n", uid) == uid
    assert domain_uuid("ns", "n", None) == domain_uuid("ns", "n", None)
    assert domain_uuid("ns", "n", None) != domain_uuid("ns", "m", None)


def test_rendered_xml_carries_size_and_tuning():
    plan = plan_virtualpod(burstable(priority=7, suspendMode="Pause"), Settings())
    root = ET.fromstring(plan.domain_xml)
    assert root.get("type") == "kvm"
    assert root.findtext("vcpu") == "1"
    assert root.findtext("memory") == str((2048 + 64) * 1024)
    assert root.findtext("currentMemory") == root.findtext("memory")
    assert root.findtext("cputune/shares") == "307"
    assert root.findtext("cputune/global_period") == "100000"
    assert root.findtext("cputune/global_quota") == "50000"
    assert root.findtext("memtune/soft_limit") == str(1536 * 1024)
    assert root.find("devices/memballoon").get("model") == "virtio"
    assert root.find("devices/memballoon/stats").get("period") == "5"
    summary = parse_domain(plan.domain_xml)
    assert summary.cputune == plan.cputune
    assert summary.memtune == plan.memtune
    assert summary.metadata.qos_class == "Burstable"
    assert summary.metadata.priority == 7
    assert summary.metadata.memory_request_bytes == 1536 * Mi
    assert summary.metadata.suspend_mode is SuspendMode.PAUSE


def test_cgroup_v2_host_gets_weight_in_shares():
    plan = plan_virtualpod(burstable(), Settings(), cgroup_version=2)
    assert plan.cputune.shares == 307
    assert parse_domain(plan.domain_xml).cputune.shares == 12


def test_boot_from_kernel_and_from_disk():
    allowed = Settings(host_paths=HostPaths(allowed=("/boot", "/img")))
    kernel = plan_virtualpod(
        burstable(
            boot={
                "kernel": {
                    "path": "/boot/vmlinuz",
                    "initrd": "/boot/initrd.img",
                    "cmdline": "console=ttyS0 a&b",
                }
            }
        ),
        allowed,
    )
    root = ET.fromstring(kernel.domain_xml)
    assert root.findtext("os/kernel") == "/boot/vmlinuz"
    assert root.findtext("os/cmdline") == "console=ttyS0 a&b"
    disk = plan_virtualpod(
        burstable(boot={"disk": {"path": "/img/a&b <c>.raw", "format": "raw"}}), allowed
    )
    source = ET.fromstring(disk.domain_xml).find("devices/disk/source")
    assert source.get("file") == "/img/a&b <c>.raw"


@pytest.mark.parametrize(("read_only", "tags"), [(True, ["readonly"]), (False, [])])
def test_disk_from_a_host_path_is_read_only_unless_the_admin_allows_writing(read_only, tags):
    settings = Settings(host_paths=HostPaths(allowed=("/img",), read_only=read_only))
    plan = plan_virtualpod(burstable(boot={"disk": {"path": "/img/a.qcow2"}}), settings)
    disk = ET.fromstring(plan.domain_xml).find("devices/disk")
    assert [child.tag for child in disk if child.tag == "readonly"] == tags


@pytest.fixture
def test_driver():
    conn = libvirt.open("test:///default")
    yield conn
    conn.close()


@pytest.mark.parametrize(
    "example",
    ["guaranteed", "burstable", "besteffort", "multi-container", "init-container", "workload"],
)
def test_examples_define_on_libvirt_and_read_back(test_driver, example, repo_root):
    import yaml

    manifest = yaml.safe_load((repo_root / "manifests/examples" / f"{example}.yaml").read_text())
    manifest["metadata"]["name"] = f"{manifest['metadata']['name']}-define"
    allowed = Settings(host_paths=HostPaths(allowed=("/srv/vm-images",)))  # workload.yaml
    plan = plan_virtualpod(manifest, allowed)
    domain = test_driver.defineXML(plan.domain_xml)
    try:
        assert domain.UUIDString() == plan.uuid
        echoed = parse_domain(domain.XMLDesc())
        assert (echoed.vcpus, echoed.memory_bytes) == (plan.size.vcpus, plan.size.memory_bytes)
        assert echoed.cputune == plan.cputune
        assert echoed.memtune == plan.memtune
        assert echoed.metadata == parse_domain(plan.domain_xml).metadata
    finally:
        domain.undefine()

"""What the containers run, from the manifest to the seed the guest reads."""

from __future__ import annotations

import shlex
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import replace
from typing import Any

import libvirt
import pytest
import yaml

from tests.present import present
from tests.unit.manifests import container, virtualpod
from virtualpod.core.cloudinit import (
    MissingKey,
    key_refs,
    render_meta_data,
    render_user_data,
    seed_files,
)
from virtualpod.core.host_paths import HostPaths
from virtualpod.core.nic import mac_address
from virtualpod.core.plan import VMPlan, plan_virtualpod
from virtualpod.core.seed import build_seed_iso, read_seed_iso
from virtualpod.core.settings import Settings
from virtualpod.core.spec import SpecError, VirtualPod, parse_virtualpod
from virtualpod.core.workload import KeyRef, SourceKind

IMAGE = "/srv/images/guest.qcow2"
ALLOWED = Settings(host_paths=HostPaths(allowed=("/srv/images",)))
TOKEN = KeyRef(SourceKind.SECRET, "creds", "token")


def app(name: str = "app", image: str = IMAGE, **fields: Any) -> dict[str, Any]:
    return {**container(name), "image": image, **fields}


def pod(*containers: dict[str, Any], **spec: Any) -> VirtualPod:
    return parse_virtualpod(virtualpod(*containers, **spec))


@pytest.mark.parametrize(
    ("field", "value", "path", "message"),
    [
        ("command", "sh -c x", "command", "list of strings"),
        ("args", [1], "args", "list of strings"),
        ("env", [{"name": "A=B", "value": "x"}], "env[0].name", "valid environment variable"),
        ("env", [{"name": "A", "value": "x", "valueFrom": {}}], "env[0]", "not both"),
        (
            "env",
            [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}],
            "env[0].valueFrom",
            "exactly one of secretKeyRef, configMapKeyRef",
        ),
        (
            "env",
            [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "Bad_Name", "key": "k"}}}],
            "env[0].valueFrom.secretKeyRef.name",
            "DNS-1123 subdomain",
        ),
        ("ports", [{"containerPort": 0}], "ports[0].containerPort", "between 1 and 65535"),
        ("ports", [{"containerPort": 80, "hostPort": 70000}], "ports[0].hostPort", "between"),
        ("ports", [{"containerPort": 80, "protocol": "SCTP"}], "ports[0].protocol", "TCP or UDP"),
    ],
)
def test_bad_process_fields_name_the_field(field: str, value: Any, path: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        pod(app(**{field: value}))
    assert any(
        e.path == f"spec.containers[0].{path}" and message in e.message for e in caught.value.errors
    ), caught.value


def test_only_the_first_containers_image_is_the_disk_and_oci_names_are_not() -> None:
    assert present(pod(app(), app("side", image="https://x.example/y.img")).image).location == IMAGE
    assert pod(app(image="nginx:1.27")).image is None


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ({"boot": {"disk": {"path": "/srv/d.qcow2"}}}, "spec.boot.disk"),
        ({"network": "a/b"}, "spec.network"),
        ({"cloudInit": {"userData": "x" * 70000}}, "spec.cloudInit.userData"),
        ({"cloudInit": {"metaData": "x"}}, "spec.cloudInit.metaData"),
    ],
)
def test_workload_spec_conflicts_and_limits(spec: dict[str, Any], path: str) -> None:
    with pytest.raises(SpecError) as caught:
        pod(app(), **spec)
    assert path in {e.path for e in caught.value.errors}


def test_user_data_runs_init_containers_in_order_then_apps_side_by_side() -> None:
    vp = pod(
        app(
            command=["/bin/sh", "-c"],
            args=["echo $GREETING > /srv/x"],
            env=[
                {"name": "GREETING", "value": 'it\'s "quoted" $HOME'},
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
            ],
        ),
        app("idle"),
        init=(app("setup", command=["mkdir", "-p", "/srv"]),),
    )
    script = render_user_data(vp, {TOKEN: "s3cr3t; rm -rf /"})
    lines = script.splitlines()
    assert lines[0] == "#!/bin/sh"
    assert lines.index("( exec mkdir -p /srv ) || exit $?") < lines.index("wait")
    app_line = next(line for line in lines if "GREETING" in line)
    assert app_line.endswith(" &")
    assert "idle" not in script.replace("# container idle", "")  # no command: runs nothing
    # the shell gives back exactly the values, whatever they contain
    env = subprocess.run(
        ["sh", "-c", app_line.removesuffix(" &").replace("exec /bin/sh -c", "exec env; :")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert 'GREETING=it\'s "quoted" $HOME' in env.splitlines()
    assert "TOKEN=s3cr3t; rm -rf /" in env.splitlines()
    assert shlex.split(app_line.split("exec ", 1)[1].removesuffix(" ) &")) == [
        "/bin/sh",
        "-c",
        "echo $GREETING > /srv/x",
    ]


def test_env_from_a_missing_key_fails_unless_optional() -> None:
    ref = {"secretKeyRef": {"name": "creds", "key": "token"}}
    vp = pod(app(command=["true"], env=[{"name": "T", "valueFrom": ref}]))
    assert key_refs(vp) == (TOKEN,)
    with pytest.raises(MissingKey, match="Secret 'creds' has no key 'token'"):
        render_user_data(vp, {TOKEN: None})
    optional = pod(
        app(
            command=["true"],
            env=[
                {
                    "name": "T",
                    "valueFrom": {"secretKeyRef": {**ref["secretKeyRef"], "optional": True}},
                }
            ],
        )
    )
    assert "export T" not in render_user_data(optional, {})


def test_meta_data_and_user_override_and_seed_iso_round_trip() -> None:
    vp = pod(app(command=["true"]), name="web", cloudInit={"userData": "#cloud-config\n{}\n"})
    files = seed_files(vp, "8d0c-uid", {})
    assert yaml.safe_load(files.meta_data) == {"instance-id": "8d0c-uid", "local-hostname": "web"}
    assert files.user_data == "#cloud-config\n{}\n"
    iso = build_seed_iso(files)
    assert iso[0x8001:0x8006] == b"CD001"
    assert iso[0x8028 : 0x8028 + 6] == b"cidata"
    assert read_seed_iso(iso) == {"meta-data": files.meta_data, "user-data": files.user_data}
    assert render_meta_data(vp, 'a"b') == 'instance-id: "a\\"b"\nlocal-hostname: "web"\n'


def rendered(
    manifest: dict[str, Any], settings: Settings | None = None
) -> tuple[VMPlan, ET.Element]:
    plan = plan_virtualpod(manifest, settings or ALLOWED)
    return plan, ET.fromstring(plan.domain_xml)


def test_domain_gets_overlay_seed_and_nic_only_with_an_image() -> None:
    ports = [{"containerPort": 80, "hostPort": 18080}, {"containerPort": 9000}]
    manifest = virtualpod(app(ports=ports), network="isolated")
    manifest["metadata"]["uid"] = "2b7b3c8e-8f0f-4c61-9a8b-5a1b0e3c9d11"
    plan, root = rendered(manifest)
    disks = root.findall("devices/disk")
    assert [
        (present(d.find("source")).get("pool"), present(d.find("source")).get("volume"))
        for d in disks
    ] == [
        ("virtualpod-volumes", f"{plan.uuid}-root.qcow2"),
        ("virtualpod-volumes", f"{plan.uuid}-cidata.iso"),
    ]
    assert [present(d.find("target")).get("dev") for d in disks] == ["vda", "vdb"]
    assert disks[1].find("readonly") is not None
    assert disks[0].find("readonly") is None
    nic = present(root.find("devices/interface"))
    assert (nic.get("type"), present(nic.find("source")).get("network")) == ("network", "isolated")
    assert present(nic.find("mac")).get("address") == mac_address(plan.uuid)
    assert present(nic.find("model")).get("type") == "virtio"
    assert [p.host_port for p in present(plan.workload).host_ports] == [18080]
    _, plain = rendered(virtualpod(container()))
    assert plain.find("devices/disk") is None
    assert plain.find("devices/interface") is None


def test_network_from_settings_and_user_mode_needs_no_libvirt_network() -> None:
    _, root = rendered(virtualpod(app()), replace(ALLOWED, network="user"))
    nic = present(root.find("devices/interface"))
    assert nic.get("type") == "user"
    assert nic.find("source") is None
    _, default = rendered(virtualpod(app()))
    assert present(default.find("devices/interface/source")).get("network") == "default"


def test_ephemeral_storage_reaches_the_plan() -> None:
    limits = {"cpu": "1", "memory": "128Mi", "ephemeral-storage": "3Gi"}
    plan, _ = rendered(virtualpod({**app(), "resources": {"limits": limits}}))
    workload = present(plan.workload)
    assert (workload.storage_limit_bytes, workload.storage_request_bytes) == (
        3 * 1024**3,
        3 * 1024**3,
    )


@pytest.mark.parametrize("network", ["default", "user"])
def test_workload_domains_define_on_the_test_driver(network: str) -> None:
    conn = libvirt.open("test:///default")
    try:
        manifest = virtualpod(app(), name=f"define-{network}")
        plan = plan_virtualpod(manifest, replace(ALLOWED, network=network))
        domain = conn.defineXML(plan.domain_xml)
        try:
            echoed = ET.fromstring(domain.XMLDesc())
            assert len(echoed.findall("devices/disk")) == 2
            assert present(echoed.find("devices/interface")).get("type") == (
                "user" if network == "user" else "network"
            )
        finally:
            domain.undefine()
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("image", "allowed", "why"),
    [
        (IMAGE, (), "hostPaths.allowed is empty"),
        ("/etc/shadow", ("/srv/images",), "not inside a directory of hostPaths.allowed"),
        ("file:///srv/images/../../etc/shadow", ("/srv/images",), "normalized"),
    ],
)
def test_a_host_path_image_needs_the_admins_allowed_directory(
    image: str, allowed: tuple[str, ...], why: str
) -> None:
    settings = Settings(host_paths=HostPaths(allowed=allowed))
    with pytest.raises(SpecError) as caught:
        plan_virtualpod(virtualpod(app(image=image)), settings)
    assert [e.path for e in caught.value.errors] == ["spec.containers[0].image"]
    assert why in str(caught.value)
    url = virtualpod(app(image="https://images.example.com/guest.qcow2"))
    assert plan_virtualpod(url, settings).workload is not None  # downloads need no opt-in

"""Host paths by name (no filesystem): settings, `plan`'s refusal, and where the operator's
own files (console log, save image, volumes, base images) land whatever a tenant names
their VirtualPod."""

from __future__ import annotations

import posixpath
import string
import textwrap
import uuid as uuidlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.unit.manifests import container, virtualpod
from virtualpod.cli import main
from virtualpod.core.host_paths import HostPaths, is_remote_uri, lexical_refusal
from virtualpod.core.image import ImageKind, ImageRef, image_file_name
from virtualpod.core.plan import plan_virtualpod
from virtualpod.core.settings import Settings, SettingsError, settings_from_mapping
from virtualpod.core.spec import SpecError, parse_virtualpod
from virtualpod.core.storage import volumes_of

ALLOWED = ("/srv/images", "/var/lib/virtualpod/guest")

LEXICAL: dict[str, tuple[str, tuple[str, ...], str | None]] = {
    "file in an allowed directory": ("/srv/images/a.qcow2", ALLOWED, None),
    "file deeper in an allowed directory": ("/srv/images/team/a.qcow2", ALLOWED, None),
    "empty allowed list": ("/srv/images/a.qcow2", (), "hostPaths.allowed is empty"),
    "outside every allowed directory": ("/etc/shadow", ALLOWED, "not inside a directory"),
    "'..' climbing out": ("/srv/images/../../etc/shadow", ALLOWED, "normalized"),
    "the allowed directory itself": ("/srv/images", ALLOWED, "not inside a directory"),
    "name sharing the prefix": ("/srv/images2/a.qcow2", ALLOWED, "not inside a directory"),
    "/proc/self/...": ("/proc/self/root/etc/shadow", ALLOWED, "not inside a directory"),
    "host block device": ("/dev/vda", ALLOWED, "not inside a directory"),
}


@pytest.mark.parametrize("case", LEXICAL)
def test_path_rule_by_name(case: str) -> None:
    path, allowed, refused = LEXICAL[case]
    reason = lexical_refusal(path, allowed)
    if refused is None:
        assert reason is None
    else:
        assert reason is not None
        assert refused in reason


BAD_DIRECTORIES: dict[str, tuple[object, str]] = {
    "relative": ("images", "must be an absolute path"),
    "not a string": (7, "must be an absolute path"),
    "the root": ("/", "every file of the host"),
    "'..' inside": ("/srv/../etc", "normalized"),
    "double slash": ("/srv//images", "normalized"),
    "/proc": ("/proc", "inside /proc"),
    "under /sys": ("/sys/firmware", "inside /sys"),
    "under /dev": ("/dev/disk/by-id", "inside /dev"),
}


@pytest.mark.parametrize("case", BAD_DIRECTORIES)
def test_settings_refuse_an_allowed_directory_that_cannot_be_safe(case: str) -> None:
    directory, message = BAD_DIRECTORIES[case]
    with pytest.raises(SettingsError, match=r"hostPaths\.allowed\[0\]") as error:
        settings_from_mapping({"hostPaths": {"allowed": [directory]}})
    assert message in str(error.value)


def test_settings_host_paths_default_to_none_allowed_and_read_only() -> None:
    assert Settings().host_paths == HostPaths(allowed=(), read_only=True)
    settings = settings_from_mapping(
        {"hostPaths": {"allowed": ["/srv/images/", "/opt/vm"], "readOnly": False}}
    )
    assert settings.host_paths == HostPaths(allowed=("/srv/images", "/opt/vm"), read_only=False)
    with pytest.raises(SettingsError, match="must be a list"):
        settings_from_mapping({"hostPaths": {"allowed": "/srv/images"}})
    with pytest.raises(SettingsError, match="unknown key"):
        settings_from_mapping({"hostPaths": {"allow": ["/srv/images"]}})


@pytest.mark.parametrize(
    ("uri", "remote"),
    [
        ("qemu:///system", False),
        ("test:///default", False),
        ("qemu+unix:///system?socket=/run/libvirt/libvirt-sock", False),
        ("qemu+ssh://root@elsewhere/system", True),
        ("qemu+tcp://10.0.0.1/system", True),
    ],
)
def test_remote_libvirt_uris_are_recognised(uri: str, remote: bool) -> None:
    assert is_remote_uri(uri) is remote


def test_default_settings_refuse_the_host_files_of_the_issue() -> None:
    for boot, fields in (
        ({"disk": {"path": "/etc/shadow", "format": "raw"}}, ["spec.boot.disk.path"]),
        ({"disk": {"path": "/dev/vda", "format": "raw"}}, ["spec.boot.disk.path"]),
        (
            {
                "kernel": {
                    "path": "/boot/vmlinuz",
                    "initrd": "/var/lib/kubelet/pki/kubelet-client-current.pem",
                }
            },
            ["spec.boot.kernel.path", "spec.boot.kernel.initrd"],
        ),
    ):
        with pytest.raises(SpecError) as refused:
            plan_virtualpod(virtualpod(container(), boot=boot), Settings())
        assert [error.path for error in refused.value.errors] == fields


@pytest.mark.parametrize("image", ["/etc/shadow", "file:///dev/vda", "/srv/images/../../etc/x"])
def test_a_host_path_image_is_a_host_file_too(image: str) -> None:
    manifest = virtualpod({**container(), "image": image})
    allowed = Settings(host_paths=HostPaths(allowed=ALLOWED))
    for settings in (Settings(), allowed):
        with pytest.raises(SpecError) as refused:
            plan_virtualpod(manifest, settings)
        assert [error.path for error in refused.value.errors] == ["spec.containers[0].image"]


def test_images_from_an_allowed_directory_or_a_registry_are_planned() -> None:
    allowed = Settings(host_paths=HostPaths(allowed=ALLOWED))
    for image in ("/srv/images/debian.qcow2", "file:///srv/images/debian.qcow2"):
        plan = plan_virtualpod(virtualpod({**container(), "image": image}), allowed)
        assert plan.workload is not None
        assert plan.workload.image.location == "/srv/images/debian.qcow2"
    for image in ("https://example.org/debian.qcow2", "nginx:1.27"):
        plan_virtualpod(virtualpod({**container(), "image": image}), Settings())


def test_plan_says_when_the_settings_refuse_a_path_and_that_it_checks_names_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifests = tmp_path / "vms.yaml"
    manifests.write_text(
        textwrap.dedent(
            """\
            apiVersion: virtualpod.dev/v1alpha1
            kind: VirtualPod
            metadata: {name: thief}
            spec:
              boot: {disk: {path: /etc/shadow, format: raw}}
              containers: [{name: app, image: busybox}]
            ---
            apiVersion: virtualpod.dev/v1alpha1
            kind: VirtualPod
            metadata: {name: guest}
            spec:
              boot: {disk: {path: /srv/images/guest.qcow2}}
              containers: [{name: app, image: busybox}]
            """
        )
    )
    config = tmp_path / "settings.yaml"
    config.write_text("hostPaths: {allowed: [/srv/images]}\n")
    assert main(["plan", "-f", str(manifests), "--config", str(config)]) == 1
    captured = capsys.readouterr()
    assert " guest " in captured.out
    assert "thief" not in captured.out
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "VirtualPod default/thief: spec.boot.disk.path: '/etc/shadow' refused" in errors[0]
    assert "hostPaths.allowed (/srv/images)" in errors[0]
    notes = [line for line in captured.err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1
    assert "default/guest: spec.boot.disk.path" in notes[0]
    assert "by name only" in notes[0]


# ---------------------------------------------- the operator's own files, any name

DNS_LABEL = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")


@hypothesis_settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    namespace=DNS_LABEL,
    name=DNS_LABEL,
    uid=st.one_of(st.none(), st.uuids().map(str), st.text()),
    log_dir=st.sampled_from(["/var/log/vp", "/l/"]),
)
def test_operator_files_land_directly_in_the_operators_directories(
    namespace: str, name: str, uid: str | None, log_dir: str
) -> None:
    settings = Settings(console_log_dir=log_dir)
    manifest = virtualpod(container(), name=name, namespace=namespace)
    manifest["metadata"]["uid"] = uid
    plan = plan_virtualpod(manifest, settings)
    log = plan.domain.console_log
    assert log is not None
    assert posixpath.normpath(log) == log
    assert posixpath.dirname(log) == log_dir.rstrip("/")
    # libvirt keeps save images as <save dir>/<domain name>.save: one plain file name too
    assert "/" not in plan.domain_name
    assert plan.domain_name not in (".", "..")
    # volumes in the pools of storage.volumeDir: named by the domain's UUID
    assert str(uuidlib.UUID(plan.uuid)) == plan.uuid
    for volume in volumes_of(plan.uuid):
        assert "/" not in volume
        assert volume.startswith(plan.uuid)


@hypothesis_settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=string.printable, min_size=1).map(lambda tail: f"/srv/images/{tail}"))
def test_base_image_names_are_plain_file_names_whatever_the_source(location: str) -> None:
    name = image_file_name(ImageRef(ImageKind.PATH, location))
    assert "/" not in name
    assert name not in (".", "..")
    assert not name.startswith(".")


@hypothesis_settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=string.ascii_letters + string.digits + "./-_ \\", min_size=1))
def test_names_that_could_steer_a_path_are_refused(text: str) -> None:
    if not any(ch in text for ch in "./\\_ ") and text == text.lower():
        text += "/.."
    for field in ("name", "namespace"):
        metadata: dict[str, Any] = {field: text}
        with pytest.raises(SpecError, match=f"metadata.{field}"):
            parse_virtualpod(virtualpod(container(), **metadata))

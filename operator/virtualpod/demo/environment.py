"""What the demo runs on: this machine's libvirt, a cluster or the emulated API, and the
demo's own VirtualPods and settings. Each choice is said out loud."""

from __future__ import annotations

import argparse
import os
import uuid as uuidlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import yaml

from virtualpod.core.qos import QOSClass
from virtualpod.core.settings import Settings, load_settings
from virtualpod.core.spec import API_GROUP, API_VERSION
from virtualpod.demo.output import DemoError, say
from virtualpod.libvirt.hypervisor import Hypervisor, HypervisorError
from virtualpod.testing import KubeClient

QEMU_URI = "qemu:///system"
TEST_URI = "test:///default"
NAMESPACE = "vpod-demo"
PLURAL = "virtualpods"
MANIFESTS = ("besteffort.yaml", "burstable.yaml", "guaranteed.yaml")
DOMAIN_PREFIX = f"vpod_{NAMESPACE}_"
EMULATED = "using the in-process EMULATED Kubernetes API"
PROBE_TIMEOUT_S = 5.0


def demo_manifest_dir() -> Path:
    """manifests/demo of the source checkout this package runs from, else of the current
    directory (the container image keeps them in its working directory)."""
    here = Path(__file__).resolve()
    for parent in (*here.parents, Path.cwd()):
        candidate = parent / "manifests" / "demo"
        if (candidate / MANIFESTS[0]).is_file():
            return candidate
    raise DemoError("manifests/demo not found: run the demo from a source checkout")


# ------------------------------------------------------------------------ libvirt


async def _probe_libvirt(uri: str) -> None:
    hv = Hypervisor(uri, reconnect_timeout=2.0)
    try:
        await hv.connect()
        await hv.list_domains()
    finally:
        await hv.close()


async def choose_libvirt(requested: str | None, out: TextIO) -> str:
    """The URI to use: the requested one, else qemu:///system if it answers, else test."""
    if requested:
        await _probe_libvirt(requested)
        say(out, f"libvirt: {requested} (as requested)")
        return requested
    try:
        await _probe_libvirt(QEMU_URI)
    except HypervisorError as error:
        say(
            out,
            f"libvirt: {TEST_URI} -- libvirt's in-process TEST DRIVER, no real VMs "
            f"({QEMU_URI} does not answer: {error.message}; `make demo` starts libvirtd "
            "where the machine allows it)",
        )
        return TEST_URI
    say(out, f"libvirt: {QEMU_URI} -- real libvirtd + QEMU")
    return QEMU_URI


# --------------------------------------------------------------------- Kubernetes


@dataclass
class Cluster:
    """A real cluster: its client, and the kubeconfig Kopf logs in with."""

    client: KubeClient
    kubeconfig: str


def _kubeconfig_path(requested: str | None) -> str | None:
    if requested:
        return requested
    env = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    if env:
        return env
    default = Path.home() / ".kube" / "config"
    return str(default) if default.is_file() else None


async def _crd_status(path: str) -> tuple[KubeClient, int]:
    client = KubeClient.from_kubeconfig(path)
    try:
        status, _ = await client.request(
            "GET", f"/apis/{API_GROUP}/{API_VERSION}", timeout=PROBE_TIMEOUT_S
        )
    except BaseException:
        await client.close()
        raise
    return client, status


async def choose_cluster(requested: str | None, out: TextIO) -> Cluster | None:
    """A reachable cluster with the CRD, or None for the emulator. Explicit + broken = error."""
    path = _kubeconfig_path(requested)
    if path is None:
        say(out, f"kubernetes: no kubeconfig -- {EMULATED}")
        return None
    try:
        client, status = await _crd_status(path)
    except Exception as error:  # any failure to reach it is "not reachable"
        if requested:
            raise DemoError(f"cannot reach the cluster of {path}: {error}") from error
        say(out, f"kubernetes: the cluster of {path} is not reachable ({error}) -- {EMULATED}")
        return None
    if status != 200:
        await client.close()
        message = (
            f"the cluster of {path} has no {PLURAL}.{API_GROUP} CRD "
            "(install it: kubectl apply -k crds/)"
        )
        if requested:
            raise DemoError(message)
        say(out, f"kubernetes: {message} -- {EMULATED}")
        return None
    say(out, f"kubernetes: the cluster of {path} ({client.server})")
    return Cluster(client, path)


# -------------------------------------------------------------- what the demo runs


@dataclass
class DemoVM:
    """One of the demo's VirtualPods; QoS class and UUID once the operator reported them."""

    name: str
    manifest: dict[str, Any]
    qos: QOSClass | None = None
    uuid: str | None = None


def load_demo_vms(directory: Path, host_name: str) -> list[DemoVM]:
    """The demo's VirtualPods, in its namespace, bound to the demo's operator."""
    vms = []
    for filename in MANIFESTS:
        manifest = yaml.safe_load((directory / filename).read_text(encoding="utf-8"))
        manifest["metadata"]["namespace"] = NAMESPACE
        manifest["spec"]["nodeName"] = host_name
        vms.append(DemoVM(manifest["metadata"]["name"], manifest))
    return vms


def demo_settings(args: argparse.Namespace, directory: Path, uri: str) -> Settings:
    """The demo's settings file (or --config), on `uri`, under a host name of its own."""
    base = load_settings(args.config or directory / "settings.yaml")
    domain_type = base.domain_type
    if uri.startswith("qemu") and domain_type == "kvm" and not os.access("/dev/kvm", os.W_OK):
        domain_type = "qemu"
    host = f"virtualpod-demo-{uuidlib.uuid4().hex[:8]}"
    return replace(base, libvirt_uri=uri, host_name=host, domain_type=domain_type)

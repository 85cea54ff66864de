"""The workload of a VirtualPod on this host: its disks before the VM exists, its address
and port forwards while it runs, its volumes after it is gone.

Called from the reconcile and delete handlers; registers one timer that mirrors the
running VM's addresses into `status.podIP` / `status.vm.addresses`. A failure to prepare
(missing image, failed download, checksum mismatch, full pool, missing network, missing
Secret key) is `Ready=False` with that reason, a Warning Event and a retry after a
growing delay; whatever this attempt created is removed again, so nothing is left
half-made. Secret and ConfigMap values are read only to build the seed and are never
logged, written to status, Events or the domain XML.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
from kubernetes import client

from virtualpod.core.cloudinit import MissingKey, key_refs, seed_files
from virtualpod.core.plan import VMPlan, Workload, plan_virtualpod
from virtualpod.core.quantity import format_bytes
from virtualpod.core.seed import build_seed_iso
from virtualpod.core.settings import Settings
from virtualpod.core.spec import SpecError
from virtualpod.core.status import set_condition
from virtualpod.core.storage import DiskTooSmall, overlay_size
from virtualpod.core.workload import KeyRef, SourceKind
from virtualpod.kube.poster import EventPoster, object_ref
from virtualpod.libvirt.hypervisor import Hypervisor, HypervisorError, Unsupported
from virtualpod.libvirt.images import local_image
from virtualpod.libvirt.network import NetworkMissing, addresses, check_network, ensure_forwards
from virtualpod.libvirt.storage import Storage, StorageError

log = logging.getLogger(__name__)

#: Seconds before the next attempt after a failed preparation, by attempt (last repeats).
PREPARE_BACKOFF_SECONDS = (2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
#: How often a running workload VM's addresses and forwards are checked.
ADDRESS_INTERVAL_SECONDS = 2.0
REQUEST_TIMEOUT_SECONDS = 10.0


class WorkloadFailed(Exception):  # noqa: N818 (names what happened)
    """Preparing the VM's disks or network failed; `reason` is the condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def prepare_backoff(failures: int) -> float:
    return PREPARE_BACKOFF_SECONDS[min(max(failures - 1, 0), len(PREPARE_BACKOFF_SECONDS) - 1)]


@dataclass
class Workloads:
    """Storage and bookkeeping of the workload VMs on this host."""

    hv: Hypervisor
    settings: Settings
    core: Any = None  # kubernetes CoreV1Api, for Secrets and ConfigMaps
    failures: dict[str, int] = field(default_factory=dict)
    storage: Storage = field(init=False)
    _pools_ready: bool = False

    def __post_init__(self) -> None:
        self.storage = Storage(self.hv, self.settings.storage)

    async def prepare(self, plan: VMPlan) -> None:
        """Network checked, overlay and seed volumes in place; raises WorkloadFailed."""
        workload = plan.workload
        if workload is None:
            return
        storage = self.storage
        created: list[str] = []
        try:
            await check_network(self.hv, workload.nic)
            if not self._pools_ready:
                await storage.ensure_pools()
                self._pools_ready = True
            if not await storage.has_volume(workload.root_volume):
                created.append(workload.root_volume)
                await storage.root_disk(
                    workload.image,
                    lambda: local_image(
                        workload.image,
                        self.settings.storage.download_timeout_s,
                        self.settings.host_paths.allowed,
                    ),
                    workload.root_volume,
                    lambda info: overlay_size(
                        workload.storage_limit_bytes,
                        workload.storage_request_bytes,
                        info.virtual_size_bytes,
                    ),
                )
            if not await storage.has_volume(workload.seed_volume):
                resolved = await self.resolve(plan)
                files = seed_files(plan.pod, plan.pod.uid or plan.uuid, resolved)
                await storage.upload_seed(workload.seed_volume, build_seed_iso(files))
        except (StorageError, NetworkMissing, DiskTooSmall, MissingKey, HypervisorError) as error:
            if created:
                await self._remove_quietly(plan.uuid)
            raise WorkloadFailed(_reason(error), str(error)) from error
        self.failures.pop(plan.uuid, None)

    async def _remove_quietly(self, uuid: str) -> None:
        try:
            await self.storage.delete_vm(uuid)
        except HypervisorError as error:
            log.warning(f"cannot remove the volumes of {uuid}: {error}")

    async def resolve(self, plan: VMPlan) -> dict[KeyRef, str | None]:
        """Values of the Secret/ConfigMap keys the containers' env refers to."""
        refs = key_refs(plan.pod)
        if refs and self.core is None:
            raise MissingKey("-", "-", refs[0])
        return {ref: await self._read(plan.namespace, ref) for ref in refs}

    async def _read(self, namespace: str, ref: KeyRef) -> str | None:
        read = (
            self.core.read_namespaced_secret
            if ref.kind is SourceKind.SECRET
            else self.core.read_namespaced_config_map
        )
        try:
            obj = await asyncio.to_thread(
                read, ref.name, namespace, _request_timeout=REQUEST_TIMEOUT_SECONDS
            )
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise WorkloadFailed(
                "SecretUnreadable", f"cannot read {ref.kind} {namespace}/{ref.name}: {error.reason}"
            ) from error
        return _key_value(obj, ref)

    async def discard(self, uuid: str) -> None:
        """Remove what a failed first definition left (best effort, logged)."""
        await self._remove_quietly(uuid)

    async def delete(self, uuid: str) -> list[str]:
        self.failures.pop(uuid, None)
        return await self.storage.delete_vm(uuid)


def _key_value(obj: Any, ref: KeyRef) -> str | None:
    if ref.kind is SourceKind.SECRET:
        encoded = (obj.data or {}).get(ref.key)
        if encoded is None:
            return (getattr(obj, "string_data", None) or {}).get(ref.key)
        return base64.b64decode(encoded).decode("utf-8", errors="replace")
    value = (obj.data or {}).get(ref.key)
    return None if value is None else str(value)


def _reason(error: Exception) -> str:
    if isinstance(error, MissingKey):
        return "SecretKeyMissing" if error.ref.kind is SourceKind.SECRET else "ConfigMapKeyMissing"
    if isinstance(error, DiskTooSmall):
        return "DiskTooSmall"
    return str(getattr(error, "reason", "StorageFailed"))


def _event(ctx: Any, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    """An Event on the VirtualPod, through the agent's poster (none before startup)."""
    events: EventPoster | None = getattr(ctx, "events", None)
    if events is not None:
        events.post(object_ref(body), type_, reason, message)


def _workloads(ctx: Any) -> Workloads:
    if ctx.workloads is None:
        raise kopf.TemporaryError("libvirt is not connected yet", delay=1)
    return cast(Workloads, ctx.workloads)


async def prepare_workload(
    ctx: Any,
    body: Mapping[str, Any],
    patch: MutableMapping[str, Any],
    conditions: list[dict[str, Any]],
    plan: VMPlan,
) -> None:
    """The image's overlay and seed (and the NIC's network) before the domain is defined."""
    workloads = _workloads(ctx)
    try:
        await workloads.prepare(plan)
    except WorkloadFailed as error:
        raise workload_failed(ctx, workloads, body, patch, conditions, plan, error) from error


async def discard_workload(ctx: Any, plan: VMPlan) -> None:
    """Remove the volumes a failed first definition left."""
    if plan.workload is not None:
        await _workloads(ctx).discard(plan.uuid)


async def delete_volumes(ctx: Any, body: Mapping[str, Any], uuid: str) -> None:
    """A deleted VirtualPod's volumes (and bases no other VM uses), with an Event."""
    try:
        volumes = await _workloads(ctx).delete(uuid)
    except HypervisorError as error:
        _event(ctx, body, "Warning", "Failed", f"cannot delete volumes: {error}")
        raise kopf.TemporaryError(f"cannot delete volumes: {error}", delay=5) from error
    if volumes:
        _event(ctx, body, "Normal", "VolumesDeleted", f"deleted volume(s) {', '.join(volumes)}")


def workload_failed(
    ctx: Any,
    workloads: Workloads,
    body: Mapping[str, Any],
    patch: MutableMapping[str, Any],
    conditions: list[dict[str, Any]],
    plan: VMPlan,
    error: WorkloadFailed,
) -> kopf.TemporaryError:
    """Ready=False + Warning Event (when new) for a failed preparation; the retry to raise."""
    count = workloads.failures[plan.uuid] = workloads.failures.get(plan.uuid, 0) + 1
    delay = prepare_backoff(count)
    generation = body.get("metadata", {}).get("generation")
    message = f"{error}; retrying in {delay:g}s"
    conditions = set_condition(conditions, "Ready", False, error.reason, message, generation)
    status = body.get("status") or {}
    patch.setdefault("status", {}).update(
        phase="Pending", reason=error.reason, message=message, conditions=conditions
    )
    if status.get("reason") != error.reason:
        _event(ctx, body, "Warning", error.reason, str(error))
    return kopf.TemporaryError(f"{error.reason}: {error}", delay=delay)


# ------------------------------------------------------------------ address mirror


def runs_workload(body: Mapping[str, Any]) -> bool:
    """A running VM whose first container names a disk image (the timer's filter)."""
    spec, status = body.get("spec"), body.get("status")
    containers = spec.get("containers") if isinstance(spec, Mapping) else None
    first = containers[0] if isinstance(containers, list) and containers else None
    image = first.get("image") if isinstance(first, Mapping) else None
    return (
        isinstance(image, str)
        and image.startswith(("/", "file://", "http://", "https://"))
        and isinstance(status, Mapping)
        and status.get("phase") == "Running"
    )


def _plan(body: Mapping[str, Any], settings: Settings) -> VMPlan | None:
    try:
        return plan_virtualpod(dict(body), settings)
    except SpecError:
        return None


async def observe_network(
    hv: Hypervisor, settings: Settings, uuid: str, workload: Workload
) -> dict[str, Any]:
    """The status fields of a running workload VM's network: podIP, addresses, ports."""
    found = await addresses(hv, uuid, workload.nic)
    fields: dict[str, Any] = {"addresses": [address.status() for address in found]}
    if workload.nic.user_mode and workload.host_ports:
        with contextlib.suppress(Unsupported):  # no QEMU monitor (test driver)
            fields["ports"] = await ensure_forwards(
                hv, uuid, settings.host_port_address, workload.host_ports
            )
    return fields


async def mirror_addresses(
    body: kopf.Body, status: kopf.Status, patch: kopf.Patch, memo: Any, logger: Any, **_: Any
) -> None:
    """status.podIP and status.vm.addresses/ports of a running workload VM, when they change."""
    ctx = memo.ctx
    if ctx.hypervisor is None or getattr(ctx, "workloads", None) is None:
        return
    plan = _plan(body, ctx.settings)
    if plan is None or plan.workload is None:
        return
    vm = status.get("vm") or {}
    try:
        fields = await observe_network(ctx.hypervisor, ctx.settings, plan.uuid, plan.workload)
        volume = (
            None
            if vm.get("disk")
            else await ctx.workloads.storage.volume(plan.workload.root_volume)
        )
    except HypervisorError as error:
        logger.debug(f"network and disk of {plan.domain_name} not read: {error}")
        return
    ips = fields["addresses"]
    pod_ip = ips[0]["ip"] if ips else None
    changes: dict[str, Any] = {}
    if ips and (vm.get("addresses") != ips or status.get("podIP") != pod_ip):
        changes["addresses"] = ips
    if "ports" in fields and vm.get("ports") != fields["ports"]:
        changes["ports"] = fields["ports"]
    if volume is not None:
        changes["disk"] = overlay_status(volume.capacity_bytes, plan)
    if changes:
        patch.setdefault("status", {})["vm"] = changes
        if "addresses" in changes:
            patch["status"]["podIP"] = pod_ip
            _event(ctx, body, "Normal", "AddressAssigned", f"VM address {pod_ip}")


def overlay_status(capacity_bytes: int, plan: VMPlan) -> dict[str, Any]:
    workload = plan.workload
    assert workload is not None
    return {
        "image": workload.image.location,
        "volume": workload.root_volume,
        "size": format_bytes(capacity_bytes),
    }

"""VirtualPod manifest -> typed, validated, defaulted model.

The manifest is pod-shaped on purpose: containers carry ordinary
`resources.requests/limits`. Validation collects every problem at once and names
each field by its path, so `kubectl describe` and `virtualpod plan` can say exactly
what to fix. Defaulting follows Kubernetes pod defaulting, which the API server does
not do for custom resources: a request left unset takes the limit's value.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from virtualpod.core.image import ImageError, ImageRef, parse_image
from virtualpod.core.quantity import (
    QuantityError,
    format_bytes,
    format_cpu,
    parse_bytes,
    parse_cpu_millis,
    shown,
)
from virtualpod.core.workload import Process, parse_process

API_GROUP = "virtualpod.dev"
API_VERSION = "v1alpha1"
KIND = "VirtualPod"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_PATH_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f]")
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1

SUPPORTED_RESOURCES = ("cpu", "memory", "ephemeral-storage")
#: Longest `spec.cloudInit.userData` (cloud-init reads it from a small ISO seed).
MAX_USER_DATA = 64 * 1024
#: PodSpec fields copied onto the companion Pod as they are (the API server validates them
#: there); here only their outer shape is checked.
PLACEMENT_FIELDS = ("nodeSelector", "affinity", "tolerations")


class SuspendMode(StrEnum):
    """How a VM is suspended: `Save` frees its RAM (managed save), `Pause` keeps it."""

    SAVE = "Save"
    PAUSE = "Pause"


class DiskFormat(StrEnum):
    QCOW2 = "qcow2"
    RAW = "raw"


@dataclass(frozen=True)
class FieldError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class SpecError(ValueError):
    """Every validation problem of one object, each with its field path."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = tuple(errors)
        super().__init__("; ".join(str(error) for error in self.errors))


@dataclass(frozen=True)
class Resources:
    """cpu/memory amounts of a ResourceList; None means the key is not set."""

    cpu_millis: int | None = None
    memory_bytes: int | None = None
    #: Local ephemeral storage: the size of the VM's root disk overlay.
    ephemeral_storage_bytes: int | None = None


@dataclass(frozen=True)
class Container:
    name: str
    requests: Resources = Resources()
    limits: Resources = Resources()
    image: str | None = None
    process: Process = field(default_factory=Process)


@dataclass(frozen=True)
class DiskBoot:
    path: str
    format: DiskFormat = DiskFormat.QCOW2


@dataclass(frozen=True)
class KernelBoot:
    path: str
    initrd: str | None = None
    cmdline: str | None = None


@dataclass(frozen=True)
class VirtualPod:
    name: str
    namespace: str
    containers: tuple[Container, ...]
    init_containers: tuple[Container, ...] = ()
    uid: str | None = None
    priority: int | None = None
    priority_class_name: str | None = None
    suspend_mode: SuspendMode | None = None
    node_name: str | None = None
    boot: DiskBoot | KernelBoot | None = None
    generation: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    #: The VM disk image of the first app container, when it names one.
    image: ImageRef | None = None
    #: libvirt network for the VM's NIC; None: the operator's `network` setting.
    network: str | None = None
    #: `spec.cloudInit.userData`: the user's own user-data instead of the rendered one.
    user_data: str | None = None

    @property
    def all_containers(self) -> tuple[Container, ...]:
        return self.init_containers + self.containers


class _Errors:
    """Collects field errors while a manifest is walked."""

    def __init__(self) -> None:
        self.items: list[FieldError] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(FieldError(path, message))

    def mapping(self, value: object, path: str) -> Mapping[str, object]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.add(path, f"must be an object, not {type(value).__name__}")
            return {}
        return value

    def unknown_fields(self, value: Mapping[str, object], path: str, known: Sequence[str]) -> None:
        for key in value:
            if key not in known:
                self.add(f"{path}.{key}", f"unknown field (known: {', '.join(known)})")

    def string(self, value: object, path: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            self.add(path, f"must be a string, not {type(value).__name__}")
            return None
        return value

    def dns_label(self, value: object, path: str) -> str | None:
        text = self.string(value, path)
        if text is not None and (len(text) > 63 or not _DNS_LABEL.match(text)):
            self.add(
                path,
                f"{shown(text)} is not a DNS-1123 label: at most 63 lowercase letters, digits "
                "or '-', starting and ending with a letter or digit",
            )
            return None
        return text

    def dns_subdomain(self, value: object, path: str) -> str | None:
        text = self.string(value, path)
        if text is not None and (len(text) > 253 or not _DNS_SUBDOMAIN.match(text)):
            self.add(path, f"{shown(text)} is not a DNS-1123 subdomain")
            return None
        return text

    def host_path(self, value: object, path: str) -> str | None:
        text = self.string(value, path)
        if text is None:
            return None
        if not text.startswith("/") or _PATH_FORBIDDEN.search(text):
            self.add(path, f"{shown(text)} must be an absolute path without control characters")
            return None
        if posixpath.normpath(text) != text.rstrip("/") or ".." in text.split("/"):
            self.add(path, f"{shown(text)} must be a normalized path (no '..', '.' or '//')")
            return None
        return text


def parse_virtualpod(manifest: object) -> VirtualPod:
    """Validate and default a VirtualPod manifest; raise SpecError listing every problem."""
    errors = _Errors()
    obj = errors.mapping(manifest, "object")
    if obj.get("kind", KIND) != KIND:
        errors.add("kind", f"must be {KIND!r}")
    api_version = obj.get("apiVersion", f"{API_GROUP}/{API_VERSION}")
    if api_version != f"{API_GROUP}/{API_VERSION}":
        errors.add("apiVersion", f"must be '{API_GROUP}/{API_VERSION}', not {shown(api_version)}")
    metadata = errors.mapping(obj.get("metadata"), "metadata")
    name = errors.dns_label(metadata.get("name"), "metadata.name")
    if metadata.get("name") is None:
        errors.add("metadata.name", "is required")
    # null is unset, as the API server treats it (it prunes nulls before validation)
    namespace = errors.dns_label(metadata.get("namespace") or "default", "metadata.namespace")
    uid = errors.string(metadata.get("uid"), "metadata.uid")
    generation = metadata.get("generation")
    labels = metadata.get("labels") or {}

    spec = errors.mapping(obj.get("spec"), "spec")
    errors.unknown_fields(
        spec,
        "spec",
        (
            "containers",
            "initContainers",
            "priority",
            "priorityClassName",
            "suspendMode",
            "nodeName",
            "boot",
            "network",
            "cloudInit",
            *PLACEMENT_FIELDS,
        ),
    )
    containers = _parse_containers(spec.get("containers"), "spec.containers", errors)
    if not spec.get("containers"):
        errors.add("spec.containers", "must list at least one container")
    init_containers = _parse_containers(spec.get("initContainers"), "spec.initContainers", errors)
    _check_unique_names(containers, init_containers, errors)

    priority = spec.get("priority")
    if priority is not None and (
        isinstance(priority, bool)
        or not isinstance(priority, int)
        or not _INT32_MIN <= priority <= _INT32_MAX
    ):
        errors.add("spec.priority", f"{shown(priority)} must be a 32-bit integer")
        priority = None
    suspend_mode = _parse_suspend_mode(spec.get("suspendMode"), errors)
    boot = _parse_boot(spec.get("boot"), errors)
    priority_class_name = errors.dns_subdomain(
        spec.get("priorityClassName"), "spec.priorityClassName"
    )
    node_name = errors.dns_subdomain(spec.get("nodeName"), "spec.nodeName")
    image = _parse_image(containers, boot, errors)
    network = _parse_network(spec.get("network"), errors)
    user_data = _parse_cloud_init(spec.get("cloudInit"), errors)
    _check_placement(spec, errors)

    if errors.items or name is None or namespace is None:
        raise SpecError(errors.items)
    return VirtualPod(
        name=name,
        namespace=namespace,
        uid=uid,
        containers=tuple(containers),
        init_containers=tuple(init_containers),
        priority=priority,
        priority_class_name=priority_class_name,
        suspend_mode=suspend_mode,
        node_name=node_name,
        boot=boot,
        generation=generation if isinstance(generation, int) else None,
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {},
        image=image,
        network=network,
        user_data=user_data,
    )


def _check_placement(spec: Mapping[str, object], errors: _Errors) -> None:
    selector = errors.mapping(spec.get("nodeSelector"), "spec.nodeSelector")
    for key, value in selector.items():
        if not isinstance(value, str):
            errors.add(f"spec.nodeSelector.{key}", "must be a string")
    errors.mapping(spec.get("affinity"), "spec.affinity")
    tolerations = spec.get("tolerations")
    if tolerations is not None and (
        not isinstance(tolerations, list) or not all(isinstance(t, Mapping) for t in tolerations)
    ):
        errors.add("spec.tolerations", "must be a list of tolerations")


def _parse_containers(value: object, path: str, errors: _Errors) -> list[Container]:
    if value is None:
        return []
    if not isinstance(value, list):
        errors.add(path, "must be a list of containers")
        return []
    return [
        container
        for index, item in enumerate(value)
        if (container := _parse_container(item, f"{path}[{index}]", errors)) is not None
    ]


def _parse_container(value: object, path: str, errors: _Errors) -> Container | None:
    before = len(errors.items)
    item = errors.mapping(value, path)
    errors.unknown_fields(
        item, path, ("name", "image", "resources", "command", "args", "env", "ports")
    )
    if item.get("name") is None:
        errors.add(f"{path}.name", "is required")
    name = errors.dns_label(item.get("name"), f"{path}.name")
    image = errors.string(item.get("image"), f"{path}.image")
    resources = errors.mapping(item.get("resources"), f"{path}.resources")
    errors.unknown_fields(resources, f"{path}.resources", ("requests", "limits"))
    limits = _parse_resource_list(resources.get("limits"), f"{path}.resources.limits", errors)
    explicit = _parse_resource_list(resources.get("requests"), f"{path}.resources.requests", errors)
    requests = _default_requests(explicit, limits)
    _check_requests_within_limits(requests, limits, f"{path}.resources.requests", errors)
    process = parse_process(item, path, errors.add)
    if len(errors.items) > before or name is None:
        return None
    return Container(name=name, image=image, requests=requests, limits=limits, process=process)


STORAGE_KEY = "ephemeral-storage"


def _parse_resource_list(value: object, path: str, errors: _Errors) -> Resources:
    items = errors.mapping(value, path)
    for key in items:
        if key not in SUPPORTED_RESOURCES:
            errors.add(
                f"{path}.{key}",
                "unsupported resource: a VirtualPod takes cpu, memory and ephemeral-storage",
            )
    cpu, memory = items.get("cpu"), items.get("memory")
    try:
        cpu_millis = None if cpu is None else parse_cpu_millis(cpu, f"{path}.cpu")
    except QuantityError as error:
        errors.add(error.field, f"invalid quantity {shown(error.value)}: {error.reason}")
        cpu_millis = None
    try:
        memory_bytes = None if memory is None else parse_bytes(memory, f"{path}.memory")
    except QuantityError as error:
        errors.add(error.field, f"invalid quantity {shown(error.value)}: {error.reason}")
        memory_bytes = None
    storage_value = items.get(STORAGE_KEY)
    try:
        storage = (
            None if storage_value is None else parse_bytes(storage_value, f"{path}.{STORAGE_KEY}")
        )
    except QuantityError as error:
        errors.add(error.field, f"invalid quantity {shown(error.value)}: {error.reason}")
        storage = None
    return Resources(
        cpu_millis=cpu_millis, memory_bytes=memory_bytes, ephemeral_storage_bytes=storage
    )


def _default_requests(requests: Resources, limits: Resources) -> Resources:
    """Kubernetes pod defaulting: an unset request takes the limit's value."""
    return Resources(
        cpu_millis=limits.cpu_millis if requests.cpu_millis is None else requests.cpu_millis,
        memory_bytes=(
            limits.memory_bytes if requests.memory_bytes is None else requests.memory_bytes
        ),
        ephemeral_storage_bytes=(
            limits.ephemeral_storage_bytes
            if requests.ephemeral_storage_bytes is None
            else requests.ephemeral_storage_bytes
        ),
    )


def _check_requests_within_limits(
    requests: Resources, limits: Resources, path: str, errors: _Errors
) -> None:
    if (
        requests.cpu_millis is not None
        and limits.cpu_millis is not None
        and requests.cpu_millis > limits.cpu_millis
    ):
        errors.add(
            f"{path}.cpu",
            f"{format_cpu(requests.cpu_millis)} must be less than or equal to "
            f"cpu limit of {format_cpu(limits.cpu_millis)}",
        )
    if (
        requests.memory_bytes is not None
        and limits.memory_bytes is not None
        and requests.memory_bytes > limits.memory_bytes
    ):
        errors.add(
            f"{path}.memory",
            f"{format_bytes(requests.memory_bytes)} must be less than or equal to "
            f"memory limit of {format_bytes(limits.memory_bytes)}",
        )


def _check_unique_names(
    containers: Sequence[Container], init_containers: Sequence[Container], errors: _Errors
) -> None:
    seen: set[str] = set()
    for container in (*init_containers, *containers):
        if container.name in seen:
            errors.add("spec.containers", f"duplicate container name {container.name!r}")
        seen.add(container.name)


def _parse_suspend_mode(value: object, errors: _Errors) -> SuspendMode | None:
    if value is None:
        return None
    try:
        return SuspendMode(str(value))
    except ValueError:
        errors.add("spec.suspendMode", f"{shown(value)} must be one of: Save, Pause")
        return None


def _parse_boot(value: object, errors: _Errors) -> DiskBoot | KernelBoot | None:
    boot = errors.mapping(value, "spec.boot")
    errors.unknown_fields(boot, "spec.boot", ("disk", "kernel"))
    if boot.get("disk") is not None and boot.get("kernel") is not None:
        errors.add("spec.boot", "set either disk or kernel, not both")
        return None
    if boot.get("disk") is not None:
        disk = errors.mapping(boot["disk"], "spec.boot.disk")
        errors.unknown_fields(disk, "spec.boot.disk", ("path", "format"))
        path = errors.host_path(disk.get("path"), "spec.boot.disk.path")
        if disk.get("path") is None:
            errors.add("spec.boot.disk.path", "is required")
        try:
            disk_format = DiskFormat(str(disk.get("format") or DiskFormat.QCOW2))
        except ValueError:
            errors.add("spec.boot.disk.format", "must be one of: qcow2, raw")
            return None
        return DiskBoot(path=path, format=disk_format) if path else None
    if boot.get("kernel") is not None:
        kernel = errors.mapping(boot["kernel"], "spec.boot.kernel")
        errors.unknown_fields(kernel, "spec.boot.kernel", ("path", "initrd", "cmdline"))
        path = errors.host_path(kernel.get("path"), "spec.boot.kernel.path")
        if kernel.get("path") is None:
            errors.add("spec.boot.kernel.path", "is required")
        initrd = errors.host_path(kernel.get("initrd"), "spec.boot.kernel.initrd")
        cmdline = errors.string(kernel.get("cmdline"), "spec.boot.kernel.cmdline")
        if cmdline is not None and _PATH_FORBIDDEN.search(cmdline):
            errors.add("spec.boot.kernel.cmdline", "must not contain control characters")
        return KernelBoot(path=path, initrd=initrd, cmdline=cmdline) if path else None
    return None


def _parse_image(
    containers: Sequence[Container], boot: DiskBoot | KernelBoot | None, errors: _Errors
) -> ImageRef | None:
    """The first app container's image when it names a VM disk (path or URL)."""
    if not containers or not containers[0].image:
        return None
    try:
        image = parse_image(containers[0].image)
    except ImageError as error:
        errors.add("spec.containers[0].image", str(error))
        return None
    if image is not None and isinstance(boot, DiskBoot):
        errors.add(
            "spec.boot.disk",
            "the first container's image is already the VM's disk: drop spec.boot.disk "
            "(spec.boot.kernel may boot the image's root filesystem)",
        )
        return None
    return image


def _parse_network(value: object, errors: _Errors) -> str | None:
    text = errors.string(value, "spec.network")
    if text is not None and (
        not text or len(text) > 253 or "/" in text or _PATH_FORBIDDEN.search(text)
    ):
        errors.add("spec.network", f"{shown(text)} is not a libvirt network name")
        return None
    return text


def _parse_cloud_init(value: object, errors: _Errors) -> str | None:
    cloud_init = errors.mapping(value, "spec.cloudInit")
    errors.unknown_fields(cloud_init, "spec.cloudInit", ("userData",))
    user_data = errors.string(cloud_init.get("userData"), "spec.cloudInit.userData")
    if user_data is not None and len(user_data.encode()) > MAX_USER_DATA:
        errors.add("spec.cloudInit.userData", f"must be at most {MAX_USER_DATA} bytes")
        return None
    return user_data

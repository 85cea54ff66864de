"""Operator settings: one YAML document, camelCase keys, every key with a default.

Loaded from `--config FILE` locally and from the settings ConfigMap in a cluster.
Unknown keys are errors, so a typo never silently falls back to a default.
`docs/settings.md` documents every key; `DEFAULTS_YAML` is the same text the
ConfigMap in `manifests/` ships.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from virtualpod.core.host_paths import HostPaths, allowed_directory_problem, is_within
from virtualpod.core.quantity import (
    MIB,
    MILLICPU_PER_CPU,
    QuantityError,
    parse_bytes,
    parse_cpu_millis,
)
from virtualpod.core.spec import SuspendMode


class SettingsError(ValueError):
    """A settings document that cannot be used, naming the key."""


class PressureSignal(StrEnum):
    """Where memory.available comes from (kubelet: node vs allocatable signal)."""

    HOST = "host"
    POOL = "pool"


@dataclass(frozen=True)
class Amount:
    """A cpu + memory pair, as in `defaultContainerSize` or `padding`."""

    cpu_millis: int
    memory_bytes: int


@dataclass(frozen=True)
class VMMOverhead:
    """Memory the QEMU process needs besides guest RAM; added to `<hard_limit>`."""

    memory_bytes: int = 256 * MIB
    memory_per_vcpu_bytes: int = 8 * MIB


@dataclass(frozen=True)
class RestartBackoff:
    """kubelet's crash-loop back-off for VMs that stopped outside the operator."""

    initial_s: float = 10.0
    max_s: float = 300.0
    reset_s: float = 600.0


@dataclass(frozen=True)
class EvictionSettings:
    signal: PressureSignal = PressureSignal.HOST
    hard_memory_available_bytes: int = 100 * MIB
    soft_memory_available_bytes: int | None = None
    soft_grace_period_s: float = 10.0
    pressure_transition_period_s: float = 30.0
    sampling_interval_s: float = 0.5
    minimum_reclaim_bytes: int = 0
    pool_allocatable_bytes: int | None = None
    resume_margin_bytes: int = 64 * MIB
    suspend_mode: SuspendMode = SuspendMode.SAVE
    balloon_burstable: bool = False
    psi_enabled: bool = False
    psi_some_avg10_threshold: float = 10.0


@dataclass(frozen=True)
class StorageSettings:
    """Where the two storage pools keep their files, and how long a download may stall."""

    image_dir: str = "/var/lib/virtualpod/images"
    volume_dir: str = "/var/lib/virtualpod/volumes"
    download_timeout_s: float = 60.0


@dataclass(frozen=True)
class Settings:
    default_container_size: Amount = Amount(cpu_millis=MILLICPU_PER_CPU, memory_bytes=512 * MIB)
    padding: Amount = Amount(cpu_millis=0, memory_bytes=64 * MIB)
    vmm_overhead: VMMOverhead = VMMOverhead()
    reserved: Amount = Amount(cpu_millis=0, memory_bytes=512 * MIB)
    libvirt_uri: str = "test:///default"
    host_name: str = ""
    namespace: str = "virtualpod-system"
    lease_renew_interval_s: float = 5.0
    domain_type: str = "kvm"
    cgroup_version: str = "auto"
    console_log_dir: str = "/var/log/libvirt/qemu"
    memory_stats_period_s: int = 5
    restart_backoff: RestartBackoff = RestartBackoff()
    host_paths: HostPaths = field(default_factory=HostPaths)
    eviction: EvictionSettings = field(default_factory=EvictionSettings)
    storage: StorageSettings = StorageSettings()
    network: str = "default"
    host_port_address: str = "127.0.0.1"
    peering: str = "virtualpod-controller"
    placeholder_image: str = "registry.k8s.io/pause:3.10"


DEFAULTS_YAML = """\
# virtualpod operator settings; every key is optional and shown with its default.
defaultContainerSize:     # size of a container that sets no limit (vSphere Pods rule)
  cpu: "1"
  memory: 512Mi
padding:                  # added to every VM for the guest OS itself
  cpu: "0"
  memory: 64Mi
vmmOverhead:              # QEMU's own memory, added to <hard_limit> on top of guest RAM
  memory: 256Mi
  memoryPerVCPU: 8Mi
reserved:                 # host capacity kept back from VMs (allocatable = capacity - reserved)
  cpu: "0"
  memory: 512Mi
libvirtURI: test:///default   # qemu:///system on a real host
hostName: ""              # name of the libvirt host this operator serves; "" = system hostname
namespace: virtualpod-system   # the operator's own namespace (its per-host Leases live here)
leaseRenewInterval: 5s    # an agent renews its host's Lease (measured memory) this often
domainType: kvm           # kvm, or qemu for software emulation (TCG)
cgroupVersion: auto       # auto, 1 or 2: on 2, <shares> is converted to a cpu.weight value
consoleLogDir: /var/log/libvirt/qemu   # each VM's serial console is logged here
memoryStatsPeriod: 5      # seconds between guest balloon memory statistics
restartBackoff:           # a VM that stopped outside the operator is started again:
  initial: 10s            # at once, then after `initial` doubling up to `max`;
  max: 5m
  reset: 10m              # a VM that ran this long since its last restart starts over
hostPaths:                # host directories spec.boot files and host-path images may come from
  allowed: []             # [] = none: every such host path is refused (docs/security.md)
  readOnly: true          # disks from these directories are attached read-only
storage:
  imageDir: /var/lib/virtualpod/images     # pool virtualpod-images: base images, imported once
  volumeDir: /var/lib/virtualpod/volumes   # pool virtualpod-volumes: each VM's overlay and seed
  downloadTimeout: 60s    # an http(s) image download fails after this long without data
network: default          # libvirt network of each VM's NIC; "user": QEMU user-mode networking
hostPortAddress: 127.0.0.1   # user-mode NICs: where containers' hostPorts listen on the host
eviction:
  signal: host            # host: host memory.available; pool: allocatable - VM working sets
  hard:
    memoryAvailable: 100Mi  # suspend at once below this (kubelet default)
  soft:
    memoryAvailable: null   # suspend after gracePeriod below this; null = off
    gracePeriod: 10s
  pressureTransitionPeriod: 30s   # stay in pressure this long after the signal recovers
  samplingInterval: 500ms
  minimumReclaim: 0       # reclaim at least this much beyond the threshold
  poolAllocatable: null   # pool signal: memory for VMs; null = host capacity - reserved.memory
  resumeMargin: 64Mi      # headroom kept free when a VM is resumed
  suspendMode: Save       # Save frees RAM (managed save); Pause keeps it (CPU-only relief)
  balloonBurstable: false # first balloon Burstable VMs down towards their request
  psi:
    enabled: false        # also treat /proc/pressure/memory as an early warning
    someAvg10: 10         # percent
peering: virtualpod-controller  # Kopf peering of the controller replicas (one is active)
placeholderImage: registry.k8s.io/pause:3.10  # image of the companion Pods' containers
"""

_DURATION = re.compile(r"^(?P<amount>\d+(\.\d+)?)(?P<unit>ms|s|m|h)?$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: object, key: str) -> float:
    """`500ms`, `10s`, `5m`, `1h` or a number of seconds -> seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    match = _DURATION.match(str(value).strip()) if isinstance(value, str) else None
    if not match:
        raise SettingsError(f"{key}: {value!r} is not a duration like 500ms, 10s or 5m")
    return float(match["amount"]) * _DURATION_UNITS[match["unit"]]


class _Reader:
    """Reads one mapping, rejecting keys nobody asked for."""

    def __init__(self, data: object, path: str) -> None:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise SettingsError(f"{path or 'settings'}: must be a mapping")
        self.data: Mapping[str, Any] = data
        self.path = path
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def get(self, name: str) -> Any:
        self.seen.add(name)
        return self.data.get(name)

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def child(self, name: str) -> _Reader:
        return _Reader(self.get(name), self.key(name))

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise SettingsError(
                f"{self.path or 'settings'}: unknown key(s) {', '.join(unknown)} "
                f"(known: {', '.join(sorted(self.seen))})"
            )

    def memory(self, name: str, default: int) -> int:
        return _quantity(parse_bytes, self.get(name), self.key(name), default)

    def cpu(self, name: str, default: int) -> int:
        return _quantity(parse_cpu_millis, self.get(name), self.key(name), default)

    def duration(self, name: str, default: float) -> float:
        value = self.get(name)
        return default if value is None else parse_duration(value, self.key(name))

    def string(self, name: str, default: str, choices: tuple[str, ...] = ()) -> str:
        value = self.get(name)
        if value is None:
            return default
        text = str(value)
        if choices and text not in choices:
            raise SettingsError(f"{self.key(name)}: {text!r} must be one of {', '.join(choices)}")
        return text

    def number(self, name: str, default: float) -> float:
        value = self.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise SettingsError(f"{self.key(name)}: {value!r} must be a non-negative number")
        return float(value)

    def flag(self, name: str, default: bool) -> bool:
        value = self.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise SettingsError(f"{self.key(name)}: {value!r} must be true or false")
        return value

    def amount(self, name: str, default: Amount) -> Amount:
        reader = self.child(name)
        amount = Amount(
            cpu_millis=reader.cpu("cpu", default.cpu_millis),
            memory_bytes=reader.memory("memory", default.memory_bytes),
        )
        reader.done()
        return amount


def _quantity(parse: Any, value: object, key: str, default: int) -> int:
    if value is None:
        return default
    try:
        amount: int = parse(value, key)
    except QuantityError as error:
        raise SettingsError(str(error)) from error
    return amount


def settings_from_mapping(data: object) -> Settings:
    """Build Settings from a parsed YAML document (None or {} gives the defaults)."""
    base = Settings()
    root = _Reader(data, "")
    overhead = root.child("vmmOverhead")
    vmm_overhead = VMMOverhead(
        memory_bytes=overhead.memory("memory", base.vmm_overhead.memory_bytes),
        memory_per_vcpu_bytes=overhead.memory(
            "memoryPerVCPU", base.vmm_overhead.memory_per_vcpu_bytes
        ),
    )
    overhead.done()
    settings = Settings(
        default_container_size=root.amount("defaultContainerSize", base.default_container_size),
        padding=root.amount("padding", base.padding),
        vmm_overhead=vmm_overhead,
        reserved=root.amount("reserved", base.reserved),
        libvirt_uri=root.string("libvirtURI", base.libvirt_uri),
        host_name=root.string("hostName", base.host_name),
        namespace=root.string("namespace", base.namespace),
        lease_renew_interval_s=root.duration("leaseRenewInterval", base.lease_renew_interval_s),
        domain_type=root.string("domainType", base.domain_type, ("kvm", "qemu")),
        cgroup_version=root.string("cgroupVersion", base.cgroup_version, ("auto", "1", "2")),
        console_log_dir=root.string("consoleLogDir", base.console_log_dir),
        memory_stats_period_s=int(root.number("memoryStatsPeriod", base.memory_stats_period_s)),
        restart_backoff=_restart_backoff(root.child("restartBackoff"), base.restart_backoff),
        host_paths=_host_paths(root.child("hostPaths"), base.host_paths),
        eviction=_eviction(root.child("eviction"), base.eviction),
        storage=_storage(root.child("storage"), base.storage),
        network=root.string("network", base.network),
        host_port_address=root.string("hostPortAddress", base.host_port_address),
        peering=root.string("peering", base.peering),
        placeholder_image=root.string("placeholderImage", base.placeholder_image),
    )
    root.done()
    if settings.lease_renew_interval_s <= 0:
        raise SettingsError("leaseRenewInterval: must be greater than zero")
    if not settings.namespace:
        raise SettingsError("namespace: must not be empty")
    if not settings.console_log_dir.startswith("/"):
        raise SettingsError("consoleLogDir: must be an absolute path")
    _check_pools_not_allowed(settings)
    return settings


def _check_pools_not_allowed(settings: Settings) -> None:
    """Tenants never name pool files (other VMs' disks and seeds with Secret values)."""
    pools = (settings.storage.image_dir, settings.storage.volume_dir)
    for allowed in settings.host_paths.allowed:
        for pool in pools:
            if is_within(pool, allowed) or is_within(allowed, pool):
                raise SettingsError(
                    f"hostPaths.allowed: {allowed!r} overlaps the storage pool directory "
                    f"{pool!r}, whose files are other VMs' disks and seeds"
                )


def _storage(reader: _Reader, base: StorageSettings) -> StorageSettings:
    storage = StorageSettings(
        image_dir=reader.string("imageDir", base.image_dir),
        volume_dir=reader.string("volumeDir", base.volume_dir),
        download_timeout_s=reader.duration("downloadTimeout", base.download_timeout_s),
    )
    reader.done()
    for key, directory in (("imageDir", storage.image_dir), ("volumeDir", storage.volume_dir)):
        if not directory.startswith("/"):
            raise SettingsError(f"storage.{key}: must be an absolute path")
    if storage.download_timeout_s <= 0:
        raise SettingsError("storage.downloadTimeout: must be greater than zero")
    return storage


def _restart_backoff(reader: _Reader, base: RestartBackoff) -> RestartBackoff:
    backoff = RestartBackoff(
        initial_s=reader.duration("initial", base.initial_s),
        max_s=reader.duration("max", base.max_s),
        reset_s=reader.duration("reset", base.reset_s),
    )
    reader.done()
    if backoff.max_s < backoff.initial_s:
        raise SettingsError("restartBackoff.max: must not be less than restartBackoff.initial")
    return backoff


def _host_paths(reader: _Reader, base: HostPaths) -> HostPaths:
    allowed = reader.get("allowed")
    if allowed is None:
        allowed = list(base.allowed)
    if not isinstance(allowed, list):
        raise SettingsError(f"{reader.key('allowed')}: must be a list of directories")
    for index, directory in enumerate(allowed):
        problem = allowed_directory_problem(directory)
        if problem is not None:
            raise SettingsError(f"{reader.key('allowed')}[{index}]: {problem}")
    host_paths = HostPaths(
        allowed=tuple(str(directory).rstrip("/") for directory in allowed),
        read_only=reader.flag("readOnly", base.read_only),
    )
    reader.done()
    return host_paths


def _eviction(reader: _Reader, base: EvictionSettings) -> EvictionSettings:
    hard = reader.child("hard")
    soft = reader.child("soft")
    psi = reader.child("psi")
    eviction = EvictionSettings(
        signal=PressureSignal(reader.string("signal", base.signal, tuple(PressureSignal))),
        hard_memory_available_bytes=hard.memory(
            "memoryAvailable", base.hard_memory_available_bytes
        ),
        soft_memory_available_bytes=(
            soft.memory("memoryAvailable", 0) if soft.has("memoryAvailable") else None
        ),
        soft_grace_period_s=soft.duration("gracePeriod", base.soft_grace_period_s),
        pressure_transition_period_s=reader.duration(
            "pressureTransitionPeriod", base.pressure_transition_period_s
        ),
        sampling_interval_s=reader.duration("samplingInterval", base.sampling_interval_s),
        minimum_reclaim_bytes=reader.memory("minimumReclaim", base.minimum_reclaim_bytes),
        pool_allocatable_bytes=(
            reader.memory("poolAllocatable", 0) if reader.has("poolAllocatable") else None
        ),
        resume_margin_bytes=reader.memory("resumeMargin", base.resume_margin_bytes),
        suspend_mode=SuspendMode(
            reader.string("suspendMode", base.suspend_mode, tuple(SuspendMode))
        ),
        balloon_burstable=reader.flag("balloonBurstable", base.balloon_burstable),
        psi_enabled=psi.flag("enabled", base.psi_enabled),
        psi_some_avg10_threshold=psi.number("someAvg10", base.psi_some_avg10_threshold),
    )
    soft.get("memoryAvailable")
    reader.get("poolAllocatable")
    for section in (hard, soft, psi, reader):
        section.done()
    if eviction.sampling_interval_s <= 0:
        raise SettingsError("eviction.samplingInterval: must be greater than zero")
    return eviction


def load_settings(path: str | Path | None = None) -> Settings:
    """Settings from a YAML file, or the defaults when no file is given."""
    if path is None:
        return Settings()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise SettingsError(f"{path}: cannot read settings: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise SettingsError(f"{path}: cannot read settings: not UTF-8 text") from error
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError) as error:  # ValueError: bad dates
        raise SettingsError(f"{path}: not valid YAML: {error}") from error
    try:
        return settings_from_mapping(data)
    except SettingsError as error:
        raise SettingsError(f"{path}: {error}") from error

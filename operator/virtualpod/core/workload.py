"""What the containers ask the VM to run: command, args, env and ports, as in a PodSpec.

Parsed here, apart from sizing (`spec`), and handed to the cloud-init renderer. An env
value that comes from a Secret or ConfigMap stays a reference until the seed is built:
the plan, the domain XML and the status never hold it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

#: A C identifier-ish env name, as kubectl's validation suggests (no '=' and no NUL).
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
MAX_PORT = 65535

AddError = Callable[[str, str], None]


class SourceKind(StrEnum):
    SECRET = "Secret"
    CONFIG_MAP = "ConfigMap"


@dataclass(frozen=True)
class KeyRef:
    """`valueFrom.secretKeyRef` / `configMapKeyRef`: resolved when the seed is built."""

    kind: SourceKind
    name: str
    key: str
    optional: bool = False


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str | None = None
    value_from: KeyRef | None = None


class Protocol(StrEnum):
    TCP = "TCP"
    UDP = "UDP"


@dataclass(frozen=True)
class ContainerPort:
    container_port: int
    host_port: int | None = None
    protocol: Protocol = Protocol.TCP
    name: str | None = None


@dataclass(frozen=True)
class Process:
    """What one container runs: `command` + `args` (empty: the image's own default)."""

    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[EnvVar, ...] = ()
    ports: tuple[ContainerPort, ...] = ()

    @property
    def argv(self) -> tuple[str, ...]:
        return self.command + self.args


def parse_strings(value: object, path: str, add: AddError) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        add(path, "must be a list of strings")
        return ()
    bad = [i for i, item in enumerate(value) if "\x00" in item]
    for index in bad:
        add(f"{path}[{index}]", "must not contain NUL characters")
    return tuple(value)


def parse_env(value: object, path: str, add: AddError) -> tuple[EnvVar, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        add(path, "must be a list of {name, value | valueFrom}")
        return ()
    env = []
    for index, item in enumerate(value):
        var = _parse_env_var(item, f"{path}[{index}]", add)
        if var is not None:
            env.append(var)
    return tuple(env)


def _parse_env_var(item: object, path: str, add: AddError) -> EnvVar | None:
    if not isinstance(item, Mapping):
        add(path, "must be an object")
        return None
    unknown = set(item) - {"name", "value", "valueFrom"}
    for key in sorted(unknown):
        add(f"{path}.{key}", "unknown field (known: name, value, valueFrom)")
    name = item.get("name")
    if not isinstance(name, str) or not _ENV_NAME.match(name):
        add(f"{path}.name", f"{name!r} must be a valid environment variable name")
        return None
    value = item.get("value")
    if value is not None and (not isinstance(value, str) or "\x00" in value):
        add(f"{path}.value", "must be a string without NUL characters")
        return None
    source = item.get("valueFrom")
    if source is not None and value is not None:
        add(path, "set either value or valueFrom, not both")
        return None
    key_ref = _parse_value_from(source, f"{path}.valueFrom", add) if source is not None else None
    if source is not None and key_ref is None:
        return None
    return EnvVar(name=name, value=value, value_from=key_ref)


_REF_FIELDS = {"secretKeyRef": SourceKind.SECRET, "configMapKeyRef": SourceKind.CONFIG_MAP}


def _parse_value_from(source: object, path: str, add: AddError) -> KeyRef | None:
    if not isinstance(source, Mapping) or len(source) != 1 or next(iter(source)) not in _REF_FIELDS:
        add(path, "must hold exactly one of secretKeyRef, configMapKeyRef")
        return None
    field, ref = next(iter(source.items()))
    where = f"{path}.{field}"
    if not isinstance(ref, Mapping):
        add(where, "must be an object {name, key, optional}")
        return None
    name, key, optional = ref.get("name"), ref.get("key"), ref.get("optional", False)
    ok = True
    if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        add(f"{where}.name", f"{name!r} must be a DNS-1123 subdomain")
        ok = False
    if not isinstance(key, str) or len(key) > 253 or not _KEY.match(key):
        add(f"{where}.key", f"{key!r} must be a valid Secret/ConfigMap key")
        ok = False
    if not isinstance(optional, bool):
        add(f"{where}.optional", "must be true or false")
        ok = False
    if not ok:
        return None
    assert isinstance(name, str)
    assert isinstance(key, str)
    return KeyRef(_REF_FIELDS[field], name, key, bool(optional))


def parse_ports(value: object, path: str, add: AddError) -> tuple[ContainerPort, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        add(path, "must be a list of ports")
        return ()
    ports = []
    for index, item in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(item, Mapping):
            add(where, "must be an object")
            continue
        for key in sorted(set(item) - {"name", "containerPort", "hostPort", "protocol"}):
            add(f"{where}.{key}", "unknown field (known: name, containerPort, hostPort, protocol)")
        container_port = _port(item.get("containerPort"), f"{where}.containerPort", add)
        host_port = item.get("hostPort")
        if host_port is not None:
            host_port = _port(host_port, f"{where}.hostPort", add)
        try:
            protocol = Protocol(str(item.get("protocol", "TCP")))
        except ValueError:
            add(f"{where}.protocol", "must be TCP or UDP")
            continue
        name = item.get("name")
        if container_port is not None and (host_port is not None or "hostPort" not in item):
            ports.append(
                ContainerPort(container_port, host_port, protocol, str(name) if name else None)
            )
    return tuple(ports)


def _port(value: object, path: str, add: AddError) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PORT:
        add(path, f"{value!r} must be a port number between 1 and {MAX_PORT}")
        return None
    return value


def parse_process(item: Mapping[str, object], path: str, add: AddError) -> Process:
    return Process(
        command=parse_strings(item.get("command"), f"{path}.command", add),
        args=parse_strings(item.get("args"), f"{path}.args", add),
        env=parse_env(item.get("env"), f"{path}.env", add),
        ports=parse_ports(item.get("ports"), f"{path}.ports", add),
    )

"""A workload VM's network from libvirt: its network exists, its addresses, its forwards.

Addresses of a NIC on a libvirt network come from that network's DHCP leases, else
from the guest agent when the image runs one; only the addresses of our NIC's MAC
count. A user-mode NIC has the fixed guest address of QEMU's user network.

Containers' `hostPort`s on a user-mode NIC are forwarded from the host (QEMU's
`hostfwd_add` on the NIC's netdev, through libvirt's monitor passthrough). QEMU does not
keep them across a restart or restore, so they are (re)added whenever missing.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import libvirt
import libvirt_qemu

from virtualpod.core.nic import USER_GUEST_ADDRESS, Nic
from virtualpod.core.workload import ContainerPort
from virtualpod.libvirt.hypervisor import Hypervisor, HypervisorError, Unsupported

USER_PREFIX = 24
_SOURCES = (
    ("lease", libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE),
    ("agent", libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT),
)
#: libvirt names the netdev of the first NIC `hostnet0`.
USER_NETDEV = "hostnet0"
_FORWARD = re.compile(r"(?P<proto>TCP|UDP)\[HOST_FORWARD\]\s+\d+\s+(?P<addr>\S+)\s+(?P<port>\d+)")


class NetworkMissing(HypervisorError):  # noqa: N818 (names the condition reason)
    reason = "NetworkMissing"


@dataclass(frozen=True)
class Address:
    ip: str
    prefix: int
    mac: str
    source: str

    def status(self) -> dict[str, Any]:
        return {"ip": self.ip, "prefix": self.prefix, "mac": self.mac, "source": self.source}


async def check_network(hv: Hypervisor, nic: Nic) -> None:
    """The NIC's libvirt network exists and is active; raises NetworkMissing."""
    if nic.user_mode:
        return

    def fn(conn: Any) -> None:
        try:
            network = conn.networkLookupByName(nic.network)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                raise NetworkMissing(f"libvirt network {nic.network!r} does not exist") from error
            raise
        if not network.isActive():
            raise NetworkMissing(f"libvirt network {nic.network!r} is not active")

    await hv.run(fn)


async def addresses(hv: Hypervisor, uuid: str, nic: Nic) -> list[Address]:
    """The running VM's addresses on its NIC; empty while it has none (or is not running)."""

    def fn(conn: Any) -> list[Address]:
        dom = conn.lookupByUUIDString(uuid)
        if not dom.isActive():
            return []
        if nic.user_mode:
            return [Address(USER_GUEST_ADDRESS, USER_PREFIX, nic.mac, "user")]
        for source, flag in _SOURCES:
            with contextlib.suppress(libvirt.libvirtError):  # no leases, no agent
                found = _matching(dom.interfaceAddresses(flag, 0), nic.mac, source)
                if found:
                    return found
        return []

    return await hv.run(fn)


def _matching(interfaces: dict[str, Any], mac: str, source: str) -> list[Address]:
    found = []
    for interface in interfaces.values():
        if (interface.get("hwaddr") or "").lower() != mac.lower():
            continue
        for addr in interface.get("addrs") or []:
            found.append(Address(addr["addr"], int(addr["prefix"]), mac, source))
    return found


def forward_spec(host_address: str, port: ContainerPort) -> str:
    return f"{port.protocol.value.lower()}:{host_address}:{port.host_port}-:{port.container_port}"


def forward_label(host_address: str, port: ContainerPort) -> str:
    return f"{host_address}:{port.host_port}->{port.container_port}/{port.protocol.value}"


async def ensure_forwards(
    hv: Hypervisor, uuid: str, host_address: str, ports: Sequence[ContainerPort]
) -> list[str]:
    """Forward each hostPort into a running user-mode VM; returns what is forwarded."""
    if not ports:
        return []

    def fn(conn: Any) -> list[str]:
        dom = conn.lookupByUUIDString(uuid)
        if not dom.isActive():
            return []
        try:
            present = _present(_monitor(dom, "info usernet"))
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
                raise Unsupported(error.get_error_message()) from error
            raise
        done = []
        for port in ports:
            key = (port.protocol.value, host_address, port.host_port)
            if key not in present:
                reply = _monitor(
                    dom, f"hostfwd_add {USER_NETDEV} {forward_spec(host_address, port)}"
                )
                if reply.strip():
                    raise HypervisorError(
                        f"cannot forward {forward_label(host_address, port)}: {reply.strip()}"
                    )
            done.append(forward_label(host_address, port))
        return done

    return await hv.run(fn)


def _monitor(dom: Any, command: str) -> str:
    return str(
        libvirt_qemu.qemuMonitorCommand(
            dom, command, libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP
        )
    )


def _present(usernet: str) -> set[tuple[str, str, int | None]]:
    return {(m["proto"], m["addr"], int(m["port"])) for m in _FORWARD.finditer(usernet)}

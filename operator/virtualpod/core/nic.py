"""The VM's network interface in domain XML: one virtio NIC.

On a libvirt network (`<interface type='network'>`, address from its DHCP leases), or,
for the reserved name `user`, QEMU's user-mode network: no bridge and no libvirt network
on the host, the guest gets `USER_GUEST_ADDRESS` from QEMU's built-in DHCP server and the
containers' `hostPort`s are forwarded to it from the host (see libvirt/ports.py).
The MAC address is derived from the domain UUID, so it is stable across restarts and
redefinitions and a lease can be matched to its VM.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass

USER_NETWORK = "user"
#: The address QEMU's user-mode DHCP server hands out first (10.0.2.0/24, gateway .2).
USER_GUEST_ADDRESS = "10.0.2.15"
#: QEMU's (and libvirt's) locally administered prefix.
MAC_PREFIX = "52:54:00"
NIC_MODEL = "virtio"


@dataclass(frozen=True)
class Nic:
    network: str
    mac: str

    @property
    def user_mode(self) -> bool:
        return self.network == USER_NETWORK


def mac_address(uuid: str) -> str:
    digest = hashlib.sha256(uuid.encode()).digest()
    return MAC_PREFIX + "".join(f":{byte:02x}" for byte in digest[:3])


def render_nic(devices: ET.Element, nic: Nic) -> None:
    kind = "user" if nic.user_mode else "network"
    element = ET.SubElement(devices, "interface", type=kind)
    ET.SubElement(element, "mac", address=nic.mac)
    if not nic.user_mode:
        ET.SubElement(element, "source", network=nic.network)
    ET.SubElement(element, "model", type=NIC_MODEL)

"""Domain lifecycle, keyed by UUID: look up, define, start, stop, undefine.

Idempotent: defining the same XML twice updates one domain; start, stop, destroy and
undefine are no-ops when already done. What libvirt cannot change on a running VM
(vCPUs, maximum memory) is reported (`DefineResult.restart_needed`), not ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import libvirt

from virtualpod.libvirt.connection import Connection
from virtualpod.libvirt.errors import (
    DiskImageMissing,
    DomainNotFound,
    HypervisorError,
    Unreachable,
    XMLRejected,
)
from virtualpod.libvirt.metadata import merge_runtime_metadata
from virtualpod.libvirt.state import DomainInfo, DomainState, domain_info

#: What only a restart applies: (what the operator calls it, the XML element).
BOOT_ONLY = (("vcpus", "vcpu"), ("max_memory", "memory"))
NO_SUCH_FILE = "No such file or directory"
STOP_GRACE_S = 30.0
STOP_POLL_S = 0.2


@dataclass(frozen=True)
class DefineResult:
    """What ensure_defined did; `restart_needed` names changes that only apply on boot."""

    uuid: str
    name: str
    created: bool
    changed: bool
    restart_needed: tuple[str, ...] = ()


@dataclass(frozen=True)
class StartResult:
    started: bool
    restored: bool
    seconds: float


def uuid_of(xml: str) -> str:
    """The `<uuid>` of a domain XML; raises XMLRejected when it has none or is not XML."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise XMLRejected(f"domain XML is not well-formed: {e}") from e
    uuid = (root.findtext("uuid") or "").strip()
    if not uuid:
        raise XMLRejected("domain XML has no <uuid>: domains are keyed by it")
    return uuid


def _same_element(a: ET.Element, b: ET.Element) -> bool:
    return (
        a.tag == b.tag
        and a.attrib == b.attrib
        and (a.text or "").strip() == (b.text or "").strip()
        and len(a) == len(b)
        and all(_same_element(x, y) for x, y in zip(a, b, strict=True))
    )


def same_definition(a: str, b: str) -> bool:
    """Two domain XMLs say the same: equal after parsing, wherever a namespace is
    declared and however the text is indented."""
    return _same_element(ET.fromstring(a), ET.fromstring(b))


def boot_files(xml: str) -> list[str]:
    """Files a domain needs to start: disk sources, kernel, initrd."""
    root = ET.fromstring(xml)
    paths = [
        e.text for e in (root.find("os/kernel"), root.find("os/initrd")) if e is not None and e.text
    ]
    for disk in root.findall("devices/disk"):
        source = disk.find("source")
        if source is not None and disk.get("type", "file") == "file" and source.get("file"):
            paths.append(source.get("file", ""))
    return paths


def restart_needed(config_xml: str, running_xml: str | None) -> tuple[str, ...]:
    """What differs between a new definition and what runs, that only a restart applies."""
    if running_xml is None:
        return ()
    new, cur = ET.fromstring(config_xml), ET.fromstring(running_xml)
    return tuple(
        label
        for label, path in BOOT_ONLY
        if (new.findtext(path) or "").strip() != (cur.findtext(path) or "").strip()
    )


def _running_xml(dom: Any) -> str | None:
    """Blocking: the XML that runs, or sits in a save image; None when shut off."""
    if dom.isActive():
        return str(dom.XMLDesc(0))
    if dom.hasManagedSaveImage(0):
        with contextlib.suppress(libvirt.libvirtError, AttributeError):
            return str(dom.managedSaveGetXMLDesc(0))
    return None


class Domains(Connection):
    """Look up and drive the lifecycle of domains, keyed by UUID."""

    async def lookup(self, uuid: str) -> DomainInfo:
        """Raises DomainNotFound."""
        return await self._with_domain(uuid, domain_info)

    async def lookup_name(self, name: str) -> DomainInfo:
        def read(conn: Any) -> DomainInfo:
            try:
                return domain_info(conn.lookupByName(name))
            except libvirt.libvirtError as e:
                if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    raise DomainNotFound(
                        f"no domain named {name}", libvirt_code=e.get_error_code()
                    ) from e
                raise

        return await self._call(read)

    async def exists(self, uuid: str) -> bool:
        try:
            await self.lookup(uuid)
        except DomainNotFound:
            return False
        return True

    async def list_domains(self) -> list[DomainInfo]:
        """Domains carrying our `<metadata>` element (others on the host are left alone)."""

        def read(conn: Any) -> list[DomainInfo]:
            out = []
            for dom in conn.listAllDomains(0):
                try:
                    dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, self.metadata_ns, 0)
                    out.append(domain_info(dom))
                except libvirt.libvirtError:
                    continue  # not ours, or vanished while listing
            return out

        return await self._call(read)

    async def xml(self, uuid: str, *, inactive: bool = False) -> str:
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        return await self._with_domain(uuid, lambda dom: str(dom.XMLDesc(flags)))

    async def ensure_defined(self, xml: str, uuid: str | None = None) -> DefineResult:
        """Define or update the persistent domain; idempotent by the XML's `<uuid>`.

        The XML must have been planned for this host's cgroup version
        (`plan_virtualpod(..., cgroup_version=hv.cgroup_version)`). Runtime metadata
        the domain carries is kept. `uuid`: the XML's, when the caller planned it (the
        XML is then not parsed to find it).
        """
        uuid = uuid or uuid_of(xml)

        def define(conn: Any) -> DefineResult:
            before: str | None = None
            with contextlib.suppress(DomainNotFound):
                before = self._dom(conn, uuid).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            merged = (
                xml if before is None else merge_runtime_metadata(xml, before, self.metadata_ns)
            )
            dom = conn.defineXML(merged)
            after = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            return DefineResult(
                uuid=dom.UUIDString(),
                name=dom.name(),
                created=before is None,
                changed=before is None or not same_definition(before, after),
                restart_needed=restart_needed(after, _running_xml(dom)),
            )

        try:
            return await self._call(define)
        except HypervisorError as e:
            if isinstance(e, Unreachable | DomainNotFound):
                raise
            raise XMLRejected(e.message, libvirt_code=e.libvirt_code) from e

    async def start(self, uuid: str) -> StartResult:
        """Boot, or restore a managed-save image; no-op when already active."""
        return await self._with_domain(uuid, self._start)

    async def start_observed(self, uuid: str) -> tuple[StartResult, DomainInfo]:
        """`start`, then what libvirt shows after it: one call, not two."""
        return await self._with_domain(uuid, lambda dom: (self._start(dom), domain_info(dom)))

    def _start(self, dom: Any) -> StartResult:
        if dom.isActive():
            return StartResult(started=False, restored=False, seconds=0.0)
        if self.local:
            missing = [p for p in boot_files(dom.XMLDesc(0)) if not os.path.exists(p)]
            if missing:
                raise DiskImageMissing(
                    f"domain {dom.name()} needs missing file(s): {', '.join(missing)}"
                )
        restored = bool(dom.hasManagedSaveImage(0))
        t0 = time.monotonic()
        try:
            dom.create()
        except libvirt.libvirtError as e:
            if NO_SUCH_FILE in (e.get_error_message() or ""):
                raise DiskImageMissing(
                    e.get_error_message(), libvirt_code=e.get_error_code()
                ) from e
            raise
        return StartResult(started=True, restored=restored, seconds=time.monotonic() - t0)

    async def destroy(self, uuid: str) -> bool:
        """Hard power-off; True if it was running. Raises DomainNotFound."""

        def destroy(dom: Any) -> bool:
            if not dom.isActive():
                return False
            try:
                dom.destroy()
            except libvirt.libvirtError as e:
                if e.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID:
                    return False  # stopped in the meantime
                raise
            return True

        return await self._with_domain(uuid, destroy)

    async def shutdown(self, uuid: str) -> bool:
        """Ask the guest to power off (ACPI); True if the request was sent."""

        def shutdown(dom: Any) -> bool:
            if not dom.isActive():
                return False
            dom.shutdown()
            return True

        return await self._with_domain(uuid, shutdown)

    async def stop(
        self, uuid: str, grace_seconds: float = STOP_GRACE_S, poll_interval: float = STOP_POLL_S
    ) -> bool:
        """Graceful shutdown, then destroy after `grace_seconds`; True if it was running.

        A paused guest cannot react to ACPI, so it is destroyed at once.
        """
        info = await self.lookup(uuid)
        if not info.active:
            return False
        if info.state is DomainState.RUNNING:
            with contextlib.suppress(HypervisorError):
                await self.shutdown(uuid)
            deadline = time.monotonic() + grace_seconds
            while time.monotonic() < deadline:
                if not (await self.lookup(uuid)).active:
                    return True
                await asyncio.sleep(poll_interval)
        await self.destroy(uuid)
        return True

    async def undefine(self, uuid: str) -> bool:
        """Destroy if running, then remove the domain and its managed-save image.

        Returns False when there was nothing to remove.
        """

        def undefine(conn: Any) -> bool:
            try:
                dom = self._dom(conn, uuid)
            except DomainNotFound:
                return False
            if dom.isActive():
                with contextlib.suppress(libvirt.libvirtError):
                    dom.destroy()
            flags = (
                libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            )
            try:
                dom.undefineFlags(flags | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
            except libvirt.libvirtError as e:
                if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return False
                if e.get_error_code() not in (
                    libvirt.VIR_ERR_INVALID_ARG,
                    libvirt.VIR_ERR_NO_SUPPORT,
                ):
                    raise
                dom.undefineFlags(flags)  # drivers without NVRAM support
            return True

        return await self._call(undefine)

"""Runtime metadata: XML elements the operator keeps in a domain, beside what the core renders.

Each key has its own namespace under ours (`runtime_namespace`), so it never clobbers the
`<vpod:virtualpod>` element. Written through libvirt's metadata API to the persistent
definition always and to the live one when the domain runs, so it survives an operator
restart, a libvirtd restart, a managed save (the image carries the live XML) and a
redefinition (`merge_runtime_metadata`, used by `ensure_defined`).
"""

from __future__ import annotations

import contextlib
import re
import xml.etree.ElementTree as ET
from typing import Any

import libvirt

from virtualpod.libvirt.connection import Connection, affect_flags, apply_both

#: Prefixes ElementTree accepts (and does not reserve for itself, like `ns0`).
_PREFIX = re.compile(r"[A-Za-z_][\w.-]*")
_RESERVED_PREFIX = re.compile(r"ns\d+")


def runtime_namespace(metadata_ns: str, key: str) -> str:
    """XML namespace of runtime metadata `key` (e.g. pressure intents) under ours."""
    return f"{metadata_ns}/{key}"


def _namespace(element: ET.Element) -> str:
    return element.tag[1:].split("}", 1)[0] if element.tag.startswith("{") else ""


def merge_runtime_metadata(new_xml: str, old_xml: str, metadata_ns: str) -> str:
    """`new_xml` plus the runtime metadata elements of `old_xml` it does not carry.

    A re-rendered XML never contains what the operator wrote at runtime (`set_metadata`),
    and defining it as is would silently drop, say, the intent of a suspend in progress.
    `new_xml` is returned as it is when there is nothing to keep; otherwise the elements
    are added to its `<metadata>` with ElementTree, under the prefix libvirt shows (the
    key), so redefining the same XML twice gives the same definition.
    """
    prefix = f"{metadata_ns}/"
    old_meta = ET.fromstring(old_xml).find("metadata")
    if old_meta is None:
        return new_xml
    root = ET.fromstring(new_xml)
    new_meta = root.find("metadata")
    present = {_namespace(child) for child in (new_meta if new_meta is not None else ())}
    kept = [
        child
        for child in old_meta
        if _namespace(child).startswith(prefix) and _namespace(child) not in present
    ]
    if not kept:
        return new_xml
    if new_meta is None:
        new_meta = ET.SubElement(root, "metadata")
    for child in kept:
        namespace = _namespace(child)
        key = namespace[len(prefix) :]
        if _PREFIX.fullmatch(key) and not _RESERVED_PREFIX.fullmatch(key):
            ET.register_namespace(key, namespace)  # keep the prefix libvirt shows
        new_meta.append(child)
    return ET.tostring(root, encoding="unicode")


class Metadata(Connection):
    """Read and write runtime metadata elements, keyed by domain UUID and key."""

    async def set_metadata(self, uuid: str, key: str, xml: str | None) -> None:
        """Store one XML element in the domain under runtime namespace `key`; None removes it.

        Written to the persistent definition always and to the live one when the domain
        runs. Removing what is not there is a no-op.
        """
        namespace = runtime_namespace(self.metadata_ns, key)
        kind = libvirt.VIR_DOMAIN_METADATA_ELEMENT
        prefix = key if xml is not None else None

        def write(dom: Any) -> None:
            flags = affect_flags(dom)
            try:
                apply_both(lambda f: dom.setMetadata(kind, xml, prefix, namespace, f), flags)
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID or flags == (
                    libvirt.VIR_DOMAIN_AFFECT_CONFIG
                ):
                    raise
                # stopped (or saved) between the check and the call: the config is the truth
                dom.setMetadata(kind, xml, prefix, namespace, libvirt.VIR_DOMAIN_AFFECT_CONFIG)

        await self._with_domain(uuid, write)

    async def metadata(self, uuid: str, key: str) -> str | None:
        """The element stored by `set_metadata` (from the persistent definition), or None."""
        namespace = runtime_namespace(self.metadata_ns, key)
        return await self._with_domain(uuid, lambda dom: read_metadata(dom, namespace))

    async def metadata_of_all(self, key: str) -> dict[str, str]:
        """`metadata(uuid, key)` of every domain that has it, keyed by UUID (one hop)."""
        namespace = runtime_namespace(self.metadata_ns, key)

        def read_all(conn: Any) -> dict[str, str]:
            out = {}
            for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_PERSISTENT):
                with contextlib.suppress(libvirt.libvirtError):  # vanished while listing
                    value = read_metadata(dom, namespace)
                    if value is not None:
                        out[dom.UUIDString()] = value
            return out

        return await self._call(read_all)


def read_metadata(dom: Any, namespace: str) -> str | None:
    """Blocking: the element in `namespace` of the persistent definition, or None."""
    kind = libvirt.VIR_DOMAIN_METADATA_ELEMENT
    try:
        return str(dom.metadata(kind, namespace, libvirt.VIR_DOMAIN_AFFECT_CONFIG))
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
            return None
        raise

"""`virtualpod logs`: a VM's serial console, from the log file its domain writes.

Every domain's first serial port is a file (`consoleLogDir/<domain>.console.log`, kept
across restarts, appended): the boot and whatever the workload prints on the console.
Its path is read from the domain's own XML, so the command shows what libvirt writes.
The file lives on the libvirt host: run the command there (or in the agent's Pod).
"""

from __future__ import annotations

import argparse
import asyncio
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TextIO

from virtualpod.core.domain import domain_name
from virtualpod.core.quantity import KIB
from virtualpod.core.settings import SettingsError, load_settings
from virtualpod.libvirt.hypervisor import DomainNotFound, Hypervisor, HypervisorError

FOLLOW_POLL_SECONDS = 0.5
CHUNK_BYTES = 64 * KIB


def console_log_path(domain_xml: str) -> str | None:
    """The file the domain's first serial port writes to, if it is a file."""
    for serial in ET.fromstring(domain_xml).findall("devices/serial"):
        source = serial.find("source")
        if serial.get("type") == "file" and source is not None and source.get("path"):
            return source.get("path")
    return None


def read_from(path: Path, offset: int) -> tuple[bytes, int]:
    """What the file holds past `offset` (all of it again if it was truncated)."""
    size = path.stat().st_size
    if size < offset:
        offset = 0
    with path.open("rb") as handle:
        handle.seek(offset)
        data = handle.read()
    return data, offset + len(data)


async def find_console(uri: str, namespace: str, name: str) -> Path:
    """The console log of VirtualPod namespace/name on the libvirt at `uri`."""
    async with Hypervisor(uri) as hv:
        info = await hv.lookup_name(domain_name(namespace, name))
        path = console_log_path(await hv.xml(info.uuid, inactive=True))
    if path is None:
        raise HypervisorError(f"domain {info.name} has no serial console log file")
    return Path(path)


async def print_console(path: Path, out: TextIO, follow: bool) -> None:
    offset = 0
    while True:
        data, offset = read_from(path, offset)
        if data:
            out.write(data.decode("utf-8", errors="replace"))
            out.flush()
        if not follow:
            return
        await asyncio.sleep(FOLLOW_POLL_SECONDS)


def cmd_logs(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Entry point of `virtualpod logs NAME [-n NS] [--follow]`."""
    try:
        settings = load_settings(args.config)
    except SettingsError as error:
        err.write(f"error: {error}\n")
        return 2
    uri = args.libvirt_uri or settings.libvirt_uri
    try:
        path = asyncio.run(find_console(uri, args.namespace, args.name))
    except DomainNotFound:
        err.write(f"error: no VM for VirtualPod {args.namespace}/{args.name} on {uri}\n")
        return 1
    except HypervisorError as error:
        err.write(f"error: {error}\n")
        return 1
    if not path.exists():
        err.write(f"error: {path} does not exist yet (the VM has not started on this host)\n")
        return 1
    try:
        asyncio.run(print_console(path, out, args.follow))
    except OSError as error:
        err.write(f"error: cannot read {path}: {error.strerror}\n")
        return 1
    return 0

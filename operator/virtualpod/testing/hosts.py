"""Stand-in libvirt hosts for running several agents in one test process.

A real host's libvirtd outlives its agent: an agent that restarts finds the VMs it
left, and two hosts never see each other's VMs. libvirt's test driver gives neither in
one process: `test:///default` is one state for the whole process, and every new
connection to a test-driver file (`test:///abs/path/node-a.xml`) starts from the file
again. `EmulatedHosts` keeps one test-driver connection per host (its own node file:
cpus, memory) for as long as it is open, and while it is, `libvirt.open(uri)` of that
host's URI lends that connection (a `close()` leaves it open, as a disconnecting client
leaves libvirtd running). Tests, the bench and the demo only; never the product.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt

from virtualpod.core.quantity import KIB

#: What `libvirt.open` was before any `EmulatedHosts` patched it.
_ORIGINAL_OPEN: Callable[..., Any] = libvirt.open
#: URI -> the connection kept for that host, while its `EmulatedHosts` is open.
_KEPT: dict[str, Any] = {}

NODE_XML = """<node>
  <cpu>
    <mhz>2000</mhz>
    <model>x86_64</model>
    <active>{cpus}</active>
    <nodes>1</nodes>
    <sockets>1</sockets>
    <cores>{cpus}</cores>
    <threads>1</threads>
  </cpu>
  <memory>{memory_kib}</memory>
</node>
"""


class LentConnection:
    """A host's kept connection as one client sees it: closing it keeps the host."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def close(self) -> int:
        return 0

    def registerCloseCallback(self, *_: Any) -> int:  # noqa: N802 (libvirt's name)
        """The host never goes away while lent: nothing to watch."""
        return 0

    def unregisterCloseCallback(self) -> int:  # noqa: N802 (libvirt's name)
        return 0

    def domainEventRegisterAny(  # noqa: N802 (libvirt's name)
        self, dom: Any, event_id: int, callback: Callable[..., Any], opaque: Any
    ) -> int:
        """A killed agent's loop is closed: its callbacks must not raise into libvirt."""

        def guarded(*args: Any) -> None:
            with contextlib.suppress(RuntimeError):
                callback(*args)

        return int(self._conn.domainEventRegisterAny(dom, event_id, guarded, opaque))


def _open(uri: str | None = None, *args: Any) -> Any:
    if uri is not None and uri in _KEPT:
        return LentConnection(_KEPT[uri])
    return _ORIGINAL_OPEN(uri, *args)


@dataclass(frozen=True)
class EmulatedHost:
    name: str
    uri: str
    cpus: int
    memory_bytes: int

    @property
    def connection(self) -> Any:
        """The host's own connection (what `virsh -c URI` would show)."""
        return _KEPT[self.uri]

    def domain_names(self) -> set[str]:
        return {dom.name() for dom in self.connection.listAllDomains()}


class EmulatedHosts:
    """`with EmulatedHosts(dir) as hosts: a = hosts.add("node-a")`; gone on exit."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.hosts: dict[str, EmulatedHost] = {}

    def add(self, name: str, *, cpus: int = 16, memory_bytes: int = 64 * 2**30) -> EmulatedHost:
        path = (self.directory / f"{name}.xml").resolve()
        path.write_text(NODE_XML.format(cpus=cpus, memory_kib=memory_bytes // KIB))
        uri = f"test://{path}"
        if uri in _KEPT:
            raise ValueError(f"host {name} is already open in this process")
        _KEPT[uri] = _ORIGINAL_OPEN(uri)
        host = self.hosts[name] = EmulatedHost(name, uri, cpus, memory_bytes)
        return host

    def __enter__(self) -> EmulatedHosts:
        libvirt.open = _open
        return self

    def __exit__(self, *_: object) -> None:
        for host in self.hosts.values():
            conn = _KEPT.pop(host.uri, None)
            if conn is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    conn.close()
        if not _KEPT:
            libvirt.open = _ORIGINAL_OPEN

    def __iter__(self) -> Iterator[EmulatedHost]:
        return iter(self.hosts.values())

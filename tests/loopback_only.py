"""The test process talks only to this machine: a guard on every outgoing connection.

Tests send traffic to 127.0.0.1 (the emulated API, download servers, port forwards to
guests) and to Unix sockets; a connection or name lookup aimed anywhere else is a bug in
the test or the code under test, and fails loudly instead of leaving the machine.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any

LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class ExternalTrafficRefusedError(ConnectionRefusedError):
    """A test tried to reach an address that is not this machine's loopback."""


def is_local_host(host: object) -> bool:
    """Loopback addresses and names only (a None host is the local machine too)."""
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    if host.lower() in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def is_local_address(family: int, address: Any) -> bool:
    if family not in (socket.AF_INET, socket.AF_INET6):
        return True  # Unix sockets and the like stay on the machine
    return isinstance(address, tuple) and is_local_host(address[0])


def install() -> Callable[[], None]:
    """Refuse non-loopback connects and name lookups in this process; returns the undo."""
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex
    getaddrinfo = socket.getaddrinfo

    def refuse_elsewhere(family: int, address: Any) -> None:
        if not is_local_address(family, address):
            raise ExternalTrafficRefusedError(f"tests may only reach loopback, not {address!r}")

    def guarded_connect(self: socket.socket, address: Any) -> None:
        refuse_elsewhere(self.family, address)
        connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> int:
        refuse_elsewhere(self.family, address)
        return connect_ex(self, address)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not is_local_host(host):
            raise ExternalTrafficRefusedError(f"tests may only look up loopback, not {host!r}")
        return getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = guarded_connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = guarded_connect_ex  # type: ignore[method-assign,assignment]
    socket.getaddrinfo = guarded_getaddrinfo

    def undo() -> None:
        socket.socket.connect = connect  # type: ignore[method-assign]
        socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
        socket.getaddrinfo = getaddrinfo

    return undo

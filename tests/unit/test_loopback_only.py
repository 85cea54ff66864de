"""The guard that keeps the test process's traffic on this machine."""

from __future__ import annotations

import socket

import pytest

from tests.loopback_only import ExternalTrafficRefusedError, is_local_host


@pytest.mark.parametrize(
    ("host", "local"),
    [
        pytest.param("127.0.0.1", True, id="ipv4-loopback"),
        pytest.param("127.8.9.10", True, id="whole-127-range"),
        pytest.param("::1", True, id="ipv6-loopback"),
        pytest.param("localhost", True, id="localhost-name"),
        pytest.param(None, True, id="no-host-is-local"),
        pytest.param("10.0.2.15", False, id="private-range"),
        pytest.param("192.168.122.1", False, id="libvirt-default-network"),
        pytest.param("8.8.8.8", False, id="public"),
        pytest.param("images.example.com", False, id="any-other-name"),
    ],
)
def test_only_loopback_counts_as_local(host: str | None, local: bool) -> None:
    assert is_local_host(host) is local


def test_a_connection_elsewhere_is_refused_before_it_leaves() -> None:
    with socket.socket() as sock, pytest.raises(ExternalTrafficRefusedError):
        sock.connect(("192.0.2.1", 80))  # TEST-NET-1: refused by the guard, never sent


def test_a_name_lookup_elsewhere_is_refused() -> None:
    with pytest.raises(ExternalTrafficRefusedError):
        socket.getaddrinfo("images.example.com", 443)


def test_loopback_still_works() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5):
            pass

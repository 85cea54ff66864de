"""Image downloads against an HTTP server on 127.0.0.1 that the test starts itself."""

from __future__ import annotations

import hashlib
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtualpod.libvirt.download import ChecksumMismatch, DownloadFailed, download

IMAGE = bytes(range(256)) * 4096  # 1 MiB
DIGEST = hashlib.sha256(IMAGE).hexdigest()
STALL_TIMEOUT = 0.5


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    released = threading.Event()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/image.qcow2":
            self.send_response(200)
            self.send_header("Content-Length", str(len(IMAGE)))
            self.end_headers()
            self.wfile.write(IMAGE)
        elif self.path == "/stall.qcow2":  # headers and a little data, then nothing
            self.send_response(200)
            self.send_header("Content-Length", str(len(IMAGE)))
            self.end_headers()
            self.wfile.write(IMAGE[:1000])
            self.wfile.flush()
            assert isinstance(self.server, Server)
            self.server.released.wait(30)
        else:
            self.send_error(404, "Not Found")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.released.set()
    httpd.shutdown()
    httpd.server_close()


def test_a_good_file_arrives_whole_with_its_digest(server: str, tmp_path: Path) -> None:
    got = download(f"{server}/image.qcow2", tmp_path / "img", sha256=DIGEST, timeout=5)
    assert (got.size_bytes, got.sha256) == (len(IMAGE), DIGEST)
    assert (tmp_path / "img").read_bytes() == IMAGE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img"]


def test_without_a_pinned_digest_the_file_is_taken(server: str, tmp_path: Path) -> None:
    assert (
        download(f"{server}/image.qcow2", tmp_path / "img", sha256=None, timeout=5).sha256 == DIGEST
    )


def test_a_checksum_mismatch_leaves_nothing(server: str, tmp_path: Path) -> None:
    wrong = "0" * 64
    with pytest.raises(
        ChecksumMismatch, match=f"sha256 is {DIGEST}, the image reference pins {wrong}"
    ):
        download(f"{server}/image.qcow2", tmp_path / "img", sha256=wrong, timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_file_is_a_failed_download(server: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadFailed, match="HTTP 404") as caught:
        download(f"{server}/missing.qcow2", tmp_path / "img", sha256=None, timeout=5)
    assert caught.value.reason == "DownloadFailed"
    assert list(tmp_path.iterdir()) == []


def test_a_stalling_server_times_out(server: str, tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(DownloadFailed, match="timed out"):
        download(f"{server}/stall.qcow2", tmp_path / "img", sha256=None, timeout=STALL_TIMEOUT)
    assert time.monotonic() - started < 10 * STALL_TIMEOUT
    assert list(tmp_path.iterdir()) == []


def test_nothing_listening_is_a_failed_download(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DownloadFailed, match="refused"):
        download(f"http://127.0.0.1:{port}/x", tmp_path / "img", sha256=None, timeout=2)

"""Plain-HTTP forward proxying through ``socks-sansio serve``, on both backends, with real clients.

curl without ``-p`` and httpx send ``GET http://host/path`` to an ``http://``
proxy for ``http://`` URLs; the server forwards it (absolute form to origin
form, hop-by-hop fields removed, ``Via`` added) to a local HTTP/1.1 origin that
counts its connections and records what it received. Also: keep-alive reuse
of both connections, request bodies (Content-Length and chunked, with
``Expect: 100-continue``), authentication, the access rules, one log line per
request, a CONNECT on a connection that forwarded a request before, and an
upstream route through a real Dante.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.peer_servers import PeerServer, dante_server

from .conftest import (
    HOST,
    PASSWORD,
    TIMEOUT,
    USER,
    ProxyFactory,
    connect,
    http_status,
    read_http_head,
    read_until_eof,
    run_curl,
)


class Origin(ThreadingHTTPServer):
    """An HTTP/1.1 origin that keeps connections alive, counts them and records every request."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__((HOST, 0), _Handler)
        self.connections = 0
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.lock = threading.Lock()

    def get_request(self) -> Any:
        accepted = super().get_request()
        with self.lock:
            self.connections += 1
        return accepted

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Origin

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _record(self, body: bytes) -> None:
        with self.server.lock:
            self.server.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                                         body))  # fmt: skip

    def do_GET(self) -> None:
        self._record(b"")
        self._answer(f"GET {self.path} from the origin\n".encode())

    def do_POST(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                body += self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._record(body)
        self._answer(b"received %d octets\n" % len(body))

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def origin() -> Iterator[Origin]:
    server = Origin()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


def proxy_url(proxy: Any, auth: str = "") -> str:
    return f"http://{auth}{HOST}:{proxy.port}"


def test_curl_without_connect(start_proxy: ProxyFactory, origin: Origin) -> None:
    proxy = start_proxy()
    result = run_curl("-x", proxy_url(proxy), f"http://{HOST}:{origin.port}/a/b?c=d")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "GET /a/b?c=d from the origin\n"
    method, path, headers, _ = origin.requests[0]
    assert (method, path) == ("GET", "/a/b?c=d"), "absolute form became origin form"
    assert headers["host"] == f"{HOST}:{origin.port}"
    assert "socks-sansio" in headers["via"]
    assert "proxy-connection" not in headers, "hop-by-hop fields are not forwarded"
    line = proxy.wait_log("outcome=ok")
    assert f"cmd=GET target={HOST}:{origin.port}" in line


def test_httpx_keeps_both_connections_alive(start_proxy: ProxyFactory, origin: Origin) -> None:
    proxy = start_proxy()
    with httpx.Client(proxy=proxy_url(proxy), timeout=TIMEOUT) as client:
        for i in range(5):
            response = client.get(f"http://{HOST}:{origin.port}/{i}")
            assert response.status_code == 200 and response.text == f"GET /{i} from the origin\n"
        posted = client.post(f"http://{HOST}:{origin.port}/upload", content=b"x" * 70_000)
        assert posted.text == "received 70000 octets\n"
        chunked = client.post(f"http://{HOST}:{origin.port}/chunks", content=iter([b"one ", b"two ", b"three"]))
        assert chunked.text == "received 13 octets\n"
    assert origin.connections == 1, "one connection to the origin for every request"
    assert origin.requests[-1][3] == b"one two three"
    assert len(proxy.wait_log("outcome=ok", count=7).splitlines()) >= 1


def test_expect_100_continue_is_answered_by_the_proxy(
    start_proxy: ProxyFactory, origin: Origin, tmp_path: Path
) -> None:
    proxy = start_proxy()
    body = tmp_path / "body"
    body.write_bytes(b"y" * 200_000)
    result = run_curl(
        "-x", proxy_url(proxy), "-H", "Expect: 100-continue", "--data-binary", f"@{body}",
        f"http://{HOST}:{origin.port}/e",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "received 200000 octets\n"
    assert "expect" not in origin.requests[0][2], "the expectation was met here, not forwarded"


def test_authentication_is_required_and_never_forwarded(start_proxy: ProxyFactory, origin: Origin) -> None:
    proxy = start_proxy("--auth", f"{USER}:{PASSWORD}")
    url = f"http://{HOST}:{origin.port}/secret"
    assert run_curl("-x", proxy_url(proxy), "-w", "%{http_code}", "-o", "/dev/null", url).stdout == "407"
    assert run_curl("-x", proxy_url(proxy, f"{USER}:wrong@"), "-w", "%{http_code}", "-o", "/dev/null",
                    url).stdout == "407"  # fmt: skip
    result = run_curl("-x", proxy_url(proxy, f"{USER}:{PASSWORD}@"), url)
    assert result.stdout == "GET /secret from the origin\n"
    assert all("proxy-authorization" not in headers for _, _, headers, _ in origin.requests)
    log = proxy.log()
    assert PASSWORD not in log and f"user={USER}" in log


def test_the_ssrf_guard_applies_to_forwarded_requests(start_proxy: ProxyFactory, origin: Origin) -> None:
    proxy = start_proxy("--block-private")
    result = run_curl("-x", proxy_url(proxy), "-w", "%{http_code}", "-o", "/dev/null",
                      f"http://{HOST}:{origin.port}/")  # fmt: skip
    assert result.stdout == "403"
    assert origin.requests == []
    assert "outcome=denied" in proxy.wait_log("outcome=denied")


def test_a_connect_after_a_forwarded_request(start_proxy: ProxyFactory, origin: Origin) -> None:
    proxy = start_proxy()
    with connect(proxy.address) as sock:
        sock.sendall(f"GET http://{HOST}:{origin.port}/first HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = read_http_head(sock)
        assert http_status(head) == 200
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        assert sock.recv(length) == b"GET /first from the origin\n"
        sock.sendall(f"CONNECT {HOST}:{origin.port} HTTP/1.1\r\nHost: {HOST}:{origin.port}\r\n\r\n".encode())
        assert http_status(read_http_head(sock)) == 200
        sock.sendall(b"GET /tunnelled HTTP/1.0\r\n\r\n")
        assert read_until_eof(sock).endswith(b"GET /tunnelled from the origin\n")
    lines = proxy.wait_log("cmd=CONNECT")
    assert "cmd=GET" in proxy.log()
    assert "outcome=ok" in lines


def test_forwarding_through_an_upstream_dante(start_proxy: ProxyFactory, dante: PeerServer, origin: Origin) -> None:
    proxy = start_proxy("--upstream", f"socks5h://{dante.url}")
    result = run_curl("-x", proxy_url(proxy), f"http://{HOST}:{origin.port}/via-dante")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "GET /via-dante from the origin\n"


@pytest.fixture
def dante() -> Iterator[PeerServer]:
    with dante_server() as server:
        yield server


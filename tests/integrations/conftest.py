"""Fixtures for the httpx and aiohttp integrations, end to end on 127.0.0.1.

Origins: :class:`CountingOrigin`, an ``http.server`` in a thread (plain HTTP or
HTTPS with the trustme CA of :class:`tests.adapters.servers.TLSFiles`) that
counts the TCP connections it accepted, so keep-alive reuse is a number.

Proxies: ``socks-sansio serve`` in this process (``in_process_servers`` from
tests/server/conftest.py: the asyncio ``ProxyServer`` on its own loop in a
thread), plain, with a password, or listening inside TLS (an ``https://``
proxy); and the real third-party peers of tests/peer_servers.py (Dante,
microsocks, tinyproxy), which skip when missing, or fail under ``CI=true``.
Scripted proxies (tests/adapters/servers.py) send the final reply and the
first response octets in one segment.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from socks_sansio import UserDatabase
from tests.adapters.servers import TIMEOUT, TLSFiles
from tests.peer_servers import PeerServer, dante_server, microsocks_server, tinyproxy_server
from tests.server.conftest import HOST, PASSWORD, USER, InProcessProxy, closed_port, in_process_servers

__all__ = [
    "HOST",
    "PASSWORD",
    "USER",
    "CountingOrigin",
    "ProxyFactory",
    "closed_port",
    "tls_in_tls",
    "url_of",
]

ProxyFactory = Callable[..., InProcessProxy]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    timeout = TIMEOUT  # an idle kept-alive connection ends its thread after this

    def do_GET(self) -> None:
        body = f"page {self.path} for {self.headers['Host']}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class CountingOrigin(ThreadingHTTPServer):
    """An HTTP/1.1 origin on 127.0.0.1 that counts the connections it accepted; ``close()`` joins its threads."""

    daemon_threads = False
    block_on_close = True  # server_close() joins every handler thread

    def __init__(self, files: TLSFiles | None = None) -> None:
        super().__init__((HOST, 0), _Handler)
        if files is not None:
            self.socket = files.server_context().wrap_socket(self.socket, server_side=True)
        self.scheme = "https" if files else "http"
        self.connections = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def get_request(self) -> tuple[socket.socket, Any]:
        request = super().get_request()
        with self._lock:
            self.connections += 1
        return request

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str = "/", host: str = HOST) -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def expected(self, path: str, host: str = HOST) -> str:
        """The body the origin answers a GET of *path* with."""
        return f"page {path} for {host}:{self.port}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(TIMEOUT)


@pytest.fixture(scope="package")
def files() -> TLSFiles:
    return TLSFiles()


@pytest.fixture(scope="package")
def tls_paths(files: TLSFiles, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The certificate chain and key of :func:`files` as PEM files (for a TLS listener)."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    for index, pem in enumerate(files.cert.cert_chain_pems):
        pem.write_to_path(str(cert), append=index > 0)
    files.cert.private_key_pem.write_to_path(str(key))
    return {"cert": str(cert), "key": str(key)}


@pytest.fixture
def https_origin(files: TLSFiles) -> Iterator[CountingOrigin]:
    origin = CountingOrigin(files)
    try:
        yield origin
    finally:
        origin.close()


@pytest.fixture
def http_origin() -> Iterator[CountingOrigin]:
    origin = CountingOrigin()
    try:
        yield origin
    finally:
        origin.close()


@pytest.fixture
def serve() -> Iterator[ProxyFactory]:
    """``serve(**ServerConfig fields)``: ``socks-sansio serve`` in this process (closed after the test).

    On one event loop (asyncio's, or ``SOCKS_SANSIO_TEST_LOOP``): the server's loops are the server
    tests' concern, and these tests pick their proxy by name at run time (``getfixturevalue``).
    """
    with in_process_servers("auto") as start:
        yield start


@pytest.fixture
def sansio_proxy(serve: ProxyFactory) -> InProcessProxy:
    """``socks-sansio serve`` without authentication: SOCKS5, SOCKS4/4a and HTTP CONNECT on one port."""
    return serve()


@pytest.fixture
def sansio_auth_proxy(serve: ProxyFactory) -> InProcessProxy:
    """``socks-sansio serve --auth alice:s3cret``."""
    return serve(users=UserDatabase({USER: PASSWORD}))


@pytest.fixture
def sansio_tls_proxy(serve: ProxyFactory, tls_paths: dict[str, str]) -> InProcessProxy:
    """``socks-sansio serve --listen tls://127.0.0.1:0``: an ``https://`` proxy (and SOCKS over TLS)."""
    return serve(listen=(), tls_listen=((HOST, 0),), tls_cert=tls_paths["cert"], tls_key=tls_paths["key"])


def tls_in_tls(flavor: str, error: type[BaseException]) -> contextlib.AbstractContextManager[object]:
    """Nothing where TLS inside TLS works (not asyncio before Python 3.11); else ``pytest.raises`` its error."""
    if flavor != "asyncio" or sys.version_info >= (3, 11):
        return contextlib.nullcontext()
    return pytest.raises(error, match=r"needs Python 3\.11")  # pragma: no cover - Python 3.10


def url_of(scheme: str, proxy: InProcessProxy | PeerServer, credentials: str = "") -> str:
    """A proxy URL such as ``socks5h://alice:s3cret@127.0.0.1:PORT``."""
    host, port = proxy.address
    return f"{scheme}://{credentials}{host}:{port}"


@pytest.fixture(scope="package")
def dante() -> Iterator[PeerServer]:
    with dante_server() as peer:
        yield peer


@pytest.fixture(scope="package")
def microsocks() -> Iterator[PeerServer]:
    with microsocks_server() as peer:
        yield peer


@pytest.fixture(scope="package")
def microsocks_auth() -> Iterator[PeerServer]:
    with microsocks_server(username=USER, password=PASSWORD) as peer:
        yield peer


@pytest.fixture(scope="package")
def tinyproxy() -> Iterator[PeerServer]:
    with tinyproxy_server() as peer:
        yield peer


@pytest.fixture(scope="package")
def tinyproxy_auth() -> Iterator[PeerServer]:
    with tinyproxy_server(username=USER, password=PASSWORD) as peer:
        yield peer

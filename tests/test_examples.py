"""The examples run: ``examples/httpx_sync.py`` sends HTTPS requests through real proxies.

The origin is an ``http.server`` on 127.0.0.1 behind TLS (the trustme CA of
:class:`tests.adapters.servers.TLSFiles`); the proxies are microsocks
(``socks5h://``), tinyproxy (``http://``) and a TLS forwarder in front of
tinyproxy (``https://``, so TLS to the origin runs inside TLS).
"""

from __future__ import annotations

import http.server
import importlib.util
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from .adapters.servers import TIMEOUT, TLSFiles, serve, tls_forwarder
from .peer_servers import PeerServer, microsocks_server, tinyproxy_server

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def httpx_sync() -> ModuleType:
    return load_example("httpx_sync")


@pytest.fixture(scope="module")
def files() -> TLSFiles:
    return TLSFiles()


class _Origin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = f"secret page {self.path} for {self.headers['Host']}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def https_origin(files: TLSFiles) -> Iterator[str]:
    """An HTTPS origin on 127.0.0.1; yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    server.daemon_threads = True
    server.socket = files.server_context().wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


@pytest.fixture(scope="module")
def microsocks() -> Iterator[PeerServer]:
    with microsocks_server() as peer:
        yield peer


@pytest.fixture(scope="module")
def tinyproxy() -> Iterator[PeerServer]:
    with tinyproxy_server() as peer:
        yield peer


def fetch_twice(httpx_sync: ModuleType, files: TLSFiles, proxy: object, origin: str) -> None:
    with httpx_sync.client(proxy, verify=files.client_context(), proxy_ssl=files.client_context()) as client:
        for path in ("/one", "/two"):  # the second request may reuse the pooled connection
            response = client.get(f"{origin}{path}")
            assert response.status_code == 200
            assert response.text == f"secret page {path} for {origin.removeprefix('https://')}"
            assert response.http_version == "HTTP/1.1"


def test_https_through_socks5h(
    httpx_sync: ModuleType, files: TLSFiles, microsocks: PeerServer, https_origin: str
) -> None:
    fetch_twice(httpx_sync, files, f"socks5h://{microsocks.url}", https_origin)


def test_https_through_http_proxy(
    httpx_sync: ModuleType, files: TLSFiles, tinyproxy: PeerServer, https_origin: str
) -> None:
    fetch_twice(httpx_sync, files, f"http://{tinyproxy.url}", https_origin)


def test_https_through_a_chain(
    httpx_sync: ModuleType, files: TLSFiles, microsocks: PeerServer, tinyproxy: PeerServer, https_origin: str
) -> None:
    fetch_twice(httpx_sync, files, [f"socks5h://{microsocks.url}", f"http://{tinyproxy.url}"], https_origin)


def test_https_through_an_https_proxy(
    httpx_sync: ModuleType, files: TLSFiles, tinyproxy: PeerServer, https_origin: str
) -> None:
    with serve(tls_forwarder(files, tinyproxy.address)) as forwarder:
        fetch_twice(httpx_sync, files, f"https://127.0.0.1:{forwarder.port}", https_origin)


def test_proxy_failures_are_httpx_errors(httpx_sync: ModuleType, files: TLSFiles, https_origin: str) -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    with (
        httpx_sync.client(f"socks5h://user:pw-hidden@127.0.0.1:{port}", verify=files.client_context()) as client,
        pytest.raises(httpx.ConnectError) as caught,
    ):
        client.get(https_origin)
    assert "pw-hidden" not in str(caught.value)

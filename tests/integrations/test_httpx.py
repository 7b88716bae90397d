"""httpx through proxies with ``SyncProxyTransport`` and ``AsyncProxyTransport`` (on asyncio and on trio).

Every test runs three ways (``flavor``): ``httpx.Client`` with the sync
transport, ``httpx.AsyncClient`` with the async one under ``asyncio.run`` and
under ``trio.run``. The proxies are ``socks-sansio serve`` (in this process)
and the real peers (Dante, microsocks, tinyproxy); the origins count their TCP
connections, so keep-alive reuse is checked as "one connection for several
requests". Every client has a 10 s time-out; every server is closed by its fixture.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest
import trio

from socks_sansio import (
    ProxyAuthError,
    ProxyConnectionError,
    ProxyError,
    ProxyRefusedError,
    ProxyTimeoutError,
    ProxyURL,
)
from socks_sansio.adapters.httpx import AsyncProxyTransport, SyncProxyTransport
from tests.adapters.servers import SOCKS5_OK, TIMEOUT, TLSFiles, recv_exactly, serve, socks5_connect_handler
from tests.peer_servers import PeerServer
from tests.server.conftest import InProcessProxy

from .conftest import HOST, PASSWORD, USER, CountingOrigin, closed_port, tls_in_tls, url_of
from .h2_origin import H2Origin

FLAVORS = ("sync", "asyncio", "trio")

Proxy = str | ProxyURL | Sequence[str | ProxyURL] | None


def get_all(flavor: str, proxy: Proxy, urls: Sequence[str], *, env: dict[str, str] | None = None,
            timeout: float = TIMEOUT, **options: Any) -> list[httpx.Response]:  # fmt: skip
    """GET each of *urls* in turn with one client (so one pool) through *proxy*; the responses, read."""
    if flavor == "sync":
        sync = SyncProxyTransport(proxy, **options) if env is None else SyncProxyTransport.from_env(env, **options)
        with httpx.Client(transport=sync, timeout=timeout) as client:
            return [client.get(url) for url in urls]

    async def run() -> list[httpx.Response]:
        transport = (
            AsyncProxyTransport(proxy, **options) if env is None else AsyncProxyTransport.from_env(env, **options)
        )
        async with httpx.AsyncClient(transport=transport, timeout=timeout) as client:
            return [await client.get(url) for url in urls]

    return asyncio.run(run()) if flavor == "asyncio" else trio.run(run)


def check_pages(responses: Sequence[httpx.Response], origin: CountingOrigin, paths: Sequence[str]) -> None:
    assert [r.status_code for r in responses] == [200] * len(paths)
    assert [r.text for r in responses] == [origin.expected(path) for path in paths]


def fetch(flavor: str, proxy: Proxy, origin: CountingOrigin, files: TLSFiles, count: int = 3, **options: Any) -> None:
    """*count* GETs of *origin* through *proxy*: all answered, all on one kept-alive connection."""
    paths = [f"/page{i}" for i in range(count)]
    options.setdefault("verify", files.client_context())
    check_pages(get_all(flavor, proxy, [origin.url(p) for p in paths], **options), origin, paths)
    assert origin.connections == 1, "keep-alive: every request on the same tunnel"


@pytest.fixture(params=FLAVORS)
def flavor(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# ------------------------------------------------------------------ through socks-sansio serve


@pytest.mark.parametrize("scheme", ["socks5h", "socks5", "socks4a", "http"])
def test_https_through_socks_sansio(
    flavor: str, scheme: str, sansio_proxy: InProcessProxy, https_origin: CountingOrigin, files: TLSFiles
) -> None:
    fetch(flavor, url_of(scheme, sansio_proxy), https_origin, files)


def test_plain_http_with_a_password(
    flavor: str, sansio_auth_proxy: InProcessProxy, http_origin: CountingOrigin, files: TLSFiles
) -> None:
    fetch(flavor, url_of("socks5h", sansio_auth_proxy, f"{USER}:{PASSWORD}@"), http_origin, files)


def test_https_through_an_https_proxy(
    flavor: str, sansio_tls_proxy: InProcessProxy, https_origin: CountingOrigin, files: TLSFiles
) -> None:
    """TLS with the proxy, then TLS with the origin inside it."""
    with tls_in_tls(flavor, httpx.ConnectError):
        fetch(flavor, url_of("https", sansio_tls_proxy), https_origin, files, proxy_ssl=files.client_context())


def test_a_chain_of_two_proxies(
    flavor: str, microsocks: PeerServer, sansio_tls_proxy: InProcessProxy, https_origin: CountingOrigin,
    files: TLSFiles,
) -> None:  # fmt: skip
    """microsocks, then an https:// proxy through it: TLS with the origin inside TLS inside SOCKS5."""
    chain = [url_of("socks5h", microsocks), url_of("https", sansio_tls_proxy)]
    with tls_in_tls(flavor, httpx.ConnectError):
        fetch(flavor, chain, https_origin, files, proxy_ssl=files.client_context())


# ------------------------------------------------------------------ through the real peers


def test_socks5h_through_dante(flavor: str, dante: PeerServer, https_origin: CountingOrigin, files: TLSFiles) -> None:
    fetch(flavor, url_of("socks5h", dante), https_origin, files)


def test_socks4_through_dante(flavor: str, dante: PeerServer, http_origin: CountingOrigin, files: TLSFiles) -> None:
    fetch(flavor, url_of("socks4", dante), http_origin, files)  # Dante has no SOCKS4a


def test_http_proxy_tinyproxy(
    flavor: str, tinyproxy: PeerServer, https_origin: CountingOrigin, files: TLSFiles
) -> None:
    fetch(flavor, url_of("http", tinyproxy), https_origin, files)


def test_a_chain_of_two_peers(
    flavor: str, dante: PeerServer, tinyproxy_auth: PeerServer, https_origin: CountingOrigin, files: TLSFiles
) -> None:
    fetch(
        flavor, [url_of("socks5h", dante), url_of("http", tinyproxy_auth, f"{USER}:{PASSWORD}@")], https_origin, files
    )


def test_microsocks_with_a_password(
    flavor: str, microsocks_auth: PeerServer, https_origin: CountingOrigin, files: TLSFiles
) -> None:
    fetch(flavor, url_of("socks5h", microsocks_auth, f"{USER}:{PASSWORD}@"), https_origin, files)


def test_the_network_stream_tells_the_tls_and_the_first_hop(
    flavor: str, sansio_proxy: InProcessProxy, https_origin: CountingOrigin, files: TLSFiles
) -> None:
    def describe(response: httpx.Response) -> tuple[str | None, str | None, int]:
        stream = response.extensions["network_stream"]
        tls = stream.get_extra_info("ssl_object")
        return tls.version(), tls.server_hostname, stream.get_extra_info("server_addr")[1]

    transport_options = {"verify": files.client_context()}
    proxy, url = url_of("socks5h", sansio_proxy), https_origin.url()
    if flavor == "sync":
        with httpx.Client(transport=SyncProxyTransport(proxy, **transport_options), timeout=TIMEOUT) as client:
            seen = describe(client.get(url))
    else:

        async def run() -> tuple[str | None, str | None, int]:
            transport = AsyncProxyTransport(proxy, **transport_options)
            async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT) as client:
                return describe(await client.get(url))

        seen = asyncio.run(run()) if flavor == "asyncio" else trio.run(run)
    assert seen[0] is not None and seen[0].startswith("TLS")
    assert seen[1:] == (HOST, sansio_proxy.address[1])  # TLS with the origin; the TCP peer is the proxy


# ------------------------------------------------------------------ HTTP/2


@pytest.fixture
def h2_origin(files: TLSFiles) -> Iterator[H2Origin]:
    origin = H2Origin(files)
    try:
        yield origin
    finally:
        origin.close()


def fetch_h2(flavor: str, proxy: Proxy, origin: H2Origin, files: TLSFiles, **options: Any) -> None:
    """Three GETs with ``http2=True``: each answered over HTTP/2, all three streams on one tunnel."""
    paths = ["/one", "/two", "/three"]
    responses = get_all(flavor, proxy, [origin.url(p) for p in paths], verify=files.client_context(), http2=True,
                        **options)  # fmt: skip
    assert [(r.http_version, r.status_code, r.text) for r in responses] == [
        ("HTTP/2", 200, origin.expected(path)) for path in paths
    ]
    assert origin.streams == [3], "HTTP/2: every request a stream of the same connection"


@pytest.mark.parametrize("scheme", ["socks5h", "socks4a", "http"])
def test_http2_through_socks_sansio(
    flavor: str, scheme: str, sansio_proxy: InProcessProxy, h2_origin: H2Origin, files: TLSFiles
) -> None:
    """ALPN with the origin runs end to end through the tunnel: httpx offers h2 and the origin takes it."""
    fetch_h2(flavor, url_of(scheme, sansio_proxy), h2_origin, files)


def test_http2_through_dante(flavor: str, dante: PeerServer, h2_origin: H2Origin, files: TLSFiles) -> None:
    fetch_h2(flavor, url_of("socks5h", dante), h2_origin, files)


def test_http2_inside_an_https_proxy(
    flavor: str, sansio_tls_proxy: InProcessProxy, h2_origin: H2Origin, files: TLSFiles
) -> None:
    """The origin's TLS (and its ALPN) inside the proxy's TLS."""
    with tls_in_tls(flavor, httpx.ConnectError):
        fetch_h2(flavor, url_of("https", sansio_tls_proxy), h2_origin, files, proxy_ssl=files.client_context())


# ------------------------------------------------------------------ the hand-over


def test_octets_sent_with_the_final_reply_reach_httpx(flavor: str) -> None:
    """A proxy that sends its reply and the whole HTTP response in one segment, before the request arrives."""
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\nearly bytes"

    def after(conn: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += recv_exactly(conn, 1)
        assert head.startswith(b"GET /early HTTP/1.1\r\n")
        while conn.recv(4096):  # until the client closes
            pass

    with serve(socks5_connect_handler(SOCKS5_OK, extra=response, after=after)) as proxy:
        (answer,) = get_all(flavor, f"socks5h://{HOST}:{proxy.port}", ["http://target.test/early"])
    assert (answer.status_code, answer.text) == (200, "early bytes")


# ------------------------------------------------------------------ errors


def test_a_refused_target(flavor: str, sansio_proxy: InProcessProxy, files: TLSFiles) -> None:
    with pytest.raises(ProxyRefusedError) as caught:
        get_all(flavor, url_of("socks5h", sansio_proxy), [f"https://{HOST}:{closed_port()}/"])
    error = caught.value
    assert isinstance(error, httpx.ProxyError)
    assert (error.protocol, error.code) == ("socks5", 5)  # REP 5: connection refused
    assert isinstance(error.__cause__, ProxyRefusedError) and not isinstance(error.__cause__, httpx.HTTPError)
    assert error.request.url.port == closed_port()  # httpx filled in the request
    assert "refused" in str(error)


def test_a_refused_target_through_tinyproxy(flavor: str, tinyproxy: PeerServer) -> None:
    with pytest.raises(ProxyRefusedError) as caught:
        get_all(flavor, url_of("http", tinyproxy), [f"https://{HOST}:{closed_port()}/"])
    assert isinstance(caught.value, httpx.ProxyError)
    assert caught.value.protocol == "http" and caught.value.code >= 400


@pytest.mark.parametrize("peer", ["socks-sansio", "microsocks", "tinyproxy"])
def test_a_bad_password(
    flavor: str, peer: str, request: pytest.FixtureRequest, https_origin: CountingOrigin, files: TLSFiles
) -> None:
    server = {"socks-sansio": "sansio_auth_proxy", "microsocks": "microsocks_auth", "tinyproxy": "tinyproxy_auth"}
    scheme = "http" if peer == "tinyproxy" else "socks5h"
    url = url_of(scheme, request.getfixturevalue(server[peer]), f"{USER}:wrong-secret@")
    with pytest.raises(ProxyAuthError) as caught:
        get_all(flavor, url, [https_origin.url()], verify=files.client_context())
    assert isinstance(caught.value, httpx.ProxyError) and isinstance(caught.value, ProxyRefusedError)
    assert "wrong-secret" not in str(caught.value)
    assert https_origin.connections == 0


def test_an_unreachable_proxy_is_a_connect_error(flavor: str) -> None:
    with pytest.raises(ProxyConnectionError) as caught:
        get_all(flavor, f"socks5h://{USER}:pw-hidden@{HOST}:{closed_port()}", [f"http://{HOST}:1/"], retries=1)
    assert isinstance(caught.value, httpx.ConnectError)
    assert "pw-hidden" not in str(caught.value)


def test_a_silent_proxy_is_a_connect_timeout(flavor: str) -> None:
    def silent(conn: socket.socket) -> None:
        conn.recv(4096)
        conn.recv(4096)  # until the client gives up and closes

    with serve(silent) as proxy, pytest.raises(ProxyTimeoutError) as caught:
        get_all(flavor, f"socks5h://{HOST}:{proxy.port}", ["http://target.test/"], timeout=0.5)
    assert isinstance(caught.value, httpx.ConnectTimeout) and isinstance(caught.value, ProxyError)


def test_an_untrusted_origin_certificate(
    flavor: str, sansio_proxy: InProcessProxy, https_origin: CountingOrigin
) -> None:
    """TLS with the origin is checked end to end: httpx's default trust store does not know the test CA."""
    with pytest.raises(httpx.ConnectError) as caught:
        get_all(flavor, url_of("socks5h", sansio_proxy), [https_origin.url()])
    assert not isinstance(caught.value, ProxyError)
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)


def test_an_impossible_target_is_unsupported(flavor: str, dante: PeerServer) -> None:
    with pytest.raises(httpx.UnsupportedProtocol):
        get_all(flavor, url_of("socks4", dante), ["http://[::1]:80/"])  # SOCKS4 has no IPv6


# ------------------------------------------------------------------ the environment


def test_from_env_routes_each_request(
    flavor: str, sansio_proxy: InProcessProxy, http_origin: CountingOrigin, files: TLSFiles
) -> None:
    """ALL_PROXY for 127.0.0.1, NO_PROXY for localhost: one tunnel, one direct connection."""
    env = {"ALL_PROXY": url_of("socks5h", sansio_proxy), "NO_PROXY": "localhost"}
    urls = [http_origin.url("/proxied"), http_origin.url("/direct", host="localhost")]
    responses = get_all(flavor, None, urls, env=env)
    assert [r.text for r in responses] == [
        http_origin.expected("/proxied"),
        http_origin.expected("/direct", "localhost"),
    ]
    assert http_origin.connections == 2
    sansio_proxy.wait_stats(lambda stats: sum(stats["tunnels"].values()) == 1 and stats["active"] == 0)


def test_the_constructor_never_reads_the_environment(
    flavor: str, monkeypatch: pytest.MonkeyPatch, http_origin: CountingOrigin
) -> None:
    for name in ("ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, f"socks5h://{HOST}:{closed_port()}")
    (response,) = get_all(flavor, None, [http_origin.url("/direct")])
    assert response.text == http_origin.expected("/direct")


def test_a_bad_environment_fails_at_once() -> None:
    from socks_sansio import LocalProtocolError

    with pytest.raises(LocalProtocolError, match="ALL_PROXY"):
        SyncProxyTransport.from_env({"ALL_PROXY": "socks9://nowhere"})

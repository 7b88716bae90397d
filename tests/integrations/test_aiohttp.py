"""aiohttp through proxies with ``ProxyConnector``, end to end on 127.0.0.1.

The proxies are ``socks-sansio serve`` (in this process) and the real peers
(Dante, microsocks, tinyproxy); the origins count their TCP connections, so
keep-alive reuse is "one connection for several requests". Each session has a
10 s ``ClientTimeout``; every server is closed by its fixture.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from typing import Any

import aiohttp
import pytest

from socks_sansio import (
    LocalProtocolError,
    ProxyAuthError,
    ProxyConnectionError,
    ProxyError,
    ProxyRefusedError,
    ProxyTimeoutError,
    ProxyURL,
)
from socks_sansio.adapters.aiohttp import ProxyConnector
from tests.adapters.servers import SOCKS5_OK, TIMEOUT, TLSFiles, recv_exactly, serve, socks5_connect_handler
from tests.peer_servers import PeerServer
from tests.server.conftest import InProcessProxy

from .conftest import HOST, PASSWORD, USER, CountingOrigin, closed_port, tls_in_tls, url_of

Proxy = str | ProxyURL | Sequence[str | ProxyURL] | None


def get_all(proxy: Proxy, urls: Sequence[str], *, env: dict[str, str] | None = None,
            timeout: aiohttp.ClientTimeout | None = None, **options: Any) -> list[tuple[int, str]]:  # fmt: skip
    """GET each of *urls* in turn with one session (so one pool) through *proxy*; ``(status, text)`` of each."""

    async def run() -> list[tuple[int, str]]:
        connector = ProxyConnector(proxy, **options) if env is None else ProxyConnector.from_env(env, **options)
        answers = []
        async with aiohttp.ClientSession(connector=connector, timeout=timeout or aiohttp.ClientTimeout(TIMEOUT)) as s:
            for url in urls:
                async with s.get(url) as response:
                    answers.append((response.status, await response.text()))
        return answers

    return asyncio.run(run())


def fetch(proxy: Proxy, origin: CountingOrigin, files: TLSFiles, count: int = 3, **options: Any) -> None:
    """*count* GETs of *origin* through *proxy*: all answered, all on one kept-alive connection."""
    paths = [f"/page{i}" for i in range(count)]
    answers = get_all(proxy, [origin.url(p) for p in paths], ssl=files.client_context(), **options)
    assert answers == [(200, origin.expected(p)) for p in paths]
    assert origin.connections == 1, "keep-alive: every request on the same tunnel"


# ------------------------------------------------------------------ routes


@pytest.mark.parametrize("scheme", ["socks5h", "socks4a", "http"])
def test_https_through_socks_sansio(
    scheme: str, sansio_proxy: InProcessProxy, https_origin: CountingOrigin, files: TLSFiles
) -> None:
    fetch(url_of(scheme, sansio_proxy), https_origin, files)


def test_plain_http_with_a_password(
    sansio_auth_proxy: InProcessProxy, http_origin: CountingOrigin, files: TLSFiles
) -> None:
    fetch(url_of("socks5h", sansio_auth_proxy, f"{USER}:{PASSWORD}@"), http_origin, files)


def test_https_through_an_https_proxy(
    sansio_tls_proxy: InProcessProxy, https_origin: CountingOrigin, files: TLSFiles
) -> None:
    """TLS with the proxy by socks-sansio, then aiohttp's TLS with the origin inside it."""
    with tls_in_tls("asyncio", aiohttp.ClientConnectionError):
        fetch(url_of("https", sansio_tls_proxy), https_origin, files, proxy_ssl=files.client_context())


def test_a_chain_of_two_proxies(
    dante: PeerServer, sansio_tls_proxy: InProcessProxy, https_origin: CountingOrigin, files: TLSFiles
) -> None:
    chain = [url_of("socks5h", dante), url_of("https", sansio_tls_proxy)]
    with tls_in_tls("asyncio", aiohttp.ClientConnectionError):
        fetch(chain, https_origin, files, proxy_ssl=files.client_context())


def test_a_chain_of_two_peers(
    microsocks: PeerServer, tinyproxy: PeerServer, https_origin: CountingOrigin, files: TLSFiles
) -> None:
    fetch([url_of("socks5h", microsocks), url_of("http", tinyproxy)], https_origin, files)


def test_socks4_through_dante(dante: PeerServer, http_origin: CountingOrigin, files: TLSFiles) -> None:
    fetch(url_of("socks4", dante), http_origin, files)


def test_http_proxy_tinyproxy_with_a_password(
    tinyproxy_auth: PeerServer, https_origin: CountingOrigin, files: TLSFiles
) -> None:
    fetch(url_of("http", tinyproxy_auth, f"{USER}:{PASSWORD}@"), https_origin, files)


def test_octets_sent_with_the_final_reply_reach_aiohttp() -> None:
    """A proxy that sends its reply and the whole HTTP response in one segment, before the request arrives."""
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\nearly bytes"

    def after(conn: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += recv_exactly(conn, 1)
        assert head.startswith(b"GET /early HTTP/1.1\r\n")
        while conn.recv(4096):
            pass

    with serve(socks5_connect_handler(SOCKS5_OK, extra=response, after=after)) as proxy:
        assert get_all(f"socks5h://{HOST}:{proxy.port}", ["http://target.test/early"]) == [(200, "early bytes")]


# ------------------------------------------------------------------ errors


def test_a_refused_target(sansio_proxy: InProcessProxy) -> None:
    with pytest.raises(ProxyRefusedError) as caught:
        get_all(url_of("socks5h", sansio_proxy), [f"https://{HOST}:{closed_port()}/"])
    error = caught.value
    assert isinstance(error, aiohttp.ClientProxyConnectionError)
    assert (error.protocol, error.code) == ("socks5", 5)
    assert (error.host, error.port) == (HOST, closed_port())
    assert isinstance(error.__cause__, ProxyRefusedError) and not isinstance(error.__cause__, aiohttp.ClientError)
    assert "refused" in str(error)


@pytest.mark.parametrize("peer", ["socks-sansio", "microsocks", "tinyproxy"])
def test_a_bad_password(peer: str, request: pytest.FixtureRequest, https_origin: CountingOrigin) -> None:
    server = {"socks-sansio": "sansio_auth_proxy", "microsocks": "microsocks_auth", "tinyproxy": "tinyproxy_auth"}
    scheme = "http" if peer == "tinyproxy" else "socks5h"
    url = url_of(scheme, request.getfixturevalue(server[peer]), f"{USER}:wrong-secret@")
    with pytest.raises(ProxyAuthError) as caught:
        get_all(url, [https_origin.url()])
    assert isinstance(caught.value, aiohttp.ClientConnectorError)
    assert "wrong-secret" not in str(caught.value)
    assert https_origin.connections == 0


def test_an_unreachable_proxy() -> None:
    with pytest.raises(ProxyConnectionError) as caught:
        get_all(f"socks5h://{USER}:pw-hidden@{HOST}:{closed_port()}", [f"http://{HOST}:1/"])
    assert isinstance(caught.value, aiohttp.ClientProxyConnectionError)
    assert "pw-hidden" not in str(caught.value)


def test_a_silent_proxy_is_a_connection_timeout() -> None:
    def silent(conn: socket.socket) -> None:
        conn.recv(4096)
        conn.recv(4096)  # until the client gives up and closes

    with serve(silent) as proxy, pytest.raises(aiohttp.ServerTimeoutError) as caught:
        get_all(
            f"socks5h://{HOST}:{proxy.port}",
            ["http://target.test/"],
            timeout=aiohttp.ClientTimeout(TIMEOUT, sock_connect=0.5),
        )
    # The session makes every time-out while connecting its own; the library's is under it.
    assert isinstance(caught.value.__cause__, ProxyTimeoutError) and isinstance(caught.value.__cause__, ProxyError)


def test_an_untrusted_origin_certificate(sansio_proxy: InProcessProxy, https_origin: CountingOrigin) -> None:
    """aiohttp's own TLS over the tunnel: its certificate error, for the origin's certificate."""
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        get_all(url_of("socks5h", sansio_proxy), [https_origin.url()])


def test_an_impossible_target(dante: PeerServer) -> None:
    with pytest.raises(aiohttp.ClientConnectionError) as caught:
        get_all(url_of("socks4", dante), ["http://[::1]:80/"])  # SOCKS4 has no IPv6
    assert isinstance(caught.value.__cause__, LocalProtocolError)


def test_a_request_cannot_name_its_own_proxy(sansio_proxy: InProcessProxy) -> None:
    async def run() -> None:
        async with aiohttp.ClientSession(connector=ProxyConnector(url_of("socks5h", sansio_proxy))) as session:
            await session.get(f"http://{HOST}:1/", proxy=f"http://{HOST}:2")

    with pytest.raises(ValueError, match="cannot name its own proxy"):
        asyncio.run(run())


# ------------------------------------------------------------------ the environment


def test_from_env_routes_each_request(sansio_proxy: InProcessProxy, http_origin: CountingOrigin) -> None:
    env = {"ALL_PROXY": url_of("socks5h", sansio_proxy), "NO_PROXY": "localhost"}
    answers = get_all(None, [http_origin.url("/proxied"), http_origin.url("/direct", host="localhost")], env=env)
    assert answers == [(200, http_origin.expected("/proxied")), (200, http_origin.expected("/direct", "localhost"))]
    assert http_origin.connections == 2
    sansio_proxy.wait_stats(lambda stats: sum(stats["tunnels"].values()) == 1 and stats["active"] == 0)

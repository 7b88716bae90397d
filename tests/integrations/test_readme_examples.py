"""The README's "httpx and aiohttp" functions fetch an HTTPS page through ``socks5h://`` and through a chain."""

from __future__ import annotations

import asyncio

import pytest
import trio

from tests.adapters.servers import TLSFiles
from tests.peer_servers import PeerServer
from tests.server.conftest import InProcessProxy
from tests.test_readme import defined

from .conftest import CountingOrigin, url_of


@pytest.fixture
def proxies(sansio_proxy: InProcessProxy, tinyproxy: PeerServer) -> dict[str, str | list[str]]:
    return {
        "socks5h": url_of("socks5h", sansio_proxy),
        "chain": [url_of("socks5h", sansio_proxy), url_of("http", tinyproxy)],
    }


@pytest.mark.parametrize("route", ["socks5h", "chain"])
def test_the_readme_clients(
    route: str, proxies: dict[str, str | list[str]], https_origin: CountingOrigin, files: TLSFiles
) -> None:
    proxy, url, page = proxies[route], https_origin.url("/readme"), https_origin.expected("/readme")
    context = files.client_context()
    assert defined("httpx_get")(url, proxy, verify=context) == page
    assert asyncio.run(defined("httpx_async_get")(url, proxy, verify=context)) == page
    assert trio.run(defined("httpx_async_get"), url, proxy, context) == page
    assert asyncio.run(defined("aiohttp_get")(url, proxy, tls=context)) == page
    assert https_origin.connections == 4  # one client (so one tunnel) each

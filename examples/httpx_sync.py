"""httpx through any proxy chain, with :class:`socks_sansio.adapters.httpx.SyncProxyTransport`.

The transport is an httpx transport over an httpcore connection pool whose
every TCP connection is a tunnel opened by socks-sansio: ``socks5h://``,
``socks4a://``, ``http://`` and ``https://`` proxies, chains (a list of URLs),
one deadline per tunnel (httpx's connect time-out), keep-alive reuse, and TLS to
the origin end to end (inside the proxy's TLS through an ``https://`` proxy).
A proxy's failure is both an httpx exception and socks-sansio's (``httpx.ConnectError``
and ``ProxyConnectionError`` for an unreachable proxy, ``httpx.ProxyError`` and
``ProxyAuthError`` for refused credentials...).

Run it (a chain is several proxy URLs, first hop first)::

    python examples/httpx_sync.py https://example.com/ socks5h://127.0.0.1:1080
    python examples/httpx_sync.py https://example.com/ socks5h://127.0.0.1:1080 http://user:pass@proxy:3128
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import Sequence

import httpx

from socks_sansio.adapters.httpx import Proxy, SyncProxyTransport


def client(
    proxy: Proxy, *, verify: ssl.SSLContext | bool = True, proxy_ssl: ssl.SSLContext | None = None, timeout: float = 10
) -> httpx.Client:
    """An ``httpx.Client`` whose every request goes through *proxy* (a URL, or a list of them: a chain)."""
    transport = SyncProxyTransport.from_url(proxy, verify=verify, proxy_ssl=proxy_ssl)
    return httpx.Client(transport=transport, timeout=timeout)


def main(argv: Sequence[str]) -> int:
    if len(argv) < 2:
        print("usage: httpx_sync.py URL PROXY_URL [PROXY_URL...]", file=sys.stderr)
        return 2
    url, *chain = argv
    with client(chain) as http:
        response = http.get(url)
    print(response.status_code, response.reason_phrase, response.http_version)
    print(response.text[:500])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

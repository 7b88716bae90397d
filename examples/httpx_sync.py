"""httpx through any proxy chain, with socks-sansio's blocking adapter as its network layer.

httpcore (the engine under httpx) opens every connection through a pluggable
``httpcore.NetworkBackend``. This example plugs in one whose ``connect_tcp``
calls :func:`socks_sansio.adapters.sync.connect` with a proxy URL (or a chain),
so httpx gets ``socks5h://``, ``socks4a://``, ``http://`` and ``https://`` proxies,
chains, IPv6 and one deadline per connection, with nothing else changed:
httpcore still runs TLS to the origin (``start_tls``, done here by
:func:`~socks_sansio.adapters.sync.wrap_tls`, which also handles TLS inside an
``https://`` proxy's TLS), HTTP/1.1, pooling and keep-alive.

The backend goes into an ``httpcore.ConnectionPool(network_backend=...)``; a
small ``httpx.BaseTransport`` turns httpx requests into httpcore ones (as httpx's
own ``HTTPTransport`` does), and ``httpx.Client(transport=...)`` uses it.

Run it::

    python examples/httpx_sync.py socks5h://127.0.0.1:1080 https://example.com/
    python examples/httpx_sync.py http://user:pass@proxy:3128 https://example.com/
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import httpcore
import httpx

from socks_sansio import ProxyError, ProxyTimeoutError, ProxyURL
from socks_sansio.adapters.sync import SocketLike, TLSInTLSSocket, connect, wrap_tls

Proxy = str | ProxyURL | Sequence[str | ProxyURL]


@contextlib.contextmanager
def _mapped(timeout: type[Exception], failure: type[Exception]) -> Iterator[None]:
    """Raise httpcore's exceptions, which httpcore and the transport below know how to handle."""
    try:
        yield
    except (TimeoutError, ProxyTimeoutError) as exc:
        raise timeout(str(exc)) from exc
    except (OSError, ProxyError) as exc:
        raise failure(str(exc)) from exc


class ProxiedStream(httpcore.NetworkStream):
    """One connection (plain, TLS, or TLS in TLS) as httpcore wants it."""

    def __init__(self, sock: SocketLike) -> None:
        self._sock = sock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with _mapped(httpcore.ReadTimeout, httpcore.ReadError):
            self._sock.settimeout(timeout)
            data: bytes = self._sock.recv(max_bytes)
            return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer:
            with _mapped(httpcore.WriteTimeout, httpcore.WriteError):
                self._sock.settimeout(timeout)
                self._sock.sendall(buffer)

    def close(self) -> None:
        self._sock.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> ProxiedStream:
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            return ProxiedStream(wrap_tls(self._sock, ssl_context, server_hostname=server_hostname, timeout=timeout))

    def get_extra_info(self, info: str) -> Any:
        sock = self._sock
        if info == "ssl_object":  # httpcore asks it for the ALPN protocol
            if isinstance(sock, TLSInTLSSocket):
                return sock.ssl_object
            return sock if isinstance(sock, ssl.SSLSocket) else None
        if info == "client_addr":
            return sock.getsockname()
        if info == "server_addr":
            return sock.getpeername()
        if info == "socket":
            return sock
        if info == "is_readable":  # a pooled connection the server closed
            if isinstance(sock, TLSInTLSSocket):
                return sock.pending() > 0
            return bool(select.select([sock], [], [], 0)[0])
        return None


class ProxyNetworkBackend(httpcore.NetworkBackend):
    """Every TCP connection httpcore opens goes through *proxy* (a URL, a ProxyURL, or a chain)."""

    def __init__(self, proxy: Proxy, *, proxy_ssl: ssl.SSLContext | None = None) -> None:
        self._proxy = proxy
        self._proxy_ssl = proxy_ssl

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> ProxiedStream:
        if local_address is not None:
            raise httpcore.UnsupportedProtocol("local_address is not supported through a proxy")
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            sock = connect(host, port, proxy=self._proxy, timeout=timeout, proxy_ssl=self._proxy_ssl)
        for option in socket_options or ():
            if isinstance(sock, socket.socket):
                sock.setsockopt(*option)
        return ProxiedStream(sock)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> ProxiedStream:
        raise httpcore.UnsupportedProtocol("Unix sockets cannot be reached through a proxy")


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    """httpcore's exceptions as httpx's (same names: ConnectError, ReadTimeout...)."""
    try:
        yield
    except httpcore.TimeoutException as exc:
        raise getattr(httpx, type(exc).__name__, httpx.TimeoutException)(str(exc)) from exc
    except httpcore.NetworkError as exc:
        raise getattr(httpx, type(exc).__name__, httpx.NetworkError)(str(exc)) from exc
    except (httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
        raise getattr(httpx, type(exc).__name__, httpx.TransportError)(str(exc)) from exc


class _ResponseStream(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _httpx_errors():
            yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


class ProxyTransport(httpx.BaseTransport):
    """An httpx transport whose connections all go through *proxy*.

    Args:
        proxy: a proxy URL, a :class:`ProxyURL`, or a chain of them.
        verify: the TLS context for origins (default: the system's trust store).
        proxy_ssl: the TLS context for ``https://`` proxies.
    """

    def __init__(
        self, proxy: Proxy, *, verify: ssl.SSLContext | None = None, proxy_ssl: ssl.SSLContext | None = None
    ) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=verify if verify is not None else ssl.create_default_context(),
            network_backend=ProxyNetworkBackend(proxy, proxy_ssl=proxy_ssl),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            response = self._pool.handle_request(core_request)
        assert isinstance(response.stream, Iterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()


def client(
    proxy: Proxy, *, verify: ssl.SSLContext | None = None, proxy_ssl: ssl.SSLContext | None = None, timeout: float = 10
) -> httpx.Client:
    """An ``httpx.Client`` whose every request goes through *proxy*.

    ``trust_env`` is off: with it on, httpx would mount its own transports for
    the proxies named in the environment, bypassing this one.
    """
    transport = ProxyTransport(proxy, verify=verify, proxy_ssl=proxy_ssl)
    return httpx.Client(transport=transport, trust_env=False, timeout=timeout)


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2:
        print("usage: httpx_sync.py PROXY_URL URL", file=sys.stderr)
        return 2
    proxy, url = argv
    with client(proxy) as http:
        response = http.get(url)
    print(response.status_code, response.reason_phrase, response.http_version)
    print(response.text[:500])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The trio side of the async httpcore network backend: a tunnel as an ``httpcore.AsyncNetworkStream``.

:func:`connect` runs :func:`~socks_sansio.adapters.trio.open_tcp_stream` through
the proxy chain; octets the last proxy sent with its reply come first out of
the stream it returns (a ``PrefixedStream``). ``start_tls`` wraps the stream in
a :class:`trio.SSLStream` (``https_compatible``, as HTTP clients need), which
works over any stream: TLS inside TLS through an ``https://`` proxy included.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Sequence
from typing import Any

import httpcore
import trio

from socks_sansio import ProxyURL

from ._httpx_common import connect_errors, io_errors
from .trio import open_tcp_stream
from .trio_streams import PrefixedStream

__all__ = ["TunnelStream", "connect", "sleep"]

_TIMEOUTS = (trio.TooSlowError,)
_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


def _limit(timeout: float | None) -> float:
    return math.inf if timeout is None else timeout


class TunnelStream(httpcore.AsyncNetworkStream):
    """One connection through the proxies on trio, as httpcore reads and writes it.

    Args:
        stream: the stream :func:`connect` opened, or an SSLStream over it.
        tls: whether *stream* is the TLS with the target.
    """

    def __init__(self, stream: trio.abc.Stream, *, tls: bool = False) -> None:
        self._stream = stream
        self._tls = tls

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Up to *max_bytes* octets from the target (``b""`` once it closed)."""
        errors = io_errors(httpcore.ReadTimeout, httpcore.ReadError, _TIMEOUTS, _ERRORS)
        with errors, trio.fail_after(_limit(timeout)):
            return bytes(await self._stream.receive_some(max_bytes))

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Send all of *buffer*."""
        if not buffer:
            return
        errors = io_errors(httpcore.WriteTimeout, httpcore.WriteError, _TIMEOUTS, _ERRORS)
        with errors, trio.fail_after(_limit(timeout)):
            await self._stream.send_all(buffer)

    async def aclose(self) -> None:
        """Close every layer (a TLS ``close_notify`` is sent, the peer's is not waited for)."""
        await self._stream.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> TunnelStream:
        """TLS with the target over this tunnel; this stream belongs to the result from now on.

        Raises:
            httpcore.ConnectTimeout: the handshake took longer than *timeout*.
            httpcore.ConnectError: it failed (trio's ``BrokenResourceError``, with the
                ``ssl.SSLError`` under it, is the ``__cause__``).
        """
        tls = trio.SSLStream(self._stream, ssl_context, server_hostname=server_hostname, https_compatible=True)
        try:
            with connect_errors(_TIMEOUTS, _ERRORS), trio.fail_after(_limit(timeout)):
                await tls.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(self._stream)
            raise
        return TunnelStream(tls, tls=True)

    def _layers(self) -> tuple[trio.SocketStream | None, bool]:
        """The TCP stream under every layer, and whether a layer holds octets already received."""
        stream: trio.abc.Stream = self._stream
        buffered = False
        while True:
            if isinstance(stream, PrefixedStream):
                buffered = buffered or bool(stream._prefix)  # our own class: the tunnel's first octets
                stream = stream.transport_stream
            elif isinstance(stream, trio.SSLStream):
                stream = stream.transport_stream
            else:
                return (stream if isinstance(stream, trio.SocketStream) else None), buffered

    def get_extra_info(self, info: str) -> Any:
        """``ssl_object`` (TLS with the target), ``client_addr``, ``server_addr`` (the first proxy), ``socket``
        (the TCP socket to the first proxy) and ``is_readable`` (the pool asks it of idle connections)."""
        if info == "ssl_object":
            stream = self._stream
            return stream._ssl_object if self._tls and isinstance(stream, trio.SSLStream) else None
        tcp, buffered = self._layers()
        if info == "client_addr":
            return None if tcp is None else tcp.socket.getsockname()
        if info == "server_addr":
            return None if tcp is None else tcp.socket.getpeername()
        if info == "socket":
            return None if tcp is None else tcp.socket
        if info == "is_readable":
            return buffered or tcp is None or tcp.socket.is_readable()
        return None


async def connect(
    host: str,
    port: int,
    *,
    proxy: Sequence[ProxyURL],
    timeout: float | None,
    proxy_ssl: ssl.SSLContext | None,
    pipelined: bool,
) -> TunnelStream:
    """A tunnel to *host*:*port* through *proxy* (empty: directly); errors as ``connect_errors`` makes them."""
    with connect_errors(_TIMEOUTS):
        stream = await open_tcp_stream(host, port, proxy=list(proxy) or None, timeout=timeout, proxy_ssl=proxy_ssl,
                                       pipelined=pipelined)  # fmt: skip
    return TunnelStream(stream)


async def sleep(seconds: float) -> None:
    """httpcore's pause between connection retries."""
    await trio.sleep(seconds)

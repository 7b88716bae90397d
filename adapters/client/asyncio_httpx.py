"""The asyncio side of the async httpcore network backend: a tunnel as an ``httpcore.AsyncNetworkStream``.

:func:`connect` runs :func:`~socks_sansio.adapters.asyncio.open_tunnel` through
the proxy chain; the tunnel's StreamReader already holds, first, whatever the
last proxy sent with its reply, so nothing is lost. ``start_tls`` layers TLS
with the target on the transport with :meth:`asyncio.loop.start_tls`, keeping
the same reader (TLS inside TLS through an ``https://`` proxy needs Python
3.11, as in the asyncio adapter). Closing does not wait for the peer's
``close_notify``: the TCP connection is closed right after ours is sent.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import httpcore

from socks_sansio import ProxyURL

from ._httpx_common import connect_errors, io_errors
from .asyncio import Tunnel, open_tunnel
from .asyncio_link import StreamProtocol

__all__ = ["TunnelStream", "connect", "sleep"]

_T = TypeVar("_T")
_TIMEOUTS = (asyncio.TimeoutError, TimeoutError)
_ERRORS = (OSError, EOFError)


async def _within(awaitable: Awaitable[_T], timeout: float | None) -> _T:
    """*awaitable*, or ``TimeoutError`` after *timeout* seconds (``None``: no limit)."""
    if timeout is None:
        return await awaitable
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(timeout):
            return await awaitable
    else:  # pragma: no cover - Python 3.10
        return await asyncio.wait_for(awaitable, timeout)


class TunnelStream(httpcore.AsyncNetworkStream):
    """One connection through the proxies on asyncio, as httpcore reads and writes it.

    Args:
        tunnel: the tunnel :func:`connect` opened (it closes every layer).
        writer: the writer over the top transport (after ``start_tls``, the TLS with the target).
        tls: whether that top layer is TLS with the target.
    """

    def __init__(self, tunnel: Tunnel, writer: asyncio.StreamWriter | None = None, *, tls: bool = False) -> None:
        self._tunnel = tunnel
        self._reader = tunnel.reader
        self._writer = writer or tunnel.writer
        self._tls = tls

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Up to *max_bytes* octets from the target (``b""`` once it closed)."""
        with io_errors(httpcore.ReadTimeout, httpcore.ReadError, _TIMEOUTS, _ERRORS):
            return await _within(self._reader.read(max_bytes), timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Send all of *buffer* (and wait until the transport took it)."""
        if not buffer:
            return
        with io_errors(httpcore.WriteTimeout, httpcore.WriteError, _TIMEOUTS, _ERRORS):
            self._writer.write(buffer)
            await _within(self._writer.drain(), timeout)

    async def aclose(self) -> None:
        """Close every layer (a TLS ``close_notify`` is sent, the peer's is not waited for)."""
        if self._writer is not self._tunnel.writer:
            self._writer.close()
        await self._tunnel.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> TunnelStream:
        """TLS with the target over this tunnel; this stream belongs to the result from now on.

        Raises:
            httpcore.ConnectTimeout: the handshake took longer than *timeout*.
            httpcore.ConnectError: it failed (the ``ssl.SSLError`` is the ``__cause__``), or
                it would be TLS inside TLS on Python 3.10.
        """
        transport = self._writer.transport
        protocol = transport.get_protocol()
        assert isinstance(protocol, StreamProtocol)
        loop = asyncio.get_running_loop()
        try:
            if protocol.tls and sys.version_info < (3, 11):  # pragma: no cover - Python 3.10
                raise httpcore.ConnectError("TLS inside TLS (an https:// proxy) needs Python 3.11 on asyncio")
            with connect_errors(_TIMEOUTS):
                tls = await _within(
                    loop.start_tls(transport, protocol, ssl_context, server_hostname=server_hostname), timeout
                )
                if tls is None:  # only when the loop is closing
                    raise ConnectionError("the event loop closed during the TLS handshake")
        except BaseException:
            # The protocol will not hear of it: close the transport (start_tls may have already),
            # abort the TCP connection under every layer, and wait for nothing.
            transport.close()
            raw = self._tunnel._raw  # the TCP transport (private to the asyncio adapter, which we are part of)
            if isinstance(raw, asyncio.WriteTransport):
                raw.abort()
            else:  # pragma: no cover - a TCP transport can always abort
                raw.close()
            raise
        protocol.tls = True
        return TunnelStream(self._tunnel, asyncio.StreamWriter(tls, protocol, self._reader, loop), tls=True)

    def get_extra_info(self, info: str) -> Any:
        """``ssl_object`` (TLS with the target), ``client_addr``, ``server_addr`` (the first proxy), ``socket``
        (the TCP socket to the first proxy) and ``is_readable`` (the pool asks it of idle connections)."""
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object") if self._tls else None
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "socket":
            return self._writer.get_extra_info("socket")
        if info == "is_readable":
            # The transport reads eagerly: what the socket would say is already in the reader.
            reader = self._reader
            return reader.at_eof() or reader.exception() is not None or self._writer.transport.is_closing()
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
        tunnel = await open_tunnel(host, port, proxy=list(proxy) or None, timeout=timeout, proxy_ssl=proxy_ssl,
                                   pipelined=pipelined)  # fmt: skip
    return TunnelStream(tunnel)


async def sleep(seconds: float) -> None:
    """httpcore's pause between connection retries."""
    await asyncio.sleep(seconds)

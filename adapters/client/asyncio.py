"""The asyncio backend: connect through proxies with asyncio streams or protocols.

Strategy. Every decision is the core's :class:`~socks_sansio.ConnectPlan`
(which proxy, what to send, how much to read, when to layer TLS, what an error
means, one deadline); :class:`~.asyncio_link.Link` performs its operations on
one transport. Reads go through an :class:`asyncio.StreamReader` and never ask
for more than the plan says, so the bytes a proxy sends with its final reply
stay in the reader's buffer: :func:`open_connection` hands that same reader to
the application, and :func:`create_connection` passes those bytes to the new
protocol's ``data_received`` before anything else arrives.

This module only builds the results: streams, a :class:`Tunnel`, a transport
handed to a protocol (BIND and UDP ASSOCIATE: :mod:`.asyncio_commands`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl as _ssl
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import TypeVar, final

from socks_sansio import (
    ConnectionClosed,
    ConnectionInfo,
    ConnectPlan,
    Frame,
    FrameDecoder,
    HttpResponse,
    ProxyConnectionError,
    ProxySpec,
    ResponseReader,
    RetryPolicy,
    encode_frame,
    encode_request,
)

from ._common import DEFAULT_RECV_SIZE, host_header, logger
from .asyncio_link import STREAM_LIMIT, Link

__all__ = ["Tunnel", "create_connection", "open_connection", "open_tunnel", "tunnel_of"]

_P = TypeVar("_P", bound=asyncio.BaseProtocol)


def _tls_context(value: _ssl.SSLContext | bool | None) -> _ssl.SSLContext | None:
    if value is None or value is False:
        return None
    if value is True:
        return _ssl.create_default_context()
    if isinstance(value, _ssl.SSLContext):
        return value
    raise TypeError(f"ssl must be an ssl.SSLContext, True, False or None, not {type(value).__name__}")


async def _connect(
    host: str,
    port: int,
    *,
    proxy: ProxySpec | Sequence[ProxySpec] | None,
    timeout: float | None,
    ssl: _ssl.SSLContext | bool | None,
    server_hostname: str | None,
    proxy_ssl: _ssl.SSLContext | None,
    trust_env: bool,
    pipelined: bool,
    nodelay: bool,
    keepalive: bool,
    limit: int,
    failover: Sequence[ProxySpec | Sequence[ProxySpec]] | None = None,
    retry: RetryPolicy | None = None,
) -> tuple[ConnectPlan, Link]:
    """Run the plan of one call; the plan (for its report) and the link holding the connection."""
    context = _tls_context(ssl)
    plan = ConnectPlan.for_call(
        host, port, proxy=proxy, failover=failover, retry=retry, trust_env=trust_env, environ=os.environ,
        tls=context is not None, server_hostname=server_hostname, timeout=timeout, pipelined=pipelined,
    )  # fmt: skip
    link = Link(plan, tls=context, proxy_ssl=proxy_ssl, nodelay=nodelay, keepalive=keepalive, limit=limit)
    await link.run(plan.run())
    return plan, link


@final
class Tunnel:
    """An open connection to the target through the proxies, as asyncio streams.

    Bytes the proxy sent along with its final reply are the first bytes
    ``reader`` returns. Use it as an async context manager
    (``async with await open_tunnel(...) as tunnel:``) or call :meth:`aclose`.

    Attributes:
        reader: the stream from the target.
        writer: the stream to the target.
        info: what the connection went through (hops, bound address, timings).
    """

    __slots__ = ("_frames", "_pending", "_pending_eof", "_raw", "info", "reader", "writer")

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        info: ConnectionInfo,
        raw: asyncio.BaseTransport | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.info = info
        self._raw = raw or writer.transport
        self._frames = FrameDecoder()
        # Octets the server sent after an http_request() response, to return before the reader's.
        self._pending = b""
        self._pending_eof = False

    async def __aenter__(self) -> Tunnel:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write *data* and wait until the transport's buffer has drained."""
        self.writer.write(data)
        await self.writer.drain()

    async def receive_some(self, max_bytes: int = DEFAULT_RECV_SIZE) -> bytes:
        """Up to *max_bytes* octets from the target (``b""`` at EOF).

        Prefer this to ``reader.read()`` after :meth:`http_request`: octets the
        server sent after its response (rarely any) are returned here first.
        """
        if self._pending:
            data, self._pending = self._pending[:max_bytes], self._pending[max_bytes:]
            return data
        if self._pending_eof:
            return b""
        return await self.reader.read(max_bytes)

    async def send_frame(self, payload: bytes | bytearray | memoryview) -> None:
        """Send one length-prefixed frame (see :func:`socks_sansio.encode_frame`)."""
        await self.send_all(encode_frame(payload, max_size=self._frames.max_size))

    async def receive_frame(self) -> bytes:
        """Receive one whole length-prefixed frame and return its payload.

        Reads never go past the current frame, so the reader can be used
        directly again between frames.

        Raises:
            EOFError: the peer closed the tunnel at a frame boundary.
            RemoteProtocolError: the peer closed mid-frame, or announced a frame
                larger than the decoder's maximum.
        """
        while True:
            event = self._frames.next_event()
            if isinstance(event, Frame):
                return event.payload
            if isinstance(event, ConnectionClosed):
                raise EOFError("the peer closed the tunnel (no more frames)")
            self._frames.receive_data(await self.receive_some(min(self._frames.read_size_hint, DEFAULT_RECV_SIZE)))

    async def http_request(
        self,
        method: str,
        target: str,
        *,
        headers: Iterable[tuple[str | bytes, str | bytes]] = (),
        body: bytes = b"",
    ) -> HttpResponse:
        """Send one HTTP/1.1 request through the tunnel and read its response.

        ``Host`` is the tunnel's target unless *headers* hold one. Octets the
        server sends after the response are kept for :meth:`receive_some`.

        Args:
            method: ``"GET"``, ``"POST"``...
            target: the request-target, such as ``"/path?query"``.
            headers: extra ``(name, value)`` fields.
            body: the content (framed with ``Content-Length``).

        Raises:
            LocalProtocolError: a field that cannot be sent (see :func:`encode_request`).
            RemoteProtocolError: the response is malformed, or the connection
                closed before it was whole.
        """
        host = host_header(self.info.target, self.info.tls)
        await self.send_all(encode_request(method, target, host=host, headers=headers, body=body))
        response = ResponseReader(request_method=method)
        while not isinstance(event := response.next_event(), HttpResponse):
            response.receive_data(await self.receive_some(min(response.read_size_hint, DEFAULT_RECV_SIZE)))
        self._pending, self._pending_eof = response.trailing_data
        return event

    async def send_eof(self) -> None:
        """Half-close: tell the target we will send nothing more, and keep reading.

        Raises:
            NotImplementedError: the stream runs over TLS, which asyncio cannot
                half-close (TLS has no half-close; close the tunnel instead).
        """
        if not self.writer.can_write_eof():
            raise NotImplementedError("asyncio cannot half-close a TLS stream; close the tunnel instead")
        await self.writer.drain()
        self.writer.write_eof()

    async def aclose(self) -> None:
        """Close the connection (idempotent).

        Over TLS, close_notify is sent but the peer's is not waited for: the TCP
        connection is closed right after (asyncio alone would wait up to 30 s,
        and with TLS inside TLS an intermediate proxy may never pass it on).
        """
        self.writer.close()
        self._raw.close()
        with contextlib.suppress(OSError, _ssl.SSLError):
            await self.writer.wait_closed()


def tunnel_of(plan: ConnectPlan, link: Link) -> Tunnel:
    """The :class:`Tunnel` of a finished plan: the link's reader, a writer, the report."""
    assert link.reader is not None
    return Tunnel(link.reader, link.writer(), plan.info(), link.raw)


async def open_tunnel(
    host: str,
    port: int,
    *,
    proxy: ProxySpec | Sequence[ProxySpec] | None = None,
    timeout: float | None = None,
    ssl: _ssl.SSLContext | bool | None = None,
    server_hostname: str | None = None,
    proxy_ssl: _ssl.SSLContext | None = None,
    trust_env: bool = False,
    pipelined: bool = False,
    nodelay: bool = True,
    keepalive: bool = True,
    limit: int = STREAM_LIMIT,
    failover: Sequence[ProxySpec | Sequence[ProxySpec]] | None = None,
    retry: RetryPolicy | None = None,
) -> Tunnel:
    """Connect to ``host:port`` through a proxy or a chain of proxies.

    Args:
        host: the target's name or IP literal.
        port: the target's port.
        proxy: a proxy URL (``socks5h://user:pass@host:1080``), a
            :class:`ProxyURL`, or a sequence of them (a chain, first hop first).
            ``None`` connects directly (or uses the environment, see *trust_env*).
        timeout: one deadline in seconds for the whole call: TCP connect, name
            resolution, every handshake and every TLS handshake.
        ssl: TLS to the target: an SSLContext, or ``True`` for the default one.
        server_hostname: the name to check the target's certificate against
            (default: *host*; only with *ssl*).
        proxy_ssl: the SSLContext for ``https://`` proxies (default:
            :func:`ssl.create_default_context`).
        trust_env: without *proxy*, take it from ``ALL_PROXY`` / ``HTTPS_PROXY``
            / ``HTTP_PROXY`` / ``NO_PROXY`` (the ``https`` scheme when *ssl* is given).
        pipelined: SOCKS5 only: send greeting, credentials and request in one write
            (one round trip fewer). Only for servers known to cope: microsocks, for one, hangs.
        nodelay: set TCP_NODELAY on the socket.
        keepalive: set SO_KEEPALIVE on the socket.
        limit: the StreamReader's buffer limit.
        failover: instead of *proxy*, the candidates to try in order, each a
            proxy or a chain; round after round under *retry*, all within
            *timeout* (see :class:`~socks_sansio.RetryPolicy`).
        retry: the :class:`~socks_sansio.RetryPolicy` (default ``RetryPolicy()``
            with *failover*; alone, it retries the one *proxy*).

    Returns:
        a :class:`Tunnel`; its reader returns the bytes sent with the final reply first.

    Raises:
        ProxyConnectionError: a proxy cannot be reached, or closed mid-handshake
            (the OSError is the ``__cause__``); the message never holds a password.
            With *failover* or *retry*, the error raised is the last attempt's,
            with every attempt in its ``__notes__``.
        ProxyRefusedError: a proxy refused (``ProxyAuthError`` for credentials).
        ProxyProtocolError: a proxy broke its protocol.
        ProxyTimeoutError: the deadline passed.
        TypeError: both *proxy* and *failover* were given.
        LocalProtocolError: an impossible request (IPv6 target through SOCKS4, TLS
            inside TLS on Python 3.10, a bad proxy URL).
        OSError: the target itself (no proxy) cannot be reached, its TLS failed,
            or its name does not resolve here (``socks5://``, ``socks4://``).
    """
    plan, link = await _connect(
        host, port, proxy=proxy, timeout=timeout, ssl=ssl, server_hostname=server_hostname, proxy_ssl=proxy_ssl,
        trust_env=trust_env, pipelined=pipelined, nodelay=nodelay, keepalive=keepalive, limit=limit,
        failover=failover, retry=retry,
    )  # fmt: skip
    return tunnel_of(plan, link)


async def open_connection(
    host: str,
    port: int,
    *,
    proxy: ProxySpec | Sequence[ProxySpec] | None = None,
    timeout: float | None = None,
    ssl: _ssl.SSLContext | bool | None = None,
    server_hostname: str | None = None,
    proxy_ssl: _ssl.SSLContext | None = None,
    trust_env: bool = False,
    pipelined: bool = False,
    nodelay: bool = True,
    keepalive: bool = True,
    limit: int = STREAM_LIMIT,
    failover: Sequence[ProxySpec | Sequence[ProxySpec]] | None = None,
    retry: RetryPolicy | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Like :func:`asyncio.open_connection`, through proxies. Arguments as in :func:`open_tunnel`.

    Returns:
        ``(reader, writer)``; the reader returns the bytes sent with the proxy's
        final reply first.
    """
    _, link = await _connect(
        host, port, proxy=proxy, timeout=timeout, ssl=ssl, server_hostname=server_hostname, proxy_ssl=proxy_ssl,
        trust_env=trust_env, pipelined=pipelined, nodelay=nodelay, keepalive=keepalive, limit=limit,
        failover=failover, retry=retry,
    )  # fmt: skip
    assert link.reader is not None  # the reader and a writer: no Tunnel and no ConnectionInfo to build
    return link.reader, link.writer()


async def _hand_over(link: Link, protocol: asyncio.BaseProtocol) -> None:
    """Give the transport to *protocol*, delivering what the StreamReader holds first."""
    reader, transport, stream_protocol = link.reader, link.transport, link.protocol
    assert reader is not None
    assert stream_protocol is not None
    error = reader.exception()
    if error is not None:
        raise ProxyConnectionError("the connection broke right after the handshake") from error
    peer_eof, was_closing = stream_protocol.peer_eof, transport.is_closing()
    # Mark the reader finished so read() returns what it holds without waiting;
    # nothing below suspends, so no new data can arrive in between.
    reader.feed_eof()
    buffered = await reader.read()
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    if buffered:
        logger.debug("asyncio: delivering %d octets received with the final reply", len(buffered))
        if isinstance(protocol, asyncio.BufferedProtocol):
            view = memoryview(buffered)
            while view:
                buffer = memoryview(protocol.get_buffer(len(view)))
                count = min(len(buffer), len(view))
                buffer[:count] = view[:count]
                protocol.buffer_updated(count)
                view = view[count:]
        elif isinstance(protocol, asyncio.Protocol):
            protocol.data_received(buffered)
    if (
        peer_eof
        and isinstance(protocol, asyncio.Protocol | asyncio.BufferedProtocol)
        and (not protocol.eof_received() or stream_protocol.tls)
    ):
        transport.close()  # as asyncio does when eof_received() returns false, and always over TLS
    if was_closing:
        protocol.connection_lost(None)


async def create_connection(
    protocol_factory: Callable[[], _P],
    host: str,
    port: int,
    *,
    proxy: ProxySpec | Sequence[ProxySpec] | None = None,
    timeout: float | None = None,
    ssl: _ssl.SSLContext | bool | None = None,
    server_hostname: str | None = None,
    proxy_ssl: _ssl.SSLContext | None = None,
    trust_env: bool = False,
    pipelined: bool = False,
    nodelay: bool = True,
    keepalive: bool = True,
) -> tuple[asyncio.Transport, _P]:
    """Like :meth:`asyncio.loop.create_connection`, through proxies. Options as in :func:`open_tunnel`.

    After the handshake the transport is given to ``protocol_factory()``:
    ``connection_made`` is called, then the bytes the proxy sent with its final
    reply are delivered (``data_received``, or ``get_buffer``/``buffer_updated``
    for a :class:`asyncio.BufferedProtocol`) before any new data, then
    ``eof_received`` if the peer already closed its side.

    Returns:
        ``(transport, protocol)``.
    """
    _, link = await _connect(
        host, port, proxy=proxy, timeout=timeout, ssl=ssl, server_hostname=server_hostname, proxy_ssl=proxy_ssl,
        trust_env=trust_env, pipelined=pipelined, nodelay=nodelay, keepalive=keepalive, limit=STREAM_LIMIT,
    )  # fmt: skip
    try:
        protocol = protocol_factory()
        await _hand_over(link, protocol)
    except BaseException:
        link.abort()
        raise
    return link.transport, protocol

"""The trio backend: connect through proxies and get a ``trio.abc.Stream``.

Strategy: every decision is the core's :class:`~socks_sansio.ConnectPlan`
(which proxy, what to send, how much to read, when to layer TLS, what an error
means, one deadline); :class:`~.trio_link.Link` performs its operations on one
stream. Bytes read past a reply are never lost: the stream is wrapped in a
:class:`PrefixedStream` that returns them before reading on (the plans read no
more than a reply needs, so this happens only after :meth:`Tunnel.http_request`
or with :func:`handshake_over` on a stream of your own).

Public API: :func:`open_tcp_stream`, :func:`open_tunnel` (a :class:`Tunnel`
with frames, HTTP requests and timings), :func:`open_udp_association`
(:class:`UdpAssociation`), :func:`open_bind` (:class:`BindListener`), and
:func:`handshake_over` for a stream you connected yourself.
"""

from __future__ import annotations

import os
import ssl as _ssl
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Final, final

import trio
import trio.socket as tsocket

from socks_sansio import (
    Address,
    AssociatePlan,
    ClientHandshake,
    ConnectionClosed,
    ConnectionInfo,
    ConnectPlan,
    Frame,
    FrameDecoder,
    HandshakePlan,
    HttpResponse,
    LocalProtocolError,
    ProxySpec,
    ResponseReader,
    RetryPolicy,
    Stepper,
    encode_frame,
    encode_request,
    unwrap_relay_datagram,
)

from ._common import DEFAULT_RECV_SIZE, UDP_MAX, host_header, logger
from .trio_link import IO_ERRORS, Link, resolve
from .trio_streams import HalfCloseablePrefixedStream, PrefixedStream, with_leftovers

__all__ = [
    "BindListener",
    "HalfCloseablePrefixedStream",
    "PrefixedStream",
    "Tunnel",
    "UdpAssociation",
    "handshake_over",
    "open_bind",
    "open_tcp_stream",
    "open_tunnel",
    "open_udp_association",
]

_ANY_PEER: Final = Address("0.0.0.0", 0)


# -- one hop over a stream of your own -----------------------------------------------------------


async def handshake_over(stream: trio.abc.Stream, handshake: ClientHandshake) -> trio.abc.Stream:
    """Run one proxy handshake over an already connected *stream*.

    Reads only ``handshake.read_size_hint`` octets at a time. Runs until the
    handshake is established, or, for BIND, until the first reply (status
    ``BIND_LISTENING``: the proxy's listening address is ``handshake.bound``);
    call it again with the same handshake to wait for BIND's second reply.
    A prepared handshake (``target=None``) stops at ``READY``; call it again
    after :meth:`~socks_sansio.ClientHandshake.request`.

    Args:
        stream: connected to the proxy (any ``trio.abc.Stream``, TLS or not).
        handshake: a fresh driver, or one left at ``BIND_LISTENING``.

    Returns:
        The stream to use from now on: *stream* itself, or a
        :class:`PrefixedStream` around it when the proxy sent tunnel bytes with
        its final reply. Closing it closes *stream*.

    Raises:
        ProxyRefusedError: the proxy refused (reply code or HTTP status inside).
        ProxyAuthError: credentials missing or refused.
        ProxyProtocolError: the proxy broke the protocol.
        ProxyConnectionError: the connection broke or closed mid-handshake.
    """
    plan = HandshakePlan(handshake, io_errors=IO_ERRORS, clock=trio.current_time)
    await Link(plan, stream=stream).run(plan.run(), close_on_error=False)
    if not handshake.established:
        return stream
    data, eof = handshake.trailing_data
    return with_leftovers(stream, data, eof)


def _plan(
    host: str | bytes,
    port: int,
    *,
    proxy: ProxySpec | Sequence[ProxySpec] | None,
    timeout: float | None,
    ssl: _ssl.SSLContext | None,
    server_hostname: str | None,
    trust_env: bool,
    pipelined: bool,
    failover: Sequence[ProxySpec | Sequence[ProxySpec]] | None,
    retry: RetryPolicy | None,
) -> ConnectPlan:
    return ConnectPlan.for_call(
        host, port, proxy=proxy, failover=failover, retry=retry, trust_env=trust_env, environ=os.environ,
        tls=ssl is not None, server_hostname=server_hostname, timeout=timeout, pipelined=pipelined,
        io_errors=IO_ERRORS, clock=trio.current_time,
    )  # fmt: skip


# -- TCP streams and tunnels -----------------------------------------------------------------------


async def open_tcp_stream(
    host: str | bytes,
    port: int,
    *,
    proxy: ProxySpec | Sequence[ProxySpec] | None = None,
    timeout: float | None = None,
    ssl: _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    proxy_ssl: _ssl.SSLContext | None = None,
    trust_env: bool = False,
    pipelined: bool = False,
    nodelay: bool = True,
    keepalive: bool = True,
    https_compatible: bool = False,
    failover: Sequence[ProxySpec | Sequence[ProxySpec]] | None = None,
    retry: RetryPolicy | None = None,
) -> trio.abc.Stream:
    """Open a TCP stream to *host*:*port* through a proxy or a chain of proxies, like :func:`trio.open_tcp_stream`.

    Args:
        host: the target's name or IP literal. ``socks5://`` and ``socks4://``
            proxies get it resolved here (trio's resolver); the others resolve it.
        port: the target's port.
        proxy: a proxy URL (``"socks5h://user:pass@host:1080"``), a
            :class:`~socks_sansio.ProxyURL`, or a sequence of them (a chain, first
            hop first); ``None`` connects directly.
        timeout: one deadline, in seconds, for the whole call: TCP connect, every
            proxy handshake and every TLS handshake.
        ssl: TLS to the target with this context (end to end through the proxies).
        server_hostname: the name to check the target's certificate against
            (default: *host*; only with *ssl*).
        proxy_ssl: the context for ``https://`` proxies (default
            :func:`ssl.create_default_context`). Those TLS sessions are
            ``https_compatible`` (no ``close_notify`` needed), as HTTP proxies expect.
        trust_env: with ``proxy=None``, take the proxy from ``ALL_PROXY``,
            ``HTTPS_PROXY`` (when *ssl* is given) or ``HTTP_PROXY``, and ``NO_PROXY``.
        pipelined: SOCKS5: greeting, credentials and request in one write (one
            round trip fewer). Only for servers known to cope: microsocks, for one, hangs.
        nodelay: set ``TCP_NODELAY`` on the socket.
        keepalive: set ``SO_KEEPALIVE`` on the socket.
        https_compatible: passed to the target's :class:`trio.SSLStream`.
        failover: instead of *proxy*, the candidates to try in order, each a
            proxy or a chain; round after round under *retry*, all within
            *timeout* (see :class:`~socks_sansio.RetryPolicy`).
        retry: the :class:`~socks_sansio.RetryPolicy` (default ``RetryPolicy()``
            with *failover*; alone, it retries the one *proxy*).

    Returns:
        Without *ssl*: a :class:`trio.abc.HalfCloseableStream` when every hop is
        plain TCP (a :class:`trio.SocketStream`), or a :class:`trio.SSLStream`
        through an ``https://`` proxy, which has no ``send_eof``. With *ssl*: a
        :class:`trio.SSLStream`. Closing it closes every layer.

    Raises:
        ProxyConnectionError: the first proxy cannot be reached (the ``OSError``
            is the ``__cause__``), a connection broke mid-handshake, or the TLS
            handshake with an ``https://`` proxy failed. With *failover* or *retry*,
            the error raised is the last attempt's, with every attempt in its ``__notes__``.
        ProxyRefusedError: a proxy refused (``ProxyAuthError`` for credentials).
        ProxyProtocolError: a proxy broke the protocol.
        ProxyTimeoutError: the deadline passed.
        TypeError: both *proxy* and *failover* were given.
        OSError: connecting directly failed, or a name to resolve locally did not resolve.
        trio.BrokenResourceError: the TLS handshake with the target failed
            (the ``ssl.SSLError`` is the ``__cause__``).
    """
    plan = _plan(
        host, port, proxy=proxy, timeout=timeout, ssl=ssl, server_hostname=server_hostname, trust_env=trust_env,
        pipelined=pipelined, failover=failover, retry=retry,
    )  # fmt: skip
    return await _open(plan, ssl, proxy_ssl, nodelay, keepalive, https_compatible)


async def _open(
    plan: ConnectPlan,
    ssl: _ssl.SSLContext | None,
    proxy_ssl: _ssl.SSLContext | None,
    nodelay: bool,
    keepalive: bool,
    https_compatible: bool,
) -> trio.abc.Stream:
    link = Link(plan, tls=ssl, proxy_ssl=proxy_ssl, nodelay=nodelay, keepalive=keepalive,
                https_compatible=https_compatible)  # fmt: skip
    await link.run(plan.run())
    assert link.stream is not None
    return link.stream


async def open_tunnel(
    host: str | bytes,
    port: int,
    *,
    proxy: ProxySpec | Sequence[ProxySpec] | None = None,
    timeout: float | None = None,
    ssl: _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    proxy_ssl: _ssl.SSLContext | None = None,
    trust_env: bool = False,
    pipelined: bool = False,
    nodelay: bool = True,
    keepalive: bool = True,
    https_compatible: bool = False,
    failover: Sequence[ProxySpec | Sequence[ProxySpec]] | None = None,
    retry: RetryPolicy | None = None,
) -> Tunnel:
    """Like :func:`open_tcp_stream`, but return a :class:`Tunnel`: the stream, timings and conveniences.

    Use it as ``tunnel = await open_tunnel(...)`` then ``async with tunnel: ...``.
    Arguments, errors and the stream are those of :func:`open_tcp_stream`.
    """
    plan = _plan(
        host, port, proxy=proxy, timeout=timeout, ssl=ssl, server_hostname=server_hostname, trust_env=trust_env,
        pipelined=pipelined, failover=failover, retry=retry,
    )  # fmt: skip
    stream = await _open(plan, ssl, proxy_ssl, nodelay, keepalive, https_compatible)
    return Tunnel(stream, plan.info())


@final
class Tunnel:
    """An open connection through proxies: the stream plus what it took to get it.

    Use ``async with tunnel:`` to close it. Reading with :meth:`receive_some`,
    :meth:`receive_frame` and :meth:`http_request` may be mixed: none of them
    reads past what it returns (frames and responses keep any extra octets for
    the next read).

    Attributes:
        stream: the stream to the target (see :func:`open_tcp_stream` for its type).
        info: proxies, target, bound address and timings.
    """

    def __init__(self, stream: trio.abc.Stream, info: ConnectionInfo) -> None:
        self.stream = stream
        self.info = info
        self._frames = FrameDecoder()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send *data* to the target."""
        await self.stream.send_all(data)

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Receive up to *max_bytes* octets from the target (``b""`` at EOF)."""
        return await self.stream.receive_some(max_bytes)

    async def send_eof(self) -> None:
        """Half-close: tell the target we will send nothing more; receiving still works.

        Raises:
            LocalProtocolError: the stream runs over TLS (to the target or an
                ``https://`` proxy), which has no half-close.
        """
        if not isinstance(self.stream, trio.abc.HalfCloseableStream):
            raise LocalProtocolError(
                f"cannot half-close a {type(self.stream).__name__}: TLS has no half-close "
                "(only a plain TCP tunnel supports send_eof)"
            )
        await self.stream.send_eof()

    async def send_frame(self, payload: bytes | bytearray | memoryview) -> None:
        """Send one length-prefixed frame (:func:`socks_sansio.encode_frame`)."""
        await self.stream.send_all(encode_frame(payload))

    async def receive_frame(self) -> bytes:
        """Receive one length-prefixed frame and return its payload.

        Raises:
            trio.EndOfChannel: the target closed the connection between frames.
            RemoteProtocolError: a frame over the size cap, or EOF inside a frame.
        """
        while True:
            event = self._frames.next_event()
            if isinstance(event, Frame):
                return event.payload
            if isinstance(event, ConnectionClosed):
                raise trio.EndOfChannel("the peer closed the tunnel")
            data = await self.stream.receive_some(min(self._frames.read_size_hint, DEFAULT_RECV_SIZE))
            self._frames.receive_data(data)

    async def http_request(
        self,
        method: str,
        target: str,
        *,
        headers: Iterable[tuple[str | bytes, str | bytes]] = (),
        body: bytes = b"",
    ) -> HttpResponse:
        """Send an HTTP/1.1 request through the tunnel and return the response.

        ``Host`` is the tunnel's target; the body is framed by ``Content-Length``
        (see :func:`socks_sansio._http1.encode_request`). Octets the server sent
        after the response stay available to :meth:`receive_some` (``stream``
        may be re-wrapped to keep them: read through the tunnel or re-read
        ``tunnel.stream`` afterwards).

        Raises:
            LocalProtocolError: a field that cannot be sent (CR/LF/NUL, a bad method...).
            RemoteProtocolError: the response is malformed, too large, or the
                connection closed before it was complete.
        """
        host = host_header(self.info.target, self.info.tls)
        request = encode_request(method, target, host=host, headers=headers, body=body)
        await self.stream.send_all(request)
        reader = ResponseReader(request_method=method)
        while not isinstance(event := reader.next_event(), HttpResponse):
            reader.receive_data(await self.stream.receive_some(min(reader.read_size_hint, DEFAULT_RECV_SIZE)))
        leftover, eof = reader.trailing_data
        self.stream = with_leftovers(self.stream, leftover, eof)
        return event

    async def aclose(self) -> None:
        """Close the stream and every layer under it."""
        await self.stream.aclose()

    async def __aenter__(self) -> Tunnel:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


# -- BIND ----------------------------------------------------------------------------------------


async def open_bind(
    proxy: ProxySpec | Sequence[ProxySpec],
    *,
    expected_peer: Address = _ANY_PEER,
    timeout: float | None = None,
    proxy_ssl: _ssl.SSLContext | None = None,
    pipelined: bool = False,
    nodelay: bool = True,
    keepalive: bool = True,
) -> BindListener:
    """Ask a SOCKS5 or SOCKS4 proxy to listen for one incoming connection (BIND).

    Through a chain, the earlier hops CONNECT and the last one BINDs.

    Args:
        proxy: the proxy (or chain); the last one must be SOCKS.
        expected_peer: who will connect (``0.0.0.0:0``: anyone; proxies may check it).
        timeout: one deadline for connecting and the first reply.
        proxy_ssl, pipelined, nodelay, keepalive: as for :func:`open_tcp_stream`.

    Returns:
        A :class:`BindListener`: advertise ``.address`` to the peer, then ``accept()``.

    Raises:
        LocalProtocolError: no proxy, or BIND through an HTTP proxy.
        ProxyError: as for :func:`open_tcp_stream`.
    """
    plan = ConnectPlan.for_bind(
        proxy, expected_peer, timeout=timeout, pipelined=pipelined, io_errors=IO_ERRORS, clock=trio.current_time
    )
    return BindListener(await _open(plan, None, proxy_ssl, nodelay, keepalive, False), plan)


@final
class BindListener:
    """A proxy listening for one connection on our behalf (BIND's first reply came).

    Attributes:
        address: where the peer must connect (the first reply's address; when
            the proxy answers ``0.0.0.0`` or ``::``, the proxy's IP address).
        peer: after :meth:`accept`, the peer that connected (the second reply).
        info: the connection to the proxy (``bound`` is the raw first reply).
    """

    def __init__(self, stream: trio.abc.Stream, plan: ConnectPlan) -> None:
        handshake = plan.handshake
        assert handshake is not None
        assert plan.bind_address is not None
        self.address = plan.bind_address
        self.info = plan.info()
        self.peer: Address | None = handshake.bind_peer
        self._stream: trio.abc.Stream | None = stream
        self._handshake = handshake

    async def accept(self, timeout: float | None = None) -> trio.abc.Stream:
        """Wait for the peer to connect (BIND's second reply) and return the stream to it.

        The stream is yours from then on (the listener no longer closes it). On
        any failure, the time-out included, the connection to the proxy is closed
        (a cancelled read may have left a TLS stream broken).

        Raises:
            ProxyTimeoutError: no peer within *timeout* seconds.
            ProxyRefusedError: the proxy reported a failure in its second reply.
            trio.ClosedResourceError: called twice, or after :meth:`aclose`.
        """
        stream, self._stream = self._stream, None
        if stream is None:
            raise trio.ClosedResourceError("this BIND listener was already accepted or closed")
        plan = HandshakePlan(self._handshake, timeout=timeout, io_errors=IO_ERRORS, clock=trio.current_time)
        await Link(plan, stream=stream).run(plan.run())
        self.peer = self._handshake.bind_peer
        logger.debug("trio: BIND peer %s connected", self.peer)
        return stream

    async def aclose(self) -> None:
        """Close the connection to the proxy (the proxy stops listening); no-op after :meth:`accept`."""
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.aclose()
        else:
            await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> BindListener:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


# -- UDP ASSOCIATE -------------------------------------------------------------------------------


async def open_udp_association(
    proxy: ProxySpec,
    *,
    timeout: float | None = None,
    nodelay: bool = True,
    keepalive: bool = True,
) -> UdpAssociation:
    """Open a SOCKS5 UDP association: a UDP socket and the TCP control connection that keeps it alive.

    The UDP socket is bound to the local IP of the control connection, and that
    address is sent in the request (RFC 1928 §4: the address we send from).

    Args:
        proxy: one ``socks5://`` or ``socks5h://`` proxy.
        timeout: one deadline for connecting and the handshake.
        nodelay, keepalive: options for the control connection.

    Raises:
        LocalProtocolError: not exactly one SOCKS5 proxy.
        ProxyError: as for :func:`open_tcp_stream`.
    """
    plan = AssociatePlan(proxy, timeout=timeout, io_errors=IO_ERRORS, clock=trio.current_time)
    link = Link(plan, nodelay=nodelay, keepalive=keepalive)
    await link.run(plan.run())
    assert link.stream is not None
    assert link.udp is not None
    logger.debug("trio: UDP association: relay %s, local %s", plan.relay, plan.local)
    return UdpAssociation(link.stream, link.udp, plan)


@final
class UdpAssociation:
    """A SOCKS5 UDP association (RFC 1928 §7).

    Datagrams go to and come from the proxy's relay, each with the SOCKS5 UDP
    header. The association lasts as long as the TCP control connection:
    :meth:`aclose` (or leaving ``async with``) ends both.

    Attributes:
        relay: the relay's address (the reply's; the proxy's IP when it said ``0.0.0.0``).
        control: the TCP control connection.
        socket: the local UDP socket.
        info: the control connection's report; ``target`` is the address we announced.
    """

    def __init__(self, control: trio.abc.Stream, udp: tsocket.SocketType, plan: AssociatePlan) -> None:
        self.control = control
        self.socket = udp
        self.relay = plan.relay
        self.info = plan.info()
        self._plan = plan
        self._relay_sockaddr = (plan.relay.host_str, plan.relay.port)

    async def sendto(self, data: bytes | bytearray | memoryview, address: tuple[str | bytes, int] | Address) -> None:
        """Send *data* to *address* through the relay.

        A name is resolved here for ``socks5://`` and by the proxy for ``socks5h://``.
        """
        packet = await Stepper(self._plan.datagram(data, address)).arun(resolve)
        await self.socket.sendto(packet, self._relay_sockaddr)

    async def recvfrom(self) -> tuple[bytes, Address]:
        """Receive the next datagram: ``(data, where it came from)``.

        Datagrams not from the relay, malformed ones and fragments (FRAG != 0,
        no reassembly: RFC 1928 §7) are dropped, and logged at DEBUG.
        """
        while True:
            packet, source = await self.socket.recvfrom(UDP_MAX)
            received = unwrap_relay_datagram(packet, source, self._relay_sockaddr)
            if received is not None:
                return received

    async def aclose(self) -> None:
        """Close the UDP socket and the control connection (the association ends)."""
        self.socket.close()
        await self.control.aclose()

    async def __aenter__(self) -> UdpAssociation:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

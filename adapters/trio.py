"""The trio backend: connect through proxies and get a ``trio.abc.Stream``.

Strategy: this module moves bytes and nothing else. Every protocol decision
belongs to the pure :class:`~socks_sansio.ClientHandshake` driver; one hop is
the driver's short loop run by :func:`handshake_over`::

    send_all(data_to_send())
    while not established:
        receive_data(receive_some(read_size_hint)); send_all(data_to_send())

A chain is that loop once per hop over the same stream, with TLS layered in
with :class:`trio.SSLStream` where a hop is ``https://`` and, last, to the
target (TLS inside TLS needs nothing special: an ``SSLStream`` wraps any
stream). Bytes the proxy sent after its final reply are never lost: the stream
is wrapped in a :class:`PrefixedStream` that returns them before reading on.

One deadline covers a whole call (TCP connect, every handshake step, every
TLS handshake): a single :func:`trio.move_on_after` scope around it, turned
into :class:`~socks_sansio.ProxyTimeoutError` when it fires. Cancellation from
outside is not caught and propagates as usual; whatever was opened is closed.

Public API: :func:`open_tcp_stream`, :func:`open_tunnel` (a :class:`Tunnel`
with frames, HTTP requests and timings), :func:`open_udp_association`
(:class:`UdpAssociation`), :func:`open_bind` (:class:`BindListener`), and
:func:`handshake_over` for a stream you connected yourself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl as _ssl
import sys
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, Final, final

import trio
import trio.socket as tsocket

from socks_sansio import (
    Address,
    ClientHandshake,
    Command,
    ConnectionClosed,
    Frame,
    FrameDecoder,
    HandshakeStatus,
    LocalProtocolError,
    ProxyConnectionError,
    ProxyProtocol,
    ProxyURL,
    UdpDatagram,
    encode_frame,
    encode_udp_datagram,
    needs_local_resolution,
)
from socks_sansio._http1 import HttpResponse, ResponseReader, encode_request

from ._common import (
    DEFAULT_RECV_SIZE,
    ConnectionInfo,
    Deadline,
    Hop,
    ProxySpec,
    advertised,
    literal_sockaddr,
    logger,
    plan_hops,
    proxies_from_environment,
    to_proxies,
    unwrap_relay_datagram,
)
from ._failover import Failures, RetryPolicy, candidates_for, plan_failover
from ._pool import IdleConnections, PoolStats

__all__ = [
    "BindListener",
    "HalfCloseablePrefixedStream",
    "PrefixedStream",
    "ProxyPool",
    "Tunnel",
    "UdpAssociation",
    "handshake_over",
    "open_bind",
    "open_tcp_stream",
    "open_tunnel",
    "open_udp_association",
]

_ANY_PEER: Final = Address("0.0.0.0", 0)

if sys.version_info < (3, 11):  # pragma: no cover - Python 3.10: trio's own dependency
    from exceptiongroup import ExceptionGroup


# -- streams that hand out the bytes read past the handshake first --------------------------------


class PrefixedStream(trio.abc.Stream):
    """A stream that returns *prefix* before reading from *transport_stream*.

    It carries the bytes a proxy sent in the same segment as its final reply
    (the first tunnel bytes), so they reach the application first. Sending,
    closing and everything else go straight to the transport.

    Args:
        transport_stream: the stream the handshake ran over.
        prefix: octets already received from it that belong to the tunnel.
        eof: whether the transport's end of file was already seen after *prefix*.
    """

    def __init__(self, transport_stream: trio.abc.Stream, prefix: bytes, *, eof: bool = False) -> None:
        self.transport_stream = transport_stream
        self._prefix = bytes(prefix)
        self._eof = eof
        self._closed = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send *data* on the transport stream."""
        if self._closed:
            raise trio.ClosedResourceError("the stream was closed")
        await self.transport_stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the transport stream can take data."""
        await self.transport_stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Return buffered prefix octets first (at most *max_bytes*), then read from the transport."""
        if self._closed:
            raise trio.ClosedResourceError("the stream was closed")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        if self._prefix:
            size = len(self._prefix) if max_bytes is None else max_bytes
            chunk, self._prefix = self._prefix[:size], self._prefix[size:]
            await trio.lowlevel.checkpoint()
            return chunk
        if self._eof:
            await trio.lowlevel.checkpoint()
            return b""
        return await self.transport_stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        """Drop the prefix and close the transport stream (and everything under it)."""
        self._closed = True
        self._prefix = b""
        await self.transport_stream.aclose()


class HalfCloseablePrefixedStream(PrefixedStream, trio.abc.HalfCloseableStream):
    """A :class:`PrefixedStream` over a half-closeable transport (a plain TCP stream).

    Only built when the transport has ``send_eof``: a :class:`trio.SSLStream`
    does not (TLS has no half-close), so a prefixed TLS stream is a plain
    :class:`PrefixedStream` and ``isinstance(s, trio.abc.HalfCloseableStream)``
    tells the truth.
    """

    transport_stream: trio.abc.HalfCloseableStream

    def __init__(self, transport_stream: trio.abc.HalfCloseableStream, prefix: bytes, *, eof: bool = False) -> None:
        super().__init__(transport_stream, prefix, eof=eof)

    async def send_eof(self) -> None:
        """Half-close: send EOF on the transport; receiving still works."""
        await self.transport_stream.send_eof()


def _with_leftovers(stream: trio.abc.Stream, data: bytes, eof: bool) -> trio.abc.Stream:
    """*stream*, wrapped so that *data* (and *eof*) come out first, or as is when there is nothing."""
    if not data and not eof:
        return stream
    logger.debug("trio: %d octets arrived with the final reply; they are delivered first", len(data))
    if isinstance(stream, trio.abc.HalfCloseableStream):
        return HalfCloseablePrefixedStream(stream, data, eof=eof)
    return PrefixedStream(stream, data, eof=eof)


# -- one hop -------------------------------------------------------------------------------------


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
    proxy = handshake.proxy.redacted()
    start = handshake.status
    debug = logger.isEnabledFor(logging.DEBUG)
    try:
        await _flush(stream, handshake, proxy)
        while handshake.status is start and not handshake.established:
            data = await stream.receive_some(handshake.read_size_hint)
            if debug:
                logger.debug("trio: received %d octets from %s", len(data), proxy)
            handshake.receive_data(data)
            await _flush(stream, handshake, proxy)
    except trio.BrokenResourceError as exc:
        raise ProxyConnectionError(
            f"the connection to the proxy broke during the handshake: {exc.__cause__ or exc}", proxy=proxy
        ) from exc
    if handshake.status is HandshakeStatus.BIND_LISTENING:
        logger.debug("trio: %s listens for the BIND peer at %s", proxy, handshake.bound)
        return stream
    if handshake.status is HandshakeStatus.READY:
        logger.debug("trio: %s is prepared, waiting for the request", proxy)
        return stream
    if debug:
        logger.debug("trio: handshake with %s done (bound %s)", proxy, handshake.bound)
    data, eof = handshake.trailing_data
    return _with_leftovers(stream, data, eof)


async def _flush(stream: trio.abc.Stream, handshake: ClientHandshake, proxy: str) -> None:
    out = handshake.data_to_send()
    if out:
        logger.debug("trio: sending %d octets to %s", len(out), proxy)
        await stream.send_all(out)


# -- connecting a chain --------------------------------------------------------------------------


@final
class _Progress:
    """What a call is doing, for the time-out message; and how long each part took."""

    __slots__ = ("connect_time", "handshake_time", "proxy", "step", "tls_time")

    def __init__(self) -> None:
        self.step = "the call"
        self.proxy: str | None = None
        self.connect_time = 0.0
        self.handshake_time = 0.0
        self.tls_time = 0.0


@final
class _Chain:
    """What :func:`_open_chain` built."""

    __slots__ = ("handshake", "socket_stream", "stream")

    def __init__(
        self, stream: trio.abc.Stream, socket_stream: trio.SocketStream, handshake: ClientHandshake | None
    ) -> None:
        self.stream = stream
        self.socket_stream = socket_stream
        self.handshake = handshake


def _scope(timeout: float | None) -> trio.CancelScope:
    return trio.CancelScope() if timeout is None else trio.move_on_after(timeout)


async def _open_tcp_stream(address: Address) -> trio.SocketStream:
    """``trio.open_tcp_stream(address.host_str, address.port)``, with the same result and errors.

    An IP literal has exactly one address, so there is nothing for the resolver
    to find nor for happy eyeballs to race: its socket is connected directly,
    without the nursery and tasks ``trio.open_tcp_stream`` spends on the race.
    """
    literal = literal_sockaddr(address)
    if literal is None:
        return await trio.open_tcp_stream(address.host_str, address.port)
    family, sockaddr = literal
    sock = tsocket.socket(family, tsocket.SOCK_STREAM, tsocket.IPPROTO_TCP)
    try:
        await sock.connect(sockaddr)
    except OSError as exc:
        sock.close()
        host = address.host_str
        message = f"all attempts to connect to {f'[{host}]' if ':' in host else host}:{address.port} failed"
        raise OSError(message) from ExceptionGroup(message, [exc])  # as trio.open_tcp_stream words it
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def _connect(address: Address, hop: Hop | None, nodelay: bool, keepalive: bool) -> trio.SocketStream:
    """TCP connect to the first hop (or the target); OSError becomes ProxyConnectionError for a proxy."""
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("trio: connecting to %s", hop.describe() if hop else address)
    try:
        stream = await _open_tcp_stream(address)
    except OSError as exc:
        if hop is None:
            raise
        raise ProxyConnectionError(
            f"could not connect to the proxy {hop.describe()}: {exc}", proxy=hop.describe()
        ) from exc
    try:
        if not nodelay:  # trio.SocketStream has set TCP_NODELAY already
            stream.setsockopt(tsocket.IPPROTO_TCP, tsocket.TCP_NODELAY, False)
        stream.setsockopt(tsocket.SOL_SOCKET, tsocket.SO_KEEPALIVE, keepalive)
    except OSError:
        await trio.aclose_forcefully(stream)
        raise
    return stream


async def _resolve(address: Address, *, ipv4_only: bool, socktype: int = tsocket.SOCK_STREAM) -> Address:
    """*address* with its name resolved by trio's resolver (first answer); IPs are returned as they are."""
    if not address.is_domain:
        return address
    family = tsocket.AF_INET if ipv4_only else tsocket.AF_UNSPEC
    infos = await tsocket.getaddrinfo(address.host_str, address.port, family=family, type=socktype)
    if not infos:  # getaddrinfo raises instead, in practice
        raise OSError(f"no address found for {address.host_str}")
    ip = str(infos[0][4][0]).partition("%")[0]
    logger.debug("trio: resolved %s locally to %s", address.host_str, ip)
    return Address(ip, address.port)


async def _start_tls(
    stream: trio.abc.Stream,
    context: _ssl.SSLContext,
    server_hostname: str,
    *,
    https_compatible: bool,
    progress: _Progress,
) -> trio.SSLStream[trio.abc.Stream]:
    started = trio.current_time()
    logger.debug("trio: TLS handshake with %s", server_hostname)
    tls = trio.SSLStream(stream, context, server_hostname=server_hostname, https_compatible=https_compatible)
    await tls.do_handshake()
    progress.tls_time += trio.current_time() - started
    return tls


async def _open_chain(
    proxies: Sequence[ProxyURL],
    target: Address,
    *,
    command: Command,
    proxy_ssl: _ssl.SSLContext | None,
    pipelined: bool,
    nodelay: bool,
    keepalive: bool,
    progress: _Progress,
    prepare: bool = False,
) -> _Chain:
    """Connect to the first hop and run every hop's handshake; the last hop runs *command*.

    With *prepare*, the last hop stops before its request (status ``READY``,
    *target* unused): a connection for a :class:`ProxyPool`. On any error (or
    cancellation) everything opened is closed.
    """
    hops = plan_hops(proxies, target)
    first = hops[0] if hops else None
    progress.step = "the TCP connect"
    progress.proxy = first.describe() if first else None
    started = trio.current_time()
    socket_stream = await _connect(first.proxy.address if first else target, first, nodelay, keepalive)
    progress.connect_time = trio.current_time() - started
    stream: trio.abc.Stream = socket_stream
    handshake = None
    try:
        for i, hop in enumerate(hops):
            progress.proxy = hop.describe()
            if hop.needs_tls:
                progress.step = "the TLS handshake with the proxy"
                context = proxy_ssl if proxy_ssl is not None else _ssl.create_default_context()
                try:
                    stream = await _start_tls(
                        stream, context, hop.proxy.address.host_str, https_compatible=True, progress=progress
                    )
                except trio.BrokenResourceError as exc:
                    raise ProxyConnectionError(
                        f"the TLS handshake with the proxy {hop.describe()} failed: {exc.__cause__ or exc}",
                        proxy=hop.describe(),
                    ) from exc
            last = i == len(hops) - 1
            if prepare and last:
                handshake = ClientHandshake(hop.proxy, None)
            else:
                hop_target = await _hop_target(hop.proxy, hop.target, progress)
                handshake = ClientHandshake(
                    hop.proxy, hop_target, command=command if last else Command.CONNECT, pipelined=pipelined
                )
            progress.step = "the proxy handshake"
            started = trio.current_time()
            stream = await handshake_over(stream, handshake)
            progress.handshake_time += trio.current_time() - started
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return _Chain(stream, socket_stream, handshake)


async def _hop_target(proxy: ProxyURL, target: Address, progress: _Progress) -> Address:
    """*target* as *proxy* must see it: resolved here for ``socks5://`` and ``socks4://``."""
    if not needs_local_resolution(proxy, target):
        return target
    progress.step = f"resolving {target.host_str}"
    return await _resolve(target, ipv4_only=proxy.protocol is ProxyProtocol.SOCKS4)


def _choose_proxies(
    proxy: ProxySpec | Sequence[ProxySpec] | None, trust_env: bool, scheme: str, host: str | bytes, port: int
) -> list[ProxyURL]:
    if proxy is None and trust_env:
        return proxies_from_environment(scheme, _host_text(host), port, os.environ)
    return to_proxies(proxy)


def _host_text(host: str | bytes) -> str:
    return host.decode("ascii", "backslashreplace") if isinstance(host, bytes) else host


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
            (default: *host*).
        proxy_ssl: the context for ``https://`` proxies (default
            :func:`ssl.create_default_context`). Those TLS sessions are
            ``https_compatible`` (no ``close_notify`` needed), as HTTP proxies expect.
        trust_env: with ``proxy=None``, take the proxy from ``ALL_PROXY``,
            ``HTTPS_PROXY`` (when *ssl* is given) or ``HTTP_PROXY``, and ``NO_PROXY``.
        pipelined: SOCKS5: greeting, credentials and request in one write.
        nodelay: set ``TCP_NODELAY`` on the socket.
        keepalive: set ``SO_KEEPALIVE`` on the socket.
        https_compatible: passed to the target's :class:`trio.SSLStream`.
        failover: instead of *proxy*, the candidates to try in order, each a
            proxy or a chain; round after round under *retry*, all within
            *timeout* (see :mod:`socks_sansio.adapters._failover`).
        retry: the :class:`RetryPolicy` (default ``RetryPolicy()`` with
            *failover*; alone, it retries the one *proxy*).

    Returns:
        Without *ssl*: a :class:`trio.abc.HalfCloseableStream` when every hop is
        plain TCP (a :class:`trio.SocketStream`, or a
        :class:`HalfCloseablePrefixedStream` when the last proxy sent tunnel bytes
        with its reply), or a :class:`trio.SSLStream` (possibly inside a
        :class:`PrefixedStream`) through an ``https://`` proxy, which has no
        ``send_eof``. With *ssl*: a :class:`trio.SSLStream`. Closing it closes
        every layer.

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
    opened = await _open(
        host,
        port,
        proxy=proxy,
        timeout=timeout,
        ssl=ssl,
        server_hostname=server_hostname,
        proxy_ssl=proxy_ssl,
        trust_env=trust_env,
        pipelined=pipelined,
        nodelay=nodelay,
        keepalive=keepalive,
        https_compatible=https_compatible,
        failover=failover,
        retry=retry,
    )
    return opened.stream  # the stream alone: no Tunnel and no ConnectionInfo to build


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
    opened = await _open(
        host,
        port,
        proxy=proxy,
        timeout=timeout,
        ssl=ssl,
        server_hostname=server_hostname,
        proxy_ssl=proxy_ssl,
        trust_env=trust_env,
        pipelined=pipelined,
        nodelay=nodelay,
        keepalive=keepalive,
        https_compatible=https_compatible,
        failover=failover,
        retry=retry,
    )
    return Tunnel(opened.stream, _info(opened, ssl is not None))


@final
class _Opened:
    """What :func:`_open` built: the stream, and what the :class:`ConnectionInfo` is made from."""

    __slots__ = ("chain", "progress", "proxies", "started", "stream", "target")

    def __init__(
        self,
        stream: trio.abc.Stream,
        chain: _Chain,
        proxies: Sequence[ProxyURL],
        target: Address,
        progress: _Progress,
        started: float,
    ) -> None:
        self.stream = stream
        self.chain = chain
        self.proxies = proxies
        self.target = target
        self.progress = progress
        self.started = started


async def _open(
    host: str | bytes,
    port: int,
    *,
    proxy: ProxySpec | Sequence[ProxySpec] | None,
    timeout: float | None,
    ssl: _ssl.SSLContext | None,
    server_hostname: str | None,
    proxy_ssl: _ssl.SSLContext | None,
    trust_env: bool,
    pipelined: bool,
    nodelay: bool,
    keepalive: bool,
    https_compatible: bool,
    failover: Sequence[ProxySpec | Sequence[ProxySpec]] | None,
    retry: RetryPolicy | None,
) -> _Opened:
    """:func:`open_tunnel` up to the stream (TLS to the target included), all under the one deadline."""
    deadline = Deadline(timeout)
    started = trio.current_time()
    proxies = _choose_proxies(proxy, trust_env, "https" if ssl is not None else "http", host, port)
    target = Address(_host_text(host), port)
    progress = _Progress()
    candidates = None if failover is None and retry is None else candidates_for(proxy, failover, lambda: proxies)
    failures = None if candidates is None else Failures(retry or RetryPolicy())
    with _scope(timeout):
        if candidates is None:
            chain = await _open_chain(
                proxies,
                target,
                command=Command.CONNECT,
                proxy_ssl=proxy_ssl,
                pipelined=pipelined,
                nodelay=nodelay,
                keepalive=keepalive,
                progress=progress,
            )
        else:
            assert failures is not None
            for step in plan_failover(candidates, failures.policy, deadline.remaining):
                if step.delay:
                    logger.debug("trio: failover: waiting %.3f s before round %d", step.delay, step.round)
                    await trio.sleep(step.delay)
                logger.debug("trio: failover attempt %d (round %d) via %s", step.number, step.round, step.describe())
                progress = _Progress()
                try:
                    chain = await _open_chain(
                        step.chain,
                        target,
                        command=Command.CONNECT,
                        proxy_ssl=proxy_ssl,
                        pipelined=pipelined,
                        nodelay=nodelay,
                        keepalive=keepalive,
                        progress=progress,
                    )
                except Exception as exc:
                    logger.debug("trio: failover attempt %d failed: %s: %s", step.number, type(exc).__name__, exc)
                    if not failures.record(step, exc):
                        raise
                    continue
                proxies = list(step.chain)
                break
            else:
                raise failures.final_error()
        stream = await _target_tls(
            chain, ssl=ssl, server_hostname=server_hostname if server_hostname is not None else _host_text(host),
            https_compatible=https_compatible, progress=progress,
        )  # fmt: skip
        return _Opened(stream, chain, proxies, target, progress, started)
    expired = deadline.expired_error(progress.step, progress.proxy)
    raise expired if failures is None else failures.annotate(expired)


def _info(opened: _Opened, tls: bool) -> ConnectionInfo:
    """The report of a finished call."""
    proxies, progress = opened.proxies, opened.progress
    info = ConnectionInfo(
        proxies=tuple(p.redacted() for p in proxies),
        target=opened.target,
        protocol=proxies[-1].protocol if proxies else None,
        bound=opened.chain.handshake.bound if opened.chain.handshake else None,
        tls=tls,
        connect_time=progress.connect_time,
        handshake_time=progress.handshake_time,
        tls_time=progress.tls_time,
        total_time=trio.current_time() - opened.started,
    )
    logger.debug("trio: connected to %s via %d proxies in %.3f s", opened.target, len(proxies), info.total_time)
    return info


async def _target_tls(
    chain: _Chain,
    *,
    ssl: _ssl.SSLContext | None,
    server_hostname: str,
    https_compatible: bool,
    progress: _Progress,
) -> trio.abc.Stream:
    """*chain*'s stream with TLS to the target when asked (the stream is closed on failure)."""
    stream = chain.stream
    if ssl is not None:
        progress.step = "the TLS handshake with the target"
        progress.proxy = None
        try:
            stream = await _start_tls(
                stream, ssl, server_hostname, https_compatible=https_compatible, progress=progress
            )
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
    return stream


async def _complete(
    chain: _Chain,
    proxies: Sequence[ProxyURL],
    target: Address,
    *,
    ssl: _ssl.SSLContext | None,
    server_hostname: str,
    https_compatible: bool,
    progress: _Progress,
    started: float,
) -> Tunnel:
    """TLS to the target if asked, then the :class:`Tunnel` (the stream is closed on failure)."""
    stream = await _target_tls(
        chain, ssl=ssl, server_hostname=server_hostname, https_compatible=https_compatible, progress=progress
    )
    return Tunnel(stream, _info(_Opened(stream, chain, proxies, target, progress, started), ssl is not None))


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
        request = encode_request(method, target, host=self.info.target.authority, headers=headers, body=body)
        await self.stream.send_all(request)
        reader = ResponseReader(request_method=method)
        while not isinstance(event := reader.next_event(), HttpResponse):
            reader.receive_data(await self.stream.receive_some(min(reader.read_size_hint, DEFAULT_RECV_SIZE)))
        leftover, eof = reader.trailing_data
        self.stream = _with_leftovers(self.stream, leftover, eof)
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
        LocalProtocolError: BIND through an HTTP proxy.
        ProxyError: as for :func:`open_tcp_stream`.
    """
    deadline = Deadline(timeout)
    proxies = to_proxies(proxy)
    if not proxies:
        raise LocalProtocolError("BIND needs a SOCKS proxy; none was given")
    if proxies[-1].protocol is ProxyProtocol.HTTP:
        raise LocalProtocolError("an HTTP proxy cannot BIND: the last proxy must be socks5:// or socks4://")
    progress = _Progress()
    with _scope(timeout):
        chain = await _open_chain(
            proxies,
            expected_peer,
            command=Command.BIND,
            proxy_ssl=proxy_ssl,
            pipelined=pipelined,
            nodelay=nodelay,
            keepalive=keepalive,
            progress=progress,
        )
        assert chain.handshake is not None
        return BindListener(chain.stream, chain.handshake, str(chain.socket_stream.socket.getpeername()[0]))
    raise deadline.expired_error(progress.step, progress.proxy)


@final
class BindListener:
    """A proxy listening for one connection on our behalf (BIND's first reply came).

    Attributes:
        address: where the peer must connect (the first reply's address; when
            the proxy answers ``0.0.0.0`` or ``::``, the first proxy's IP address).
        peer: after :meth:`accept`, the peer that connected (the second reply).
    """

    def __init__(self, stream: trio.abc.Stream, handshake: ClientHandshake, proxy_ip: str) -> None:
        bound = handshake.bound
        assert bound is not None
        self.address = advertised(bound, proxy_ip)
        self.peer: Address | None = handshake.bind_peer
        self._stream: trio.abc.Stream | None = stream
        self._handshake = handshake

    async def accept(self, timeout: float | None = None) -> trio.abc.Stream:
        """Wait for the peer to connect (BIND's second reply) and return the stream to it.

        The stream is yours from then on (the listener no longer closes it).

        Raises:
            ProxyTimeoutError: no peer within *timeout* seconds.
            ProxyRefusedError: the proxy reported a failure in its second reply.
            trio.ClosedResourceError: called twice, or after :meth:`aclose`.
        """
        stream = self._stream
        if stream is None:
            raise trio.ClosedResourceError("this BIND listener was already accepted or closed")
        deadline = Deadline(timeout)
        with _scope(timeout):
            try:
                stream = await handshake_over(stream, self._handshake)
            except BaseException:
                self._stream = None
                await trio.aclose_forcefully(stream)
                raise
            self._stream = None
            self.peer = self._handshake.bind_peer
            logger.debug("trio: BIND peer %s connected", self.peer)
            return stream
        self._stream = None
        await trio.aclose_forcefully(stream)
        raise deadline.expired_error("the wait for the BIND peer", self._handshake.proxy.redacted())

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
    proxies = to_proxies(proxy)
    if len(proxies) != 1 or proxies[0].protocol is not ProxyProtocol.SOCKS5:
        raise LocalProtocolError("UDP ASSOCIATE needs exactly one socks5:// or socks5h:// proxy")
    url = proxies[0]
    hop = Hop(url, _ANY_PEER)
    deadline = Deadline(timeout)
    progress = _Progress()
    progress.proxy = hop.describe()
    with _scope(timeout):
        progress.step = "the TCP connect"
        control = await _connect(url.address, hop, nodelay, keepalive)
        udp = tsocket.socket(control.socket.family, tsocket.SOCK_DGRAM)
        stream: trio.abc.Stream = control
        try:
            await udp.bind((control.socket.getsockname()[0], 0))
            here = udp.getsockname()
            handshake = ClientHandshake(url, Address(here[0], here[1]), command=Command.UDP_ASSOCIATE)
            progress.step = "the proxy handshake"
            stream = await handshake_over(stream, handshake)
            assert handshake.bound is not None
            relay = advertised(handshake.bound, str(control.socket.getpeername()[0]))
            progress.step = f"resolving the relay {relay}"
            ipv4 = control.socket.family == tsocket.AF_INET
            relay = await _resolve(relay, ipv4_only=ipv4, socktype=tsocket.SOCK_DGRAM)
        except BaseException:
            udp.close()
            await trio.aclose_forcefully(stream)
            raise
        logger.debug("trio: UDP association through %s: relay %s, local %s", hop.describe(), relay, here[:2])
        return UdpAssociation(stream, udp, relay, url)
    raise deadline.expired_error(progress.step, progress.proxy)


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
    """

    def __init__(
        self, control: trio.abc.Stream, udp: tsocket.SocketType, relay: Address, proxy: ProxyURL
    ) -> None:
        self.control = control
        self.socket = udp
        self.relay = relay
        self._proxy = proxy

    @property
    def _relay_sockaddr(self) -> tuple[str, int]:
        return (self.relay.host_str, self.relay.port)

    async def sendto(self, data: bytes | bytearray | memoryview, address: tuple[str | bytes, int] | Address) -> None:
        """Send *data* to *address* through the relay.

        A name is resolved here for ``socks5://`` and by the proxy for ``socks5h://``.
        """
        target = address if isinstance(address, Address) else Address(address[0], address[1])
        if needs_local_resolution(self._proxy, target):
            target = await _resolve(target, ipv4_only=False, socktype=tsocket.SOCK_DGRAM)
        packet = encode_udp_datagram(UdpDatagram(address=target, data=data))
        await self.socket.sendto(packet, self._relay_sockaddr)

    async def recvfrom(self) -> tuple[bytes, Address]:
        """Receive the next datagram: ``(data, where it came from)``.

        Datagrams not from the relay, malformed ones and fragments (FRAG != 0,
        no reassembly: RFC 1928 §7) are dropped, and logged at DEBUG.
        """
        relay = self._relay_sockaddr
        while True:
            packet, source = await self.socket.recvfrom(65535)
            received = unwrap_relay_datagram(packet, source, relay)
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


# -- pool ----------------------------------------------------------------------------------------


@final
class _Prepared:
    """A pooled connection, the last hop's handshake waiting in status READY, and its watcher.

    The watcher task waits to receive on the idle connection: anything it gets
    (an octet, EOF, an error) means the proxy closed it or broke the protocol,
    and marks it ``dead``. Cancelling it (``scope``) before use loses nothing.
    """

    __slots__ = ("chain", "dead", "done", "scope")

    def __init__(self, chain: _Chain) -> None:
        self.chain = chain
        self.dead = False
        self.scope = trio.CancelScope()
        self.done = trio.Event()

    def alive(self) -> bool:
        return not self.dead

    async def watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self.scope:
            task_status.started()
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self.chain.stream.receive_some(1)
            self.dead = True
            logger.debug("trio: pool: the proxy closed or talked on a prepared connection")
        self.done.set()

    async def stop_watching(self) -> None:
        self.scope.cancel()
        await self.done.wait()

    async def discard(self) -> None:
        """Close it, even when cancelled (the watcher, if still receiving, sees it closed)."""
        self.scope.cancel()
        await trio.aclose_forcefully(self.chain.stream)


@final
class ProxyPool:
    """Connections through a proxy (or a chain) prepared in advance: a new tunnel costs one round trip.

    A prepared connection is connected and authenticated: TCP (and TLS for
    ``https://``) to the proxy, every hop of a chain but the last one's
    request, the SOCKS5 greeting and RFC 1929 exchange. :meth:`open_tcp_stream`
    sends only the request and waits for its reply. SOCKS4 and HTTP proxies
    have nothing before the request, so for them a prepared connection saves
    the TCP (and TLS) set-up.

    Use it as ``async with ProxyPool(...) as pool:``: it runs a nursery of its
    own, where a background task keeps *size* connections ready (opening a new
    one whenever one is taken, discarded or expired) and a watcher per idle
    connection notices when the proxy closes it. A connection older than
    *idle_timeout*, or found closed, is discarded and the next one tried; when
    none is left (a miss) the call connects cold, as :func:`open_tcp_stream`
    does, within the same *timeout*. A pooled connection whose request fails
    because the connection broke is replaced by a cold connect too. Each
    connection becomes exactly one tunnel.

    Args:
        proxy: a proxy URL or :class:`~socks_sansio.ProxyURL`, or a sequence of them (a chain).
        size: how many prepared connections to keep ready.
        idle_timeout: seconds a prepared connection may wait unused. Keep it
            below the proxy's own limit for an unfinished negotiation (Dante's
            ``timeout.negotiate``, ``socks-sansio serve --negotiation-timeout``: 10 s).
        connect_timeout: the deadline for preparing one connection (in the background).
        proxy_ssl: the context for ``https://`` proxies (default: :func:`ssl.create_default_context`).
        nodelay: set ``TCP_NODELAY``.
        keepalive: set ``SO_KEEPALIVE``.

    Raises:
        LocalProtocolError: no proxy was given.
        ValueError, TypeError: a *size* or *idle_timeout* that cannot work.
    """

    def __init__(
        self,
        proxy: ProxySpec | Sequence[ProxySpec],
        *,
        size: int = 4,
        idle_timeout: float = 5.0,
        connect_timeout: float | None = 10.0,
        proxy_ssl: _ssl.SSLContext | None = None,
        nodelay: bool = True,
        keepalive: bool = True,
    ) -> None:
        self._proxies = to_proxies(proxy)
        if not self._proxies:
            raise LocalProtocolError("a ProxyPool needs at least one proxy")
        self._idle: IdleConnections[_Prepared] = IdleConnections(size, idle_timeout)
        self._connect_timeout = connect_timeout
        self._proxy_ssl = proxy_ssl
        self._nodelay = nodelay
        self._keepalive = keepalive
        self._wake = trio.Event()
        self._changed = trio.Event()
        self._manager: Any = None  # the nursery's async context manager, entered by __aenter__
        self._nursery: trio.Nursery | None = None

    @property
    def stats(self) -> PoolStats:
        """Hits, misses, discarded, opened and failed connections so far."""
        return self._idle.stats

    @property
    def ready(self) -> int:
        """How many prepared connections wait now."""
        return len(self._idle)

    def _running(self) -> trio.Nursery:
        if self._idle.closed:
            raise RuntimeError("this ProxyPool is closed")
        if self._nursery is None:
            raise RuntimeError("enter the pool first: async with ProxyPool(...) as pool")
        return self._nursery

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _refill_one(self) -> None:
        """Open one prepared connection (a refill already counted by start_refills) and hand it to the pool."""
        nursery = self._running()
        progress = _Progress()
        try:
            with _scope(self._connect_timeout) as scope:
                chain = await _open_chain(
                    self._proxies, _ANY_PEER, command=Command.CONNECT, proxy_ssl=self._proxy_ssl, pipelined=False,
                    nodelay=self._nodelay, keepalive=self._keepalive, progress=progress, prepare=True,
                )  # fmt: skip
            if scope.cancelled_caught:
                raise Deadline(self._connect_timeout).expired_error(progress.step, progress.proxy)
        except BaseException:
            self._idle.refilled(None)
            self._notify()
            raise
        prepared = _Prepared(chain)
        try:
            await nursery.start(prepared.watch)
        except BaseException:
            self._idle.refilled(None)
            await trio.aclose_forcefully(chain.stream)
            raise
        if not self._idle.refilled(prepared):
            await prepared.discard()
        self._notify()
        self._wake.set()  # the background task's next expiry may have changed

    async def _maintain(self) -> None:
        """Keep *size* connections ready; close the expired ones; back off while preparing fails."""
        backoff = 0.0
        while True:
            wake = self._wake = trio.Event()
            for each in self._idle.expired():
                await each.discard()
            wanted = self._idle.start_refills()
            for done in range(wanted):
                try:
                    await self._refill_one()
                except Exception as exc:
                    logger.debug("trio: pool: preparing a connection failed: %s: %s", type(exc).__name__, exc)
                    self._idle.cancel_refills(wanted - done - 1)
                    backoff = min(max(2 * backoff, 0.1), self._idle.idle_timeout)
                    await trio.sleep(backoff)
                    break
            else:
                backoff = 0.0
            if wanted:
                continue
            expiry = self._idle.next_expiry()
            with trio.move_on_after(expiry if expiry is not None else float("inf")):
                await wake.wait()

    async def fill(self) -> None:
        """Get *size* prepared connections ready now (a warm-up before the first call).

        Raises:
            ProxyError: preparing a connection failed (``ProxyAuthError`` when the
                proxy refuses the credentials), as :func:`open_tcp_stream` would raise it.
            RuntimeError: the pool is closed or not entered.
        """
        while True:
            self._running()
            wanted = self._idle.start_refills()
            if not wanted and not self._idle.opening:
                return
            if not wanted:
                await self._changed.wait()  # the background task is opening the last ones
                continue
            for done in range(wanted):
                try:
                    await self._refill_one()
                except BaseException:
                    self._idle.cancel_refills(wanted - done - 1)
                    self._wake.set()
                    raise

    async def _take(self, target: Address, progress: _Progress) -> _Chain:
        self._running()
        prepared, doomed = self._idle.take(_Prepared.alive)
        self._wake.set()  # the background task replaces what was taken or discarded
        for each in doomed:
            await each.discard()
        if prepared is not None:
            chain = prepared.chain
            handshake = chain.handshake
            assert handshake is not None
            progress.proxy = handshake.proxy.redacted()
            try:
                await prepared.stop_watching()
                if prepared.dead:
                    raise ProxyConnectionError("the proxy closed the prepared connection", proxy=progress.proxy)
                handshake.request(await _hop_target(handshake.proxy, target, progress))
                progress.step = "the proxy handshake (pooled connection)"
                started = trio.current_time()
                stream = await handshake_over(chain.stream, handshake)
                progress.handshake_time += trio.current_time() - started
            except ProxyConnectionError as exc:
                await trio.aclose_forcefully(chain.stream)
                self._idle.lost()
                logger.debug("trio: pool: the prepared connection broke (%s); connecting cold", exc)
            except BaseException:
                await trio.aclose_forcefully(chain.stream)
                raise
            else:
                logger.debug("trio: pool: hit for %s", target)
                return _Chain(stream, chain.socket_stream, handshake)
        logger.debug("trio: pool: miss for %s; connecting cold", target)
        return await _open_chain(
            self._proxies, target, command=Command.CONNECT, proxy_ssl=self._proxy_ssl, pipelined=False,
            nodelay=self._nodelay, keepalive=self._keepalive, progress=progress,
        )  # fmt: skip

    async def open_tunnel(
        self,
        host: str | bytes,
        port: int,
        *,
        timeout: float | None = None,
        ssl: _ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        https_compatible: bool = False,
    ) -> Tunnel:
        """Like :meth:`open_tcp_stream`, but return a :class:`Tunnel` (the stream and its report)."""
        deadline = Deadline(timeout)
        started = trio.current_time()
        target = Address(_host_text(host), port)
        progress = _Progress()
        with _scope(timeout):
            chain = await self._take(target, progress)
            return await _complete(
                chain, self._proxies, target, ssl=ssl, server_hostname=server_hostname if server_hostname is not None
                else _host_text(host), https_compatible=https_compatible, progress=progress, started=started,
            )  # fmt: skip
        raise deadline.expired_error(progress.step, progress.proxy)

    async def open_tcp_stream(
        self,
        host: str | bytes,
        port: int,
        *,
        timeout: float | None = None,
        ssl: _ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        https_compatible: bool = False,
    ) -> trio.abc.Stream:
        """Open a stream to *host*:*port* through the pool's proxies, as :func:`open_tcp_stream` does.

        Args:
            host, port, timeout, ssl, server_hostname, https_compatible: as for
                :func:`open_tcp_stream`; *timeout* covers the request on a prepared
                connection and, on a miss, the whole cold connect.

        Raises:
            RuntimeError: the pool is closed or not entered.
            ProxyError, OSError, trio.BrokenResourceError: as :func:`open_tcp_stream`.
        """
        tunnel = await self.open_tunnel(
            host, port, timeout=timeout, ssl=ssl, server_hostname=server_hostname, https_compatible=https_compatible
        )
        return tunnel.stream

    async def aclose(self) -> None:
        """Stop the background work and close every idle connection. Idempotent.

        Tunnels already handed out are the caller's and stay open.
        """
        for each in self._idle.close():
            await each.discard()
        self._notify()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def __aenter__(self) -> ProxyPool:
        if self._manager is not None or self._idle.closed:
            raise RuntimeError("a ProxyPool can be entered once")
        self._manager = trio.open_nursery()
        self._nursery = await self._manager.__aenter__()
        self._nursery.start_soon(self._maintain)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self.aclose()
        finally:
            self._nursery = None
            await self._manager.__aexit__(exc_type, exc, tb)

    def __repr__(self) -> str:
        return f"<ProxyPool via {[p.redacted() for p in self._proxies]} {self._idle.stats}>"

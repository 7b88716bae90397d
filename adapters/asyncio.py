"""The asyncio backend: connect through proxies with asyncio streams or protocols.

Strategy. Every call opens one TCP connection (to the first proxy, or to the
target when there is none) and runs each hop's pure :class:`ClientHandshake`
over it in the lock-step loop the driver documents::

    write(handshake.data_to_send())
    while not handshake.established:
        handshake.receive_data(await reader.read(handshake.read_size_hint))
        write(handshake.data_to_send())

The reads go through an :class:`asyncio.StreamReader` and never ask for more
than ``read_size_hint`` octets, so the bytes a proxy sends with (or right after)
its final reply stay in the reader's buffer: :func:`open_connection` hands that
same reader to the application, and :func:`create_connection` passes those
bytes to the new protocol's ``data_received`` before anything else arrives.

TLS (to an ``https://`` proxy, to the target, or both, which is TLS inside
TLS) is layered with :meth:`asyncio.AbstractEventLoop.start_tls` on the current
transport. We call the loop method rather than ``StreamWriter.start_tls`` for
two reasons: it exists on Python 3.10 too, and no ``StreamWriter`` has to exist
during the handshake (a discarded ``StreamWriter`` closes its transport when it
is garbage-collected, which would kill the transport that
:func:`create_connection` gives away). TLS over a TLS transport needs the
``sslproto`` rewrite of Python 3.11; on 3.10 that one case raises a clear error.

One deadline (``timeout=``) covers the whole call: TCP connect, name
resolution, every handshake step and every TLS handshake. It is enforced with
:func:`asyncio.timeout` (3.11+) or :func:`asyncio.wait_for` (3.10) around the
call, and surfaces as :class:`ProxyTimeoutError` naming the step that was
running; a cancellation by the caller still propagates as
:class:`asyncio.CancelledError`. On any failure the half-open connection is
aborted before the exception leaves.

This module holds no protocol policy: that lives in the core driver. It only
moves bytes, resolves names for ``socks5://`` / ``socks4://`` proxies with the
loop's resolver, and layers TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl as _ssl
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Final, TypeVar, final

import attrs

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
    ProxyProtocolError,
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
    describe_target,
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
    "ProxyPool",
    "Tunnel",
    "UdpAssociation",
    "create_connection",
    "open_bind",
    "open_connection",
    "open_tunnel",
    "open_udp_association",
]

_P = TypeVar("_P", bound=asyncio.BaseProtocol)
_T = TypeVar("_T")

_STREAM_LIMIT: Final = 2**16
"""The default ``limit`` of a StreamReader, as in :func:`asyncio.open_connection`."""

_UDP_QUEUE_SIZE: Final = 1024
"""Datagrams kept for :meth:`UdpAssociation.recvfrom`; more are dropped (UDP may drop anyway)."""

_TLS_IN_TLS: Final = sys.version_info >= (3, 11)


# ---------------------------------------------------------------------- internals


class _StreamProtocol(asyncio.StreamReaderProtocol):
    """A StreamReaderProtocol that remembers whether the peer sent EOF (or anything) and knows when TLS runs on top.

    The EOF flag lets :func:`create_connection` pass a peer's EOF on to the new
    protocol; the TLS flag keeps SSLProtocol from warning that returning true from
    ``eof_received`` has no effect over TLS.
    """

    def __init__(self, reader: asyncio.StreamReader) -> None:
        super().__init__(reader)
        self.peer_eof = False
        self.tls = False
        self.received = 0  # octets delivered so far: a pool's health check compares it

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        super().data_received(data)

    def eof_received(self) -> bool:
        self.peer_eof = True
        super().eof_received()
        return not self.tls


@final
class _Link:
    """The connection while it is being set up: a StreamReader fed by the current transport."""

    __slots__ = ("protocol", "raw", "reader", "transport")

    def __init__(self, reader: asyncio.StreamReader, protocol: _StreamProtocol, transport: asyncio.Transport) -> None:
        self.reader = reader
        self.protocol = protocol
        self.transport = transport  # the top layer: the TCP transport, or the last TLS layered on it
        self.raw = transport  # the TCP transport

    def write(self, data: bytes) -> None:
        if data:
            self.transport.write(data)

    async def start_tls(self, context: _ssl.SSLContext, server_hostname: str) -> None:
        if self.protocol.tls and not _TLS_IN_TLS:
            raise NotImplementedError("TLS inside TLS needs Python 3.11 or later (asyncio's start_tls over TLS)")
        loop = asyncio.get_running_loop()
        transport = await loop.start_tls(self.transport, self.protocol, context, server_hostname=server_hostname)
        if transport is None:  # only when the loop is closing
            raise ConnectionError("the event loop closed during the TLS handshake")
        self.transport = transport
        self.protocol.tls = True

    def writer(self) -> asyncio.StreamWriter:
        return asyncio.StreamWriter(self.transport, self.protocol, self.reader, asyncio.get_running_loop())

    def abort(self) -> None:
        self.transport.abort()
        self.raw.abort()


@final
class _Progress:
    """What the call is doing now, for the time-out message.

    The text of a step is only needed when something fails, so :meth:`later`
    keeps a format and its (immutable) arguments and :attr:`step` builds the
    text when it is read.
    """

    __slots__ = ("_args", "_format", "_step", "proxy")

    def __init__(self, step: str = "start", proxy: str | None = None) -> None:
        self._step: str | None = step
        self._format = ""
        self._args: tuple[object, ...] = ()
        self.proxy = proxy

    @property
    def step(self) -> str:
        """The step, in words."""
        step = self._step
        if step is None:
            step = self._step = self._format.format(*self._args)
        return step

    @step.setter
    def step(self, text: str) -> None:
        self._step = text

    def later(self, text_format: str, *args: object) -> None:
        """Set the step to ``text_format.format(*args)``, built only if it is read."""
        self._step = None
        self._format = text_format
        self._args = args


@attrs.frozen(kw_only=True)
class _Options:
    ssl: _ssl.SSLContext | None
    server_hostname: str | None
    proxy_ssl: _ssl.SSLContext | None
    pipelined: bool
    nodelay: bool
    keepalive: bool
    limit: int


@final
class _Opened:
    """An open connection: the link, the last hop's handshake, and its report.

    The :class:`ConnectionInfo` is given, or built on first use from *parts*
    (the hops, the target, the options, the timings and the total time, all
    taken when the connection was done): :func:`open_connection` never needs it.
    """

    __slots__ = ("_info", "_parts", "handshake", "link")

    def __init__(
        self,
        link: _Link,
        handshake: ClientHandshake | None,
        info: ConnectionInfo | None = None,
        *,
        parts: tuple[Sequence[Hop], Address, _Options, _Timing, float] | None = None,
    ) -> None:
        if info is None and parts is None:
            raise TypeError("an _Opened needs its info or the parts to build it from")
        self.link = link
        self.handshake = handshake
        self._info = info
        self._parts = parts

    @property
    def info(self) -> ConnectionInfo:
        """What the connection went through (hops, bound address, timings)."""
        info = self._info
        if info is None:
            assert self._parts is not None
            hops, target, options, timing, total_time = self._parts
            info = self._info = _report(hops, target, self.handshake, options, timing, total_time)
        return info


def _tls_context(value: _ssl.SSLContext | bool | None) -> _ssl.SSLContext | None:
    if value is None or value is False:
        return None
    if value is True:
        return _ssl.create_default_context()
    if isinstance(value, _ssl.SSLContext):
        return value
    raise TypeError(f"ssl must be an ssl.SSLContext, True, False or None, not {type(value).__name__}")


def _set_socket_options(transport: asyncio.BaseTransport, *, nodelay: bool, keepalive: bool) -> None:
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(nodelay))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, int(keepalive))


async def _resolve(proxy: ProxyURL, target: Address, progress: _Progress) -> Address:
    """The target as the proxy must see it: resolved here for ``socks5://`` and ``socks4://``."""
    if not needs_local_resolution(proxy, target):
        return target
    progress.step = f"resolving {target.host_str} (a {proxy.scheme}:// proxy needs an address)"
    family = socket.AF_INET if proxy.protocol is ProxyProtocol.SOCKS4 else socket.AF_UNSPEC
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(target.host_str, target.port, family=family, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ProxyConnectionError(
            f"cannot resolve {target.host_str} locally, as a {proxy.scheme}:// proxy requires: {exc}",
            proxy=proxy.redacted(),
        ) from exc
    address = Address(str(infos[0][4][0]), target.port)
    logger.debug("resolved %s to %s for %s", target.host_str, address.host_str, proxy.redacted())
    return address


async def _run_handshake(link: _Link, handshake: ClientHandshake, *, until_listening: bool = False) -> None:
    """The driver's loop. Stops when established, or at BIND's first reply with *until_listening*."""
    link.write(handshake.data_to_send())
    while handshake.status is HandshakeStatus.IN_PROGRESS or (
        handshake.status is HandshakeStatus.BIND_LISTENING and not until_listening
    ):
        handshake.receive_data(await link.reader.read(handshake.read_size_hint))
        link.write(handshake.data_to_send())
    leftover, _eof = handshake.trailing_data
    if leftover:  # reads never exceed read_size_hint, so the driver cannot hold tunnel bytes
        raise RuntimeError("socks-sansio bug: the handshake driver holds tunnel bytes despite read_size_hint")


async def _open(
    target: Address,
    proxies: Sequence[ProxyURL],
    options: _Options,
    progress: _Progress,
    *,
    command: Command = Command.CONNECT,
    prepare: bool = False,
) -> _Opened:
    """Connect, run every hop's handshake, layer TLS; abort the connection on any failure.

    With *prepare*, the last hop stops before its request (status ``READY``;
    *target* and ``options.ssl`` unused): a connection for a :class:`ProxyPool`,
    which :func:`_finish` completes.
    """
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    hops = plan_hops(proxies, target)
    commands = [Command.CONNECT] * (len(hops) - 1) + [command]
    # Build every handshake whose target needs no resolution now, so that an
    # impossible request (an IPv6 target through SOCKS4...) fails before connecting.
    ready = [
        ClientHandshake(hop.proxy, None)
        if prepare and i == len(hops) - 1
        else None
        if needs_local_resolution(hop.proxy, hop.target)
        else ClientHandshake(hop.proxy, hop.target, command=asked, pipelined=options.pipelined)
        for i, (hop, asked) in enumerate(zip(hops, commands, strict=False))
    ]
    first = hops[0].proxy.address if hops else target
    debug = logger.isEnabledFor(logging.DEBUG)
    progress.later("TCP connect to {}", first)
    progress.proxy = hops[0].describe() if hops else None
    if debug:
        logger.debug("asyncio: TCP connect to %s", hops[0].describe() if hops else first)
    reader = asyncio.StreamReader(limit=options.limit)
    protocol = _StreamProtocol(reader)
    try:
        transport, _ = await loop.create_connection(lambda: protocol, first.host_str, first.port)
    except OSError as exc:
        if not hops:
            raise
        raise ProxyConnectionError(f"cannot connect to the proxy: {exc}", proxy=hops[0].describe()) from exc
    timing = _Timing(connect=time.monotonic() - started)
    _set_socket_options(transport, nodelay=options.nodelay, keepalive=options.keepalive)
    link = _Link(reader, protocol, transport)
    handshake: ClientHandshake | None = None
    with _aborted_on_error(link, progress):
        for i, hop in enumerate(hops):
            progress.proxy = hop.describe()
            if hop.needs_tls:
                progress.step = f"TLS handshake with the proxy {hop.describe()}"
                logger.debug("asyncio: %s", progress.step)
                mark = time.monotonic()
                context = options.proxy_ssl or _ssl.create_default_context()
                await link.start_tls(context, hop.proxy.address.host_str)
                timing.tls += time.monotonic() - mark
            mark = time.monotonic()
            handshake = ready[i]
            if handshake is None:
                resolved = await _resolve(hop.proxy, hop.target, progress)
                handshake = ClientHandshake(hop.proxy, resolved, command=commands[i], pipelined=options.pipelined)
            asked = (hop.proxy, commands[i], handshake.target)
            progress.later("{0.protocol.name} handshake asking for {1.name} {2}", *asked)
            if debug:
                logger.debug("asyncio: %s via %s", progress.step, hop.describe())
            await _run_handshake(link, handshake, until_listening=True)
            if debug:
                logger.debug("asyncio: %s via %s: %s (bound %s)", progress.step, hop.describe(),
                             handshake.status.name, handshake.bound)  # fmt: skip
            timing.handshake += time.monotonic() - mark
        if not prepare:
            await _target_tls(link, target, options, progress, timing)
    total_time = time.monotonic() - started
    if debug:
        logger.debug("asyncio: connected to %s in %.3f s", target, total_time)
    return _Opened(link, handshake, parts=(hops, target, options, timing, total_time))


@attrs.define
class _Timing:
    connect: float = 0.0
    handshake: float = 0.0
    tls: float = 0.0


async def _target_tls(link: _Link, target: Address, options: _Options, progress: _Progress, timing: _Timing) -> None:
    progress.proxy = None
    if options.ssl is not None:
        hostname = options.server_hostname or target.host_str
        progress.step = f"TLS handshake with the target {hostname}"
        logger.debug("asyncio: %s", progress.step)
        mark = time.monotonic()
        await link.start_tls(options.ssl, hostname)
        timing.tls += time.monotonic() - mark


@contextlib.contextmanager
def _aborted_on_error(link: _Link, progress: _Progress) -> Iterator[None]:
    """Abort the half-open connection on any error; an OSError talking to a proxy becomes ProxyConnectionError."""
    try:
        yield
    except OSError as exc:
        link.abort()
        if progress.proxy is None:
            raise  # the target's TLS failed: not the proxy's business
        raise ProxyConnectionError(f"{progress.step} failed: {exc}", proxy=progress.proxy) from exc
    except BaseException:
        link.abort()
        raise


def _info(
    hops: Sequence[Hop],
    target: Address,
    handshake: ClientHandshake | None,
    options: _Options,
    timing: _Timing,
    started: float,
) -> ConnectionInfo:
    info = _report(hops, target, handshake, options, timing, time.monotonic() - started)
    logger.debug("asyncio: connected to %s in %.3f s", target, info.total_time)
    return info


def _report(
    hops: Sequence[Hop],
    target: Address,
    handshake: ClientHandshake | None,
    options: _Options,
    timing: _Timing,
    total_time: float,
) -> ConnectionInfo:
    return ConnectionInfo(
        proxies=tuple(hop.describe() for hop in hops),
        target=target,
        protocol=hops[-1].proxy.protocol if hops else None,
        bound=handshake.bound if handshake else None,
        tls=options.ssl is not None,
        connect_time=timing.connect,
        handshake_time=timing.handshake,
        tls_time=timing.tls,
        total_time=total_time,
    )


async def _within(deadline: Deadline, progress: _Progress, work: Awaitable[_T]) -> _T:
    """Await *work* under *deadline*; its expiry becomes ProxyTimeoutError, a cancellation stays one."""
    remaining = deadline.remaining()
    if remaining is None:
        return await work
    if sys.version_info >= (3, 11):
        scope = asyncio.timeout(remaining)
        try:
            async with scope:
                return await work
        except TimeoutError as exc:
            if not scope.expired():
                raise  # an OSError time-out from below, not our deadline
            raise deadline.expired_error(progress.step, progress.proxy) from exc
    else:  # pragma: no cover - Python 3.10
        try:
            return await asyncio.wait_for(work, remaining)
        except asyncio.TimeoutError as exc:
            raise deadline.expired_error(progress.step, progress.proxy) from exc


def _proxy_list(
    proxy: ProxySpec | Sequence[ProxySpec] | None, trust_env: bool, scheme: str, target: Address
) -> list[ProxyURL]:
    proxies = to_proxies(proxy)
    if not proxies and trust_env:
        proxies = proxies_from_environment(scheme, target.host_str, target.port, os.environ)
        if proxies:
            logger.debug("asyncio: proxy from the environment: %s", proxies[0].redacted())
    return proxies


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
) -> _Opened:
    deadline = Deadline(timeout)
    context = _tls_context(ssl)
    if server_hostname is not None and context is None:
        raise LocalProtocolError("server_hostname is only meaningful with ssl=")
    target = describe_target(host, port)
    proxies = _proxy_list(proxy, trust_env, "https" if context is not None else "http", target)
    options = _Options(
        ssl=context,
        server_hostname=server_hostname,
        proxy_ssl=proxy_ssl,
        pipelined=pipelined,
        nodelay=nodelay,
        keepalive=keepalive,
        limit=limit,
    )
    if failover is None and retry is None:
        progress = _Progress()
        return await _within(deadline, progress, _open(target, proxies, options, progress))
    policy = retry or RetryPolicy()
    failures = Failures(policy)
    for step in plan_failover(candidates_for(proxy, failover, lambda: proxies), policy, deadline.remaining):
        if step.delay:
            logger.debug("asyncio: failover: waiting %.3f s before round %d", step.delay, step.round)
            await asyncio.sleep(step.delay)
        logger.debug("asyncio: failover attempt %d (round %d) via %s", step.number, step.round, step.describe())
        progress = _Progress()
        try:
            return await _within(deadline, progress, _open(target, step.chain, options, progress))
        except Exception as exc:
            logger.debug("asyncio: failover attempt %d failed: %s: %s", step.number, type(exc).__name__, exc)
            if not failures.record(step, exc):
                raise
    raise failures.final_error()


# ------------------------------------------------------------------------ tunnels


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

        ``Host`` is the tunnel's target (``host:port``) unless *headers* hold one.
        Octets the server sends after the response are kept for :meth:`receive_some`.

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
        request = encode_request(method, target, host=self.info.target.authority, headers=headers, body=body)
        await self.send_all(request)
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
    limit: int = _STREAM_LIMIT,
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
            (default: *host*).
        proxy_ssl: the SSLContext for ``https://`` proxies (default:
            :func:`ssl.create_default_context`).
        trust_env: without *proxy*, take it from ``ALL_PROXY`` / ``HTTPS_PROXY``
            / ``HTTP_PROXY`` / ``NO_PROXY`` (the ``https`` scheme when *ssl* is given).
        pipelined: SOCKS5 only: send greeting, credentials and request in one write.
        nodelay: set TCP_NODELAY on the socket.
        keepalive: set SO_KEEPALIVE on the socket.
        limit: the StreamReader's buffer limit.
        failover: instead of *proxy*, the candidates to try in order, each a
            proxy or a chain; round after round under *retry*, all within
            *timeout* (see :mod:`socks_sansio.adapters._failover`).
        retry: the :class:`RetryPolicy` (default ``RetryPolicy()`` with
            *failover*; alone, it retries the one *proxy*).

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
        OSError: the target itself (no proxy) cannot be reached, or its TLS failed.
    """
    opened = await _connect(
        host, port, proxy=proxy, timeout=timeout, ssl=ssl, server_hostname=server_hostname, proxy_ssl=proxy_ssl,
        trust_env=trust_env, pipelined=pipelined, nodelay=nodelay, keepalive=keepalive, limit=limit,
        failover=failover, retry=retry,
    )  # fmt: skip
    link = opened.link
    return Tunnel(link.reader, link.writer(), opened.info, link.raw)


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
    limit: int = _STREAM_LIMIT,
    failover: Sequence[ProxySpec | Sequence[ProxySpec]] | None = None,
    retry: RetryPolicy | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Like :func:`asyncio.open_connection`, through proxies. Arguments as in :func:`open_tunnel`.

    Returns:
        ``(reader, writer)``; the reader returns the bytes sent with the proxy's
        final reply first.
    """
    opened = await _connect(
        host, port, proxy=proxy, timeout=timeout, ssl=ssl, server_hostname=server_hostname, proxy_ssl=proxy_ssl,
        trust_env=trust_env, pipelined=pipelined, nodelay=nodelay, keepalive=keepalive, limit=limit,
        failover=failover, retry=retry,
    )  # fmt: skip
    link = opened.link  # the reader and a writer: no Tunnel and no ConnectionInfo to build
    return link.reader, link.writer()


async def _hand_over(link: _Link, protocol: asyncio.BaseProtocol) -> None:
    """Give the transport to *protocol*, delivering what the StreamReader holds first."""
    reader, transport = link.reader, link.transport
    error = reader.exception()
    if error is not None:
        raise ProxyConnectionError("the connection broke right after the handshake") from error
    peer_eof, was_closing = link.protocol.peer_eof, transport.is_closing()
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
        and (not protocol.eof_received() or link.protocol.tls)
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
    opened = await _connect(
        host, port, proxy=proxy, timeout=timeout, ssl=ssl, server_hostname=server_hostname, proxy_ssl=proxy_ssl,
        trust_env=trust_env, pipelined=pipelined, nodelay=nodelay, keepalive=keepalive, limit=_STREAM_LIMIT,
    )  # fmt: skip
    link = opened.link
    try:
        protocol = protocol_factory()
        await _hand_over(link, protocol)
    except BaseException:
        link.abort()
        raise
    return link.transport, protocol


# --------------------------------------------------------------------------- BIND


def _advertised(bound: Address | None, link: _Link, proxies: Sequence[ProxyURL]) -> Address:
    """The proxy's reply address; an unspecified host (0.0.0.0, ::) means the proxy's own.

    That is the IP we are connected to for a single proxy, else the last proxy's address.
    """
    if bound is None:  # pragma: no cover - a successful reply always carries one
        raise ProxyProtocolError("the proxy's reply carried no address", proxy=proxies[-1].redacted())
    if len(proxies) == 1:
        return advertised(bound, str(link.transport.get_extra_info("peername")[0]).partition("%")[0])
    return advertised(bound, proxies[-1].address.host)


@final
class BindListener:
    """A SOCKS BIND in progress: the proxy listens for one connection from a peer.

    Attributes:
        address: where the proxy listens (its first reply): tell the peer to
            connect here. An unspecified host in the reply is replaced by the
            proxy's address.
        info: the connection to the proxy (``bound`` is the raw first reply).
        peer: the peer that connected (the second reply), once :meth:`accept` returned.
    """

    __slots__ = ("_handshake", "_link", "_writer", "address", "info", "peer")

    def __init__(self, opened: _Opened, proxies: Sequence[ProxyURL]) -> None:
        assert opened.handshake is not None
        self._link = opened.link
        self._handshake = opened.handshake
        self._writer: asyncio.StreamWriter | None = None
        self.info = opened.info
        self.address = _advertised(opened.handshake.bound, opened.link, proxies)
        self.peer: Address | None = None

    async def __aenter__(self) -> BindListener:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def accept(self, timeout: float | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Wait for the proxy's second reply: a peer connected.

        Args:
            timeout: seconds to wait, or ``None``.

        Returns:
            ``(reader, writer)`` to the peer; the connection now belongs to the
            caller (closing this listener no longer closes it). Bytes the peer
            sent with the second reply are the reader's first.

        Raises:
            ProxyRefusedError: the proxy reported a failure in the second reply.
            ProxyTimeoutError: no peer within *timeout* (the connection is closed).
            ProxyConnectionError: the proxy closed the connection.
            LocalProtocolError: called a second time.
        """
        if self._writer is not None or self._link.transport.is_closing():
            raise LocalProtocolError("a BIND accepts one connection, once; this listener is used or closed")
        progress = _Progress(step=f"waiting for a peer to connect to {self.address}", proxy=self.info.proxies[-1])
        try:
            await _within(Deadline(timeout), progress, _run_handshake(self._link, self._handshake))
        except OSError as exc:
            self._link.abort()
            raise ProxyConnectionError(f"{progress.step} failed: {exc}", proxy=progress.proxy) from exc
        except BaseException:
            self._link.abort()
            raise
        self.peer = self._handshake.bind_peer
        logger.debug("asyncio: BIND: peer %s connected", self.peer)
        self._writer = self._link.writer()
        return self._link.reader, self._writer

    async def aclose(self) -> None:
        """Close the connection to the proxy, unless :meth:`accept` handed it over."""
        if self._writer is None:
            self._link.transport.close()
            self._link.raw.close()


async def open_bind(
    proxy: ProxySpec | Sequence[ProxySpec],
    *,
    expected_peer: Address = Address("0.0.0.0", 0),  # noqa: B008 - an immutable value
    timeout: float | None = None,
    proxy_ssl: _ssl.SSLContext | None = None,
    pipelined: bool = False,
    nodelay: bool = True,
    keepalive: bool = True,
) -> BindListener:
    """Ask the (last) proxy to accept one incoming connection for us: SOCKS BIND (SOCKS5 and SOCKS4).

    Args:
        proxy: the proxy, or a chain whose last hop does the BIND.
        expected_peer: the peer we expect (proxies may use it to filter);
            ``0.0.0.0:0`` when unknown.
        timeout: one deadline for connecting and the first reply.
        proxy_ssl, pipelined, nodelay, keepalive: as in :func:`open_tunnel`.

    Returns:
        a :class:`BindListener`: advertise its ``address`` to the peer, then ``await accept()``.

    Raises:
        LocalProtocolError: no proxy, or an HTTP proxy last (HTTP has no BIND).
        ProxyError: as :func:`open_tunnel`.
    """
    proxies = to_proxies(proxy)
    if not proxies:
        raise LocalProtocolError("BIND needs a proxy")
    options = _Options(
        ssl=None, server_hostname=None, proxy_ssl=proxy_ssl, pipelined=pipelined, nodelay=nodelay,
        keepalive=keepalive, limit=_STREAM_LIMIT,
    )  # fmt: skip
    progress = _Progress()
    opened = await _within(
        Deadline(timeout), progress, _open(expected_peer, proxies, options, progress, command=Command.BIND)
    )
    listener = BindListener(opened, proxies)
    logger.debug("asyncio: BIND: the proxy listens at %s", listener.address)
    return listener


# ---------------------------------------------------------------- UDP ASSOCIATE


@final
class _DatagramReceiver(asyncio.DatagramProtocol):
    """Queues the payloads of datagrams that come from the relay, whole and unfragmented."""

    def __init__(self) -> None:
        self.relay: tuple[str, int] = ("", 0)  # set once the reply names it; nothing matches before
        self.queue: asyncio.Queue[tuple[bytes, Address] | BaseException] = asyncio.Queue(_UDP_QUEUE_SIZE)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        received = unwrap_relay_datagram(data, addr, self.relay)
        if received is None:
            return
        try:
            self.queue.put_nowait(received)
        except asyncio.QueueFull:
            logger.debug("asyncio: UDP: dropped a datagram: %d are waiting for recvfrom()", _UDP_QUEUE_SIZE)

    def error_received(self, exc: Exception) -> None:
        logger.debug("asyncio: UDP: %s", exc)

    def fail(self, error: BaseException) -> None:
        """Make the next recvfrom() raise *error*."""
        while True:  # make room: the association is over, queued datagrams are moot
            try:
                self.queue.put_nowait(error)
                return
            except asyncio.QueueFull:
                self.queue.get_nowait()


@final
class UdpAssociation:
    """A SOCKS5 UDP association (RFC 1928 §7): datagrams relayed by the proxy.

    The TCP control connection stays open; the association lasts as long as it
    does. :meth:`aclose` (or leaving ``async with``) ends both; when the proxy
    closes it, :meth:`recvfrom` raises.

    Attributes:
        relay: the relay's address (an unspecified host in the reply is replaced
            by the proxy's IP).
        info: the control connection; ``target`` is the address we announced
            (our UDP socket), ``bound`` the raw reply address.
    """

    __slots__ = ("_closed", "_link", "_proxy", "_receiver", "_transport", "_watcher", "info", "relay")

    def __init__(
        self,
        link: _Link,
        proxy: ProxyURL,
        transport: asyncio.DatagramTransport,
        receiver: _DatagramReceiver,
        relay: Address,
        info: ConnectionInfo,
    ) -> None:
        self._link = link
        self._proxy = proxy
        self._transport = transport
        self._receiver = receiver
        self._closed = False
        self.relay = relay
        self.info = info
        self._watcher = asyncio.get_running_loop().create_task(self._watch_control())

    async def _watch_control(self) -> None:
        error: BaseException
        try:
            while await self._link.reader.read(DEFAULT_RECV_SIZE):
                pass  # nothing is expected on the control connection
            error = ProxyConnectionError("the proxy closed the UDP association", proxy=self._proxy.redacted())
        except OSError as exc:
            error = ProxyConnectionError(f"the UDP association's control connection broke: {exc}")
        self._receiver.fail(error)

    async def __aenter__(self) -> UdpAssociation:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def sendto(self, data: bytes | bytearray | memoryview, address: tuple[str, int] | Address) -> None:
        """Send one datagram to *address* through the relay.

        A name is resolved here for ``socks5://`` and by the proxy for ``socks5h://``.

        Raises:
            ProxyConnectionError: the association is closed.
        """
        if self._closed:
            raise ProxyConnectionError("the UDP association is closed", proxy=self._proxy.redacted())
        target = address if isinstance(address, Address) else Address(address[0], address[1])
        target = await _resolve(self._proxy, target, _Progress())
        self._transport.sendto(encode_udp_datagram(UdpDatagram(address=target, data=data)), self._receiver.relay)

    async def recvfrom(self) -> tuple[bytes, Address]:
        """The next datagram from the relay: ``(payload, where it came from)``.

        Datagrams not from the relay, malformed ones and fragments (FRAG != 0:
        no reassembly, RFC 1928 §7) are dropped and logged at DEBUG.

        Raises:
            ProxyConnectionError: the association ended (the control connection closed).
        """
        item = await self._receiver.queue.get()
        if isinstance(item, BaseException):
            self._receiver.fail(item)  # later calls raise too
            raise item
        return item

    async def aclose(self) -> None:
        """End the association: close the UDP socket and the control connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._watcher.cancel()
        self._transport.close()
        self._link.transport.close()
        self._receiver.fail(ProxyConnectionError("the UDP association is closed", proxy=self._proxy.redacted()))


async def open_udp_association(
    proxy: ProxySpec,
    *,
    timeout: float | None = None,
    nodelay: bool = True,
    keepalive: bool = True,
) -> UdpAssociation:
    """Open a SOCKS5 UDP association through one ``socks5://`` or ``socks5h://`` proxy.

    A UDP socket is bound to the local IP of the control connection; its address
    goes in the request (RFC 1928 §4: the address we will send from), and
    datagrams go to the relay the reply names.

    Args:
        proxy: the SOCKS5 proxy.
        timeout: one deadline for connecting, the handshake and the UDP setup.
        nodelay, keepalive: socket options of the control connection.

    Raises:
        LocalProtocolError: not exactly one SOCKS5 proxy.
        ProxyError: as :func:`open_tunnel`.
    """
    proxies = to_proxies(proxy)
    if len(proxies) != 1 or proxies[0].protocol is not ProxyProtocol.SOCKS5:
        raise LocalProtocolError("UDP ASSOCIATE needs exactly one SOCKS5 proxy (socks5:// or socks5h://)")
    progress = _Progress()
    return await _within(Deadline(timeout), progress, _associate(proxies[0], nodelay, keepalive, progress))


async def _associate(proxy: ProxyURL, nodelay: bool, keepalive: bool, progress: _Progress) -> UdpAssociation:
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    progress.step, progress.proxy = f"TCP connect to {proxy.address}", proxy.redacted()
    logger.debug("asyncio: UDP ASSOCIATE: TCP connect to %s", proxy.redacted())
    reader = asyncio.StreamReader(limit=_STREAM_LIMIT)
    protocol = _StreamProtocol(reader)
    try:
        tcp, _ = await loop.create_connection(lambda: protocol, proxy.address.host_str, proxy.address.port)
    except OSError as exc:
        raise ProxyConnectionError(f"cannot connect to the proxy: {exc}", proxy=proxy.redacted()) from exc
    connect_time = time.monotonic() - started
    _set_socket_options(tcp, nodelay=nodelay, keepalive=keepalive)
    link = _Link(reader, protocol, tcp)
    receiver = _DatagramReceiver()
    udp: asyncio.DatagramTransport | None = None
    try:
        progress.step = "binding the UDP socket"
        local_ip = str(tcp.get_extra_info("sockname")[0])
        udp, _ = await loop.create_datagram_endpoint(lambda: receiver, local_addr=(local_ip, 0))
        local = Address(local_ip.partition("%")[0], int(udp.get_extra_info("sockname")[1]))
        mark = time.monotonic()
        handshake = ClientHandshake(proxy, local, command=Command.UDP_ASSOCIATE)
        progress.step = f"SOCKS5 UDP ASSOCIATE from {local}"
        logger.debug("asyncio: %s via %s", progress.step, proxy.redacted())
        await _run_handshake(link, handshake)
        handshake_time = time.monotonic() - mark
        relay = _advertised(handshake.bound, link, [proxy])
        if relay.is_domain:
            progress.step = f"resolving the relay {relay}"
            infos = await loop.getaddrinfo(relay.host_str, relay.port, family=tcp.get_extra_info("socket").family)
            relay = Address(str(infos[0][4][0]), relay.port)
        receiver.relay = (relay.host_str, relay.port)
        logger.debug("asyncio: UDP ASSOCIATE: relay %s, local %s", relay, local)
    except OSError as exc:
        if udp is not None:
            udp.close()
        link.abort()
        raise ProxyConnectionError(f"{progress.step} failed: {exc}", proxy=proxy.redacted()) from exc
    except BaseException:
        if udp is not None:
            udp.close()
        link.abort()
        raise
    info = ConnectionInfo(
        proxies=(proxy.redacted(),),
        target=local,
        protocol=ProxyProtocol.SOCKS5,
        bound=handshake.bound,
        tls=False,
        connect_time=connect_time,
        handshake_time=handshake_time,
        tls_time=0.0,
        total_time=time.monotonic() - started,
    )
    return UdpAssociation(link, proxy, udp, receiver, relay, info)


# --------------------------------------------------------------------------- pool


@final
class _Prepared:
    """A pooled connection: the link and the last hop's handshake, waiting in status READY."""

    __slots__ = ("handshake", "hops", "link", "received")

    def __init__(self, opened: _Opened, hops: list[Hop]) -> None:
        assert opened.handshake is not None
        self.link = opened.link
        self.handshake = opened.handshake
        self.hops = hops
        self.received = opened.link.protocol.received

    def silent(self) -> bool:
        """Whether the proxy said nothing since (no octet, no EOF, no error)."""
        link = self.link
        return (
            link.protocol.received == self.received
            and not link.protocol.peer_eof
            and not link.transport.is_closing()
            and link.reader.exception() is None
        )


async def _finish(
    prepared: _Prepared, asked: Address, target: Address, options: _Options, progress: _Progress
) -> _Opened:
    """Complete a prepared connection: CONNECT to *asked* (one round trip), then TLS to *target* if asked.

    *asked* is *target* as the proxy must see it (resolved here for ``socks5://`` and ``socks4://``).
    """
    started = time.monotonic()
    link, handshake = prepared.link, prepared.handshake
    timing = _Timing()
    with _aborted_on_error(link, progress):
        progress.proxy = handshake.proxy.redacted()
        handshake.request(asked)
        progress.step = f"{handshake.proxy.protocol.name} request for CONNECT {handshake.target} (pooled connection)"
        logger.debug("asyncio: %s via %s", progress.step, progress.proxy)
        await _run_handshake(link, handshake)
        timing.handshake = time.monotonic() - started
        await _target_tls(link, target, options, progress, timing)
    info = _info(prepared.hops, target, handshake, options, timing, started)
    return _Opened(link=link, handshake=handshake, info=info)


@final
class ProxyPool:
    """Connections through a proxy (or a chain) prepared in advance: a new tunnel costs one round trip.

    A prepared connection is connected and authenticated: TCP (and TLS for
    ``https://``) to the proxy, every hop of a chain but the last one's
    request, the SOCKS5 greeting and RFC 1929 exchange. :meth:`open_connection`
    sends only the request and waits for its reply. SOCKS4 and HTTP proxies
    have nothing before the request, so for them a prepared connection saves
    the TCP (and TLS) set-up.

    A background task keeps *size* connections ready: it starts when the pool
    is entered (``async with``) and opens a new one whenever one is taken,
    discarded or expired. A connection taken from the pool is checked first:
    one older than *idle_timeout*, or on which the proxy sent anything or
    closed, is discarded and the next one tried; when none is left (a miss)
    the call connects cold, as :func:`open_connection` does, within the same
    *timeout*. A pooled connection whose request fails because the connection
    broke is replaced by a cold connect too. Each connection becomes exactly
    one tunnel. Use it from one event loop.

    Args:
        proxy: a proxy URL or :class:`ProxyURL`, or a sequence of them (a chain).
        size: how many prepared connections to keep ready.
        idle_timeout: seconds a prepared connection may wait unused. Keep it
            below the proxy's own limit for an unfinished negotiation (Dante's
            ``timeout.negotiate``, ``socks-sansio serve --negotiation-timeout``: 10 s).
        connect_timeout: the deadline for preparing one connection (in the background).
        proxy_ssl: the context for ``https://`` proxies (default: :func:`ssl.create_default_context`).
        nodelay: set ``TCP_NODELAY``.
        keepalive: set ``SO_KEEPALIVE``.
        limit: the StreamReader's buffer limit.

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
        limit: int = _STREAM_LIMIT,
    ) -> None:
        self._proxies = to_proxies(proxy)
        if not self._proxies:
            raise LocalProtocolError("a ProxyPool needs at least one proxy")
        self._idle: IdleConnections[_Prepared] = IdleConnections(size, idle_timeout)
        self._connect_timeout = connect_timeout
        self._options = _Options(
            ssl=None, server_hostname=None, proxy_ssl=proxy_ssl, pipelined=False, nodelay=nodelay,
            keepalive=keepalive, limit=limit,
        )  # fmt: skip
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._maintainer: asyncio.Task[None] | None = None

    @property
    def stats(self) -> PoolStats:
        """Hits, misses, discarded, opened and failed connections so far."""
        return self._idle.stats

    @property
    def ready(self) -> int:
        """How many prepared connections wait now."""
        return len(self._idle)

    def _start(self) -> None:
        if self._idle.closed:
            raise RuntimeError("this ProxyPool is closed")
        if self._maintainer is None:
            self._maintainer = asyncio.get_running_loop().create_task(self._maintain())

    async def _refill_one(self) -> None:
        """Open one prepared connection (a refill already counted by start_refills) and hand it to the pool."""
        progress = _Progress()
        hops = plan_hops(self._proxies, _NOWHERE)
        try:
            opened = await _within(
                Deadline(self._connect_timeout), progress,
                _open(_NOWHERE, self._proxies, self._options, progress, prepare=True),
            )  # fmt: skip
        except BaseException:
            self._idle.refilled(None)
            self._changed.set()
            raise
        prepared = _Prepared(opened, hops)
        if not self._idle.refilled(prepared):
            prepared.link.abort()
        self._changed.set()
        self._wake.set()  # the background task's next expiry may have changed

    async def _maintain(self) -> None:
        """Keep *size* connections ready; close the expired ones; back off while preparing fails."""
        backoff = 0.0
        # The closed check ends the task even when aclose()'s cancellation is lost: on Python
        # 3.10 and 3.11, wait_for() drops one that arrives once the event it awaits is set.
        while not self._idle.closed:
            self._wake.clear()
            _abort_all(self._idle.expired())
            wanted = self._idle.start_refills()
            for done in range(wanted):
                try:
                    await self._refill_one()
                except Exception as exc:
                    logger.debug("asyncio: pool: preparing a connection failed: %s: %s", type(exc).__name__, exc)
                    self._idle.cancel_refills(wanted - done - 1)
                    backoff = min(max(2 * backoff, 0.1), self._idle.idle_timeout)
                    await asyncio.sleep(backoff)
                    break
            else:
                backoff = 0.0
            if wanted:
                continue
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._idle.next_expiry())

    async def fill(self) -> None:
        """Get *size* prepared connections ready now (a warm-up before the first call).

        Raises:
            ProxyError: preparing a connection failed (``ProxyAuthError`` when the
                proxy refuses the credentials), as :func:`open_connection` would raise it.
            RuntimeError: the pool is closed.
        """
        self._start()
        while True:
            if self._idle.closed:
                raise RuntimeError("this ProxyPool is closed")
            wanted = self._idle.start_refills()
            if not wanted and not self._idle.opening:
                return
            if not wanted:
                self._changed.clear()
                await self._changed.wait()  # the background task is opening the last ones
                continue
            try:
                await asyncio.gather(*(self._refill_one() for _ in range(wanted)))
            except BaseException:
                self._wake.set()
                raise

    async def _take(self, target: Address, options: _Options, progress: _Progress) -> _Opened:
        self._start()
        prepared, doomed = self._idle.take(_Prepared.silent)
        self._wake.set()  # the background task replaces what was taken or discarded
        _abort_all(doomed)
        if prepared is not None:
            try:
                # Resolved outside _finish: a name that does not resolve here is the caller's
                # error (raised as a cold connect raises it), not a broken connection to retry cold.
                asked = await _resolve(prepared.handshake.proxy, target, progress)
            except BaseException:
                prepared.link.abort()
                raise
            try:
                opened = await _finish(prepared, asked, target, options, progress)
            except ProxyConnectionError as exc:
                self._idle.lost()
                logger.debug("asyncio: pool: the prepared connection broke (%s); connecting cold", exc)
            else:
                logger.debug("asyncio: pool: hit for %s", target)
                return opened
        logger.debug("asyncio: pool: miss for %s; connecting cold", target)
        return await _open(target, self._proxies, options, progress)

    async def open_tunnel(
        self,
        host: str,
        port: int,
        *,
        timeout: float | None = None,
        ssl: _ssl.SSLContext | bool | None = None,
        server_hostname: str | None = None,
    ) -> Tunnel:
        """Connect to *host*:*port* through the pool's proxies, as :func:`open_tunnel` does.

        Args:
            host, port, timeout, ssl, server_hostname: as for :func:`open_tunnel`;
                *timeout* covers the request on a prepared connection and, on a
                miss, the whole cold connect.

        Raises:
            RuntimeError: the pool is closed.
            ProxyError, OSError: as :func:`open_tunnel`.
        """
        context = _tls_context(ssl)
        if server_hostname is not None and context is None:
            raise LocalProtocolError("server_hostname is only meaningful with ssl=")
        options = attrs.evolve(self._options, ssl=context, server_hostname=server_hostname)
        progress = _Progress()
        opened = await _within(Deadline(timeout), progress, self._take(describe_target(host, port), options, progress))
        link = opened.link
        return Tunnel(link.reader, link.writer(), opened.info, link.raw)

    async def open_connection(
        self,
        host: str,
        port: int,
        *,
        timeout: float | None = None,
        ssl: _ssl.SSLContext | bool | None = None,
        server_hostname: str | None = None,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Like :func:`open_connection`, from the pool. Arguments as in :meth:`open_tunnel`."""
        tunnel = await self.open_tunnel(host, port, timeout=timeout, ssl=ssl, server_hostname=server_hostname)
        return tunnel.reader, tunnel.writer

    async def aclose(self) -> None:
        """Stop the background task and close every idle connection. Idempotent.

        Tunnels already handed out are the caller's and stay open.
        """
        _abort_all(self._idle.close())
        self._changed.set()
        maintainer = self._maintainer
        if maintainer is not None:
            maintainer.cancel()
            await asyncio.wait({maintainer})  # a cancellation of this call is not swallowed
            self._maintainer = None
            if not maintainer.cancelled():
                maintainer.result()  # None, or what broke the background task

    async def __aenter__(self) -> ProxyPool:
        self._start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<ProxyPool via {[p.redacted() for p in self._proxies]} {self._idle.stats}>"


_NOWHERE: Final = Address("0.0.0.0", 0)
"""The target a prepared connection is planned with: its last hop never asks for it."""


def _abort_all(prepared: Sequence[_Prepared]) -> None:
    for each in prepared:
        each.link.abort()

"""Blocking sockets: connect through proxies with the stdlib ``socket`` and ``ssl`` modules.

Strategy. The protocols live in the pure core: one :class:`~socks_sansio.ClientHandshake`
per hop says what to send, how much may be read and when the tunnel is up. This module
only moves bytes, in the same short loop for every protocol::

    sendall(handshake.data_to_send())
    while the handshake is in progress:
        handshake.receive_data(recv(handshake.read_size_hint))
        sendall(handshake.data_to_send())

Reading exactly ``read_size_hint`` octets means nothing after the final reply is ever
consumed: the first tunnel bytes stay in the kernel (or in the TLS layer below), so when no
TLS is involved :func:`connect` returns the plain :class:`socket.socket` itself.

Layers, bottom up: TCP to the first hop (or to the target without proxies); TLS to each
``https://`` hop; each hop's handshake, asking for the next hop (or the target); TLS to the
target when ``ssl=`` is given. TLS over a plain socket is :meth:`ssl.SSLContext.wrap_socket`,
giving an :class:`ssl.SSLSocket`; TLS over a stream that is already TLS cannot use it (it
needs a file descriptor), so it is a :class:`TLSInTLSSocket`, built on
:class:`ssl.SSLObject` and two :class:`ssl.MemoryBIO`.

One deadline (:class:`~adapters._common.Deadline`) covers a whole call: before every
blocking operation (connect, recv, sendall, a TLS handshake) the socket's timeout is set to
what is left of it, and a time-out becomes :class:`~socks_sansio.ProxyTimeoutError`. Only
name resolution (``getaddrinfo``) cannot be interrupted; the deadline is checked after it.

Errors: refusals come from the driver (:class:`~socks_sansio.ProxyRefusedError`,
:class:`~socks_sansio.ProxyAuthError`, :class:`~socks_sansio.ProxyProtocolError`); an
``OSError`` while talking to a proxy (unreachable, reset, bad TLS certificate) becomes
:class:`~socks_sansio.ProxyConnectionError` naming the proxy without its password, with the
``OSError`` as ``__cause__``. Errors that concern the target itself (a failed direct
connection, its TLS certificate, an unresolvable name) stay the stdlib's ``OSError``s.
Whatever fails, every socket opened by the call is closed.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Final, TypeVar, final

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
    ProxyTimeoutError,
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
    "ProxyPool",
    "SocketLike",
    "TLSInTLSSocket",
    "Tunnel",
    "UdpAssociation",
    "connect",
    "open_bind",
    "open_tunnel",
    "open_udp_association",
    "wrap_tls",
]

_T = TypeVar("_T")

_TLS_RECORD_PLAINTEXT: Final = 16 * 1024
"""2**14: the most plaintext one TLS record carries (RFC 8446 §5.1); writes are cut to this."""

_UDP_MAX: Final = 65535
"""The largest UDP datagram a recvfrom() may return."""


# ---------------------------------------------------------------------------- TLS in TLS


@final
class TLSInTLSSocket:
    """TLS inside a stream that is already TLS, with the methods of a blocking socket.

    :meth:`ssl.SSLContext.wrap_socket` needs a file descriptor, so TLS over an
    :class:`ssl.SSLSocket` (an ``https://`` proxy carrying TLS to the target, or to a
    further ``https://`` proxy) runs on an :class:`ssl.SSLObject` with two
    :class:`ssl.MemoryBIO`: the ciphertext the object produces is written to the
    transport with ``sendall``, and when it needs input, up to 64 KiB are read from the
    transport into the incoming buffer. Reading ahead is harmless there, since those
    octets are this layer's ciphertext and stay in the buffer.

    It offers ``sendall``, ``send``, ``recv``, ``recv_into``, ``shutdown``, ``close``,
    ``settimeout``, ``gettimeout``, ``getpeername``, ``getsockname``, ``pending`` and the
    TLS details (``version``, ``cipher``, ``getpeercert``, ``selected_alpn_protocol``,
    ``ssl_object``), and is a context manager. It has **no** ``fileno()``: decrypted
    octets can wait in the TLS buffers while the descriptor is not readable, so
    ``select()`` on it would lie; check :meth:`pending` first.

    Time-outs (:meth:`settimeout`) are the transport's and apply to each operation on
    it. :meth:`shutdown` half-closes the TCP connection underneath without a TLS
    ``close_notify``, as :meth:`ssl.SSLSocket.shutdown` does; peers see a plain EOF.

    Args:
        transport: the stream underneath: an :class:`ssl.SSLSocket` or another
            :class:`TLSInTLSSocket`, in blocking mode (with or without a timeout).
        context: the TLS configuration (trust, ALPN...).
        server_hostname: the name (or IP literal) to send as SNI and check the
            certificate against.

    The handshake is not run by the constructor: call :meth:`do_handshake` (or use
    :func:`wrap_tls`, which does).
    """

    __slots__ = ("_before_io", "_closed", "_eof_sent", "_incoming", "_outgoing", "_plaintext", "_tls", "_transport")

    _READ_SIZE: Final = DEFAULT_RECV_SIZE

    def __init__(
        self,
        transport: SocketLike,
        context: ssl.SSLContext,
        *,
        server_hostname: str | None = None,
    ) -> None:
        self._transport = transport
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=server_hostname)
        self._closed = False
        self._eof_sent = False
        self._plaintext = b""  # decrypted octets set aside by shutdown(), returned first by recv()
        self._before_io: Callable[[], None] | None = None

    # -- the engine --------------------------------------------------------------------

    def _run(self, operation: Callable[[], _T]) -> _T:
        """Run one SSLObject operation, moving ciphertext until it completes."""
        while True:
            try:
                result = operation()
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
                continue
            self._flush()
            return result

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            if self._before_io is not None:
                self._before_io()
            self._transport.sendall(data)

    def _fill(self) -> None:
        if self._before_io is not None:
            self._before_io()
        data = self._transport.recv(self._READ_SIZE)
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    def _handshake(self, before_io: Callable[[], None] | None) -> None:
        self._before_io = before_io
        try:
            self._run(self._tls.do_handshake)
        finally:
            self._before_io = None

    # -- socket methods ------------------------------------------------------------------

    def do_handshake(self) -> None:
        """Run the TLS handshake over the transport.

        Raises:
            ssl.SSLError: the handshake failed (for example the certificate is not trusted).
            OSError: the transport failed; ``TimeoutError`` when its timeout expired.
        """
        self._handshake(None)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Up to *bufsize* decrypted octets; ``b""`` when the peer closed (with or without ``close_notify``).

        Raises:
            ValueError: *flags* is not 0.
            OSError: the transport failed.
        """
        if flags:
            raise ValueError("recv() flags are not supported on a TLS stream")
        if bufsize <= 0:
            return b""
        if self._plaintext:
            data, self._plaintext = self._plaintext[:bufsize], self._plaintext[bufsize:]
            return data
        try:
            return self._run(functools.partial(self._tls.read, bufsize))
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return b""  # a clean close_notify, or an EOF without one (as suppress_ragged_eofs does)

    def recv_into(self, buffer: bytearray | memoryview, nbytes: int = 0, flags: int = 0) -> int:
        """Like :meth:`recv`, into *buffer*; returns the number of octets written."""
        view = memoryview(buffer).cast("B")
        data = self.recv(nbytes or len(view), flags)
        view[: len(data)] = data
        return len(data)

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt and send all of *data*.

        Raises:
            OSError: the transport failed; part of *data* may have been sent.
        """
        view = memoryview(data).cast("B")
        for start in range(0, len(view), _TLS_RECORD_PLAINTEXT):
            self._run(functools.partial(self._tls.write, view[start : start + _TLS_RECORD_PLAINTEXT]))

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Send up to one TLS record of *data*; returns how many octets were sent."""
        view = memoryview(data).cast("B")[:_TLS_RECORD_PLAINTEXT]
        self.sendall(view)
        return len(view)

    def pending(self) -> int:
        """Decrypted octets buffered and readable without I/O."""
        return len(self._plaintext) + self._tls.pending()

    def shutdown(self, how: int) -> None:
        """Half-close: with ``socket.SHUT_WR`` (or ``SHUT_RDWR``) send a TLS ``close_notify``; reading goes on.

        TLS 1.3 closes one direction this way (RFC 8446 §6.1): the peer reads EOF
        and may still answer. (A TLS 1.2 peer usually closes in turn.) The layers
        underneath are left open. ``SHUT_RD`` does nothing.
        """
        if how in (socket.SHUT_WR, socket.SHUT_RDWR) and not self._eof_sent:
            self._eof_sent = True
            self._send_close_notify()

    def _send_close_notify(self) -> None:
        # unwrap() calls SSL_shutdown twice: the first writes close_notify, the second
        # waits for the peer's and fails on application data that it finds. So hand it
        # nothing to find: decrypted octets are set aside, unprocessed ciphertext is
        # taken out of the incoming buffer and put back after; it then wants to read.
        pending = self._tls.pending()
        if pending:
            self._plaintext += self._tls.read(pending)
        held = self._incoming.read()
        try:
            self._tls.unwrap()
        except ssl.SSLWantReadError:
            pass  # close_notify is written; the peer's arrives through recv() as usual
        finally:
            self._incoming.write(held)
        self._flush()

    def close(self) -> None:
        """Close this stream and every layer under it. Idempotent."""
        if not self._closed:
            self._closed = True
            self._transport.close()

    def settimeout(self, timeout: float | None) -> None:
        """Set the transport's timeout (per operation on it), as :meth:`socket.socket.settimeout`."""
        self._transport.settimeout(timeout)

    def gettimeout(self) -> float | None:
        """The transport's timeout."""
        return self._transport.gettimeout()

    def getpeername(self) -> tuple[str, int] | tuple[str, int, int, int]:
        """The TCP peer's address (the first proxy)."""
        return self._transport.getpeername()

    def getsockname(self) -> tuple[str, int] | tuple[str, int, int, int]:
        """Our local TCP address."""
        return self._transport.getsockname()

    @property
    def ssl_object(self) -> ssl.SSLObject:
        """The :class:`ssl.SSLObject` of this layer."""
        return self._tls

    @property
    def server_hostname(self) -> str | None:
        """The name the certificate was checked against."""
        return self._tls.server_hostname

    def version(self) -> str | None:
        """The negotiated TLS version, like ``"TLSv1.3"``."""
        return self._tls.version()

    def cipher(self) -> tuple[str, str, int] | None:
        """``(name, protocol, secret bits)`` of the negotiated cipher."""
        return self._tls.cipher()

    def selected_alpn_protocol(self) -> str | None:
        """The ALPN protocol the server chose, if any."""
        return self._tls.selected_alpn_protocol()

    def getpeercert(self, binary_form: bool = False) -> object:
        """The peer's certificate, as :meth:`ssl.SSLSocket.getpeercert` returns it."""
        return self._tls.getpeercert(binary_form)

    def __enter__(self) -> TLSInTLSSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self._tls.version() or "handshaking"
        return f"<TLSInTLSSocket {self._tls.server_hostname or ''} {state} over {self._transport!r}>"


def _half_close(stream: SocketLike) -> None:
    """Stop sending on *stream* and keep receiving (see :meth:`Tunnel.shutdown_write`)."""
    if isinstance(stream, ssl.SSLSocket):
        raise NotImplementedError(
            "an ssl.SSLSocket cannot be half-closed: the ssl module can only send close_notify while "
            "waiting for the peer's (which fails on data still in flight), and a TCP half-close under "
            "TLS is taken by OpenSSL peers as a truncation after which they cannot answer"
        )
    stream.shutdown(socket.SHUT_WR)


SocketLike = socket.socket | TLSInTLSSocket
"""What :func:`connect` returns: a :class:`socket.socket` (an :class:`ssl.SSLSocket` when TLS
runs over it) or a :class:`TLSInTLSSocket`."""


def _wrap(
    stream: SocketLike, context: ssl.SSLContext, server_hostname: str | None
) -> ssl.SSLSocket | TLSInTLSSocket:
    """TLS over *stream*, without handshaking yet: ``wrap_socket`` on a plain socket, else TLS in TLS."""
    if isinstance(stream, ssl.SSLSocket | TLSInTLSSocket):
        return TLSInTLSSocket(stream, context, server_hostname=server_hostname)
    return context.wrap_socket(stream, server_hostname=server_hostname, do_handshake_on_connect=False)


def wrap_tls(
    sock: SocketLike,
    context: ssl.SSLContext,
    *,
    server_hostname: str | None = None,
    timeout: float | None = None,
) -> SocketLike:
    """Run a TLS client handshake over *sock*, whatever it is (plain, TLS, TLS in TLS).

    Args:
        sock: a connected socket, as :func:`connect` returns. It belongs to the
            result from now on (a plain socket is detached into the
            :class:`ssl.SSLSocket`); on failure it is closed.
        context: the TLS configuration.
        server_hostname: the name to check the certificate against (and send as SNI).
        timeout: the handshake's timeout (and the result's timeout afterwards).

    Returns:
        an :class:`ssl.SSLSocket` over a plain socket, else a :class:`TLSInTLSSocket`.

    Raises:
        ssl.SSLError: the handshake failed.
        OSError: the connection failed; ``TimeoutError`` on time-out.
    """
    tls = _wrap(sock, context, server_hostname)
    try:
        tls.settimeout(timeout)
        tls.do_handshake()
    except BaseException:
        tls.close()
        sock.close()
        raise
    return tls


# ---------------------------------------------------------------------------- one call


@final
class _Step:
    """What :meth:`_Call.step` returns: a context manager written as a class (cheaper than a generator)."""

    __slots__ = ("call", "hop", "what")

    def __init__(self, call: _Call, what: str, hop: Hop | None) -> None:
        self.call = call
        self.what = what
        self.hop = hop

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if not isinstance(exc, OSError):
            return
        hop = self.hop
        proxy = None if hop is None else hop.describe()
        deadline = self.call.deadline
        # Without a deadline, a TimeoutError is the kernel's (ETIMEDOUT): an ordinary failure.
        if isinstance(exc, TimeoutError) and deadline.timeout is not None:
            raise deadline.expired_error(self.what, proxy) from exc
        if hop is not None:
            raise ProxyConnectionError(f"{self.what} failed: {exc}", proxy=proxy) from exc


@final
class _Call:
    """One call's deadline, options and timings, and the blocking steps it is made of."""

    def __init__(
        self,
        timeout: float | None,
        *,
        nodelay: bool = True,
        keepalive: bool = True,
        pipelined: bool = False,
    ) -> None:
        self.deadline = Deadline(timeout)
        self.started = time.monotonic()
        self.debug = logger.isEnabledFor(logging.DEBUG)  # what to log is built only when it is logged
        self.nodelay = nodelay
        self.keepalive = keepalive
        self.pipelined = pipelined
        self.connect_time = 0.0
        self.handshake_time = 0.0
        self.tls_time = 0.0

    def arm(self, stream: SocketLike, what: str, proxy: str | None) -> None:
        """Give *stream* what is left of the deadline as its timeout (raise if nothing is left)."""
        remaining = self.deadline.remaining()
        if remaining is not None and remaining <= 0:
            raise self.deadline.expired_error(what, proxy)
        stream.settimeout(remaining)

    def step(self, what: str, hop: Hop | None) -> _Step:
        """Map a time-out to ProxyTimeoutError, and (when *hop* is given) OSError to ProxyConnectionError."""
        return _Step(self, what, hop)

    def open_tcp(self, address: Address, hop: Hop | None) -> socket.socket:
        """A TCP connection to *address* (the first proxy, or the target), trying each of its addresses."""
        what = "connecting to the proxy" if hop is not None else f"connecting to {address}"
        if self.debug:
            logger.debug("%s: TCP connect to %s", hop.describe() if hop else "direct", address)
        start = time.monotonic()
        with self.step(what, hop):
            literal = literal_sockaddr(address)
            infos: Sequence[tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[object, ...]]]
            if literal is not None:  # what getaddrinfo would answer, without asking it
                infos = ((literal[0], socket.SOCK_STREAM, socket.IPPROTO_TCP, "", literal[1]),)
            else:
                infos = socket.getaddrinfo(address.host_str, address.port, type=socket.SOCK_STREAM)
            error: OSError | None = None
            for family, kind, proto, _, sockaddr in infos:
                sock = socket.socket(family, kind, proto)
                try:
                    self.arm(sock, what, None if hop is None else hop.describe())
                    sock.connect(sockaddr)
                except BaseException as exc:
                    sock.close()
                    if not isinstance(exc, OSError) or (
                        isinstance(exc, TimeoutError) and self.deadline.timeout is not None
                    ):
                        raise
                    error = exc
                    logger.debug("TCP connect to %s failed: %s", sockaddr, exc)
                    continue
                try:
                    if self.nodelay:
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    if self.keepalive:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                    self.connect_time += time.monotonic() - start
                    if self.debug:
                        logger.debug("TCP connected to %s from %s", sock.getpeername(), sock.getsockname())
                except BaseException:
                    sock.close()
                    raise
                return sock
            raise error if error is not None else OSError(f"no address found for {address.host_str}")

    def start_tls(
        self, stream: SocketLike, context: ssl.SSLContext, server_hostname: str | None, hop: Hop | None
    ) -> SocketLike:
        """TLS over *stream* (to a proxy when *hop* is given, else to the target), within the deadline."""
        what = "the TLS handshake with the proxy" if hop is not None else f"the TLS handshake with {server_hostname}"
        proxy = None if hop is None else hop.describe()
        logger.debug("TLS handshake with %s (%s)", proxy or server_hostname, type(stream).__name__)
        start = time.monotonic()
        with self.step(what, hop):
            tls = _wrap(stream, context, server_hostname)
            try:
                if isinstance(tls, TLSInTLSSocket):
                    tls._handshake(lambda: self.arm(tls, what, proxy))
                else:
                    self.arm(tls, what, proxy)
                    tls.do_handshake()
            except BaseException:
                tls.close()
                raise
        self.tls_time += time.monotonic() - start
        logger.debug("TLS up with %s: %s", proxy or server_hostname, getattr(tls, "version", lambda: None)())
        return tls

    def resolve(self, hop: Hop) -> Hop:
        """*hop* with its target's name resolved here, when its scheme asks for that (socks5://, socks4://)."""
        if not needs_local_resolution(hop.proxy, hop.target):
            return hop
        family = socket.AF_INET if hop.proxy.protocol is ProxyProtocol.SOCKS4 else socket.AF_UNSPEC
        infos = socket.getaddrinfo(hop.target.host_str, hop.target.port, family, socket.SOCK_STREAM)
        resolved = Address(infos[0][4][0], hop.target.port)
        logger.debug("%s resolves locally: %s is %s", hop.describe(), hop.target.host_str, resolved)
        return Hop(hop.proxy, resolved)

    def handshake(
        self,
        stream: SocketLike,
        handshake: ClientHandshake,
        hop: Hop,
        done: Callable[[ClientHandshake], bool],
    ) -> None:
        """Run *handshake* over *stream* until *done*; reads never go past the handshake."""
        proxy = hop.describe()
        what = f"the {hop.proxy.scheme} handshake"
        debug = self.debug
        start = time.monotonic()
        with self.step(what, hop):
            data = handshake.data_to_send()
            while True:
                if data:
                    self.arm(stream, what, proxy)
                    stream.sendall(data)
                    if debug:
                        logger.debug("%s: sent %d octets", proxy, len(data))
                if done(handshake):
                    break
                self.arm(stream, what, proxy)
                data = stream.recv(handshake.read_size_hint)
                if debug:
                    logger.debug("%s: received %d octets", proxy, len(data))
                handshake.receive_data(data)
                data = handshake.data_to_send()
        self.handshake_time += time.monotonic() - start
        leftover, _ = handshake.trailing_data
        if leftover:  # cannot happen: every read was at most read_size_hint octets
            raise RuntimeError(f"bug: {len(leftover)} tunnel octets were read during the handshake")
        if debug:
            logger.debug("%s: %s (bound %s)", proxy, handshake.status.name, handshake.bound)

    def info(
        self, proxies: Sequence[ProxyURL], target: Address, last: ClientHandshake | None, tls: bool
    ) -> ConnectionInfo:
        return ConnectionInfo(
            proxies=tuple(p.redacted() for p in proxies),
            target=target,
            protocol=None if last is None else last.proxy.protocol,
            bound=None if last is None else last.bound,
            tls=tls,
            connect_time=self.connect_time,
            handshake_time=self.handshake_time,
            tls_time=self.tls_time,
            total_time=time.monotonic() - self.started,
        )


def _in_progress_done(handshake: ClientHandshake) -> bool:
    return handshake.status is not HandshakeStatus.IN_PROGRESS


def _established(handshake: ClientHandshake) -> bool:
    return handshake.established


def _chain(
    call: _Call,
    proxies: Sequence[ProxyURL],
    target: Address,
    *,
    command: Command = Command.CONNECT,
    proxy_ssl: ssl.SSLContext | None,
    prepare: bool = False,
) -> tuple[SocketLike, ClientHandshake | None, list[Hop]]:
    """Open the stream through every hop; the last hop's handshake ends at its first reply.

    With *prepare*, the last hop stops before its request instead (status
    ``READY``, *target* unused): a connection for a :class:`ProxyPool`, which
    :func:`_request` finishes.

    Returns:
        the stream, the last hop's handshake (``None`` without proxies) and the hops.
    """
    hops = plan_hops(proxies, target)
    if not hops:
        return call.open_tcp(target, None), None, hops
    last_index = len(hops) - 1
    # An impossible request fails before any I/O: build now every handshake whose
    # target needs no local resolution (they are used as they are, below).
    built: list[ClientHandshake | None] = [
        None
        if (prepare and index == last_index) or needs_local_resolution(hop.proxy, hop.target)
        else ClientHandshake(
            hop.proxy,
            hop.target,
            command=command if index == last_index else Command.CONNECT,
            pipelined=call.pipelined,
        )
        for index, hop in enumerate(hops)
    ]
    stream: SocketLike = call.open_tcp(hops[0].proxy.address, hops[0])
    handshake: ClientHandshake | None = None
    try:
        for index, hop in enumerate(hops):
            if hop.needs_tls:
                context = proxy_ssl if proxy_ssl is not None else ssl.create_default_context()
                stream = call.start_tls(stream, context, hop.proxy.address.host_str, hop)
            is_last = index == last_index
            handshake = built[index]
            if prepare and is_last:
                handshake = ClientHandshake(hop.proxy, None)
                if call.debug:
                    logger.debug("hop %d/%d: %s, prepared up to the request", index + 1, len(hops), hop.describe())
            else:
                if handshake is None:
                    hop = call.resolve(hop)  # noqa: PLW2901 - the same hop, with an address for its target
                    handshake = hop.handshake(
                        command=command if is_last else Command.CONNECT, pipelined=call.pipelined
                    )
                if call.debug:
                    logger.debug("hop %d/%d: %s to %s", index + 1, len(hops), hop.describe(), hop.target)
            call.handshake(stream, handshake, hop, _in_progress_done)
    except BaseException:
        stream.close()
        raise
    return stream, handshake, hops


def _request(call: _Call, stream: SocketLike, handshake: ClientHandshake, target: Address) -> None:
    """Finish a prepared handshake (status ``READY``): CONNECT to *target*, up to the reply."""
    hop = call.resolve(Hop(handshake.proxy, target))
    handshake.request(hop.target)
    logger.debug("%s: prepared connection asks for %s", hop.describe(), hop.target)
    call.handshake(stream, handshake, hop, _in_progress_done)


def _failover_chain(
    call: _Call,
    candidates: Sequence[tuple[ProxyURL, ...]],
    policy: RetryPolicy,
    target: Address,
    proxy_ssl: ssl.SSLContext | None,
) -> tuple[list[ProxyURL], SocketLike, ClientHandshake | None]:
    """:func:`_chain` through the first candidate that works, following :func:`plan_failover`."""
    failures = Failures(policy)
    for step in plan_failover(candidates, policy, call.deadline.remaining):
        if step.delay:
            logger.debug("failover: waiting %.3f s before round %d", step.delay, step.round)
            time.sleep(step.delay)
        logger.debug("failover attempt %d (round %d): connect to %s via %s", step.number, step.round, target,
                     step.describe())  # fmt: skip
        call.connect_time = call.handshake_time = call.tls_time = 0.0  # the report covers the last attempt
        try:
            stream, last, _ = _chain(call, step.chain, target, proxy_ssl=proxy_ssl)
        except Exception as exc:
            logger.debug("failover attempt %d failed: %s: %s", step.number, type(exc).__name__, exc)
            if not failures.record(step, exc):
                raise
            continue
        return list(step.chain), stream, last
    raise failures.final_error()


def _proxies_for(
    proxy: ProxySpec | Sequence[ProxySpec] | None, host: str, port: int, *, tls: bool, trust_env: bool
) -> list[ProxyURL]:
    if proxy is None and trust_env:
        return proxies_from_environment("https" if tls else "http", host, port, os.environ)
    return to_proxies(proxy)


def _host_header(target: Address, tls: bool) -> str:
    """``Host``: the authority, without the scheme's default port."""
    default = 443 if tls else 80
    if target.port == default:
        return f"[{target.host}]" if isinstance(target.host, ipaddress.IPv6Address) else target.host_str
    return target.authority


# ---------------------------------------------------------------------------- connect


def connect(
    host: str,
    port: int,
    *,
    proxy: ProxySpec | Sequence[ProxySpec] | None = None,
    timeout: float | None = None,
    ssl: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    proxy_ssl: ssl.SSLContext | None = None,
    trust_env: bool = False,
    pipelined: bool = False,
    nodelay: bool = True,
    keepalive: bool = True,
    failover: Sequence[ProxySpec | Sequence[ProxySpec]] | None = None,
    retry: RetryPolicy | None = None,
) -> SocketLike:
    """Connect to *host*:*port* through a proxy or a chain of proxies, or directly.

    Args:
        host: the target: a name, or an IPv4 or IPv6 literal (``"::1"``, no brackets).
            ``socks5://`` and ``socks4://`` proxies get it resolved here first; the
            other schemes let the proxy resolve it.
        port: the target's port.
        proxy: a proxy URL (``"socks5h://user:pass@host:1080"``), a :class:`ProxyURL`,
            or a sequence of them: a chain, first hop first. ``None``: direct (or
            the environment's, with *trust_env*).
        timeout: one deadline in seconds for everything: TCP connect, every
            handshake step of every hop, and every TLS handshake.
        ssl: run TLS with the target using this context.
        server_hostname: the name to check the target's certificate against
            (default: *host*).
        proxy_ssl: the context for ``https://`` proxies (default:
            :func:`ssl.create_default_context`).
        trust_env: with no *proxy*, use ``ALL_PROXY`` / ``HTTPS_PROXY`` (with *ssl*)
            or ``HTTP_PROXY``, honouring ``NO_PROXY``.
        pipelined: SOCKS5 hops send greeting, credentials and request in one write.
        nodelay: set ``TCP_NODELAY``.
        keepalive: set ``SO_KEEPALIVE``.
        failover: instead of *proxy*, the candidates to try in order, each a
            proxy or a chain; round after round under *retry*, all within
            *timeout* (see :mod:`socks_sansio.adapters._failover`).
        retry: the :class:`RetryPolicy` (default ``RetryPolicy()`` with
            *failover*; alone, it retries the one *proxy*).

    Returns:
        a blocking socket (timeout ``None``) whose next ``recv`` returns the first
        octet the target sent: a plain :class:`socket.socket` without TLS, an
        :class:`ssl.SSLSocket` when TLS runs over the TCP connection itself, or a
        :class:`TLSInTLSSocket` when TLS runs inside TLS (an ``https://`` hop
        followed by TLS to another hop or to the target).

    Raises:
        ProxyTimeoutError: the deadline passed.
        ProxyConnectionError: a proxy could not be reached, broke the connection,
            or failed its TLS handshake (``__cause__`` holds the ``OSError``).
            With *failover* or *retry*, the error raised is the last attempt's,
            with every attempt in its ``__notes__``.
        TypeError: both *proxy* and *failover* were given.
        ProxyAuthError: a proxy wants other credentials.
        ProxyRefusedError: a proxy refused the request (code inside).
        ProxyProtocolError: a proxy broke its protocol.
        LocalProtocolError: an impossible request (an IPv6 target through SOCKS4...).
        ssl.SSLError: the TLS handshake with the target failed.
        OSError: connecting directly (without proxies) failed, or a name could
            not be resolved locally.
    """
    return _connect(
        host, port, proxy=proxy, timeout=timeout, tls=ssl, server_hostname=server_hostname,
        proxy_ssl=proxy_ssl, trust_env=trust_env, pipelined=pipelined, nodelay=nodelay, keepalive=keepalive,
        failover=failover, retry=retry,
    )[1]  # the socket alone: no Tunnel and no ConnectionInfo to build


def open_tunnel(
    host: str,
    port: int,
    *,
    proxy: ProxySpec | Sequence[ProxySpec] | None = None,
    timeout: float | None = None,
    ssl: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    proxy_ssl: ssl.SSLContext | None = None,
    trust_env: bool = False,
    pipelined: bool = False,
    nodelay: bool = True,
    keepalive: bool = True,
    failover: Sequence[ProxySpec | Sequence[ProxySpec]] | None = None,
    retry: RetryPolicy | None = None,
) -> Tunnel:
    """Like :func:`connect`, but return a :class:`Tunnel` holding the socket and a :class:`ConnectionInfo`.

    Same arguments and errors as :func:`connect`.
    """
    call, stream, last, proxies, target = _connect(
        host, port, proxy=proxy, timeout=timeout, tls=ssl, server_hostname=server_hostname,
        proxy_ssl=proxy_ssl, trust_env=trust_env, pipelined=pipelined, nodelay=nodelay, keepalive=keepalive,
        failover=failover, retry=retry,
    )
    return _tunnel(call, stream, last, proxies, target, ssl is not None)


def _connect(
    host: str,
    port: int,
    *,
    proxy: ProxySpec | Sequence[ProxySpec] | None,
    timeout: float | None,
    tls: ssl.SSLContext | None,
    server_hostname: str | None,
    proxy_ssl: ssl.SSLContext | None,
    trust_env: bool,
    pipelined: bool,
    nodelay: bool,
    keepalive: bool,
    failover: Sequence[ProxySpec | Sequence[ProxySpec]] | None,
    retry: RetryPolicy | None,
) -> tuple[_Call, SocketLike, ClientHandshake | None, Sequence[ProxyURL], Address]:
    """Everything :func:`connect` and :func:`open_tunnel` do but building the :class:`Tunnel`.

    Returns:
        the call, the socket (TLS to the target done, timeout ``None``), the last
        hop's handshake, the proxies that were used and the target.
    """
    call = _Call(timeout, nodelay=nodelay, keepalive=keepalive, pipelined=pipelined)
    target = Address(host, port)
    if failover is None and retry is None:
        proxies = _proxies_for(proxy, host, port, tls=tls is not None, trust_env=trust_env)
        if call.debug:
            logger.debug("connect to %s via %s", target, [p.redacted() for p in proxies] or "no proxy")
        stream, last, _ = _chain(call, proxies, target, proxy_ssl=proxy_ssl)
    else:
        candidates = candidates_for(
            proxy, failover, lambda: _proxies_for(proxy, host, port, tls=tls is not None, trust_env=trust_env)
        )
        proxies, stream, last = _failover_chain(call, candidates, retry or RetryPolicy(), target, proxy_ssl)
    stream = _finish(call, stream, target, tls, server_hostname or host)
    return call, stream, last, proxies, target


def _finish(
    call: _Call, stream: SocketLike, target: Address, tls: ssl.SSLContext | None, server_hostname: str
) -> SocketLike:
    """TLS to the target if asked, and the socket made blocking (it is closed on failure)."""
    try:
        if tls is not None:
            stream = call.start_tls(stream, tls, server_hostname, None)
        stream.settimeout(None)
    except BaseException:
        stream.close()
        raise
    if call.debug:
        logger.debug("connected to %s in %.3f s", target, time.monotonic() - call.started)
    return stream


def _tunnel(
    call: _Call,
    stream: SocketLike,
    last: ClientHandshake | None,
    proxies: Sequence[ProxyURL],
    target: Address,
    tls: bool,
) -> Tunnel:
    """The :class:`Tunnel` of a finished call: the socket and its :class:`ConnectionInfo`."""
    return Tunnel(stream, call.info(proxies, target, last, tls), host_header=_host_header(target, tls))


def _complete(
    call: _Call,
    stream: SocketLike,
    last: ClientHandshake | None,
    proxies: Sequence[ProxyURL],
    target: Address,
    tls: ssl.SSLContext | None,
    server_hostname: str,
) -> Tunnel:
    """TLS to the target if asked, then the :class:`Tunnel` (the stream is closed on failure)."""
    stream = _finish(call, stream, target, tls, server_hostname)
    return _tunnel(call, stream, last, proxies, target, tls is not None)


# ---------------------------------------------------------------------------- Tunnel


@final
class Tunnel:
    """A connection through proxies, with its report and a few conveniences.

    Attributes:
        socket: the connection, as :func:`connect` returns it; use it freely.
        info: what the connection went through (hops, timings, bound address).

    Use it as a context manager, or call :meth:`close`. :meth:`receive_frame` never
    reads past the frame it returns, so frames and raw ``recv`` calls can be mixed;
    :meth:`http_request` reads the response to its end.
    """

    __slots__ = ("_frames", "_host_header", "info", "socket")

    def __init__(self, sock: SocketLike, info: ConnectionInfo, *, host_header: str) -> None:
        self.socket = sock
        self.info = info
        self._host_header = host_header
        self._frames = FrameDecoder()

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of *data* to the target."""
        self.socket.sendall(data)

    def recv(self, bufsize: int = DEFAULT_RECV_SIZE) -> bytes:
        """Up to *bufsize* octets from the target; ``b""`` once it closed."""
        return self.socket.recv(bufsize)

    def send_frame(self, payload: bytes | bytearray | memoryview) -> None:
        """Send one length-prefixed frame (:func:`socks_sansio.encode_frame`)."""
        self.socket.sendall(encode_frame(payload))

    def receive_frame(self) -> bytes:
        """Receive one length-prefixed frame's payload.

        Raises:
            EOFError: the target closed the connection between frames.
            RemoteProtocolError: it closed in the middle of one, or announced one too long.
        """
        while True:
            event = self._frames.next_event()
            if isinstance(event, Frame):
                return event.payload
            if isinstance(event, ConnectionClosed):
                raise EOFError("the peer closed the connection")
            self._frames.receive_data(self.socket.recv(min(self._frames.read_size_hint, DEFAULT_RECV_SIZE)))

    def http_request(
        self,
        method: str,
        target: str,
        *,
        headers: Sequence[tuple[str | bytes, str | bytes]] = (),
        body: bytes = b"",
    ) -> HttpResponse:
        """Send one HTTP/1.1 request through the tunnel and read the whole response.

        Args:
            method: ``"GET"``, ``"POST"``...
            target: the request target, like ``"/index.html"``.
            headers: extra header fields; ``Host`` is the tunnel's target.
            body: the request body (``Content-Length`` is set for it).

        Raises:
            RemoteProtocolError: the response is not valid HTTP/1.1.
        """
        self.socket.sendall(encode_request(method, target, host=self._host_header, headers=headers, body=body))
        reader = ResponseReader(request_method=method)
        while True:
            event = reader.next_event()
            if isinstance(event, HttpResponse):
                return event
            # Never more than the response still needs: what follows stays in the socket.
            reader.receive_data(self.socket.recv(min(reader.read_size_hint, DEFAULT_RECV_SIZE)))

    def shutdown_write(self) -> None:
        """Half-close: the target sees EOF and can still send; we can still receive.

        On a plain socket this is a TCP half-close; on a :class:`TLSInTLSSocket` a TLS
        ``close_notify`` (see :meth:`TLSInTLSSocket.shutdown`).

        Raises:
            NotImplementedError: the socket is an :class:`ssl.SSLSocket` (TLS to the
                target or to an ``https://`` proxy over TCP): the :mod:`ssl` module
                cannot half-close it (as asyncio and trio cannot either).
        """
        _half_close(self.socket)

    def close(self) -> None:
        """Close the connection (every layer)."""
        self.socket.close()

    def __enter__(self) -> Tunnel:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Tunnel to {self.info.target} via {list(self.info.proxies)}>"


# ---------------------------------------------------------------------------- BIND


@final
class BindListener:
    """A SOCKS BIND in progress: the proxy listens; a peer connecting there becomes the tunnel.

    Attributes:
        address: where the proxy listens (its first reply), to advertise to the peer.
            An unspecified address (``0.0.0.0``) is replaced by the last proxy's own.
        peer: after :meth:`accept`, the peer that connected (the second reply).
        info: the handshake report up to the first reply.
    """

    __slots__ = ("_handshake", "_hop", "_stream", "address", "info", "peer")

    def __init__(self, stream: SocketLike, handshake: ClientHandshake, hop: Hop, info: ConnectionInfo) -> None:
        self._stream: SocketLike | None = stream
        self._handshake = handshake
        self._hop = hop
        self.info = info
        bound = handshake.bound
        assert bound is not None  # the first reply arrived
        self.address = advertised(bound, hop.proxy.address.host)
        self.peer: Address | None = None

    def accept(self, timeout: float | None = None) -> SocketLike:
        """Wait for the second reply: a peer connected to :attr:`address`.

        Args:
            timeout: seconds to wait; on :class:`~socks_sansio.ProxyTimeoutError`
                nothing is lost and ``accept`` may be called again.

        Returns:
            the tunnel to the peer (blocking, timeout ``None``); it belongs to the
            caller, and the listener is spent.

        Raises:
            ProxyTimeoutError: no peer within *timeout*.
            ProxyRefusedError: the proxy reported a failure instead.
            ProxyConnectionError: the proxy closed the connection.
            RuntimeError: :meth:`accept` already returned, or the listener is closed.
        """
        stream = self._stream
        if stream is None:
            raise RuntimeError("this BIND listener is closed or has already accepted its peer")
        call = _Call(timeout)
        try:
            call.handshake(stream, self._handshake, self._hop, _established)
        except ProxyTimeoutError:
            raise  # nothing lost: the handshake keeps what arrived, accept() may be called again
        except BaseException:
            self.close()
            raise
        stream.settimeout(None)
        self.peer = self._handshake.bind_peer
        self._stream = None
        logger.debug("BIND: %s connected", self.peer)
        return stream

    def close(self) -> None:
        """Close the control connection (the proxy stops listening). Idempotent."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def __enter__(self) -> BindListener:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_bind(
    proxy: ProxySpec | Sequence[ProxySpec],
    *,
    expected_peer: Address = Address("0.0.0.0", 0),  # noqa: B008 - frozen value
    timeout: float | None = None,
    proxy_ssl: ssl.SSLContext | None = None,
    pipelined: bool = False,
    nodelay: bool = True,
    keepalive: bool = True,
) -> BindListener:
    """Ask the (last) SOCKS proxy to listen for one incoming connection (SOCKS BIND).

    Args:
        proxy: a SOCKS5 or SOCKS4 proxy, or a chain whose last hop is one.
        expected_peer: the peer that will connect (DST.ADDR), if known.
        timeout: the deadline up to the first reply (see :meth:`BindListener.accept`
            for the wait that follows).
        proxy_ssl, pipelined, nodelay, keepalive: as for :func:`connect`.

    Raises:
        LocalProtocolError: no proxy, or the last one cannot BIND (HTTP).
        ProxyError: as :func:`connect`.
    """
    proxies = to_proxies(proxy)
    if not proxies or proxies[-1].protocol is ProxyProtocol.HTTP:
        raise LocalProtocolError("BIND needs a SOCKS5 or SOCKS4 proxy as the last hop")
    call = _Call(timeout, nodelay=nodelay, keepalive=keepalive, pipelined=pipelined)
    stream, handshake, hops = _chain(call, proxies, expected_peer, command=Command.BIND, proxy_ssl=proxy_ssl)
    assert handshake is not None
    stream.settimeout(None)
    # If both replies came at once, accept() returns at once: the handshake is already established.
    return BindListener(stream, handshake, hops[-1], call.info(proxies, expected_peer, handshake, False))


# ---------------------------------------------------------------------------- UDP


@final
class UdpAssociation:
    """A SOCKS5 UDP association: datagrams through the proxy's relay.

    The TCP control connection stays open for as long as the association lives;
    closing it (:meth:`close`) ends the association.

    Attributes:
        relay: the relay's address (from the proxy's reply; an unspecified address
            is replaced by the proxy's).
        control: the TCP control connection.
        info: the handshake report.
    """

    __slots__ = ("_closed", "_proxy", "_relay_sockaddr", "_selector", "control", "info", "relay", "udp")

    def __init__(
        self,
        control: socket.socket,
        udp: socket.socket,
        relay: Address,
        relay_sockaddr: tuple[str, int],
        proxy: ProxyURL,
        info: ConnectionInfo,
    ) -> None:
        self.control = control
        self.udp = udp
        self.relay = relay
        self.info = info
        self._relay_sockaddr = relay_sockaddr
        self._proxy = proxy
        self._closed = False
        udp.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(udp, selectors.EVENT_READ)
        self._selector.register(control, selectors.EVENT_READ)

    def sendto(self, data: bytes | bytearray | memoryview, address: tuple[str, int] | Address) -> None:
        """Send *data* to *address* (``(host, port)``) through the relay.

        A name is resolved here for a ``socks5://`` proxy, by the proxy for ``socks5h://``.
        """
        target = address if isinstance(address, Address) else Address(address[0], address[1])
        if needs_local_resolution(self._proxy, target):
            infos = socket.getaddrinfo(target.host_str, target.port, type=socket.SOCK_DGRAM)
            target = Address(infos[0][4][0], target.port)
        self.udp.sendto(encode_udp_datagram(UdpDatagram(address=target, data=data)), self._relay_sockaddr)

    def recvfrom(self, timeout: float | None = None) -> tuple[bytes, Address]:
        """The next datagram from the relay and the address it came from.

        Datagrams not from the relay, malformed ones, and fragments (FRAG != 0,
        RFC 1928 §7: no reassembly here) are dropped.

        Raises:
            TimeoutError: nothing within *timeout* seconds.
            ProxyConnectionError: the proxy closed the control connection.
        """
        deadline = Deadline(timeout)
        while True:
            ready = self._selector.select(deadline.remaining())
            if not ready:
                raise TimeoutError(f"no datagram from the relay within {timeout} s")
            for key, _ in ready:
                if key.fileobj is self.control:
                    self._check_control()
                    continue
                try:
                    packet, source = self.udp.recvfrom(_UDP_MAX)
                except BlockingIOError:
                    continue
                received = unwrap_relay_datagram(packet, source, self._relay_sockaddr)
                if received is not None:
                    return received

    def _check_control(self) -> None:
        self.control.settimeout(0)
        try:
            data = self.control.recv(DEFAULT_RECV_SIZE)
        except BlockingIOError:
            return
        finally:
            self.control.settimeout(None)
        if not data:
            raise ProxyConnectionError(
                "the proxy closed the UDP association's control connection", proxy=self._proxy.redacted()
            )
        logger.debug("UDP: ignored %d octets on the control connection", len(data))

    def close(self) -> None:
        """End the association: close the control connection and the UDP socket. Idempotent."""
        if not self._closed:
            self._closed = True
            self._selector.close()
            self.udp.close()
            self.control.close()

    def __enter__(self) -> UdpAssociation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_udp_association(
    proxy: ProxySpec,
    *,
    timeout: float | None = None,
    pipelined: bool = False,
    nodelay: bool = True,
    keepalive: bool = True,
) -> UdpAssociation:
    """Open a SOCKS5 UDP association (UDP ASSOCIATE) through one proxy.

    We announce the address our UDP socket sends from; the proxy's reply names
    the relay to send datagrams to.

    Args:
        proxy: one ``socks5://`` or ``socks5h://`` proxy (no chains: the relay must
            be reachable by UDP from here).
        timeout: the deadline for the TCP connect and the handshake.
        pipelined, nodelay, keepalive: as for :func:`connect`.

    Raises:
        LocalProtocolError: not exactly one SOCKS5 proxy.
        ProxyError: as :func:`connect`.
    """
    proxies = to_proxies(proxy)
    if len(proxies) != 1 or proxies[0].protocol is not ProxyProtocol.SOCKS5:
        raise LocalProtocolError("UDP ASSOCIATE needs exactly one socks5:// or socks5h:// proxy")
    hop = plan_hops(proxies, Address("0.0.0.0", 0))[0]
    call = _Call(timeout, nodelay=nodelay, keepalive=keepalive, pipelined=pipelined)
    control = call.open_tcp(hop.proxy.address, hop)
    udp: socket.socket | None = None
    try:
        local = control.getsockname()
        udp = socket.socket(control.family, socket.SOCK_DGRAM)
        udp.bind((local[0], 0))
        announce = Address(udp.getsockname()[0], udp.getsockname()[1])
        hop = Hop(hop.proxy, announce)
        handshake = hop.handshake(command=Command.UDP_ASSOCIATE, pipelined=pipelined)
        call.handshake(control, handshake, hop, _established)
        bound = handshake.bound
        assert bound is not None
        relay_host = advertised(bound, control.getpeername()[0]).host_str
        relay = Address(relay_host, bound.port)
        family, _, _, _, sockaddr = socket.getaddrinfo(relay.host_str, relay.port, type=socket.SOCK_DGRAM)[0]
        relay_sockaddr = (str(sockaddr[0]), int(sockaddr[1]))
        if family != udp.family:
            udp.close()
            udp = socket.socket(family, socket.SOCK_DGRAM)
        control.settimeout(None)
        logger.debug("UDP association: relay %s", relay)
        info = call.info(proxies, announce, handshake, False)
        return UdpAssociation(control, udp, relay, relay_sockaddr, hop.proxy, info)
    except BaseException:
        control.close()
        if udp is not None:
            udp.close()
        raise


# ---------------------------------------------------------------------------- pool


@final
class _Prepared:
    """A pooled connection: the stream and the last hop's handshake, waiting in status READY."""

    __slots__ = ("handshake", "stream")

    def __init__(self, stream: SocketLike, handshake: ClientHandshake) -> None:
        self.stream = stream
        self.handshake = handshake


def _silent(prepared: _Prepared) -> bool:
    """Whether the proxy said nothing since the connection was prepared (no octet, no EOF, no error).

    One non-blocking read: over TLS it also consumes what TLS sends after its
    handshake (session tickets), which is not application data.
    """
    stream = prepared.stream
    try:
        stream.settimeout(0)
        stream.recv(1)
    except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return True
    except OSError:
        return False
    return False  # an EOF, or an octet the proxy had no reason to send


@final
class ProxyPool:
    """Connections through a proxy (or a chain) prepared in advance: a new tunnel costs one round trip.

    A prepared connection is connected and authenticated: TCP (and TLS for
    ``https://``) to the proxy, every hop of a chain but the last one's
    request, the SOCKS5 greeting and RFC 1929 exchange. :meth:`connect` sends
    only the request and waits for its reply. SOCKS4 and HTTP proxies have
    nothing before the request, so for them a prepared connection saves the
    TCP (and TLS) set-up.

    A background thread keeps *size* connections ready: it starts filling at
    once and opens a new one whenever one is taken or discarded. A connection
    taken from the pool is checked first: one older than *idle_timeout*, or on
    which the proxy sent anything or closed, is discarded, and the next one is
    tried; when none is left (a miss) :meth:`connect` connects cold, as
    :func:`connect` does, within the same *timeout*. A pooled connection whose
    request fails because the connection broke is also replaced by a cold
    connect. Connections are never shared: each becomes exactly one tunnel.
    Thread-safe.

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

    Use it as a context manager, or call :meth:`close`.

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
        proxy_ssl: ssl.SSLContext | None = None,
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
        self._cond = threading.Condition()
        self._filler = threading.Thread(target=self._fill_in_background, name="socks-sansio ProxyPool", daemon=True)
        self._filler.start()

    @property
    def stats(self) -> PoolStats:
        """Hits, misses, discarded, opened and failed connections so far."""
        return self._idle.stats

    @property
    def ready(self) -> int:
        """How many prepared connections wait now."""
        with self._cond:
            return len(self._idle)

    def _prepare(self) -> _Prepared:
        call = _Call(self._connect_timeout, nodelay=self._nodelay, keepalive=self._keepalive)
        stream, handshake, _ = _chain(call, self._proxies, Address("0.0.0.0", 0), proxy_ssl=self._proxy_ssl,
                                      prepare=True)  # fmt: skip
        assert handshake is not None
        return _Prepared(stream, handshake)

    def _refill_one(self) -> None:
        """Open one prepared connection (a refill already counted by start_refills) and hand it to the pool."""
        try:
            prepared = self._prepare()
        except BaseException:
            with self._cond:
                self._idle.refilled(None)
                self._cond.notify_all()
            raise
        with self._cond:
            kept = self._idle.refilled(prepared)
            self._cond.notify_all()
        if not kept:
            prepared.stream.close()

    def _give_up(self, refills: int) -> None:
        with self._cond:
            self._idle.cancel_refills(refills)
            self._cond.notify_all()

    def _fill_in_background(self) -> None:
        backoff = 0.0
        while True:
            with self._cond:
                if backoff:
                    self._cond.wait(backoff)
                while not self._idle.closed and not (wanted := self._idle.start_refills()):
                    self._cond.wait(self._idle.next_expiry())
                    _close_all(self._idle.expired())
                if self._idle.closed:
                    return
            for done in range(wanted):
                try:
                    self._refill_one()
                except Exception as exc:
                    logger.debug("pool: preparing a connection failed: %s: %s", type(exc).__name__, exc)
                    self._give_up(wanted - done - 1)  # this round's other refills
                    backoff = min(max(2 * backoff, 0.1), self._idle.idle_timeout)
                    break
            else:
                backoff = 0.0

    def fill(self) -> None:
        """Get *size* prepared connections ready now, opening the missing ones in this thread.

        A warm-up before the first call: it returns when the pool is full
        (refills the background thread already started included).

        Raises:
            ProxyError: preparing a connection failed (``ProxyAuthError`` when the
                proxy refuses the credentials), as :func:`connect` would raise it.
            RuntimeError: the pool is closed.
        """
        while True:
            with self._cond:
                while not self._idle.closed and not (wanted := self._idle.start_refills()) and self._idle.opening:
                    self._cond.wait()  # the background thread is opening the last ones
                if self._idle.closed:
                    raise RuntimeError("this ProxyPool is closed")
                if not wanted:
                    return
            for done in range(wanted):
                try:
                    self._refill_one()
                except BaseException:
                    self._give_up(wanted - done - 1)
                    raise

    def connect(
        self,
        host: str,
        port: int,
        *,
        timeout: float | None = None,
        ssl: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> SocketLike:
        """Connect to *host*:*port* through the pool's proxies, as :func:`connect` does.

        Args:
            host, port, timeout, ssl, server_hostname: as for :func:`connect`;
                *timeout* covers the request on a prepared connection and, on a
                miss, the whole cold connect.

        Returns:
            the socket, as :func:`connect` returns it.

        Raises:
            RuntimeError: the pool is closed.
            ProxyError, OSError, ssl.SSLError: as :func:`connect`.
        """
        return self.open_tunnel(host, port, timeout=timeout, ssl=ssl, server_hostname=server_hostname).socket

    def open_tunnel(
        self,
        host: str,
        port: int,
        *,
        timeout: float | None = None,
        ssl: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> Tunnel:
        """Like :meth:`connect`, but return a :class:`Tunnel` (the socket and its :class:`ConnectionInfo`)."""
        call = _Call(timeout, nodelay=self._nodelay, keepalive=self._keepalive)
        target = Address(host, port)
        with self._cond:
            if self._idle.closed:
                raise RuntimeError("this ProxyPool is closed")
            prepared, doomed = self._idle.take(_silent)
            self._cond.notify_all()  # the filler replaces what was taken or discarded
        _close_all(doomed)
        if prepared is not None:
            try:
                _request(call, prepared.stream, prepared.handshake, target)
            except ProxyConnectionError as exc:
                prepared.stream.close()
                with self._cond:
                    self._idle.lost()
                logger.debug("pool: the prepared connection broke (%s); connecting cold", exc)
            except BaseException:
                prepared.stream.close()
                raise
            else:
                logger.debug("pool: hit for %s", target)
                return _complete(call, prepared.stream, prepared.handshake, self._proxies, target, ssl,
                                 server_hostname or host)  # fmt: skip
        logger.debug("pool: miss for %s; connecting cold", target)
        stream, last, _ = _chain(call, self._proxies, target, proxy_ssl=self._proxy_ssl)
        return _complete(call, stream, last, self._proxies, target, ssl, server_hostname or host)

    def close(self) -> None:
        """Close every idle connection and stop the background thread. Idempotent.

        Tunnels already handed out are the caller's and stay open.
        """
        with self._cond:
            doomed = self._idle.close()
            self._cond.notify_all()
        _close_all(doomed)
        if self._filler is not threading.current_thread():
            self._filler.join()

    def __enter__(self) -> ProxyPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ProxyPool via {[p.redacted() for p in self._proxies]} {self._idle.stats}>"


def _close_all(prepared: Sequence[_Prepared]) -> None:
    for each in prepared:
        each.stream.close()

"""Blocking sockets: the client plans run with the stdlib ``socket`` and ``ssl`` modules.

Strategy. Every decision is the core's: a :class:`~socks_sansio.ConnectPlan` (or
:class:`~socks_sansio.AssociatePlan`, :class:`~socks_sansio.HandshakePlan`) says
which proxy to dial, what to send, how much may be read, when to layer TLS,
what an error means. :class:`_Link` performs its operations on one socket::

    link = Link(plan, ...)
    link.run(plan.run())        # Dial, StartTLS, Send, Receive, Resolve, Sleep, Close...
    return link.stream

Reading exactly what each ``Receive`` asks means nothing after the final reply
is ever consumed: the first tunnel bytes stay in the kernel (or in the TLS layer
below), so when no TLS is involved :func:`connect` returns the plain
:class:`socket.socket` itself. TLS over a plain socket is
:meth:`ssl.SSLContext.wrap_socket`; TLS over TLS is a :class:`TLSInTLSSocket`.

The deadline: before every blocking operation (connect, recv, sendall, a TLS
handshake) the socket's time-out is set to what is left of the plan's deadline,
so a time-out there is the deadline passing (the plan turns it into
:class:`~socks_sansio.ProxyTimeoutError`). Only name resolution
(``getaddrinfo``) cannot be interrupted; the deadline is checked after it.
Whatever fails, every socket the call opened is closed.
"""

from __future__ import annotations

import os
import selectors
import socket
import ssl
import time
from collections.abc import Sequence
from types import TracebackType
from typing import final

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
    ProxyConnectionError,
    ProxySpec,
    ProxyTimeoutError,
    ResponseReader,
    RetryPolicy,
    Stepper,
    encode_frame,
    encode_request,
    unwrap_relay_datagram,
)

from ._common import DEFAULT_RECV_SIZE, UDP_MAX, host_header, logger
from .sync_link import Link, resolve
from .tls_in_tls import SocketLike, TLSInTLSSocket, half_close, wrap_tls

__all__ = [
    "BindListener",
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
            (default: *host*; only with *ssl*).
        proxy_ssl: the context for ``https://`` proxies (default:
            :func:`ssl.create_default_context`).
        trust_env: with no *proxy*, use ``ALL_PROXY`` / ``HTTPS_PROXY`` (with *ssl*)
            or ``HTTP_PROXY``, honouring ``NO_PROXY``.
        pipelined: SOCKS5 hops send greeting, credentials and request in one write
            (one round trip fewer, two with credentials). Only for servers known to
            cope (Dante, ``socks-sansio serve``): microsocks, for one, hangs.
        nodelay: set ``TCP_NODELAY``.
        keepalive: set ``SO_KEEPALIVE``.
        failover: instead of *proxy*, the candidates to try in order, each a
            proxy or a chain; round after round under *retry*, all within
            *timeout* (see :class:`~socks_sansio.RetryPolicy`).
        retry: the :class:`~socks_sansio.RetryPolicy` (default ``RetryPolicy()``
            with *failover*; alone, it retries the one *proxy*).

    Returns:
        a blocking socket (timeout ``None``) whose next ``recv`` returns the first
        octet the target sent: a plain :class:`socket.socket` without TLS, an
        :class:`ssl.SSLSocket` when TLS runs over the TCP connection itself, or a
        :class:`TLSInTLSSocket` when TLS runs inside TLS.

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
    plan = ConnectPlan.for_call(
        host, port, proxy=proxy, failover=failover, retry=retry, trust_env=trust_env, environ=os.environ,
        tls=ssl is not None, server_hostname=server_hostname, timeout=timeout, pipelined=pipelined,
    )  # fmt: skip
    return _open(plan, ssl, proxy_ssl, nodelay, keepalive)


def _open(
    plan: ConnectPlan, tls: ssl.SSLContext | None, proxy_ssl: ssl.SSLContext | None, nodelay: bool, keepalive: bool
) -> SocketLike:
    """Run *plan* on a new link; the socket, made blocking."""
    link = Link(plan, tls=tls, proxy_ssl=proxy_ssl, nodelay=nodelay, keepalive=keepalive)
    link.run(plan.run())
    stream = link.stream
    assert stream is not None
    stream.settimeout(None)
    return stream


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
    plan = ConnectPlan.for_call(
        host, port, proxy=proxy, failover=failover, retry=retry, trust_env=trust_env, environ=os.environ,
        tls=ssl is not None, server_hostname=server_hostname, timeout=timeout, pipelined=pipelined,
    )  # fmt: skip
    return Tunnel(_open(plan, ssl, proxy_ssl, nodelay, keepalive), plan.info())


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

    __slots__ = ("_frames", "info", "socket")

    def __init__(self, sock: SocketLike, info: ConnectionInfo) -> None:
        self.socket = sock
        self.info = info
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
        host = host_header(self.info.target, self.info.tls)
        self.socket.sendall(encode_request(method, target, host=host, headers=headers, body=body))
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
        half_close(self.socket)

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
            An unspecified address (``0.0.0.0``) is replaced by the proxy's own.
        peer: after :meth:`accept`, the peer that connected (the second reply).
        info: the handshake report up to the first reply.
    """

    __slots__ = ("_handshake", "_stream", "address", "info", "peer")

    def __init__(self, stream: SocketLike, plan: ConnectPlan) -> None:
        assert plan.handshake is not None
        assert plan.bind_address is not None
        self._stream: SocketLike | None = stream
        self._handshake: ClientHandshake = plan.handshake
        self.info = plan.info()
        self.address = plan.bind_address
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
        plan = HandshakePlan(self._handshake, timeout=timeout)
        try:
            Link(plan, stream=stream).run(plan.run(), close_on_error=False)
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
    plan = ConnectPlan.for_bind(proxy, expected_peer, timeout=timeout, pipelined=pipelined)
    # If both replies came at once, accept() returns at once: the handshake is already established.
    return BindListener(_open(plan, None, proxy_ssl, nodelay, keepalive), plan)


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

    __slots__ = ("_closed", "_plan", "_relay_sockaddr", "_selector", "control", "info", "relay", "udp")

    def __init__(self, control: socket.socket, udp: socket.socket, plan: AssociatePlan) -> None:
        self.control = control
        self.udp = udp
        self.relay = plan.relay
        self.info = plan.info()
        self._plan = plan
        self._relay_sockaddr = (plan.relay.host_str, plan.relay.port)
        self._closed = False
        udp.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(udp, selectors.EVENT_READ)
        self._selector.register(control, selectors.EVENT_READ)

    def sendto(self, data: bytes | bytearray | memoryview, address: tuple[str, int] | Address) -> None:
        """Send *data* to *address* (``(host, port)``) through the relay.

        A name is resolved here for a ``socks5://`` proxy, by the proxy for ``socks5h://``.
        """
        packet = Stepper(self._plan.datagram(data, address)).run(resolve)
        self.udp.sendto(packet, self._relay_sockaddr)

    def recvfrom(self, timeout: float | None = None) -> tuple[bytes, Address]:
        """The next datagram from the relay and the address it came from.

        Datagrams not from the relay, malformed ones, and fragments (FRAG != 0,
        RFC 1928 §7: no reassembly here) are dropped.

        Raises:
            TimeoutError: nothing within *timeout* seconds.
            ProxyConnectionError: the proxy closed the control connection.
        """
        ends = None if timeout is None else time.monotonic() + timeout
        while True:
            ready = self._selector.select(None if ends is None else max(0.0, ends - time.monotonic()))
            if not ready:
                raise TimeoutError(f"no datagram from the relay within {timeout} s")
            for key, _ in ready:
                if key.fileobj is self.control:
                    self._check_control()
                    continue
                try:
                    packet, source = self.udp.recvfrom(UDP_MAX)
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
                "the proxy closed the UDP association's control connection", proxy=self._plan.proxy.redacted()
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
    plan = AssociatePlan(proxy, timeout=timeout, pipelined=pipelined)
    link = Link(plan, nodelay=nodelay, keepalive=keepalive)
    link.run(plan.run())
    control, udp = link.stream, link.udp
    assert isinstance(control, socket.socket)
    assert udp is not None
    if (":" in plan.relay.host_str) != (udp.family == socket.AF_INET6):  # a relay of the other family
        udp.close()
        udp = socket.socket(socket.AF_INET6 if ":" in plan.relay.host_str else socket.AF_INET, socket.SOCK_DGRAM)
    control.settimeout(None)
    logger.debug("UDP association: relay %s", plan.relay)
    return UdpAssociation(control, udp, plan)

"""The trio runner: the operations of a client plan, performed on ``trio.abc.Stream``.

:class:`Link` owns one stream while a plan sets it up: the TCP
:class:`trio.SocketStream`, with a :class:`trio.SSLStream` layered on it for an
``https://`` proxy and for the target (TLS inside TLS needs nothing special: an
``SSLStream`` wraps any stream). Reads ask for exactly what the plan says, so
nothing after a final reply is read by the handshake.

One deadline covers the plan: a single :func:`trio.move_on_at` scope on the
plan's deadline (the plan runs on trio's clock), turned into the plan's
:meth:`~socks_sansio.ConnectPlan.timeout_error` when it fires. Cancellation
from outside is not caught; whatever was opened is closed.
"""

from __future__ import annotations

import logging
import ssl as _ssl
import sys
from collections.abc import Generator
from typing import Any, Final, final

import trio
import trio.socket as tsocket

from socks_sansio import Address, AssociatePlan, ConnectPlan, HandshakePlan, Stepper
from socks_sansio import client_operations as ops

from ._common import literal_sockaddr, logger, peer_ip

if sys.version_info < (3, 11):  # pragma: no cover - Python 3.10: trio's own dependency
    from exceptiongroup import ExceptionGroup

__all__ = ["IO_ERRORS", "Link", "resolve"]

IO_ERRORS: Final = (OSError, trio.BrokenResourceError)
"""What trio's I/O raises when a connection fails: the plans' ``io_errors``."""


@final
class Link:
    """The stream a plan drives, and how each of its operations is done on trio.

    Args:
        plan: the plan (on trio's clock: ``clock=trio.current_time``).
        tls: the target's TLS context (``StartTLS`` with ``to_proxy=False``).
        proxy_ssl: the context for ``https://`` proxies (default: the system's); those
            sessions are ``https_compatible`` (no ``close_notify`` needed), as HTTP proxies expect.
        nodelay, keepalive: socket options of the TCP connection.
        https_compatible: passed to the target's :class:`trio.SSLStream`.
        stream, socket_stream: an open connection to drive (a pooled one, BIND's).
    """

    __slots__ = (
        "https_compatible",
        "keepalive",
        "nodelay",
        "plan",
        "proxy_ssl",
        "socket_stream",
        "stream",
        "tls",
        "udp",
    )

    def __init__(
        self,
        plan: ConnectPlan | AssociatePlan | HandshakePlan,
        *,
        tls: _ssl.SSLContext | None = None,
        proxy_ssl: _ssl.SSLContext | None = None,
        nodelay: bool = True,
        keepalive: bool = True,
        https_compatible: bool = False,
        stream: trio.abc.Stream | None = None,
        socket_stream: trio.SocketStream | None = None,
    ) -> None:
        self.plan = plan
        self.tls = tls
        self.proxy_ssl = proxy_ssl
        self.nodelay = nodelay
        self.keepalive = keepalive
        self.https_compatible = https_compatible
        self.stream: trio.abc.Stream | None = stream
        self.socket_stream: trio.SocketStream | None = socket_stream
        self.udp: tsocket.SocketType | None = None

    async def run(self, steps: Generator[ops.Operation, Any, Any], *, close_on_error: bool = True) -> Any:
        """Perform every operation of *steps* under the plan's deadline; returns what the plan returned.

        Raises:
            ProxyTimeoutError: the deadline passed (the plan's :meth:`timeout_error`).
            Exception: what the plan raised. The stream is closed (unless not *close_on_error*).
        """
        deadline = self.plan.deadline.at
        try:
            with trio.move_on_at(float("inf") if deadline is None else deadline):
                return await Stepper(steps).arun(self.perform)
            raise self.plan.timeout_error()
        except BaseException:
            if close_on_error:
                await self.aclose()
            raise

    async def perform(self, operation: ops.Operation) -> object:
        """Do one operation (see :mod:`socks_sansio.client_operations`) and return its result."""
        stream = self.stream
        if isinstance(operation, ops.Receive):
            assert stream is not None
            return await stream.receive_some(operation.max_bytes)
        if isinstance(operation, ops.Send):
            assert stream is not None
            await stream.send_all(operation.data)
        elif isinstance(operation, ops.Dial):
            self.stream = self.socket_stream = await self._dial(operation.address)
        elif isinstance(operation, ops.StartTLS):
            assert stream is not None
            self.stream = await self._start_tls(stream, operation)
        elif isinstance(operation, ops.Resolve):
            return await resolve(operation)
        elif isinstance(operation, ops.PeerAddress):
            assert self.socket_stream is not None
            return peer_ip(self.socket_stream.socket.getpeername())
        elif isinstance(operation, ops.OpenDatagram):
            return await self._open_datagram()
        elif isinstance(operation, ops.Sleep):
            await trio.sleep(operation.seconds)
        else:
            await self.aclose()  # ops.Close
        return None

    async def _dial(self, address: Address) -> trio.SocketStream:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("trio: connecting to %s", address)
        stream = await _open_tcp_stream(address)
        try:
            if not self.nodelay:  # trio.SocketStream has set TCP_NODELAY already
                stream.setsockopt(tsocket.IPPROTO_TCP, tsocket.TCP_NODELAY, False)
            stream.setsockopt(tsocket.SOL_SOCKET, tsocket.SO_KEEPALIVE, self.keepalive)
        except OSError:
            await trio.aclose_forcefully(stream)
            raise
        return stream

    async def _start_tls(self, stream: trio.abc.Stream, operation: ops.StartTLS) -> trio.SSLStream[trio.abc.Stream]:
        if operation.to_proxy:
            context = self.proxy_ssl if self.proxy_ssl is not None else _ssl.create_default_context()
            https_compatible = True
        else:
            assert self.tls is not None
            context, https_compatible = self.tls, self.https_compatible
        tls = trio.SSLStream(
            stream, context, server_hostname=operation.server_hostname, https_compatible=https_compatible
        )
        await tls.do_handshake()
        return tls

    async def _open_datagram(self) -> Address:
        assert self.socket_stream is not None
        control = self.socket_stream.socket
        udp = self.udp = tsocket.socket(control.family, tsocket.SOCK_DGRAM)
        await udp.bind((control.getsockname()[0], 0))
        host, port = udp.getsockname()[:2]
        return Address(peer_ip((host,)), port)

    async def aclose(self) -> None:
        """Close the stream (every layer) and the UDP socket, even when cancelled."""
        if self.udp is not None:
            self.udp.close()
            self.udp = None
        stream, self.stream, self.socket_stream = self.stream, None, None
        if stream is not None:
            await trio.aclose_forcefully(stream)


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


async def resolve(operation: ops.Resolve) -> Address:
    """A plan's :class:`~socks_sansio.client_operations.Resolve`, with trio's resolver."""
    family = {4: tsocket.AF_INET, 6: tsocket.AF_INET6}.get(operation.family, tsocket.AF_UNSPEC)
    kind = tsocket.SOCK_DGRAM if operation.datagram else tsocket.SOCK_STREAM
    infos = await tsocket.getaddrinfo(operation.host, operation.port, family=family, type=kind)
    if not infos:  # getaddrinfo raises instead, in practice
        raise OSError(f"no address found for {operation.host}")
    return Address(peer_ip(infos[0][4]), operation.port)

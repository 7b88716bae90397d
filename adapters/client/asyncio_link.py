"""The asyncio runner: the operations of a client plan, performed with asyncio transports.

:class:`Link` owns one connection while a plan sets it up: a
:class:`asyncio.StreamReader` fed by the current transport (TCP, or the last TLS
layered on it with :meth:`asyncio.AbstractEventLoop.start_tls`). Reads never ask
for more than ``Receive.max_bytes``, so the octets a proxy sends with (or right
after) its final reply stay in the reader's buffer: the reader is handed to the
application as it is, or its buffer is passed to a new protocol first.

We call the loop's ``start_tls`` rather than ``StreamWriter.start_tls``: it
exists on Python 3.10 too, and no ``StreamWriter`` has to exist during the
handshake (a discarded one closes its transport when garbage-collected). TLS
over a TLS transport needs the ``sslproto`` rewrite of Python 3.11; on 3.10
that one case raises a clear error.

One deadline covers the plan: :meth:`Link.run` runs it under
:func:`asyncio.timeout` (3.11+) or :func:`asyncio.wait_for` (3.10) and, when it
passes, raises the plan's :meth:`~socks_sansio.ConnectPlan.timeout_error`,
naming the step under way; a cancellation by the caller still propagates as
:class:`asyncio.CancelledError`. On any failure the connection is aborted.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl as _ssl
import sys
from collections.abc import Generator
from typing import Any, Final, final

from socks_sansio import Address, AssociatePlan, ConnectPlan, HandshakePlan, Stepper, unwrap_relay_datagram
from socks_sansio import client_operations as ops

from ._common import logger, peer_ip

__all__ = ["STREAM_LIMIT", "DatagramReceiver", "Link", "StreamProtocol", "resolve"]

STREAM_LIMIT: Final = 2**16
"""The default ``limit`` of a StreamReader, as in :func:`asyncio.open_connection`."""

_TLS_IN_TLS: Final = sys.version_info >= (3, 11)
_UDP_QUEUE_SIZE: Final = 1024
"""Datagrams kept for ``recvfrom()``; more are dropped (UDP may drop anyway)."""


class StreamProtocol(asyncio.StreamReaderProtocol):
    """A StreamReaderProtocol that remembers whether the peer sent EOF (or anything) and knows when TLS runs on top.

    The EOF flag lets ``create_connection`` pass a peer's EOF on to the new
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
class DatagramReceiver(asyncio.DatagramProtocol):
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
class Link:
    """The connection a plan drives, and how each of its operations is done on asyncio.

    Args:
        plan: the plan (its deadline bounds :meth:`run`).
        tls: the target's TLS context (``StartTLS`` with ``to_proxy=False``).
        proxy_ssl: the context for ``https://`` proxies (default: the system's).
        nodelay, keepalive: socket options of the TCP connection.
        limit: the StreamReader's buffer limit.
    """

    __slots__ = (
        "datagrams",
        "keepalive",
        "limit",
        "nodelay",
        "plan",
        "protocol",
        "proxy_ssl",
        "raw",
        "reader",
        "tls",
        "transport",
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
        limit: int = STREAM_LIMIT,
    ) -> None:
        self.plan = plan
        self.tls = tls
        self.proxy_ssl = proxy_ssl
        self.nodelay = nodelay
        self.keepalive = keepalive
        self.limit = limit
        self.reader: asyncio.StreamReader | None = None
        self.protocol: StreamProtocol | None = None
        self.transport: Any = None  # the top layer: the TCP transport, or the last TLS layered on it
        self.raw: Any = None  # the TCP transport
        self.udp: asyncio.DatagramTransport | None = None
        self.datagrams: DatagramReceiver | None = None

    def adopt(self, other: Link) -> None:
        """Take over *other*'s connection (a pooled one): this link drives it from now on."""
        self.reader, self.protocol, self.transport, self.raw = other.reader, other.protocol, other.transport, other.raw

    async def run(self, steps: Generator[ops.Operation, Any, Any], *, abort_on_error: bool = True) -> Any:
        """Perform every operation of *steps* under the plan's deadline; returns what the plan returned.

        Raises:
            ProxyTimeoutError: the deadline passed (the plan's :meth:`timeout_error`).
            Exception: what the plan raised. The connection is aborted (unless not *abort_on_error*).
        """
        stepper: Stepper[ops.Operation, Any] = Stepper(steps)
        remaining = self.plan.remaining()
        try:
            if remaining is None:
                return await stepper.arun(self.perform)
            if sys.version_info >= (3, 11):
                scope = asyncio.timeout(remaining)
                try:
                    async with scope:
                        return await stepper.arun(self.perform)
                except TimeoutError as exc:
                    if not scope.expired():
                        raise  # an OSError time-out thrown out of the plan, not our deadline
                    raise self.plan.timeout_error() from exc
            else:  # pragma: no cover - Python 3.10
                try:
                    return await asyncio.wait_for(stepper.arun(self.perform), remaining)
                except asyncio.TimeoutError as exc:
                    raise self.plan.timeout_error() from exc
        except BaseException:
            if abort_on_error:
                self.abort()
            raise

    async def perform(self, operation: ops.Operation) -> object:
        """Do one operation (see :mod:`socks_sansio.client_operations`) and return its result."""
        if isinstance(operation, ops.Receive):
            assert self.reader is not None
            return await self.reader.read(operation.max_bytes)
        if isinstance(operation, ops.Send):
            self.transport.write(operation.data)
        elif isinstance(operation, ops.Dial):
            await self._dial(operation.address)
        elif isinstance(operation, ops.StartTLS):
            await self._start_tls(operation)
        elif isinstance(operation, ops.Resolve):
            return await resolve(operation)
        elif isinstance(operation, ops.PeerAddress):
            return peer_ip(self.transport.get_extra_info("peername"))
        elif isinstance(operation, ops.OpenDatagram):
            return await self._open_datagram()
        elif isinstance(operation, ops.Sleep):
            await asyncio.sleep(operation.seconds)
        else:
            self.abort()  # ops.Close
        return None

    async def _dial(self, address: Address) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=self.limit)
        protocol = StreamProtocol(reader)
        transport, _ = await loop.create_connection(lambda: protocol, address.host_str, address.port)
        self.reader, self.protocol, self.transport, self.raw = reader, protocol, transport, transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(self.nodelay))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, int(self.keepalive))

    async def _start_tls(self, operation: ops.StartTLS) -> None:
        protocol = self.protocol
        assert protocol is not None
        if protocol.tls and not _TLS_IN_TLS:
            raise NotImplementedError("TLS inside TLS needs Python 3.11 or later (asyncio's start_tls over TLS)")
        if operation.to_proxy:
            context = self.proxy_ssl or _ssl.create_default_context()
        else:
            assert self.tls is not None
            context = self.tls
        loop = asyncio.get_running_loop()
        transport = await loop.start_tls(self.transport, protocol, context, server_hostname=operation.server_hostname)
        if transport is None:  # only when the loop is closing
            raise ConnectionError("the event loop closed during the TLS handshake")
        self.transport = transport
        protocol.tls = True

    async def _open_datagram(self) -> Address:
        loop = asyncio.get_running_loop()
        receiver = self.datagrams = DatagramReceiver()
        local_ip = peer_ip(self.transport.get_extra_info("sockname"))
        udp, _ = await loop.create_datagram_endpoint(lambda: receiver, local_addr=(local_ip, 0))
        self.udp = udp
        return Address(local_ip, int(udp.get_extra_info("sockname")[1]))

    def writer(self) -> asyncio.StreamWriter:
        """A StreamWriter over the current transport (the connection is the application's from now on)."""
        assert self.reader is not None
        assert self.protocol is not None
        return asyncio.StreamWriter(self.transport, self.protocol, self.reader, asyncio.get_running_loop())

    def abort(self) -> None:
        """Abort the connection (every layer) and close the UDP socket, if any."""
        if self.transport is not None:
            self.transport.abort()
            self.raw.abort()
        if self.udp is not None:
            self.udp.close()


async def resolve(operation: ops.Resolve) -> Address:
    """A plan's :class:`~socks_sansio.client_operations.Resolve`, with the loop's resolver."""
    family = {4: socket.AF_INET, 6: socket.AF_INET6}.get(operation.family, socket.AF_UNSPEC)
    kind = socket.SOCK_DGRAM if operation.datagram else socket.SOCK_STREAM
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(operation.host, operation.port, family=family, type=kind)
    return Address(peer_ip(infos[0][4]), operation.port)

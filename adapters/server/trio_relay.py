"""The trio server's I/O for one client: the session's operations, the relay, the UDP association.

:class:`Connection` performs each operation a
:class:`~socks_sansio.ServerSession` yields on the client's stream (a TCP
stream, or TLS over it) and holds what it opened: the upstream stream, BIND's
listener, UDP's socket. Time bounds are cancel scopes; when one fires, a
``TimeoutError`` is thrown into the session.

:class:`Pump` copies each direction of a tunnel in its own task over any two
:class:`trio.abc.Stream` objects. When both ends are half-closeable it passes
half-close through (``send_eof``); TLS has no half-close, so when either end
is TLS an EOF from either side ends the whole tunnel, once every chunk already
read is written out. Each chunk is reported to the session, which counts it
and says how long a byte rate limit pauses that direction (``trio.sleep``,
that direction's task only); traffic and pauses push the idle deadline back.

:func:`relay_datagrams` runs a UDP association as its
:class:`~socks_sansio.UdpRelayPolicy` decides.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
from typing import Any, Final

import trio

from socks_sansio import ServerSession, Stepper, UdpDatagram, UdpRelayPolicy
from socks_sansio import server_operations as sops

from ..client import trio as client

__all__ = ["STREAM_ERRORS", "Connection", "Pump", "error_name", "receive", "relay_datagrams", "write_quietly"]

READ: Final = 65536
_UDP_READ: Final = 65535
# Stream failures: trio wraps socket errors in BrokenResourceError; raw sockets raise OSError.
STREAM_ERRORS: Final = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)
_CREDENTIAL_CHECKS: Final = trio.CapacityLimiter(4)


def error_name(exc: BaseException) -> str:
    """The name logged for a stream error: the socket error behind trio's wrapper when there is one."""
    cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else None
    return type(cause if cause is not None else exc).__name__


def _is_ragged_eof(exc: BaseException) -> bool:
    """Whether *exc* is a TLS peer closing TCP without ``close_notify`` (trio's test, Python 3.10 quirk included)."""
    cause = exc.__cause__
    return isinstance(cause, ssl.SSLEOFError) or "UNEXPECTED_EOF_WHILE_READING" in str(cause)


async def receive(stream: trio.abc.Stream, size: int) -> bytes | bytearray:
    """``stream.receive_some(size)``, with a TLS peer's missing ``close_notify`` read as a plain EOF."""
    try:
        return await stream.receive_some(size)
    except trio.BrokenResourceError as exc:
        if isinstance(stream, trio.SSLStream) and _is_ragged_eof(exc):
            return b""
        raise


async def write_quietly(stream: trio.abc.Stream, data: bytes) -> None:
    """Write *data*, ignoring a broken connection (a refusal right before closing)."""
    if not data:
        return
    with contextlib.suppress(*STREAM_ERRORS):
        await stream.send_all(data)


async def resolve(operation: sops.Resolve) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """A session's :class:`~socks_sansio.server_operations.Resolve`, with trio's resolver, within its timeout."""
    try:
        with trio.fail_after(operation.timeout):
            infos = await trio.socket.getaddrinfo(operation.host, operation.port, type=socket.SOCK_STREAM)
    except trio.TooSlowError:
        raise TimeoutError("name resolution timed out") from None
    return [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos]


def _local_address(stream: trio.abc.Stream) -> tuple[str, int]:
    """Our address on the TCP connection under *stream* (through TLS and prefix layers); 0.0.0.0:0 if none."""
    layer: object = stream
    while not isinstance(layer, trio.SocketStream):
        layer = getattr(layer, "transport_stream", None)
        if layer is None:
            return ("0.0.0.0", 0)
    host, port = layer.socket.getsockname()[:2]
    return str(host).partition("%")[0], int(port)


class Connection:
    """One client's connection and what the session opened for it.

    Args:
        stream: the client stream (TLS over *connection*, or *connection* itself).
        connection: the client's TCP stream.
        credentials: checks a user's credentials (``ServerConfig.check_credentials``), run in a thread.
        upstream_ssl: the context for ``https://`` upstreams.
    """

    def __init__(
        self, stream: trio.abc.Stream, connection: trio.SocketStream, *, credentials: Any, upstream_ssl: Any
    ) -> None:
        self.stream = stream
        self.connection = connection
        self._credentials = credentials
        self._upstream_ssl = upstream_ssl
        self.upstream: trio.abc.Stream | None = None
        self.udp: trio.socket.SocketType | None = None
        self.early = bytearray()  # what the client sent while BIND waited: for the peer

    async def run(self, session: ServerSession) -> object:
        """Perform the session's operations; returns what it hands over (an Outcome, a relay)."""
        return await Stepper(session.run()).arun(self.perform)

    async def perform(self, operation: sops.ServerOperation) -> object:
        """Do one operation (see :mod:`socks_sansio.server_operations`) and return its result."""
        if isinstance(operation, sops.Receive):
            with trio.move_on_at(float("inf") if operation.deadline is None else operation.deadline):
                return await receive(self.stream, READ)
            raise TimeoutError("the negotiation timed out")
        if isinstance(operation, sops.Send):
            if operation.quiet:
                await write_quietly(self.stream, operation.data)
            else:
                await self.stream.send_all(operation.data)
            return None
        if isinstance(operation, sops.CheckCredentials):
            with trio.move_on_at(float("inf") if operation.deadline is None else operation.deadline):
                return await trio.to_thread.run_sync(
                    self._credentials, operation.username, operation.password, limiter=_CREDENTIAL_CHECKS
                )
            raise TimeoutError("the negotiation timed out")
        if isinstance(operation, sops.Resolve):
            return await resolve(operation)
        if isinstance(operation, sops.Dial):
            return await self._dial(operation)
        if isinstance(operation, sops.DialUpstream):
            target = operation.target
            self.upstream = await client.open_tcp_stream(
                target.host_str, target.port, proxy=operation.chain, timeout=operation.timeout,
                proxy_ssl=self._upstream_ssl,
            )  # fmt: skip
            return _local_address(self.upstream)
        if isinstance(operation, sops.Listen):
            return await self._listen()
        if isinstance(operation, sops.AwaitPeer):
            return await self._await_peer(operation.timeout)
        if isinstance(operation, sops.SendUpstream):
            assert self.upstream is not None
            await self.upstream.send_all(operation.data)
            return None
        if isinstance(operation, sops.ReceiveUpstream):
            assert self.upstream is not None
            with trio.move_on_at(float("inf") if operation.deadline is None else operation.deadline):
                return await receive(self.upstream, READ)
            raise TimeoutError("the upstream did not answer in time")
        if isinstance(operation, sops.CloseUpstream):
            upstream, self.upstream = self.upstream, None
            if upstream is not None:
                await trio.aclose_forcefully(upstream)
            return None
        if isinstance(operation, sops.Pause):
            await trio.sleep(operation.seconds)
            return None
        return await self._open_datagram()

    async def _dial(self, operation: sops.Dial) -> tuple[tuple[str, int], tuple[str, int]]:
        error: BaseException = OSError("no address")
        deadline = trio.current_time() + operation.timeout  # one deadline for every address
        for address, port in operation.addresses:
            family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            sock = trio.socket.socket(family, socket.SOCK_STREAM)
            try:
                with trio.fail_at(max(deadline, trio.current_time() + 0.001)):
                    await sock.connect((str(address), port))
            except trio.TooSlowError:
                sock.close()
                error = TimeoutError("connect timed out")
                continue
            except OSError as exc:
                sock.close()
                error = exc
                continue
            except BaseException:
                sock.close()
                raise
            self.upstream = trio.SocketStream(sock)  # sets TCP_NODELAY
            return _local_address(self.upstream), (str(address), port)
        raise error

    async def _listen(self) -> tuple[str, int]:
        sock = self.connection.socket
        listener = self._listener = trio.socket.socket(sock.family, socket.SOCK_STREAM)
        await listener.bind((sock.getsockname()[0], 0))
        listener.listen(1)
        host, port = listener.getsockname()[:2]
        return str(host), int(port)

    async def _await_peer(self, timeout: float) -> tuple[str, int] | None:
        """BIND: the peer, or ``None`` when the client leaves first; what the client sends meanwhile is kept."""
        accepted: tuple[trio.socket.SocketType, Any] | None = None
        client_left = False

        async def wait_for_peer() -> None:
            nonlocal accepted
            accepted = await self._listener.accept()
            race.cancel_scope.cancel()

        async def watch_client() -> None:
            nonlocal client_left
            with contextlib.suppress(*STREAM_ERRORS):
                while data := await receive(self.stream, READ):
                    self.early.extend(data)
            client_left = True
            race.cancel_scope.cancel()

        try:
            async with trio.open_nursery() as race:
                race.cancel_scope.deadline = trio.current_time() + timeout
                race.start_soon(wait_for_peer)
                race.start_soon(watch_client)
        finally:
            self._listener.close()  # BIND accepts exactly one connection
        if accepted is None:
            if client_left:
                return None
            raise TimeoutError("no peer connected")
        sock, peer = accepted
        self.upstream = trio.SocketStream(sock)
        return str(peer[0]).partition("%")[0], int(peer[1])

    async def _open_datagram(self) -> tuple[str, int]:
        sock = self.connection.socket
        udp = self.udp = trio.socket.socket(sock.family, socket.SOCK_DGRAM)
        await udp.bind((sock.getsockname()[0], 0))
        host, port = udp.getsockname()[:2]
        return str(host), int(port)

    def close(self) -> None:
        """Close what the session opened (not the client's streams), without waiting."""
        if self.udp is not None:
            self.udp.close()
        listener = getattr(self, "_listener", None)
        if listener is not None:
            listener.close()


class Pump:
    """One relay's two copying directions, their shared idle deadline and how an EOF ends them.

    With *half_close* (both ends plain TCP) an EOF is passed on with
    ``send_eof`` and the other direction goes on. Otherwise (TLS at either end)
    the first EOF ends the tunnel: the other direction finishes writing the
    chunk it holds, if any, and its pending read (or rate-limit pause) is cancelled.
    """

    def __init__(self, session: ServerSession, idle_timeout: float, size: int, *, half_close: bool) -> None:
        self.session = session
        self.idle_timeout = idle_timeout
        self.size = size
        self.half_close = half_close
        self.idle = trio.CancelScope(deadline=trio.current_time() + idle_timeout)
        self.errors: list[BaseException] = []
        self.done = False
        self.pauses = [0.0, 0.0]  # each direction's rate-limit pause, taken before its next read
        self._reads = [trio.CancelScope(), trio.CancelScope()]

    def moved(self, index: int, nbytes: int) -> None:
        """*nbytes* went out in direction *index* (0: up): report them, push the idle deadline back.

        A rate-limit pause is activity: the idle time-out counts from its end.
        """
        now = trio.current_time()
        pause = self.pauses[index] = self.session.moved(index == 0, nbytes, now)
        self.idle.deadline = max(self.idle.deadline, now + pause + self.idle_timeout)

    async def copy(self, source: trio.abc.Stream, sink: trio.abc.Stream, index: int) -> None:
        """Copy *source* to *sink* until EOF; traffic pushes the idle deadline back."""
        try:
            while not self.done:
                data: bytes | bytearray = b""
                self._reads[index] = reading = trio.CancelScope()
                with reading:
                    if self.pauses[index] > 0:
                        await trio.sleep(self.pauses[index])  # this direction only: the rest of the loop goes on
                        self.pauses[index] = 0.0
                    data = await receive(source, self.size)
                if not data:
                    break
                await sink.send_all(data)
                self.moved(index, len(data))
        except STREAM_ERRORS as exc:
            self.errors.append(exc)
            self.idle.cancel()  # ends the other direction too
            return
        await self.ended(sink)

    async def ended(self, sink: trio.abc.Stream) -> None:
        """The side opposite *sink* sent EOF: half-close *sink*, or end the whole tunnel."""
        if self.half_close and isinstance(sink, trio.abc.HalfCloseableStream):
            with contextlib.suppress(*STREAM_ERRORS):
                await sink.send_eof()
            return
        self.done = True
        for reading in self._reads:
            reading.cancel()


async def relay_datagrams(policy: UdpRelayPolicy, udp: trio.socket.SocketType, nursery: trio.Nursery) -> None:
    """Receive datagrams until cancelled; a client's datagram to a name is resolved in its own task."""
    ipv6 = udp.family == socket.AF_INET6
    while True:
        try:
            data, source = await udp.recvfrom(_UDP_READ)
        except OSError:
            continue  # e.g. an ICMP error reported on the socket: not fatal for the association
        decision = policy.received(data, source)
        if isinstance(decision, tuple):
            if await _sendto_quietly(udp, decision[0], decision[1]):
                policy.sent(False, len(data))
        elif decision is not None:
            nursery.start_soon(_forward, policy, decision, udp, ipv6)


async def _forward(policy: UdpRelayPolicy, datagram: UdpDatagram, udp: trio.socket.SocketType, ipv6: bool) -> None:
    destination = await Stepper(policy.destination(datagram, ipv6=ipv6)).arun(resolve)
    if destination is not None and await _sendto_quietly(udp, datagram.data, destination):
        policy.sent(True, len(datagram.data))


async def _sendto_quietly(udp: trio.socket.SocketType, data: bytes, address: tuple[str, int]) -> bool:
    try:
        await udp.sendto(data, address)
    except OSError:
        return False
    return True


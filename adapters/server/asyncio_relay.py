"""The asyncio server's relays: protocols that move a tunnel's bytes, and its UDP association.

Once a tunnel is up, both transports are handed to :class:`RelaySide`
protocols (``transport.set_protocol``), which receive into one buffer shared by
the whole server and write straight to the other transport, with the
transports' own flow control (a full write buffer pauses reading on the other
side). Each direction passes half-close through: an EOF from one side shuts
down the other side's write half, and the tunnel ends when both directions are
done, on an error, or when idle (the tunnel's timer). Every chunk is reported
to the session (:meth:`~socks_sansio.ServerSession.moved`), which counts it and
says how long a byte rate limit pauses that direction (a timer, never a
blocking wait).

Before the relay starts, an upstream connection's protocol is a
:class:`Pending` (it keeps what arrives, bounded, and the EOF); BIND's
listener makes :class:`BindPeer` ones. :class:`SplicedTunnel` reports a
``splice()`` relay's progress the same way. :class:`UdpRelay` relays a UDP
association's datagrams as its :class:`~socks_sansio.UdpRelayPolicy` decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from socks_sansio import Outcome, OutcomeKind, Stepper, UdpDatagram, UdpRelayPolicy
from socks_sansio import server_operations as sops

from .splice import SpliceRelay

if TYPE_CHECKING:
    from .asyncio_client import Client as _Client

__all__ = [
    "BindPeer",
    "Pending",
    "RelaySide",
    "SplicedTunnel",
    "UdpRelay",
    "lookup",
    "resolve",
    "splice_now",
    "start_splice",
    "take_buffered",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


async def lookup(operation: sops.Resolve) -> list[IPAddress]:
    """A session's :class:`~socks_sansio.server_operations.Resolve`, with the loop's resolver; the caller bounds it."""
    infos = await asyncio.get_running_loop().getaddrinfo(operation.host, operation.port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos]


async def resolve(operation: sops.Resolve) -> list[IPAddress]:
    """:func:`lookup` within the operation's timeout (a ``TimeoutError`` when it passes)."""
    try:
        return await asyncio.wait_for(lookup(operation), operation.timeout)
    except asyncio.TimeoutError as exc:  # not yet the builtin TimeoutError on Python 3.10
        raise TimeoutError("name resolution timed out") from exc


class Pending(asyncio.Protocol):
    """An upstream connection's protocol until the relay starts: keeps what arrives (bounded) and EOF.

    HTTP forwarding reads the upstream through it for the connection's life:
    ``waiter`` is called whenever something arrives (octets, EOF, the end).
    """

    __slots__ = ("data", "eof", "error", "limit", "lost", "transport", "waiter")

    def __init__(self, limit: int) -> None:
        self.transport: Any = None
        self.data = bytearray()
        self.eof = self.lost = False
        self.error: Exception | None = None
        self.limit = limit
        self.waiter: Callable[[], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data
        if len(self.data) > self.limit:
            self.transport.pause_reading()
        if self.waiter is not None:
            self.waiter()

    def eof_received(self) -> bool:
        self.eof = True
        if self.waiter is not None:
            self.waiter()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.error = exc
        if self.waiter is not None:
            self.waiter()

    def take(self) -> bytes | None:
        """What a ``ReceiveUpstream`` gets now: octets, ``b""`` at the end, ``None`` to wait.

        Raises:
            Exception: the error the connection ended with.
        """
        if self.data:
            data, self.data = bytes(self.data), bytearray()
            with contextlib.suppress(RuntimeError):
                self.transport.resume_reading()
            return data
        if self.lost and self.error is not None:
            raise self.error
        if self.eof or self.lost:
            return b""
        return None


class BindPeer(Pending):
    """A connection to BIND's listener: the first one is the peer, any other is refused."""

    __slots__ = ("client",)

    def __init__(self, client: _Client, limit: int) -> None:
        super().__init__(limit)
        self.client = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self.client.peer_arrived(self):
            cast(asyncio.Transport, transport).abort()


class RelaySide(asyncio.BufferedProtocol):
    """The protocol of one end of a tunnel: what it receives goes to the other end's transport.

    Its transport reads while nothing holds it: not ``held`` (the other end's
    write buffer is full) and not ``throttled`` (a byte rate limit's pause runs).
    """

    __slots__ = ("done", "held", "peer", "shared", "throttled", "tls", "transport", "tunnel", "upward")

    def __init__(self, transport: Any, tunnel: _Client, upward: bool, shared: list[memoryview]) -> None:
        self.transport = transport  # a selector socket transport, or a TLS one
        self.tunnel = tunnel
        self.upward = upward  # True: this is the client's end (its bytes go up to the target)
        self.shared = shared
        self.peer: RelaySide = self
        self.done = False  # this direction ended (EOF received)
        self.held = False  # the other end's write buffer is full
        self.throttled: asyncio.TimerHandle | None = None  # a rate limit's pause: resumes reading when it fires
        self.tls = transport.get_extra_info("sslcontext") is not None

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.shared[0]  # the server's one buffer: idle tunnels hold none

    def buffer_updated(self, nbytes: int) -> None:
        """*nbytes* arrived on this end: write them to the other end and report them (count, byte limits)."""
        sink = self.peer.transport
        sink.write(self.shared[0][:nbytes])
        if sink.get_write_buffer_size():  # the transport may keep a reference to it: never reuse
            self.shared[0] = memoryview(bytearray(len(self.shared[0])))
        tunnel = self.tunnel
        now = tunnel.last = tunnel.loop.time()
        session = tunnel.session
        pause = session.moved(self.upward, nbytes, now)
        if pause > 0:
            self._throttle(pause, now)
        elif tunnel.splice_at is not None and session.up + session.down >= tunnel.splice_at:
            splice_now(tunnel, self.peer if self.upward else self)

    def _throttle(self, pause: float, now: float) -> None:
        """Stop reading this end for *pause* seconds (a byte rate limit); the tunnel is not idle meanwhile."""
        tunnel = self.tunnel
        tunnel.last = max(tunnel.last, now + pause)  # the idle time-out counts from the end of the pause
        if self.throttled is not None:
            self.throttled.cancel()
        self.throttled = tunnel.loop.call_later(pause, self._unthrottle)
        with contextlib.suppress(RuntimeError):
            self.transport.pause_reading()

    def _unthrottle(self) -> None:
        self.throttled = None
        self.resume()

    def resume(self) -> None:
        """Read again unless something still holds this end (or it is done)."""
        if self.done or self.held or self.throttled is not None:
            return
        with contextlib.suppress(RuntimeError):
            self.transport.resume_reading()

    def eof_received(self) -> bool:
        sink = self.peer.transport
        with contextlib.suppress(OSError, RuntimeError):
            if not sink.is_closing():
                if sink.can_write_eof():
                    sink.write_eof()  # half-close passes through
                else:
                    sink.close()  # TLS has no half-close: flush, close_notify, and the tunnel ends
        self.done = True
        if self.peer.done:
            self.tunnel.finish(Outcome(OutcomeKind.OK))
        return not self.tls  # keep the other direction open; a TLS transport closes itself anyway

    def connection_lost(self, exc: Exception | None) -> None:
        if self.throttled is not None:
            self.throttled.cancel()
            self.throttled = None
        self.tunnel.finish(_relay_outcome(exc))

    def pause_writing(self) -> None:  # our write buffer is full: stop reading the other side
        self.peer.held = True
        with contextlib.suppress(RuntimeError):
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:  # the other side reads again, unless a rate limit's pause holds it
        self.peer.held = False
        self.peer.resume()


def _relay_outcome(exc: BaseException | None) -> Outcome:
    return Outcome(OutcomeKind.OK) if exc is None else Outcome(OutcomeKind.RELAY_ERROR, type(exc).__name__)


class SplicedTunnel:
    """The splice relay of one tunnel, reporting to the tunnel's :class:`_Client` record.

    Every delivery is reported to the session (counts) and to the record's
    ``last`` (the idle time-out), and the relay's end ends the tunnel once:
    ``ok`` when both directions passed their EOF on, ``relay error: ...`` on a
    socket error. The record's ``finish`` calls :meth:`close` (as its
    ``closer``) before it closes the transports, so the relay's dups and pipes
    go first and each descriptor is closed once.
    """

    __slots__ = ("counts", "done", "last", "relay", "tunnel")

    def __init__(self, tunnel: _Client) -> None:
        self.tunnel = tunnel
        self.counts = [0, 0]  # the relay's own counts (the session's are the ones reported)
        self.last = [0.0]
        self.relay: SpliceRelay | None = None
        self.done: asyncio.Future[None] = tunnel.loop.create_future()
        self.done.add_done_callback(self._ended)

    def delivered(self, direction: int, nbytes: int) -> float:
        """The relay's per-delivery hook: report *nbytes* (direction 0: client -> target); never pauses."""
        tunnel = self.tunnel
        now = tunnel.last = tunnel.loop.time()
        tunnel.session.moved(not direction, nbytes, now)  # no byte limit with splice: no pause
        return 0.0

    def _ended(self, done: asyncio.Future[None]) -> None:
        if done.cancelled():  # closed by the record: it is finishing already
            return
        self.tunnel.finish(_relay_outcome(done.exception()))

    def close(self) -> None:
        """Stop relaying and close the relay's descriptors (not the transports); idempotent."""
        self.done.cancel()
        if self.relay is not None:
            self.relay.close()


class UdpRelay(asyncio.DatagramProtocol):
    """Relays a UDP association's datagrams, as its :class:`~socks_sansio.UdpRelayPolicy` decides."""

    def __init__(self) -> None:
        self.policy: UdpRelayPolicy | None = None  # set when the session hands the association over
        self.transport: asyncio.DatagramTransport | None = None
        self.ipv6 = False
        self.pending: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Before Python 3.12 the loop's UDP transport does not derive from DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.ipv6 = transport.get_extra_info("socket").family == socket.AF_INET6

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        policy, transport = self.policy, self.transport
        if policy is None or transport is None:
            return  # not handed over yet: nobody was told this address
        decision = policy.received(data, addr)
        if isinstance(decision, tuple):
            transport.sendto(decision[0], decision[1])
            policy.sent(False, len(data))
        elif decision is not None:
            steps = Stepper(policy.destination(decision, ipv6=self.ipv6))
            operation = steps.send(None)
            if operation is None:  # an IP literal: no lookup
                self._send(decision, steps.value)
            else:
                task = asyncio.ensure_future(self._forward(decision, steps, operation))
                self.pending.add(task)
                task.add_done_callback(self.pending.discard)

    async def _forward(
        self, datagram: UdpDatagram, steps: Stepper[sops.Resolve, tuple[str, int] | None], operation: sops.Resolve
    ) -> None:
        try:
            found = await resolve(operation)
        except (OSError, UnicodeError) as exc:
            steps.throw(exc)
        else:
            steps.send(found)
        self._send(datagram, steps.value)

    def _send(self, datagram: UdpDatagram, destination: tuple[str, int] | None) -> None:
        if destination is not None and self.transport is not None and self.policy is not None:
            self.transport.sendto(datagram.data, destination)
            self.policy.sent(True, len(datagram.data))

    def close(self) -> None:
        for task in self.pending:
            task.cancel()
        if self.transport is not None:
            self.transport.close()


def take_buffered(reader: asyncio.StreamReader) -> bytes:
    """Bytes a StreamReader holds already, without waiting (the relay takes over its transport).

    asyncio has no public call for this; ``_buffer`` has been the StreamReader's
    buffer in every CPython since 3.4.
    """
    buffered = getattr(reader, "_buffer", None)
    if not isinstance(buffered, bytearray) or not buffered:
        return b""
    data = bytes(buffered)
    buffered.clear()
    return data


def splice_now(tunnel: _Client, upstream_side: RelaySide) -> None:
    """The copying relay passed ``splice_at`` octets: move this tunnel to splice when it can.

    Only between two chunks with both write buffers empty (queued bytes
    would be overtaken) and before either direction passed an EOF on; a
    buffer still draining means: try again after the next chunk.
    """
    client_side, upstream = upstream_side.peer, upstream_side.transport
    if client_side.done or upstream_side.done:
        tunnel.splice_at = None  # half-closed: the rest is short, and the copying relay knows the EOF
        return
    if tunnel.transport.get_write_buffer_size() or upstream.get_write_buffer_size():
        return
    tunnel.splice_at = None  # one attempt from here on
    start_splice(tunnel, upstream)  # nothing writes to the transports from now on: no flow control resumes them


def start_splice(
    tunnel: _Client,
    upstream: Any,
    early_up: bytes = b"",
    early_down: bytes = b"",
    client_eof: bool = False,
    target_eof: bool = False,
) -> bool:
    """Start a :class:`SpliceRelay` for *tunnel* if it can take one; False: copy (on) instead.

    It can when both transports are plain TCP with empty write buffers
    (:meth:`SpliceRelay.socket_of`) and descriptors are left for its dups.
    Both transports then stop reading for good; the early bytes and the EOFs
    already seen are the relay's to deliver first.
    """
    pipes = tunnel.server.pipes
    assert pipes is not None
    client_sock, target_sock = SpliceRelay.socket_of(tunnel.transport), SpliceRelay.socket_of(upstream)
    if client_sock is None or target_sock is None:
        return False
    spliced = SplicedTunnel(tunnel)
    try:
        spliced.relay = SpliceRelay(
            tunnel.loop, client_sock, target_sock, counts=spliced.counts, last=spliced.last, done=spliced.done,
            throttle=spliced.delivered, pipes=pipes,
        )  # fmt: skip
    except OSError:  # no descriptors left for its dups (EMFILE): the copying relay needs none
        spliced.done.cancel()
        return False
    tunnel.transport.pause_reading()  # for good: the relay reads the sockets from now on
    upstream.pause_reading()
    tunnel.closer = spliced.close  # finish() closes the relay before the transports
    tunnel.server.spliced += 1
    tunnel.last = tunnel.loop.time()
    tunnel.arm_idle()
    spliced.relay.start(early_up, early_down, client_eof=client_eof, target_eof=target_eof)
    return True

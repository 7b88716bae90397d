"""The asyncio server's runner for one client connection: its session's operations, from protocol callbacks.

:class:`Client` is the client transport's protocol until the relay starts,
then the tunnel's record the relay protocols report to (see
:mod:`.asyncio_relay`). It feeds the client's octets to the session as they
arrive, writes what the session sends, starts a task only for a slow step (a
credential check, a lookup, a dial, a listener, a UDP socket, a shared rate
limit), enforces each operation's time bound with one timer (kept, not
re-armed, while the next operation has the same deadline: the handshake's
reads share one), and hands the tunnel to the relay when the session says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final, cast

from socks_sansio import Command, Outcome, OutcomeKind, ServerSession, StartRelay, StartUdpRelay, Stepper
from socks_sansio import server_operations as sops

from ..client import asyncio as client
from .asyncio_relay import BindPeer, Pending, RelaySide, UdpRelay, lookup, start_splice, take_buffered

if TYPE_CHECKING:
    from .asyncio import ProxyServer

__all__ = ["Client"]

server_logger: Final = logging.getLogger("socks_sansio.server")

# What a client connection is waiting for (_Client.waiting).
_NOTHING: Final = 0  # the session runs a step (a task), or the relay runs
_DATA: Final = 1  # Receive: the client's next octets
_PEER: Final = 2  # AwaitPeer: BIND's peer
_UDP: Final = 3  # the UDP association: the client connection is the control channel
_UPSTREAM: Final = 4  # ReceiveUpstream: the origin's next octets (HTTP forwarding)
_DONE: Final = 5



class Client(asyncio.BufferedProtocol):
    """One client connection, from accept to the end of its tunnel: the session's runner, and the tunnel's record.

    It is the client transport's protocol until the relay starts, then only the
    record both relay protocols report to.
    """

    __slots__ = (
        "client_eof",
        "closer",
        "eof_given",
        "inbox",
        "keep",
        "last",
        "loop",
        "pending",
        "server",
        "session",
        "splice_at",
        "steps",
        "task",
        "timer",
        "timer_at",
        "transport",
        "udp",
        "upstream",
        "waiting",
    )

    def __init__(self, server: ProxyServer) -> None:
        self.server = server
        self.loop = cast(asyncio.AbstractEventLoop, server.loop)
        self.waiting = _NOTHING
        self.transport: Any = None  # a selector socket transport, or a TLS one: reading and writing
        self.upstream: Any = None  # the other end's transport, once dialled
        self.pending: Pending | None = None  # the other end's protocol until the relay starts
        self.session: ServerSession = cast(ServerSession, None)
        self.steps: Stepper[sops.ServerOperation, Any] = cast(Stepper[sops.ServerOperation, Any], None)
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at: float | None = None  # the deadline self.timer enforces (None: a Pause's or the idle timer)
        self.task: asyncio.Task[Any] | None = None
        self.last = 0.0
        self.inbox = bytearray()  # client octets the session has not asked for (after its request: for the relay)
        self.client_eof = False
        self.eof_given = False  # the session was given the client's EOF
        self.closer: Callable[[], None] | None = None  # BIND's listener, UDP's socket, the splice relay
        self.keep: object = None  # an upstream StreamWriter: dropping it would close its transport
        self.udp: UdpRelay | None = None
        self.splice_at: int | None = None  # relayed octets after which the copying relay moves to splice

    # -- the client transport's protocol, until the relay starts --------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = self.server
        self.transport = transport
        peer = transport.get_extra_info("peername") or ("0.0.0.0", 0)
        self.session = ServerSession(
            server.config, (str(peer[0]), int(peer[1])), stats=server.stats, limiter=server.limiter,
            metrics=server.metrics, clock=self.loop.time, outage=server.outage,
        )  # fmt: skip
        server.joined(self)
        self.steps = Stepper(self.session.run())
        self._advance(None)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.server.relay_buffer[0]  # copied out at once (the session keeps its own buffer)

    def buffer_updated(self, nbytes: int) -> None:
        data = self.server.relay_buffer[0][:nbytes]
        if self.waiting == _DATA:
            self._advance(bytes(data))
        elif self.waiting != _UDP:  # a control connection's octets mean nothing
            self.inbox += data
            if len(self.inbox) > self.server.config.buffer_size:
                self.transport.pause_reading()  # the rest waits in the kernel until the session or relay wants it

    def eof_received(self) -> bool:
        self.client_eof = True
        if self.waiting == _DATA and not self.inbox:
            self.eof_given = True
            self._advance(b"")
        elif self.waiting == _PEER:
            self._advance(None)  # the client left before BIND's peer came
        elif self.waiting == _UDP:
            self.finish(Outcome(OutcomeKind.OK))  # the association lives as long as the control connection
        return True  # we close when done (a TLS transport closes itself whatever we return)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.finish(Outcome(OutcomeKind.CONNECTION_ERROR, type(exc).__name__))
        elif self.waiting == _UDP:
            self.finish(Outcome(OutcomeKind.OK))
        elif self.waiting == _PEER:
            self._advance(None)
        else:
            self.finish(self.session.client_left())

    # -- the session's operations -------------------------------------------------------

    def _advance(self, result: object, error: BaseException | None = None) -> None:
        """Give the session the last operation's result; perform what it asks until it waits for something."""
        self.waiting = _NOTHING  # the timer stays until the next wait says whether its deadline still holds
        steps = self.steps
        try:
            operation = steps.send(result) if error is None else steps.throw(error)
            while operation is not None:
                if isinstance(operation, sops.Send):
                    self.transport.write(operation.data)
                    operation = steps.send(None)
                elif isinstance(operation, sops.Receive):
                    if self.inbox or (self.client_eof and not self.eof_given):
                        data, self.inbox = bytes(self.inbox), bytearray()
                        self.eof_given = not data
                        operation = steps.send(data)
                        continue
                    self.waiting = _DATA
                    self.transport.resume_reading()
                    self._time_out_at(operation.deadline)
                    return
                elif isinstance(operation, sops.SendUpstream):
                    self.upstream.write(operation.data)
                    operation = steps.send(None)
                elif isinstance(operation, sops.ReceiveUpstream):
                    assert self.pending is not None
                    arrived = self.pending.take()
                    if arrived is not None:
                        operation = steps.send(arrived)
                        continue
                    self.waiting = _UPSTREAM
                    self.pending.waiter = self._upstream_event
                    self._time_out_at(operation.deadline)
                    return
                elif isinstance(operation, sops.CloseUpstream):
                    if self.upstream is not None:
                        self.upstream.close()
                    self.upstream = self.pending = self.keep = None
                    operation = steps.send(None)
                elif isinstance(operation, sops.Pause):
                    self._time_out_at(None)
                    self.timer = self.loop.call_later(operation.seconds, self._paused)
                    return
                elif isinstance(operation, sops.AwaitPeer):
                    if self.client_eof:
                        operation = steps.send(None)
                        continue
                    self.waiting = _PEER  # what the client sends meanwhile is for the peer (the inbox)
                    self.transport.resume_reading()
                    self._time_out_at(self.loop.time() + operation.timeout)
                    return
                else:
                    self._start_step(operation)
                    return
        except Exception as exc:  # a bug in a session or here: report it, end the connection
            server_logger.error("error serving %s:%s", *self.session.client, exc_info=exc)
            self.finish(Outcome(OutcomeKind.INTERNAL_ERROR, type(exc).__name__))
            return
        self._time_out_at(None)
        self._handed_over(cast(Outcome | StartRelay | StartUdpRelay, steps.value))

    def _paused(self) -> None:
        """A Pause's time is up: the session goes on."""
        self.timer = None
        self._advance(None)

    def _upstream_event(self) -> None:
        """The upstream sent something (or ended) while the session waits for it."""
        pending = self.pending
        if self.waiting != _UPSTREAM or pending is None:
            return
        try:
            data = pending.take()
        except Exception as exc:
            pending.waiter = None
            self._advance(None, exc)
            return
        if data is not None:
            pending.waiter = None
            self._advance(data)

    def _time_out_at(self, deadline: float | None) -> None:
        """Bound the wait that starts now by *deadline* (``None``: unbounded); the timer is kept if it is the same."""
        timer = self.timer
        if timer is not None:
            if deadline is not None and deadline == self.timer_at:
                return  # e.g. the next read of the handshake: one deadline for all of them
            timer.cancel()
            self.timer = None
        if deadline is not None:
            self.timer = self.loop.call_at(deadline, self._expired)
        self.timer_at = deadline

    def _expired(self) -> None:
        """The operation under way ran out of time: cancel its task, tell the session."""
        self.timer = self.timer_at = None
        task, self.task = self.task, None
        if task is not None:
            task.remove_done_callback(self._step_done)
            task.cancel()
        self._advance(None, TimeoutError("the operation timed out"))

    def _start_step(self, operation: sops.ServerOperation) -> None:
        """A slow step: its own task; a time bound when it has one.

        The client's transport keeps reading meanwhile: what it sends waits in
        the inbox (bounded: :meth:`buffer_updated` pauses it past
        ``buffer_size``), its EOF or its loss is noted (a lost client cancels
        the step).
        """
        coroutine: Coroutine[Any, Any, object]
        timeout: float | None = None
        deadline: float | None = None
        if isinstance(operation, sops.CheckCredentials):
            coroutine = asyncio.to_thread(self.server.config.check_credentials, operation.username, operation.password)
            deadline = operation.deadline
        elif isinstance(operation, sops.Resolve):
            coroutine, timeout = lookup(operation), operation.timeout  # the step's timer bounds it
        elif isinstance(operation, sops.Dial):
            coroutine, timeout = self._dial(operation.addresses), operation.timeout
        elif isinstance(operation, sops.DialUpstream):
            coroutine = self._dial_upstream(operation)
        elif isinstance(operation, sops.Listen):
            coroutine = self._listen()
        elif isinstance(operation, sops.AdmitShared):
            assert self.server.rate_store is not None
            coroutine = self.server.rate_store.admit(operation.buckets, operation.timeout)
        else:
            coroutine = self._open_datagram()
        self._time_out_at(deadline if timeout is None else self.loop.time() + timeout)
        task = self.task = self.loop.create_task(coroutine)
        task.add_done_callback(self._step_done)

    def _step_done(self, task: asyncio.Task[Any]) -> None:
        if self.task is task:
            self.task = None
        if task.cancelled() or self.waiting == _DONE:
            return
        error = task.exception()
        self._advance(None if error is not None else task.result(), error)

    async def _dial(self, addresses: tuple[tuple[Any, int], ...]) -> tuple[tuple[str, int], tuple[str, int]]:
        error: BaseException = OSError("no address")
        for address, port in addresses:
            pending = Pending(self.server.config.buffer_size)
            try:
                transport, _ = await self.loop.create_connection(functools.partial(_same, pending), str(address), port)
            except OSError as exc:
                error = exc
                continue
            self.upstream, self.pending = transport, pending
            local, remote = transport.get_extra_info("sockname"), transport.get_extra_info("peername")
            return (str(local[0]), int(local[1])), (str(remote[0]), int(remote[1]))
        raise error

    async def _dial_upstream(self, operation: sops.DialUpstream) -> tuple[str, int]:
        config = self.server.config
        target = operation.target
        reader, writer = await client.open_connection(
            target.host_str, target.port, proxy=operation.chain, timeout=operation.timeout,
            proxy_ssl=self.server.upstream_ssl, limit=config.buffer_size,
        )  # fmt: skip
        self.keep = writer
        pending = Pending(config.buffer_size)
        pending.data += take_buffered(reader)
        pending.eof = reader.at_eof()
        pending.lost = writer.transport.is_closing()
        pending.error = reader.exception()
        pending.transport = transport = cast(asyncio.Transport, writer.transport)
        if not pending.lost:
            transport.set_protocol(pending)  # what arrives from now on is the session's (or the relay's)
            with contextlib.suppress(RuntimeError):
                transport.resume_reading()
        self.upstream, self.pending = transport, pending
        return cast(tuple[str, int], writer.get_extra_info("sockname")[:2])

    async def _listen(self) -> tuple[str, int]:
        local_ip = self.transport.get_extra_info("sockname")[0]
        limit = self.server.config.buffer_size
        listener = await self.loop.create_server(lambda: BindPeer(self, limit), host=local_ip, port=0, backlog=1)
        self.closer = listener.close
        return cast(tuple[str, int], listener.sockets[0].getsockname()[:2])

    def peer_arrived(self, peer: BindPeer) -> bool:
        """BIND's listener accepted *peer*: the first one while waiting is the peer, any other is refused."""
        if self.waiting != _PEER:
            return False
        if self.closer is not None:
            self.closer()  # BIND accepts exactly one connection
            self.closer = None
        self.upstream, self.pending = peer.transport, peer
        self._advance(cast(tuple[str, int], peer.transport.get_extra_info("peername")[:2]))
        return True

    async def _open_datagram(self) -> tuple[str, int]:
        local_ip = self.transport.get_extra_info("sockname")[0]
        relay = self.udp = UdpRelay()
        transport, _ = await self.loop.create_datagram_endpoint(lambda: relay, local_addr=(local_ip, 0))
        self.closer = relay.close
        return cast(tuple[str, int], transport.get_extra_info("sockname")[:2])

    # -- what the session hands over ----------------------------------------------------

    def _handed_over(self, value: Outcome | StartRelay | StartUdpRelay) -> None:
        if isinstance(value, Outcome):
            if value.kind is OutcomeKind.BUSY:
                self.transport.abort()  # refused at once: the server stays up for everyone else
            self.finish(value)
        elif isinstance(value, StartRelay):
            assert self.pending is not None
            self._start_relay(self.upstream, self.pending, value.early, value.client_eof)
        else:
            assert self.udp is not None
            self.udp.policy = value.policy
            self.inbox = bytearray()  # a control connection's octets mean nothing
            self.waiting = _UDP
            self.transport.resume_reading()
            if self.client_eof:
                self.finish(Outcome(OutcomeKind.OK))

    def _start_relay(self, upstream: Any, pending: Pending, early: bytes, client_eof: bool) -> None:
        """Hand both transports to relay protocols; deliver what either side sent before (and EOFs).

        This is the one place the relay starts: with splice() when :meth:`_splice`
        can (plain TCP both ways), else with the copying :class:`RelaySide` protocols.
        The client's transport reads until then: what it sent after the session's
        last read (the inbox) follows *early*, and its EOF counts if it came.
        """
        if self.inbox:
            early += bytes(self.inbox)
            self.inbox = bytearray()
        client_eof = client_eof or self.client_eof
        self.pending = None
        server, session = self.server, self.session
        self.last = self.loop.time()
        request = session.request
        may_splice = server.pipes is not None and request is not None and request.command is Command.CONNECT
        splice_after = server.config.splice_after if may_splice and not pending.lost else None
        if splice_after == 0 and start_splice(self, upstream, early, bytes(pending.data), client_eof, pending.eof):
            return  # the splice relay delivers (and reports) the early bytes itself
        if early:  # reported before anything: with byte limits, their debt slows the first reads
            session.moved(True, len(early), self.last)
        if pending.data:
            session.moved(False, len(pending.data), self.last)
        shared, limit = server.relay_buffer, 4 * server.config.buffer_size
        client_side = RelaySide(self.transport, self, True, shared)
        upstream_side = RelaySide(upstream, self, False, shared)
        client_side.peer, upstream_side.peer = upstream_side, client_side
        if splice_after and not (client_side.tls or upstream_side.tls):
            self.splice_at = splice_after
        for side in (client_side, upstream_side):
            side.transport.set_protocol(side)
            side.transport.set_write_buffer_limits(high=limit)
        if early:
            upstream.write(early)
        if pending.data:
            self.transport.write(pending.data)
            pending.data = bytearray()
        self.arm_idle()
        if client_eof:
            client_side.eof_received()  # read already: the client's transport reads no more
        else:
            self.transport.resume_reading()
        if pending.lost:
            upstream_side.connection_lost(pending.error)
        elif pending.eof:
            upstream_side.eof_received()
        elif self.waiting != _DONE:
            upstream.resume_reading()

    def arm_idle(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = None
        self.timer = self.loop.call_at(self.last + self.server.config.idle_timeout, self._idle_check)

    def _idle_check(self) -> None:
        self.timer = None
        if self.waiting == _DONE:
            return
        if self.last + self.server.config.idle_timeout <= self.loop.time():
            self.finish(Outcome(OutcomeKind.IDLE_TIMEOUT))
        else:
            self.arm_idle()

    def finish(self, outcome: Outcome) -> None:
        """The connection ends with *outcome*: close everything, and the session counts and logs it (once)."""
        if self.waiting == _DONE:
            return
        self.waiting = _DONE
        if self.timer is not None:
            self.timer.cancel()
            self.timer = self.timer_at = None
        task, self.task = self.task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        if self.closer is not None:
            self.closer()
            self.closer = None
        for transport in (self.transport, self.upstream):
            if transport is not None:
                with contextlib.suppress(OSError, RuntimeError):
                    transport.close()  # after flushing what was written
        pending = self.pending
        if pending is not None and pending.transport is not None and pending.transport is not self.upstream:
            pending.transport.close()  # BIND: a peer that came after the wait ended
        self.upstream = self.keep = self.pending = None
        self.steps.close()
        self.session.finish(outcome)
        self.server.left(self)


def _same(value: Pending) -> Pending:
    return value

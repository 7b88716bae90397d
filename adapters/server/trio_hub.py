"""The trio server's relay for plain-TCP tunnels: one task for all of them, over an epoll set of its own.

Strategy: a trio task blocked in a read costs about 2.5 KiB (the task, its
coroutine frames, trio's waiter records), so a tunnel relayed by a task per
direction costs over 5 KiB before it moves a byte. :class:`RelayHub` instead
keeps every plain-TCP tunnel of a server in one ``select.epoll`` set (Linux)
and waits, in one task, for that set's descriptor to become readable
(``trio.lowlevel.wait_readable``): an idle tunnel is then two sockets and two
small records, and no task. When the set has events, the hub reads each ready
socket into one buffer shared by every tunnel (``recv_into``) and writes it at
once to the other socket (non-blocking ``send``); only what the other socket
could not take is copied, and held until it is writable, while that direction
stops reading: the kernel's socket buffers do the flow control, as in the
asyncio server's relay. A round of events is handled without a checkpoint; a
few rounds in a row are polled before the hub goes back to trio, which lets
the other tasks run.

What it keeps from the stream relay (:class:`~.trio_relay.Pump`): an EOF is
passed through as ``shutdown(SHUT_WR)`` and the other direction goes on; the
tunnel ends when both directions ended (``ok``), at the first socket error
(``relay error``) or when no byte moved for the idle time-out (``idle
timeout``). Every chunk delivered is reported to the session
(:meth:`~socks_sansio.ServerSession.moved`), which counts it and says how long
a byte rate limit stops reading that direction; such a pause counts as
activity until it ends. Idle time-outs and pauses are entries of one heap of
timers, and the hub sleeps until the first one is due.

The hub owns a tunnel's sockets once :meth:`RelayHub.add` took them (it
detaches their descriptors from the trio sockets), closes them when the
tunnel ends and then reports the outcome. Cancelling the hub's task (the
server stopping) ends every tunnel it holds with ``cancelled``.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import logging
import math
import select
import socket
from collections.abc import Callable
from typing import Any, Final

import trio

from socks_sansio import Outcome, OutcomeKind, ServerSession

from .splice import PipePool, SpliceRelay

__all__ = ["RelayHub"]

server_logger: Final = logging.getLogger("socks_sansio.server")

_EPOLL: Final = hasattr(select, "epoll")
_IN: Final[int] = getattr(select, "EPOLLIN", 1)
_OUT: Final[int] = getattr(select, "EPOLLOUT", 4)
_READ_EVENTS: Final[int] = _IN | getattr(select, "EPOLLERR", 8) | getattr(select, "EPOLLHUP", 16)
_WRITE_EVENTS: Final[int] = _READ_EVENTS & ~_IN | _OUT
_MAX_EVENTS: Final = 256
# Rounds of events handled back to back before the hub lets the other tasks run.
_ROUNDS: Final = 8
_AGAIN: Final = (BlockingIOError, InterruptedError)
_IDLE: Final = -1  # the timer kind of an idle time-out (0 and 1: the end of a direction's pause)
_NOTSENT_LOWAT: Final[int | None] = getattr(socket, "TCP_NOTSENT_LOWAT", None)

TunnelEnded = Callable[[ServerSession, Outcome], None]


class _Flow:
    """One direction of a tunnel: 0 reads the client and writes the upstream, 1 the other way."""

    __slots__ = ("eof", "index", "paused", "pending", "size")

    def __init__(self, index: int) -> None:
        self.index = index
        self.eof = False  # the source sent EOF, passed on: nothing more to do
        self.paused = False  # a byte rate limit stops reading until its timer fires
        self.pending: memoryview | None = None  # read, not yet written: the source is not read meanwhile
        self.size = 0  # the whole chunk *pending* belongs to, reported once written


class _Tunnel:
    """A tunnel the hub relays: its two sockets (0: the client), their flows and epoll masks."""

    __slots__ = ("ended", "expires", "fds", "flows", "masks", "on_end", "relay", "session", "socks", "splice_at")

    def __init__(self, session: ServerSession, socks: tuple[socket.socket, socket.socket], on_end: TunnelEnded) -> None:
        self.session = session
        self.socks = socks
        self.fds = (socks[0].fileno(), socks[1].fileno())
        self.flows = (_Flow(0), _Flow(1))
        self.masks = [0, 0]  # what each socket is registered for (0: not registered)
        self.expires = 0.0  # the idle time-out's deadline
        self.ended = False
        self.on_end = on_end
        self.splice_at: int | None = None  # octets relayed (both ways) after which it moves to splice
        self.relay: SpliceRelay | None = None  # its splice relay, once moved


class _Done:
    """The :class:`~.splice.Completion` a :class:`SpliceRelay` resolves, for the hub: it ends the tunnel afterwards."""

    __slots__ = ("callbacks", "error", "finished", "hub", "tunnel")

    def __init__(self, hub: RelayHub, tunnel: _Tunnel) -> None:
        self.hub, self.tunnel = hub, tunnel
        self.callbacks: list[Callable[[Any], object]] = []
        self.error: BaseException | None = None
        self.finished = False

    def done(self) -> bool:
        return self.finished

    def add_done_callback(self, callback: Callable[[Any], object]) -> None:
        self.callbacks.append(callback)

    def set_result(self, _result: None) -> None:
        self._finish(None)

    def set_exception(self, error: BaseException) -> None:
        self._finish(error)

    def _finish(self, error: BaseException | None) -> None:
        if not self.finished:
            self.finished, self.error = True, error
            self.hub._finished.append(self)  # run after the event at hand, as a loop's call_soon would


class _Later:
    """A timer of :meth:`_Reactor.call_later`."""

    __slots__ = ("args", "callback", "cancelled")

    def __init__(self, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.callback, self.args, self.cancelled = callback, args, False

    def cancel(self) -> None:
        self.cancelled = True


class _Reactor:
    """A :class:`~.splice.Reactor` (what :class:`SpliceRelay` uses of an event loop) on the hub's epoll set."""

    __slots__ = ("hub",)

    def __init__(self, hub: RelayHub) -> None:
        self.hub = hub

    def add_reader(self, fd: int, callback: Callable[..., object], *args: Any) -> None:
        self.hub._watch(fd, 1, (callback, args))

    def remove_reader(self, fd: int) -> None:
        self.hub._watch(fd, 1, None)

    def add_writer(self, fd: int, callback: Callable[..., object], *args: Any) -> None:
        self.hub._watch(fd, 2, (callback, args))

    def remove_writer(self, fd: int) -> None:
        self.hub._watch(fd, 2, None)

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> _Later:
        later = _Later(callback, args)
        self.hub._push_later(trio.current_time() + delay, later)
        return later


def _take(stream: trio.SocketStream) -> socket.socket:
    """The stream's socket as a plain non-blocking socket object; the trio socket is left detached."""
    tsock = stream.socket
    family, kind, proto = tsock.family, tsock.type, tsock.proto
    sock = socket.socket(family, kind, proto, tsock.detach())
    sock.setblocking(False)
    if _NOTSENT_LOWAT is not None:  # trio's streams set 16 KiB: a relay wants the kernel's default (0)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, _NOTSENT_LOWAT, 0)
    return sock


class RelayHub:
    """Every plain-TCP tunnel of one server, relayed by one task (:meth:`run`) through one epoll set.

    Args:
        buffer_size: the size of the read buffer all tunnels share (the most one read takes).
        idle_timeout: seconds without a byte moved after which a tunnel ends.
        splice_after: octets a tunnel added with ``splice=True`` relays by
            copying before it moves to a :class:`~.splice.SpliceRelay`
            (``None``: never; ignored where splice is not supported).
    """

    def __init__(self, buffer_size: int, idle_timeout: float, *, splice_after: int | None = None) -> None:
        self._epoll = select.epoll()
        self._splice_after = splice_after if SpliceRelay.supported() else None
        self._pipes = PipePool() if self._splice_after is not None else None
        self._reactor = _Reactor(self)
        # The splice relays' descriptors: fd -> [mask, (reader, args) or None, (writer, args) or None].
        self._watched: dict[int, list[Any]] = {}
        self._later: list[tuple[float, int, _Later]] = []  # the splice relays' timers
        self._finished: list[_Done] = []  # splice relays that ended, to end their tunnels
        self._buffer = bytearray(buffer_size)
        self._view = memoryview(self._buffer)
        self._timeout = idle_timeout
        self._tunnels: dict[int, _Tunnel] = {}  # by each of its descriptors
        self._timers: list[tuple[float, int, _Tunnel, int]] = []  # (due, order, tunnel, _IDLE or a flow index)
        self._order = itertools.count()
        self._stale = 0  # timers of tunnels that ended, still in the heap
        self._sleep: trio.CancelScope | None = None  # the wait for events, while the hub waits
        self._closed = False

    @staticmethod
    def supported() -> bool:
        """Whether this platform has what the hub needs (``select.epoll``: Linux)."""
        return _EPOLL

    def __len__(self) -> int:
        """How many tunnels the hub relays."""
        return len(self._tunnels) // 2

    def add(
        self,
        session: ServerSession,
        client: trio.SocketStream,
        upstream: trio.SocketStream,
        *,
        on_end: TunnelEnded,
        client_eof: bool = False,
        pause: float = 0.0,
        splice: bool = False,
    ) -> bool:
        """Relay *client* <-> *upstream* from now on; ``on_end(session, outcome)`` once it ended.

        The hub takes both sockets (the streams are unusable afterwards) and
        closes them at the end. Nothing may be buffered in either stream.

        Args:
            client_eof: the client already sent EOF, and the upstream's write
                half was shut down: only the upstream is read.
            pause: seconds a byte rate limit stops reading the client first
                (what the early octets cost).
            splice: the tunnel may move to splice after ``splice_after`` octets.

        Returns:
            False when the hub has stopped (the server is stopping): the streams are untouched.
        """
        if self._closed:
            return False
        first = _take(client)
        try:
            tunnel = _Tunnel(session, (first, _take(upstream)), on_end)
        except BaseException:
            first.close()
            raise
        now = trio.current_time()
        tunnel.expires = now + max(pause, 0.0) + self._timeout
        tunnel.flows[0].eof = client_eof
        tunnel.flows[0].paused = paused = pause > 0 and not client_eof
        if splice and self._splice_after is not None:
            tunnel.splice_at = self._splice_after
        for fd in tunnel.fds:
            self._tunnels[fd] = tunnel
        try:
            self._update(tunnel)
        except BaseException:  # e.g. ENOMEM from epoll_ctl: the caller reports the error
            self._forget(tunnel)
            raise
        self._push(tunnel.expires, tunnel, _IDLE)
        if paused:
            self._push(now + pause, tunnel, 0)
        if tunnel.splice_at is not None and session.up + session.down >= tunnel.splice_at:
            self._splice(tunnel)
        return True

    async def run(self) -> None:
        """Relay until cancelled; then end every tunnel (``cancelled``) and close the epoll set."""
        epoll = self._epoll
        try:
            while True:
                due = self._timers[0][0] if self._timers else math.inf
                if self._later and self._later[0][0] < due:
                    due = self._later[0][0]
                with trio.move_on_at(due) as self._sleep:
                    await trio.lowlevel.wait_readable(epoll.fileno())
                self._sleep = None
                for _ in range(_ROUNDS):
                    events = epoll.poll(0, _MAX_EVENTS)
                    if not events:
                        break
                    self._dispatch(events, trio.current_time())
                self._expire(trio.current_time())
        finally:
            self._closed = True
            for tunnel in list(self._tunnels.values()):
                self._end(tunnel, Outcome(OutcomeKind.CANCELLED))
            if self._pipes is not None:
                self._pipes.close()
            epoll.close()

    # -- events -----------------------------------------------------------------------------

    def _dispatch(self, events: list[tuple[int, int]], now: float) -> None:
        tunnels = self._tunnels
        for fd, mask in events:
            tunnel = tunnels.get(fd)
            if tunnel is None:
                self._spliced(fd, mask)  # or a descriptor that closed earlier in this round
                continue
            side = 0 if fd == tunnel.fds[0] else 1
            try:
                flow = tunnel.flows[side]
                if mask & _READ_EVENTS and not (flow.eof or flow.paused or flow.pending is not None):
                    self._read(tunnel, flow, now)
                flow = tunnel.flows[1 - side]
                if mask & _WRITE_EVENTS and flow.pending is not None and not tunnel.ended:
                    self._flush(tunnel, flow, now)
                if tunnel.ended:
                    continue
                if tunnel.splice_at is not None and tunnel.session.up + tunnel.session.down >= tunnel.splice_at:
                    self._splice(tunnel)
                self._update(tunnel)
            except Exception as exc:  # a bug ends this tunnel, not the server
                server_logger.exception("internal error relaying for %s:%s", *tunnel.session.client)
                self._end(tunnel, Outcome(OutcomeKind.INTERNAL_ERROR, type(exc).__name__))

    def _read(self, tunnel: _Tunnel, flow: _Flow, now: float) -> None:
        try:
            nbytes = tunnel.socks[flow.index].recv_into(self._buffer)
        except _AGAIN:
            return
        except OSError as exc:
            self._end(tunnel, Outcome(OutcomeKind.RELAY_ERROR, type(exc).__name__))
            return
        if not nbytes:
            self._eof(tunnel, flow)
            return
        try:
            sent = tunnel.socks[1 - flow.index].send(self._view[:nbytes])
        except _AGAIN:
            sent = 0
        except OSError as exc:
            self._end(tunnel, Outcome(OutcomeKind.RELAY_ERROR, type(exc).__name__))
            return
        if sent < nbytes:
            flow.pending = memoryview(self._buffer[sent:nbytes])  # a copy: the buffer is everyone's
            flow.size = nbytes
        else:
            self._delivered(tunnel, flow, nbytes, now)

    def _flush(self, tunnel: _Tunnel, flow: _Flow, now: float) -> None:
        pending = flow.pending
        assert pending is not None
        try:
            sent = tunnel.socks[1 - flow.index].send(pending)
        except _AGAIN:
            return
        except OSError as exc:
            self._end(tunnel, Outcome(OutcomeKind.RELAY_ERROR, type(exc).__name__))
            return
        if sent < len(pending):
            flow.pending = pending[sent:]
            return
        flow.pending = None
        self._delivered(tunnel, flow, flow.size, now)

    def _delivered(self, tunnel: _Tunnel, flow: _Flow, nbytes: int, now: float) -> None:
        """A whole chunk went out: report it; a rate limit's pause stops this direction, and is activity."""
        pause = tunnel.session.moved(flow.index == 0, nbytes, now)
        expires = now + pause + self._timeout
        tunnel.expires = max(tunnel.expires, expires)
        if pause > 0:
            flow.paused = True
            self._push(now + pause, tunnel, flow.index)

    def _eof(self, tunnel: _Tunnel, flow: _Flow) -> None:
        flow.eof = True
        with contextlib.suppress(OSError):  # already reset: the other direction will say so
            tunnel.socks[1 - flow.index].shutdown(socket.SHUT_WR)
        if tunnel.flows[1 - flow.index].eof:
            self._end(tunnel, Outcome(OutcomeKind.OK))

    def _update(self, tunnel: _Tunnel) -> None:
        """Register each socket for what its flows wait for: reading it, writing to it, or nothing."""
        if tunnel.relay is not None:
            return  # its splice relay waits for its own descriptors
        for side in (0, 1):
            reading, writing = tunnel.flows[side], tunnel.flows[1 - side]
            mask = 0 if reading.eof or reading.paused or reading.pending is not None else _IN
            if writing.pending is not None:
                mask |= _OUT
            old = tunnel.masks[side]
            if mask != old:
                fd = tunnel.fds[side]
                if not old:
                    self._epoll.register(fd, mask)
                elif not mask:
                    self._epoll.unregister(fd)  # even mask 0 would report a hang-up, again and again
                else:
                    self._epoll.modify(fd, mask)
                tunnel.masks[side] = mask

    def _end(self, tunnel: _Tunnel, outcome: Outcome) -> None:
        """Close the tunnel's sockets, forget it, report *outcome* (once)."""
        if tunnel.ended:
            return
        self._forget(tunnel)
        self._stale += 1  # its idle timer
        tunnel.on_end(tunnel.session, outcome)

    def _forget(self, tunnel: _Tunnel) -> None:
        tunnel.ended = True
        if tunnel.relay is not None:
            tunnel.relay.close()  # its descriptors (dups) and pipes first
        for side in (0, 1):
            fd = tunnel.fds[side]
            if tunnel.masks[side]:
                with contextlib.suppress(OSError, ValueError):
                    self._epoll.unregister(fd)
            self._tunnels.pop(fd, None)
            tunnel.socks[side].close()

    # -- splice -----------------------------------------------------------------------------

    def _splice(self, tunnel: _Tunnel) -> None:
        """Move *tunnel* to a splice relay, between two chunks; not once a direction ended (the rest is short)."""
        up, down = tunnel.flows
        if up.eof or down.eof:
            tunnel.splice_at = None
            return
        if up.pending is not None or down.pending is not None:
            return  # bytes held would be overtaken: after the next chunk
        tunnel.splice_at = None  # one attempt
        done = _Done(self, tunnel)
        try:
            relay = SpliceRelay(
                self._reactor, tunnel.socks[0], tunnel.socks[1], counts=[0, 0], last=[0.0],
                done=done, throttle=functools.partial(self._spliced_moved, tunnel), pipes=self._pipes,
            )  # fmt: skip
        except OSError:  # no descriptors left for its dups (EMFILE): go on copying
            return
        for side in (0, 1):  # the relay reads and writes its dups from now on
            if tunnel.masks[side]:
                self._epoll.unregister(tunnel.fds[side])
                tunnel.masks[side] = 0
        tunnel.relay = relay
        relay.start()
        self._end_spliced()

    def _spliced_moved(self, tunnel: _Tunnel, direction: int, nbytes: int) -> float:
        """A splice relay delivered *nbytes* (direction 0: up): report them; no pause (no byte limits here)."""
        now = trio.current_time()
        tunnel.session.moved(direction == 0, nbytes, now)
        tunnel.expires = max(tunnel.expires, now + self._timeout)
        return 0.0

    def _watch(self, fd: int, which: int, handler: tuple[Callable[..., object], tuple[Any, ...]] | None) -> None:
        """Set (or clear, with None) a splice relay's reader (*which* 1) or writer (2) of *fd*."""
        entry = self._watched.get(fd)
        if entry is None:
            if handler is None:
                return
            entry = self._watched[fd] = [0, None, None]
        entry[which] = handler
        mask = (_IN if entry[1] is not None else 0) | (_OUT if entry[2] is not None else 0)
        if mask == entry[0]:
            return
        if not entry[0]:
            self._epoll.register(fd, mask)
        elif not mask:
            self._epoll.unregister(fd)
            del self._watched[fd]
            return
        else:
            self._epoll.modify(fd, mask)
        entry[0] = mask

    def _spliced(self, fd: int, mask: int) -> None:
        """Run a splice relay's reader and writer of *fd*, as its readiness says; then end what finished."""
        entry = self._watched.get(fd)
        try:
            if entry is not None and mask & _READ_EVENTS and entry[1] is not None:
                entry[1][0](*entry[1][1])
            entry = self._watched.get(fd)
            if entry is not None and mask & _WRITE_EVENTS and entry[2] is not None:
                entry[2][0](*entry[2][1])
        except Exception:  # as an event loop does: the tunnel then ends at its idle time-out
            server_logger.exception("internal error in a splice relay")
        self._end_spliced()

    def _end_spliced(self) -> None:
        while self._finished:
            done = self._finished.pop()
            for callback in done.callbacks:
                callback(done)
            error = done.error
            outcome = Outcome(OutcomeKind.OK if error is None else OutcomeKind.RELAY_ERROR, _name(error))
            self._end(done.tunnel, outcome)

    # -- timers -----------------------------------------------------------------------------

    def _push_later(self, due: float, later: _Later) -> None:
        heapq.heappush(self._later, (due, next(self._order), later))
        if self._sleep is not None and due < self._sleep.deadline:
            self._sleep.deadline = due

    def _push(self, due: float, tunnel: _Tunnel, kind: int) -> None:
        heapq.heappush(self._timers, (due, next(self._order), tunnel, kind))
        if self._sleep is not None and due < self._sleep.deadline:
            self._sleep.deadline = due  # added while the hub waits (by another task): wake it in time

    def _expire(self, now: float) -> None:
        """Fire the timers due: idle time-outs (unless traffic moved the deadline) and ends of pauses."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            _due, _order, tunnel, kind = heapq.heappop(timers)
            if tunnel.ended:
                self._stale -= 1 if kind == _IDLE else 0
                continue
            if kind != _IDLE:
                tunnel.flows[kind].paused = False
                self._update(tunnel)
            elif tunnel.expires > now:
                heapq.heappush(timers, (tunnel.expires, next(self._order), tunnel, _IDLE))
            else:
                self._stale -= 1
                self._end(tunnel, Outcome(OutcomeKind.IDLE_TIMEOUT))
        while self._later and self._later[0][0] <= now:
            later = heapq.heappop(self._later)[2]
            if not later.cancelled:
                later.callback(*later.args)
                self._end_spliced()
        if self._stale > 64 and self._stale * 2 > len(timers):  # ended tunnels' timers: drop them now
            self._timers = [timer for timer in timers if not timer[2].ended]
            heapq.heapify(self._timers)
            self._stale = 0


def _name(error: BaseException | None) -> str:
    return "" if error is None else type(error).__name__

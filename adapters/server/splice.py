"""Zero-copy tunnel relay for the asyncio server on Linux: ``os.splice`` through a pipe.

Strategy: each direction of a tunnel moves bytes socket -> pipe -> socket with
``os.splice(..., SPLICE_F_MOVE | SPLICE_F_NONBLOCK)``, so they never enter
user space. The event loop's readiness callbacks drive it
(``loop.add_reader`` on the source while the direction holds no bytes,
``loop.add_writer`` on the destination while its pipe holds bytes the
destination could not take yet); nothing else runs per chunk. One splice fills
the pipe, and the next flushes it, so a direction reads only when its pipe is
empty: the pipe is the only buffer, and the kernel's socket buffers do the rest
of the flow control.

Pipes come from a :class:`PipePool` and go back to it as soon as they are
empty, so an idle tunnel holds no pipe: the pipes in use are the directions
in flight, not the tunnels. That keeps the descriptors per tunnel at four (two
sockets and their dups, plus a pipe's two while bytes are in it) and keeps big
pipes affordable: Linux accounts every pipe's capacity against the user's
``/proc/sys/fs/pipe-user-pages-soft`` (64 MiB by default) whether it holds
bytes or not, and over that limit gives new pipes two pages and refuses to
enlarge them. The pool enlarges each pipe with ``F_SETPIPE_SZ`` when the kernel
allows it (up to ``/proc/sys/fs/pipe-max-size``, 1 MiB by default; 1 MiB
measured best: 1.6x the throughput of the 64 KiB default at half the CPU per
byte; 4 MiB was slower), and keeps a bounded number of empty pipes for reuse.
A server shares one pool between its tunnels and closes it when it stops; the
pool also closes its idle pipes whenever the last relay using it closes, so a
server without tunnels holds no pipe. Without a pool, each relay opens a pipe
when it needs one and closes it once empty.

What the relay keeps from the copying relay (``_RelaySide``): an EOF on one side
is passed through as ``shutdown(SHUT_WR)`` on the other, after every byte still
in the pipe went out; the tunnel ends when both directions ended; any other
socket error ends it; ``counts[0]`` (client -> target) and ``counts[1]``
(target -> client) count the bytes delivered to the destination, early bytes
included; ``last[0]`` is the ``time.monotonic()`` of the last bytes delivered
(the owner's idle timeout reads it); and ``throttle(direction, nbytes)`` is
called after each delivery and may pause reading that direction for the
seconds it returns.

Ownership, for an owner holding asyncio transports (the server):

* The relay owns only what it opens: a ``dup`` of each socket's descriptor
  (an asyncio loop refuses ``add_reader`` on a descriptor a transport owns);
  pipes are borrowed from the pool. :meth:`SpliceRelay.close` removes its
  readers, writers and timers from the loop, returns empty pipes to the pool,
  closes a pipe that still holds bytes, and closes the dups; it runs by itself
  once ``done`` completes (resolved, failed or cancelled) and is idempotent.
* The owner keeps its transports. Before :meth:`SpliceRelay.start` it makes
  sure both write buffers are empty (:meth:`SpliceRelay.socket_of` checks it:
  a byte still queued in a transport would be overtaken by spliced bytes; to
  wait instead, ``set_write_buffer_limits(0)`` and ``drain()``), pauses
  reading on both (their protocols never read again), and passes what its
  readers had buffered as ``early_up`` / ``early_down``, all without an
  ``await`` in between.
  After ``done`` (or on idle timeout or cancellation) it calls ``close()`` and
  then closes or aborts the transports, which close the original descriptors.
  A descriptor is therefore closed exactly once, by the object that opened it;
  ``shutdown(SHUT_WR)`` acts on the socket, so it reaches the transport's
  descriptor too, as ``write_eof`` would.
* uvloop works too, with one difference the relay makes up for: when a
  socket has an error (``EPOLLERR``, e.g. the peer reset it), libuv runs the
  descriptor's reader and writer once and then stops watching it. A read that
  still found bytes queued before the reset would then wait forever, so on
  uvloop a read that moved bytes also asks ``SO_ERROR`` (one ``getsockopt``) and
  ends the tunnel with that error.
* TLS cannot be spliced: the bytes must go through the TLS object. asyncio
  transports with TLS hand out the raw TCP socket as ``"socket"``, so the owner
  checks ``get_extra_info("sslcontext") is None`` as well as :meth:`available`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import sys
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

__all__ = ["DEFAULT_PIPE_SIZE", "Cancellable", "Completion", "PipePool", "Reactor", "SpliceRelay"]

DEFAULT_PIPE_SIZE: Final = 1 << 20
"""What the default pool enlarges its pipes to (bytes), when the kernel allows it."""

_SUPPORTED: Final = sys.platform == "linux" and hasattr(os, "splice")
_FLAGS: Final[int] = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)


class Cancellable(Protocol):
    """A timer :meth:`Reactor.call_later` returns (asyncio's ``TimerHandle`` fits)."""

    def cancel(self) -> None: ...


class Reactor(Protocol):
    """What :class:`SpliceRelay` uses of an event loop: descriptor readiness callbacks and timers.

    asyncio's selector loops and uvloop fit; the trio server's relay hub provides one over its own epoll set.
    """

    def add_reader(self, fd: int, callback: Callable[..., object], *args: Any) -> None: ...

    def remove_reader(self, fd: int) -> object: ...

    def add_writer(self, fd: int, callback: Callable[..., object], *args: Any) -> None: ...

    def remove_writer(self, fd: int) -> object: ...

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Cancellable: ...


class Completion(Protocol):
    """What :class:`SpliceRelay` resolves when it ends (``asyncio.Future[None]`` fits)."""

    def done(self) -> bool: ...

    def set_result(self, result: None, /) -> None: ...

    def set_exception(self, exception: BaseException, /) -> None: ...

    def add_done_callback(self, callback: Callable[[Any], object], /) -> None: ...


class SocketLike(Protocol):
    """What :class:`SpliceRelay` needs of a socket: ``socket.socket`` and asyncio's ``TransportSocket`` fit."""

    @property
    def family(self) -> int: ...

    @property
    def type(self) -> int: ...

    def fileno(self) -> int: ...


class PipePool:
    """Empty non-blocking pipes for :class:`SpliceRelay` to borrow while bytes are in flight.

    Not thread-safe: share one pool between the relays of one event loop.
    The pipes kept for reuse serve the relays alive: when the last relay using
    the pool closes (:attr:`users` drops to 0), so do the idle pipes, so a
    server without tunnels holds no pipe. The pool stays usable after that.

    Args:
        size: The capacity to ask ``F_SETPIPE_SZ`` for; the kernel may give less.
        keep: How many empty pipes to keep for reuse; more are closed when returned.
    """

    def __init__(self, size: int = DEFAULT_PIPE_SIZE, keep: int = 16) -> None:
        self.size, self.keep = size, keep
        self.idle: list[tuple[int, int, int]] = []  # (read end, write end, capacity), all empty
        self.users = 0  # relays alive that borrow from this pool (SpliceRelay counts itself in and out)

    def attach(self) -> None:
        """Count one more user (a relay) of the pool."""
        self.users += 1

    def detach(self) -> None:
        """Count one user less; the last one out closes the idle pipes."""
        self.users = max(0, self.users - 1)
        if not self.users:
            self.close()

    def take(self) -> tuple[int, int, int]:
        """An empty pipe as ``(read_fd, write_fd, capacity)``; a new one if none is idle.

        Raises:
            OSError: No pipe could be created (e.g. EMFILE).
        """
        if self.idle:
            return self.idle.pop()
        read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            return read_fd, write_fd, _grow_pipe(write_fd, self.size)
        except BaseException:
            os.close(read_fd)
            os.close(write_fd)
            raise

    def give(self, pipe: tuple[int, int, int], *, empty: bool = True) -> None:
        """Take back *pipe*: kept for reuse if *empty* and there is room, else closed."""
        if empty and len(self.idle) < self.keep:
            self.idle.append(pipe)
        else:
            os.close(pipe[0])
            os.close(pipe[1])

    def close(self) -> None:
        """Close the idle pipes (pipes lent out are closed when given back beyond ``keep``)."""
        while self.idle:
            self.give(self.idle.pop(), empty=False)


class _Direction:
    """One direction of the tunnel: source socket -> pipe -> destination socket."""

    __slots__ = ("dst", "eof", "finished", "in_pipe", "index", "pending", "pipe", "reading", "src", "timer",
                 "writing")

    def __init__(self, index: int, src: int, dst: int) -> None:
        self.index, self.src, self.dst = index, src, dst
        self.pipe: tuple[int, int, int] | None = None  # borrowed from the pool while bytes are in it
        self.in_pipe = 0  # bytes spliced into the pipe and not out of it yet
        self.pending = memoryview(b"")  # early bytes, written before anything is spliced
        self.eof = False  # the source sent EOF
        self.finished = False  # EOF passed on: nothing more to do in this direction
        self.reading = False  # a reader is registered on src
        self.writing = False  # a writer is registered on dst
        self.timer: Cancellable | None = None  # reading paused by the throttle until it fires


class SpliceRelay:
    """Relay two connected plain-TCP sockets both ways with os.splice through a pipe per busy direction.

    See the module docstring for what is preserved from the copying relay and
    for who owns which descriptor. Typical use::

        relay = SpliceRelay(loop, client_sock, target_sock, counts=counts, last=last, done=done)
        try:
            relay.start(early_up, early_down)
            await done
        finally:
            relay.close()

    Args:
        loop: A selector-based event loop (it must support ``add_reader``).
        client_sock: The client's socket; it stays the caller's (the relay uses a dup).
        target_sock: The target's socket; likewise.
        counts: ``counts[0]`` grows by the bytes delivered client -> target,
            ``counts[1]`` by the bytes delivered target -> client.
        last: ``last[0]`` is set to ``time.monotonic()`` whenever bytes are delivered.
        done: Resolved when both directions ended (EOF passed through both
            ways); set to the ``OSError`` that ended the tunnel otherwise, or to
            what ``throttle`` raised. Cancelling it stops the relay.
        throttle: Called as ``throttle(direction, nbytes)`` after each delivery
            (direction 0 is client -> target); a positive return value pauses
            reading that direction for that many seconds.
        pipes: Where pipes are borrowed from: a server shares one pool
            between its tunnels. By default the relay opens a pipe of
            :data:`DEFAULT_PIPE_SIZE` whenever it needs one and closes it when
            it is empty again. Failing to create a pipe (e.g. EMFILE) ends the
            relay with that ``OSError``.

    Raises:
        ValueError: A socket is not a plain TCP socket, this is not Linux, or
            ``counts`` / ``last`` are too short.
        OSError: The descriptors could not be duplicated (e.g. EMFILE); nothing
            is left open then.
    """

    def __init__(
        self,
        loop: Reactor,
        client_sock: SocketLike,
        target_sock: SocketLike,
        *,
        counts: list[int],
        last: list[float],
        done: Completion,
        throttle: Callable[[int, int], float] | None = None,
        pipes: PipePool | None = None,
    ) -> None:
        for name, sock in (("client_sock", client_sock), ("target_sock", target_sock)):
            if not self.available(sock):
                raise ValueError(
                    f"SpliceRelay needs Linux with os.splice and a plain TCP socket (not TLS) for {name}, "
                    f"got {sock!r} on {sys.platform}"
                )
        if len(counts) < 2 or len(last) < 1:
            raise ValueError(f"counts needs two items and last one, got {len(counts)} and {len(last)}")
        self._loop, self._counts, self._last, self._done, self._throttle = loop, counts, last, done, throttle
        self._pipes = PipePool(keep=0) if pipes is None else pipes
        self._socks: dict[int, socket.socket] = {}  # the dups by descriptor (socket objects, for shutdown)
        self._attached = False
        try:
            client = self._dup(client_sock)
            target = self._dup(target_sock)
        except BaseException:
            self._close_fds()
            raise
        self._pipes.attach()
        self._attached = True
        self._dirs = (_Direction(0, client, target), _Direction(1, target, client))
        self._started = self._stopped = False
        # uvloop stops watching a descriptor once it reported an error: see the module docstring.
        self._check_errors = type(loop).__module__.partition(".")[0] == "uvloop"
        done.add_done_callback(lambda _: self.close())

    @staticmethod
    def supported() -> bool:
        """Whether this platform can splice at all (Linux with ``os.splice``): no socket needed to ask."""
        return _SUPPORTED

    @staticmethod
    def available(sock: object) -> bool:
        """Whether *sock* can be spliced here: Linux with ``os.splice``, and a plain (not TLS) TCP socket.

        An asyncio TLS transport hands out its raw TCP socket, for which this is
        True: check the transport's ``get_extra_info("sslcontext") is None`` too.
        """
        if not _SUPPORTED or isinstance(sock, ssl.SSLSocket):
            return False
        family, kind = getattr(sock, "family", None), getattr(sock, "type", None)
        return family in (socket.AF_INET, socket.AF_INET6) and kind == socket.SOCK_STREAM and hasattr(sock, "fileno")

    @staticmethod
    def socket_of(transport: asyncio.BaseTransport) -> SocketLike | None:
        """The socket of an asyncio *transport* if a relay may take it over now, else None.

        That is: :meth:`available`, no TLS on the transport, and nothing left
        in its write buffer (queued bytes would be overtaken by spliced ones).
        The caller then pauses its reading before :meth:`start`.
        """
        sock = transport.get_extra_info("socket")
        if not SpliceRelay.available(sock) or transport.get_extra_info("sslcontext") is not None:
            return None
        # Duck-typed: uvloop's transports have the methods but do not derive from asyncio.WriteTransport.
        buffered = getattr(transport, "get_write_buffer_size", None)
        if buffered is None or buffered():
            return None
        return sock  # type: ignore[no-any-return]

    def start(
        self, early_up: bytes = b"", early_down: bytes = b"", client_eof: bool = False, target_eof: bool = False
    ) -> None:
        """Write the early bytes, then relay until ``done``.

        Args:
            early_up: Bytes from the client read before the relay (handshake
                leftovers, a stream reader's buffer); the target gets them first.
            early_down: The same from the target, for the client.
            client_eof: The client already sent EOF: after ``early_up`` the
                target's write half is shut down and the client is not read.
            target_eof: The target already sent EOF: likewise, after
                ``early_down`` the client's write half is shut down.

        Raises:
            RuntimeError: Called twice, or after :meth:`close`.
        """
        if self._started or self._stopped:
            raise RuntimeError("SpliceRelay.start() can be called once, before close()")
        self._started = True
        up, down = self._dirs
        up.pending, down.pending = memoryview(early_up).cast("B"), memoryview(early_down).cast("B")
        up.eof, down.eof = client_eof, target_eof
        for direction in self._dirs:
            self._flush(direction)

    def close(self) -> None:
        """Stop relaying and close the relay's own descriptors (never the callers' sockets); idempotent."""
        self._stop_io()
        self._close_fds()

    # -- set-up and tear-down -----------------------------------------------------------

    def _dup(self, sock: SocketLike) -> int:
        fd = os.dup(sock.fileno())
        try:
            dup = socket.socket(fileno=fd)  # shares the open file description: non-blocking like the original
        except BaseException:
            os.close(fd)
            raise
        self._socks[dup.fileno()] = dup
        return dup.fileno()

    def _stop_io(self) -> None:
        self._stopped = True
        for direction in getattr(self, "_dirs", ()):
            self._set_io(direction, read=False, write=False)
            if direction.timer is not None:
                direction.timer.cancel()
                direction.timer = None

    def _close_fds(self) -> None:
        for direction in getattr(self, "_dirs", ()):
            self._give_back(direction)
        while self._socks:
            self._socks.popitem()[1].close()
        if self._attached:
            self._attached = False
            self._pipes.detach()

    def _set_io(self, d: _Direction, *, read: bool, write: bool) -> None:
        if read != d.reading:
            d.reading = read
            if read:
                self._loop.add_reader(d.src, self._on_readable, d)
            else:
                self._loop.remove_reader(d.src)
        if write != d.writing:
            d.writing = write
            if write:
                self._loop.add_writer(d.dst, self._flush, d)
            else:
                self._loop.remove_writer(d.dst)

    # -- the relay ------------------------------------------------------------------------

    def _give_back(self, d: _Direction) -> None:
        if d.pipe is not None:
            pipe, d.pipe = d.pipe, None
            self._pipes.give(pipe, empty=not d.in_pipe)
            d.in_pipe = 0

    def _on_readable(self, d: _Direction) -> None:
        try:
            if d.pipe is None:
                d.pipe = self._pipes.take()
            moved = os.splice(d.src, d.pipe[1], d.pipe[2], flags=_FLAGS)
        except BlockingIOError:  # woken up for nothing; the pipe is empty, so not because it is full
            self._give_back(d)
            if self._check_errors:
                self._check_socket_error(d.src)
            return
        except OSError as exc:
            self._fail(exc)
            return
        if moved:
            d.in_pipe += moved
            if self._check_errors and self._check_socket_error(d.src):
                return
        else:
            d.eof = True
        self._flush(d)

    def _check_socket_error(self, fd: int) -> bool:
        """Fail with the socket's pending error, if it has one (a loop that stops watching it, see above)."""
        error = self._socks[fd].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            self._fail(OSError(error, os.strerror(error)))  # ConnectionResetError for ECONNRESET
        return bool(error)

    def _flush(self, d: _Direction) -> None:
        """Deliver the early bytes, then the pipe; then pass EOF on or wait for what comes next."""
        if self._stopped or d.finished:
            return
        delivered = 0
        try:
            while d.pending or d.in_pipe:
                if d.pending:
                    sent = os.write(d.dst, d.pending)
                    d.pending = d.pending[sent:]
                    left = len(d.pending)
                else:
                    assert d.pipe is not None  # bytes are in it
                    sent = os.splice(d.pipe[0], d.dst, d.in_pipe, flags=_FLAGS)
                    d.in_pipe -= sent
                    left = d.in_pipe
                delivered += sent
                if left:  # a short write: the socket buffer is full, wait until it is writable
                    break
        except BlockingIOError:
            pass
        except OSError as exc:
            self._fail(exc)
            return
        if not d.in_pipe:
            self._give_back(d)
        if delivered and not self._delivered(d, delivered):
            return
        if d.eof and not d.pending and not d.in_pipe:
            self._finish(d)
            return
        busy = bool(d.pending or d.in_pipe)
        self._set_io(d, read=not (busy or d.eof or d.timer), write=busy)

    def _delivered(self, d: _Direction, nbytes: int) -> bool:
        """Count *nbytes* delivered and ask the throttle; False if the throttle failed (the relay stopped)."""
        self._counts[d.index] += nbytes
        self._last[0] = time.monotonic()
        if self._throttle is None:
            return True
        try:
            delay = self._throttle(d.index, nbytes)
        except Exception as exc:  # the owner's bug ends this tunnel, not the event loop's callback
            self._fail(exc)
            return False
        if delay > 0:
            if d.timer is not None:
                d.timer.cancel()
            d.timer = self._loop.call_later(delay, self._resume, d)
        return True

    def _resume(self, d: _Direction) -> None:
        d.timer = None
        self._flush(d)

    def _finish(self, d: _Direction) -> None:
        d.finished = True
        self._set_io(d, read=False, write=False)
        with contextlib.suppress(OSError):  # already reset: the other direction will say so
            self._socks[d.dst].shutdown(socket.SHUT_WR)
        if all(direction.finished for direction in self._dirs) and not self._done.done():
            self._done.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if not self._done.done():
            self._done.set_exception(exc)
        self._stop_io()


def _grow_pipe(fd: int, size: int) -> int:
    """Ask for a pipe of *size* bytes (the kernel may refuse: EPERM, EBUSY); return the size it has."""
    import fcntl  # Unix only, and only reached on Linux

    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)

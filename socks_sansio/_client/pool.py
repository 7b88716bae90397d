"""Pools of prepared proxy connections: the bookkeeping and the background policy. Pure.

Strategy: a *prepared* connection is connected to the (first) proxy, through
every hop of a chain but the last one's request: TLS is up, the SOCKS5 greeting
and RFC 1929 authentication are done, and the last hop's
:class:`~socks_sansio.ClientHandshake` waits in status ``READY``. Taking one
costs a single round trip (the request and its reply) instead of a TCP connect
and up to three.

:class:`IdleConnections` is the idle list, its time limit, how many refills to
start, and the counters. :class:`PoolKeeper` adds the policy around it, as
generators of pool operations (like the client plans): :meth:`PoolKeeper.maintain`
is the background loop (refill, back off while preparing fails, close what
expired, sleep until the next expiry) and :meth:`PoolKeeper.fill` the warm-up.
Each backend's ``ProxyPool`` performs those operations: it opens prepared
connections (a :class:`~socks_sansio.ConnectPlan` with ``prepare=True``), checks
that a connection it takes is still silent (a readable connection means the proxy
closed it or sent something: either way it is unusable), closes, waits and wakes.

Choices:

* Connections are never shared or returned: each becomes exactly one tunnel,
  so a connection's idle time is its age, and one time limit (``idle_timeout``)
  says how long it may wait. Proxies close connections that do not complete
  their negotiation (Dante's ``timeout.negotiate``, our own server's
  ``--negotiation-timeout``, 10 s by default): keep ``idle_timeout`` below it.
* The oldest idle connection is taken first: it is the next to expire, so
  fewer connections are thrown away unused.
* ``size`` connections are kept ready: a refill is started for each one taken
  or discarded, and refills already under way count, so concurrent takes never
  open more than ``size`` connections at once.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from typing import Any, Generic, TypeVar, final

from .._errors import LocalProtocolError
from .hops import ProxySpec, client_logger, to_proxies
from .operations import NOTIFY, PREPARE, WAIT_CHANGED, Discard, Pause, PoolOperation, Wait

__all__ = ["IdleConnections", "PoolKeeper", "PoolStats", "check_pool_settings"]

_C = TypeVar("_C")


def check_pool_settings(size: int, idle_timeout: float) -> None:
    """Raise a clear error for a pool size or time limit that cannot work.

    Raises:
        TypeError: *size* is not an int, or *idle_timeout* not a number.
        ValueError: *size* below 1, or *idle_timeout* not positive and finite.
    """
    if not isinstance(size, int) or isinstance(size, bool):
        raise TypeError(f"size must be an int, not {type(size).__name__}")
    if size < 1:
        raise ValueError(f"size must be at least 1, not {size}")
    if not isinstance(idle_timeout, int | float) or isinstance(idle_timeout, bool):
        raise TypeError(f"idle_timeout must be a number of seconds, not {type(idle_timeout).__name__}")
    if not (idle_timeout > 0 and math.isfinite(idle_timeout)):
        raise ValueError(f"idle_timeout must be a positive number of seconds, not {idle_timeout}")


@final
class PoolStats:
    """What a pool did so far (live counters: read them, do not set them).

    Attributes:
        hits: calls served by a prepared connection (one round trip).
        misses: calls that found none usable and connected cold.
        discarded: prepared connections closed unused: expired, found closed or
            talking by the health check, or broken when their request was sent.
        opened: prepared connections added to the pool.
        failed: attempts to open one that failed (the proxy down, refusing us...).
    """

    __slots__ = ("discarded", "failed", "hits", "misses", "opened")

    def __init__(self, hits: int = 0, misses: int = 0, discarded: int = 0, opened: int = 0, failed: int = 0) -> None:
        self.hits = hits
        self.misses = misses
        self.discarded = discarded
        self.opened = opened
        self.failed = failed

    def _counts(self) -> tuple[int, int, int, int, int]:
        return self.hits, self.misses, self.discarded, self.opened, self.failed

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PoolStats) and self._counts() == other._counts()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return "PoolStats(hits={}, misses={}, discarded={}, opened={}, failed={})".format(*self._counts())


@final
class IdleConnections(Generic[_C]):
    """The idle prepared connections of one pool, oldest first, and its counters.

    Not thread-safe: the sync pool holds a lock around every call. Whatever a
    method returns for closing must be closed by the caller.

    Args:
        size: how many prepared connections to keep ready.
        idle_timeout: seconds a prepared connection may wait before it is discarded.
        clock: the monotonic clock (seconds); a test may pass its own.
    """

    __slots__ = ("_clock", "_closed", "_idle", "_opening", "idle_timeout", "size", "stats")

    def __init__(self, size: int, idle_timeout: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        check_pool_settings(size, idle_timeout)
        self.size = size
        self.idle_timeout = idle_timeout
        self.stats = PoolStats()
        self._clock = clock
        self._idle: deque[tuple[float, _C]] = deque()
        self._opening = 0
        self._closed = False

    def __len__(self) -> int:
        """How many prepared connections wait (some may have expired since)."""
        return len(self._idle)

    @property
    def opening(self) -> int:
        """How many refills are under way."""
        return self._opening

    @property
    def closed(self) -> bool:
        """True after :meth:`close`: nothing is taken or added any more."""
        return self._closed

    def take(self, healthy: Callable[[_C], bool]) -> tuple[_C | None, list[_C]]:
        """The oldest idle connection that has not expired and passes *healthy*, if any.

        Counts a hit or a miss. Returns it (or ``None``: connect cold) and the
        connections found expired or unhealthy on the way, to close.
        """
        doomed = self.expired()
        while self._idle and not self._closed:
            _, conn = self._idle.popleft()
            if healthy(conn):
                self.stats.hits += 1
                return conn, doomed
            self.stats.discarded += 1
            doomed.append(conn)
        self.stats.misses += 1
        return None, doomed

    def lost(self) -> None:
        """A connection :meth:`take` returned turned out dead when used: a discard and a miss, not a hit."""
        self.stats.hits -= 1
        self.stats.misses += 1
        self.stats.discarded += 1

    def expired(self) -> list[_C]:
        """Remove and return the idle connections past ``idle_timeout``, to close."""
        limit = self._clock() - self.idle_timeout
        doomed = []
        while self._idle and self._idle[0][0] <= limit:
            doomed.append(self._idle.popleft()[1])
        self.stats.discarded += len(doomed)
        return doomed

    def next_expiry(self) -> float | None:
        """Seconds until the oldest idle connection expires (0 if it has); ``None`` when none waits."""
        if not self._idle:
            return None
        return max(0.0, self._idle[0][0] + self.idle_timeout - self._clock())

    def start_refills(self) -> int:
        """How many prepared connections to open now to get back to ``size``; they count as under way."""
        if self._closed:
            return 0
        wanted = max(0, self.size - len(self._idle) - self._opening)
        self._opening += wanted
        return wanted

    def refilled(self, conn: _C | None) -> bool:
        """One refill ended: *conn* is its connection, or ``None`` when it failed.

        Returns whether the pool kept *conn*; if not (it is closed), close it.
        """
        self._opening -= 1
        if conn is None:
            self.stats.failed += 1
            return False
        if self._closed:
            return False
        self._idle.append((self._clock(), conn))
        self.stats.opened += 1
        return True

    def cancel_refills(self, count: int) -> None:
        """*count* refills counted by :meth:`start_refills` will not be attempted after all."""
        self._opening -= count

    def close(self) -> list[_C]:
        """Stop: every idle connection is returned, to close; later refills are refused."""
        self._closed = True
        doomed = [conn for _, conn in self._idle]
        self._idle.clear()
        return doomed


# -- the policy --------------------------------------------------------------------------


@final
class PoolKeeper(Generic[_C]):
    """The policy of one pool: when to prepare, how long to back off, what to close.

    Not thread-safe: the sync pool advances its generators holding its lock and
    performs the operations (but :class:`Wait`) without it. A runner that stops
    one of its generators midway (a cancellation) closes it, which cancels the
    refills it had counted.

    Args:
        proxy: the proxy, or chain, every connection of the pool goes through.
        size: how many prepared connections to keep ready.
        idle_timeout: seconds a prepared connection may wait unused; also the longest backoff.
        clock: the runner's monotonic clock.

    Raises:
        LocalProtocolError: no proxy, or a bad proxy URL.
        ValueError, TypeError: a *size* or *idle_timeout* that cannot work.
    """

    __slots__ = ("_backoff", "chain", "idle")

    def __init__(
        self,
        proxy: ProxySpec | Sequence[ProxySpec],
        *,
        size: int,
        idle_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.chain = tuple(to_proxies(proxy))
        if not self.chain:
            raise LocalProtocolError("a ProxyPool needs at least one proxy")
        self.idle: IdleConnections[_C] = IdleConnections(size, idle_timeout, clock=clock)
        self._backoff = 0.0

    def __repr__(self) -> str:
        return f"<ProxyPool via {[p.redacted() for p in self.chain]} {self.idle.stats}>"

    def maintain(self) -> Generator[PoolOperation, Any, None]:
        """The background loop, until the pool closes: refill, back off, close the expired, wait."""
        idle = self.idle
        while not idle.closed:
            doomed = idle.expired()
            if doomed:
                yield Discard(doomed)
            wanted = idle.start_refills()
            if not wanted:
                yield Wait(idle.next_expiry())
                continue
            error = yield from self._refill(wanted)
            if error is None:
                self._backoff = 0.0
            else:
                client_logger.debug("pool: preparing a connection failed: %s: %s", type(error).__name__, error)
                self._backoff = min(max(2 * self._backoff, 0.1), idle.idle_timeout)
                yield Pause(self._backoff)

    def fill(self) -> Generator[PoolOperation, Any, None]:
        """Prepare connections until *size* are ready (counting those under way): a warm-up.

        Raises:
            RuntimeError: the pool is closed.
            Exception: the first error preparing one raised (the proxy refused us...).
        """
        idle = self.idle
        while True:
            if idle.closed:
                raise RuntimeError("this ProxyPool is closed")
            wanted = idle.start_refills()
            if not wanted:
                if not idle.opening:
                    return
                yield WAIT_CHANGED  # the background is opening the last ones
                continue
            error = yield from self._refill(wanted)
            if error is not None:
                raise error

    def _refill(self, wanted: int) -> Generator[PoolOperation, Any, BaseException | None]:
        """Prepare *wanted* connections (counted by start_refills) one by one and keep them.

        Stops at the first failure and returns its error (``None``: all ready).
        Refills not attempted are cancelled, also when the runner stops midway.
        """
        idle = self.idle
        left = wanted
        error: BaseException | None = None
        try:
            while left:
                try:
                    connection = yield PREPARE
                except Exception as exc:
                    left -= 1
                    idle.refilled(None)
                    error = exc
                    break
                left -= 1
                if not idle.refilled(connection):
                    yield Discard((connection,))  # the pool closed meanwhile
        finally:
            idle.cancel_refills(left)
        yield NOTIFY
        return error


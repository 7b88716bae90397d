"""A pool of prepared proxy connections for blocking sockets.

The policy is the core's :class:`~socks_sansio.PoolKeeper` (when to prepare,
how long to back off, what to close) and :class:`~socks_sansio.ConnectPlan`
(how to prepare one, and how to use one: ``prepared=``). This module gives it
a background thread and a lock: the keeper's generators are advanced holding
the lock, and their operations performed without it (waits excepted, which
wait on the lock's condition).
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Sequence
from typing import Any, final

from socks_sansio import (
    ClientHandshake,
    ConnectPlan,
    PoolKeeper,
    PoolStats,
    ProxySpec,
    Stepper,
)
from socks_sansio import client_operations as ops

from ._common import logger
from .sync import Tunnel
from .sync_link import Link
from .tls_in_tls import SocketLike

__all__ = ["ProxyPool"]


@final
class _Prepared:
    """A pooled connection: the stream and the last hop's handshake, waiting in status READY."""

    __slots__ = ("handshake", "stream")

    def __init__(self, stream: SocketLike, handshake: ClientHandshake) -> None:
        self.stream = stream
        self.handshake = handshake

    def silent(self) -> bool:
        """Whether the proxy said nothing since the connection was prepared (no octet, no EOF, no error).

        One non-blocking read: over TLS it also consumes what TLS sends after its
        handshake (session tickets), which is not application data.
        """
        try:
            self.stream.settimeout(0)
            self.stream.recv(1)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return True
        except OSError:
            return False
        return False  # an EOF, or an octet the proxy had no reason to send

    def close(self) -> None:
        self.stream.close()


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
    :func:`~socks_sansio.adapters.sync.connect` does, within the same *timeout*.
    A pooled connection whose request fails because the connection broke is
    also replaced by a cold connect. Connections are never shared: each becomes
    exactly one tunnel. Thread-safe.

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
        self._keeper: PoolKeeper[_Prepared] = PoolKeeper(proxy, size=size, idle_timeout=idle_timeout)
        self._connect_timeout = connect_timeout
        self._proxy_ssl = proxy_ssl
        self._nodelay = nodelay
        self._keepalive = keepalive
        self._cond = threading.Condition()
        self._filler = threading.Thread(target=self._background, name="socks-sansio ProxyPool", daemon=True)
        self._filler.start()

    @property
    def stats(self) -> PoolStats:
        """Hits, misses, discarded, opened and failed connections so far."""
        return self._keeper.idle.stats

    @property
    def ready(self) -> int:
        """How many prepared connections wait now."""
        with self._cond:
            return len(self._keeper.idle)

    # -- the keeper's operations ---------------------------------------------------------

    def _drive(self, steps: Any) -> None:
        """Run one of the keeper's generators: advanced under the lock, operations (but waits) outside it."""
        stepper: Stepper[ops.PoolOperation, None] = Stepper(steps)
        result: object = None
        error: Exception | None = None
        try:
            while True:
                with self._cond:
                    operation = stepper.send(result) if error is None else stepper.throw(error)
                    result = error = None
                    while isinstance(operation, ops.Wait | ops.Pause | ops.WaitChanged | ops.Notify):
                        if isinstance(operation, ops.Notify):
                            self._cond.notify_all()
                        else:
                            self._cond.wait(None if isinstance(operation, ops.WaitChanged) else operation.seconds)
                        operation = stepper.send(None)
                if operation is None:
                    return
                if isinstance(operation, ops.Discard):
                    _close_all(operation.connections)
                    continue
                try:
                    result = self._prepare()
                except Exception as exc:
                    error = exc
        except BaseException:
            with self._cond:
                stepper.close()  # a stop midway: the keeper cancels the refills it counted
            raise

    def _prepare(self) -> _Prepared:
        plan = ConnectPlan.preparing(self._keeper.chain, timeout=self._connect_timeout)
        link = Link(plan, proxy_ssl=self._proxy_ssl, nodelay=self._nodelay, keepalive=self._keepalive)
        handshake = link.run(plan.run())
        assert link.stream is not None
        assert handshake is not None
        return _Prepared(link.stream, handshake)

    def _background(self) -> None:
        self._drive(self._keeper.maintain())

    # -- the API -------------------------------------------------------------------------

    def fill(self) -> None:
        """Get *size* prepared connections ready now, opening the missing ones in this thread.

        A warm-up before the first call: it returns when the pool is full
        (refills the background thread already started included).

        Raises:
            ProxyError: preparing a connection failed (``ProxyAuthError`` when the
                proxy refuses the credentials), as ``connect`` would raise it.
            RuntimeError: the pool is closed.
        """
        self._drive(self._keeper.fill())

    def connect(
        self,
        host: str,
        port: int,
        *,
        timeout: float | None = None,
        ssl: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> SocketLike:
        """Connect to *host*:*port* through the pool's proxies, as ``connect`` does.

        Args:
            host, port, timeout, ssl, server_hostname: as for
                :func:`~socks_sansio.adapters.sync.connect`; *timeout* covers the
                request on a prepared connection and, on a miss, the whole cold connect.

        Returns:
            the socket, as ``connect`` returns it.

        Raises:
            RuntimeError: the pool is closed.
            ProxyError, OSError, ssl.SSLError: as ``connect``.
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
        keeper = self._keeper
        with self._cond:
            if keeper.idle.closed:
                raise RuntimeError("this ProxyPool is closed")
            prepared, doomed = keeper.idle.take(_Prepared.silent)
            self._cond.notify_all()  # the background thread replaces what was taken or discarded
        _close_all(doomed)
        plan = ConnectPlan.for_call(
            host, port, proxy=self._keeper.chain, tls=ssl is not None, server_hostname=server_hostname, timeout=timeout,
            prepared=None if prepared is None else prepared.handshake,
        )  # fmt: skip
        link = Link(plan, tls=ssl, proxy_ssl=self._proxy_ssl, nodelay=self._nodelay, keepalive=self._keepalive,
                    stream=None if prepared is None else prepared.stream)  # fmt: skip
        if prepared is not None:
            prepared.stream.settimeout(None)
        link.run(plan.run())
        if plan.prepared_lost:
            with self._cond:
                keeper.idle.lost()
        logger.debug("pool: %s for %s", "miss" if prepared is None or plan.prepared_lost else "hit", plan.target)
        stream = link.stream
        assert stream is not None
        stream.settimeout(None)
        return Tunnel(stream, plan.info())

    def close(self) -> None:
        """Close every idle connection and stop the background thread. Idempotent.

        Tunnels already handed out are the caller's and stay open.
        """
        with self._cond:
            doomed = self._keeper.idle.close()
            self._cond.notify_all()
        _close_all(doomed)
        if self._filler is not threading.current_thread():
            self._filler.join()

    def __enter__(self) -> ProxyPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return repr(self._keeper)


def _close_all(prepared: Sequence[_Prepared]) -> None:
    for each in prepared:
        each.close()


"""A pool of prepared proxy connections on trio.

The policy is the core's :class:`~socks_sansio.PoolKeeper` and
:class:`~socks_sansio.ConnectPlan` (``prepare=``, ``prepared=``); this module
gives the keeper a nursery of its own (the background task and one watcher per
idle connection) and two events, and performs its operations.
"""

from __future__ import annotations

import contextlib
import ssl as _ssl
from collections.abc import Sequence
from types import TracebackType
from typing import Any, final

import trio

from socks_sansio import ConnectPlan, PoolKeeper, PoolStats, ProxySpec, Stepper
from socks_sansio import client_operations as ops

from ._common import logger
from .trio import Tunnel
from .trio_link import IO_ERRORS, Link

__all__ = ["ProxyPool"]


@final
class _Prepared:
    """A pooled connection, its plan (the last hop's handshake waiting in status READY), and its watcher.

    The watcher task waits to receive on the idle connection: anything it gets
    (an octet, EOF, an error) means the proxy closed it or broke the protocol,
    and marks it ``dead``. Cancelling it (``scope``) before use loses nothing.
    """

    __slots__ = ("dead", "done", "link", "plan", "scope")

    def __init__(self, plan: ConnectPlan, link: Link) -> None:
        self.plan = plan
        self.link = link
        self.dead = False
        self.scope = trio.CancelScope()
        self.done = trio.Event()

    def alive(self) -> bool:
        return not self.dead

    async def watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self.scope:
            task_status.started()
            assert self.link.stream is not None
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self.link.stream.receive_some(1)
            self.dead = True
            logger.debug("trio: pool: the proxy closed or talked on a prepared connection")
        self.done.set()

    async def stop_watching(self) -> None:
        self.scope.cancel()
        await self.done.wait()

    async def discard(self) -> None:
        """Close it, even when cancelled (the watcher, if still receiving, sees it closed)."""
        self.scope.cancel()
        await self.link.aclose()


@final
class ProxyPool:
    """Connections through a proxy (or a chain) prepared in advance: a new tunnel costs one round trip.

    A prepared connection is connected and authenticated: TCP (and TLS for
    ``https://``) to the proxy, every hop of a chain but the last one's
    request, the SOCKS5 greeting and RFC 1929 exchange. :meth:`open_tcp_stream`
    sends only the request and waits for its reply. SOCKS4 and HTTP proxies
    have nothing before the request, so for them a prepared connection saves
    the TCP (and TLS) set-up.

    Use it as ``async with ProxyPool(...) as pool:``: it runs a nursery of its
    own, where a background task keeps *size* connections ready (opening a new
    one whenever one is taken, discarded or expired) and a watcher per idle
    connection notices when the proxy closes it. A connection older than
    *idle_timeout*, or found closed, is discarded and the next one tried; when
    none is left (a miss) the call connects cold, as ``open_tcp_stream``
    does, within the same *timeout*. A pooled connection whose request fails
    because the connection broke is replaced by a cold connect too. Each
    connection becomes exactly one tunnel.

    Args:
        proxy: a proxy URL or :class:`~socks_sansio.ProxyURL`, or a sequence of them (a chain).
        size: how many prepared connections to keep ready.
        idle_timeout: seconds a prepared connection may wait unused. Keep it
            below the proxy's own limit for an unfinished negotiation (Dante's
            ``timeout.negotiate``, ``socks-sansio serve --negotiation-timeout``: 10 s).
        connect_timeout: the deadline for preparing one connection (in the background).
        proxy_ssl: the context for ``https://`` proxies (default: :func:`ssl.create_default_context`).
        nodelay: set ``TCP_NODELAY``.
        keepalive: set ``SO_KEEPALIVE``.

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
        proxy_ssl: _ssl.SSLContext | None = None,
        nodelay: bool = True,
        keepalive: bool = True,
    ) -> None:
        self._keeper: PoolKeeper[_Prepared] = PoolKeeper(
            proxy, size=size, idle_timeout=idle_timeout, clock=trio.current_time
        )
        self._connect_timeout = connect_timeout
        self._proxy_ssl = proxy_ssl
        self._nodelay = nodelay
        self._keepalive = keepalive
        self._wake = trio.Event()
        self._changed = trio.Event()
        self._manager: Any = None  # the nursery's async context manager, entered by __aenter__
        self._nursery: trio.Nursery | None = None

    @property
    def stats(self) -> PoolStats:
        """Hits, misses, discarded, opened and failed connections so far."""
        return self._keeper.idle.stats

    @property
    def ready(self) -> int:
        """How many prepared connections wait now."""
        return len(self._keeper.idle)

    def _running(self) -> trio.Nursery:
        if self._keeper.idle.closed:
            raise RuntimeError("this ProxyPool is closed")
        if self._nursery is None:
            raise RuntimeError("enter the pool first: async with ProxyPool(...) as pool")
        return self._nursery

    # -- the keeper's operations ---------------------------------------------------------

    async def _drive(self, steps: Any) -> None:
        await Stepper(steps).arun(self._perform)

    async def _perform(self, operation: ops.PoolOperation) -> object:
        if isinstance(operation, ops.Prepare):
            return await self._prepare()
        if isinstance(operation, ops.Discard):
            for each in operation.connections:
                await each.discard()
        elif isinstance(operation, ops.Notify):
            self._changed.set()
            self._changed = trio.Event()
            self._wake.set()
        elif isinstance(operation, ops.WaitChanged):
            await self._changed.wait()
        elif isinstance(operation, ops.Pause):
            await trio.sleep(operation.seconds)
        else:  # ops.Wait: a take, a close or a refill wakes it
            wake = self._wake = trio.Event()
            with trio.move_on_after(float("inf") if operation.seconds is None else operation.seconds):
                await wake.wait()
        return None

    async def _prepare(self) -> _Prepared:
        nursery = self._running()
        plan = ConnectPlan.preparing(self._keeper.chain, timeout=self._connect_timeout, io_errors=IO_ERRORS,
                                     clock=trio.current_time)  # fmt: skip
        link = Link(plan, proxy_ssl=self._proxy_ssl, nodelay=self._nodelay, keepalive=self._keepalive)
        await link.run(plan.run())
        prepared = _Prepared(plan, link)
        try:
            await nursery.start(prepared.watch)
        except BaseException:
            await link.aclose()
            raise
        return prepared

    # -- the API -------------------------------------------------------------------------

    async def fill(self) -> None:
        """Get *size* prepared connections ready now (a warm-up before the first call).

        Raises:
            ProxyError: preparing a connection failed (``ProxyAuthError`` when the
                proxy refuses the credentials), as ``open_tcp_stream`` would raise it.
            RuntimeError: the pool is closed or not entered.
        """
        self._running()
        await self._drive(self._keeper.fill())

    async def open_tunnel(
        self,
        host: str | bytes,
        port: int,
        *,
        timeout: float | None = None,
        ssl: _ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        https_compatible: bool = False,
    ) -> Tunnel:
        """Like :meth:`open_tcp_stream`, but return a :class:`Tunnel` (the stream and its report)."""
        self._running()
        idle = self._keeper.idle
        prepared, doomed = idle.take(_Prepared.alive)
        self._wake.set()  # the background task replaces what was taken or discarded
        for each in doomed:
            await each.discard()
        if prepared is not None:
            await prepared.stop_watching()
            if prepared.dead:  # it closed while we were taking it: a miss after all
                await prepared.link.aclose()
                idle.lost()
                prepared = None
        plan = ConnectPlan.for_call(
            host, port, proxy=self._keeper.chain, tls=ssl is not None, server_hostname=server_hostname, timeout=timeout,
            io_errors=IO_ERRORS, clock=trio.current_time,
            prepared=None if prepared is None else prepared.plan.handshake,
        )  # fmt: skip
        link = Link(plan, tls=ssl, proxy_ssl=self._proxy_ssl, nodelay=self._nodelay, keepalive=self._keepalive,
                    https_compatible=https_compatible,
                    stream=None if prepared is None else prepared.link.stream,
                    socket_stream=None if prepared is None else prepared.link.socket_stream)  # fmt: skip
        await link.run(plan.run())
        if plan.prepared_lost:
            idle.lost()
        logger.debug("trio: pool: %s for %s", "miss" if prepared is None or plan.prepared_lost else "hit",
                     plan.target)  # fmt: skip
        assert link.stream is not None
        return Tunnel(link.stream, plan.info())

    async def open_tcp_stream(
        self,
        host: str | bytes,
        port: int,
        *,
        timeout: float | None = None,
        ssl: _ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        https_compatible: bool = False,
    ) -> trio.abc.Stream:
        """Open a stream to *host*:*port* through the pool's proxies, as ``open_tcp_stream`` does.

        Args:
            host, port, timeout, ssl, server_hostname, https_compatible: as for
                :func:`~socks_sansio.adapters.trio.open_tcp_stream`; *timeout* covers
                the request on a prepared connection and, on a miss, the whole cold connect.

        Raises:
            RuntimeError: the pool is closed or not entered.
            ProxyError, OSError, trio.BrokenResourceError: as ``open_tcp_stream``.
        """
        tunnel = await self.open_tunnel(
            host, port, timeout=timeout, ssl=ssl, server_hostname=server_hostname, https_compatible=https_compatible
        )
        return tunnel.stream

    async def aclose(self) -> None:
        """Stop the background work and close every idle connection. Idempotent.

        Tunnels already handed out are the caller's and stay open.
        """
        for each in self._keeper.idle.close():
            await each.discard()
        self._changed.set()
        self._wake.set()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def __aenter__(self) -> ProxyPool:
        if self._manager is not None or self._keeper.idle.closed:
            raise RuntimeError("a ProxyPool can be entered once")
        self._manager = trio.open_nursery()
        self._nursery = await self._manager.__aenter__()
        self._nursery.start_soon(self._drive, self._keeper.maintain())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self.aclose()
        finally:
            self._nursery = None
            await self._manager.__aexit__(exc_type, exc, tb)

    def __repr__(self) -> str:
        return repr(self._keeper)

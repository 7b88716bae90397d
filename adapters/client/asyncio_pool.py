"""A pool of prepared proxy connections on asyncio.

The policy is the core's :class:`~socks_sansio.PoolKeeper` and
:class:`~socks_sansio.ConnectPlan` (``prepare=``, ``prepared=``); this module
gives the keeper a background task and two events (one wakes the task, one
tells ``fill()`` that refills ended), and performs its operations.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as _ssl
from collections.abc import Sequence
from types import TracebackType
from typing import Any, final

from socks_sansio import ConnectPlan, PoolKeeper, PoolStats, ProxySpec, Stepper
from socks_sansio import client_operations as ops

from ._common import logger
from .asyncio import Tunnel, _tls_context, tunnel_of
from .asyncio_link import STREAM_LIMIT, Link

__all__ = ["ProxyPool"]


@final
class _Prepared:
    """A pooled connection: its link, whose plan left the last hop's handshake in status READY."""

    __slots__ = ("link", "plan", "received")

    def __init__(self, plan: ConnectPlan, link: Link) -> None:
        assert link.protocol is not None
        self.plan = plan
        self.link = link
        self.received = link.protocol.received

    def silent(self) -> bool:
        """Whether the proxy said nothing since (no octet, no EOF, no error)."""
        link, protocol = self.link, self.link.protocol
        assert protocol is not None
        assert link.reader is not None
        return (
            protocol.received == self.received
            and not protocol.peer_eof
            and not link.transport.is_closing()
            and link.reader.exception() is None
        )


@final
class ProxyPool:
    """Connections through a proxy (or a chain) prepared in advance: a new tunnel costs one round trip.

    A prepared connection is connected and authenticated: TCP (and TLS for
    ``https://``) to the proxy, every hop of a chain but the last one's
    request, the SOCKS5 greeting and RFC 1929 exchange. :meth:`open_connection`
    sends only the request and waits for its reply. SOCKS4 and HTTP proxies
    have nothing before the request, so for them a prepared connection saves
    the TCP (and TLS) set-up.

    A background task keeps *size* connections ready: it starts when the pool
    is entered (``async with``) and opens a new one whenever one is taken,
    discarded or expired. A connection taken from the pool is checked first:
    one older than *idle_timeout*, or on which the proxy sent anything or
    closed, is discarded and the next one tried; when none is left (a miss)
    the call connects cold, as ``open_connection`` does, within the same
    *timeout*. A pooled connection whose request fails because the connection
    broke is replaced by a cold connect too. Each connection becomes exactly
    one tunnel. Use it from one event loop.

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
        limit: the StreamReader's buffer limit.

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
        limit: int = STREAM_LIMIT,
    ) -> None:
        self._keeper: PoolKeeper[_Prepared] = PoolKeeper(proxy, size=size, idle_timeout=idle_timeout)
        self._connect_timeout = connect_timeout
        self._proxy_ssl = proxy_ssl
        self._nodelay = nodelay
        self._keepalive = keepalive
        self._limit = limit
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._maintainer: asyncio.Task[None] | None = None

    @property
    def stats(self) -> PoolStats:
        """Hits, misses, discarded, opened and failed connections so far."""
        return self._keeper.idle.stats

    @property
    def ready(self) -> int:
        """How many prepared connections wait now."""
        return len(self._keeper.idle)

    def _start(self) -> None:
        if self._keeper.idle.closed:
            raise RuntimeError("this ProxyPool is closed")
        if self._maintainer is None:
            self._maintainer = asyncio.get_running_loop().create_task(self._drive(self._keeper.maintain()))

    # -- the keeper's operations ---------------------------------------------------------

    async def _drive(self, steps: Any) -> None:
        await Stepper(steps).arun(self._perform)

    async def _perform(self, operation: ops.PoolOperation) -> object:
        if isinstance(operation, ops.Prepare):
            return await self._prepare()
        if isinstance(operation, ops.Discard):
            _abort_all(operation.connections)
        elif isinstance(operation, ops.Notify):
            self._changed.set()
            self._changed = asyncio.Event()
            self._wake.set()
        elif isinstance(operation, ops.WaitChanged):
            await self._changed.wait()
        elif isinstance(operation, ops.Pause):
            await asyncio.sleep(operation.seconds)
        else:  # ops.Wait: a take, a close or a refill wakes it
            self._wake.clear()
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), operation.seconds)
        return None

    async def _prepare(self) -> _Prepared:
        plan = ConnectPlan.preparing(self._keeper.chain, timeout=self._connect_timeout)
        link = Link(plan, proxy_ssl=self._proxy_ssl, nodelay=self._nodelay, keepalive=self._keepalive,
                    limit=self._limit)  # fmt: skip
        await link.run(plan.run())
        return _Prepared(plan, link)

    # -- the API -------------------------------------------------------------------------

    async def fill(self) -> None:
        """Get *size* prepared connections ready now (a warm-up before the first call).

        Raises:
            ProxyError: preparing a connection failed (``ProxyAuthError`` when the
                proxy refuses the credentials), as ``open_connection`` would raise it.
            RuntimeError: the pool is closed.
        """
        self._start()
        await self._drive(self._keeper.fill())

    async def open_tunnel(
        self,
        host: str,
        port: int,
        *,
        timeout: float | None = None,
        ssl: _ssl.SSLContext | bool | None = None,
        server_hostname: str | None = None,
    ) -> Tunnel:
        """Connect to *host*:*port* through the pool's proxies, as ``open_tunnel`` does.

        Args:
            host, port, timeout, ssl, server_hostname: as for
                :func:`~socks_sansio.adapters.asyncio.open_tunnel`; *timeout*
                covers the request on a prepared connection and, on a miss, the
                whole cold connect.

        Raises:
            RuntimeError: the pool is closed.
            ProxyError, OSError: as ``open_tunnel``.
        """
        self._start()
        context = _tls_context(ssl)
        prepared, doomed = self._keeper.idle.take(_Prepared.silent)
        self._wake.set()  # the background task replaces what was taken or discarded
        _abort_all(doomed)
        plan = ConnectPlan.for_call(
            host, port, proxy=self._keeper.chain, tls=context is not None, server_hostname=server_hostname,
            timeout=timeout, prepared=None if prepared is None else prepared.plan.handshake,
        )  # fmt: skip
        link = Link(plan, tls=context, proxy_ssl=self._proxy_ssl, nodelay=self._nodelay, keepalive=self._keepalive,
                    limit=self._limit)  # fmt: skip
        if prepared is not None:
            link.adopt(prepared.link)
        await link.run(plan.run())
        if plan.prepared_lost:
            self._keeper.idle.lost()
        logger.debug("asyncio: pool: %s for %s", "miss" if prepared is None or plan.prepared_lost else "hit",
                     plan.target)  # fmt: skip
        return tunnel_of(plan, link)

    async def open_connection(
        self,
        host: str,
        port: int,
        *,
        timeout: float | None = None,
        ssl: _ssl.SSLContext | bool | None = None,
        server_hostname: str | None = None,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Like ``open_connection``, from the pool. Arguments as in :meth:`open_tunnel`."""
        tunnel = await self.open_tunnel(host, port, timeout=timeout, ssl=ssl, server_hostname=server_hostname)
        return tunnel.reader, tunnel.writer

    async def aclose(self) -> None:
        """Stop the background task and close every idle connection. Idempotent.

        Tunnels already handed out are the caller's and stay open.
        """
        _abort_all(self._keeper.idle.close())
        self._changed.set()
        maintainer = self._maintainer
        if maintainer is not None:
            maintainer.cancel()
            await asyncio.wait({maintainer})  # a cancellation of this call is not swallowed
            self._maintainer = None
            if not maintainer.cancelled():
                maintainer.result()  # None, or what broke the background task

    async def __aenter__(self) -> ProxyPool:
        self._start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return repr(self._keeper)


def _abort_all(prepared: Sequence[_Prepared]) -> None:
    for each in prepared:
        each.link.abort()

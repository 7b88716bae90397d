"""The proxy server on asyncio: SOCKS5, SOCKS4/4a and HTTP CONNECT on one port.

Strategy: every decision about a client is its :class:`~socks_sansio.ServerSession`'s;
this module performs the session's operations from protocol callbacks, so
nothing waits in a coroutine unless a step is slow. One :class:`_Client`
protocol per connection feeds the client's bytes to the session as they
arrive (``buffer_updated``) and writes what it sends at once. One
``loop.call_at`` timer per connection enforces the time bound of the operation
under way (the negotiation, a lookup, a dial, the BIND wait) and, later, the
idle time-out. Only slow steps run in a task: the credential check
(``asyncio.to_thread``: PBKDF2), a lookup, a dial, a dial through upstream
proxies (this package's asyncio client), BIND's listener, UDP's socket. The
client's transport is paused while one runs.

When the session hands the tunnel over, :meth:`_Client._start_relay` gives both
transports to :class:`~.asyncio_relay.RelaySide` protocols, delivering first
what either side sent before (and their EOFs). An idle tunnel holds two
transports, two small protocol objects, its record, its session's counters and
that timer: the session's handshake, its buffers and any task are released.

On Linux a CONNECT tunnel between two plain TCP sockets moves to ``splice()``
(:class:`~.splice.SpliceRelay`, through pipes from one
:class:`~.splice.PipePool` per server) once it has relayed ``splice_after``
octets (256 KiB) by copying: short and idle tunnels stay on the copying relay,
which costs less to set up. ``splice_after=0`` splices from the start. TLS on
either end, ``splice=False`` (``--no-splice``) and byte rate limits (charged in
the copying relay) keep the copying relay.

``tls_listen`` addresses are served by ``loop.create_server(ssl=...)``: the
protocol sees the decrypted bytes, so HTTPS proxying and SOCKS over TLS need
nothing else. TLS has no half-close, so when either end of a tunnel is TLS an
EOF from either side ends the whole tunnel (after flushing what was sent).

:func:`run` (``socks-sansio serve``) makes the event loop the config's
``event_loop`` names (``--loop``): uvloop's (:func:`event_loop_factory`) or
asyncio's own; :class:`ProxyServer` runs on whatever loop runs it, and logs
which one at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable
from typing import Final

from socks_sansio import (
    Address,
    Outcome,
    OutcomeKind,
    ServerConfig,
    ServerStats,
    StoreOutage,
    __version__,
)

from .asyncio_client import Client
from .health import StatusEndpoint
from .metrics import Metrics, NullMetrics, start_health, start_metrics
from .redis_store import RedisRateStore
from .splice import PipePool, SpliceRelay
from .tls import server_ssl_context, upstream_ssl_context

__all__ = ["ProxyServer", "event_loop_factory", "event_loop_name", "run", "serve"]

server_logger: Final = logging.getLogger("socks_sansio.server")

class ProxyServer:
    """A running (or ready to run) proxy server.

    Use ``async with ProxyServer(config) as server:`` (or :meth:`start` and
    :meth:`aclose`); :attr:`addresses` are the bound addresses (useful with port 0),
    :attr:`metrics_address` the metrics endpoint's. :attr:`limiter` holds the
    rate limits' buckets and :attr:`metrics` the Prometheus metrics (a
    :class:`NullMetrics` until :meth:`start`, and when ``metrics_listen`` is unset).
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.stats = ServerStats()
        self.limiter = config.rate_limiter()
        self.metrics: Metrics = NullMetrics()
        self.health: StatusEndpoint | None = None
        self.accepting = False  # what /healthz says; False again once draining starts
        self.outage = StoreOutage(config.rate_store_fail)
        self.rate_store: RedisRateStore | None = None
        self.addresses: list[tuple[str, int]] = []
        self._servers: list[asyncio.Server] = []
        self._clients: set[Client] = set()
        self._drained: asyncio.Future[None] | None = None
        self._stats_task: asyncio.Task[None] | None = None
        self.upstream_ssl: ssl.SSLContext | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        # One receive buffer for every connection of this server (idle tunnels hold none). Per server,
        # not per process: servers running on event loops in different threads must not share it.
        self.relay_buffer = [memoryview(bytearray(config.buffer_size))]
        # The splice relay's pipes (None: every tunnel copies). Byte rate limits are charged by the copying relay.
        self.pipes = PipePool() if config.splice_wanted and SpliceRelay.supported() else None
        self.spliced = 0
        """How many tunnels were relayed with splice() (the others copied)."""

    async def __aenter__(self) -> ProxyServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """Where the metrics endpoint listens (``None``: no ``metrics_listen``, or not started)."""
        return self.metrics.address

    async def start(self) -> None:
        """Bind every listen address (plain ones first, then TLS ones) and the metrics endpoint; start accepting.

        Raises:
            OSError: an address could not be bound (nothing stays bound).
        """
        loop = self.loop = asyncio.get_running_loop()
        config = self.config
        tls = server_ssl_context(config)
        self.upstream_ssl = upstream_ssl_context(config)
        self.metrics = start_metrics(config, self._ready)
        try:
            self.health = start_health(config, self._ready)
        except BaseException:
            await asyncio.to_thread(self.metrics.close)
            raise
        if config.rate_store is not None:
            self.rate_store = RedisRateStore(config.rate_store, config.rate_store_timeout)
        plain = [(host, port, None) for host, port in config.listen]
        try:
            for host, port, context in [*plain, *((h, p, tls) for h, p in config.tls_listen)]:
                server = await loop.create_server(
                    lambda: Client(self),
                    host=host,
                    port=port,
                    backlog=config.backlog,
                    reuse_port=config.reuse_port or None,
                    ssl=context,
                    ssl_handshake_timeout=config.negotiation_timeout if context else None,
                )
                self._servers.append(server)
                for sock in server.sockets:
                    self.addresses.append(sock.getsockname()[:2])
        except BaseException:
            for server in self._servers:
                server.close()
            await self._close_endpoints()
            raise
        self.accepting = True
        server_logger.info(
            "listening on %s (event loop: %s)", ", ".join(f"{h}:{p}" for h, p in self.addresses), event_loop_name(loop)
        )
        if self.metrics.address is not None:
            host, port = self.metrics.address
            server_logger.info("metrics on http://%s/metrics", Address(host, port).authority)
        server_logger.info(
            "relay: %s",
            "splice() for plain-TCP CONNECT tunnels, copying for the rest"
            if self.pipes is not None
            else "copying (splice off: --no-splice, a byte rate limit, or not Linux)",
        )
        if config.stats_interval > 0:
            self._stats_task = loop.create_task(self._log_stats())

    def _ready(self) -> bool:
        return self.accepting  # read from the health endpoint's thread: one attribute, no lock needed

    def start_draining(self) -> None:
        """Answer ``/healthz`` with 503 from now on (a balancer stops sending clients); keep serving."""
        self.accepting = False

    async def _close_endpoints(self) -> None:
        endpoints = [endpoint.close for endpoint in (self.metrics, self.health) if endpoint is not None]
        for close in endpoints:
            await asyncio.to_thread(close)  # joins the endpoint's thread: not on the event loop
        if self.rate_store is not None:
            await self.rate_store.aclose()

    async def aclose(self, grace: float | None = None) -> None:
        """Stop accepting, let connections finish for *grace* seconds (default: the config's), then end them."""
        self.accepting = False
        for server in self._servers:
            server.close()
        if self._clients:
            self._drained = asyncio.get_running_loop().create_future()
            await asyncio.wait({self._drained}, timeout=self.config.shutdown_grace if grace is None else grace)
            tasks = [c.task for c in self._clients if c.task is not None]
            for connection in list(self._clients):
                connection.finish(Outcome(OutcomeKind.CANCELLED))  # shutdown after the grace period
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._stats_task is not None:
            self._stats_task.cancel()
            await asyncio.gather(self._stats_task, return_exceptions=True)
        await self._close_endpoints()
        if self.pipes is not None:
            self.pipes.close()  # every relay is closed by now: their pipes came back
        server_logger.info("stopped; %s", self.stats.line())

    async def serve_forever(self) -> None:
        """Run until cancelled."""
        await asyncio.gather(*(server.serve_forever() for server in self._servers))

    async def _log_stats(self) -> None:
        while True:
            await asyncio.sleep(self.config.stats_interval)
            server_logger.info(self.stats.line())

    def joined(self, connection: Client) -> None:
        self._clients.add(connection)

    def left(self, connection: Client) -> None:
        self._clients.discard(connection)
        if not self._clients and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes the event loop for a config's ``event_loop`` (*choice*); ``None``: asyncio's own.

    ``"uvloop"`` and ``"auto"`` give ``uvloop.new_event_loop`` when uvloop can be
    imported; ``"auto"`` falls back to asyncio's loop, and ``"asyncio"`` always takes it.

    Raises:
        RuntimeError: ``"uvloop"``, and uvloop cannot be imported.
    """
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError as exc:
        if choice == "uvloop":
            raise RuntimeError(f"--loop uvloop: uvloop cannot be imported ({exc}); install the 'uvloop' extra") from exc
        return None
    return uvloop.new_event_loop


def event_loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """Which event loop *loop* is, for the start-up log: ``"uvloop 0.23.0"`` or ``"asyncio"``."""
    package = type(loop).__module__.partition(".")[0]
    if package == "uvloop":
        return f"uvloop {getattr(sys.modules.get('uvloop'), '__version__', '?')}"
    return "asyncio" if package == "asyncio" else f"{package} ({type(loop).__qualname__})"


def run(config: ServerConfig) -> None:
    """Run a server until SIGINT or SIGTERM (``socks-sansio serve``), then drain it, on the config's event loop.

    The loop is the one ``config.event_loop`` names (:func:`event_loop_factory`):
    uvloop's, or asyncio's own. On the signal ``/healthz`` turns 503 at once; the
    server keeps serving for ``drain_delay`` seconds (so a balancer takes it out),
    then stops accepting and lets tunnels finish for ``shutdown_grace`` seconds.

    Raises:
        RuntimeError: ``event_loop="uvloop"`` and uvloop cannot be imported.
    """
    factory = event_loop_factory(config.event_loop)
    if factory is None:
        asyncio.run(_main(config))
    elif sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(_main(config))
    else:  # pragma: no cover - Python 3.10: no asyncio.Runner; uvloop.run is asyncio.run on a uvloop loop
        import uvloop

        uvloop.run(_main(config))


async def _main(config: ServerConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    server = ProxyServer(config)
    await server.start()
    print(f"socks-sansio {__version__} listening on " + ", ".join(f"{h}:{p}" for h, p in server.addresses),
          file=sys.stderr, flush=True)  # fmt: skip
    try:
        await stop.wait()
        server.start_draining()
        if config.drain_delay > 0:
            server_logger.info("draining: /healthz says 503; serving %s s more before closing", config.drain_delay)
            await asyncio.sleep(config.drain_delay)
        server_logger.info("shutting down: no new clients; draining for up to %s s", config.shutdown_grace)
    finally:
        await server.aclose()


async def serve(config: ServerConfig, *, ready: Callable[[ProxyServer], Awaitable[None] | None] | None = None) -> None:
    """Run a server until cancelled (SIGINT/SIGTERM handling is the CLI's job)."""
    async with ProxyServer(config) as server:
        if ready is not None:
            result = ready(server)
            if result is not None:
                await result
        await server.serve_forever()

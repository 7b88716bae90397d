"""The proxy server on trio: SOCKS5, SOCKS4/4a and HTTP CONNECT on one port.

Strategy: every decision about a client is its :class:`~socks_sansio.ServerSession`'s;
each client runs in a task of its own that performs the session's operations
(:class:`~.trio_relay.Connection`) and then relays. A tunnel between two
plain TCP streams goes to the server's one :class:`~.trio_hub.RelayHub` (on
Linux): one task relays all of them, so an idle tunnel costs two sockets and
no task, and its client's task ends there. TLS tunnels, and every tunnel where
the hub is not supported, are relayed by a :class:`~.trio_relay.Pump` per
direction; UDP by :func:`~.trio_relay.relay_datagrams`.

Structure, the trio way: :meth:`TrioProxyServer.serve` owns one nursery for
the client tasks and, inside it, a cancel scope around the accept loops.
:meth:`TrioProxyServer.shutdown` cancels only that scope (no new clients),
waits up to the grace period for the clients to finish, then cancels them.
Time limits are cancel scopes: each operation's bound, and the relay's idle
time-out, a scope whose deadline every transferred chunk pushes back.

``tls_listen`` addresses wrap each accepted connection in a server-side
:class:`trio.SSLStream`; its handshake runs first, inside the negotiation
time-out, and the session then reads the decrypted bytes, so HTTPS proxying
(TLS, then CONNECT) and SOCKS over TLS need nothing else. A client's TLS
session is closed with ``close_notify``; one that ends without it (a "ragged"
EOF) counts as an ordinary EOF. Errors are caught inside the tasks that raise
them, so nothing leaves a nursery wrapped in an exception group.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import signal
import socket
import ssl
import sys
from typing import Final

import trio

from socks_sansio import (
    Address,
    Command,
    Outcome,
    OutcomeKind,
    ServerConfig,
    ServerSession,
    ServerStats,
    StartRelay,
    StartUdpRelay,
    __version__,
)

from .health import StatusEndpoint
from .metrics import Metrics, NullMetrics, start_health, start_metrics
from .tls import server_ssl_context, upstream_ssl_context
from .trio_hub import RelayHub
from .trio_relay import READ, STREAM_ERRORS, Connection, Pump, error_name, receive, relay_datagrams

__all__ = ["TrioProxyServer", "run"]

server_logger: Final = logging.getLogger("socks_sansio.server")
# accept() failures that mean "out of resources for now", not "the listener is broken".
_ACCEPT_RETRY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
# How long a client's TLS session may take to send its close_notify at the end.
_TLS_CLOSE_TIMEOUT: Final = 1.0


class TrioProxyServer:
    """A proxy server on trio.

    Run it with ``await nursery.start(server.serve)`` (which returns the bound
    addresses once every listener is up) and stop it by cancelling that
    nursery (at once) or with :meth:`shutdown` (graceful). One instance serves
    once.

    Attributes:
        config: the settings.
        stats: counters, readable while the server runs.
        addresses: the bound ``(host, port)`` pairs (useful with port 0): the
            plain ``listen`` addresses first, then the ``tls_listen`` ones.
        limiter: the rate limits' buckets.
        metrics: the Prometheus metrics (a :class:`NullMetrics` until :meth:`bind`,
            and when ``metrics_listen`` is unset).
    """

    def __init__(self, config: ServerConfig) -> None:
        if config.rate_store is not None:
            raise ValueError(
                "--rate-store needs --backend asyncio: the redis package's client runs on asyncio, not trio"
            )
        self.config = config
        self.stats = ServerStats()
        self.limiter = config.rate_limiter()
        self.metrics: Metrics = NullMetrics()
        self.health: StatusEndpoint | None = None
        self.accepting = False  # what /healthz says; False again once draining starts
        self.addresses: list[tuple[str, int]] = []
        # Each listener with the TLS context of its connections (None: plain).
        self._listeners: list[tuple[trio.SocketListener, ssl.SSLContext | None]] = []
        self._upstream_ssl: ssl.SSLContext | None = None
        self._accepting = trio.CancelScope()
        self._grace = config.shutdown_grace
        self._client_left = trio.Event()
        self._stopped = trio.Event()
        self._started = False
        # Plain-TCP tunnels, relayed by one task (Linux); None: every tunnel is relayed by a Pump.
        self._hub: RelayHub | None = None

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """Where the metrics endpoint listens (``None``: no ``metrics_listen``, or not bound yet)."""
        return self.metrics.address

    async def bind(self) -> list[tuple[str, int]]:
        """Bind and listen on every configured address (done by :meth:`serve` when not done yet).

        The TLS contexts (the listeners' certificate, the CAs for ``https://``
        upstreams) are loaded first, so a bad file fails before anything is bound.
        The metrics endpoint (``metrics_listen``) is bound last; :meth:`serve` closes it.

        Returns:
            the bound addresses, also kept in :attr:`addresses`.

        Raises:
            OSError: an address could not be resolved or bound, or a certificate,
                key or CA file could not be read (``ssl.SSLError`` is an OSError);
                nothing stays bound.
        """
        if self._listeners:
            return self.addresses
        tls = server_ssl_context(self.config)
        self._upstream_ssl = upstream_ssl_context(self.config)
        plain = [(address, None) for address in self.config.listen]
        try:
            for (host, port), context in [*plain, *((address, tls) for address in self.config.tls_listen)]:
                infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
                for family, type_, proto, _name, sockaddr in dict.fromkeys(infos):
                    self._listeners.append((await self._listen(family, type_, proto, sockaddr), context))
            self.metrics = start_metrics(self.config, self._ready)
            self.health = start_health(self.config, self._ready)
        except BaseException:
            self._close_listeners()
            self._listeners.clear()
            await trio.to_thread.run_sync(self.metrics.close)
            raise
        self.addresses = [listener.socket.getsockname()[:2] for listener, _ in self._listeners]
        return self.addresses

    def _close_listeners(self) -> None:
        for listener, _ in self._listeners:
            listener.socket.close()

    async def _listen(self, family: int, type_: int, proto: int, sockaddr: object) -> trio.SocketListener:
        sock = trio.socket.socket(family, type_, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.config.reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            await sock.bind(sockaddr)
            sock.listen(self.config.backlog)
        except BaseException:
            sock.close()
            raise
        return trio.SocketListener(sock)

    async def serve(self, *, task_status: trio.TaskStatus[list[tuple[str, int]]] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind (unless :meth:`bind` was called), accept and serve clients until cancelled or shut down.

        Reports the bound addresses through *task_status* once every listener is up.

        Raises:
            OSError: binding failed (before *task_status* is reported).
            RuntimeError: this server already served.
        """
        if self._started:
            raise RuntimeError("a TrioProxyServer serves once; make a new one")
        self._started = True
        try:
            await self.bind()
            server_logger.info("listening on %s", ", ".join(f"{h}:{p}" for h, p in self.addresses))
            if self.metrics.address is not None:
                host, port = self.metrics.address
                server_logger.info("metrics on http://%s/metrics", Address(host, port).authority)
            async with trio.open_nursery() as clients:
                if self.config.stats_interval > 0:
                    clients.start_soon(self._log_stats)
                if RelayHub.supported():
                    config = self.config
                    self._hub = RelayHub(
                        config.buffer_size,
                        config.idle_timeout,
                        splice_after=config.splice_after if config.splice_wanted else None,
                    )
                    clients.start_soon(self._hub.run)
                self.accepting = True
                task_status.started(list(self.addresses))  # listening already: early clients wait in the backlog
                with self._accepting:
                    async with trio.open_nursery() as accepting:
                        for listener, context in self._listeners:
                            accepting.start_soon(self._accept_loop, listener, context, clients)
                # Shutting down: no new clients; the running ones get the grace period.
                self._close_listeners()
                with trio.move_on_after(self._grace):
                    while self.stats.active:
                        self._client_left = trio.Event()
                        await self._client_left.wait()
                clients.cancel_scope.cancel()
        finally:
            self.accepting = False
            self._close_listeners()
            with trio.CancelScope(shield=True):  # joins the endpoints' threads: not on the event loop
                await trio.to_thread.run_sync(self.metrics.close)
                if self.health is not None:
                    await trio.to_thread.run_sync(self.health.close)
            server_logger.info("stopped; %s", self.stats.line())
            self._stopped.set()

    def _ready(self) -> bool:
        return self.accepting  # read from the health endpoint's thread: one attribute, no lock needed

    def start_draining(self) -> None:
        """Answer ``/healthz`` with 503 from now on (a balancer stops sending clients); keep serving."""
        self.accepting = False

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop accepting, let tunnels drain for *grace* seconds (default: the config's), then cancel them.

        Returns when :meth:`serve` has returned (at once if it never ran).
        """
        self.accepting = False
        self._grace = self.config.shutdown_grace if grace is None else grace
        self._accepting.cancel()
        if self._started:
            await self._stopped.wait()

    async def _log_stats(self) -> None:
        while True:
            await trio.sleep(self.config.stats_interval)
            server_logger.info(self.stats.line())

    async def _accept_loop(
        self, listener: trio.SocketListener, context: ssl.SSLContext | None, clients: trio.Nursery
    ) -> None:
        while True:
            try:
                # The address accept() returns survives a client that already reset;
                # getpeername() on the accepted socket would not.
                sock, peer = await listener.socket.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_RETRY_ERRNOS:
                    raise
                server_logger.warning("accept failed (%s); pausing 0.1 s", exc)
                await trio.sleep(0.1)
                continue
            session = ServerSession(
                self.config, (str(peer[0]).partition("%")[0], int(peer[1])), stats=self.stats,
                limiter=self.limiter, metrics=self.metrics, clock=trio.current_time,
            )  # fmt: skip
            if self.stats.active > self.config.max_clients:
                sock.close()  # refused at once: the server stays up for everyone else
                session.finish(Outcome(OutcomeKind.BUSY))
                continue
            clients.start_soon(self._client, session, trio.SocketStream(sock), context)

    # -- one client -------------------------------------------------------------------

    async def _client(
        self, session: ServerSession, connection: trio.SocketStream, context: ssl.SSLContext | None
    ) -> None:
        """Serve one client: *connection* is its TCP stream, wrapped in TLS with *context* when given."""
        stream: trio.abc.Stream = connection
        if context is not None:
            stream = trio.SSLStream(connection, context, server_side=True)
        io = Connection(stream, connection, credentials=self.config.check_credentials, upstream_ssl=self._upstream_ssl)
        secured = False  # a TLS session is up: close it with close_notify
        outcome: Outcome | None = None
        handed = False  # the hub relays the tunnel: it closes the sockets and finishes the session
        try:
            if isinstance(stream, trio.SSLStream):
                with trio.move_on_at(session.negotiation_deadline):
                    await stream.do_handshake()
                    secured = True
            if context is not None and not secured:
                outcome = Outcome(OutcomeKind.NEGOTIATION_TIMEOUT)
            else:
                outcome = await self._serve(session, io)
                handed = outcome is None
        except STREAM_ERRORS as exc:
            outcome = Outcome(OutcomeKind.CONNECTION_ERROR, error_name(exc))
        except Exception as exc:  # a bug must not take the whole server down
            outcome = Outcome(OutcomeKind.INTERNAL_ERROR, type(exc).__name__)
            server_logger.exception("internal error serving %s:%s", *session.client)
        finally:
            io.close()
            if not handed:
                try:
                    if outcome is not None and secured:
                        with trio.move_on_after(_TLS_CLOSE_TIMEOUT), contextlib.suppress(*STREAM_ERRORS):
                            await stream.aclose()  # sends close_notify (at once when the session broke)
                finally:
                    # Closed without an await: under a cancelled scope any checkpoint here would
                    # raise Cancelled and skip the bookkeeping below.
                    connection.socket.close()
                    if io.upstream is not None:
                        _close_now(io.upstream)
                    self._ended(session, outcome or Outcome(OutcomeKind.CANCELLED))  # None: the server is stopping

    def _ended(self, session: ServerSession, outcome: Outcome) -> None:
        """A client is done (its sockets closed): count, report and log *outcome*."""
        session.finish(outcome)
        self._client_left.set()

    async def _serve(self, session: ServerSession, io: Connection) -> Outcome | None:
        """The session's steps, then what it hands over: the relay (``None``: the hub took it), or UDP."""
        handed = await io.run(session)
        if isinstance(handed, Outcome):
            return handed
        if isinstance(handed, StartRelay):
            assert io.upstream is not None
            early = handed.early + bytes(io.early)  # BIND: what the client sent while we waited for the peer
            return await self._relay(session, io.stream, io.upstream, early, handed.client_eof)
        assert isinstance(handed, StartUdpRelay)
        assert io.udp is not None
        return await self._associate(handed, io)

    async def _relay(
        self, session: ServerSession, client: trio.abc.Stream, upstream: trio.abc.Stream, early: bytes, eof: bool
    ) -> Outcome | None:
        """Relay until both directions ended, an error, or the idle time-out; always closes *upstream*.

        A tunnel between two plain TCP streams goes to the hub once the early
        octets are out: then the hub closes both streams and reports the
        outcome, and this returns ``None``.
        """
        hub = self._hub
        if hub is not None and type(client) is trio.SocketStream and type(upstream) is trio.SocketStream:
            try:
                pause = 0.0
                if early:
                    await upstream.send_all(early)
                    pause = session.moved(True, len(early), trio.current_time())
                if eof:
                    with contextlib.suppress(*STREAM_ERRORS):
                        await upstream.send_eof()
                request = session.request
                splice = request is not None and request.command is Command.CONNECT
                if hub.add(session, client, upstream, on_end=self._ended, client_eof=eof, pause=pause, splice=splice):
                    return None
            except BaseException:
                await trio.aclose_forcefully(upstream)
                raise
            await trio.aclose_forcefully(upstream)
            return Outcome(OutcomeKind.CANCELLED)  # the hub has stopped: so is the server
        half_close = isinstance(client, trio.abc.HalfCloseableStream) and isinstance(
            upstream, trio.abc.HalfCloseableStream
        )
        config = self.config
        pump = Pump(session, config.idle_timeout, config.buffer_size, half_close=half_close)
        try:
            if early:
                await upstream.send_all(early)
                pump.moved(0, len(early))
            if eof:
                await pump.ended(upstream)
            with pump.idle:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(pump.copy, upstream, client, 1)
                    if not eof:
                        nursery.start_soon(pump.copy, client, upstream, 0)
        finally:
            await trio.aclose_forcefully(upstream)
        if pump.errors:
            return Outcome(OutcomeKind.RELAY_ERROR, error_name(pump.errors[0]))
        if pump.idle.cancelled_caught:
            return Outcome(OutcomeKind.IDLE_TIMEOUT)
        return Outcome(OutcomeKind.OK)

    async def _associate(self, handed: StartUdpRelay, io: Connection) -> Outcome:
        """Relay datagrams while the control connection stays open (RFC 1928 §7)."""
        assert io.udp is not None
        error: BaseException | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay_datagrams, handed.policy, io.udp, nursery)
            try:
                while await receive(io.stream, READ):
                    pass  # a control connection's octets mean nothing
            except STREAM_ERRORS as exc:
                error = exc
            nursery.cancel_scope.cancel()
        if error is not None:
            raise error
        return Outcome(OutcomeKind.OK)


def _close_now(stream: trio.abc.Stream) -> None:
    """Close the socket under *stream* without a checkpoint (safe in a cancelled scope)."""
    layer: object = stream
    while not isinstance(layer, trio.SocketStream):
        layer = getattr(layer, "transport_stream", None)
        if layer is None:
            return
    layer.socket.close()


# -- the command line -----------------------------------------------------------------------


def run(config: ServerConfig) -> None:
    """Run a server until SIGINT or SIGTERM, then drain for ``shutdown_grace`` seconds (``socks-sansio serve``)."""
    trio.run(_main, config)


async def _main(config: ServerConfig) -> None:
    # Signals are taken over first, so one that arrives while binding still drains cleanly;
    # any after the first are ignored while draining (as the asyncio backend does).
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        server = TrioProxyServer(config)
        await server.bind()  # a bind error surfaces as a plain OSError
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(server.serve)
            print(
                f"socks-sansio {__version__} listening on " + ", ".join(f"{h}:{p}" for h, p in addresses),
                file=sys.stderr,
                flush=True,
            )
            async for _signum in signals:
                break
            server.start_draining()
            if config.drain_delay > 0:
                server_logger.info("draining: /healthz says 503; serving %s s more before closing", config.drain_delay)
                await trio.sleep(config.drain_delay)
            server_logger.info("shutting down: no new clients; draining for up to %s s", config.shutdown_grace)
            await server.shutdown()

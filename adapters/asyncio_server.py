"""The proxy server on asyncio: SOCKS5, SOCKS4/4a and HTTP CONNECT on one port.

Strategy: every client connection is driven by callbacks on one
:class:`_Client` protocol object; nothing waits in a coroutine unless a step
is slow. The client's bytes go into the core's :class:`ServerHandshake` as
they arrive (``buffer_updated``) and its output is written at once. One
``loop.call_later`` handle per connection bounds the negotiation (and is
re-armed for the dial, the BIND wait, then the idle time-out). Only slow steps
run in a task of their own: the credential check (``asyncio.to_thread``, a
hashed password costs PBKDF2), name resolution and the dial, a dial through
upstream proxies, setting up BIND's listener and UDP ASSOCIATE's socket. The
client's transport is paused while such a step runs; a success reply is
written only after the dial succeeded, and the access rules are checked on
the target's name and on every resolved address.

Once the tunnel is up, :meth:`_Client._start_relay` hands both transports to
:class:`_RelaySide` protocols (``transport.set_protocol``), which receive into
one buffer shared by the whole server and write straight to the other
transport, with the transports' own flow control (a full write buffer pauses
reading on the other side). The bytes the client pipelined after its request
and whatever the target sent (or its EOF) before the relay started are
delivered first. Each direction passes half-close through: an EOF from one
side shuts down the other side's write half, and the tunnel ends when both
directions are done, on an error, or when idle for ``idle_timeout`` (one
timer per tunnel, re-armed lazily from the time of the last read). An idle
tunnel holds two transports, two small protocol objects, its :class:`_Client`
record and that timer: the handshake, its buffers and any task are released
when the relay starts.

On Linux a CONNECT tunnel between two plain TCP sockets moves to
``splice()`` (:class:`~socks_sansio.adapters._splice.SpliceRelay`, through
pipes from one :class:`~socks_sansio.adapters._splice.PipePool` per server)
once it has relayed ``splice_after`` octets (256 KiB) by copying: both
transports stop reading (their write buffers are empty then), and from there
on the bytes never enter user space. Short and idle tunnels stay on the
copying relay, which costs less to set up (two descriptors duplicated, two
selector registrations and the relay's objects per tunnel: 75 us of CPU per
connect and 2.6 MiB per 1,000 idle tunnels when every tunnel spliced).
``splice_after=0`` splices from the start, the early bytes and EOFs going to
the relay. It keeps the same counts, half-close, idle time-out and single
close (:class:`_SplicedTunnel`). TLS on either end, ``splice=False``
(``--no-splice``) and byte rate limits (they are charged in
:class:`_RelaySide`) keep the copying relay.

With ``upstreams`` configured, a CONNECT whose target matches a rule naming
a proxy chain is dialled through that chain with this package's asyncio
client (:func:`socks_sansio.adapters.asyncio.open_connection`); the stream's
buffered bytes are taken and its transport joins the relay like a direct one.
The target's name is then not resolved here (the last upstream resolves it),
so the access rules see the name and IP literals only: network rules and the
``block_private`` SSRF guard apply to IP-literal targets only, and the
upstream should run its own guard. BIND whose expected peer is routed through
an upstream, and UDP ASSOCIATE on a server with any proxy route, are refused
with COMMAND_NOT_SUPPORTED (neither can follow a TCP proxy chain).
``tls_listen`` addresses are served by ``loop.create_server(ssl=...)``: the
protocol sees the decrypted bytes, so HTTPS proxying (TLS, then CONNECT) and
SOCKS over TLS need nothing else. TLS has no half-close, so when either end of
a tunnel is a TLS connection, an EOF from either side ends the whole tunnel
(after flushing what was sent).

Three places are meant as hooks: :meth:`_Client._negotiated` (the handshake
finished), :meth:`_Client._finish` (a connection ends, with its outcome,
protocol and byte counts) and :meth:`_RelaySide.buffer_updated` (a relay
direction received bytes).

Rate limits and metrics use them. Each server holds one
:class:`~socks_sansio._ratelimit.RateLimits` and one metrics object (a
Prometheus endpoint on ``metrics_listen``, bound by :meth:`ProxyServer.start`
and closed by :meth:`ProxyServer.aclose`). Once a request is read,
:meth:`_Client._negotiated` observes the handshake time and asks the limiter
to admit one more tunnel for the user who logged in and the client address;
when it may not, the request is refused with ``Failure.RATE_LIMITED`` (SOCKS5
REP 2, SOCKS4 91, HTTP 429 with ``Retry-After``). Byte limits live in the
copying relay: after forwarding a chunk, a :class:`_RelaySide` charges it to
the limiter and, if told to pause, stops reading its own transport for that
long (a timer, never a blocking wait; other tunnels go on). A side reads again
only when neither that pause nor the other side's full write buffer holds it,
and a pause counts as activity for the idle time-out.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final, cast

from socks_sansio import (
    NEED_DATA,
    PAUSED,
    Address,
    ClientClosed,
    Command,
    CredentialsReceived,
    Failure,
    LocalProtocolError,
    ProxyError,
    ProxyURL,
    RemoteProtocolError,
    ServerHandshake,
    TunnelRequested,
    UdpDatagram,
    encode_udp_datagram,
    parse_udp_datagram,
)

from . import asyncio as client
from ._metrics import Metrics, NullMetrics
from ._server_common import ServerConfig, ServerStats, failure_for, format_tunnel, server_logger, upstream_failure
from ._splice import PipePool, SpliceRelay

__all__ = ["ProxyServer", "serve"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# On Python 3.10 asyncio.wait_for raises asyncio.TimeoutError, not yet the builtin.
_TIMEOUTS: Final = (TimeoutError, asyncio.TimeoutError)
_now: Final = time.monotonic

# Where a client connection stands (_Client.phase).
_NEGOTIATING: Final = 0  # reading the handshake
_REQUESTED: Final = 1  # a slow step runs (dial, BIND or UDP set-up); the client is paused
_BIND_WAIT: Final = 2  # BIND: first reply sent, waiting for the peer
_UDP: Final = 3  # UDP ASSOCIATE: the client connection is the control channel
_RELAY: Final = 4  # the tunnel is up: the transports belong to _RelaySide protocols
_DONE: Final = 5


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
        # Whether relays charge bytes to the limiter (no byte limit: they never ask).
        limits = config.rate_limits
        self.byte_limits = limits.bytes_per_user is not None or limits.bytes_per_client is not None
        self.addresses: list[tuple[str, int]] = []
        self._servers: list[asyncio.Server] = []
        self._clients: set[_Client] = set()
        self._drained: asyncio.Future[None] | None = None
        self._stats_task: asyncio.Task[None] | None = None
        self._upstream_ssl: ssl.SSLContext | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # One receive buffer for every connection of this server (idle tunnels hold none). Per server,
        # not per process: servers running on event loops in different threads must not share it.
        self._relay_buffer = [memoryview(bytearray(config.buffer_size))]
        # The splice relay's pipes (None: every tunnel copies). Byte rate limits are charged by the copying relay.
        self._pipes = PipePool() if config.splice and SpliceRelay.supported() and not self.byte_limits else None
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
        loop = self._loop = asyncio.get_running_loop()
        tls = self.config.server_ssl_context() if self.config.tls_listen else None
        self._upstream_ssl = self.config.upstream_ssl_context() if self.config.upstreams else None
        self.metrics = self.config.metrics()
        plain = [(host, port, None) for host, port in self.config.listen]
        try:
            for host, port, context in [*plain, *((h, p, tls) for h, p in self.config.tls_listen)]:
                server = await loop.create_server(
                    lambda: _Client(self),
                    host=host,
                    port=port,
                    backlog=self.config.backlog,
                    reuse_port=self.config.reuse_port or None,
                    ssl=context,
                    ssl_handshake_timeout=self.config.negotiation_timeout if context else None,
                )
                self._servers.append(server)
                for sock in server.sockets:
                    self.addresses.append(sock.getsockname()[:2])
        except BaseException:
            for server in self._servers:
                server.close()
            await asyncio.to_thread(self.metrics.close)
            raise
        server_logger.info("listening on %s", ", ".join(f"{h}:{p}" for h, p in self.addresses))
        if self.metrics.address is not None:
            host, port = self.metrics.address
            server_logger.info("metrics on http://%s/metrics", Address(host, port).authority)
        server_logger.info(
            "relay: %s",
            "splice() for plain-TCP CONNECT tunnels, copying for the rest"
            if self._pipes is not None
            else "copying (splice off: --no-splice, a byte rate limit, or not Linux)",
        )
        if self.config.stats_interval > 0:
            self._stats_task = loop.create_task(self._log_stats())

    async def aclose(self, grace: float | None = None) -> None:
        """Stop accepting, let connections finish for *grace* seconds (default: the config's), then end them."""
        for server in self._servers:
            server.close()
        if self._clients:
            self._drained = asyncio.get_running_loop().create_future()
            await asyncio.wait({self._drained}, timeout=self.config.shutdown_grace if grace is None else grace)
            tasks = [c.task for c in self._clients if c.task is not None]
            for connection in list(self._clients):
                connection._finish("cancelled")  # shutdown after the grace period
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._stats_task is not None:
            self._stats_task.cancel()
            await asyncio.gather(self._stats_task, return_exceptions=True)
        await asyncio.to_thread(self.metrics.close)  # joins the endpoint's thread: not on the event loop
        if self._pipes is not None:
            self._pipes.close()  # every relay is closed by now: their pipes came back
        server_logger.info("stopped; %s", self.stats.line())

    async def serve_forever(self) -> None:
        """Run until cancelled."""
        await asyncio.gather(*(server.serve_forever() for server in self._servers))

    async def _log_stats(self) -> None:
        while True:
            await asyncio.sleep(self.config.stats_interval)
            server_logger.info(self.stats.line())

    def _left(self, connection: _Client) -> None:
        self._clients.discard(connection)
        self.stats.active -= 1
        if not self._clients and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    async def _resolve(self, target: Address, client_ip: IPAddress) -> list[tuple[IPAddress, int]]:
        """Every address *target* may be dialled at, each allowed by the rules (SSRF guard included).

        Raises:
            PermissionError: a rule denies the target or one of its addresses (the reason as message).
            OSError: the name does not resolve. UnicodeError: a name the IDNA codec refuses.
        """
        if not isinstance(target.host, bytes):
            return self._literal(target, client_ip)
        denied = self.config.policy.check(client_ip, target)
        if denied:
            raise PermissionError(denied)
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(target.host.decode("ascii", "replace"), target.port, type=socket.SOCK_STREAM)
        return self._allowed(target, client_ip, [ipaddress.ip_address(str(i[4][0]).split("%")[0]) for i in infos])

    def _literal(self, target: Address, client_ip: IPAddress) -> list[tuple[IPAddress, int]]:
        """:meth:`_resolve` for an IP-literal target, which needs no waiting."""
        assert not isinstance(target.host, bytes)
        denied = self.config.policy.check(client_ip, target)
        if denied:
            raise PermissionError(denied)
        return self._allowed(target, client_ip, [target.host])

    def _allowed(
        self, target: Address, client_ip: IPAddress, candidates: list[IPAddress]
    ) -> list[tuple[IPAddress, int]]:
        allowed = []
        for address in dict.fromkeys(candidates):
            denied = self.config.policy.check(client_ip, target, address)
            if denied:
                raise PermissionError(denied)
            allowed.append((address, target.port))
        return allowed


class _Client(asyncio.BufferedProtocol):
    """One client connection, from accept to the end of its tunnel; also the tunnel's record.

    It is the client transport's protocol until the relay starts, then only the
    record both :class:`_RelaySide` protocols report to.
    """

    __slots__ = (
        "client_eof",
        "client_ip",
        "closer",
        "down",
        "early",
        "expired",
        "handshake",
        "keep",
        "last",
        "loop",
        "opened",
        "peer",
        "phase",
        "request",
        "server",
        "splice_at",
        "started",
        "task",
        "timer",
        "transport",
        "up",
        "upstream",
        "user",
    )

    def __init__(self, server: ProxyServer) -> None:
        self.server = server
        self.loop = cast(asyncio.AbstractEventLoop, server._loop)
        self.phase = _NEGOTIATING
        self.transport: Any = None  # a selector socket transport, or a TLS one: reading and writing
        self.upstream: Any = None
        self.handshake: ServerHandshake | None = None
        self.request: TunnelRequested | None = None
        self.peer: tuple[str, int] = ("-", 0)
        self.client_ip: IPAddress | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None
        self.started = self.last = _now()
        self.up = self.down = 0
        self.early = b""  # client bytes after its request, before the relay (BIND: sent while waiting)
        self.client_eof = False
        self.expired = False
        self.closer: Callable[[], None] | None = None  # BIND's listener, UDP's socket
        self.keep: object = None  # an upstream StreamWriter: dropping it would close its transport
        self.user: bytes | None = None  # whom the rate limits count this connection against
        self.opened = False  # counted as an active tunnel in the metrics (until _finish)
        self.splice_at: int | None = None  # relayed octets after which the copying relay moves to splice

    # -- the client transport's protocol, until the relay starts --------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = self.server
        config = server.config
        if server.stats.active >= config.max_clients:
            server.stats.failures["busy"] += 1
            self.phase = _DONE
            cast(asyncio.Transport, transport).abort()  # refused at once: the server stays up for everyone else
            return
        server.stats.active += 1
        server._clients.add(self)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if not peer:
            self._finish("connection error: no peer address")
            return
        self.peer = peer
        self.client_ip = ipaddress.ip_address(peer[0].split("%")[0])
        if not config.policy.client_allowed(self.client_ip):
            self._finish("client not allowed")
            return
        self.handshake = config.handshake()
        self.timer = self.loop.call_later(config.negotiation_timeout, self._finish, "negotiation timeout")

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.server._relay_buffer[0]  # copied out at once (the handshake keeps its own buffer)

    def buffer_updated(self, nbytes: int) -> None:
        data = self.server._relay_buffer[0][:nbytes]
        if self.phase == _NEGOTIATING:
            assert self.handshake is not None
            self.handshake.receive_data(data)
            self._advance()
        elif self.phase != _UDP:  # a control connection's bytes mean nothing
            self.early += data
            if len(self.early) > self.server.config.buffer_size:
                self.transport.pause_reading()  # the rest waits in the kernel until the relay starts

    def eof_received(self) -> bool:
        if self.phase == _NEGOTIATING:
            assert self.handshake is not None
            self.handshake.receive_data(b"")
            self._advance()
        elif self.phase == _BIND_WAIT:
            self._finish("bind: the client left before a peer connected")
        elif self.phase == _UDP:
            self._finish("ok")  # the association lives as long as the control connection (RFC 1928 §7)
        else:
            self.client_eof = True  # passed on when the relay starts
        return True  # we close when done (a TLS transport closes itself whatever we return)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self._finish(f"connection error: {exc.__class__.__name__}")
        elif self.phase == _UDP:
            self._finish("ok")
        elif self.phase == _BIND_WAIT:
            self._finish("bind: the client left before a peer connected")
        else:
            self._finish("closed during negotiation")

    # -- negotiation --------------------------------------------------------------------

    def _advance(self) -> None:
        """Run the handshake as far as the bytes received allow."""
        handshake = self.handshake
        assert handshake is not None
        write = self.transport.write
        while self.phase == _NEGOTIATING:
            try:
                event = handshake.next_event()
            except RemoteProtocolError as exc:
                write(handshake.data_to_send())  # the refusal the protocol prescribes, if any
                self._finish(f"protocol error: {exc.message}")
                return
            out = handshake.data_to_send()
            if out:
                write(out)
            if event is NEED_DATA or event is PAUSED:
                if handshake.must_close:
                    self._finish("refused")
                return
            if isinstance(event, TunnelRequested):
                self._requested(event)
                return
            if isinstance(event, CredentialsReceived):
                if self.server.config.users is not None:  # PBKDF2: off the event loop
                    self.transport.pause_reading()
                    self._spawn(self._check_credentials(event.username, event.password))
                    return
                self._credentials_checked(True)
                continue
            assert isinstance(event, ClientClosed)
            self._finish("closed during negotiation")

    async def _check_credentials(self, username: bytes, password: bytes) -> None:
        ok = await asyncio.to_thread(self.server.config.check_credentials, username, password)
        if self._credentials_checked(ok):
            self.transport.resume_reading()
            self._advance()

    def _credentials_checked(self, ok: bool) -> bool:
        handshake = self.handshake
        assert handshake is not None
        handshake.accept_credentials(ok)
        self.transport.write(handshake.data_to_send())
        if not ok:
            self.server.metrics.auth_failed()
        if handshake.must_close:
            self._finish("authentication failed")
            return False
        return True

    def _negotiated(self) -> bool:
        """The handshake is done (the request is known): the negotiation deadline no longer applies.

        Observes the handshake's duration and asks the limiter to admit one more
        tunnel; returns False when it refused (the refusal is sent, the connection ends).
        """
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        server, handshake, client_ip = self.server, self.handshake, self.client_ip
        assert handshake is not None
        assert client_ip is not None
        now = _now()
        server.metrics.handshake_done(now - self.started)
        self.user = server.config.rate_limited_user(handshake)
        wait = server.limiter.admit_tunnel(self.user, client_ip, now)
        if wait is None:
            return True
        server.metrics.rate_limited("tunnels")
        self._refuse(Failure.RATE_LIMITED, "rate limited", retry_after=math.ceil(wait))
        return False

    def _requested(self, request: TunnelRequested) -> None:
        self.request = request
        self.phase = _REQUESTED  # the client's next bytes are kept for the relay (see buffer_updated)
        if not self._negotiated():
            return
        server, client_ip, target = self.server, self.client_ip, request.target
        assert client_ip is not None
        config = server.config
        if request.command is Command.CONNECT:
            chain = config.route(target)
            if chain:
                self._spawn(self._connect_upstream(chain))
            elif isinstance(target.host, bytes):
                self._spawn(self._connect(None))
            else:
                try:
                    addresses = server._literal(target, client_ip)
                except PermissionError as exc:
                    self._refuse(Failure.NOT_ALLOWED, f"denied: {exc}")
                    return
                self._spawn(self._connect(addresses))
        elif request.command is Command.BIND:
            denied = config.policy.check(client_ip, target)
            if denied:
                self._refuse(Failure.NOT_ALLOWED, f"denied: {denied}")
            elif config.route(target):
                self._refuse(Failure.COMMAND_NOT_SUPPORTED, "bind: not supported through an upstream")
            else:
                self._spawn(self._bind())
        elif any(rule.via for rule in config.upstreams):
            self._refuse(Failure.COMMAND_NOT_SUPPORTED, "udp associate: not supported with upstreams")
        else:
            self._spawn(self._udp_associate(request.target.port))

    def _reply(self, address: tuple[Any, ...], *, bind_peer: bool = False) -> None:
        """The success reply naming *address* (``(host, port, ...)``); BIND's second one with *bind_peer*."""
        handshake = self.handshake
        assert handshake is not None
        if bind_peer:
            handshake.bind_connected(Address(address[0], address[1]))
        else:
            handshake.accept(Address(address[0], address[1]))
        self.transport.write(handshake.data_to_send())

    def _refuse(self, failure: Failure, outcome: str, *, retry_after: float | None = None) -> None:
        """Send the refusal for *failure* and end the connection with *outcome* ("denied: ..." counts as denied)."""
        assert self.handshake is not None
        self.handshake.reject(failure, retry_after=retry_after)
        self.transport.write(self.handshake.data_to_send())
        if outcome.startswith("denied:"):  # an access rule refused it
            self.server.metrics.denied()
        self._finish(outcome)

    def _opened(self, pending: _Pending | None = None) -> None:
        """The tunnel (or UDP association) is up: one more active in the metrics until :meth:`_finish`.

        With byte limits, the bytes the relay delivers first (the client's after its
        request, *pending*'s from the other end) are charged now: their debt slows the first reads.
        """
        server, request, handshake = self.server, self.request, self.handshake
        assert request is not None
        self.opened = True
        server.metrics.tunnel_opened(request.protocol)
        if server.byte_limits and handshake is not None and pending is not None:
            assert self.client_ip is not None
            early = len(handshake.trailing_data[0]) + len(self.early) + len(pending.data)
            if early:
                server.limiter.take_bytes(self.user, self.client_ip, early, _now())

    # -- slow steps (each in a task of its own) -----------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.task = self.loop.create_task(coro)
        task.add_done_callback(self._step_done)

    def _step_done(self, task: asyncio.Task[None]) -> None:
        if self.task is task:
            self.task = None
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # a bug: report it, end the connection
            server_logger.error("error serving %s:%s", *self.peer, exc_info=exc)
            self._finish(f"internal error: {exc.__class__.__name__}")

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(delay, callback)

    def _expire(self) -> None:
        self.timer = None
        self.expired = True
        if self.task is not None:
            self.task.cancel()

    async def _connect(self, addresses: list[tuple[IPAddress, int]] | None) -> None:
        """Dial the target (resolving its name first if *addresses* is None), reply, start the relay."""
        assert self.request is not None
        assert self.client_ip is not None
        target = self.request.target
        timeout = self.server.config.connect_timeout
        if addresses is None:
            self._arm(timeout, self._expire)
            try:
                addresses = await self.server._resolve(target, self.client_ip)
            except PermissionError as exc:
                self._refuse(Failure.NOT_ALLOWED, f"denied: {exc}")
                return
            except (OSError, UnicodeError) as exc:  # UnicodeError: a name the IDNA codec refuses
                self._refuse(Failure.HOST_UNREACHABLE, f"resolve failed: {exc.__class__.__name__}")
                return
            except asyncio.CancelledError:
                if not self.expired:
                    raise
                self._refuse(Failure.HOST_UNREACHABLE, "resolve failed: TimeoutError")
                return
        self._arm(timeout, self._expire)  # one deadline for every address (fallback within connect_timeout)
        error: BaseException = OSError("no address")
        for address, port in addresses:
            try:
                transport, pending = await self._dial(str(address), port)
            except OSError as exc:
                error = exc
                continue
            except asyncio.CancelledError:
                if not self.expired:
                    raise
                error = TimeoutError("connect_timeout")
                break
            self._reply(transport.get_extra_info("sockname"))
            self._opened(pending)
            self._start_relay(transport, pending)
            return
        failure = failure_for(error)
        self._refuse(failure, f"dial failed: {failure.name.lower()}")

    async def _dial(self, host: str, port: int) -> tuple[Any, _Pending]:
        pending = _Pending(self.server.config.buffer_size)
        transport, _ = await self.loop.create_connection(lambda: pending, host, port)
        return transport, pending

    async def _connect_upstream(self, chain: tuple[ProxyURL, ...]) -> None:
        """Open the tunnel through *chain*; the rules are checked on the target as sent (not resolved here)."""
        assert self.request is not None
        assert self.client_ip is not None
        target = self.request.target
        config = self.server.config
        denied = config.policy.check(self.client_ip, target)
        if denied:
            self._refuse(Failure.NOT_ALLOWED, f"denied: {denied}")
            return
        try:
            reader, writer = await client.open_connection(
                target.host_str,
                target.port,
                proxy=chain,
                timeout=config.connect_timeout,
                proxy_ssl=self.server._upstream_ssl,
                limit=config.buffer_size,
            )
        except ProxyError as exc:
            failure = upstream_failure(exc)
            self._refuse(failure, f"upstream failed: {failure.name.lower()} ({exc.__class__.__name__})")
            return
        except (LocalProtocolError, OSError) as exc:  # e.g. an IPv6 target through a SOCKS4 upstream
            self._refuse(Failure.GENERAL_FAILURE, f"upstream failed: {exc.__class__.__name__}")
            return
        self.keep = writer
        self._reply(writer.get_extra_info("sockname"))
        pending = _Pending(config.buffer_size)
        pending.data += _take_buffered(reader)
        pending.eof = reader.at_eof()
        pending.lost = writer.transport.is_closing()
        pending.error = reader.exception()
        self._opened(pending)
        self._start_relay(writer.transport, pending)

    async def _bind(self) -> None:
        """BIND: listen, send the first reply, then wait (bind_timeout) for one peer while watching the client."""
        local_ip = self.transport.get_extra_info("sockname")[0]
        config = self.server.config
        try:
            listener = await self.loop.create_server(
                lambda: _BindPeer(self, config.buffer_size), host=local_ip, port=0, backlog=1
            )
        except OSError as exc:
            self._refuse(Failure.GENERAL_FAILURE, f"bind failed: {exc.__class__.__name__}")
            return
        self.closer = listener.close
        self._reply(listener.sockets[0].getsockname())
        self.phase = _BIND_WAIT  # bytes the client sends meanwhile go to the peer first
        if self.client_eof:
            self._finish("bind: the client left before a peer connected")
        else:
            self._arm(config.bind_timeout, self._bind_expired)

    def _bind_expired(self) -> None:
        self.timer = None
        if self.phase == _BIND_WAIT:
            self._refuse(Failure.TIMED_OUT, "bind: no peer connected")

    def _bind_arrived(self, peer: _BindPeer) -> None:
        """BIND's peer connected: second reply, then the relay (the client's bytes sent while waiting first)."""
        if self.closer is not None:
            self.closer()  # BIND accepts exactly one connection
            self.closer = None
        self._reply(peer.transport.get_extra_info("peername"), bind_peer=True)
        self._opened(peer)
        self._start_relay(peer.transport, peer)

    async def _udp_associate(self, declared_port: int) -> None:
        assert self.client_ip is not None
        local_ip = self.transport.get_extra_info("sockname")[0]
        relay = _UdpRelay(self.server, self.client_ip, declared_port, self)
        try:
            transport, _ = await self.loop.create_datagram_endpoint(lambda: relay, local_addr=(local_ip, 0))
        except OSError as exc:
            self._refuse(Failure.GENERAL_FAILURE, f"udp associate failed: {exc.__class__.__name__}")
            return

        def close() -> None:
            transport.close()
            relay.close()

        self.closer = close
        self._reply(transport.get_extra_info("sockname"))
        self.handshake = None
        self.early = b""  # a control connection's bytes mean nothing
        self.phase = _UDP
        self._opened()
        if self.client_eof:
            self._finish("ok")

    # -- the tunnel ---------------------------------------------------------------------

    def _start_relay(self, upstream: Any, pending: _Pending) -> None:
        """Hand both transports to relay protocols; deliver what either side sent before (and EOFs).

        This is the one place the relay starts: with splice() when
        :meth:`_splice` can (plain TCP both ways), else with the copying
        :class:`_RelaySide` protocols. The handshake is released here.
        """
        handshake = self.handshake
        assert handshake is not None
        trailing, eof = handshake.trailing_data
        early = trailing + self.early if self.early else trailing
        self.handshake = None
        self.early = b""
        self.upstream = upstream
        self.phase = _RELAY
        server = self.server
        splice_after = server.config.splice_after if self._may_splice() and not pending.lost else None
        if splice_after == 0 and self._splice(
            upstream, early, bytes(pending.data), client_eof=eof or self.client_eof, target_eof=pending.eof
        ):
            pending.data = bytearray()
            return
        shared, limit = server._relay_buffer, 4 * server.config.buffer_size
        client_side = _RelaySide(self.transport, self, True, shared)
        upstream_side = _RelaySide(upstream, self, False, shared)
        client_side.peer, upstream_side.peer = upstream_side, client_side
        if splice_after and not (client_side.tls or upstream_side.tls):
            self.splice_at = splice_after
        for side in (client_side, upstream_side):
            side.transport.set_protocol(side)
            side.transport.set_write_buffer_limits(high=limit)
        if early:
            upstream.write(early)
            self.up += len(early)
        if pending.data:
            self.transport.write(pending.data)
            self.down += len(pending.data)
            pending.data = bytearray()
        self.last = _now()
        self._arm(self.server.config.idle_timeout, self._idle_check)
        if eof or self.client_eof:
            client_side.eof_received()  # read already: the client's transport reads no more
        else:
            self.transport.resume_reading()
        if pending.lost:
            upstream_side.connection_lost(pending.error)
        elif pending.eof:
            upstream_side.eof_received()
        elif self.phase == _RELAY:
            upstream.resume_reading()

    def _may_splice(self) -> bool:
        """Whether this tunnel may splice: a CONNECT, on a server with pipes (splice on, no byte limits, Linux)."""
        request = self.request
        return self.server._pipes is not None and request is not None and request.command is Command.CONNECT

    def _splice_now(self, upstream_side: _RelaySide) -> None:
        """The copying relay passed ``splice_at`` octets: move this tunnel to splice when it can.

        Only between two chunks with both write buffers empty (queued bytes
        would be overtaken) and before either direction passed an EOF on; a
        buffer still draining means: try again after the next chunk.
        """
        client_side, upstream = upstream_side.peer, upstream_side.transport
        if client_side.done or upstream_side.done:
            self.splice_at = None  # half-closed: the rest is short, and the copying relay knows the EOF
            return
        if self.transport.get_write_buffer_size() or upstream.get_write_buffer_size():
            return
        self.splice_at = None  # one attempt from here on
        self._splice(upstream)  # nothing writes to the transports from now on: no flow control resumes them

    def _splice(
        self, upstream: Any, early_up: bytes = b"", early_down: bytes = b"", *, client_eof: bool = False,
        target_eof: bool = False,
    ) -> bool:  # fmt: skip
        """Start a :class:`SpliceRelay` for this tunnel if it can take one; False: copy (on) instead.

        It can when both transports are plain TCP with empty write buffers
        (:meth:`SpliceRelay.socket_of`) and descriptors are left for its dups.
        Both transports then stop reading for good; the early bytes (read
        before the relay: *early_up* from the client, *early_down* from the
        target) and the EOFs already seen are the relay's to deliver first.
        """
        pipes = self.server._pipes
        assert pipes is not None
        client_sock, target_sock = SpliceRelay.socket_of(self.transport), SpliceRelay.socket_of(upstream)
        if client_sock is None or target_sock is None:
            return False
        tunnel = _SplicedTunnel(self)
        try:
            tunnel.relay = SpliceRelay(
                self.loop, client_sock, target_sock, counts=tunnel.counts, last=tunnel.last, done=tunnel.done,
                throttle=tunnel.delivered, pipes=pipes,
            )
        except OSError:  # no descriptors left for its dups (EMFILE): the copying relay needs none
            tunnel.done.cancel()
            return False
        self.transport.pause_reading()  # for good: the relay reads the sockets from now on
        upstream.pause_reading()
        self.closer = tunnel.close  # _finish closes the relay before the transports
        self.server.spliced += 1
        self.last = _now()
        self._arm(self.server.config.idle_timeout, self._idle_check)
        tunnel.relay.start(early_up, early_down, client_eof=client_eof, target_eof=target_eof)
        return True

    def _idle_check(self) -> None:
        self.timer = None
        if self.phase != _RELAY:
            return
        idle = self.server.config.idle_timeout
        remaining = self.last + idle - _now()
        if remaining <= 0:
            self._finish("idle timeout")
        else:
            self.timer = self.loop.call_later(remaining, self._idle_check)

    def _finish(self, outcome: str) -> None:
        """The connection ends with *outcome*: close everything, count it, log it (once)."""
        if self.phase == _DONE:
            return
        self.phase = _DONE
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
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
        server, request, handshake = self.server, self.request, self.handshake
        self.upstream = self.handshake = self.keep = None
        stats = server.stats
        if outcome == "ok" and request is not None:
            stats.tunnels[request.protocol.name.lower()] += 1
        else:
            stats.failures[outcome.split(":", 1)[0]] += 1
        stats.bytes_up += self.up
        stats.bytes_down += self.down
        protocol = request.protocol if request else handshake.protocol if handshake else None
        if self.opened:
            self.opened = False
            server.metrics.tunnel_closed(protocol)
        server.metrics.connection_closed(protocol, outcome, up=self.up, down=self.down)
        if server_logger.isEnabledFor(logging.INFO):
            server_logger.info(
                format_tunnel(
                    client=f"{self.peer[0]}:{self.peer[1]}",
                    user=request.username if request else handshake.username if handshake else None,
                    protocol=protocol,
                    command=request.command.name if request else "-",
                    target=request.target if request else None,
                    up=self.up,
                    down=self.down,
                    duration=_now() - self.started,
                    outcome=outcome,
                )
            )
        server._left(self)


class _SplicedTunnel:
    """The splice relay of one tunnel, reporting to the tunnel's :class:`_Client` record.

    Every delivery is counted into the record (``up``, ``down`` and ``last``,
    which the log line and the idle time-out read), and the relay's end ends
    the tunnel once: ``ok`` when both directions passed their EOF on, ``relay
    error: ...`` on a socket error. The record's ``_finish`` calls
    :meth:`close` (as its ``closer``) before it closes the transports, so the
    relay's dups and pipes go first and each descriptor is closed once.
    """

    __slots__ = ("counts", "done", "last", "relay", "tunnel")

    def __init__(self, tunnel: _Client) -> None:
        self.tunnel = tunnel
        self.counts = [0, 0]  # the relay's own counts (the record's up/down are the ones reported)
        self.last = [0.0]
        self.relay: SpliceRelay | None = None
        self.done: asyncio.Future[None] = tunnel.loop.create_future()
        self.done.add_done_callback(self._ended)

    def delivered(self, direction: int, nbytes: int) -> float:
        """The relay's per-delivery hook: count *nbytes* (direction 0: client -> target); never pauses."""
        tunnel = self.tunnel
        if direction:
            tunnel.down += nbytes
        else:
            tunnel.up += nbytes
        tunnel.last = _now()
        return 0.0

    def _ended(self, done: asyncio.Future[None]) -> None:
        if done.cancelled():  # closed by the record: it is finishing already
            return
        error = done.exception()
        self.tunnel._finish("ok" if error is None else f"relay error: {error.__class__.__name__}")

    def close(self) -> None:
        """Stop relaying and close the relay's descriptors (not the transports); idempotent."""
        self.done.cancel()
        if self.relay is not None:
            self.relay.close()


class _Pending(asyncio.Protocol):
    """An upstream connection's protocol until the relay starts: keeps what arrives (bounded) and EOF."""

    __slots__ = ("data", "eof", "error", "limit", "lost", "transport")

    def __init__(self, limit: int) -> None:
        self.transport: Any = None
        self.data = bytearray()
        self.eof = self.lost = False
        self.error: Exception | None = None
        self.limit = limit

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data
        if len(self.data) > self.limit:
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.error = exc


class _BindPeer(_Pending):
    """A connection to BIND's listener: the first one is the peer, any other is refused."""

    __slots__ = ("client",)

    def __init__(self, client: _Client, limit: int) -> None:
        super().__init__(limit)
        self.client = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.client.phase == _BIND_WAIT:
            self.client._bind_arrived(self)
        else:
            cast(asyncio.Transport, transport).abort()


class _RelaySide(asyncio.BufferedProtocol):
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
        self.peer: _RelaySide = self
        self.done = False  # this direction ended (EOF received)
        self.held = False  # the other end's write buffer is full
        self.throttled: asyncio.TimerHandle | None = None  # a rate limit's pause: resumes reading when it fires
        self.tls = transport.get_extra_info("sslcontext") is not None

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.shared[0]  # the server's one buffer: idle tunnels hold none

    def buffer_updated(self, nbytes: int) -> None:
        """*nbytes* arrived on this end: write them to the other end, count them, and charge the byte limits."""
        sink = self.peer.transport
        sink.write(self.shared[0][:nbytes])
        if sink.get_write_buffer_size():  # the transport may keep a reference to it: never reuse
            self.shared[0] = memoryview(bytearray(len(self.shared[0])))
        tunnel = self.tunnel
        if self.upward:
            tunnel.up += nbytes
        else:
            tunnel.down += nbytes
        now = tunnel.last = _now()
        server = tunnel.server
        if server.byte_limits:
            assert tunnel.client_ip is not None
            pause = server.limiter.take_bytes(tunnel.user, tunnel.client_ip, nbytes, now)
            if pause > 0:
                self._throttle(pause, now)
        elif tunnel.splice_at is not None and tunnel.up + tunnel.down >= tunnel.splice_at:
            tunnel._splice_now(self.peer if self.upward else self)

    def _throttle(self, pause: float, now: float) -> None:
        """Stop reading this end for *pause* seconds (a byte rate limit); the tunnel is not idle meanwhile."""
        tunnel = self.tunnel
        tunnel.server.metrics.rate_limited("bytes")
        tunnel.last = max(tunnel.last, now + pause)  # the idle time-out counts from the end of the pause
        if self.throttled is not None:
            self.throttled.cancel()
        self.throttled = tunnel.loop.call_later(pause, self._unthrottle)
        with contextlib.suppress(RuntimeError):
            self.transport.pause_reading()

    def _unthrottle(self) -> None:
        self.throttled = None
        self._resume()

    def _resume(self) -> None:
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
            self.tunnel._finish("ok")
        return not self.tls  # keep the other direction open; a TLS transport closes itself anyway

    def connection_lost(self, exc: Exception | None) -> None:
        if self.throttled is not None:
            self.throttled.cancel()
            self.throttled = None
        self.tunnel._finish("ok" if exc is None else f"relay error: {exc.__class__.__name__}")

    def pause_writing(self) -> None:  # our write buffer is full: stop reading the other side
        self.peer.held = True
        with contextlib.suppress(RuntimeError):
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:  # the other side reads again, unless a rate limit's pause holds it
        self.peer.held = False
        self.peer._resume()


class _UdpRelay(asyncio.DatagramProtocol):
    """Relays datagrams between one client and the targets it sends to.

    With byte rate limits every datagram, either way, asks the limiter to admit
    its payload octets (for the user who logged in and the client address), and
    is dropped if refused: a datagram cannot be slowed down.
    """

    def __init__(self, server: ProxyServer, client_ip: IPAddress, declared_port: int, record: _Client) -> None:
        self.server = server
        self.client_ip = client_ip
        self.client_port = declared_port or None
        self.record = record
        self.transport: asyncio.DatagramTransport | None = None
        self.peers: set[tuple[str, int]] = set()
        self.pending: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Before Python 3.12 the loop's UDP transport does not derive from DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        host, port = str(addr[0]).split("%")[0], addr[1]
        source = ipaddress.ip_address(host)
        if source == self.client_ip and (self.client_port is None or port == self.client_port):
            self.client_port = port
            self._from_client(data)
        elif (host, port) in self.peers and self.client_port is not None and self.transport is not None:
            if self._admitted(len(data)):
                self.transport.sendto(
                    encode_udp_datagram(UdpDatagram(address=Address(source, port), data=data)),
                    (str(self.client_ip), self.client_port),
                )
                self.record.down += len(data)
        else:
            self.server.stats.failures["udp dropped"] += 1

    def _admitted(self, nbytes: int) -> bool:
        """Whether the byte limits let a datagram of *nbytes* payload octets through; a refusal is counted."""
        server = self.server
        if not server.byte_limits or server.limiter.admit_bytes(self.record.user, self.client_ip, nbytes, _now()):
            return True
        server.stats.failures["udp rate limited"] += 1
        server.metrics.rate_limited("bytes")
        return False

    def _from_client(self, data: bytes) -> None:
        try:
            datagram = parse_udp_datagram(data)
        except RemoteProtocolError:
            self.server.stats.failures["udp malformed"] += 1
            return
        if datagram.is_fragment:
            return  # no reassembly: RFC 1928 §7 lets us drop fragments
        if not self._admitted(len(datagram.data)):  # before resolving: a dropped datagram costs no look-up
            return
        task = asyncio.ensure_future(self._forward(datagram))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _forward(self, datagram: UdpDatagram) -> None:
        try:
            addresses = await asyncio.wait_for(
                self.server._resolve(datagram.address, self.client_ip), self.server.config.connect_timeout
            )
        except (PermissionError, OSError, UnicodeError, *_TIMEOUTS):
            self.server.stats.failures["udp denied"] += 1
            return
        family = self.transport.get_extra_info("socket").family if self.transport is not None else None
        usable = [(a, p) for a, p in addresses if (a.version == 6) == (family == socket.AF_INET6)]
        if not usable:
            self.server.stats.failures["udp unreachable"] += 1
            return
        address, port = usable[0]
        if self.transport is not None:
            self.peers.add((str(address), port))
            self.transport.sendto(datagram.data, (str(address), port))
            self.record.up += len(datagram.data)

    def close(self) -> None:
        for task in self.pending:
            task.cancel()


def _take_buffered(reader: asyncio.StreamReader) -> bytes:
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


async def serve(config: ServerConfig, *, ready: Callable[[ProxyServer], Awaitable[None] | None] | None = None) -> None:
    """Run a server until cancelled (SIGINT/SIGTERM handling is the CLI's job)."""
    async with ProxyServer(config) as server:
        if ready is not None:
            result = ready(server)
            if result is not None:
                await result
        await server.serve_forever()

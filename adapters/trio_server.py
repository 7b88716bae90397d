"""The proxy server on trio: SOCKS5, SOCKS4/4a and HTTP CONNECT on one port.

This is the trio twin of :mod:`asyncio_server`, feature for feature. Each
client connection runs the core's :class:`ServerHandshake` in the usual loop
(read, ``next_event``, write ``data_to_send``). The only decisions made here
are I/O ones: dial the target (after the access rules allowed it, by name and
by every resolved address), listen for BIND, relay UDP, and copy bytes both
ways. A success reply is written only after the dial succeeded.

With ``upstreams`` configured, a CONNECT whose target matches a rule naming
a proxy chain is dialled through that chain with this package's trio client
(:func:`socks_sansio.adapters.trio.open_tcp_stream`, under
``connect_timeout``, with the ``upstream_cacert`` context for ``https://``
hops); its errors map to replies with :func:`upstream_failure`. The target's
name is then not resolved here (the last upstream resolves it), so the access
rules see the name and IP literals only. BIND whose expected peer is routed
through an upstream, and UDP ASSOCIATE on a server with any proxy route, are
refused with COMMAND_NOT_SUPPORTED (neither can follow a TCP proxy chain).

``tls_listen`` addresses wrap each accepted connection in a server-side
:class:`trio.SSLStream`; its handshake runs first, inside the negotiation
time-out, and the negotiation then reads the decrypted bytes through the same
code as on a plain port, so HTTPS proxying (TLS, then CONNECT) and SOCKS over
TLS need nothing else. A client's TLS session is closed with ``close_notify``;
one that ends without it (a "ragged" EOF) counts as an ordinary EOF.

Structure, the trio way: :meth:`TrioProxyServer.serve` owns one nursery for
the client tasks and, inside it, a cancel scope around the accept loops.
:meth:`TrioProxyServer.shutdown` cancels only that scope (no new clients),
waits up to the grace period for the clients to finish, then cancels them.
Time limits are cancel scopes: the negotiation runs under ``move_on_after``,
and the relay's idle time-out is a scope whose deadline every transferred
chunk pushes back.

The relay copies each direction in its own task over any two
:class:`trio.abc.Stream` objects (a socket, a TLS stream, a chain's stream).
When both ends are half-closeable it passes half-close through: when one side
sends EOF, the other side's write half is shut down (``send_eof``), and the
tunnel ends when both directions are done (or on error, or when idle for
``idle_timeout``). TLS has no half-close, so when either end is a TLS stream
(a TLS client, an ``https://`` upstream), an EOF from either side ends the
whole tunnel: every chunk already read is written out first, then the other
direction stops reading. Errors are caught inside the tasks that raise them,
so nothing leaves a nursery wrapped in an exception group.

Rate limits and metrics, as on asyncio: one
:class:`~socks_sansio._ratelimit.RateLimits` per server, and the Prometheus
endpoint of ``metrics_listen`` bound by :meth:`TrioProxyServer.bind` and closed
when :meth:`TrioProxyServer.serve` returns. Once a request is read, the
handshake time is observed and the limiter asked to admit one more tunnel for
the user who logged in and the client address; if it may not, the request is
refused with ``Failure.RATE_LIMITED`` (SOCKS5 REP 2, SOCKS4 91, HTTP 429 with
``Retry-After``). Byte limits throttle each copying direction on its own:
after writing a chunk it charges the limiter and sleeps (``trio.sleep``, this
direction's task only) for the pause it is told, before reading again; the
pause pushes the idle deadline back.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import math
import signal
import socket
import ssl
import sys
from collections.abc import Callable
from typing import Any, Final

import trio

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
    __version__,
    encode_udp_datagram,
    parse_udp_datagram,
)

from . import trio as trio_client
from ._metrics import Metrics, NullMetrics
from ._server_common import ServerConfig, ServerStats, failure_for, format_tunnel, server_logger, upstream_failure

__all__ = ["TrioProxyServer", "run"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_READ: Final = 65536
_UDP_READ: Final = 65535
# Stream failures: trio wraps socket errors in BrokenResourceError; raw sockets raise OSError.
_STREAM_ERRORS: Final = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)
# accept() failures that mean "out of resources for now", not "the listener is broken".
_ACCEPT_RETRY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
# How long a client's TLS session may take to send its close_notify at the end.
_TLS_CLOSE_TIMEOUT: Final = 1.0


class _Refused(Exception):
    """A request ended with a refusal already sent; carries the outcome for the log."""

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


def _error_name(exc: BaseException) -> str:
    """The name logged for a stream error: the socket error behind trio's wrapper when there is one."""
    cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else None
    return type(cause if cause is not None else exc).__name__


def _is_ragged_eof(exc: BaseException) -> bool:
    """Whether *exc* is a TLS peer closing TCP without ``close_notify`` (trio's test, Python 3.10 quirk included)."""
    cause = exc.__cause__
    return isinstance(cause, ssl.SSLEOFError) or "UNEXPECTED_EOF_WHILE_READING" in str(cause)


async def _receive(stream: trio.abc.Stream, size: int) -> bytes | bytearray:
    """``stream.receive_some(size)``, with a TLS peer's missing ``close_notify`` read as a plain EOF."""
    try:
        return await stream.receive_some(size)
    except trio.BrokenResourceError as exc:
        if isinstance(stream, trio.SSLStream) and _is_ragged_eof(exc):
            return b""
        raise


def _ip(host: object) -> IPAddress:
    """A socket-address host as an ip address (IPv6 scope ids dropped)."""
    return ipaddress.ip_address(str(host).split("%")[0])


_CREDENTIAL_CHECKS: Final = trio.CapacityLimiter(4)


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
        self.config = config
        self.stats = ServerStats()
        self.limiter = config.rate_limiter()
        self.metrics: Metrics = NullMetrics()
        limits = config.rate_limits
        # Whether relays charge bytes to the limiter (no byte limit: they never ask).
        self.byte_limits = limits.bytes_per_user is not None or limits.bytes_per_client is not None
        self.addresses: list[tuple[str, int]] = []
        # Each listener with the TLS context of its connections (None: plain).
        self._listeners: list[tuple[trio.SocketListener, ssl.SSLContext | None]] = []
        self._upstream_ssl: ssl.SSLContext | None = None
        self._accepting = trio.CancelScope()
        self._grace = config.shutdown_grace
        self._client_left = trio.Event()
        self._stopped = trio.Event()
        self._started = False

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
        tls = self.config.server_ssl_context() if self.config.tls_listen else None
        if self.config.upstreams:
            self._upstream_ssl = self.config.upstream_ssl_context()
        plain = [(address, None) for address in self.config.listen]
        try:
            for (host, port), context in [*plain, *((address, tls) for address in self.config.tls_listen)]:
                infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
                for family, type_, proto, _name, sockaddr in dict.fromkeys(infos):
                    self._listeners.append((await self._listen(family, type_, proto, sockaddr), context))
            self.metrics = self.config.metrics()
        except BaseException:
            self._close_listeners()
            self._listeners.clear()
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
            self._close_listeners()
            with trio.CancelScope(shield=True):  # joins the endpoint's thread: not on the event loop
                await trio.to_thread.run_sync(self.metrics.close)
            server_logger.info("stopped; %s", self.stats.line())
            self._stopped.set()

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop accepting, let tunnels drain for *grace* seconds (default: the config's), then cancel them.

        Returns when :meth:`serve` has returned (at once if it never ran).
        """
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
            if self.stats.active >= self.config.max_clients:
                self.stats.failures["busy"] += 1
                sock.close()  # refused at once: the server stays up for everyone else
                continue
            connection = trio.SocketStream(sock)
            self.stats.active += 1
            clients.start_soon(self._client, connection, (str(peer[0]), int(peer[1])), context)

    # -- one client -------------------------------------------------------------------

    async def _client(
        self, connection: trio.SocketStream, peer: tuple[str, int], context: ssl.SSLContext | None
    ) -> None:
        """Serve one client: *connection* is its TCP stream, wrapped in TLS with *context* when given."""
        started = trio.current_time()
        counts = [0, 0]
        handshake = self.config.handshake()
        request: TunnelRequested | None = None
        outcome = "ok"
        finished = False
        stream: trio.abc.Stream = connection
        if context is not None:
            stream = trio.SSLStream(connection, context, server_side=True)
        secured = False  # a TLS session is up: close it with close_notify
        try:
            client_ip = _ip(peer[0])
            if not self.config.policy.client_allowed(client_ip):
                raise _Refused("client not allowed")
            with trio.move_on_after(self.config.negotiation_timeout) as negotiation:
                if isinstance(stream, trio.SSLStream):
                    await stream.do_handshake()
                    secured = True
                request = await self._negotiate(stream, handshake)
            if negotiation.cancelled_caught:
                raise _Refused("negotiation timeout")
            if request is None:
                raise _Refused("closed during negotiation" if not handshake.must_close else "refused")
            await self._admit(handshake, stream, client_ip, started)
            await self._serve_request(request, stream, connection, handshake, client_ip, counts)
            finished = True
        except _Refused as refused:
            outcome, finished = refused.outcome, True
        except RemoteProtocolError as exc:
            outcome, finished = f"protocol error: {exc.message}", True
            await _write_quietly(stream, handshake.data_to_send())
        except _STREAM_ERRORS as exc:
            outcome, finished = f"connection error: {_error_name(exc)}", True
        except Exception as exc:  # a bug must not take the whole server down
            outcome, finished = f"internal error: {exc.__class__.__name__}", True
            server_logger.exception("internal error serving %s:%s", *peer)
        finally:
            if not finished:  # cancelled: the server is stopping
                outcome = "cancelled"
            try:
                if finished and secured:
                    with trio.move_on_after(_TLS_CLOSE_TIMEOUT), contextlib.suppress(*_STREAM_ERRORS):
                        await stream.aclose()  # sends close_notify (at once when the session broke)
            finally:
                # Closed without an await: under a cancelled scope any checkpoint here would
                # raise Cancelled and skip the bookkeeping below.
                connection.socket.close()
                self._account(handshake, request, peer, counts, started, outcome)

    def _account(
        self,
        handshake: ServerHandshake,
        request: TunnelRequested | None,
        peer: tuple[str, int],
        counts: list[int],
        started: float,
        outcome: str,
    ) -> None:
        if outcome == "ok" and handshake.protocol is not None:
            self.stats.tunnels[handshake.protocol.name.lower()] += 1
        else:
            self.stats.failures[outcome.split(":", maxsplit=1)[0]] += 1
        self.stats.bytes_up += counts[0]
        self.stats.bytes_down += counts[1]
        self.metrics.connection_closed(handshake.protocol, outcome, up=counts[0], down=counts[1])
        self.stats.active -= 1
        self._client_left.set()
        server_logger.info(
            format_tunnel(
                client=f"{peer[0]}:{peer[1]}",
                user=handshake.username,
                protocol=handshake.protocol,
                command=request.command.name if request else "-",
                target=request.target if request else None,
                up=counts[0],
                down=counts[1],
                duration=trio.current_time() - started,
                outcome=outcome,
            )
        )

    async def _negotiate(self, stream: trio.abc.Stream, handshake: ServerHandshake) -> TunnelRequested | None:
        while True:
            try:
                event = handshake.next_event()
            except RemoteProtocolError:
                await _write_quietly(stream, handshake.data_to_send())
                raise
            out = handshake.data_to_send()
            if out:
                await stream.send_all(out)
            if isinstance(event, TunnelRequested):
                return event
            if isinstance(event, CredentialsReceived):
                ok = await trio.to_thread.run_sync(  # a hashed password costs PBKDF2: off the event loop
                    self.config.check_credentials, event.username, event.password, limiter=_CREDENTIAL_CHECKS
                )
                handshake.accept_credentials(ok)
                if not ok:
                    self.metrics.auth_failed()
                await stream.send_all(handshake.data_to_send())
                if handshake.must_close:
                    raise _Refused("authentication failed")
                continue
            if isinstance(event, ClientClosed) or handshake.must_close:
                return None
            if event is NEED_DATA or event is PAUSED:
                handshake.receive_data(await _receive(stream, _READ))

    async def _serve_request(
        self,
        request: TunnelRequested,
        stream: trio.abc.Stream,
        connection: trio.SocketStream,
        handshake: ServerHandshake,
        client_ip: IPAddress,
        counts: list[int],
    ) -> None:
        """Carry out *request*; *stream* speaks to the client (maybe TLS), *connection* is its TCP socket."""
        if request.command is Command.CONNECT:
            upstream = await self._dial(request.target, client_ip, handshake, stream)
            try:
                local = _local_address(upstream)
                await _reply(stream, handshake, lambda: handshake.accept(local))
            except BaseException:
                await trio.aclose_forcefully(upstream)
                raise
            await self._relay(stream, upstream, handshake, counts, client_ip)
        elif request.command is Command.BIND:
            await self._bind(request, stream, connection, handshake, client_ip, counts)
        else:
            await self._udp_associate(request, stream, connection, handshake, client_ip, counts)

    async def _admit(
        self, handshake: ServerHandshake, stream: trio.abc.Stream, client_ip: IPAddress, started: float
    ) -> None:
        """The request is read: observe the handshake time; refuse (raise :class:`_Refused`) over the tunnel rate."""
        now = trio.current_time()
        self.metrics.handshake_done(now - started)
        wait = self.limiter.admit_tunnel(self.config.rate_limited_user(handshake), client_ip, now)
        if wait is not None:
            self.metrics.rate_limited("tunnels")
            raise await self._refuse(
                handshake, stream, Failure.RATE_LIMITED, "rate limited", retry_after=math.ceil(wait)
            )

    async def _refuse(
        self,
        handshake: ServerHandshake,
        stream: trio.abc.Stream,
        failure: Failure,
        outcome: str,
        *,
        retry_after: float | None = None,
    ) -> _Refused:
        """Queue and write the refusal for *failure*; returns the exception to raise.

        An *outcome* starting with ``denied:`` (an access rule refused) is counted as a denial.
        """
        handshake.reject(failure, retry_after=retry_after)
        if outcome.startswith("denied:"):
            self.metrics.denied()
        await _write_quietly(stream, handshake.data_to_send())
        return _Refused(outcome)

    async def _resolve(self, target: Address, client_ip: IPAddress) -> list[tuple[IPAddress, int]]:
        """Every address *target* may be dialled at, each allowed by the rules (SSRF guard included).

        Raises:
            PermissionError: the rules deny the name or any address it resolves to.
            OSError: the name does not resolve.
            TimeoutError: resolution took longer than ``connect_timeout``.
        """
        denied = self.config.policy.check(client_ip, target)
        if denied:
            raise PermissionError(denied)
        if isinstance(target.host, bytes):
            try:
                with trio.fail_after(self.config.connect_timeout):
                    infos = await trio.socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
            except trio.TooSlowError:
                raise TimeoutError("name resolution timed out") from None
            candidates = [_ip(info[4][0]) for info in infos]
        else:
            candidates = [target.host]
        allowed = []
        for address in dict.fromkeys(candidates):
            reason = self.config.policy.check(client_ip, target, address)
            if reason:
                raise PermissionError(reason)
            allowed.append((address, target.port))
        return allowed

    async def _dial(
        self, target: Address, client_ip: IPAddress, handshake: ServerHandshake, stream: trio.abc.Stream
    ) -> trio.abc.Stream:
        """A stream to *target*: through its upstream route if it has one, else connected here.

        On failure the refusal is written to *stream* and :class:`_Refused` raised.
        """
        chain = self.config.route(target)
        if chain:
            return await self._dial_upstream(target, client_ip, handshake, stream, chain)
        try:
            addresses = await self._resolve(target, client_ip)
        except PermissionError as exc:
            raise await self._refuse(handshake, stream, Failure.NOT_ALLOWED, f"denied: {exc}") from None
        except (OSError, TimeoutError) as exc:
            raise await self._refuse(handshake, stream, Failure.HOST_UNREACHABLE, f"resolve failed: {exc}") from None
        error: BaseException = OSError("no address")
        deadline = trio.current_time() + self.config.connect_timeout
        for address, port in addresses:
            family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            sock = trio.socket.socket(family, socket.SOCK_STREAM)
            try:
                with trio.fail_at(max(deadline, trio.current_time() + 0.001)):
                    await sock.connect((str(address), port))
            except trio.TooSlowError:
                sock.close()
                error = TimeoutError("connect timed out")
                continue
            except OSError as exc:
                sock.close()
                error = exc
                continue
            except BaseException:
                sock.close()
                raise
            return trio.SocketStream(sock)  # sets TCP_NODELAY
        failure = failure_for(error)
        raise await self._refuse(handshake, stream, failure, f"dial failed: {failure.name.lower()}")

    async def _dial_upstream(
        self,
        target: Address,
        client_ip: IPAddress,
        handshake: ServerHandshake,
        stream: trio.abc.Stream,
        chain: tuple[ProxyURL, ...],
    ) -> trio.abc.Stream:
        """Open the tunnel through *chain*; the rules are checked on the target as sent (not resolved here)."""
        denied = self.config.policy.check(client_ip, target)
        if denied:
            raise await self._refuse(handshake, stream, Failure.NOT_ALLOWED, f"denied: {denied}")
        try:
            return await trio_client.open_tcp_stream(
                target.host_str,
                target.port,
                proxy=chain,
                timeout=self.config.connect_timeout,
                proxy_ssl=self._upstream_ssl,
            )
        except ProxyError as exc:
            failure = upstream_failure(exc)
            raise await self._refuse(
                handshake, stream, failure, f"upstream failed: {failure.name.lower()} ({exc.__class__.__name__})"
            ) from None
        except (LocalProtocolError, *_STREAM_ERRORS) as exc:  # e.g. an IPv6 target through a SOCKS4 upstream
            raise await self._refuse(
                handshake, stream, Failure.GENERAL_FAILURE, f"upstream failed: {_error_name(exc)}"
            ) from None

    # -- the relay ------------------------------------------------------------------------

    async def _relay(
        self,
        client: trio.abc.Stream,
        upstream: trio.abc.Stream,
        handshake: ServerHandshake,
        counts: list[int],
        client_ip: IPAddress,
        *,
        extra: bytes = b"",
    ) -> None:
        """Relay until both directions ended, an error, or the idle time-out; always closes *upstream*.

        With byte rate limits each direction charges what it moved to the limiter
        (for the user who logged in and *client_ip*) and pauses as told.
        """
        early, eof = handshake.trailing_data
        early += extra  # BIND: what the client sent while we waited for the peer
        half_close = isinstance(client, trio.abc.HalfCloseableStream) and isinstance(
            upstream, trio.abc.HalfCloseableStream
        )
        throttle: Callable[[int], float] | None = None
        if self.byte_limits:
            user, limiter, metrics = self.config.rate_limited_user(handshake), self.limiter, self.metrics

            def throttle(nbytes: int) -> float:
                pause = limiter.take_bytes(user, client_ip, nbytes, trio.current_time())
                if pause > 0:
                    metrics.rate_limited("bytes")
                return pause

        config = self.config
        pump = _Pump(config.idle_timeout, config.buffer_size, counts, half_close=half_close, throttle=throttle)
        self.metrics.tunnel_opened(handshake.protocol)
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
            self.metrics.tunnel_closed(handshake.protocol)
            await trio.aclose_forcefully(upstream)
        if pump.errors:
            raise _Refused(f"relay error: {_error_name(pump.errors[0])}")
        if pump.idle.cancelled_caught:
            raise _Refused("idle timeout")

    # -- BIND ---------------------------------------------------------------------------

    async def _bind(
        self,
        request: TunnelRequested,
        stream: trio.abc.Stream,
        connection: trio.SocketStream,
        handshake: ServerHandshake,
        client_ip: IPAddress,
        counts: list[int],
    ) -> None:
        denied = self.config.policy.check(client_ip, request.target)
        if denied:
            raise await self._refuse(handshake, stream, Failure.NOT_ALLOWED, f"denied: {denied}")
        if self.config.route(request.target):
            raise await self._refuse(
                handshake, stream, Failure.COMMAND_NOT_SUPPORTED, "bind: not supported through an upstream"
            )
        local_ip = connection.socket.getsockname()[0]
        listener = trio.socket.socket(connection.socket.family, socket.SOCK_STREAM)
        try:
            await listener.bind((local_ip, 0))
            listener.listen(1)
            bound = listener.getsockname()
            await _reply(stream, handshake, lambda: handshake.accept(Address(bound[0], bound[1])))
            # Wait up to bind_timeout for the peer while watching the client: what it sends
            # meanwhile goes to the peer first, and a client that leaves ends the wait.
            accepted: tuple[trio.socket.SocketType, Any] | None = None
            early = bytearray()
            client_left = False

            async def wait_for_peer() -> None:
                nonlocal accepted
                accepted = await listener.accept()
                race.cancel_scope.cancel()

            async def watch_client() -> None:
                nonlocal client_left
                try:
                    while data := await _receive(stream, _READ):
                        early.extend(data)
                except (trio.BrokenResourceError, OSError):
                    pass
                client_left = True
                race.cancel_scope.cancel()

            async with trio.open_nursery() as race:
                race.cancel_scope.deadline = trio.current_time() + self.config.bind_timeout
                race.start_soon(wait_for_peer)
                race.start_soon(watch_client)
            if accepted is None:
                if client_left:
                    raise _Refused("bind: the client left before a peer connected")
                raise await self._refuse(handshake, stream, Failure.TIMED_OUT, "bind: no peer connected")
        finally:
            listener.close()  # BIND accepts exactly one connection
        peer_sock, peer = accepted
        peer_stream = trio.SocketStream(peer_sock)
        try:
            await _reply(stream, handshake, lambda: handshake.bind_connected(Address(peer[0], peer[1])))
        except BaseException:
            peer_stream.socket.close()
            raise
        await self._relay(stream, peer_stream, handshake, counts, client_ip, extra=bytes(early))

    # -- UDP ASSOCIATE --------------------------------------------------------------------

    async def _udp_associate(
        self,
        request: TunnelRequested,
        stream: trio.abc.Stream,
        connection: trio.SocketStream,
        handshake: ServerHandshake,
        client_ip: IPAddress,
        counts: list[int],
    ) -> None:
        if any(rule.via for rule in self.config.upstreams):
            raise await self._refuse(
                handshake, stream, Failure.COMMAND_NOT_SUPPORTED, "udp associate: not supported with upstreams"
            )
        local_ip = connection.socket.getsockname()[0]
        relay = _UdpRelay(self, client_ip, request.target.port, counts, self.config.rate_limited_user(handshake))
        with trio.socket.socket(connection.socket.family, socket.SOCK_DGRAM) as udp:
            await udp.bind((local_ip, 0))
            bound = udp.getsockname()
            await _reply(stream, handshake, lambda: handshake.accept(Address(bound[0], bound[1])))
            error: BaseException | None = None
            self.metrics.tunnel_opened(handshake.protocol)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(relay.run, udp, nursery)
                    # The association lives as long as the control connection (RFC 1928 §7).
                    try:
                        while await _receive(stream, _READ):
                            pass
                    except _STREAM_ERRORS as exc:
                        error = exc
                    nursery.cancel_scope.cancel()
            finally:
                self.metrics.tunnel_closed(handshake.protocol)
            if error is not None:
                raise error


class _Pump:
    """One relay's two copying directions, their shared idle deadline and how an EOF ends them.

    With *half_close* (both ends plain TCP) an EOF is passed on with
    ``send_eof`` and the other direction goes on. Otherwise (TLS at either end)
    the first EOF ends the tunnel: the other direction finishes writing the
    chunk it holds, if any, and its pending read (or rate-limit pause) is cancelled.

    *throttle*, if given, is told the size of every chunk moved and answers how
    long that direction must pause before it reads again (a byte rate limit).
    """

    def __init__(
        self,
        idle_timeout: float,
        size: int,
        counts: list[int],
        *,
        half_close: bool,
        throttle: Callable[[int], float] | None = None,
    ) -> None:
        self.idle_timeout = idle_timeout
        self.size = size
        self.counts = counts
        self.half_close = half_close
        self.throttle = throttle
        self.idle = trio.CancelScope(deadline=trio.current_time() + idle_timeout)
        self.errors: list[BaseException] = []
        self.done = False
        self.pauses = [0.0, 0.0]  # each direction's rate-limit pause, taken before its next read
        self._reads = [trio.CancelScope(), trio.CancelScope()]

    def moved(self, index: int, nbytes: int) -> None:
        """*nbytes* went out in direction *index*: count them, charge the limit, push the idle deadline back.

        A rate-limit pause is activity: the idle time-out counts from its end.
        """
        self.counts[index] += nbytes
        pause = self.throttle(nbytes) if self.throttle is not None else 0.0
        self.pauses[index] = pause
        self.idle.deadline = max(self.idle.deadline, trio.current_time() + pause + self.idle_timeout)

    async def copy(self, source: trio.abc.Stream, sink: trio.abc.Stream, index: int) -> None:
        """Copy *source* to *sink* until EOF (counted in ``counts[index]``); traffic pushes the idle deadline."""
        try:
            while not self.done:
                data: bytes | bytearray = b""
                self._reads[index] = reading = trio.CancelScope()
                with reading:
                    if self.pauses[index] > 0:
                        await trio.sleep(self.pauses[index])  # this direction only: the rest of the loop goes on
                        self.pauses[index] = 0.0
                    data = await _receive(source, self.size)
                if not data:
                    break
                await sink.send_all(data)
                self.moved(index, len(data))
        except _STREAM_ERRORS as exc:
            self.errors.append(exc)
            self.idle.cancel()  # ends the other direction too
            return
        await self.ended(sink)

    async def ended(self, sink: trio.abc.Stream) -> None:
        """The side opposite *sink* sent EOF: half-close *sink*, or end the whole tunnel."""
        if self.half_close and isinstance(sink, trio.abc.HalfCloseableStream):
            await _send_eof(sink)
            return
        self.done = True
        for reading in self._reads:
            reading.cancel()


class _UdpRelay:
    """Relays datagrams between one client and the targets it sends to.

    With byte rate limits every datagram, either way, asks the limiter to admit
    its payload octets (for *user*, the one who logged in, and the client
    address), and is dropped if refused: a datagram cannot be slowed down.
    """

    def __init__(
        self,
        server: TrioProxyServer,
        client_ip: IPAddress,
        declared_port: int,
        counts: list[int],
        user: bytes | None,
    ) -> None:
        self.server = server
        self.client_ip = client_ip
        self.user = user
        self.client_port: int | None = declared_port or None
        self.counts = counts
        self.peers: set[tuple[str, int]] = set()

    async def run(self, udp: trio.socket.SocketType, nursery: trio.Nursery) -> None:
        """Receive datagrams until cancelled; forwarding to a name is resolved in its own task."""
        while True:
            try:
                data, addr = await udp.recvfrom(_UDP_READ)
            except OSError:
                continue  # e.g. an ICMP error reported on the socket: not fatal for the association
            host, port = str(addr[0]).split("%")[0], int(addr[1])
            source = ipaddress.ip_address(host)
            if source == self.client_ip and (self.client_port is None or port == self.client_port):
                self.client_port = port
                self._from_client(data, udp, nursery)
            elif (host, port) in self.peers and self.client_port is not None:
                if self._admitted(len(data)):
                    out = encode_udp_datagram(UdpDatagram(address=Address(source, port), data=data))
                    if await _sendto_quietly(udp, out, (str(self.client_ip), self.client_port)):
                        self.counts[1] += len(data)
            else:
                self.server.stats.failures["udp dropped"] += 1

    def _admitted(self, nbytes: int) -> bool:
        """Whether the byte limits let a datagram of *nbytes* payload octets through; a refusal is counted."""
        server = self.server
        if not server.byte_limits or server.limiter.admit_bytes(self.user, self.client_ip, nbytes, trio.current_time()):
            return True
        server.stats.failures["udp rate limited"] += 1
        server.metrics.rate_limited("bytes")
        return False

    def _from_client(self, data: bytes, udp: trio.socket.SocketType, nursery: trio.Nursery) -> None:
        try:
            datagram = parse_udp_datagram(data)
        except RemoteProtocolError:
            self.server.stats.failures["udp malformed"] += 1
            return
        if datagram.is_fragment:
            return  # no reassembly: RFC 1928 §7 lets us drop fragments
        if not self._admitted(len(datagram.data)):  # before resolving: a dropped datagram costs no look-up
            return
        nursery.start_soon(self._forward, datagram, udp)

    async def _forward(self, datagram: UdpDatagram, udp: trio.socket.SocketType) -> None:
        try:
            addresses = await self.server._resolve(datagram.address, self.client_ip)
        except (OSError, TimeoutError):  # PermissionError (denied) is an OSError
            self.server.stats.failures["udp denied"] += 1
            return
        # The first address our relay socket can reach (a name may resolve to both families).
        version = 6 if udp.family == socket.AF_INET6 else 4
        usable = [(address, port) for address, port in addresses if address.version == version]
        if not usable:
            self.server.stats.failures["udp unreachable"] += 1
            return
        address, port = usable[0]
        self.peers.add((str(address), port))
        if await _sendto_quietly(udp, datagram.data, (str(address), port)):
            self.counts[0] += len(datagram.data)


async def _sendto_quietly(udp: trio.socket.SocketType, data: bytes, address: tuple[str, int]) -> bool:
    try:
        await udp.sendto(data, address)
    except OSError:
        return False
    return True


async def _reply(stream: trio.abc.Stream, handshake: ServerHandshake, decide: Callable[[], None]) -> None:
    decide()
    await stream.send_all(handshake.data_to_send())


async def _write_quietly(stream: trio.abc.Stream, data: bytes) -> None:
    if not data:
        return
    with contextlib.suppress(*_STREAM_ERRORS):
        await stream.send_all(data)


async def _send_eof(stream: trio.abc.HalfCloseableStream) -> None:
    with contextlib.suppress(*_STREAM_ERRORS):
        await stream.send_eof()


def _local_address(stream: trio.abc.Stream) -> Address:
    """Our address on the TCP connection under *stream* (through TLS and prefix layers); 0.0.0.0:0 if none."""
    layer: object = stream
    while not isinstance(layer, trio.SocketStream):
        layer = getattr(layer, "transport_stream", None)
        if layer is None:
            return Address("0.0.0.0", 0)
    host, port = layer.socket.getsockname()[:2]
    return Address(_ip(host), port)


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
            server_logger.info("shutting down: no new clients; draining for up to %s s", config.shutdown_grace)
            await server.shutdown()

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
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
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
from ._server_common import ServerConfig, ServerStats, failure_for, format_tunnel, server_logger, upstream_failure

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
    :meth:`aclose`); :attr:`addresses` are the bound addresses (useful with port 0).
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.stats = ServerStats()
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

    async def __aenter__(self) -> ProxyServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Bind every listen address (plain ones first, then TLS ones) and start accepting."""
        loop = self._loop = asyncio.get_running_loop()
        tls = self.config.server_ssl_context() if self.config.tls_listen else None
        self._upstream_ssl = self.config.upstream_ssl_context() if self.config.upstreams else None
        plain = [(host, port, None) for host, port in self.config.listen]
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
        server_logger.info("listening on %s", ", ".join(f"{h}:{p}" for h, p in self.addresses))
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
        "peer",
        "phase",
        "request",
        "server",
        "started",
        "task",
        "timer",
        "transport",
        "up",
        "upstream",
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
        if handshake.must_close:
            self._finish("authentication failed")
            return False
        return True

    def _negotiated(self) -> None:
        """The handshake is done (the request is known): the negotiation deadline no longer applies."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _requested(self, request: TunnelRequested) -> None:
        self.request = request
        self._negotiated()
        self.phase = _REQUESTED  # the client's next bytes are kept for the relay (see buffer_updated)
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

    def _refuse(self, failure: Failure, outcome: str) -> None:
        assert self.handshake is not None
        self.handshake.reject(failure)
        self.transport.write(self.handshake.data_to_send())
        self._finish(outcome)

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
        if self.client_eof:
            self._finish("ok")

    # -- the tunnel ---------------------------------------------------------------------

    def _start_relay(self, upstream: Any, pending: _Pending) -> None:
        """Hand both transports to relay protocols; deliver what either side sent before (and EOFs).

        This is the one place the relay starts (a relay of another kind, such as
        splice for plain TCP, would replace it). The handshake is released here.
        """
        handshake = self.handshake
        assert handshake is not None
        trailing, eof = handshake.trailing_data
        early = trailing + self.early if self.early else trailing
        self.handshake = None
        self.early = b""
        self.upstream = upstream
        self.phase = _RELAY
        shared, limit = self.server._relay_buffer, 4 * self.server.config.buffer_size
        client_side = _RelaySide(self.transport, self, True, shared)
        upstream_side = _RelaySide(upstream, self, False, shared)
        client_side.peer, upstream_side.peer = upstream_side, client_side
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
        if server_logger.isEnabledFor(logging.INFO):
            server_logger.info(
                format_tunnel(
                    client=f"{self.peer[0]}:{self.peer[1]}",
                    user=request.username if request else handshake.username if handshake else None,
                    protocol=request.protocol if request else handshake.protocol if handshake else None,
                    command=request.command.name if request else "-",
                    target=request.target if request else None,
                    up=self.up,
                    down=self.down,
                    duration=_now() - self.started,
                    outcome=outcome,
                )
            )
        server._left(self)


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
    """The protocol of one end of a tunnel: what it receives goes to the other end's transport."""

    __slots__ = ("done", "peer", "shared", "tls", "transport", "tunnel", "upward")

    def __init__(self, transport: Any, tunnel: _Client, upward: bool, shared: list[memoryview]) -> None:
        self.transport = transport  # a selector socket transport, or a TLS one
        self.tunnel = tunnel
        self.upward = upward  # True: this is the client's end (its bytes go up to the target)
        self.shared = shared
        self.peer: _RelaySide = self
        self.done = False  # this direction ended (EOF received)
        self.tls = transport.get_extra_info("sslcontext") is not None

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.shared[0]  # the server's one buffer: idle tunnels hold none

    def buffer_updated(self, nbytes: int) -> None:
        """*nbytes* arrived on this end: write them to the other end (the place to count or throttle)."""
        sink = self.peer.transport
        sink.write(self.shared[0][:nbytes])
        if sink.get_write_buffer_size():  # the transport may keep a reference to it: never reuse
            self.shared[0] = memoryview(bytearray(len(self.shared[0])))
        tunnel = self.tunnel
        if self.upward:
            tunnel.up += nbytes
        else:
            tunnel.down += nbytes
        tunnel.last = _now()

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
        self.tunnel._finish("ok" if exc is None else f"relay error: {exc.__class__.__name__}")

    def pause_writing(self) -> None:  # our write buffer is full: stop reading the other side
        with contextlib.suppress(RuntimeError):
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        with contextlib.suppress(RuntimeError):
            if not self.peer.done:
                self.peer.transport.resume_reading()


class _UdpRelay(asyncio.DatagramProtocol):
    """Relays datagrams between one client and the targets it sends to."""

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
            self.transport.sendto(
                encode_udp_datagram(UdpDatagram(address=Address(source, port), data=data)),
                (str(self.client_ip), self.client_port),
            )
            self.record.down += len(data)
        else:
            self.server.stats.failures["udp dropped"] += 1

    def _from_client(self, data: bytes) -> None:
        try:
            datagram = parse_udp_datagram(data)
        except RemoteProtocolError:
            self.server.stats.failures["udp malformed"] += 1
            return
        if datagram.is_fragment:
            return  # no reassembly: RFC 1928 §7 lets us drop fragments
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

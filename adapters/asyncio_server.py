"""The proxy server on asyncio: SOCKS5, SOCKS4/4a and HTTP CONNECT on one port.

Each client connection runs the core's :class:`ServerHandshake` in the usual
loop (read, ``next_event``, write ``data_to_send``). The only decisions made
here are I/O ones: dial the target (after the access rules allowed it, by
name and by every resolved address), listen for BIND, relay UDP, and copy
bytes both ways. A success reply is written only after the dial succeeded.

With ``upstreams`` configured, a CONNECT whose target matches a rule naming
a proxy chain is dialled through that chain with this package's asyncio
client (:func:`socks_sansio.adapters.asyncio.open_connection`); the target's
name is then not resolved here (the last upstream resolves it), so the access
rules see the name and IP literals only: network rules and the
``block_private`` SSRF guard apply to IP-literal targets only, and the
upstream should run its own guard. BIND whose expected peer is routed through
an upstream, and UDP ASSOCIATE on a server with any proxy route, are refused
with COMMAND_NOT_SUPPORTED (neither can follow a TCP proxy chain).
``tls_listen`` addresses are served by ``asyncio.start_server(ssl=...)``: the
handshake sees the decrypted bytes, so HTTPS proxying (TLS, then CONNECT) and
SOCKS over TLS need nothing else. TLS has no half-close, so when either end of
a tunnel is a TLS connection, an EOF from either side ends the whole tunnel
(after flushing what was sent).

The relay copies each direction independently and passes half-close through:
when one side sends EOF, the other side's write half is shut down, and the
tunnel ends when both directions are done (or on error, or when idle for
``idle_timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
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
_READ: Final = 65536
# On Python 3.10 asyncio.wait_for raises asyncio.TimeoutError, not yet the builtin.
_TIMEOUTS: Final = (TimeoutError, asyncio.TimeoutError)


class _Refused(Exception):
    """A request ended with a refusal already sent; carries the outcome for the log."""

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


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
        self._tasks: set[asyncio.Task[None]] = set()
        self._stats_task: asyncio.Task[None] | None = None
        self._upstream_ssl: ssl.SSLContext | None = None
        # One receive buffer for every tunnel of this server (idle tunnels hold none). Per server,
        # not per process: servers running on event loops in different threads must not share it.
        self._relay_buffer = [memoryview(bytearray(config.buffer_size))]

    async def __aenter__(self) -> ProxyServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Bind every listen address (plain ones first, then TLS ones) and start accepting."""
        tls = self.config.server_ssl_context() if self.config.tls_listen else None
        self._upstream_ssl = self.config.upstream_ssl_context() if self.config.upstreams else None
        plain = [(host, port, None) for host, port in self.config.listen]
        for host, port, context in [*plain, *((h, p, tls) for h, p in self.config.tls_listen)]:
            server = await asyncio.start_server(
                self._accepted,
                host=host,
                port=port,
                backlog=self.config.backlog,
                reuse_port=self.config.reuse_port or None,
                limit=self.config.buffer_size,
                ssl=context,
                ssl_handshake_timeout=self.config.negotiation_timeout if context else None,
            )
            self._servers.append(server)
            for sock in server.sockets:
                self.addresses.append(sock.getsockname()[:2])
        server_logger.info("listening on %s", ", ".join(f"{h}:{p}" for h, p in self.addresses))
        if self.config.stats_interval > 0:
            self._stats_task = asyncio.create_task(self._log_stats())

    async def aclose(self, grace: float | None = None) -> None:
        """Stop accepting, let tunnels drain for *grace* seconds (default: the config's), then cancel them."""
        for server in self._servers:
            server.close()
        if self._tasks:
            _done, pending = await asyncio.wait(
                self._tasks, timeout=self.config.shutdown_grace if grace is None else grace
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
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

    # -- one client -------------------------------------------------------------------

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.stats.active >= self.config.max_clients:
            self.stats.failures["busy"] += 1
            writer.transport.abort()  # refused at once: the server stays up for everyone else
            return
        self.stats.active += 1
        task = asyncio.get_running_loop().create_task(self._client(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._left)

    def _left(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.stats.active -= 1

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client_ip = ipaddress.ip_address(peer[0].split("%")[0])
        started = time.monotonic()
        counts = [0, 0]
        handshake = self.config.handshake()
        request: TunnelRequested | None = None
        outcome = "ok"
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if not self.config.policy.client_allowed(client_ip):
                raise _Refused("client not allowed")
            try:
                request = await asyncio.wait_for(
                    self._negotiate(reader, writer, handshake), self.config.negotiation_timeout
                )
            except _TIMEOUTS:
                raise _Refused("negotiation timeout") from None
            if request is None:
                raise _Refused("closed during negotiation" if not handshake.must_close else "refused")
            await self._serve_request(request, reader, writer, handshake, client_ip, counts)
        except _Refused as refused:
            outcome = refused.outcome
        except RemoteProtocolError as exc:
            outcome = f"protocol error: {exc.message}"
            await _write_quietly(writer, handshake.data_to_send())
        except (OSError, asyncio.IncompleteReadError) as exc:
            outcome = f"connection error: {exc.__class__.__name__}"
        except asyncio.CancelledError:
            outcome = "cancelled"  # shutdown after the grace period
            raise
        finally:
            _abort_or_close(writer)
            key = outcome.split(":")[0]
            if outcome == "ok" and handshake.protocol is not None:
                self.stats.tunnels[handshake.protocol.name.lower()] += 1
            else:
                self.stats.failures[key] += 1
            self.stats.bytes_up += counts[0]
            self.stats.bytes_down += counts[1]
            server_logger.info(
                format_tunnel(
                    client=f"{peer[0]}:{peer[1]}",
                    user=handshake.username,
                    protocol=handshake.protocol,
                    command=request.command.name if request else "-",
                    target=request.target if request else None,
                    up=counts[0],
                    down=counts[1],
                    duration=time.monotonic() - started,
                    outcome=outcome,
                )
            )

    async def _negotiate(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handshake: ServerHandshake
    ) -> TunnelRequested | None:
        while True:
            try:
                event = handshake.next_event()
            except RemoteProtocolError:
                await _write_quietly(writer, handshake.data_to_send())
                raise
            out = handshake.data_to_send()
            if out:
                writer.write(out)
                await writer.drain()
            if isinstance(event, TunnelRequested):
                return event
            if isinstance(event, CredentialsReceived):
                ok = await asyncio.to_thread(  # a hashed password costs PBKDF2: off the event loop
                    self.config.check_credentials, event.username, event.password
                )
                handshake.accept_credentials(ok)
                writer.write(handshake.data_to_send())
                await writer.drain()
                if handshake.must_close:
                    raise _Refused("authentication failed")
                continue
            if isinstance(event, ClientClosed) or handshake.must_close:
                return None
            if event is NEED_DATA or event is PAUSED:
                data = await reader.read(_READ)
                handshake.receive_data(data)

    async def _serve_request(
        self,
        request: TunnelRequested,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        handshake: ServerHandshake,
        client_ip: IPAddress,
        counts: list[int],
    ) -> None:
        if request.command is Command.CONNECT:
            up_reader, up_writer = await self._dial(request.target, client_ip, handshake, writer)
            local = up_writer.get_extra_info("sockname")
            await self._reply(handshake, writer, lambda: handshake.accept(Address(local[0], local[1])))
            await self._relay(reader, writer, up_reader, up_writer, handshake, counts)
        elif request.command is Command.BIND:
            await self._bind(request, reader, writer, handshake, client_ip, counts)
        else:
            await self._udp_associate(request, reader, writer, handshake, client_ip, counts)

    async def _reply(
        self, handshake: ServerHandshake, writer: asyncio.StreamWriter, decide: Callable[[], None]
    ) -> None:
        decide()
        writer.write(handshake.data_to_send())
        await writer.drain()

    async def _refuse(
        self, handshake: ServerHandshake, writer: asyncio.StreamWriter, failure: Failure, outcome: str
    ) -> _Refused:
        handshake.reject(failure)
        await _write_quietly(writer, handshake.data_to_send())
        return _Refused(outcome)

    async def _resolve(
        self, target: Address, client_ip: IPAddress
    ) -> list[tuple[IPAddress, int]]:
        """Every address *target* may be dialled at, each allowed by the rules (SSRF guard included)."""
        denied = self.config.policy.check(client_ip, target)
        if denied:
            raise PermissionError(denied)
        if isinstance(target.host, bytes):
            loop = asyncio.get_running_loop()
            infos = await asyncio.wait_for(
                loop.getaddrinfo(target.host.decode("ascii", "replace"), target.port, type=socket.SOCK_STREAM),
                self.config.connect_timeout,
            )
            candidates = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
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
        self, target: Address, client_ip: IPAddress, handshake: ServerHandshake, writer: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        chain = self.config.route(target)
        if chain:
            return await self._dial_upstream(target, client_ip, handshake, writer, chain)
        try:
            addresses = await self._resolve(target, client_ip)
        except PermissionError as exc:
            raise await self._refuse(handshake, writer, Failure.NOT_ALLOWED, f"denied: {exc}") from None
        except (OSError, UnicodeError, *_TIMEOUTS) as exc:  # UnicodeError: a name the IDNA codec refuses
            raise await self._refuse(
                handshake, writer, Failure.HOST_UNREACHABLE, f"resolve failed: {exc.__class__.__name__}"
            ) from None
        error: BaseException = OSError("no address")
        deadline = time.monotonic() + self.config.connect_timeout
        for address, port in addresses:
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(str(address), port, limit=self.config.buffer_size),
                    max(0.001, deadline - time.monotonic()),
                )
            except (OSError, *_TIMEOUTS) as exc:
                error = exc
                continue
            sock = up_writer.get_extra_info("socket")
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return up_reader, up_writer
        failure = failure_for(error)
        raise await self._refuse(handshake, writer, failure, f"dial failed: {failure.name.lower()}")

    async def _dial_upstream(
        self,
        target: Address,
        client_ip: IPAddress,
        handshake: ServerHandshake,
        writer: asyncio.StreamWriter,
        chain: tuple[ProxyURL, ...],
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open the tunnel through *chain*; the rules are checked on the target as sent (not resolved here)."""
        denied = self.config.policy.check(client_ip, target)
        if denied:
            raise await self._refuse(handshake, writer, Failure.NOT_ALLOWED, f"denied: {denied}")
        try:
            up_reader, up_writer = await client.open_connection(
                target.host_str,
                target.port,
                proxy=chain,
                timeout=self.config.connect_timeout,
                proxy_ssl=self._upstream_ssl,
                limit=self.config.buffer_size,
            )
        except ProxyError as exc:
            failure = upstream_failure(exc)
            raise await self._refuse(
                handshake, writer, failure, f"upstream failed: {failure.name.lower()} ({exc.__class__.__name__})"
            ) from None
        except (LocalProtocolError, OSError) as exc:  # e.g. an IPv6 target through a SOCKS4 upstream
            raise await self._refuse(
                handshake, writer, Failure.GENERAL_FAILURE, f"upstream failed: {exc.__class__.__name__}"
            ) from None
        return up_reader, up_writer

    async def _relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
        handshake: ServerHandshake,
        counts: list[int],
        *,
        extra: bytes = b"",
    ) -> None:
        """Relay both ways until both directions ended (EOF passed through) or the tunnel idles.

        The streams are only used up to here: the relay hands both transports to
        :class:`_RelaySide` protocols, which receive into one shared buffer and
        write straight to the other transport, with the transports' own flow
        control (a full write buffer pauses reading on the other side).
        """
        loop = asyncio.get_running_loop()
        last = [time.monotonic()]
        try:
            early, eof = handshake.trailing_data
            early += extra + _take_buffered(reader)  # BIND: bytes sent while we waited for the peer
            eof = eof or reader.at_eof()
            if early:
                up_writer.write(early)
                counts[0] += len(early)
            first_down = _take_buffered(up_reader)
            if first_down:
                writer.write(first_down)
                counts[1] += len(first_down)
            up_done: asyncio.Future[None] = loop.create_future()
            down_done: asyncio.Future[None] = loop.create_future()
            client = _RelaySide(writer.transport, self._relay_buffer, counts, 0, last, up_done)
            upstream = _RelaySide(up_writer.transport, self._relay_buffer, counts, 1, last, down_done)
            client.peer, upstream.peer = upstream, client
            for side in (client, upstream):
                side.transport.set_protocol(side)
                side.transport.set_write_buffer_limits(high=4 * self.config.buffer_size)
            if eof:
                client.eof_received()
                client.transport.pause_reading()
            elif not client.transport.is_reading():
                client.transport.resume_reading()
            if not upstream.transport.is_reading():
                upstream.transport.resume_reading()
            await self._until_done_or_idle([down_done] if eof else [up_done, down_done], last)
        finally:
            _abort_or_close(up_writer)

    async def _until_done_or_idle(self, tasks: list[asyncio.Future[None]], last: list[float]) -> None:
        idle = self.config.idle_timeout
        try:
            while True:
                wait = max(0.05, last[0] + idle - time.monotonic())
                done, pending = await asyncio.wait(tasks, timeout=wait, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    if task.exception() is not None:
                        raise _Refused(f"relay error: {task.exception().__class__.__name__}")
                if not pending:
                    return
                if time.monotonic() - last[0] >= idle:
                    raise _Refused("idle timeout")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- BIND ---------------------------------------------------------------------------

    async def _bind(
        self,
        request: TunnelRequested,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        handshake: ServerHandshake,
        client_ip: IPAddress,
        counts: list[int],
    ) -> None:
        denied = self.config.policy.check(client_ip, request.target)
        if denied:
            raise await self._refuse(handshake, writer, Failure.NOT_ALLOWED, f"denied: {denied}")
        if self.config.route(request.target):
            raise await self._refuse(
                handshake, writer, Failure.COMMAND_NOT_SUPPORTED, "bind: not supported through an upstream"
            )
        local_ip = writer.get_extra_info("sockname")[0]
        arrived: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.get_running_loop().create_future()
        )

        def incoming(peer_reader: asyncio.StreamReader, peer_writer: asyncio.StreamWriter) -> None:
            if arrived.done():
                peer_writer.transport.abort()  # BIND accepts exactly one connection
            else:
                arrived.set_result((peer_reader, peer_writer))

        listener = await asyncio.start_server(incoming, host=local_ip, port=0, backlog=1)
        try:
            bound = listener.sockets[0].getsockname()
            await self._reply(handshake, writer, lambda: handshake.accept(Address(bound[0], bound[1])))
            early = await self._await_bind_peer(arrived, reader)
            if early is None:
                raise await self._refuse(handshake, writer, Failure.TIMED_OUT, "bind: no peer connected")
        finally:
            listener.close()
            if not arrived.done():
                arrived.cancel()
        peer_reader, peer_writer = arrived.result()
        peer = peer_writer.get_extra_info("peername")
        await self._reply(handshake, writer, lambda: handshake.bind_connected(Address(peer[0], peer[1])))
        await self._relay(reader, writer, peer_reader, peer_writer, handshake, counts, extra=early)

    async def _await_bind_peer(
        self, arrived: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]], reader: asyncio.StreamReader
    ) -> bytes | None:
        """Wait up to bind_timeout for BIND's peer while watching the client.

        Returns the bytes the client sent meanwhile (they go to the peer first), or
        ``None`` on time-out. A client that closes its connection ends the wait at once.
        """
        early = b""
        deadline = time.monotonic() + self.config.bind_timeout
        reading: asyncio.Future[bytes] = asyncio.ensure_future(reader.read(_READ))
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                waiting: set[asyncio.Future[Any]] = {arrived, reading}
                done, _ = await asyncio.wait(waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                if reading in done:
                    data = reading.result()
                    if not data:
                        raise _Refused("bind: the client left before a peer connected")
                    early += data
                    reading = asyncio.ensure_future(reader.read(_READ))
                if arrived in done:
                    return early
        finally:
            reading.cancel()  # a pending StreamReader.read() gives up without consuming anything

    # -- UDP ASSOCIATE --------------------------------------------------------------------

    async def _udp_associate(
        self,
        request: TunnelRequested,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        handshake: ServerHandshake,
        client_ip: IPAddress,
        counts: list[int],
    ) -> None:
        if any(rule.via for rule in self.config.upstreams):
            raise await self._refuse(
                handshake, writer, Failure.COMMAND_NOT_SUPPORTED, "udp associate: not supported with upstreams"
            )
        loop = asyncio.get_running_loop()
        local_ip = writer.get_extra_info("sockname")[0]
        declared_port = request.target.port
        relay = _UdpRelay(self, client_ip, declared_port, counts)
        transport, _ = await loop.create_datagram_endpoint(lambda: relay, local_addr=(local_ip, 0))
        try:
            bound = transport.get_extra_info("sockname")
            await self._reply(handshake, writer, lambda: handshake.accept(Address(bound[0], bound[1])))
            # The association lives as long as the control connection (RFC 1928 §7).
            while await reader.read(_READ):
                pass
        finally:
            transport.close()
            relay.close()


class _UdpRelay(asyncio.DatagramProtocol):
    """Relays datagrams between one client and the targets it sends to."""

    def __init__(self, server: ProxyServer, client_ip: IPAddress, declared_port: int, counts: list[int]) -> None:
        self.server = server
        self.client_ip = client_ip
        self.client_port = declared_port or None
        self.counts = counts
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
            self.counts[1] += len(data)
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
            addresses = await self.server._resolve(datagram.address, self.client_ip)
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
            self.counts[0] += len(datagram.data)

    def close(self) -> None:
        for task in self.pending:
            task.cancel()


def _take_buffered(reader: asyncio.StreamReader) -> bytes:
    """Bytes a StreamReader holds already, without waiting (the relay takes over its transport).

    asyncio has no public call for this; ``_buffer`` has been the StreamReader's
    buffer in every CPython since 3.4. Without it, nothing is buffered beyond what
    the handshake read, except in the rare case of a client sending more than one
    read's worth before our reply.
    """
    buffered = getattr(reader, "_buffer", None)
    if not isinstance(buffered, bytearray) or not buffered:
        return b""
    data = bytes(buffered)
    buffered.clear()
    return data


class _RelaySide(asyncio.BufferedProtocol):
    """The protocol of one end of a tunnel: what it receives goes to the other end's transport."""

    def __init__(
        self,
        transport: asyncio.WriteTransport,
        shared: list[memoryview],
        counts: list[int],
        index: int,
        last: list[float],
        done: asyncio.Future[None],
    ) -> None:
        self.transport = cast(Any, transport)  # a selector socket transport: reading and writing
        self.peer: _RelaySide | None = None
        self.shared = shared
        self.counts, self.index, self.last, self.done = counts, index, last, done

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.shared[0]  # the server's one buffer: idle tunnels hold none

    def buffer_updated(self, nbytes: int) -> None:
        assert self.peer is not None
        sink = self.peer.transport
        sink.write(self.shared[0][:nbytes])
        if sink.get_write_buffer_size():  # the transport may keep a reference to it: never reuse
            self.shared[0] = memoryview(bytearray(len(self.shared[0])))
        self.counts[self.index] += nbytes
        self.last[0] = time.monotonic()

    def eof_received(self) -> bool:
        assert self.peer is not None
        sink = self.peer.transport
        with contextlib.suppress(OSError, RuntimeError):
            if not sink.is_closing():
                if sink.can_write_eof():
                    sink.write_eof()  # half-close passes through
                else:
                    sink.close()  # TLS has no half-close: flush, close_notify, and the tunnel ends
        if not self.done.done():
            self.done.set_result(None)
        # Keep the other direction open; a TLS transport closes itself on EOF whatever we return.
        return self.transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        assert self.peer is not None
        for future in (self.done, self.peer.done):
            if not future.done():
                if exc is None:
                    future.set_result(None)
                else:
                    future.set_exception(exc)

    def pause_writing(self) -> None:  # our write buffer is full: stop reading the other side
        assert self.peer is not None
        with contextlib.suppress(RuntimeError):
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.peer is not None
        with contextlib.suppress(RuntimeError):
            if not self.peer.done.done():
                self.peer.transport.resume_reading()


async def _write_quietly(writer: asyncio.StreamWriter, data: bytes) -> None:
    if not data:
        return
    with contextlib.suppress(OSError, RuntimeError):
        writer.write(data)
        await writer.drain()


def _abort_or_close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, RuntimeError):
        writer.close()


async def serve(config: ServerConfig, *, ready: Callable[[ProxyServer], Awaitable[None] | None] | None = None) -> None:
    """Run a server until cancelled (SIGINT/SIGTERM handling is the CLI's job)."""
    async with ProxyServer(config) as server:
        if ready is not None:
            result = ready(server)
            if result is not None:
                await result
        await server.serve_forever()

"""The proxy server on trio: SOCKS5, SOCKS4/4a and HTTP CONNECT on one port.

This is the trio twin of :mod:`asyncio_server`, feature for feature. Each
client connection runs the core's :class:`ServerHandshake` in the usual loop
(read, ``next_event``, write ``data_to_send``). The only decisions made here
are I/O ones: dial the target (after the access rules allowed it, by name and
by every resolved address), listen for BIND, relay UDP, and copy bytes both
ways. A success reply is written only after the dial succeeded.

Structure, the trio way: :meth:`TrioProxyServer.serve` owns one nursery for
the client tasks and, inside it, a cancel scope around the accept loops.
:meth:`TrioProxyServer.shutdown` cancels only that scope (no new clients),
waits up to the grace period for the clients to finish, then cancels them.
Time limits are cancel scopes: the negotiation runs under ``move_on_after``,
and the relay's idle time-out is a scope whose deadline every transferred
chunk pushes back.

The relay copies each direction in its own task and passes half-close
through: when one side sends EOF, the other side's write half is shut down
(``send_eof``), and the tunnel ends when both directions are done (or on
error, or when idle for ``idle_timeout``). Errors are caught inside the tasks
that raise them, so nothing leaves a nursery wrapped in an exception group.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import signal
import socket
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
    RemoteProtocolError,
    ServerHandshake,
    TunnelRequested,
    UdpDatagram,
    __version__,
    encode_udp_datagram,
    parse_udp_datagram,
)

from ._server_common import ServerConfig, ServerStats, failure_for, format_tunnel, server_logger

__all__ = ["TrioProxyServer", "run"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_READ: Final = 65536
_UDP_READ: Final = 65535
# Stream failures: trio wraps socket errors in BrokenResourceError; raw sockets raise OSError.
_STREAM_ERRORS: Final = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)
# accept() failures that mean "out of resources for now", not "the listener is broken".
_ACCEPT_RETRY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


class _Refused(Exception):
    """A request ended with a refusal already sent; carries the outcome for the log."""

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


def _error_name(exc: BaseException) -> str:
    """The name logged for a stream error: the socket error behind trio's wrapper when there is one."""
    cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else None
    return type(cause if cause is not None else exc).__name__


def _ip(host: object) -> IPAddress:
    """A socket-address host as an ip address (IPv6 scope ids dropped)."""
    return ipaddress.ip_address(str(host).split("%")[0])


_CREDENTIAL_CHECKS: Final = trio.CapacityLimiter(4)


class TrioProxyServer:
    """A proxy server on trio.

    Run it with ``await nursery.start(server.serve)`` (which returns the bound
    addresses once every listener is up) and stop it by cancelling that
    nursery (at once) or with :meth:`shutdown` (graceful). One instance serves
    once. Upstream routes and TLS listen addresses are not supported on trio
    (use the asyncio server): a config with either raises ValueError here.

    Attributes:
        config: the settings.
        stats: counters, readable while the server runs.
        addresses: the bound ``(host, port)`` pairs (useful with port 0).
    """

    def __init__(self, config: ServerConfig) -> None:
        if config.upstreams or config.tls_listen:
            raise ValueError("upstreams and TLS listen addresses are supported by the asyncio server only")
        self.config = config
        self.stats = ServerStats()
        self.addresses: list[tuple[str, int]] = []
        self._listeners: list[trio.SocketListener] = []
        self._accepting = trio.CancelScope()
        self._grace = config.shutdown_grace
        self._client_left = trio.Event()
        self._stopped = trio.Event()
        self._started = False

    # -- lifecycle ----------------------------------------------------------------------

    async def bind(self) -> list[tuple[str, int]]:
        """Bind and listen on every configured address (done by :meth:`serve` when not done yet).

        Returns:
            the bound addresses, also kept in :attr:`addresses`.

        Raises:
            OSError: an address could not be resolved or bound; nothing stays bound.
        """
        if self._listeners:
            return self.addresses
        try:
            for host, port in self.config.listen:
                infos = await trio.socket.getaddrinfo(
                    host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
                )
                for family, type_, proto, _name, sockaddr in dict.fromkeys(infos):
                    self._listeners.append(await self._listen(family, type_, proto, sockaddr))
        except BaseException:
            for listener in self._listeners:
                listener.socket.close()
            self._listeners.clear()
            raise
        self.addresses = [listener.socket.getsockname()[:2] for listener in self._listeners]
        return self.addresses

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
            async with trio.open_nursery() as clients:
                if self.config.stats_interval > 0:
                    clients.start_soon(self._log_stats)
                task_status.started(list(self.addresses))  # listening already: early clients wait in the backlog
                with self._accepting:
                    async with trio.open_nursery() as accepting:
                        for listener in self._listeners:
                            accepting.start_soon(self._accept_loop, listener, clients)
                # Shutting down: no new clients; the running ones get the grace period.
                for listener in self._listeners:
                    listener.socket.close()
                with trio.move_on_after(self._grace):
                    while self.stats.active:
                        self._client_left = trio.Event()
                        await self._client_left.wait()
                clients.cancel_scope.cancel()
        finally:
            for listener in self._listeners:
                listener.socket.close()
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

    async def _accept_loop(self, listener: trio.SocketListener, clients: trio.Nursery) -> None:
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
            stream = trio.SocketStream(sock)
            self.stats.active += 1
            clients.start_soon(self._client, stream, (str(peer[0]), int(peer[1])))

    # -- one client -------------------------------------------------------------------

    async def _client(self, stream: trio.SocketStream, peer: tuple[str, int]) -> None:
        started = trio.current_time()
        counts = [0, 0]
        handshake = self.config.handshake()
        request: TunnelRequested | None = None
        outcome = "ok"
        finished = False
        try:
            client_ip = _ip(peer[0])
            if not self.config.policy.client_allowed(client_ip):
                raise _Refused("client not allowed")
            with trio.move_on_after(self.config.negotiation_timeout) as negotiation:
                request = await self._negotiate(stream, handshake)
            if negotiation.cancelled_caught:
                raise _Refused("negotiation timeout")
            if request is None:
                raise _Refused("closed during negotiation" if not handshake.must_close else "refused")
            await self._serve_request(request, stream, handshake, client_ip, counts)
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
            # Closed without an await: under a cancelled scope any checkpoint here would
            # raise Cancelled and skip the bookkeeping below.
            stream.socket.close()
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

    async def _negotiate(self, stream: trio.SocketStream, handshake: ServerHandshake) -> TunnelRequested | None:
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
                await stream.send_all(handshake.data_to_send())
                if handshake.must_close:
                    raise _Refused("authentication failed")
                continue
            if isinstance(event, ClientClosed) or handshake.must_close:
                return None
            if event is NEED_DATA or event is PAUSED:
                handshake.receive_data(await stream.receive_some(_READ))

    async def _serve_request(
        self,
        request: TunnelRequested,
        stream: trio.SocketStream,
        handshake: ServerHandshake,
        client_ip: IPAddress,
        counts: list[int],
    ) -> None:
        if request.command is Command.CONNECT:
            upstream = await self._dial(request.target, client_ip, handshake, stream)
            try:
                local = upstream.socket.getsockname()
                await _reply(stream, handshake, lambda: handshake.accept(Address(local[0], local[1])))
            except BaseException:
                upstream.socket.close()
                raise
            await self._relay(stream, upstream, handshake, counts)
        elif request.command is Command.BIND:
            await self._bind(request, stream, handshake, client_ip, counts)
        else:
            await self._udp_associate(request, stream, handshake, client_ip, counts)

    async def _refuse(
        self, handshake: ServerHandshake, stream: trio.SocketStream, failure: Failure, outcome: str
    ) -> _Refused:
        """Queue and write the refusal for *failure*; returns the exception to raise."""
        handshake.reject(failure)
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
        self, target: Address, client_ip: IPAddress, handshake: ServerHandshake, stream: trio.SocketStream
    ) -> trio.SocketStream:
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

    # -- the relay ------------------------------------------------------------------------

    async def _relay(
        self,
        client: trio.SocketStream,
        upstream: trio.SocketStream,
        handshake: ServerHandshake,
        counts: list[int],
        *,
        extra: bytes = b"",
    ) -> None:
        early, eof = handshake.trailing_data
        early += extra  # BIND: what the client sent while we waited for the peer
        errors: list[BaseException] = []
        try:
            if early:
                await upstream.send_all(early)
                counts[0] += len(early)
            if eof:
                await _send_eof(upstream)
            with trio.CancelScope(deadline=trio.current_time() + self.config.idle_timeout) as idle:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._copy, upstream, client, counts, 1, idle, errors)
                    if not eof:
                        nursery.start_soon(self._copy, client, upstream, counts, 0, idle, errors)
        finally:
            upstream.socket.close()
        if errors:
            raise _Refused(f"relay error: {_error_name(errors[0])}")
        if idle.cancelled_caught:
            raise _Refused("idle timeout")

    async def _copy(
        self,
        source: trio.SocketStream,
        sink: trio.SocketStream,
        counts: list[int],
        index: int,
        idle: trio.CancelScope,
        errors: list[BaseException],
    ) -> None:
        """Copy *source* to *sink* until EOF, then half-close *sink*; any traffic pushes the idle deadline."""
        size = self.config.buffer_size
        try:
            while data := await source.receive_some(size):
                await sink.send_all(data)
                counts[index] += len(data)
                idle.deadline = trio.current_time() + self.config.idle_timeout
        except _STREAM_ERRORS as exc:
            errors.append(exc)
            idle.cancel()  # ends the other direction too
            return
        await _send_eof(sink)

    # -- BIND ---------------------------------------------------------------------------

    async def _bind(
        self,
        request: TunnelRequested,
        stream: trio.SocketStream,
        handshake: ServerHandshake,
        client_ip: IPAddress,
        counts: list[int],
    ) -> None:
        denied = self.config.policy.check(client_ip, request.target)
        if denied:
            raise await self._refuse(handshake, stream, Failure.NOT_ALLOWED, f"denied: {denied}")
        local_ip = stream.socket.getsockname()[0]
        listener = trio.socket.socket(stream.socket.family, socket.SOCK_STREAM)
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
                    while data := await stream.receive_some(_READ):
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
        await self._relay(stream, peer_stream, handshake, counts, extra=bytes(early))

    # -- UDP ASSOCIATE --------------------------------------------------------------------

    async def _udp_associate(
        self,
        request: TunnelRequested,
        stream: trio.SocketStream,
        handshake: ServerHandshake,
        client_ip: IPAddress,
        counts: list[int],
    ) -> None:
        local_ip = stream.socket.getsockname()[0]
        relay = _UdpRelay(self, client_ip, request.target.port, counts)
        with trio.socket.socket(stream.socket.family, socket.SOCK_DGRAM) as udp:
            await udp.bind((local_ip, 0))
            bound = udp.getsockname()
            await _reply(stream, handshake, lambda: handshake.accept(Address(bound[0], bound[1])))
            error: BaseException | None = None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(relay.run, udp, nursery)
                # The association lives as long as the control connection (RFC 1928 §7).
                try:
                    while await stream.receive_some(_READ):
                        pass
                except _STREAM_ERRORS as exc:
                    error = exc
                nursery.cancel_scope.cancel()
            if error is not None:
                raise error


class _UdpRelay:
    """Relays datagrams between one client and the targets it sends to."""

    def __init__(self, server: TrioProxyServer, client_ip: IPAddress, declared_port: int, counts: list[int]) -> None:
        self.server = server
        self.client_ip = client_ip
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
                out = encode_udp_datagram(UdpDatagram(address=Address(source, port), data=data))
                if await _sendto_quietly(udp, out, (str(self.client_ip), self.client_port)):
                    self.counts[1] += len(data)
            else:
                self.server.stats.failures["udp dropped"] += 1

    def _from_client(self, data: bytes, udp: trio.socket.SocketType, nursery: trio.Nursery) -> None:
        try:
            datagram = parse_udp_datagram(data)
        except RemoteProtocolError:
            self.server.stats.failures["udp malformed"] += 1
            return
        if datagram.is_fragment:
            return  # no reassembly: RFC 1928 §7 lets us drop fragments
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


async def _reply(stream: trio.SocketStream, handshake: ServerHandshake, decide: Callable[[], None]) -> None:
    decide()
    await stream.send_all(handshake.data_to_send())


async def _write_quietly(stream: trio.SocketStream, data: bytes) -> None:
    if not data:
        return
    with contextlib.suppress(*_STREAM_ERRORS):
        await stream.send_all(data)


async def _send_eof(stream: trio.SocketStream) -> None:
    with contextlib.suppress(*_STREAM_ERRORS):
        await stream.send_eof()


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

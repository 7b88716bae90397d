"""Load, fault and soak tests of the proxy servers: the shared pieces.

Strategy: everything runs in one process on loopback. The upstream servers
(TCP echo, UDP echo, a listener that resets every connection, a closed port)
and the clients share one asyncio event loop, and so does the asyncio proxy
server under test, so a test can look at the server's counters and at the
process's resources (open file descriptors, asyncio tasks) between phases
without any synchronisation. The trio server runs in a thread of its own
(:class:`TrioBackend`); its tasks are counted through ``trio.from_thread``.
Clients speak through the core's :class:`ClientHandshake` over asyncio
streams, so they are independent of the servers' own code.

Every wait is bounded (:data:`TIMEOUT` per operation, and each test bounds its
whole body), and nothing here asserts on timing: durations and latencies are
measured and printed, never compared with a threshold.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import hashlib
import logging
import math
import os
import resource
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, cast

import trio

from socks_sansio import (
    Address,
    ClientHandshake,
    Command,
    ProxyProtocol,
    ProxyURL,
    ServerConfig,
    ServerStats,
    UdpDatagram,
    encode_udp_datagram,
    parse_udp_datagram,
)
from socks_sansio.adapters.server.asyncio import ProxyServer
from socks_sansio.adapters.server.trio import TrioProxyServer

HOST: Final = "127.0.0.1"
TIMEOUT: Final = 20.0
"""The bound on any single client operation (generous: the machine may be busy)."""
READ: Final = 65536

# -- the process's resources -----------------------------------------------------------


def fd_count() -> int:
    """Open file descriptors of this process (the listing's own descriptor included, consistently)."""
    for directory in ("/proc/self/fd", "/dev/fd"):
        with contextlib.suppress(OSError):
            return len(os.listdir(directory))
    raise RuntimeError("cannot count open file descriptors on this platform")


def task_count() -> int:
    """asyncio tasks alive in the running loop (the caller's included)."""
    return len(asyncio.all_tasks())


def trio_task_count() -> int:
    """Tasks alive in the running trio loop, its root task included."""
    count = 0
    tasks = [trio.lowlevel.current_root_task()]
    while tasks:
        task = tasks.pop()
        if task is None:
            continue
        count += 1
        for nursery in task.child_nurseries:
            tasks.extend(nursery.child_tasks)
    return count


@dataclass(frozen=True)
class Resources:
    """File descriptors and tasks at one moment (``tasks``: asyncio's, plus the trio server thread's)."""

    fds: int
    tasks: int

    @classmethod
    def now(cls, server_tasks: Callable[[], int] | None = None) -> Resources:
        return cls(fd_count(), task_count() + (server_tasks() if server_tasks else 0))

    def __str__(self) -> str:
        return f"fds={self.fds} tasks={self.tasks}"


async def settle(
    baseline: Resources, *, server_tasks: Callable[[], int] | None = None, seconds: float = 10.0
) -> Resources:
    """Wait (bounded) until descriptors and tasks are back down to *baseline*; return the last count.

    Closing a transport takes a loop iteration or two and cancelled tasks need
    one more step, so a short settle loop is fair; a leak never settles.
    """
    deadline = time.monotonic() + seconds
    while True:
        gc.collect()
        current = Resources.now(server_tasks)
        if (current.fds <= baseline.fds and current.tasks <= baseline.tasks) or time.monotonic() > deadline:
            return current
        await asyncio.sleep(0.05)


@contextlib.contextmanager
def open_files_limit(wanted: int) -> Iterator[int]:
    """Raise the soft RLIMIT_NOFILE towards *wanted* (up to the hard limit) for the block; yield the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    try:
        yield max(soft, target)
    finally:
        if target > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- the server's log -----------------------------------------------------------------


def tunnel_lines(records: Iterable[logging.LogRecord]) -> dict[str, list[str]]:
    """The server's per-connection log lines, as client ``ip:port`` -> the outcomes logged for it."""
    lines: dict[str, list[str]] = {}
    for record in records:
        if record.name != "socks_sansio.server":
            continue
        message = record.getMessage()
        if " outcome=" not in message:
            continue  # "listening on", "stopped", stats
        client = message.split(" ", 1)[0]
        lines.setdefault(client, []).append(message.rsplit(" outcome=", 1)[1])
    return lines


def server_config(**overrides: Any) -> ServerConfig:
    """A loopback server on a free port with room for many clients."""
    settings: dict[str, Any] = {
        "listen": ((HOST, 0),),
        "max_clients": 100_000,
        "backlog": 4096,
        "negotiation_timeout": 10.0,
        "connect_timeout": 5.0,
        "shutdown_grace": 2.0,
    }
    settings.update(overrides)
    return ServerConfig(**settings)


def proxy_url(
    protocol: ProxyProtocol, address: tuple[str, int], username: str | None = None, password: str | None = None
) -> ProxyURL:
    """Where the proxy under test is, spoken to with *protocol*."""
    return ProxyURL(protocol=protocol, address=Address(*address), username=username, password=password)


# -- upstream servers -------------------------------------------------------------------


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close and wait (quietly: the peer may already be gone)."""
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the peer gets a RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class TcpUpstream:
    """A loopback TCP server: echoes every byte back (half-close aware), or resets at once."""

    def __init__(self, *, resets: bool = False) -> None:
        self.resets = resets
        self.accepted = 0
        self.address = Address(HOST, 1)
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> TcpUpstream:
        self._server = await asyncio.start_server(self._handle, HOST, 0, backlog=4096)
        self.address = Address(HOST, self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.resets:
            reset(writer)
            return
        try:
            while data := await reader.read(READ):
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except OSError:
            pass
        finally:
            await close_writer(writer)


class _UdpEchoProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not isinstance(): before Python 3.12 the selector loop's UDP transport
        # does not derive from asyncio.DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.received += 1
        assert self.transport is not None
        self.transport.sendto(data, addr)


class UdpEcho:
    """A loopback UDP server that sends every datagram back to its sender."""

    def __init__(self) -> None:
        self.protocol = _UdpEchoProtocol()
        self.address = Address(HOST, 1)

    async def __aenter__(self) -> UdpEcho:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self.protocol, local_addr=(HOST, 0))
        self.address = Address(HOST, transport.get_extra_info("sockname")[1])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.protocol.transport is not None
        self.protocol.transport.close()


def closed_port() -> Address:
    """A loopback port nothing listens on (bound, never listened: connecting is refused)."""
    sock = socket.socket()
    sock.bind((HOST, 0))
    port = sock.getsockname()[1]
    sock.close()
    return Address(HOST, port)


# -- clients ------------------------------------------------------------------------------


@dataclass
class Tunnel:
    """A client connection through the proxy, handshake done."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    handshake: ClientHandshake
    seconds: float
    early: bytes = b""


def local_name(writer: asyncio.StreamWriter) -> str:
    """Our end of a connection, ``ip:port``, as the server's log names the client."""
    host, port = writer.get_extra_info("sockname")[:2]
    return f"{host}:{port}"


async def connect(
    address: tuple[str, int], *, source: str = HOST
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A plain TCP connection to the proxy (for clients that misbehave), from *source* (a loopback IP)."""
    return await asyncio.wait_for(asyncio.open_connection(*address, local_addr=_source(source)), TIMEOUT)


def _source(source: str) -> tuple[str, int] | None:
    """The ``local_addr`` for a connection from *source*: none for the default loopback address.

    An explicit ``bind((ip, 0))`` before ``connect`` cannot take a port still
    in TIME_WAIT, so a long run from one address would run out of ports; an
    unbound ``connect`` may reuse them.
    """
    return None if source == HOST else (source, 0)


async def open_tunnel(
    proxy: ProxyURL,
    target: Address,
    *,
    command: Command = Command.CONNECT,
    source: str = HOST,
    timeout: float = TIMEOUT,
) -> Tunnel:
    """Connect to *proxy* from *source* and run the client handshake for *target*; closed on failure.

    Raises:
        ProxyError: the proxy refused, or broke the protocol, or closed.
        asyncio.TimeoutError: the whole thing took longer than *timeout*.
    """
    return await asyncio.wait_for(_open_tunnel(proxy, target, command, source), timeout)


async def _open_tunnel(proxy: ProxyURL, target: Address, command: Command, source: str) -> Tunnel:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(
        proxy.address.host_str, proxy.address.port, local_addr=_source(source)
    )
    try:
        handshake = await run_handshake(reader, writer, ClientHandshake(proxy, target, command=command))
    except BaseException:
        writer.transport.abort()
        raise
    early, _eof = handshake.trailing_data
    return Tunnel(reader, writer, handshake, time.perf_counter() - started, early)


async def run_handshake(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handshake: ClientHandshake
) -> ClientHandshake:
    """Drive *handshake* over an open connection until the tunnel is up (the driver raises on refusal)."""
    writer.write(handshake.data_to_send())
    while not handshake.established:
        handshake.receive_data(await reader.read(handshake.read_size_hint))
        out = handshake.data_to_send()
        if out:
            writer.write(out)
    await writer.drain()
    return handshake


async def exchange(tunnel: Tunnel, payload: bytes, *, chunks: int = 1, pause: float = 0.0) -> bytes:
    """Send *payload* (in *chunks* writes, *pause* apart), half-close, read to EOF; return what came back.

    The connection is closed afterwards, whatever happened.
    """
    reader, writer = tunnel.reader, tunnel.writer

    async def send() -> None:
        step = max(1, math.ceil(len(payload) / chunks))
        for start in range(0, len(payload), step):
            writer.write(payload[start : start + step])
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)
        writer.write_eof()

    async def receive() -> bytes:
        parts = [tunnel.early]
        while data := await reader.read(READ):
            parts.append(data)
        return b"".join(parts)

    try:
        _, echoed = await asyncio.gather(send(), receive())
    except BaseException:
        writer.transport.abort()
        raise
    finally:
        await close_writer(writer)
    return echoed


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _DatagramClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.queue.put_nowait(data)


@dataclass
class UdpAssociation:
    """A UDP ASSOCIATE: the control connection and a socket to talk to the relay with."""

    tunnel: Tunnel
    transport: asyncio.DatagramTransport
    protocol: _DatagramClient
    lost: int = field(default=0)

    def send(self, target: Address, payload: bytes) -> None:
        """Send *payload* to *target* through the relay."""
        relay = self.tunnel.handshake.bound
        assert relay is not None
        packet = encode_udp_datagram(UdpDatagram(address=target, data=payload))
        self.transport.sendto(packet, (relay.host_str, relay.port))

    async def echo(self, target: Address, payload: bytes, *, tries: int = 3, wait: float = 2.0) -> bytes:
        """Send *payload* to *target* through the relay and return the datagram that comes back.

        UDP may drop a datagram under load even on loopback, so it is retried
        (bounded; each loss is counted in :attr:`lost`).
        """
        for _ in range(tries):
            self.send(target, payload)
            try:
                reply = parse_udp_datagram(await asyncio.wait_for(self.protocol.queue.get(), wait))
            except asyncio.TimeoutError:  # not the builtin before Python 3.11
                self.lost += 1
                continue
            assert reply.address == target, reply
            return reply.data
        raise TimeoutError(f"no UDP reply after {tries} tries")

    async def aclose(self) -> None:
        self.transport.close()
        await close_writer(self.tunnel.writer)


async def open_association(proxy: ProxyURL, *, source: str = HOST) -> UdpAssociation:
    """UDP ASSOCIATE through *proxy* (SOCKS5), from a fresh UDP socket on *source* (a loopback IP)."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(_DatagramClient, local_addr=(source, 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        tunnel = await open_tunnel(proxy, Address(source, port), command=Command.UDP_ASSOCIATE, source=source)
    except BaseException:
        transport.close()
        raise
    return UdpAssociation(tunnel, transport, protocol)


def median_ms(values: list[float]) -> str:
    """The median of *values* (seconds) in milliseconds, for printing."""
    if not values:
        return "n/a"
    ordered = sorted(values)
    middle = len(ordered) // 2
    value = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return f"{value * 1000:.1f} ms"


def percentile_ms(values: list[float], fraction: float) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000:.1f} ms"


# -- the server under test, on either backend ---------------------------------------------


class AsyncioBackend:
    """The asyncio :class:`ProxyServer` in the test's own loop."""

    name: Final = "asyncio"

    def __init__(self, config: ServerConfig) -> None:
        self._server = ProxyServer(config)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.addresses[0]
        return str(host), int(port)

    @property
    def stats(self) -> ServerStats:
        return self._server.stats

    def server_tasks(self) -> int:
        return 0  # the server's tasks are the loop's: Resources counts them already

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """The server runs nothing while the body runs (it shares our loop: keep the body free of awaits)."""
        yield

    async def __aenter__(self) -> AsyncioBackend:
        await self._server.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._server.aclose()


class TrioBackend:
    """The :class:`TrioProxyServer` in a thread of its own, so that asyncio clients can load it.

    ``server_tasks`` counts the trio loop's tasks from the asyncio side, so the
    leak check covers both loops; descriptors are the process's anyway.
    """

    name: Final = "trio"

    def __init__(self, config: ServerConfig) -> None:
        self._server = TrioProxyServer(config)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="trio-proxy-server", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.addresses[0]
        return str(host), int(port)

    @property
    def stats(self) -> ServerStats:
        return self._server.stats

    def server_tasks(self) -> int:
        return trio.from_thread.run_sync(trio_task_count, trio_token=self._token)

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """Block the trio loop (a blocking call run in it) for as long as the body runs."""
        entered, release = threading.Event(), threading.Event()

        def block() -> None:
            entered.set()
            release.wait(TIMEOUT)

        blocking = asyncio.ensure_future(
            asyncio.to_thread(functools.partial(trio.from_thread.run_sync, block, trio_token=self._token))
        )
        try:
            await asyncio.to_thread(entered.wait, TIMEOUT)
            yield
        finally:
            release.set()
            await blocking

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported by __aexit__ (or __aenter__)
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(self._server.serve)
            self._ready.set()
            await self._stop.wait()
            await self._server.shutdown()

    async def __aenter__(self) -> TrioBackend:
        self._thread.start()
        await asyncio.to_thread(self._ready.wait, TIMEOUT)
        if self._error is not None or not self._server.addresses:
            raise RuntimeError("the trio server did not start") from self._error
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._stop is not None and self._thread.is_alive():
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        await asyncio.to_thread(self._thread.join, TIMEOUT)
        assert not self._thread.is_alive(), "the trio server did not stop"
        if self._error is not None:
            raise self._error


BACKENDS: Final[dict[str, type[AsyncioBackend] | type[TrioBackend]]] = {
    "asyncio": AsyncioBackend,
    "trio": TrioBackend,
}

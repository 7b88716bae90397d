"""The asyncio server's own bookkeeping, checked from inside its event loop.

Strategy: each test runs :class:`ProxyServer` in its own ``asyncio.run`` (the
whole body bounded by :data:`BOUND`) with raw asyncio clients and a small
loopback target in the same loop, then looks at what the server holds: the
per-connection records (``ProxyServer._clients``), the loop's tasks, and the
counters. These are the properties the connect-rate and idle-memory work
relies on: negotiation runs on callbacks (no task), an idle tunnel holds no
handshake, task or buffered bytes, bytes and EOF that arrive on either side
before the relay starts are delivered, and the per-tunnel log line is only
built when someone listens. Nothing here measures time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from socks_sansio import ServerConfig
from socks_sansio._server import session as session_module
from socks_sansio._server.session import server_logger
from socks_sansio.adapters.server import asyncio_client as asyncio_server
from socks_sansio.adapters.server.asyncio import ProxyServer
from socks_sansio.adapters.server.asyncio_relay import Pending

HOST = "127.0.0.1"
BOUND = 20.0
"""The bound on each test's whole body (a hung server fails the test, never the suite)."""
GREETING = b"\x05\x01\x00"
T = TypeVar("T")


def run(body: Callable[[], Coroutine[Any, Any, T]]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(body(), BOUND)

    return asyncio.run(bounded())


def connect_request(port: int) -> bytes:
    """A SOCKS5 CONNECT to 127.0.0.1:*port* (RFC 1928 §4)."""
    return b"\x05\x01\x00\x01\x7f\x00\x00\x01" + port.to_bytes(2, "big")


async def until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll *check* on the loop until it holds (bounded: fails with *what* after *timeout* seconds)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def open_tunnel(server: ProxyServer, port: int, early: bytes = b"") -> tuple[asyncio.StreamReader, Any]:
    """A raw SOCKS5 client with its CONNECT (and *early* bytes) pipelined; returns after the reply."""
    reader, writer = await asyncio.open_connection(*server.addresses[0])
    writer.write(GREETING + connect_request(port) + early)
    assert await reader.readexactly(2) == b"\x05\x00"
    reply = await reader.readexactly(10)
    assert reply[:4] == b"\x05\x00\x00\x01", reply
    return reader, writer


class Target:
    """A loopback TCP target: records what each connection sends, optionally greets and half-closes first."""

    def __init__(self, greeting: bytes = b"", *, then_eof: bool = False) -> None:
        self.greeting, self.then_eof = greeting, then_eof
        self.received: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        if self.greeting:
            writer.write(self.greeting)
        if self.then_eof:
            writer.write_eof()
        self.received.append(await reader.read())  # until the proxy passes the client's EOF on
        writer.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> Target:
        self.server = await asyncio.start_server(self.handle, HOST, 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        for writer in self.writers:
            writer.close()
        self.server.close()
        await self.server.wait_closed()


def config(**fields: Any) -> ServerConfig:
    fields.setdefault("listen", ((HOST, 0),))
    fields.setdefault("shutdown_grace", 1.0)
    return ServerConfig(**fields)


def server_tasks() -> list[asyncio.Task[Any]]:
    """The running loop's tasks whose coroutine is the server module's."""
    return [
        task
        for task in asyncio.all_tasks()
        if getattr(getattr(task.get_coro(), "cr_code", None), "co_filename", None) == asyncio_server.__file__
    ]


def test_idle_tunnels_hold_no_task_handshake_or_bytes() -> None:
    async def body() -> None:
        async with Target() as target, ProxyServer(config()) as server:
            tunnels = [await open_tunnel(server, target.port) for _ in range(5)]
            await until(lambda: len(target.writers) == 5, "the target to see every tunnel")
            records = list(server._clients)
            assert len(records) == 5
            for record in records:
                assert record.waiting == asyncio_server._NOTHING, "relaying: waiting for nothing"
                assert record.session.handshake is None, "the handshake and its buffers are released"
                assert (record.task, record.inbox, record.keep, record.pending) == (None, bytearray(), None, None)
                assert record.timer is not None, "the idle time-out's one timer"
            assert server_tasks() == [], "an idle tunnel has no task"
            for _, writer in tunnels:
                writer.close()
            await until(lambda: not server._clients, "every tunnel to end")
            assert server.stats.tunnels["socks5"] == 5

    run(body)


def test_negotiation_runs_without_a_task_and_times_out() -> None:
    async def body() -> None:
        async with ProxyServer(config(negotiation_timeout=0.2)) as server:
            reader, writer = await asyncio.open_connection(*server.addresses[0])
            writer.write(b"\x05")  # half a greeting
            await until(lambda: len(server._clients) == 1, "the server to accept")
            assert server_tasks() == [], "negotiation needs no task"
            assert await reader.read() == b"", "closed when the negotiation deadline passes"
            writer.close()
            await until(lambda: not server._clients, "the connection to end")
            assert server.stats.failures == {"negotiation timeout": 1}

    run(body)


def test_bytes_and_eof_from_both_sides_before_the_relay_are_delivered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The target greets and half-closes, the client pipelines data and EOF, all before the relay starts."""
    start_relay = asyncio_server.Client._start_relay
    seen: list[tuple[bytes, bool]] = []

    def delayed(
        self: asyncio_server.Client, upstream: Any, pending: Pending, early: bytes, client_eof: bool
    ) -> None:
        # Start the relay only once the target's greeting and EOF have reached the pending protocol.
        if pending.eof or len(seen) > 1000:
            seen.append((bytes(pending.data), pending.eof))
            start_relay(self, upstream, pending, early, client_eof)
        else:
            seen.append((b"", False))
            self.loop.call_later(0.005, delayed, self, upstream, pending, early, client_eof)

    monkeypatch.setattr(asyncio_server.Client, "_start_relay", delayed)

    async def body() -> None:
        async with Target(b"hello from the target", then_eof=True) as target, ProxyServer(config()) as server:
            reader, writer = await open_tunnel(server, target.port, early=b"pipelined")
            writer.write_eof()
            assert await reader.read() == b"hello from the target", "the target's early bytes, then its EOF"
            await until(lambda: bool(target.received), "the target to get the client's EOF")
            assert target.received == [b"pipelined"]
            writer.close()
            await until(lambda: not server._clients, "the tunnel to end")
            assert seen[-1] == (b"hello from the target", True), "the bytes really arrived before the relay"
            assert (server.stats.bytes_up, server.stats.bytes_down) == (9, 21)
            assert server.stats.tunnels["socks5"] == 1

    run(body)


@pytest.mark.parametrize("level", [logging.INFO, logging.WARNING])
def test_tunnel_line_built_only_when_logged(monkeypatch: pytest.MonkeyPatch, level: int) -> None:
    built: list[str] = []
    format_tunnel = session_module.format_tunnel

    def counting(**fields: Any) -> str:
        line = format_tunnel(**fields)
        built.append(line)
        return line

    monkeypatch.setattr(session_module, "format_tunnel", counting)

    async def body() -> None:
        async with Target() as target, ProxyServer(config()) as server:
            _, writer = await open_tunnel(server, target.port)
            writer.close()
            await until(lambda: not server._clients, "the tunnel to end")

    previous = server_logger.level
    server_logger.setLevel(level)
    try:
        run(body)
    finally:
        server_logger.setLevel(previous)
    if level == logging.INFO:
        assert len(built) == 1
        assert built[0].endswith("outcome=ok"), built
    else:
        assert built == []


def test_grace_period_ends_a_waiting_bind() -> None:
    """aclose(grace) ends a connection that still waits (here for BIND's peer): closed, counted, no task left."""

    async def body() -> None:
        server = ProxyServer(config())
        await server.start()
        reader, writer = await asyncio.open_connection(*server.addresses[0])
        writer.write(GREETING + b"\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x00")  # BIND
        assert (await reader.readexactly(12))[:3] == b"\x05\x00\x05"  # method, then the first BIND reply
        await until(lambda: len(server._clients) == 1, "the BIND to wait")
        await server.aclose(grace=0.05)
        assert await reader.read() == b"", "the client is closed"
        writer.close()
        assert not server._clients
        assert server.stats.failures == {"cancelled": 1}
        assert server.stats.active == 0
        assert server_tasks() == []

    run(body)

"""Faults under load: misbehaving clients and upstreams while healthy tunnels run.

A few hundred healthy tunnels (SOCKS5, HTTP CONNECT and SOCKS4, each sending
its payload in slow chunks so that they span the whole test) run while faulty
connections arrive at random moments among them:

* clients that reset (SO_LINGER 0, then close) mid-handshake or mid-relay;
* targets that refuse (a closed port) or reset the connection at once;
* slowloris clients (one byte a second), cut by the negotiation timeout;
* HTTP heads over 16 KiB (431, then close), and garbage on the port;
* clients that vanish during UDP ASSOCIATE.

Checks: every healthy tunnel delivers its bytes intact; each faulty
connection gets exactly one log line with the expected outcome, and the
server's failure counters add up; the process ends with the descriptors and
asyncio tasks it started with (the leak check), both while the server still
runs and after it closed; and nothing is logged at ERROR (an exception that
escaped a connection task would be).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Final

import pytest

from socks_sansio import (
    Address,
    ClientHandshake,
    Command,
    ProxyProtocol,
    ProxyRefusedError,
)

from . import (
    BACKENDS,
    HOST,
    Resources,
    TcpUpstream,
    UdpEcho,
    closed_port,
    connect,
    digest,
    exchange,
    local_name,
    open_association,
    open_tunnel,
    proxy_url,
    reset,
    run_handshake,
    server_config,
    settle,
    tunnel_lines,
)

pytestmark = pytest.mark.load

HEALTHY: Final = 300
EACH: Final = 10  # faulty connections of each kind
NEGOTIATION_TIMEOUT: Final = 2.0
OPENING: Final = 50  # healthy handshakes in flight at once (each must beat the negotiation timeout)
WINDOW: Final = 2.5  # faults start at random moments within this many seconds
PROTOCOLS: Final = (ProxyProtocol.SOCKS5, ProxyProtocol.HTTP, ProxyProtocol.SOCKS4)


class Faults:
    """Faulty clients, each noting its own address and the outcome the server must log for it."""

    def __init__(
        self, proxy: tuple[str, int], echo: Address, resetter: Address, udp_echo: Address, *, udp_relays: bool
    ) -> None:
        self.proxy = proxy
        self.udp_relays = udp_relays
        self.echo = echo
        self.resetter = resetter
        self.udp_echo = udp_echo
        self.refused = closed_port()
        self.expected: dict[str, str] = {}  # client ip:port -> outcome prefix
        self.kinds: Counter[str] = Counter()
        self.rng = random.Random()
        self._sources = 0

    def source(self) -> str:
        """A loopback address of its own for each faulty connection.

        The server's log names a client by ``ip:port``; a port freed by a reset
        can be handed to the next connection, so ports alone would not tell
        connections apart. Healthy tunnels come from 127.0.0.1.
        """
        self._sources += 1
        return f"127.0.{1 + self._sources // 250}.{1 + self._sources % 250}"

    def url(self, index: int) -> Any:
        return proxy_url(PROTOCOLS[index % 3], self.proxy)

    def expect(self, writer: asyncio.StreamWriter, kind: str, outcome: str) -> None:
        self.expected[local_name(writer)] = outcome
        self.kinds[kind] += 1

    async def reset_mid_handshake(self, index: int) -> None:
        reader, writer = await connect(self.proxy, source=self.source())
        self.expect(writer, "client reset mid-handshake", "connection error")
        variant = index % 3
        if variant == 0:
            writer.write(b"\x05\x02\x00")  # a greeting announcing two methods, carrying one
        elif variant == 1:
            writer.write(b"\x05\x01\x00")
            assert await reader.readexactly(2) == b"\x05\x00"
            writer.write(b"\x05\x01\x00\x01\x7f")  # half a CONNECT request
        else:
            writer.write(b"CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: 127.0.0.1")
        await writer.drain()
        await asyncio.sleep(0.05)
        reset(writer)

    async def reset_mid_relay(self, index: int) -> None:
        tunnel = await open_tunnel(self.url(index), self.echo, source=self.source())
        self.expect(tunnel.writer, "client reset mid-relay", "relay error")
        tunnel.writer.write(self.rng.randbytes(16 * 1024))
        await tunnel.writer.drain()
        assert await tunnel.reader.read(1024)  # some of the echo came back: the relay is running
        reset(tunnel.writer)

    async def target_refuses(self, index: int) -> None:
        reader, writer = await connect(self.proxy, source=self.source())
        self.expect(writer, "target refuses (closed port)", "dial failed")
        try:
            with pytest.raises(ProxyRefusedError) as refused:
                await run_handshake(reader, writer, ClientHandshake(self.url(index), self.refused))
            assert refused.value.code in (5, 502, 91), refused.value  # SOCKS5 REP, HTTP status, SOCKS4 CD
        finally:
            writer.close()

    async def target_resets(self, index: int) -> None:
        reader, writer = await connect(self.proxy, source=self.source())
        try:
            try:
                await run_handshake(reader, writer, ClientHandshake(self.url(index), self.resetter))
            except ProxyRefusedError:
                # The reset came before the server's connect() completed: from its side the dial failed.
                self.expect(writer, "target resets", "dial failed")
                return
            self.expect(writer, "target resets", "relay error")
            with contextlib.suppress(ConnectionError):
                writer.write(b"hello?")
                while await asyncio.wait_for(reader.read(1024), 10):
                    pass
        finally:
            writer.close()

    async def slowloris(self, index: int) -> None:
        reader, writer = await connect(self.proxy, source=self.source())
        self.expect(writer, "slowloris (1 byte/s)", "negotiation timeout")
        if index % 2:
            message = b"CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n"
        else:
            message = b"\x05\x01\x00\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50"
        started, sent, cut = time.monotonic(), 0, False
        try:
            for octet in message:
                writer.write(bytes([octet]))
                await writer.drain()
                sent += 1
                with contextlib.suppress(asyncio.TimeoutError):  # "sleep" one second, noticing a close at once
                    while await asyncio.wait_for(reader.read(16), max(0.0, started + sent - time.monotonic())):
                        pass  # a SOCKS5 method selection: keep dripping
                    cut = True
                    break
        except ConnectionError:
            cut = True
        finally:
            writer.close()
        assert cut, f"a client sending one byte a second was not cut after {time.monotonic() - started:.1f} s"
        assert sent < len(message)

    async def oversized_head(self, index: int) -> None:
        reader, writer = await connect(self.proxy, source=self.source())
        self.expect(writer, "HTTP head over 16 KiB", "protocol error")
        padding = b"a" * (17 * 1024 + index)
        writer.write(b"CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: 127.0.0.1:80\r\nX-Padding: " + padding + b"\r\n\r\n")
        try:
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]

    async def garbage(self, index: int) -> None:
        reader, writer = await connect(self.proxy, source=self.source())
        self.expect(writer, "garbage on the port", "protocol error")
        noise = self.rng.randbytes(300)
        variant = index % 4
        if variant == 0:
            data = b"\x16\x03\x01\x01\x00\x01\x00\x00\xfc\x03\x03" + noise  # a TLS ClientHello
        elif variant == 1:
            data = bytes([self.rng.randrange(0x80, 0x100)]) + noise
        elif variant == 2:
            data = b"\x05\x01\x00" + b"\x07" + noise  # a greeting, then a request with version 7
        else:
            data = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"  # not CONNECT
        writer.write(data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
            while await asyncio.wait_for(reader.read(1024), 10):
                pass
        writer.close()

    async def udp_vanish(self, index: int) -> None:
        if index % 2:  # vanish once the association works
            association = await open_association(proxy_url(ProxyProtocol.SOCKS5, self.proxy), source=self.source())
            self.expect(association.tunnel.writer, "client vanishes during UDP ASSOCIATE", "connection error")
            try:
                payload = self.rng.randbytes(512)
                if self.udp_relays:
                    assert await association.echo(self.udp_echo, payload) == payload
                else:
                    association.send(self.udp_echo, payload)
            finally:
                reset(association.tunnel.writer)
                association.transport.close()
            return
        _, writer = await connect(self.proxy, source=self.source())  # vanish right after asking
        self.expect(writer, "client vanishes during UDP ASSOCIATE", "connection error")
        request = ClientHandshake(
            proxy_url(ProxyProtocol.SOCKS5, self.proxy), Address(HOST, 9), command=Command.UDP_ASSOCIATE,
            pipelined=True,
        )
        writer.write(request.data_to_send())
        await writer.drain()
        await asyncio.sleep(0.02)
        reset(writer)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_faults_under_load(backend: str, server_log: pytest.LogCaptureFixture) -> None:
    figures = asyncio.run(asyncio.wait_for(_faults_under_load(backend), 120))
    faulty = sum(figures["faults"].values())
    print(f"\n[faults] {backend} server: {HEALTHY} healthy tunnels, {faulty} faulty connections:")
    for key, value in figures.items():
        if key != "expected":
            print(f"[faults]   {key}: {value}")
    lines = tunnel_lines(server_log.records)
    expected: dict[str, str] = dict(figures["expected"])
    wrong = {
        client: lines.get(client)
        for client, outcome in expected.items()
        if len(lines.get(client, [])) != 1 or not lines[client][0].startswith(outcome)
    }
    assert not wrong, f"faulty connections without exactly one log line with the expected outcome: {wrong}"
    healthy = {client: outcomes for client, outcomes in lines.items() if client not in figures["expected"]}
    assert len(healthy) == HEALTHY
    assert all(client.startswith(f"{HOST}:") for client in healthy)
    assert all(outcomes == ["ok"] for outcomes in healthy.values())
    errors = [r.getMessage() for r in server_log.records if r.levelno >= logging.ERROR]
    assert not errors, errors[:5]
    assert figures["server failure counters"] == dict(Counter(expected.values())), "one count per fault"


async def _faults_under_load(backend: str) -> dict[str, Any]:
    before = Resources.now()
    config = server_config(negotiation_timeout=NEGOTIATION_TIMEOUT)
    async with (
        TcpUpstream() as echo,
        TcpUpstream(resets=True) as resetter,
        UdpEcho() as udp_echo,
        BACKENDS[backend](config) as server,
    ):
        idle = Resources.now(server.server_tasks)
        faults = Faults(server.address, echo.address, resetter.address, udp_echo.address, udp_relays=True)
        rng = random.Random()

        gate = asyncio.Semaphore(OPENING)

        async def healthy(index: int) -> int:
            async with gate:
                tunnel = await open_tunnel(faults.url(index), echo.address)
            payload = rng.randbytes(32 * 1024)
            echoed = await exchange(tunnel, payload, chunks=8, pause=0.3)
            assert digest(echoed) == digest(payload), f"healthy tunnel {index} lost or altered bytes"
            return len(payload)

        async def later(fault: Callable[[int], Awaitable[None]], index: int) -> None:
            await asyncio.sleep(rng.uniform(0, WINDOW))
            await fault(index)

        kinds = (
            faults.reset_mid_handshake,
            faults.reset_mid_relay,
            faults.target_refuses,
            faults.target_resets,
            faults.slowloris,
            faults.oversized_head,
            faults.garbage,
            faults.udp_vanish,
        )
        started = time.perf_counter()
        sizes, _ = await asyncio.gather(
            asyncio.gather(*(healthy(i) for i in range(HEALTHY))),
            asyncio.gather(*(later(kind, i) for kind in kinds for i in range(EACH))),
        )
        duration = time.perf_counter() - started
        stats = server.stats
        after = await settle(idle, server_tasks=server.server_tasks)
        assert (after.fds, after.tasks) == (idle.fds, idle.tasks), "descriptors or tasks leaked"
        assert sum(stats.tunnels.values()) == HEALTHY
    closed = await settle(before)
    assert (closed.fds, closed.tasks) == (before.fds, before.tasks)
    return {
        "faults": dict(faults.kinds),
        "healthy bytes each way": f"{sum(sizes)}, sha256 intact in all {HEALTHY}",
        "duration": f"{duration:.2f} s",
        "server failure counters": dict(stats.failures),
        "before / idle server / after / after close": f"{before} / {idle} / {after} / {closed}",
        "expected": faults.expected,
    }



RESET_BEFORE_ACCEPT: Final = 5


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_reset_before_accept(backend: str, server_log: pytest.LogCaptureFixture) -> None:
    """Clients that connect and reset while the server is busy are still logged and counted, once each."""
    sources, failures = asyncio.run(asyncio.wait_for(_reset_before_accept(backend), 60))
    lines = tunnel_lines(server_log.records)
    assert {source: lines.get(source) for source in sources} == {
        source: ["connection error: ConnectionResetError"] for source in sources
    }
    assert failures == {"connection error": RESET_BEFORE_ACCEPT}


async def _reset_before_accept(backend: str) -> tuple[list[str], dict[str, int]]:
    before = Resources.now()
    async with BACKENDS[backend](server_config()) as server:
        idle = Resources.now(server.server_tasks)
        sources = []
        async with server.paused():
            for number in range(RESET_BEFORE_ACCEPT):
                # Plain blocking sockets: the kernel completes the connection while the server is paused.
                sock = socket.create_connection(server.address, timeout=5, source_address=(f"127.0.2.{number + 1}", 0))
                sources.append("{}:{}".format(*sock.getsockname()))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
        deadline = time.monotonic() + 5  # bounded: a server that drops them never gets there
        while sum(server.stats.failures.values()) < RESET_BEFORE_ACCEPT and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        after = await settle(idle, server_tasks=server.server_tasks)
        assert (after.fds, after.tasks) == (idle.fds, idle.tasks), "descriptors or tasks leaked"
        failures = dict(server.stats.failures)
    closed = await settle(before)
    assert (closed.fds, closed.tasks) == (before.fds, before.tasks)
    return sources, failures

"""The trio proxy server (``socks-sansio serve --backend trio``), end to end on loopback.

Every test is a plain function run by ``trio.run`` (the :func:`trio_test`
decorator) under one overall deadline. The server runs in the test's own
nursery on 127.0.0.1:0; clients speak hand-written SOCKS5, SOCKS4/4a and HTTP
CONNECT bytes over trio streams, so the server is checked against the wire
formats, not against our own client. Targets are the threaded echo server of
``tests/adapters/servers.py`` and small trio peers. The last tests run curl
against the real command line in a subprocess.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import ipaddress
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from socks_sansio import (
    AccessPolicy,
    AccessRule,
    Address,
    ProxyProtocol,
    ServerConfig,
    UdpDatagram,
    UserDatabase,
    encode_udp_datagram,
    parse_udp_datagram,
)
from socks_sansio.adapters.server.trio import TrioProxyServer
from tests.adapters.servers import echo_server
from tests.peer_servers import require_binary

LOCAL = "127.0.0.1"
LIMIT = 10.0  # seconds any one test may take: a hang fails instead of blocking the suite
USERS = UserDatabase({"alice": "secret"})
SERVER_LOG = "socks_sansio.server"


def trio_test(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test with ``trio.run`` under :data:`LIMIT` (fixtures and parameters pass through)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        async def main() -> None:
            with trio.fail_after(LIMIT):
                await fn(*args, **kwargs)

        trio.run(main)

    return wrapper


@pytest.fixture(scope="module")
def echo_port() -> Iterator[int]:
    with echo_server() as server:
        yield server.port


@contextlib.asynccontextmanager
async def proxy(**settings: Any) -> AsyncIterator[TrioProxyServer]:
    """A :class:`TrioProxyServer` on 127.0.0.1:0 for the duration of the block (cancelled at the end)."""
    server = TrioProxyServer(ServerConfig(listen=((LOCAL, 0),), **settings))
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(server.serve)
        assert addresses == server.addresses
        yield server
        nursery.cancel_scope.cancel()


async def dial(server: TrioProxyServer) -> trio.SocketStream:
    host, port = server.addresses[0]
    return await trio.open_tcp_stream(host, port)


async def settle(server: TrioProxyServer, active: int = 0) -> None:
    """Wait until the server counts *active* clients (bounded by the test's deadline)."""
    while server.stats.active != active:
        await trio.sleep(0.01)


async def receive_exactly(stream: trio.abc.ReceiveStream, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = await stream.receive_some(count - len(data))
        assert chunk, f"EOF after {data!r}, expected {count} octets"
        data += chunk
    return data


async def receive_until_eof(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


async def closed_by_server(stream: trio.SocketStream) -> bool:
    """True when the server closed the connection (EOF or reset), after whatever it still sent; closes ours."""
    with contextlib.suppress(trio.BrokenResourceError):
        await receive_until_eof(stream)
    await stream.aclose()
    return True


async def receive_head(stream: trio.abc.ReceiveStream) -> bytes:
    """An HTTP response head, read one octet at a time so that no tunnel byte is consumed."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        chunk = await stream.receive_some(1)
        assert chunk, f"EOF inside the response head {head!r}"
        head += chunk
    return head


def free_port() -> int:
    """A loopback TCP port nothing listens on (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind((LOCAL, 0))
        port: int = sock.getsockname()[1]
    return port


# -- the three protocols, written by hand ------------------------------------------------------


def socks5_address(host: str | bytes, port: int) -> bytes:
    if isinstance(host, bytes):
        return b"\x03" + bytes([len(host)]) + host + port.to_bytes(2, "big")
    ip = ipaddress.ip_address(host)
    return (b"\x01" if ip.version == 4 else b"\x04") + ip.packed + port.to_bytes(2, "big")


def socks5_request(command: int, host: str | bytes, port: int) -> bytes:
    return bytes([5, command, 0]) + socks5_address(host, port)


async def socks5_reply(stream: trio.abc.ReceiveStream) -> tuple[int, str, int]:
    """``(REP, BND.ADDR, BND.PORT)`` of a SOCKS5 reply (RFC 1928 §6)."""
    version, rep, _rsv, atyp = await receive_exactly(stream, 4)
    assert version == 5
    if atyp == 1:
        host = str(ipaddress.ip_address(await receive_exactly(stream, 4)))
    elif atyp == 4:
        host = str(ipaddress.ip_address(await receive_exactly(stream, 16)))
    else:
        host = (await receive_exactly(stream, (await receive_exactly(stream, 1))[0])).decode()
    return rep, host, int.from_bytes(await receive_exactly(stream, 2), "big")


async def socks5_handshake(
    stream: trio.SocketStream, *, auth: tuple[bytes, bytes] | None = None
) -> None:
    """Greeting (and RFC 1929 sub-negotiation when *auth* is given), asserting success."""
    if auth is None:
        await stream.send_all(b"\x05\x01\x00")
        assert await receive_exactly(stream, 2) == b"\x05\x00"
        return
    await stream.send_all(b"\x05\x02\x00\x02")
    assert await receive_exactly(stream, 2) == b"\x05\x02"
    user, password = auth
    await stream.send_all(b"\x01" + bytes([len(user)]) + user + bytes([len(password)]) + password)
    assert await receive_exactly(stream, 2) == b"\x01\x00"


async def socks5_connect(
    server: TrioProxyServer, host: str | bytes, port: int, *, auth: tuple[bytes, bytes] | None = None
) -> tuple[trio.SocketStream, int]:
    stream = await dial(server)
    await socks5_handshake(stream, auth=auth)
    await stream.send_all(socks5_request(1, host, port))
    rep, _, _ = await socks5_reply(stream)
    return stream, rep


def socks4_request(command: int, host: str | bytes, port: int, user: bytes = b"bob") -> bytes:
    """SOCKS4 (IPv4 literal) or SOCKS4a (a name after DSTIP 0.0.0.1)."""
    head = bytes([4, command]) + port.to_bytes(2, "big")
    if isinstance(host, bytes):
        return head + b"\x00\x00\x00\x01" + user + b"\x00" + host + b"\x00"
    return head + ipaddress.IPv4Address(host).packed + user + b"\x00"


async def socks4_reply(stream: trio.abc.ReceiveStream) -> tuple[int, str, int]:
    """``(CD, DSTIP, DSTPORT)`` of a SOCKS4 reply (VN 0)."""
    reply = await receive_exactly(stream, 8)
    assert reply[0] == 0
    return reply[1], str(ipaddress.IPv4Address(reply[4:8])), int.from_bytes(reply[2:4], "big")


def http_connect(authority: str, *, credentials: str | None = None) -> bytes:
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if credentials is not None:
        lines.append("Proxy-Authorization: Basic " + base64.b64encode(credentials.encode()).decode())
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status_of(head: bytes) -> int:
    return int(head.split(b" ", 2)[1])


async def assert_echoes(stream: trio.SocketStream, payload: bytes = b"hello through the tunnel") -> None:
    await stream.send_all(payload)
    assert await receive_exactly(stream, len(payload)) == payload


# -- CONNECT on each protocol --------------------------------------------------------------------


@pytest.mark.parametrize("host", [LOCAL, b"localhost"])
@trio_test
async def test_socks5_connect_without_auth(echo_port: int, host: str | bytes) -> None:
    async with proxy() as server:
        stream = await dial(server)
        await socks5_handshake(stream)
        await stream.send_all(socks5_request(1, host, echo_port))
        rep, bound_host, bound_port = await socks5_reply(stream)
        assert (rep, bound_host) == (0, LOCAL)
        assert bound_port > 0  # our end of the upstream connection
        await assert_echoes(stream, b"x" * 5)
        await stream.aclose()
        await settle(server)
        assert server.stats.tunnels["socks5"] == 1
        assert (server.stats.bytes_up, server.stats.bytes_down) == (5, 5)


@trio_test
async def test_socks5_connect_with_auth_logs_one_line_without_the_password(
    echo_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=SERVER_LOG)
    async with proxy(users=USERS) as server:
        stream, rep = await socks5_connect(server, LOCAL, echo_port, auth=(b"alice", b"secret"))
        assert rep == 0
        await assert_echoes(stream)
        await stream.aclose()
        await settle(server)
    lines = [r.getMessage() for r in caplog.records if "outcome=" in r.getMessage()]
    assert len(lines) == 1
    assert "user=alice proto=socks5 cmd=CONNECT" in lines[0]
    assert lines[0].endswith("outcome=ok")
    assert "secret" not in caplog.text


@trio_test
async def test_socks5_wrong_password_is_refused(echo_port: int) -> None:
    async with proxy(users=USERS) as server:
        stream = await dial(server)
        await stream.send_all(b"\x05\x01\x02\x01\x05alice\x05wrong")
        assert await receive_exactly(stream, 4) == b"\x05\x02\x01\x01"  # method 2, then failure
        assert await closed_by_server(stream)
        # Offering only "no authentication" to a server that requires it: 0xFF, then close.
        stream = await dial(server)
        await stream.send_all(b"\x05\x01\x00")
        assert await receive_exactly(stream, 2) == b"\x05\xff"
        assert await closed_by_server(stream)
        await settle(server)
        assert server.stats.failures["authentication failed"] == 1
        assert not server.stats.tunnels


@pytest.mark.parametrize("host", [LOCAL, b"localhost"], ids=["socks4", "socks4a"])
@trio_test
async def test_socks4_connect(echo_port: int, host: str | bytes) -> None:
    async with proxy() as server:
        stream = await dial(server)
        await stream.send_all(socks4_request(1, host, echo_port))
        code, _, _ = await socks4_reply(stream)
        assert code == 90
        await assert_echoes(stream)
        await stream.aclose()
        await settle(server)
        assert server.stats.tunnels["socks4"] == 1


@trio_test
async def test_socks4_is_refused_when_auth_is_required(echo_port: int) -> None:
    async with proxy(users=USERS) as server:
        stream = await dial(server)
        await stream.send_all(socks4_request(1, LOCAL, echo_port))
        assert (await socks4_reply(stream))[0] == 91
        assert await closed_by_server(stream)


@trio_test
async def test_http_connect_basic_auth_and_407(echo_port: int) -> None:
    authority = f"{LOCAL}:{echo_port}"
    async with proxy(users=USERS) as server:
        stream = await dial(server)
        await stream.send_all(http_connect(authority))
        head = await receive_head(stream)
        assert status_of(head) == 407
        assert b'Proxy-Authenticate: Basic realm="socks-sansio"' in head
        # The 407 keeps the connection open: the client may answer the challenge on it.
        await stream.send_all(http_connect(authority, credentials="alice:secret"))
        assert status_of(await receive_head(stream)) == 200
        await assert_echoes(stream)
        await stream.aclose()
        # A wrong password: 407 again, and this time the server closes.
        stream = await dial(server)
        await stream.send_all(http_connect(authority, credentials="alice:wrong"))
        assert status_of(await receive_head(stream)) == 407
        assert await closed_by_server(stream)
        await settle(server)
        assert server.stats.tunnels["http"] == 1


# -- the relay -----------------------------------------------------------------------------------


@trio_test
async def test_half_close_passes_through(echo_port: int) -> None:
    payload = os.urandom(300_000)
    async with proxy() as server:
        stream, rep = await socks5_connect(server, LOCAL, echo_port)
        assert rep == 0
        received = b""

        async def read_all() -> None:
            nonlocal received
            received = await receive_until_eof(stream)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            await stream.send_all(payload)
            await stream.send_eof()  # our half only: the echo keeps answering until it has sent everything
        assert received == payload
        await stream.aclose()
        await settle(server)
        assert server.stats.tunnels["socks5"] == 1


@pytest.mark.parametrize("protocol", ["socks5", "socks4a", "http"])
@trio_test
async def test_early_data_reaches_the_target_first(echo_port: int, protocol: str) -> None:
    early = b"sent with the request"
    async with proxy() as server:
        stream = await dial(server)
        if protocol == "socks5":
            await stream.send_all(b"\x05\x01\x00" + socks5_request(1, LOCAL, echo_port) + early)
            assert await receive_exactly(stream, 2) == b"\x05\x00"
            assert (await socks5_reply(stream))[0] == 0
        elif protocol == "socks4a":
            await stream.send_all(socks4_request(1, b"localhost", echo_port) + early)
            assert (await socks4_reply(stream))[0] == 90
        else:
            await stream.send_all(http_connect(f"localhost:{echo_port}") + early)
            assert status_of(await receive_head(stream)) == 200
        assert await receive_exactly(stream, len(early)) == early
        await assert_echoes(stream, b"and after")
        await stream.aclose()
        await settle(server)
        assert server.stats.bytes_up == len(early) + len(b"and after")


@trio_test
async def test_idle_tunnel_is_closed(echo_port: int) -> None:
    async with proxy(idle_timeout=0.2) as server:
        stream, rep = await socks5_connect(server, LOCAL, echo_port)
        assert rep == 0
        assert await closed_by_server(stream)  # we said nothing, so the server gave up on the tunnel
        await settle(server)
        assert server.stats.failures["idle timeout"] == 1


# -- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("protocol", "expected"), [("socks5", 5), ("socks4", 91), ("http", 502)])
@trio_test
async def test_refused_upstream(protocol: str, expected: int) -> None:
    port = free_port()
    async with proxy() as server:
        if protocol == "socks5":
            stream, code = await socks5_connect(server, LOCAL, port)
        elif protocol == "socks4":
            stream = await dial(server)
            await stream.send_all(socks4_request(1, LOCAL, port))
            code = (await socks4_reply(stream))[0]
        else:
            stream = await dial(server)
            await stream.send_all(http_connect(f"{LOCAL}:{port}"))
            code = status_of(await receive_head(stream))
        assert code == expected
        assert await closed_by_server(stream)
        await settle(server)
        assert server.stats.failures["dial failed"] == 1


@pytest.mark.parametrize(
    ("policy", "host"),
    [
        (AccessPolicy(rules=(AccessRule.parse("deny", "to=127.0.0.0/8"),)), LOCAL),
        (AccessPolicy(rules=(AccessRule.parse("deny", "to=127.0.0.0/8"),)), b"localhost"),  # checked after DNS
        (AccessPolicy(block_private=True), b"localhost"),
        (AccessPolicy(rules=(AccessRule.parse("deny", "to=*.localhost,localhost"),)), b"localhost"),
    ],
    ids=["network", "network-after-dns", "block-private", "name"],
)
@trio_test
async def test_rules_deny(echo_port: int, policy: AccessPolicy, host: str | bytes) -> None:
    async with proxy(policy=policy) as server:
        stream, rep = await socks5_connect(server, host, echo_port)
        assert rep == 2  # connection not allowed by ruleset
        assert await closed_by_server(stream)
        stream = await dial(server)
        await stream.send_all(http_connect(f"{host.decode() if isinstance(host, bytes) else host}:{echo_port}"))
        assert status_of(await receive_head(stream)) == 403
        assert await closed_by_server(stream)
        await settle(server)
        assert server.stats.failures["denied"] == 2


@trio_test
async def test_unresolvable_name_is_host_unreachable() -> None:
    async with proxy(connect_timeout=2.0) as server:
        stream, rep = await socks5_connect(server, b"a..b", 80)  # not even a valid host name
        assert rep == 4
        assert await closed_by_server(stream)
        await settle(server)
        assert server.stats.failures["resolve failed"] == 1


@trio_test
async def test_client_rule_refuses_at_once() -> None:
    async with proxy(policy=AccessPolicy(rules=(AccessRule.parse("deny", "from=127.0.0.0/8"),))) as server:
        stream = await dial(server)
        assert await closed_by_server(stream)
        await settle(server)
        assert server.stats.failures["client not allowed"] == 1


@trio_test
async def test_protocol_errors_close_the_connection() -> None:
    async with proxy(protocols=frozenset({ProxyProtocol.HTTP})) as server:
        stream = await dial(server)
        await stream.send_all(b"\x16\x03\x01\x02\x00\x01\x00")  # a TLS ClientHello on a plain port
        assert await closed_by_server(stream)
        stream = await dial(server)
        await stream.send_all(b"\x05\x01\x00")  # SOCKS5 on an HTTP-only port
        assert await closed_by_server(stream)
        await settle(server)
        assert server.stats.failures["protocol error"] == 2


@trio_test
async def test_negotiation_timeout_drops_a_silent_client() -> None:
    async with proxy(negotiation_timeout=0.2) as server:
        silent = await dial(server)
        partial = await dial(server)
        await partial.send_all(b"\x05\x02\x00")  # a greeting that never ends
        assert await closed_by_server(silent)
        assert await closed_by_server(partial)
        await settle(server)
        assert server.stats.failures["negotiation timeout"] == 2


@trio_test
async def test_max_clients_refuses_at_once_then_recovers(echo_port: int) -> None:
    async with proxy(max_clients=1) as server:
        first = await dial(server)
        await settle(server, 1)
        second = await dial(server)
        assert await closed_by_server(second)
        assert server.stats.failures["busy"] == 1
        await first.aclose()
        await settle(server)
        stream, rep = await socks5_connect(server, LOCAL, echo_port)
        assert rep == 0
        await assert_echoes(stream)
        await stream.aclose()


# -- BIND ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["socks5", "socks4"])
@trio_test
async def test_bind_end_to_end(protocol: str) -> None:
    async with proxy() as server:
        control = await dial(server)
        if protocol == "socks5":
            await socks5_handshake(control)
            await control.send_all(socks5_request(2, LOCAL, 0))
            read_reply = socks5_reply
        else:
            await control.send_all(socks4_request(2, LOCAL, 0))
            read_reply = socks4_reply
        code, host, port = await read_reply(control)
        assert code in (0, 90)
        assert host == LOCAL
        peer = await trio.open_tcp_stream(host, port)
        code, peer_host, peer_port = await read_reply(control)
        assert code in (0, 90)
        assert (peer_host, peer_port) == tuple(peer.socket.getsockname()[:2])
        await peer.send_all(b"from the peer")
        assert await receive_exactly(control, 13) == b"from the peer"
        await control.send_all(b"from the client")
        assert await receive_exactly(peer, 15) == b"from the client"
        await control.send_eof()
        assert await receive_until_eof(peer) == b""  # the half-close reached the peer
        await peer.send_all(b"still open")
        await peer.aclose()
        assert await receive_until_eof(control) == b"still open"
        await control.aclose()
        await settle(server)
        assert sum(server.stats.tunnels.values()) == 1


@trio_test
async def test_bind_times_out_without_a_peer() -> None:
    async with proxy(bind_timeout=0.2) as server:
        control = await dial(server)
        await socks5_handshake(control)
        await control.send_all(socks5_request(2, LOCAL, 0))
        assert (await socks5_reply(control))[0] == 0
        assert (await socks5_reply(control))[0] == 6  # TTL expired: our TIMED_OUT
        assert await closed_by_server(control)


@trio_test
async def test_bind_and_udp_destinations_obey_the_rules() -> None:
    async with proxy(policy=AccessPolicy(rules=(AccessRule.parse("deny", "to=127.0.0.0/8"),))) as server:
        control = await dial(server)
        await socks5_handshake(control)
        await control.send_all(socks5_request(2, LOCAL, 0))
        assert (await socks5_reply(control))[0] == 2
        assert await closed_by_server(control)
        control = await dial(server)
        await socks5_handshake(control)
        await control.send_all(socks5_request(3, "0.0.0.0", 0))
        rep, host, port = await socks5_reply(control)
        assert rep == 0
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            await client.bind((LOCAL, 0))
            datagram = UdpDatagram(address=Address(LOCAL, 9), data=b"to a denied target")
            await client.sendto(encode_udp_datagram(datagram), (host, port))
            while server.stats.failures["udp denied"] < 1:
                await trio.sleep(0.01)
        await control.aclose()
        await settle(server)
        assert server.stats.failures["denied"] == 1
        assert server.stats.bytes_up == 0


# -- UDP ASSOCIATE -------------------------------------------------------------------------------


async def udp_echo(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.bind((LOCAL, 0))
        task_status.started(sock.getsockname()[1])
        while True:
            data, source = await sock.recvfrom(65535)
            await sock.sendto(b"echo:" + data, source)


@trio_test
async def test_udp_associate_end_to_end() -> None:
    async with proxy() as server, trio.open_nursery() as nursery:
        echo_port = await nursery.start(udp_echo)
        control = await dial(server)
        await socks5_handshake(control)
        await control.send_all(socks5_request(3, "0.0.0.0", 0))
        rep, relay_host, relay_port = await socks5_reply(control)
        assert (rep, relay_host) == (0, LOCAL)
        relay = (relay_host, relay_port)
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client, trio.socket.socket(
            socket.AF_INET, socket.SOCK_DGRAM
        ) as stranger:
            await client.bind((LOCAL, 0))
            await stranger.bind((LOCAL, 0))

            async def ask(target: Address, data: bytes) -> UdpDatagram:
                await client.sendto(encode_udp_datagram(UdpDatagram(address=target, data=data)), relay)
                packet, source = await client.recvfrom(65535)
                assert source == relay
                return parse_udp_datagram(packet)

            answer = await ask(Address(LOCAL, echo_port), b"ping")
            assert answer == UdpDatagram(address=Address(LOCAL, echo_port), data=b"echo:ping")
            answer = await ask(Address("localhost", echo_port), b"by name")
            assert answer.data == b"echo:by name"
            # The client's port is now known: the same datagram from another port is dropped.
            smuggled = UdpDatagram(address=Address(LOCAL, echo_port), data=b"smuggled")
            await stranger.sendto(encode_udp_datagram(smuggled), relay)
            with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other_host:
                await other_host.bind(("127.0.0.2", 0))  # and from another address: dropped
                await other_host.sendto(encode_udp_datagram(smuggled), relay)
            await client.sendto(b"\x00\x00", relay)  # malformed: dropped too
            while server.stats.failures["udp dropped"] < 2 or server.stats.failures["udp malformed"] < 1:
                await trio.sleep(0.01)
            answer = await ask(Address(LOCAL, echo_port), b"pong")
            assert answer.data == b"echo:pong"  # not the smuggled one
            await control.aclose()
            await settle(server)  # closing the control connection ended the association
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rebind:
                rebind.bind(relay)  # the relay's port was released
        assert server.stats.tunnels["socks5"] == 1
        assert (server.stats.bytes_up, server.stats.bytes_down) == (15, 30)
        nursery.cancel_scope.cancel()


# -- lifecycle -----------------------------------------------------------------------------------


@trio_test
async def test_graceful_shutdown_lets_tunnels_drain(echo_port: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=SERVER_LOG)
    server = TrioProxyServer(ServerConfig(listen=((LOCAL, 0),)))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        stream, rep = await socks5_connect(server, LOCAL, echo_port)
        assert rep == 0
        stuck, rep = await socks5_connect(server, LOCAL, echo_port)
        assert rep == 0
        silent = await dial(server)  # still negotiating when the grace period ends
        await settle(server, 3)
        async with trio.open_nursery() as stopping:
            stopping.start_soon(server.shutdown, 2.0)
            while True:  # wait until the listener is gone: no new clients
                try:
                    late = await dial(server)
                except OSError:
                    break
                await late.aclose()
                await trio.sleep(0.01)
            await assert_echoes(stream)  # a running tunnel keeps working during the grace period
            await stream.aclose()
        # The grace period ran out for the one that stayed open: the server closed it.
        assert await closed_by_server(stuck)
        assert await closed_by_server(silent)
    assert server.stats.tunnels["socks5"] == 1
    assert server.stats.failures["cancelled"] == 2
    assert caplog.text.count("outcome=cancelled") == 2
    assert "stopped; stats: active=0 tunnels=1" in caplog.text


@trio_test
async def test_reuse_port_and_stats_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=SERVER_LOG)
    async with proxy(reuse_port=True, stats_interval=0.05) as first:
        second = TrioProxyServer(ServerConfig(listen=first.addresses[0:1], reuse_port=True))
        assert await second.bind() == first.addresses  # SO_REUSEPORT: the same port twice
        async with trio.open_nursery() as nursery:
            await nursery.start(second.serve)
            await second.shutdown()
        while not any(r.getMessage().startswith("stats: ") for r in caplog.records):
            await trio.sleep(0.01)


@trio_test
async def test_bind_error_is_an_oserror() -> None:
    async with proxy() as first:
        second = TrioProxyServer(ServerConfig(listen=first.addresses[0:1]))
        with pytest.raises(OSError, match="in use"):
            await second.bind()


# -- curl against the command line ---------------------------------------------------------------


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from the target\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def http_target() -> Iterator[int]:
    httpd = http.server.ThreadingHTTPServer((LOCAL, 0), _Hello)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(LIMIT)


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("socks-sansio")
    return [str(script)] if script.exists() else [sys.executable, "-m", "socks_sansio"]


def test_curl_through_the_cli(http_target: int) -> None:
    require_binary("curl")  # under CI a missing curl fails the run instead of skipping
    command = [*_cli(), "serve", "--backend", "trio", "--listen", "127.0.0.1:0", "--shutdown-grace", "5"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        assert process.stderr is not None
        timer = threading.Timer(LIMIT, process.kill)  # a server that never says it listens is killed
        timer.start()
        try:
            for line in process.stderr:
                lines.append(line)
                if line.startswith("socks-sansio ") and " listening on " in line:
                    break
        finally:
            timer.cancel()
        found = re.search(r"socks-sansio \S+ listening on 127\.0\.0\.1:(\d+)", "".join(lines))
        assert found, lines
        port = found.group(1)
        drain = threading.Thread(target=lambda: lines.extend(process.stderr or ()), daemon=True)
        drain.start()
        url = f"http://localhost:{http_target}/"
        for proxy_args in (["--socks5-hostname", f"127.0.0.1:{port}"], ["-p", "-x", f"http://127.0.0.1:{port}"]):
            result = subprocess.run(
                ["curl", "-sS", "--max-time", "5", *proxy_args, url],
                capture_output=True,
                text=True,
                timeout=LIMIT,
                check=False,
            )
            assert (result.returncode, result.stdout) == (0, "hello from the target\n"), result.stderr
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5 + 2) == 0  # drained within the grace period, exit status 0
        drain.join(LIMIT)
        log = "".join(lines)
        assert log.count("outcome=ok") == 2
        assert "proto=socks5 cmd=CONNECT target=localhost:" in log
        assert "proto=http cmd=CONNECT target=localhost:" in log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()

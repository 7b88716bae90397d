"""The trio server's upstream routes and TLS listeners (issue 7), end to end on loopback.

Strategy. Every test is a plain function run by ``trio.run`` under one overall
deadline (:func:`trio_test`); servers and targets run in the test's nursery on
127.0.0.1 port 0 and are cancelled when it ends. A "remote" server listens
with TLS only (certificates from :class:`tests.adapters.servers.TLSFiles`,
written to PEM files as ``serve`` takes them) and requires a password; it is a
:class:`TrioProxyServer` or, to check the two backends against each other, the
asyncio :class:`ProxyServer` on its own loop in a thread. The "local" trio
server under test forwards through it with an ``https://`` upstream trusting
the test CA. Counters (``stats``) prove which hop a tunnel took and how many
bytes crossed it. Clients are our trio client (``open_tcp_stream``, and
``handshake_over`` on a TLS stream for SOCKS5 over TLS, which no proxy URL
expresses), hand-written SOCKS5 / HTTP CONNECT bytes, curl and the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import random
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, Protocol

import pytest
import trio

from socks_sansio import Address, ClientHandshake, ProxyURL, ServerConfig, ServerStats, UserDatabase, parse_upstream
from socks_sansio.adapters import trio as client
from socks_sansio.adapters.server.asyncio import ProxyServer
from socks_sansio.adapters.server.trio import TrioProxyServer
from tests.adapters.servers import TLSFiles
from tests.peer_servers import require_binary

from .test_trio_server import (
    http_connect,
    receive_exactly,
    receive_head,
    receive_until_eof,
    socks5_reply,
    socks5_request,
    status_of,
)

LOCAL = "127.0.0.1"
LIMIT = 30.0  # seconds any one test may take: a hang fails instead of blocking the suite
USER, PASSWORD = "alice", "secret"
USERS = UserDatabase({USER: PASSWORD})
MIB = 1 << 20
UP = random.Random(1).randbytes(MIB)
DOWN = random.Random(2).randbytes(MIB)


def trio_test(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test with ``trio.run`` under :data:`LIMIT` (fixtures and parameters pass through)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        async def main() -> None:
            with trio.fail_after(LIMIT):
                await fn(*args, **kwargs)

        trio.run(main)

    return wrapper


class TLS:
    """The test CA and a certificate for 127.0.0.1, as PEM files, and a client context trusting the CA."""

    def __init__(self, directory: str) -> None:
        files = TLSFiles()
        self.ca, self.cert, self.key = (os.path.join(directory, name) for name in ("ca.pem", "cert.pem", "key.pem"))
        files.ca.cert_pem.write_to_path(self.ca)
        for i, pem in enumerate(files.cert.cert_chain_pems):
            pem.write_to_path(self.cert, append=i > 0)
        files.cert.private_key_pem.write_to_path(self.key)
        self.client_context: Callable[[], ssl.SSLContext] = files.client_context


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLS:
    return TLS(str(tmp_path_factory.mktemp("tls")))


# -- servers and targets -------------------------------------------------------------------------


class Served(Protocol):
    addresses: list[tuple[str, int]]
    stats: ServerStats


@contextlib.asynccontextmanager
async def background() -> AsyncIterator[trio.Nursery]:
    """A nursery for servers and targets, cancelled when the block ends."""
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()


async def serve(nursery: trio.Nursery, config: ServerConfig) -> TrioProxyServer:
    server = TrioProxyServer(config)
    await nursery.start(server.serve)
    return server


async def start_trio(nursery: trio.Nursery, **fields: Any) -> TrioProxyServer:
    """A trio server listening on 127.0.0.1:0 (plain) with these config fields."""
    fields.setdefault("listen", ((LOCAL, 0),))
    return await serve(nursery, ServerConfig(**fields))


def remote_config(tls: TLS, **fields: Any) -> ServerConfig:
    """A password-protected server listening with TLS only."""
    return ServerConfig(listen=(), tls_listen=((LOCAL, 0),), tls_cert=tls.cert, tls_key=tls.key, users=USERS, **fields)


@contextlib.asynccontextmanager
async def asyncio_server(config: ServerConfig) -> AsyncIterator[ProxyServer]:
    """The asyncio :class:`ProxyServer` on an event loop in a thread, for the block."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="asyncio-remote", daemon=True)
    thread.start()
    server = ProxyServer(config)

    def call(coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, loop).result(LIMIT)

    try:
        await trio.to_thread.run_sync(call, server.start())
        yield server
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(call, server.aclose(1.0))
        loop.call_soon_threadsafe(loop.stop)
        thread.join(LIMIT)
        loop.close()


@contextlib.asynccontextmanager
async def tls_remote(backend: str, nursery: trio.Nursery, tls: TLS) -> AsyncIterator[Served]:
    """The remote hop on *backend*: TLS listener, password required."""
    if backend == "trio":
        yield await serve(nursery, remote_config(tls))
    else:
        async with asyncio_server(remote_config(tls)) as asyncio_remote:
            yield asyncio_remote


def upstream_url(server: Served, scheme: str = "https") -> str:
    return f"{scheme}://{USER}:{PASSWORD}@{LOCAL}:{server.addresses[0][1]}"


async def start_local(nursery: trio.Nursery, tls: TLS, *rules: str, **fields: Any) -> TrioProxyServer:
    """The trio server under test: plain listener, routing with *rules*, trusting the test CA upstream."""
    upstreams = tuple(parse_upstream(rule) for rule in rules)
    return await start_trio(nursery, upstreams=upstreams, upstream_cacert=tls.ca, **fields)


async def start_target(nursery: trio.Nursery, handler: Callable[[trio.SocketStream], Awaitable[None]]) -> int:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host=LOCAL))
    return int(listeners[0].socket.getsockname()[1])


async def echo_until_eof(stream: trio.SocketStream) -> None:
    with contextlib.suppress(trio.BrokenResourceError):
        while data := await stream.receive_some(65536):
            await stream.send_all(data)


async def echo(stream: trio.SocketStream) -> None:
    async with stream:
        await echo_until_eof(stream)


async def both_ways(stream: trio.SocketStream) -> None:
    """Send :data:`DOWN` while reading :data:`UP`, then send the SHA-256 of what was read, then close."""
    async with stream:
        digest = hashlib.sha256()
        received = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.send_all, DOWN)
            while received < len(UP):
                data = await stream.receive_some(65536)
                assert data, f"EOF after {received} octets"
                digest.update(data)
                received += len(data)
        await stream.send_all(digest.digest())


async def burst(stream: trio.SocketStream) -> None:
    """Wait for ``go``, send :data:`DOWN`, close at once: the tunnel must deliver it all before ending."""
    async with stream:
        assert await receive_exactly(stream, 2) == b"go"
        await stream.send_all(DOWN)


async def until(check: Callable[[], bool]) -> None:
    """Poll *check* (bounded by the test's deadline)."""
    while not check():
        await trio.sleep(0.01)


def tunnels(server: Served) -> int:
    return sum(server.stats.tunnels.values())


async def settled(server: Served) -> ServerStats:
    await until(lambda: server.stats.active == 0)
    return server.stats


async def exchange(stream: trio.abc.Stream, payload: bytes) -> None:
    await stream.send_all(payload)
    assert await receive_exactly(stream, len(payload)) == payload


async def socks5_over_tls(
    address: tuple[str, int], tls: TLS, target_port: int, *, ragged: bool = False
) -> trio.abc.Stream:
    """SOCKS5 (with the password) inside TLS to the server at *address*, by our client's ``handshake_over``.

    With *ragged*, closing the stream sends no ``close_notify`` (``https_compatible``).
    """
    host, port = address
    tcp = await trio.open_tcp_stream(host, port)
    stream = trio.SSLStream(tcp, tls.client_context(), server_hostname=LOCAL, https_compatible=ragged)
    proxy = ProxyURL.parse(f"socks5h://{USER}:{PASSWORD}@{host}:{port}")
    try:
        tunnel: trio.abc.Stream = await client.handshake_over(
            stream, ClientHandshake(proxy, Address(LOCAL, target_port))
        )
        return tunnel
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


# -- two hops, end to end -------------------------------------------------------------------------


@pytest.mark.parametrize("remote_backend", ["trio", "asyncio"])
@trio_test
async def test_two_hop_over_tls_a_mebibyte_each_way(tls: TLS, remote_backend: str) -> None:
    async with background() as nursery, tls_remote(remote_backend, nursery, tls) as remote:
        target = await start_target(nursery, both_ways)
        local = await start_local(nursery, tls, upstream_url(remote))
        stream = await client.open_tcp_stream(
            LOCAL, target, proxy=f"socks5h://{LOCAL}:{local.addresses[0][1]}", timeout=LIMIT
        )
        received = bytearray()
        async with stream, trio.open_nursery() as sending:
            sending.start_soon(stream.send_all, UP)
            while len(received) < len(DOWN) + 32:
                data = await stream.receive_some(65536)
                assert data, f"EOF after {len(received)} octets"
                received += data
        assert hashlib.sha256(received[:MIB]).digest() == hashlib.sha256(DOWN).digest()
        assert bytes(received[MIB:]) == hashlib.sha256(UP).digest()  # what the target read
        stats = await settled(local)
        assert (dict(stats.tunnels), dict(stats.failures)) == ({"socks5": 1}, {})
        assert (stats.bytes_up, stats.bytes_down) == (MIB, MIB + 32)
        await until(lambda: remote.stats.tunnels["http"] == 1)
        assert (remote.stats.bytes_up, remote.stats.bytes_down) == (MIB, MIB + 32)


@trio_test
async def test_rules_route_targets_differently(tls: TLS) -> None:
    async with background() as nursery, tls_remote("trio", nursery, tls) as remote:
        direct, routed = await start_target(nursery, echo), await start_target(nursery, echo)
        local = await start_local(nursery, tls, f"to=127.0.0.0/8 port={direct} via=direct", upstream_url(remote))
        proxy = f"socks5://{LOCAL}:{local.addresses[0][1]}"
        async with await client.open_tcp_stream(LOCAL, direct, proxy=proxy, timeout=LIMIT) as stream:
            await exchange(stream, b"straight")
        await until(lambda: tunnels(local) == 1)
        assert tunnels(remote) == 0
        async with await client.open_tcp_stream(LOCAL, routed, proxy=proxy, timeout=LIMIT) as stream:
            await exchange(stream, b"two hops")
        await until(lambda: tunnels(remote) == 1)
        assert remote.stats.bytes_up == len(b"two hops")
        stats = await settled(local)
        assert (dict(stats.tunnels), dict(stats.failures)) == ({"socks5": 2}, {})


@trio_test
async def test_chain_of_two_upstreams(tls: TLS) -> None:
    async with background() as nursery, tls_remote("trio", nursery, tls) as remote:
        target = await start_target(nursery, echo)
        middle = await start_trio(nursery)
        local = await start_local(
            nursery, tls, f"via=socks5h://{LOCAL}:{middle.addresses[0][1]},{upstream_url(remote)}"
        )
        proxy = f"http://{LOCAL}:{local.addresses[0][1]}"
        async with await client.open_tcp_stream(LOCAL, target, proxy=proxy, timeout=LIMIT) as stream:
            await exchange(stream, b"x" * 50000)
        await until(lambda: middle.stats.tunnels["socks5"] == 1 and remote.stats.tunnels["http"] == 1)
        stats = await settled(local)
        assert (dict(stats.tunnels), dict(stats.failures)) == ({"http": 1}, {})


# -- TLS listeners --------------------------------------------------------------------------------


async def http_origin(stream: trio.SocketStream) -> None:
    """Answer one GET with its path, then close."""
    async with stream:
        head = b""
        while b"\r\n\r\n" not in head:
            data = await stream.receive_some(4096)
            if not data:
                return
            head += data
        body = b"hello from the origin, path " + head.split(b" ")[1] + b"\n"
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)


@trio_test
async def test_curl_https_proxy_against_a_trio_tls_listener(tls: TLS) -> None:
    curl = require_binary("curl")  # under CI a missing curl fails the run instead of skipping
    async with background() as nursery:
        origin = await start_target(nursery, http_origin)
        server = await serve(nursery, remote_config(tls))
        env = {key: value for key, value in os.environ.items() if not key.lower().endswith("_proxy")}
        result = await trio.run_process(
            [curl, "-q", "--silent", "--show-error", "--max-time", "10",
             "--proxy", f"https://{LOCAL}:{server.addresses[0][1]}", "--proxy-cacert", tls.ca,
             "--proxy-user", f"{USER}:{PASSWORD}", "--proxytunnel", f"http://{LOCAL}:{origin}/via-trio"],
            capture_stdout=True, capture_stderr=True, check=False, env=env,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr.decode()
        assert result.stdout == b"hello from the origin, path /via-trio\n"
        stats = await settled(server)
        assert (dict(stats.tunnels), dict(stats.failures)) == ({"http": 1}, {})


@pytest.mark.parametrize("ragged", [False, True], ids=["close_notify", "ragged EOF"])
@trio_test
async def test_socks5_over_tls_with_our_client(tls: TLS, ragged: bool) -> None:
    """A client that closes TCP without close_notify ends its tunnel as cleanly as one that sends it."""
    async with background() as nursery:
        target = await start_target(nursery, echo)
        server = await serve(nursery, remote_config(tls))
        async with await socks5_over_tls(server.addresses[0], tls, target, ragged=ragged) as stream:
            await exchange(stream, b"socks5 inside TLS")
            await exchange(stream, UP[:200000])
        stats = await settled(server)
        assert (dict(stats.tunnels), dict(stats.failures)) == ({"socks5": 1}, {})
        assert stats.bytes_up == stats.bytes_down == 17 + 200000


@trio_test
async def test_target_eof_ends_a_tls_tunnel_after_flushing(tls: TLS) -> None:
    """Everything the target sent arrives, then a clean TLS close (close_notify), not a truncation."""
    async with background() as nursery:
        target = await start_target(nursery, burst)
        server = await serve(nursery, remote_config(tls))
        async with await socks5_over_tls(server.addresses[0], tls, target) as stream:
            await stream.send_all(b"go")
            received = bytearray()
            while data := await stream.receive_some(65536):  # a missing close_notify raises here
                received += data
        assert hashlib.sha256(received).digest() == hashlib.sha256(DOWN).digest()
        stats = await settled(server)
        assert (dict(stats.tunnels), dict(stats.failures), stats.bytes_down) == ({"socks5": 1}, {}, MIB)


async def farewell(stream: trio.SocketStream) -> None:
    """Echo; after the client's EOF (a half-close) answer ``bye`` before closing."""
    await echo_until_eof(stream)
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(b"bye")
    await stream.aclose()


@trio_test
async def test_client_eof_ends_a_tunnel_with_a_tls_hop(tls: TLS) -> None:
    """A plain client behind an https:// upstream: its EOF ends the tunnel (TLS has no half-close)."""
    async with background() as nursery, tls_remote("trio", nursery, tls) as remote:
        target = await start_target(nursery, farewell)
        local = await start_local(nursery, tls, upstream_url(remote))
        async with await trio.open_tcp_stream(*local.addresses[0]) as stream:
            await stream.send_all(b"\x05\x01\x00" + socks5_request(1, LOCAL, target))
            assert await receive_exactly(stream, 2) == b"\x05\x00"
            assert (await socks5_reply(stream))[0] == 0
            await exchange(stream, b"ping")
            await stream.send_eof()
            assert await stream.receive_some(100) == b""  # ended: the target's "bye" never comes
        stats = await settled(local)
        assert (dict(stats.tunnels), dict(stats.failures)) == ({"socks5": 1}, {})


@trio_test
async def test_half_close_still_passes_through_plain_upstreams() -> None:
    """The same conversation through a plain socks5 upstream: the EOF is passed on and ``bye`` arrives."""
    async with background() as nursery:
        target = await start_target(nursery, farewell)
        remote = await start_trio(nursery)
        local = await start_trio(nursery, upstreams=(parse_upstream(f"socks5h://{LOCAL}:{remote.addresses[0][1]}"),))
        async with await trio.open_tcp_stream(*local.addresses[0]) as stream:
            await stream.send_all(b"\x05\x01\x00" + socks5_request(1, LOCAL, target))
            assert await receive_exactly(stream, 2) == b"\x05\x00"
            assert (await socks5_reply(stream))[0] == 0
            await exchange(stream, b"ping")
            await stream.send_eof()
            assert await receive_until_eof(stream) == b"bye"
        await until(lambda: tunnels(remote) == 1)
        stats = await settled(local)
        assert (dict(stats.tunnels), dict(stats.failures)) == ({"socks5": 1}, {})


# -- refusals and failures ------------------------------------------------------------------------


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port bound but not listening (connections to it are refused) for the block."""
    with socket.socket() as sock:
        sock.bind((LOCAL, 0))
        yield int(sock.getsockname()[1])


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A loopback port that completes TCP connects (the backlog) and never answers, for the block."""
    with socket.socket() as sock:
        sock.bind((LOCAL, 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


async def socks5_rep(server: TrioProxyServer, port: int) -> int:
    """The REP of a SOCKS5 CONNECT to 127.0.0.1:*port* through *server*."""
    async with await trio.open_tcp_stream(*server.addresses[0]) as stream:
        await stream.send_all(b"\x05\x01\x00" + socks5_request(1, LOCAL, port))
        assert await receive_exactly(stream, 2) == b"\x05\x00"
        return (await socks5_reply(stream))[0]


async def http_status(server: TrioProxyServer, port: int) -> int:
    """The status of an HTTP CONNECT to 127.0.0.1:*port* through *server*."""
    async with await trio.open_tcp_stream(*server.addresses[0]) as stream:
        await stream.send_all(http_connect(f"{LOCAL}:{port}"))
        return status_of(await receive_head(stream))


@pytest.mark.parametrize(
    ("case", "rep", "status"),
    [
        ("unreachable socks5h upstream", 1, 502),
        ("unreachable https upstream", 1, 502),
        ("silent upstream", 6, 504),
        ("wrong upstream password", 1, 502),
        ("untrusted upstream certificate", 1, 502),
        ("target refused beyond the upstream", 5, 502),
    ],
)
@trio_test
async def test_upstream_failures_map_to_replies(tls: TLS, case: str, rep: int, status: int) -> None:
    async with background() as nursery, tls_remote("trio", nursery, tls) as remote:
        target = await start_target(nursery, echo)
        with closed_port() as closed, silent_port() as silent:
            fields: dict[str, Any] = {"connect_timeout": 1.0}
            url = {
                "unreachable socks5h upstream": f"socks5h://{LOCAL}:{closed}",
                "unreachable https upstream": f"https://{LOCAL}:{closed}",
                "silent upstream": f"socks5h://{LOCAL}:{silent}",
                "wrong upstream password": upstream_url(remote).replace(PASSWORD, "nope"),
            }.get(case, upstream_url(remote))
            if case == "untrusted upstream certificate":
                local = await start_trio(nursery, upstreams=(parse_upstream(url),), **fields)  # system CAs only
            else:
                local = await start_local(nursery, tls, url, **fields)
            port = closed if case == "target refused beyond the upstream" else target
            assert (await socks5_rep(local, port), await http_status(local, port)) == (rep, status)
        stats = await settled(local)
        assert (dict(stats.tunnels), dict(stats.failures)) == ({}, {"upstream failed": 2})
        assert tunnels(remote) == 0


@trio_test
async def test_access_rules_apply_to_the_target_as_sent(tls: TLS) -> None:
    from socks_sansio import AccessPolicy, AccessRule

    async with background() as nursery, tls_remote("trio", nursery, tls) as remote:
        target = await start_target(nursery, echo)
        policy = AccessPolicy(rules=(AccessRule.parse("deny", f"port={target}"),))
        local = await start_local(nursery, tls, upstream_url(remote), policy=policy)
        assert await socks5_rep(local, target) == 2
        stats = await settled(local)
        assert (dict(stats.tunnels), sorted(stats.failures)) == ({}, ["denied"])
        assert tunnels(remote) == 0


@pytest.mark.parametrize("command", [2, 3])
@trio_test
async def test_bind_and_udp_through_an_upstream_are_not_supported(tls: TLS, command: int) -> None:
    async with background() as nursery:
        local = await start_local(nursery, tls, f"socks5h://{LOCAL}:1080")
        async with await trio.open_tcp_stream(*local.addresses[0]) as stream:
            await stream.send_all(b"\x05\x01\x00" + socks5_request(command, LOCAL, 9))
            assert await receive_exactly(stream, 2) == b"\x05\x00"
            assert (await socks5_reply(stream))[0] == 7


@trio_test
async def test_udp_and_bind_allowed_when_their_routes_are_direct(tls: TLS) -> None:
    async with background() as nursery:
        local = await start_local(nursery, tls, "port=9 via=direct", f"port=10 via=socks5h://{LOCAL}:1080")
        for command, port, rep in ((2, 9, 0), (2, 10, 7), (3, 9, 7)):  # UDP: refused while any route is a proxy
            async with await trio.open_tcp_stream(*local.addresses[0]) as stream:
                await stream.send_all(b"\x05\x01\x00" + socks5_request(command, LOCAL, port))
                assert await receive_exactly(stream, 2) == b"\x05\x00"
                assert (await socks5_reply(stream))[0] == rep, (command, port)
        direct_only = await start_local(nursery, tls, "port=443 via=direct")
        async with await trio.open_tcp_stream(*direct_only.addresses[0]) as stream:
            await stream.send_all(b"\x05\x01\x00" + socks5_request(3, LOCAL, 0))
            assert await receive_exactly(stream, 2) == b"\x05\x00"
            assert (await socks5_reply(stream))[0] == 0


# -- a TLS listener meeting the wrong client --------------------------------------------------------


@trio_test
async def test_plain_bytes_on_a_tls_listener_close_cleanly(tls: TLS) -> None:
    async with background() as nursery:
        target = await start_target(nursery, echo)
        server = await serve(nursery, remote_config(tls))
        async with await trio.open_tcp_stream(*server.addresses[0]) as stream:
            await stream.send_all(http_connect(f"{LOCAL}:{target}"))
            answer = b""
            with contextlib.suppress(trio.BrokenResourceError):  # a reset is a clean refusal too
                answer = await receive_until_eof(stream)
            assert not answer.startswith(b"HTTP/")  # a TLS alert or nothing, never a reply in clear
        stats = await settled(server)
        assert (dict(stats.tunnels), sorted(stats.failures)) == ({}, ["connection error"])
        async with await socks5_over_tls(server.addresses[0], tls, target) as tunnel:  # and it keeps serving
            await exchange(tunnel, b"still serving")
        await until(lambda: server.stats.tunnels["socks5"] == 1)


@trio_test
async def test_tls_handshake_is_bounded_by_the_negotiation_timeout(tls: TLS) -> None:
    async with background() as nursery:
        server = await serve(nursery, remote_config(tls, negotiation_timeout=0.3))
        async with await trio.open_tcp_stream(*server.addresses[0]) as stream:
            assert await receive_until_eof(stream) == b""  # silent client: dropped, no handshake
        stats = await settled(server)
        assert dict(stats.failures) == {"negotiation timeout": 1}


# -- the command line -----------------------------------------------------------------------------

LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+), 127\.0\.0\.1:(\d+)\n")


@trio_test
async def test_cli_serves_upstreams_and_tls_on_trio(tls: TLS) -> None:
    async with background() as nursery, tls_remote("trio", nursery, tls) as remote:
        target = await start_target(nursery, echo)
        command = [
            sys.executable, "-m", "socks_sansio", "serve", "--backend", "trio", "--shutdown-grace", "2",
            "--listen", f"{LOCAL}:0", "--listen", f"tls://{LOCAL}:0", "--tls-cert", tls.cert, "--tls-key", tls.key,
            "--upstream", upstream_url(remote), "--upstream-cacert", tls.ca,
        ]  # fmt: skip
        process = await trio.lowlevel.open_process(command, stderr=subprocess.PIPE)
        try:
            assert process.stderr is not None
            log = b""
            while not (found := LISTENING.search(log)):
                data = await process.stderr.receive_some(4096)
                assert data, log.decode()
                log += data
            plain, tls_port = int(found.group(1)), int(found.group(2))
            proxy = f"socks5h://{LOCAL}:{plain}"
            async with await client.open_tcp_stream(LOCAL, target, proxy=proxy, timeout=LIMIT) as stream:
                await exchange(stream, b"through the CLI")
            await until(lambda: remote.stats.tunnels["http"] == 1)
            # The TLS listener, then the upstream.
            async with await socks5_over_tls((LOCAL, tls_port), tls, target) as tunnel:
                await exchange(tunnel, b"TLS on both hops")
            await until(lambda: remote.stats.tunnels["http"] == 2)
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
            log += await receive_until_eof(process.stderr)  # a few lines: the pipe never filled up
        finally:
            if process.returncode is None:
                process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
                if process.stderr is not None:
                    await process.stderr.aclose()
        text = log.decode()
        assert text.count("outcome=ok") == 2 and "Traceback" not in text, text
        assert PASSWORD not in text

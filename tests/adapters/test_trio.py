"""The trio adapter against scripted peers, in-memory streams and real proxies.

Every test is a plain function run by ``trio.run`` (the :func:`trio_test`
decorator), so no pytest plugin is needed. Scripted peers run in threads
(``tests/adapters/servers.py``); the real ones are microsocks, Dante and
tinyproxy (``tests/peer_servers.py``), started once per module.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import trio
import trio.testing

from socks_sansio import (
    Address,
    ClientHandshake,
    Command,
    HandshakeStatus,
    LocalProtocolError,
    ProxyAuthError,
    ProxyConnectionError,
    ProxyProtocol,
    ProxyRefusedError,
    ProxyTimeoutError,
    ProxyURL,
    RemoteProtocolError,
    UdpDatagram,
    encode_frame,
    encode_udp_datagram,
    parse_udp_datagram,
)
from socks_sansio.adapters.trio import (
    BindListener,
    HalfCloseablePrefixedStream,
    PrefixedStream,
    handshake_over,
    open_bind,
    open_tcp_stream,
    open_tunnel,
    open_udp_association,
)
from tests.adapters.servers import (
    SOCKS5_OK,
    TIMEOUT,
    TLSFiles,
    echo,
    echo_server,
    pump,
    recv_exactly,
    serve,
    socks5_connect_handler,
    tls_echo,
    tls_forwarder,
)
from tests.peer_servers import (
    DANTE_PASSWORD,
    DANTE_USER,
    PeerServer,
    dante_server,
    microsocks_server,
    tinyproxy_server,
)

Handler = Callable[[socket.socket], None]


def trio_test(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test function with ``trio.run`` (fixtures and parameters pass through)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        trio.run(functools.partial(fn, *args, **kwargs))

    return wrapper


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def echo_addr() -> Iterator[tuple[str, int]]:
    with echo_server() as server:
        yield server.address


@pytest.fixture(scope="module")
def tls_files() -> TLSFiles:
    return TLSFiles()


@pytest.fixture(scope="module")
def microsocks() -> Iterator[PeerServer]:
    with microsocks_server() as peer:
        yield peer


@pytest.fixture(scope="module")
def microsocks_auth() -> Iterator[PeerServer]:
    with microsocks_server(username="alice", password="s3cret") as peer:
        yield peer


@pytest.fixture(scope="module")
def dante() -> Iterator[PeerServer]:
    with dante_server() as peer:
        yield peer


@pytest.fixture(scope="module")
def dante_auth() -> Iterator[PeerServer]:
    with dante_server(auth="username") as peer:
        yield peer


@pytest.fixture(scope="module")
def tinyproxy() -> Iterator[PeerServer]:
    with tinyproxy_server() as peer:
        yield peer


@pytest.fixture(scope="module")
def tinyproxy_auth() -> Iterator[PeerServer]:
    with tinyproxy_server(username="bob", password="hunter2") as peer:
        yield peer


def open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


@pytest.fixture(autouse=True)
def no_leaked_descriptors() -> Iterator[None]:
    """Every test leaves as many open file descriptors as it found (server threads get 2 s to close theirs)."""
    before = open_fds()
    yield
    if before is None:
        return
    deadline = time.monotonic() + 2.0
    while (after := open_fds()) is not None and after > before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert after == before, f"{after - before if after else '?'} file descriptors leaked"


# -- helpers -------------------------------------------------------------------------------------


async def receive_exactly(stream: trio.abc.Stream, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = await stream.receive_some(count - len(data))
        assert chunk, f"EOF after {len(data)} of {count} octets"
        data += chunk
    return bytes(data)


async def assert_echoes(stream: trio.abc.Stream, payload: bytes = b"hello through the proxy") -> None:
    await stream.send_all(payload)
    assert await receive_exactly(stream, len(payload)) == payload


def read_socks5_request(conn: socket.socket) -> tuple[int, Address]:
    """Read a no-auth greeting (answered) and a request: ``(command, address)``."""
    _version, count = recv_exactly(conn, 2)
    recv_exactly(conn, count)
    conn.sendall(b"\x05\x00")
    _v, command, _rsv, atyp = recv_exactly(conn, 4)
    if atyp == 1:
        host: Any = ipaddress.IPv4Address(recv_exactly(conn, 4))
    elif atyp == 4:
        host = ipaddress.IPv6Address(recv_exactly(conn, 16))
    else:
        host = recv_exactly(conn, recv_exactly(conn, 1)[0])
    port = int.from_bytes(recv_exactly(conn, 2), "big")
    return command, Address(host, port)


NAMES = {b"target.test": "127.0.0.1"}


def socks5_relay(requests: list[Address]) -> Handler:
    """A real (tiny) SOCKS5 proxy: records each request, connects, relays with half-close."""

    def handler(conn: socket.socket) -> None:
        _command, address = read_socks5_request(conn)
        requests.append(address)
        host = NAMES.get(address.host, address.host_str) if isinstance(address.host, bytes) else address.host_str
        with socket.create_connection((host, address.port), TIMEOUT) as up:
            conn.sendall(SOCKS5_OK)
            back = threading.Thread(target=pump, args=(up, conn), daemon=True)
            back.start()
            pump(conn, up)
            back.join(TIMEOUT)

    return handler


def http_proxy(parts: list[bytes], after: Handler | None = echo) -> Handler:
    """A scripted HTTP proxy: reads a CONNECT head, sends *parts* as separate segments, runs *after*."""

    def handler(conn: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(4096)
            if not chunk:
                return
            head += chunk
        assert head.startswith(b"CONNECT ")
        for i, part in enumerate(parts):
            if i:
                time.sleep(0.05)
            conn.sendall(part)
        if after is not None:
            after(conn)

    return handler


def socks4_reply(code: int) -> Handler:
    def handler(conn: socket.socket) -> None:
        recv_exactly(conn, 8)
        while recv_exactly(conn, 1) != b"\x00":
            pass
        conn.sendall(bytes((0, code)) + bytes(6))

    return handler


def stall(conn: socket.socket) -> None:
    """Read whatever comes and never answer, until the client goes away."""
    while conn.recv(1024):
        pass


def slow_socks5(delay: float) -> Handler:
    """Answer every step correctly, each after *delay* seconds."""

    def handler(conn: socket.socket) -> None:
        recv_exactly(conn, 3)
        time.sleep(delay)
        conn.sendall(b"\x05\x00")
        head = recv_exactly(conn, 5)
        recv_exactly(conn, head[4] + 2)
        time.sleep(delay)
        conn.sendall(SOCKS5_OK)
        conn.recv(1)

    return handler


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class StaticResolver(trio.abc.HostnameResolver):
    """trio's resolver hook: names in :data:`NAMES` only, so local resolution is observable."""

    def __init__(self) -> None:
        self.asked: list[bytes | str] = []

    async def getaddrinfo(
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> Any:
        await trio.lowlevel.checkpoint()
        assert host is not None
        name = host if isinstance(host, bytes) else str(host).encode()
        self.asked.append(name)
        ip = NAMES.get(name, name.decode())
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, int(port or 0)))]

    async def getnameinfo(self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int) -> tuple[str, str]:
        raise NotImplementedError


class GreedyStream(trio.abc.HalfCloseableStream):
    """A stream that ignores *max_bytes* (legal for nothing, but it shows leftovers are kept)."""

    def __init__(self, inner: trio.abc.HalfCloseableStream) -> None:
        self.inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


# -- handshake_over on in-memory streams ---------------------------------------------------------


@trio_test
async def test_handshake_over_memory_stream_reads_no_further_than_the_reply() -> None:
    client, server = trio.testing.memory_stream_pair()
    handshake = ClientHandshake(ProxyURL.parse("socks5h://proxy.test"), Address("target.test", 443))

    async def proxy() -> None:
        assert await server.receive_some(3) == b"\x05\x01\x00"
        await server.send_all(b"\x05\x00")
        request = await server.receive_some()
        assert request == b"\x05\x01\x00\x03\x0btarget.test\x01\xbb"
        await server.send_all(SOCKS5_OK + b"tunnel bytes")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(proxy)
        stream = await handshake_over(client, handshake)
    assert handshake.established
    assert stream is client  # nothing was read past the reply: no wrapper needed
    assert await receive_exactly(stream, 12) == b"tunnel bytes"


@trio_test
async def test_leftovers_from_an_over_reading_stream_come_first() -> None:
    client, server = trio.testing.memory_stream_pair()
    greedy = GreedyStream(client)
    handshake = ClientHandshake(ProxyURL.parse("http://proxy.test:3128"), Address("target.test", 443))

    async def proxy() -> None:
        await server.receive_some()
        await server.send_all(b"HTTP/1.1 200 OK\r\n\r\nfirst")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(proxy)
        stream = await handshake_over(greedy, handshake)
    assert isinstance(stream, HalfCloseablePrefixedStream)
    assert await stream.receive_some(2) == b"fi"
    assert await stream.receive_some() == b"rst"
    await server.send_all(b"later")
    assert await stream.receive_some() == b"later"
    await stream.send_eof()
    assert await server.receive_some() == b""
    await stream.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await stream.receive_some()


@trio_test
async def test_bind_over_memory_stream_stops_at_each_reply() -> None:
    client, server = trio.testing.memory_stream_pair()
    handshake = ClientHandshake(
        ProxyURL.parse("socks4://proxy.test"), Address("0.0.0.0", 0), command=Command.BIND
    )
    await server.send_all(b"\x00\x5a\x1f\x90\x7f\x00\x00\x02")
    stream = await handshake_over(client, handshake)
    assert handshake.status is HandshakeStatus.BIND_LISTENING
    assert handshake.bound == Address("127.0.0.2", 8080)
    await server.send_all(b"\x00\x5a\x30\x39\x7f\x00\x00\x03peer says hi")
    stream = await handshake_over(stream, handshake)
    assert handshake.established
    assert handshake.bind_peer == Address("127.0.0.3", 12345)
    assert await receive_exactly(stream, 12) == b"peer says hi"


@trio_test
async def test_prefixed_stream_over_tls_is_not_half_closeable() -> None:
    client, _server = trio.testing.memory_stream_pair()
    plain = PrefixedStream(client, b"x")
    assert not isinstance(plain, trio.abc.HalfCloseableStream)
    with pytest.raises(ValueError, match="max_bytes"):
        await plain.receive_some(0)
    await plain.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await plain.send_all(b"y")


@trio_test
async def test_handshake_over_broken_stream_is_a_connection_error() -> None:
    client, server = trio.testing.memory_stream_pair()
    await server.aclose()
    handshake = ClientHandshake(ProxyURL.parse("socks5h://u:pw@proxy.test"), Address("target.test", 1))
    with pytest.raises(ProxyConnectionError) as info:
        await handshake_over(client, handshake)
    assert "pw" not in str(info.value)


# -- scripted peers over loopback ----------------------------------------------------------------


@pytest.mark.parametrize("split", [False, True])
@trio_test
async def test_socks5_reply_split_or_whole_with_first_tunnel_bytes(split: bool) -> None:
    handler = socks5_connect_handler(SOCKS5_OK, split=split, extra=b"early bird")
    with serve(handler) as proxy:
        stream = await open_tcp_stream("target.test", 80, proxy=f"socks5h://127.0.0.1:{proxy.port}", timeout=5)
        async with stream:
            assert isinstance(stream, trio.abc.HalfCloseableStream)
            assert await receive_exactly(stream, 10) == b"early bird"
            await assert_echoes(stream)


@trio_test
async def test_http_200_head_in_two_segments_then_tunnel_bytes() -> None:
    parts = [b"HTTP/1.1 200 Connection established\r\nX-A: 1\r", b"\n\r\nafter head"]
    with serve(http_proxy(parts)) as proxy:
        tunnel = await open_tunnel("target.test", 443, proxy=f"http://127.0.0.1:{proxy.port}", timeout=5)
        async with tunnel:
            assert await receive_exactly(tunnel.stream, 10) == b"after head"
            await assert_echoes(tunnel.stream)
            assert tunnel.info.protocol is ProxyProtocol.HTTP


@trio_test
async def test_stalled_proxy_hits_the_deadline() -> None:
    with serve(stall) as proxy:
        started = time.monotonic()
        with pytest.raises(ProxyTimeoutError) as info:
            await open_tcp_stream("target.test", 80, proxy=f"socks5h://u:pw@127.0.0.1:{proxy.port}", timeout=0.3)
        assert time.monotonic() - started < 3.0
    assert "SOCKS5 handshake" in str(info.value)
    assert "pw" not in str(info.value)


@trio_test
async def test_deadline_covers_the_whole_call_not_each_step() -> None:
    with serve(slow_socks5(0.4)) as proxy:
        with pytest.raises(ProxyTimeoutError):
            await open_tcp_stream("target.test", 80, proxy=f"socks5h://127.0.0.1:{proxy.port}", timeout=0.6)
        # Without a deadline the same proxy works.
        stream = await open_tcp_stream("target.test", 80, proxy=f"socks5h://127.0.0.1:{proxy.port}")
        await stream.aclose()


@trio_test
async def test_cancellation_from_outside_propagates() -> None:
    with serve(stall) as proxy:
        with trio.move_on_after(0.3) as scope:
            await open_tcp_stream("target.test", 80, proxy=f"socks5h://127.0.0.1:{proxy.port}", timeout=30)
        assert scope.cancelled_caught


@pytest.mark.parametrize("code", range(1, 9))
@trio_test
async def test_every_socks5_failure_reply(code: int) -> None:
    reply = bytes((5, code, 0, 1, 0, 0, 0, 0, 0, 0))
    with serve(socks5_connect_handler(reply)) as proxy, pytest.raises(ProxyRefusedError) as info:
        await open_tcp_stream("target.test", 80, proxy=f"socks5h://127.0.0.1:{proxy.port}", timeout=5)
    assert info.value.code == code
    assert info.value.protocol == "socks5"


@pytest.mark.parametrize("code", [91, 92, 93])
@trio_test
async def test_every_socks4_failure_reply(code: int) -> None:
    with serve(socks4_reply(code)) as proxy, pytest.raises(ProxyRefusedError) as info:
        await open_tcp_stream("127.0.0.1", 80, proxy=f"socks4://127.0.0.1:{proxy.port}", timeout=5)
    assert info.value.code == code


@pytest.mark.parametrize(
    ("status", "error"), [(403, ProxyRefusedError), (407, ProxyAuthError), (502, ProxyRefusedError)]
)
@trio_test
async def test_http_failure_statuses(status: int, error: type[ProxyRefusedError]) -> None:
    head = f"HTTP/1.1 {status} No\r\nProxy-Authenticate: Basic realm=x\r\nContent-Length: 0\r\n\r\n".encode()
    with serve(http_proxy([head], after=None)) as proxy, pytest.raises(error) as info:
        await open_tcp_stream("target.test", 443, proxy=f"http://127.0.0.1:{proxy.port}", timeout=5)
    assert type(info.value) is error
    assert info.value.code == status


@trio_test
async def test_dead_port_is_a_connection_error_without_the_password() -> None:
    port = dead_port()
    with pytest.raises(ProxyConnectionError) as info:
        await open_tcp_stream("target.test", 80, proxy=f"socks5h://user:topsecret@127.0.0.1:{port}", timeout=5)
    assert isinstance(info.value.__cause__, OSError)
    assert "topsecret" not in str(info.value)
    assert f"127.0.0.1:{port}" in str(info.value)


@trio_test
async def test_ipv6_proxy_and_ipv6_target() -> None:
    requests: list[Address] = []
    with echo_server(family=socket.AF_INET6) as target, serve(socks5_relay(requests), family=socket.AF_INET6) as proxy:
        stream = await open_tcp_stream("::1", target.port, proxy=f"socks5h://[::1]:{proxy.port}", timeout=5)
        async with stream:
            await assert_echoes(stream)
    assert requests == [Address("::1", target.port)]


@trio_test
async def test_socks5_resolves_locally_and_socks5h_lets_the_proxy_resolve(echo_addr: tuple[str, int]) -> None:
    resolver = StaticResolver()
    trio.socket.set_custom_hostname_resolver(resolver)
    requests: list[Address] = []
    with serve(socks5_relay(requests)) as proxy:
        for scheme in ("socks5", "socks5h"):
            stream = await open_tcp_stream("target.test", echo_addr[1], proxy=f"{scheme}://127.0.0.1:{proxy.port}")
            async with stream:
                await assert_echoes(stream)
    assert requests == [Address("127.0.0.1", echo_addr[1]), Address("target.test", echo_addr[1])]
    assert b"target.test" in resolver.asked


@trio_test
async def test_trust_env_takes_the_proxy_from_the_environment(
    echo_addr: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    requests: list[Address] = []
    with serve(socks5_relay(requests)) as proxy:
        monkeypatch.setenv("ALL_PROXY", f"socks5h://127.0.0.1:{proxy.port}")
        async with await open_tunnel(*echo_addr, trust_env=True) as tunnel:
            await assert_echoes(tunnel.stream)
            assert tunnel.info.proxies == (f"socks5h://127.0.0.1:{proxy.port}",)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        async with await open_tunnel(*echo_addr, trust_env=True) as tunnel:
            assert tunnel.info.proxies == ()
    assert len(requests) == 1


@trio_test
async def test_half_close_passes_through(echo_addr: tuple[str, int]) -> None:
    with serve(socks5_relay([])) as proxy:
        async with await open_tunnel(*echo_addr, proxy=f"socks5h://127.0.0.1:{proxy.port}") as tunnel:
            await tunnel.send_all(b"last words")
            await tunnel.send_eof()
            assert await receive_exactly(tunnel.stream, 10) == b"last words"
            assert await tunnel.receive_some() == b""


@trio_test
async def test_chain_of_https_proxy_then_scripted_socks5(tls_files: TLSFiles, tinyproxy: PeerServer) -> None:
    requests: list[Address] = []
    with (
        echo_server() as target,
        serve(socks5_relay(requests)) as socks,
        serve(tls_forwarder(tls_files, tinyproxy.address)) as https,
    ):
        chain = [f"https://127.0.0.1:{https.port}", f"socks5h://127.0.0.1:{socks.port}"]
        tunnel = await open_tunnel(*target.address, proxy=chain, proxy_ssl=tls_files.client_context(), timeout=5)
        async with tunnel:
            assert isinstance(tunnel.stream, trio.SSLStream)
            await assert_echoes(tunnel.stream)
            with pytest.raises(LocalProtocolError, match="half-close"):
                await tunnel.send_eof()
            assert tunnel.info.tls_time > 0
    assert requests == [Address(*target.address)]


@trio_test
async def test_udp_association_against_a_scripted_relay() -> None:
    relay = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stray = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await relay.bind(("127.0.0.1", 0))
    relay_port = relay.getsockname()[1]
    requests: list[tuple[int, Address]] = []

    def handler(conn: socket.socket) -> None:
        requests.append(read_socks5_request(conn))
        conn.sendall(b"\x05\x00\x00\x01\x00\x00\x00\x00" + relay_port.to_bytes(2, "big"))
        conn.recv(1)

    with relay, stray, serve(handler) as proxy:
        async with await open_udp_association(f"socks5://127.0.0.1:{proxy.port}", timeout=5) as assoc:
            assert assoc.relay == Address("127.0.0.1", relay_port)  # 0.0.0.0 means the proxy's address
            here = assoc.socket.getsockname()
            assert requests == [(3, Address(here[0], here[1]))]
            await assoc.sendto(b"query", ("198.51.100.7", 53))
            packet, source = await relay.recvfrom(2048)
            assert parse_udp_datagram(packet) == UdpDatagram(address=Address("198.51.100.7", 53), data=b"query")
            answer = encode_udp_datagram(UdpDatagram(address=Address("198.51.100.7", 53), data=b"answer"))
            await relay.sendto(encode_udp_datagram(UdpDatagram(address=Address("10.0.0.1", 1), data=b"frag",
                                                               fragment=1)), source)
            await relay.sendto(b"\x00\x00\x00\x09garbage", source)
            await stray.sendto(answer.replace(b"answer", b"forged"), source)
            await relay.sendto(answer, source)
            assert await assoc.recvfrom() == (b"answer", Address("198.51.100.7", 53))


@trio_test
async def test_udp_association_needs_one_socks5_proxy() -> None:
    with pytest.raises(LocalProtocolError):
        await open_udp_association("http://127.0.0.1:8080")


# -- real peers ----------------------------------------------------------------------------------


@trio_test
async def test_microsocks_connect_and_one_mebibyte(microsocks: PeerServer, echo_addr: tuple[str, int]) -> None:
    stream = await open_tcp_stream(*echo_addr, proxy=f"socks5h://{microsocks.url}", timeout=5)
    data = os.urandom(1 << 20)
    received = bytearray()
    async with stream:

        async def sender() -> None:
            await stream.send_all(data)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            while len(received) < len(data):
                chunk = await stream.receive_some(65536)
                assert chunk
                received += chunk
    assert received == data


@trio_test
async def test_microsocks_username_password(
    microsocks_auth: PeerServer, echo_addr: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="socks_sansio")
    good = f"socks5://alice:s3cret@{microsocks_auth.url}"
    # (microsocks reads a pipelined greeting + auth + request as the greeting alone: no pipelined=True here)
    async with await open_tunnel(*echo_addr, proxy=good, timeout=5) as tunnel:
        await assert_echoes(tunnel.stream)
        assert "s3cret" not in repr(tunnel.info)
    with pytest.raises(ProxyAuthError):
        await open_tcp_stream(*echo_addr, proxy=f"socks5://alice:wrong@{microsocks_auth.url}", timeout=5)
    with pytest.raises(ProxyAuthError):
        await open_tcp_stream(*echo_addr, proxy=f"socks5://{microsocks_auth.url}", timeout=5)
    assert "socks5://alice:***@127.0.0.1" in caplog.text  # every step is logged...
    assert "SOCKS5 handshake" in caplog.text
    assert "s3cret" not in caplog.text  # ...never with the password


@pytest.mark.parametrize("scheme", ["socks5", "socks5h", "socks4", "socks4a"])
@trio_test
async def test_dante_connect(dante: PeerServer, echo_addr: tuple[str, int], scheme: str) -> None:
    # Dante has no SOCKS4a: socks4a:// with an IP target sends a plain SOCKS4 request.
    async with await open_tunnel(*echo_addr, proxy=f"{scheme}://{dante.url}", timeout=5) as tunnel:
        await assert_echoes(tunnel.stream)


@trio_test
async def test_dante_socks4_resolves_a_name_locally(dante: PeerServer, echo_addr: tuple[str, int]) -> None:
    trio.socket.set_custom_hostname_resolver(StaticResolver())
    async with await open_tunnel("target.test", echo_addr[1], proxy=f"socks4://{dante.url}", timeout=5) as tunnel:
        await assert_echoes(tunnel.stream)


@pytest.mark.parametrize("pipelined", [False, True])
@trio_test
async def test_dante_username_auth(dante_auth: PeerServer, echo_addr: tuple[str, int], pipelined: bool) -> None:
    url = f"socks5://{DANTE_USER}:{DANTE_PASSWORD}@{dante_auth.url}"
    async with await open_tunnel(*echo_addr, proxy=url, pipelined=pipelined, timeout=5) as tunnel:
        await assert_echoes(tunnel.stream)
    with pytest.raises(ProxyAuthError):
        await open_tcp_stream(*echo_addr, proxy=f"socks5://{DANTE_USER}:nope@{dante_auth.url}", timeout=5)


@pytest.mark.parametrize("scheme", ["socks5", "socks4"])
@trio_test
async def test_dante_bind(dante: PeerServer, scheme: str) -> None:
    async with await open_bind(f"{scheme}://{dante.url}", timeout=5) as listener:
        assert isinstance(listener, BindListener)
        assert listener.address.port != 0
        peer = await trio.open_tcp_stream(listener.address.host_str, listener.address.port)
        async with peer:
            await peer.send_all(b"from the peer")
            stream = await listener.accept(timeout=5)
            async with stream:
                assert await receive_exactly(stream, 13) == b"from the peer"
                await stream.send_all(b"to the peer")
                assert await receive_exactly(peer, 11) == b"to the peer"
            local = peer.socket.getsockname()
            assert listener.peer == Address(local[0], local[1])


@trio_test
async def test_bind_accept_times_out(dante: PeerServer) -> None:
    async with await open_bind(f"socks5://{dante.url}", timeout=5) as listener:
        with pytest.raises(ProxyTimeoutError, match="BIND peer"):
            await listener.accept(timeout=0.2)
        with pytest.raises(trio.ClosedResourceError):
            await listener.accept()


@trio_test
async def test_dante_udp_associate(dante: PeerServer) -> None:
    echo_sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await echo_sock.bind(("127.0.0.1", 0))
    echo_port = echo_sock.getsockname()[1]

    async def udp_echo() -> None:
        while True:
            data, source = await echo_sock.recvfrom(65535)
            await echo_sock.sendto(b"echo:" + data, source)

    with echo_sock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(udp_echo)
            async with await open_udp_association(f"socks5://{dante.url}", timeout=5) as assoc:
                await assoc.sendto(b"ping", ("127.0.0.1", echo_port))
                with trio.fail_after(5):
                    assert await assoc.recvfrom() == (b"echo:ping", Address("127.0.0.1", echo_port))
            nursery.cancel_scope.cancel()


@trio_test
async def test_tinyproxy_connect_and_basic_auth(
    tinyproxy: PeerServer, tinyproxy_auth: PeerServer, echo_addr: tuple[str, int]
) -> None:
    async with await open_tunnel(*echo_addr, proxy=f"http://{tinyproxy.url}", timeout=5) as tunnel:
        await assert_echoes(tunnel.stream)
    async with await open_tunnel(*echo_addr, proxy=f"http://bob:hunter2@{tinyproxy_auth.url}", timeout=5) as tunnel:
        await assert_echoes(tunnel.stream)
    for url in (f"http://bob:wrong@{tinyproxy_auth.url}", f"http://{tinyproxy_auth.url}"):
        with pytest.raises(ProxyAuthError) as info:
            await open_tcp_stream(*echo_addr, proxy=url, timeout=5)
        assert "wrong" not in str(info.value)


@trio_test
async def test_chain_microsocks_then_tinyproxy(
    microsocks: PeerServer, tinyproxy: PeerServer, echo_addr: tuple[str, int]
) -> None:
    chain = [f"socks5h://{microsocks.url}", ProxyURL.parse(f"http://{tinyproxy.url}")]
    async with await open_tunnel(*echo_addr, proxy=chain, timeout=5) as tunnel:
        await assert_echoes(tunnel.stream)
        info = tunnel.info
    assert info.proxies == (f"socks5h://{microsocks.url}", f"http://{tinyproxy.url}")
    assert info.protocol is ProxyProtocol.HTTP
    assert info.target == Address(*echo_addr)
    assert 0 <= info.connect_time <= info.total_time
    assert 0 < info.handshake_time <= info.total_time
    assert info.tls_time == 0
    assert not info.tls


@trio_test
async def test_tls_to_the_target_through_a_proxy(microsocks: PeerServer, tls_files: TLSFiles) -> None:
    with serve(tls_echo(tls_files)) as target:
        stream = await open_tcp_stream(
            "127.0.0.1", target.port, proxy=f"socks5h://{microsocks.url}", ssl=tls_files.client_context(), timeout=5
        )
        async with stream:
            assert isinstance(stream, trio.SSLStream)
            await assert_echoes(stream)
        with pytest.raises(trio.BrokenResourceError):  # wrong name: the certificate is checked
            await open_tcp_stream(
                "127.0.0.1", target.port, proxy=f"socks5h://{microsocks.url}",
                ssl=tls_files.client_context(), server_hostname="wrong.test", timeout=5,
            )


@trio_test
async def test_tls_to_an_https_proxy(tinyproxy: PeerServer, tls_files: TLSFiles, echo_addr: tuple[str, int]) -> None:
    with serve(tls_forwarder(tls_files, tinyproxy.address)) as https:
        url = f"https://127.0.0.1:{https.port}"
        async with await open_tunnel(*echo_addr, proxy=url, proxy_ssl=tls_files.client_context(), timeout=5) as t:
            await assert_echoes(t.stream)
        with pytest.raises(ProxyConnectionError, match="TLS handshake with the proxy"):
            await open_tcp_stream(*echo_addr, proxy=url, timeout=5)  # default context: unknown CA


@trio_test
async def test_tls_inside_tls(tinyproxy: PeerServer, tls_files: TLSFiles) -> None:
    with serve(tls_echo(tls_files)) as target, serve(tls_forwarder(tls_files, tinyproxy.address)) as https:
        tunnel = await open_tunnel(
            "localhost", target.port,
            proxy=f"https://127.0.0.1:{https.port}",
            proxy_ssl=tls_files.client_context(),
            ssl=tls_files.client_context(),
            timeout=5,
        )
        async with tunnel:
            assert isinstance(tunnel.stream, trio.SSLStream)
            assert isinstance(tunnel.stream.transport_stream, trio.SSLStream)
            data = os.urandom(256 * 1024)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(tunnel.send_all, data)
                assert await receive_exactly(tunnel.stream, len(data)) == data
            assert tunnel.info.tls


@trio_test
async def test_tls_on_an_inner_hop_and_to_the_target(
    microsocks: PeerServer, tinyproxy: PeerServer, tls_files: TLSFiles
) -> None:
    with serve(tls_echo(tls_files)) as target, serve(tls_forwarder(tls_files, tinyproxy.address)) as https:
        chain = [f"socks5h://{microsocks.url}", f"https://127.0.0.1:{https.port}"]
        tunnel = await open_tunnel(
            "127.0.0.1", target.port, proxy=chain, proxy_ssl=tls_files.client_context(),
            ssl=tls_files.client_context(), server_hostname="target.test", timeout=5,
        )
        async with tunnel:
            await assert_echoes(tunnel.stream)
            assert tunnel.info.protocol is ProxyProtocol.HTTP


@trio_test
async def test_frames_through_a_tunnel(microsocks: PeerServer, echo_addr: tuple[str, int]) -> None:
    async with await open_tunnel(*echo_addr, proxy=f"socks5h://{microsocks.url}", timeout=5) as tunnel:
        for payload in (b"", b"one", os.urandom(100_000)):
            await tunnel.send_frame(payload)
            assert await tunnel.receive_frame() == payload
        await tunnel.send_all(encode_frame(b"a") + b"raw")  # frames and raw reads mix
        assert await tunnel.receive_frame() == b"a"
        assert await receive_exactly(tunnel.stream, 3) == b"raw"


@trio_test
async def test_frame_end_and_truncation() -> None:
    async def run(script: bytes) -> Any:
        requests: list[Address] = []

        def handler(conn: socket.socket) -> None:
            requests.append(read_socks5_request(conn)[1])
            conn.sendall(SOCKS5_OK + script)

        with serve(handler) as proxy:
            async with await open_tunnel("target.test", 1, proxy=f"socks5h://127.0.0.1:{proxy.port}") as tunnel:
                assert await tunnel.receive_frame() == b"x"
                return await tunnel.receive_frame()

    with pytest.raises(trio.EndOfChannel):
        await run(encode_frame(b"x"))
    with pytest.raises(RemoteProtocolError):
        await run(encode_frame(b"x") + b"\x00\x00")


def http_origin(conn: socket.socket) -> None:
    """A tiny HTTP origin: answers one request with its request line, chunked, then sends b"extra"."""
    head = b""
    while b"\r\n\r\n" not in head:
        head += conn.recv(4096)
    line = head.split(b"\r\n")[0]
    assert b"\r\nHost: " in head
    body = line + b" " + head.split(b"\r\n\r\n", 1)[1]
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Test: yes\r\n\r\n"
        + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\nextra"
    )
    conn.recv(1)


@trio_test
async def test_http_request_through_a_tunnel(tinyproxy: PeerServer) -> None:
    with serve(http_origin) as origin:
        async with await open_tunnel(*origin.address, proxy=f"http://{tinyproxy.url}", timeout=5) as tunnel:
            response = await tunnel.http_request("POST", "/hello?x=1", headers=[("X-A", "b")], body=b"data")
            assert response.status_code == 200
            assert response.get("x-test") == b"yes"
            assert response.body == b"POST /hello?x=1 HTTP/1.1 data"
            assert await receive_exactly(tunnel.stream, 5) == b"extra"


@trio_test
async def test_direct_connection_without_proxy(echo_addr: tuple[str, int], tls_files: TLSFiles) -> None:
    async with await open_tunnel(*echo_addr, timeout=5) as tunnel:
        assert isinstance(tunnel.stream, trio.SocketStream)
        assert tunnel.info.proxies == ()
        assert tunnel.info.protocol is None
        assert tunnel.stream.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        assert tunnel.stream.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        await assert_echoes(tunnel.stream)
    stream = await open_tcp_stream(*echo_addr, nodelay=False, keepalive=False)
    async with stream:
        assert isinstance(stream, trio.SocketStream)
        assert not stream.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        assert not stream.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    with pytest.raises(OSError, match="connect"):  # directly: the OSError itself, no proxy to blame
        await open_tcp_stream("127.0.0.1", dead_port())


@trio_test
async def test_bind_needs_a_proxy() -> None:
    with pytest.raises(LocalProtocolError):
        await open_bind([])
    with pytest.raises(LocalProtocolError, match="HTTP"):
        await open_bind("http://127.0.0.1:1")

"""The asyncio adapter against scripted peers and real proxies (microsocks, dante, tinyproxy).

Every test is a plain function running its coroutine with ``asyncio.run`` (the
``aio`` decorator, which also bounds it), on loopback only. Scripted peers that
only this file needs are defined here; the shared ones come from ``servers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from socks_sansio import (
    Address,
    LocalProtocolError,
    ProxyAuthError,
    ProxyConnectionError,
    ProxyRefusedError,
    ProxyTimeoutError,
    ProxyURL,
    RemoteProtocolError,
)
from socks_sansio.adapters import asyncio as aio_adapter
from socks_sansio.adapters.asyncio import (
    create_connection,
    open_bind,
    open_connection,
    open_tunnel,
    open_udp_association,
)
from tests.adapters.servers import (
    SOCKS5_OK,
    ThreadedServer,
    TLSFiles,
    echo,
    echo_server,
    pump,
    recv_exactly,
    socks5_connect_handler,
    tls_echo,
    tls_forwarder,
)
from tests.peer_servers import (
    PeerServer,
    dante_server,
    free_port,
    microsocks_server,
    tinyproxy_server,
)

TEST_BOUND = 20.0
"""No test may run longer than this (seconds)."""


def aio(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test function with ``asyncio.run``, bounded by TEST_BOUND."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), TEST_BOUND))

    return wrapper


# --------------------------------------------------------------- scripted peers


def read_socks5_request(conn: socket.socket) -> bytes:
    """Read a SOCKS5 request (VER CMD RSV ATYP ADDR PORT) and return it whole."""
    head = recv_exactly(conn, 4)
    atyp = head[3]
    if atyp == 3:
        length = recv_exactly(conn, 1)
        return head + length + recv_exactly(conn, length[0] + 2)
    return head + recv_exactly(conn, {1: 4, 4: 16}[atyp] + 2)


def socks5_script(
    requests: list[bytes],
    *,
    reply: bytes = SOCKS5_OK,
    extra: bytes = b"",
    after: Callable[[socket.socket], None] = echo,
) -> Callable[[socket.socket], None]:
    """A no-auth SOCKS5 proxy that records each request, replies, then runs *after* on the same connection."""

    def handler(conn: socket.socket) -> None:
        _version, count = recv_exactly(conn, 2)
        recv_exactly(conn, count)
        conn.sendall(b"\x05\x00")
        requests.append(read_socks5_request(conn))
        conn.sendall(reply + extra)
        after(conn)

    return handler


def socks5_forwarder(conn: socket.socket) -> None:
    """A no-auth SOCKS5 proxy that really dials the requested IP address (IPv4 or IPv6)."""
    _version, count = recv_exactly(conn, 2)
    recv_exactly(conn, count)
    conn.sendall(b"\x05\x00")
    request = read_socks5_request(conn)
    family = socket.AF_INET if request[3] == 1 else socket.AF_INET6
    host = socket.inet_ntop(family, request[4:-2])
    port = int.from_bytes(request[-2:], "big")
    with socket.create_connection((host, port), timeout=10) as upstream:
        conn.sendall(SOCKS5_OK)
        back = threading.Thread(target=pump, args=(upstream, conn), daemon=True)
        back.start()
        pump(conn, upstream)
        back.join(10)


def read_http_head(conn: socket.socket) -> bytes:
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        chunk = conn.recv(1)
        if not chunk:
            raise EOFError("closed before the end of the head")
        head += chunk
    return head


def http_proxy_script(segments: list[bytes], *, after: Callable[[socket.socket], None] = echo) -> Callable[..., None]:
    """An HTTP proxy that reads a CONNECT head and answers with *segments*, one write (and a pause) each."""

    def handler(conn: socket.socket) -> None:
        read_http_head(conn)
        for segment in segments:
            conn.sendall(segment)
            time.sleep(0.05)
        after(conn)

    return handler


def http_origin(conn: socket.socket) -> None:
    """A tiny HTTP origin: answers each request with its own request line, then b'EXTRA' after the last."""
    while True:
        try:
            head = read_http_head(conn)
        except EOFError:
            return
        line = head.split(b"\r\n", 1)[0]
        length = 0
        for field in head.split(b"\r\n")[1:]:
            name, _, value = field.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = recv_exactly(conn, length)
        content = line + b"|" + body + b"|" + head.split(b"\r\n")[1]
        extra = b"EXTRA" if b"close" in head.lower() else b""
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s%s" % (len(content), content, extra))
        if extra:
            conn.shutdown(socket.SHUT_WR)
            return


def stalling_socks5(closed: threading.Event, *, trickle: float = 0.0) -> Callable[[socket.socket], None]:
    """A SOCKS5 proxy that never finishes its reply (or trickles it out an octet at a time)."""

    def handler(conn: socket.socket) -> None:
        try:
            _version, count = recv_exactly(conn, 2)
            recv_exactly(conn, count)
            conn.sendall(b"\x05\x00")
            read_socks5_request(conn)
            for octet in SOCKS5_OK if trickle else b"":
                conn.sendall(bytes([octet]))
                time.sleep(trickle)
            conn.recv(1)  # b"" (or a reset) once the client gave up
        except OSError:
            pass
        closed.set()

    return handler


@pytest.fixture(scope="module")
def tls_files() -> TLSFiles:
    return TLSFiles()


@pytest.fixture(scope="module")
def echo_addr() -> Iterator[tuple[str, int]]:
    with echo_server() as server:
        yield server.address


@pytest.fixture(scope="module")
def microsocks() -> Iterator[PeerServer]:
    with microsocks_server() as peer:
        yield peer


@pytest.fixture(scope="module")
def microsocks_auth() -> Iterator[PeerServer]:
    with microsocks_server(username="alice", password="s3cr3t-pw") as peer:
        yield peer


@pytest.fixture(scope="module")
def tinyproxy() -> Iterator[PeerServer]:
    with tinyproxy_server() as peer:
        yield peer


@pytest.fixture(scope="module")
def tinyproxy_auth() -> Iterator[PeerServer]:
    with tinyproxy_server(username="bob", password="hunter2-pw") as peer:
        yield peer


@pytest.fixture(scope="module")
def dante() -> Iterator[PeerServer]:
    with dante_server() as peer:
        yield peer


@contextlib.asynccontextmanager
async def aserve(
    handler: Callable[[socket.socket], None], *, family: int = socket.AF_INET
) -> AsyncIterator[ThreadedServer]:
    """``servers.serve`` for async tests: stopping it (joining its threads) does not block the loop,
    so connections the client aborted are really closed meanwhile."""
    server = ThreadedServer(handler, family=family)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.close)


def aserve_echo(*, family: int = socket.AF_INET) -> contextlib.AbstractAsyncContextManager[ThreadedServer]:
    return aserve(echo, family=family)


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback")


async def roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes = b"ping") -> bytes:
    writer.write(data)
    await writer.drain()
    return await reader.readexactly(len(data))


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()


# ------------------------------------------------------------ scripted: success


@aio
async def test_direct_connection_without_proxy(echo_addr: tuple[str, int]) -> None:
    reader, writer = await open_connection(*echo_addr)
    assert await roundtrip(reader, writer) == b"ping"
    await close(writer)


@aio
async def test_reply_split_into_single_octets() -> None:
    async with aserve(socks5_connect_handler(SOCKS5_OK, split=True)) as proxy:
        tunnel = await open_tunnel("example.test", 80, proxy=f"socks5h://127.0.0.1:{proxy.port}", timeout=5)
        async with tunnel:
            assert await roundtrip(tunnel.reader, tunnel.writer) == b"ping"
            assert tunnel.info.bound == Address("127.0.0.1", 1080)


@aio
async def test_tunnel_bytes_sent_with_the_reply_come_first() -> None:
    async with aserve(socks5_connect_handler(SOCKS5_OK, extra=b"early bytes")) as proxy:
        reader, writer = await open_connection("example.test", 80, proxy=f"socks5h://127.0.0.1:{proxy.port}")
        assert await reader.readexactly(11) == b"early bytes"
        assert await roundtrip(reader, writer) == b"ping"
        await close(writer)


@aio
async def test_http_head_in_two_segments_then_tunnel_bytes() -> None:
    segments = [b"HTTP/1.1 200 Connection", b" established\r\nX-A: b\r\n\r\nhello"]
    async with aserve(http_proxy_script(segments)) as proxy:
        reader, writer = await open_connection("example.test", 443, proxy=f"http://127.0.0.1:{proxy.port}")
        assert await reader.readexactly(5) == b"hello"
        assert await roundtrip(reader, writer) == b"ping"
        await close(writer)


@aio
async def test_socks5_resolves_locally_and_socks5h_remotely() -> None:
    requests: list[bytes] = []
    async with aserve(socks5_script(requests)) as proxy:
        for scheme in ("socks5", "socks5h"):
            reader, writer = await open_connection("localhost", 7, proxy=f"{scheme}://127.0.0.1:{proxy.port}")
            assert await roundtrip(reader, writer) == b"ping"
            await close(writer)
    local, remote = requests
    assert local[3] in (1, 4)  # an address, resolved by us
    assert remote[3:5] == b"\x03\x09" and remote[5:14] == b"localhost"


@aio
async def test_pipelined_socks5() -> None:
    requests: list[bytes] = []
    async with aserve(socks5_script(requests)) as proxy:
        reader, writer = await open_connection(
            "example.test", 80, proxy=f"socks5h://127.0.0.1:{proxy.port}", pipelined=True
        )
        assert await roundtrip(reader, writer) == b"ping"
        await close(writer)
    assert requests[0][5:17] == b"example.test"


@needs_ipv6
@aio
async def test_ipv6_proxy_and_ipv6_target() -> None:
    async with (
        aserve_echo(family=socket.AF_INET6) as target,
        aserve(socks5_forwarder, family=socket.AF_INET6) as proxy,
    ):
        tunnel = await open_tunnel("::1", target.port, proxy=f"socks5://[::1]:{proxy.port}", timeout=5)
        async with tunnel:
            assert await roundtrip(tunnel.reader, tunnel.writer, b"over v6") == b"over v6"
            assert tunnel.info.target == Address("::1", target.port)


@aio
async def test_trust_env_takes_the_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ALL_PROXY", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    requests: list[bytes] = []
    async with aserve(socks5_script(requests)) as proxy:
        monkeypatch.setenv("ALL_PROXY", f"socks5h://127.0.0.1:{proxy.port}")
        reader, writer = await open_connection("from-env.test", 80, trust_env=True)
        assert await roundtrip(reader, writer) == b"ping"
        await close(writer)
    assert b"from-env.test" in requests[0]


@aio
async def test_socket_options() -> None:
    async with aserve(socks5_connect_handler(SOCKS5_OK)) as proxy:
        url = f"socks5h://127.0.0.1:{proxy.port}"
        for on in (True, False):
            _, writer = await open_connection("example.test", 80, proxy=url, nodelay=on, keepalive=on)
            sock = writer.get_extra_info("socket")
            assert bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)) is on
            assert bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)) is on
            await close(writer)


@aio
async def test_steps_are_logged_without_the_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="socks_sansio")
    async with aserve(socks5_connect_handler(SOCKS5_OK)) as proxy:
        # The scripted proxy selects no-auth, so the credentials are offered but not needed.
        url = f"socks5h://u:pw-XYZZY@127.0.0.1:{proxy.port}"
        _, writer = await open_connection("example.test", 80, proxy=url)
        await close(writer)
    assert "handshake" in caplog.text
    assert "pw-XYZZY" not in caplog.text


# ------------------------------------------------------------ create_connection


class Recorder(asyncio.Protocol):
    """Records the calls a transport makes, in order."""

    def __init__(self) -> None:
        self.events: list[object] = []
        self.received = b""
        self.changed = asyncio.Event()
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.events.append(data)
        self.received += data
        self.changed.set()

    def eof_received(self) -> bool:
        self.events.append("eof")
        self.changed.set()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        self.changed.set()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 5)


class BufferedRecorder(asyncio.BufferedProtocol):
    """A BufferedProtocol with a tiny buffer, so delivery takes several calls."""

    def __init__(self) -> None:
        self.buffer = bytearray(3)
        self.received = b""
        self.made = False
        self.changed = asyncio.Event()
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made = True

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        assert self.made
        self.received += bytes(self.buffer[:nbytes])
        self.changed.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


def then_send(data: bytes) -> Callable[[socket.socket], None]:
    def after(conn: socket.socket) -> None:
        time.sleep(0.05)
        conn.sendall(data)
        echo(conn)

    return after


@aio
async def test_create_connection_delivers_early_bytes_before_new_ones() -> None:
    async with aserve(socks5_script([], extra=b"first|", after=then_send(b"second|"))) as proxy:
        transport, protocol = await create_connection(
            Recorder, "example.test", 80, proxy=f"socks5h://127.0.0.1:{proxy.port}", timeout=5
        )
        assert protocol.events[:2] == ["made", b"first|"]
        await protocol.wait_for(lambda: protocol.received == b"first|second|")
        transport.write(b"ping")
        await protocol.wait_for(lambda: protocol.received.endswith(b"ping"))
        assert protocol.received == b"first|second|ping"
        transport.close()
        await protocol.wait_for(lambda: "lost" in protocol.events)


@aio
async def test_create_connection_with_a_buffered_protocol() -> None:
    async with aserve(socks5_script([], extra=b"0123456789", after=then_send(b"abc"))) as proxy:
        transport, protocol = await create_connection(
            BufferedRecorder, "example.test", 80, proxy=f"socks5h://127.0.0.1:{proxy.port}"
        )
        assert protocol.received == b"0123456789"
        while protocol.received != b"0123456789abc":
            protocol.changed.clear()
            await asyncio.wait_for(protocol.changed.wait(), 5)
        transport.close()
        assert await asyncio.wait_for(protocol.lost, 5) is None


@aio
async def test_create_connection_passes_a_peer_eof_on() -> None:
    def close_write(conn: socket.socket) -> None:
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)

    async with aserve(socks5_script([], extra=b"bye", after=close_write)) as proxy:
        transport, protocol = await create_connection(
            Recorder, "example.test", 80, proxy=f"socks5h://127.0.0.1:{proxy.port}"
        )
        await protocol.wait_for(lambda: "eof" in protocol.events)
        assert protocol.events[:3] == ["made", b"bye", "eof"]
        transport.close()
        await protocol.wait_for(lambda: "lost" in protocol.events)


# --------------------------------------------------------------------- failures


@pytest.mark.parametrize("rep", range(1, 9))
@aio
async def test_socks5_failure_replies(rep: int) -> None:
    async with aserve(socks5_connect_handler(bytes([5, rep, 0, 1, 0, 0, 0, 0, 0, 0]))) as proxy:
        with pytest.raises(ProxyRefusedError) as caught:
            await open_connection("example.test", 80, proxy=f"socks5h://127.0.0.1:{proxy.port}", timeout=5)
    assert caught.value.code == rep
    assert caught.value.protocol == "socks5"


def socks4_refusal(code: int) -> Callable[[socket.socket], None]:
    def handler(conn: socket.socket) -> None:
        recv_exactly(conn, 8)
        while recv_exactly(conn, 1) != b"\x00":
            pass
        conn.sendall(bytes([0, code, 0, 0, 0, 0, 0, 0]))

    return handler


@pytest.mark.parametrize("code", [91, 92, 93])
@aio
async def test_socks4_failure_replies(code: int) -> None:
    async with aserve(socks4_refusal(code)) as proxy:
        with pytest.raises(ProxyRefusedError) as caught:
            await open_connection("127.0.0.1", 80, proxy=f"socks4://127.0.0.1:{proxy.port}", timeout=5)
    assert (caught.value.protocol, caught.value.code) == ("socks4", code)


@pytest.mark.parametrize(
    ("status", "error"), [(403, ProxyRefusedError), (407, ProxyAuthError), (502, ProxyRefusedError)]
)
@aio
async def test_http_failure_statuses(status: int, error: type[ProxyRefusedError]) -> None:
    response = b"HTTP/1.1 %d No\r\nProxy-Authenticate: Basic realm=x\r\nContent-Length: 0\r\n\r\n" % status
    async with aserve(http_proxy_script([response], after=lambda conn: None)) as proxy:
        with pytest.raises(error) as caught:
            await open_connection("example.test", 443, proxy=f"http://127.0.0.1:{proxy.port}", timeout=5)
    assert type(caught.value) is error
    assert caught.value.code == status


@aio
async def test_dead_port_names_the_proxy_but_not_the_password() -> None:
    port = free_port()
    with pytest.raises(ProxyConnectionError) as caught:
        await open_connection("example.test", 80, proxy=f"socks5h://user:pa55-SECRET@127.0.0.1:{port}", timeout=5)
    assert isinstance(caught.value.__cause__, OSError)
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert "pa55-SECRET" not in str(caught.value)
    assert "pa55-SECRET" not in repr(caught.value)


@aio
async def test_proxy_closing_mid_handshake() -> None:
    def hang_up(conn: socket.socket) -> None:
        recv_exactly(conn, 3)

    async with aserve(hang_up) as proxy:
        with pytest.raises(ProxyConnectionError):
            await open_connection("example.test", 80, proxy=f"socks5h://127.0.0.1:{proxy.port}", timeout=5)


@pytest.mark.parametrize("trickle", [0.0, 0.25])
@aio
async def test_one_deadline_for_the_whole_call(trickle: float) -> None:
    """A stalled proxy, and one whose every octet arrives within the time-out but the reply does not."""
    closed = threading.Event()
    async with aserve(stalling_socks5(closed, trickle=trickle)) as proxy:
        started = time.monotonic()
        with pytest.raises(ProxyTimeoutError) as caught:
            await open_connection("example.test", 80, proxy=f"socks5h://127.0.0.1:{proxy.port}", timeout=1.0)
        assert time.monotonic() - started < 10.0
        assert "handshake" in str(caught.value)
        assert await asyncio.to_thread(closed.wait, 5)  # the half-open connection was closed


@aio
async def test_cancellation_propagates_and_closes_the_connection() -> None:
    closed = threading.Event()
    async with aserve(stalling_socks5(closed)) as proxy:
        url = f"socks5h://127.0.0.1:{proxy.port}"
        task = asyncio.create_task(open_connection("example.test", 80, proxy=url, timeout=30))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.to_thread(closed.wait, 5)


@aio
async def test_an_outer_timeout_is_not_turned_into_proxy_timeout() -> None:
    closed = threading.Event()
    async with aserve(stalling_socks5(closed)) as proxy:
        url = f"socks5h://127.0.0.1:{proxy.port}"
        with pytest.raises(asyncio.TimeoutError) as caught:  # the builtin TimeoutError from Python 3.11
            await asyncio.wait_for(open_connection("example.test", 80, proxy=url, timeout=30), 0.3)
        assert not isinstance(caught.value, ProxyTimeoutError)
        assert await asyncio.to_thread(closed.wait, 5)


@aio
async def test_impossible_requests_are_refused_clearly() -> None:
    async with aserve(socks5_connect_handler(SOCKS5_OK)) as proxy:
        with pytest.raises(LocalProtocolError, match=r"SOCKS4|IPv6"):
            await open_connection("::1", 80, proxy=f"socks4://127.0.0.1:{proxy.port}")
        assert not proxy._threads  # refused before connecting
    with pytest.raises(LocalProtocolError, match=r"SOCKS5"):
        await open_udp_association("http://127.0.0.1:8080")


# ----------------------------------------------------------- frames, HTTP, data


@aio
async def test_frames_and_half_close_through_a_tunnel() -> None:
    async with (
        aserve(socks5_connect_handler(SOCKS5_OK)) as proxy,
        await open_tunnel("example.test", 80, proxy=f"socks5h://127.0.0.1:{proxy.port}") as tunnel,
    ):
        for payload in (b"abc", b"", b"x" * 70000):
            await tunnel.send_frame(payload)
        assert [await tunnel.receive_frame() for _ in range(3)] == [b"abc", b"", b"x" * 70000]
        await tunnel.send_eof()
        with pytest.raises(EOFError):
            await tunnel.receive_frame()


@aio
async def test_http_request_through_a_tunnel() -> None:
    async with (
        aserve(socks5_script([], after=http_origin)) as proxy,
        await open_tunnel("origin.test", 8080, proxy=f"socks5h://127.0.0.1:{proxy.port}") as tunnel,
    ):
        first = await tunnel.http_request("POST", "/a?b=c", headers=[("X-Test", "1")], body=b"data")
        assert first.status_code == 200
        assert first.body == b"POST /a?b=c HTTP/1.1|data|Host: origin.test:8080"
        second = await tunnel.http_request("GET", "/last", headers=[("Connection", "close")])
        assert second.body.startswith(b"GET /last HTTP/1.1||")
        assert await tunnel.receive_some() == b"EXTRA"  # sent after the response, not lost
        assert await tunnel.receive_some() == b""


@aio
async def test_http_request_through_tinyproxy_to_a_real_origin(tinyproxy: PeerServer) -> None:
    async with aserve(http_origin) as origin, await open_tunnel(
        "127.0.0.1", origin.port, proxy=f"http://{tinyproxy.url}", timeout=5
    ) as tunnel:
        response = await tunnel.http_request("GET", "/")
        assert response.status_code == 200
        assert response.body == b"GET / HTTP/1.1||Host: 127.0.0.1:%d" % origin.port


@aio
async def test_one_mebibyte_through_microsocks(microsocks: PeerServer, echo_addr: tuple[str, int]) -> None:
    data = bytes(range(256)) * 4096
    async with await open_tunnel(*echo_addr, proxy=f"socks5://{microsocks.url}", timeout=5) as tunnel:

        # microsocks closes both directions at the first EOF: no half-close here.
        sender = asyncio.create_task(tunnel.send_all(data))
        received = await tunnel.reader.readexactly(len(data))
        await sender
    assert received == data


# ----------------------------------------------------------------- real peers


@aio
async def test_microsocks_no_auth(microsocks: PeerServer, echo_addr: tuple[str, int]) -> None:
    tunnel = await open_tunnel(*echo_addr, proxy=f"socks5h://{microsocks.url}", timeout=5)
    async with tunnel:
        assert await roundtrip(tunnel.reader, tunnel.writer) == b"ping"
        assert tunnel.info.protocol is not None
        assert tunnel.info.total_time >= tunnel.info.connect_time


@aio
async def test_microsocks_auth(microsocks_auth: PeerServer, echo_addr: tuple[str, int]) -> None:
    url = f"socks5h://alice:s3cr3t-pw@{microsocks_auth.url}"
    reader, writer = await open_connection(*echo_addr, proxy=url, timeout=5)
    assert await roundtrip(reader, writer) == b"ping"
    await close(writer)
    with pytest.raises(ProxyAuthError):
        await open_connection(*echo_addr, proxy=f"socks5h://alice:wrong@{microsocks_auth.url}", timeout=5)


@aio
async def test_dante_connect_socks5_and_socks4(dante: PeerServer, echo_addr: tuple[str, int]) -> None:
    for scheme in ("socks5", "socks5h", "socks4"):
        reader, writer = await open_connection(*echo_addr, proxy=f"{scheme}://{dante.url}", timeout=5)
        assert await roundtrip(reader, writer, scheme.encode()) == scheme.encode()
        await close(writer)


@aio
async def test_dante_username_auth(echo_addr: tuple[str, int]) -> None:
    with dante_server(auth="username") as peer:
        url = f"socks5://{peer.username}:{peer.password}@{peer.url}"
        for pipelined in (False, True):  # microsocks cannot take a pipelined greeting; dante can
            reader, writer = await open_connection(*echo_addr, proxy=url, timeout=5, pipelined=pipelined)
            assert await roundtrip(reader, writer) == b"ping"
            await close(writer)
        with pytest.raises(ProxyAuthError):
            await open_connection(*echo_addr, proxy=f"socks5://{peer.username}:nope@{peer.url}", timeout=5)


@pytest.mark.parametrize("scheme", ["socks5", "socks4"])
@aio
async def test_dante_bind(dante: PeerServer, scheme: str) -> None:
    async with await open_bind(f"{scheme}://{dante.url}", timeout=5) as listener:
        assert listener.address.port != 0
        peer_reader, peer_writer = await asyncio.open_connection(listener.address.host_str, listener.address.port)
        reader, writer = await listener.accept(timeout=5)
        assert listener.peer is not None
        peer_writer.write(b"from the peer")
        assert await reader.readexactly(13) == b"from the peer"
        assert await roundtrip(peer_reader, writer, b"to the peer") == b"to the peer"
        await close(writer)
        await close(peer_writer)


@aio
async def test_bind_accept_timeout(dante: PeerServer) -> None:
    async with await open_bind(f"socks5://{dante.url}", timeout=5) as listener:
        with pytest.raises(ProxyTimeoutError):
            await listener.accept(timeout=0.3)


class UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.transport.sendto(data, addr)


@aio
async def test_dante_udp_associate(dante: PeerServer) -> None:
    loop = asyncio.get_running_loop()
    echo_transport, _ = await loop.create_datagram_endpoint(UdpEcho, local_addr=("127.0.0.1", 0))
    port = echo_transport.get_extra_info("sockname")[1]
    try:
        async with await open_udp_association(f"socks5://{dante.url}", timeout=5) as association:
            for payload in (b"one", b"two"):
                await association.sendto(payload, ("127.0.0.1", port))
                data, source = await asyncio.wait_for(association.recvfrom(), 5)
                assert (data, source) == (payload, Address("127.0.0.1", port))
    finally:
        echo_transport.close()


@aio
async def test_tinyproxy_connect_and_basic_auth(
    tinyproxy: PeerServer, tinyproxy_auth: PeerServer, echo_addr: tuple[str, int]
) -> None:
    for url in (f"http://{tinyproxy.url}", f"http://bob:hunter2-pw@{tinyproxy_auth.url}"):
        reader, writer = await open_connection(*echo_addr, proxy=url, timeout=5)
        assert await roundtrip(reader, writer) == b"ping"
        await close(writer)
    for url in (f"http://bob:wrong@{tinyproxy_auth.url}", f"http://{tinyproxy_auth.url}"):
        with pytest.raises(ProxyAuthError):
            await open_connection(*echo_addr, proxy=url, timeout=5)


@aio
async def test_chain_microsocks_then_tinyproxy(
    microsocks: PeerServer, tinyproxy: PeerServer, echo_addr: tuple[str, int]
) -> None:
    chain = [f"socks5://{microsocks.url}", ProxyURL.parse(f"http://{tinyproxy.url}")]
    async with await open_tunnel(*echo_addr, proxy=chain, timeout=5) as tunnel:
        assert await roundtrip(tunnel.reader, tunnel.writer) == b"ping"
        assert len(tunnel.info.proxies) == 2


# ------------------------------------------------------------------------- TLS


@aio
async def test_tls_to_the_target_through_a_proxy(
    tls_files: TLSFiles, microsocks: PeerServer
) -> None:
    async with aserve(tls_echo(tls_files)) as target:
        ctx = tls_files.client_context()
        reader, writer = await open_connection(
            "127.0.0.1", target.port, proxy=f"socks5://{microsocks.url}", ssl=ctx, timeout=5
        )
        assert writer.get_extra_info("ssl_object") is not None
        assert await roundtrip(reader, writer, b"secret") == b"secret"
        await close(writer)
        with pytest.raises(ssl.SSLCertVerificationError):
            await open_connection(
                "127.0.0.1", target.port, proxy=f"socks5://{microsocks.url}", ssl=ctx,
                server_hostname="wrong.test", timeout=5,
            )  # fmt: skip


@aio
async def test_create_connection_with_tls_to_the_target(tls_files: TLSFiles, tinyproxy: PeerServer) -> None:
    async with aserve(tls_echo(tls_files)) as target:
        transport, protocol = await create_connection(
            Recorder, "localhost", target.port, proxy=f"http://{tinyproxy.url}",
            ssl=tls_files.client_context(), timeout=5,
        )  # fmt: skip
        transport.write(b"hello over tls")
        await protocol.wait_for(lambda: protocol.received == b"hello over tls")
        transport.close()
        await protocol.wait_for(lambda: "lost" in protocol.events)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio's start_tls over TLS needs Python 3.11")
@aio
async def test_https_proxy_and_tls_inside_tls(tls_files: TLSFiles, tinyproxy: PeerServer) -> None:
    async with (
        aserve(tls_forwarder(tls_files, tinyproxy.address)) as https_proxy,
        aserve(tls_echo(tls_files)) as tls_target,
        aserve_echo() as plain_target,
    ):
        url = f"https://127.0.0.1:{https_proxy.port}"
        proxy_ctx = tls_files.client_context()
        reader, writer = await open_connection(*plain_target.address, proxy=url, proxy_ssl=proxy_ctx, timeout=5)
        assert await roundtrip(reader, writer, b"via https proxy") == b"via https proxy"
        await close(writer)
        tunnel = await open_tunnel(
            "localhost", tls_target.port, proxy=url, proxy_ssl=proxy_ctx, ssl=tls_files.client_context(), timeout=5
        )
        async with tunnel:
            assert await roundtrip(tunnel.reader, tunnel.writer, b"tls in tls") == b"tls in tls"
            assert tunnel.info.tls and tunnel.info.tls_time > 0
        with pytest.raises(ProxyConnectionError) as caught:  # the proxy's certificate is not trusted
            await open_connection(*plain_target.address, proxy=url, timeout=5)
        assert isinstance(caught.value.__cause__, ssl.SSLError)


@pytest.mark.skipif(sys.version_info >= (3, 11), reason="Python 3.10 only: asyncio cannot start TLS over TLS there")
@aio
async def test_tls_inside_tls_on_python_3_10_says_what_it_needs(tls_files: TLSFiles, tinyproxy: PeerServer) -> None:
    async with (
        aserve(tls_forwarder(tls_files, tinyproxy.address)) as https_proxy,
        aserve(tls_echo(tls_files)) as target,
    ):
        with pytest.raises(NotImplementedError, match=r"needs Python 3\.11"):
            await open_tunnel(
                "localhost", target.port, proxy=f"https://127.0.0.1:{https_proxy.port}",
                proxy_ssl=tls_files.client_context(), ssl=tls_files.client_context(), timeout=5,
            )  # fmt: skip


@aio
async def test_socks5_hop_behind_an_https_proxy(tls_files: TLSFiles, tinyproxy: PeerServer) -> None:
    requests: list[bytes] = []
    async with (
        aserve(tls_forwarder(tls_files, tinyproxy.address)) as https_proxy,
        aserve(socks5_script(requests, extra=b"early")) as socks_hop,
    ):
        chain = [f"https://localhost:{https_proxy.port}", f"socks5h://127.0.0.1:{socks_hop.port}"]
        reader, writer = await open_connection(
            "deep.test", 443, proxy=chain, proxy_ssl=tls_files.client_context(), timeout=5
        )
        assert await reader.readexactly(5) == b"early"
        assert await roundtrip(reader, writer) == b"ping"
        await close(writer)
    assert b"deep.test" in requests[0]


# ------------------------------------------------------- UDP against a script


def udp_associate_script(relay_port: int, done: threading.Event) -> Callable[[socket.socket], None]:
    """A SOCKS5 proxy that answers UDP ASSOCIATE with relay 0.0.0.0:relay_port, then closes on *done*."""

    def handler(conn: socket.socket) -> None:
        _version, count = recv_exactly(conn, 2)
        recv_exactly(conn, count)
        conn.sendall(b"\x05\x00")
        request = read_socks5_request(conn)
        assert request[1] == 3, request
        conn.sendall(b"\x05\x00\x00\x01\x00\x00\x00\x00" + relay_port.to_bytes(2, "big"))
        done.wait(10)

    return handler


class Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.queue.put_nowait((data, addr))


@aio
async def test_udp_drops_strangers_fragments_and_garbage() -> None:
    loop = asyncio.get_running_loop()
    relay, inbox = await loop.create_datagram_endpoint(Inbox, local_addr=("127.0.0.1", 0))
    stranger, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    done = threading.Event()
    try:
        async with aserve(udp_associate_script(relay.get_extra_info("sockname")[1], done)) as proxy:
            association = await open_udp_association(f"socks5h://127.0.0.1:{proxy.port}", timeout=5)
            assert association.relay == Address("127.0.0.1", relay.get_extra_info("sockname")[1])
            await association.sendto(b"hi", ("name.test", 53))
            packet, client = await asyncio.wait_for(inbox.queue.get(), 5)
            assert packet == b"\x00\x00\x00\x03\x09name.test\x00\x35hi"
            header = b"\x00\x00\x00\x01\x0a\x00\x00\x01\x00\x35"
            stranger.sendto(header + b"stranger", client)
            relay.sendto(b"\x00\x00\x01\x01\x0a\x00\x00\x01\x00\x35fragment", client)
            relay.sendto(b"\x01\x00\x00\x01", client)
            relay.sendto(header + b"good", client)
            assert await asyncio.wait_for(association.recvfrom(), 5) == (b"good", Address("10.0.0.1", 53))
            done.set()  # the proxy closes the control connection: the association ends
            with pytest.raises(ProxyConnectionError):
                await asyncio.wait_for(association.recvfrom(), 5)
            await association.aclose()
            with pytest.raises(ProxyConnectionError):
                await association.sendto(b"late", ("name.test", 53))
    finally:
        done.set()
        relay.close()
        stranger.close()


def test_module_exports_only_the_asyncio_runners_names() -> None:
    # The public module is a facade over the runner modules in adapters/client/.
    for name in aio_adapter.__all__:
        assert getattr(aio_adapter, name).__module__.startswith("socks_sansio.adapters.client.asyncio")


def test_no_leaked_threads_from_servers() -> None:
    server = ThreadedServer(echo)
    server.close()
    assert not any(t.is_alive() for t in server._threads)


@aio
async def test_bad_remote_frame_is_a_remote_protocol_error() -> None:
    def oversized(conn: socket.socket) -> None:
        conn.sendall(b"\xff\xff\xff\xff")
        conn.recv(1)

    async with (
        aserve(socks5_script([], after=oversized)) as proxy,
        await open_tunnel("example.test", 1, proxy=f"socks5h://127.0.0.1:{proxy.port}") as tunnel,
    ):
        with pytest.raises(RemoteProtocolError):
            await tunnel.receive_frame()


@aio
async def test_deadline_covers_the_tls_handshake_with_a_proxy(tls_files: TLSFiles) -> None:
    closed = threading.Event()

    def silent(conn: socket.socket) -> None:  # takes the ClientHello, never answers
        with contextlib.suppress(OSError):
            while conn.recv(65536):
                pass
        closed.set()

    async with aserve(silent) as proxy:
        with pytest.raises(ProxyTimeoutError, match="TLS handshake with the proxy"):
            await open_connection(
                "example.test", 443, proxy=f"https://127.0.0.1:{proxy.port}",
                proxy_ssl=tls_files.client_context(), timeout=0.5,
            )  # fmt: skip
        assert await asyncio.to_thread(closed.wait, 5)


@aio
async def test_direct_tls_connection(tls_files: TLSFiles) -> None:
    async with aserve(tls_echo(tls_files)) as target:
        tunnel = await open_tunnel("localhost", target.port, ssl=tls_files.client_context(), timeout=5)
        async with tunnel:
            assert await roundtrip(tunnel.reader, tunnel.writer) == b"ping"
            assert tunnel.info.proxies == ()
            assert tunnel.info.protocol is None
            with pytest.raises(NotImplementedError):
                await tunnel.send_eof()

"""The asyncio server's splice() relay (adapters/_splice.py) end to end, over real loopback sockets.

Strategy. The real :class:`ProxyServer` runs in process (:class:`InProcessProxy`,
its own loop in a thread), so ``server.spliced`` (tunnels relayed with splice)
proves which relay ran, ``/proc/self/fd`` counts the server's descriptors too,
and the per-tunnel log line is captured with ``caplog``. Clients are blocking
sockets with the conftest's raw SOCKS5 / HTTP encoders; targets are
:class:`ThreadedServer` handlers. Early bytes are made deterministic by holding
the relay's start until the target's banner (and EOF) reached the server, as
``test_server_internals`` does. The copying path is checked the same way
(``spliced == 0``) for ``splice=False``, a TLS listener, an ``https://``
upstream and a byte rate limit, and the CLI switch through a subprocess's log.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from socks_sansio import Rate, RateLimitConfig, ServerConfig, parse_upstream
from socks_sansio.adapters.cli.serve import config_from_argv
from socks_sansio.adapters.server import asyncio_client as asyncio_server
from socks_sansio.adapters.server.asyncio_relay import Pending
from tests.adapters.servers import TLSFiles, echo, recv_exactly, serve

from .conftest import (
    HOST,
    TIMEOUT,
    InProcessProxy,
    ProxyFactory,
    connect,
    http_connect_request,
    http_status,
    read_http_head,
    read_socks5_reply,
    read_until_eof,
    socks5_greeting,
    socks5_open,
    socks5_request,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="splice() is Linux-only")

MIB = 1 << 20
TUNNEL_LINE = re.compile(r" up=(\d+) down=(\d+) time=\S+ outcome=(.+)$")


# ------------------------------------------------------------------ helpers


def socks5_tunnel(proxy: InProcessProxy, target: tuple[str, int], first: bytes = b"") -> socket.socket:
    """A SOCKS5 CONNECT tunnel; *first* goes in the same segment as the request."""
    sock = connect(proxy.address)
    sock.sendall(socks5_greeting())
    assert recv_exactly(sock, 2) == b"\x05\x00"
    sock.sendall(socks5_request(1, *target) + first)
    rep, _ = read_socks5_reply(sock)
    assert rep == 0, f"CONNECT refused with REP {rep}"
    return sock


def tunnel_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, int, str]]:
    """``(up, down, outcome)`` of every per-tunnel log line so far."""
    found = []
    for record in caplog.records:
        match = TUNNEL_LINE.search(record.getMessage())
        if record.name == "socks_sansio.server" and match:
            found.append((int(match[1]), int(match[2]), match[3]))
    return found


def ended(proxy: InProcessProxy, count: int = 1) -> dict[str, Any]:
    """Wait (bounded) until *count* connections ended and none is active; return the counters."""

    def check(stats: dict[str, Any]) -> bool:
        return bool(stats["active"] == 0 and sum(stats["tunnels"].values()) + sum(stats["failures"].values()) >= count)

    return proxy.wait_stats(check)


def send_then_eof(sock: socket.socket, data: bytes) -> threading.Thread:
    """Send *data* then half-close, from a thread (started; join it)."""

    def run() -> None:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def pool_fds(proxy: InProcessProxy) -> set[str]:
    """The descriptors of the empty pipes the server's pool keeps for reuse (read on its loop)."""

    async def read() -> set[str]:
        pipes = proxy.server.pipes
        assert pipes is not None
        return {str(fd) for pipe in pipes.idle for fd in pipe[:2]}

    return proxy.call(read())


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO, logger="socks_sansio.server"):
        yield caplog


@pytest.fixture
def spliced_proxy(in_process_proxy: Callable[..., InProcessProxy]) -> InProcessProxy:
    """A server that splices every tunnel from the start (``splice_after=0``), early bytes included."""
    proxy = in_process_proxy(splice_after=0)
    assert proxy.server.pipes is not None, "splice should be on by default on Linux"
    return proxy


class Exchange:
    """A target that sends *down* (then half-closes) while it reads everything the client sends until EOF."""

    def __init__(self, down: bytes, *, banner: bytes = b"") -> None:
        self.down, self.banner = down, banner
        self.received: list[bytes] = []

    def __call__(self, conn: socket.socket) -> None:
        if self.banner:
            conn.sendall(self.banner)
        sender = send_then_eof(conn, self.down)
        self.received.append(read_until_eof(conn, limit=1 << 30))
        sender.join(TIMEOUT)


# ------------------------------------------------------------------ the spliced relay


def test_several_mebibytes_both_ways_byte_for_byte(
    spliced_proxy: InProcessProxy, logs: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(8)
    up, down = rng.randbytes(6 * MIB + 12345), rng.randbytes(5 * MIB + 678)
    target = Exchange(down)
    with serve(target) as server, socks5_tunnel(spliced_proxy, server.address) as sock:
        sender = send_then_eof(sock, up)
        received = read_until_eof(sock, limit=1 << 30)
        sender.join(TIMEOUT)
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(down).hexdigest() and received == down
    assert target.received == [up]
    stats = ended(spliced_proxy)
    assert stats["tunnels"] == {"socks5": 1} and not stats["failures"]
    assert (stats["bytes_up"], stats["bytes_down"]) == (len(up), len(down))
    assert spliced_proxy.server.spliced == 1
    assert tunnel_lines(logs) == [(len(up), len(down), "ok")]


def test_early_bytes_and_eofs_from_both_sides(
    spliced_proxy: InProcessProxy, logs: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The target's banner and EOF, and the client's pipelined bytes, all reach the server before the relay."""
    start_relay = asyncio_server.Client._start_relay
    held: list[tuple[bytes, bool]] = []

    def delayed(
        self: asyncio_server.Client, upstream: Any, pending: Pending, early: bytes, client_eof: bool
    ) -> None:
        if pending.eof or len(held) > 2000:  # bounded: about 10 s
            held.append((bytes(pending.data), pending.eof))
            start_relay(self, upstream, pending, early, client_eof)
        else:
            held.append((b"", False))
            self.loop.call_later(0.005, delayed, self, upstream, pending, early, client_eof)

    monkeypatch.setattr(asyncio_server.Client, "_start_relay", delayed)
    banner, pipelined, later = b"220 target ready\r\n", b"pipelined with the request", b"and sent later"
    target = Exchange(b"", banner=banner)
    with serve(target) as server, socks5_tunnel(spliced_proxy, server.address, pipelined) as sock:
        assert read_until_eof(sock) == banner, "the banner, then the target's EOF"
        sock.sendall(later)  # the other direction still flows
        sock.shutdown(socket.SHUT_WR)
        stats = ended(spliced_proxy)
    assert held[-1] == (banner, True), "the banner and EOF really arrived before the relay started"
    assert target.received == [pipelined + later]
    assert spliced_proxy.server.spliced == 1
    assert (stats["bytes_up"], stats["bytes_down"]) == (len(pipelined + later), len(banner))
    assert tunnel_lines(logs) == [(len(pipelined + later), len(banner), "ok")]


def test_http_connect_with_a_pipelined_request_and_a_banner(
    spliced_proxy: InProcessProxy, logs: pytest.LogCaptureFixture
) -> None:
    """HTTP CONNECT whose head and first bytes share a segment; the target greets on accept (race-free either way)."""
    banner, pipelined = b"SSH-2.0-target\r\n", b"GET / HTTP/1.0\r\n\r\n"
    down = random.Random(1).randbytes(MIB)
    target = Exchange(down, banner=banner)
    with serve(target) as server, connect(spliced_proxy.address) as sock:
        authority = f"{HOST}:{server.port}"
        sock.sendall(http_connect_request(authority) + pipelined)
        assert http_status(read_http_head(sock)) == 200
        sock.shutdown(socket.SHUT_WR)
        assert read_until_eof(sock) == banner + down
    assert target.received == [pipelined]
    ended(spliced_proxy)
    assert spliced_proxy.server.spliced == 1
    assert tunnel_lines(logs) == [(len(pipelined), len(banner) + len(down), "ok")]


def test_half_close_from_the_client(spliced_proxy: InProcessProxy, logs: pytest.LogCaptureFixture) -> None:
    """The client's EOF reaches the target, whose answer (sent only after that EOF) still comes back whole."""
    answer = random.Random(2).randbytes(3 * MIB)

    def handler(conn: socket.socket) -> None:
        request = read_until_eof(conn)
        conn.sendall(hashlib.sha256(request).digest() + answer)

    request = b"the whole request" * 1000
    with serve(handler) as server, socks5_tunnel(spliced_proxy, server.address) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        assert read_until_eof(sock) == hashlib.sha256(request).digest() + answer
    ended(spliced_proxy)
    assert spliced_proxy.server.spliced == 1
    assert tunnel_lines(logs) == [(len(request), 32 + len(answer), "ok")]


def test_half_close_from_the_target(spliced_proxy: InProcessProxy, logs: pytest.LogCaptureFixture) -> None:
    """The target's EOF reaches the client, which then still uploads to the target."""
    upload = random.Random(3).randbytes(2 * MIB)
    got: list[bytes] = []

    def handler(conn: socket.socket) -> None:
        conn.sendall(b"go ahead")
        conn.shutdown(socket.SHUT_WR)
        got.append(read_until_eof(conn, limit=1 << 30))

    with serve(handler) as server, socks5_tunnel(spliced_proxy, server.address) as sock:
        assert read_until_eof(sock) == b"go ahead"
        sock.sendall(upload)
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b""
    assert got == [upload]
    ended(spliced_proxy)
    assert spliced_proxy.server.spliced == 1
    assert tunnel_lines(logs) == [(len(upload), len(b"go ahead"), "ok")]


def test_idle_timeout_closes_a_silent_spliced_tunnel(
    in_process_proxy: Callable[..., InProcessProxy], logs: pytest.LogCaptureFixture
) -> None:
    proxy = in_process_proxy(idle_timeout=1.0, splice_after=0)
    target_saw_eof = threading.Event()

    def handler(conn: socket.socket) -> None:
        echo(conn)  # until the proxy closes its side
        target_saw_eof.set()

    with serve(handler) as server, socks5_tunnel(proxy, server.address) as sock:
        sock.sendall(b"ping")
        assert recv_exactly(sock, 4) == b"ping"
        assert sock.recv(1) == b"", "closed once silent for idle_timeout (bounded by the socket time-out)"
        assert target_saw_eof.wait(TIMEOUT)
    ended(proxy)
    assert proxy.server.spliced == 1
    assert tunnel_lines(logs) == [(4, 4, "idle timeout")]


@pytest.mark.parametrize("direction", ["download", "upload"])
def test_client_reset_mid_transfer_leaks_no_descriptor(
    spliced_proxy: InProcessProxy, logs: pytest.LogCaptureFixture, direction: str
) -> None:
    before = open_fds()
    chunk = random.Random(4).randbytes(256 * 1024)
    started = threading.Event()

    def handler(conn: socket.socket) -> None:
        if direction == "download":
            for _ in range(4096):  # at most 1 GiB; ends with an error once the proxy closes the tunnel
                conn.sendall(chunk)
        else:
            while conn.recv(1 << 16):
                started.set()

    with serve(handler) as server:
        sock = socks5_tunnel(spliced_proxy, server.address)
        try:
            if direction == "download":
                assert len(recv_exactly(sock, 3 * MIB)) == 3 * MIB
            else:
                sock.sendall(chunk * 8)
                assert started.wait(TIMEOUT)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # close with an RST
        finally:
            sock.close()
        stats = ended(spliced_proxy)
    assert spliced_proxy.server.spliced == 1
    assert not stats["tunnels"] and sum(stats["failures"].values()) == 1
    [(up, down, outcome)] = tunnel_lines(logs)
    assert outcome.startswith("relay error: "), outcome
    if direction == "download":
        assert down >= 3 * MIB
    else:
        assert up > 0
    assert pool_fds(spliced_proxy) == set(), "no tunnel left: the pool closed its idle pipes"
    after = open_fds()
    assert after == before, f"descriptors left open: {sorted(after - before)}"


def test_many_tunnels_at_once_share_the_pool(spliced_proxy: InProcessProxy, logs: pytest.LogCaptureFixture) -> None:
    payloads = [random.Random(10 + i).randbytes(256 * 1024 + i) for i in range(8)]
    results: list[bytes | None] = [None] * len(payloads)

    def one(index: int, port: int) -> None:
        with socks5_tunnel(spliced_proxy, (HOST, port)) as sock:
            sender = send_then_eof(sock, payloads[index])
            results[index] = read_until_eof(sock)
            sender.join(TIMEOUT)

    with serve(echo) as server:
        threads = [threading.Thread(target=one, args=(i, server.port), daemon=True) for i in range(len(payloads))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT * 2)
    assert results == payloads
    ended(spliced_proxy, len(payloads))
    assert spliced_proxy.server.spliced == len(payloads)
    assert sorted(tunnel_lines(logs)) == sorted((len(p), len(p), "ok") for p in payloads)
    assert pool_fds(spliced_proxy) == set(), "no tunnel left: the pool closed its idle pipes"


# ------------------------------------------------------------------ moving to splice midway (the default)


def test_default_server_copies_a_short_tunnel(in_process_proxy: Callable[..., InProcessProxy]) -> None:
    proxy = in_process_proxy()
    assert proxy.server.config.splice_after == 256 * 1024
    with serve(echo) as server, connect(proxy.address) as sock:
        copy_through(proxy, sock, server.port)  # 100 kB each way: under the threshold
    ended(proxy)
    assert proxy.server.spliced == 0


@pytest.mark.parametrize("eof_first", ["client", "target"])
def test_bulk_tunnel_moves_to_splice_midway(
    in_process_proxy: Callable[..., InProcessProxy], logs: pytest.LogCaptureFixture, eof_first: str
) -> None:
    """Past splice_after the copying relay hands over: every byte arrives once, in order, counted once."""
    proxy = in_process_proxy(splice_after=64 * 1024)
    rng = random.Random(11)
    up, down = rng.randbytes(3 * MIB + 7), rng.randbytes(2 * MIB + 3)
    if eof_first == "client":
        target = Exchange(down)
        with serve(target) as server, socks5_tunnel(proxy, server.address, first=up[:1000]) as sock:
            sender = send_then_eof(sock, up[1000:])
            received = read_until_eof(sock, limit=1 << 30)
            sender.join(TIMEOUT)
        assert target.received == [up]
        assert received == down
    else:
        head = 512 * 1024  # crosses the threshold (the switch happens here), before any EOF

        def target_closes_first(conn: socket.socket) -> None:
            first = recv_exactly(conn, head)
            conn.sendall(down)
            conn.shutdown(socket.SHUT_WR)
            got.append(first + read_until_eof(conn, limit=1 << 30))

        got: list[bytes] = []
        with serve(target_closes_first) as server, socks5_tunnel(proxy, server.address) as sock:
            sock.sendall(up[:head])
            received = read_until_eof(sock, limit=1 << 30)  # the target's EOF came through
            sock.sendall(up[head:])  # the other direction still flows
            sock.shutdown(socket.SHUT_WR)
        assert received == down
        assert got == [up]
    stats = ended(proxy)
    assert proxy.server.spliced == 1, "the bulk tunnel moved to splice"
    assert tunnel_lines(logs) == [(len(up), len(down), "ok")]
    assert (stats["bytes_up"], stats["bytes_down"]) == (len(up), len(down))


def test_idle_bulk_tunnel_times_out_after_the_switch(in_process_proxy: Callable[..., InProcessProxy]) -> None:
    proxy = in_process_proxy(splice_after=1024, idle_timeout=0.5)
    with serve(echo) as server, connect(proxy.address) as sock:
        copy_through(proxy, sock, server.port)  # 100 kB each way: well past the threshold
        assert read_until_eof(sock) == b"", "closed by the idle time-out"
    ended(proxy)
    assert proxy.server.spliced == 1
    assert proxy.stats()["failures"].get("idle timeout") == 1


# ------------------------------------------------------------------ the copying path


def copy_through(proxy: InProcessProxy, sock: socket.socket | ssl.SSLSocket, port: int) -> None:
    """CONNECT to the echo target on *port* over *sock* and check a round trip."""
    rep, _ = socks5_open(sock, 1, HOST, port)
    assert rep == 0
    payload = random.Random(5).randbytes(100_000)
    sock.sendall(payload)
    assert recv_exactly(sock, len(payload)) == payload


def test_splice_off_copies(in_process_proxy: Callable[..., InProcessProxy]) -> None:
    proxy = in_process_proxy(splice=False)
    assert proxy.server.pipes is None
    with serve(echo) as server, connect(proxy.address) as sock:
        copy_through(proxy, sock, server.port)
    ended(proxy)
    assert proxy.server.spliced == 0


def test_byte_rate_limits_keep_the_copying_relay(in_process_proxy: Callable[..., InProcessProxy]) -> None:
    proxy = in_process_proxy(rate_limits=RateLimitConfig(bytes_per_client=Rate(1 << 30)))
    assert proxy.server.pipes is None
    with serve(echo) as server, connect(proxy.address) as sock:
        copy_through(proxy, sock, server.port)
    ended(proxy)
    assert proxy.server.spliced == 0


def test_tunnel_rate_limits_alone_still_splice(in_process_proxy: Callable[..., InProcessProxy]) -> None:
    proxy = in_process_proxy(rate_limits=RateLimitConfig(tunnels_per_client=Rate(1000)), splice_after=0)
    with serve(echo) as server, connect(proxy.address) as sock:
        copy_through(proxy, sock, server.port)
    ended(proxy)
    assert proxy.server.spliced == 1


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The test CA and a certificate for 127.0.0.1, as PEM files."""
    files = TLSFiles()
    directory = tmp_path_factory.mktemp("tls")
    ca, cert, key = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    files.ca.cert_pem.write_to_path(str(ca))
    files.cert.cert_chain_pems[0].write_to_path(str(cert))
    for extra in files.cert.cert_chain_pems[1:]:
        extra.write_to_path(str(cert), append=True)
    files.cert.private_key_pem.write_to_path(str(key))
    return {"files": files, "ca": str(ca), "cert": str(cert), "key": str(key)}


def test_tls_listener_and_tls_upstream_copy(
    in_process_proxy: Callable[..., InProcessProxy], tls: dict[str, Any]
) -> None:
    """A TLS client side, and a plain client whose upstream is ``https://``: both copy; a plain hop splices."""
    remote = in_process_proxy(
        listen=(), tls_listen=((HOST, 0),), tls_cert=tls["cert"], tls_key=tls["key"], splice_after=0
    )
    local = in_process_proxy(
        upstreams=(parse_upstream(f"https://{HOST}:{remote.address[1]}"),), upstream_cacert=tls["ca"], splice_after=0
    )
    files: TLSFiles = tls["files"]
    with serve(echo) as server:
        with files.client_context().wrap_socket(connect(remote.address), server_hostname=HOST) as tls_sock:
            copy_through(remote, tls_sock, server.port)
        ended(remote)
        assert remote.server.pipes is not None and remote.server.spliced == 0, "TLS on the client side copies"
        with connect(local.address) as sock:
            copy_through(local, sock, server.port)
        ended(local)
        assert local.server.spliced == 0, "an https:// upstream copies"
        ended(remote, 2)
        assert remote.server.spliced == 0
        plain_upstream = in_process_proxy(splice_after=0)
        via_plain = in_process_proxy(
            upstreams=(parse_upstream(f"socks5://{HOST}:{plain_upstream.address[1]}"),), splice_after=0
        )
        with connect(via_plain.address) as sock:
            copy_through(via_plain, sock, server.port)
        ended(via_plain)
        ended(plain_upstream)
        assert (via_plain.server.spliced, plain_upstream.server.spliced) == (1, 1), "plain TCP upstreams splice"


# ------------------------------------------------------------------ the switch


def serve_config(*argv: str) -> ServerConfig:
    return config_from_argv(argv)


def test_no_splice_flag_and_config_key(tmp_path: Path) -> None:
    assert serve_config().splice is True
    assert serve_config("--no-splice").splice is False
    toml = tmp_path / "proxy.toml"
    toml.write_text("splice = false\n")
    assert serve_config("--config", str(toml)).splice is False
    toml.write_text('splice = "no"\n')
    with pytest.raises(ValueError, match=r"'splice' must be true or false"):
        serve_config("--config", str(toml))


def test_serve_logs_which_relay_it_uses(any_proxies: ProxyFactory) -> None:
    spliced = any_proxies(backend="asyncio")
    copying = any_proxies("--no-splice", backend="asyncio")
    limited = any_proxies("--rate-bytes-per-client", "1M", backend="asyncio")
    assert "relay: splice()" in spliced.wait_log("relay: ")
    for process in (copying, limited):
        assert "relay: copying" in process.wait_log("relay: ")
    with serve(echo) as server:
        for process in (spliced, copying):
            with connect(process.address) as sock:
                rep, _ = socks5_open(sock, 1, HOST, server.port)
                assert rep == 0
                sock.sendall(b"hello")
                assert recv_exactly(sock, 5) == b"hello"
            process.wait_log("outcome=ok")

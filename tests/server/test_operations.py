"""Rate limits and Prometheus metrics in both proxy servers, end to end over loopback (issue 7).

Each test runs the real server of one backend (``asyncio`` or ``trio``) in a
thread of this process on 127.0.0.1 port 0, with its metrics endpoint on port 0
too, and talks to it with the raw clients of ``conftest`` from blocking
sockets: tunnel bursts must be refused with the protocol's "rate limited"
reply while an exempt user and another client address go on; a byte limit
must slow one transfer (a lower bound on its time, and the limiter's counter)
while an unlimited one finishes first; the metrics are scraped over HTTP and
parsed with prometheus_client's own parser. The last test runs
``socks-sansio serve`` as a subprocess with the rate and metrics flags.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import re
import socket
import threading
import time
import types
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from socks_sansio import (
    AccessPolicy,
    AccessRule,
    Rate,
    RateLimitConfig,
    RateLimits,
    ServerConfig,
    ServerSession,
    ServerStats,
    UserDatabase,
)
from socks_sansio.adapters.server.asyncio_relay import RelaySide as _RelaySide
from socks_sansio.adapters.server.metrics import NullMetrics
from socks_sansio.adapters.server.trio import TrioProxyServer
from tests.adapters.servers import ThreadedServer, echo_server, recv_exactly, serve

from .conftest import (
    HOST,
    TIMEOUT,
    UDP_TIMEOUT,
    InProcessProxy,
    ProxyFactory,
    counting_udp_echo,
    http_connect_request,
    http_status,
    parse_udp,
    poll,
    read_http_head,
    read_socks4_reply,
    read_socks5_reply,
    read_until_eof,
    rfc1929_request,
    socks4_request,
    socks5_greeting,
    socks5_open,
    socks5_request,
    udp_header,
)

CONNECT = 1
OTHER_CLIENT = "127.0.0.2"  # another client address on the loopback network (Linux routes all of 127/8)
USERS = UserDatabase({"alice": "pw-a", "bob": "pw-b", "carol": "pw-c"})
PASSWORDS = {"alice": "pw-a", "bob": "pw-b", "carol": "pw-c"}
NEVER_REFILLS = 0.001  # tokens a second: nothing refills during a test
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# ------------------------------------------------------------------ servers in this process


class TrioInThread:
    """A :class:`TrioProxyServer` served by ``trio.run`` in a thread; :meth:`close` shuts it down gracefully."""

    def __init__(self, config: ServerConfig) -> None:
        self.server = TrioProxyServer(config)
        self._token: trio.lowlevel.TrioToken | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="trio-proxy", daemon=True)
        self.thread.start()
        if not self._ready.wait(TIMEOUT):
            raise AssertionError("the trio server did not start")
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            async with trio.open_nursery() as nursery:
                await nursery.start(self.server.serve)
                self._ready.set()

        try:
            trio.run(main)
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    def close(self) -> None:
        if self._token is not None and self.thread.is_alive():
            trio.from_thread.run(self.server.shutdown, 2.0, trio_token=self._token)
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "the trio server did not stop"
        if self._error is not None:
            raise self._error


class Running:
    """One server of either backend, with what the tests need to reach it."""

    def __init__(self, backend: str, config: ServerConfig) -> None:
        self.backend = backend
        self.runner: InProcessProxy | TrioInThread = (
            InProcessProxy(config) if backend == "asyncio" else TrioInThread(config)
        )
        self.server: Any = self.runner.server

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.addresses[0]
        return str(host), int(port)

    @property
    def metrics_address(self) -> tuple[str, int]:
        address = self.server.metrics_address
        assert address is not None, "no metrics endpoint"
        return (str(address[0]), int(address[1]))

    def connect(self, source: str = HOST) -> socket.socket:
        """A client connection from *source* (another loopback address is another client)."""
        return socket.create_connection(self.address, timeout=TIMEOUT, source_address=(source, 0))

    def close(self) -> None:
        self.runner.close()


@pytest.fixture
def start_server(backend: str) -> Iterator[Callable[..., Running]]:
    """``start_server(**ServerConfig fields)``: the parametrized backend on 127.0.0.1:0, metrics on port 0."""
    running: list[Running] = []

    def start(**fields: Any) -> Running:
        fields.setdefault("listen", ((HOST, 0),))
        fields.setdefault("metrics_listen", (HOST, 0))
        server = Running(backend, ServerConfig(**fields))
        running.append(server)
        return server

    try:
        yield start
    finally:
        errors = []
        for server in running:
            try:
                server.close()
            except BaseException as exc:  # close every server, then report
                errors.append(exc)
        if errors:
            raise errors[0]


def scrape(address: tuple[str, int]) -> Samples:
    """Every sample of ``/metrics`` as ``{(name, sorted labels): value}``, parsed as Prometheus would."""
    with urllib.request.urlopen(f"http://{address[0]}:{address[1]}/metrics", timeout=TIMEOUT) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the labelled child does not exist yet."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_connections(server: Running, count: int) -> Samples:
    """Scrape until *count* connections have ended (each counts once in ``socks_sansio_tunnels_total``)."""

    def check() -> Samples | None:
        samples = scrape(server.metrics_address)
        ended = sum(value for (name, _), value in samples.items() if name == "socks_sansio_tunnels_total")
        return samples if ended >= count else None

    return poll(check, f"{count} connections to end")


# ------------------------------------------------------------------ targets


@pytest.fixture
def echo() -> Iterator[ThreadedServer]:
    with echo_server() as server:
        yield server


def payload(size: int) -> bytes:
    """*size* deterministic pseudo-random octets (a shifted or repeated chunk would show)."""
    blocks = (hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(size // 32 + 1))
    return b"".join(blocks)[:size]


@contextlib.contextmanager
def source_server(data: bytes) -> Iterator[ThreadedServer]:
    """A target that sends *data* to every connection at once, then closes."""

    def send(conn: socket.socket) -> None:
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            conn.recv(1)  # until the proxy closes its side

    with serve(send) as server:
        server.listener.settimeout(0.02)
        yield server


# ------------------------------------------------------------------ raw client steps


def basic(user: str) -> str:
    return base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()


def open_tunnel(server: Running, protocol: str, target: int, *, user: str | None = None,
                source: str = HOST) -> tuple[socket.socket, int, bytes]:
    """Ask for a CONNECT to 127.0.0.1:*target*; ``(socket, code, reply head)``.

    *code* is the SOCKS5 REP, the SOCKS4 CD or the HTTP status; the socket is open
    (the caller closes it) and, on success, is the tunnel.
    """
    sock = server.connect(source)
    try:
        if protocol == "socks5":
            code, _ = socks5_open(sock, CONNECT, HOST, target, user=user,
                                  password=PASSWORDS[user] if user else None)
            return sock, code, b""
        if protocol == "socks4":
            sock.sendall(socks4_request(CONNECT, HOST, target, user.encode() if user else b""))
            code, _ = read_socks4_reply(sock)
            return sock, code, b""
        sock.sendall(http_connect_request(f"{HOST}:{target}", basic=basic(user) if user else None))
        head = read_http_head(sock)
        return sock, http_status(head), head
    except BaseException:
        sock.close()
        raise


SUCCESS = {"socks5": 0, "socks4": 90, "http": 200}
RATE_LIMITED = {"socks5": 2, "socks4": 91, "http": 429}


def assert_rate_limited(protocol: str, sock: socket.socket, code: int, head: bytes) -> None:
    """The refusal is the protocol's "rate limited" reply, and the server then closes."""
    assert code == RATE_LIMITED[protocol], (protocol, code, head)
    if protocol == "http":
        match = re.search(rb"\r\nRetry-After: (\d+)\r\n", head)
        assert match, head
        assert int(match[1]) >= 1  # whole seconds, rounded up from the limiter's wait
    else:
        assert read_until_eof(sock) == b"", "nothing follows a SOCKS refusal"


def assert_echoes(sock: socket.socket, data: bytes = b"ping through the tunnel") -> None:
    sock.sendall(data)
    assert recv_exactly(sock, len(data)) == data


# ------------------------------------------------------------------ tunnels a second


@pytest.mark.parametrize("protocol", ["socks5", "http"])
def test_a_user_over_the_tunnel_rate_is_refused_while_an_exempt_user_goes_on(
    start_server: Callable[..., Running], echo: ThreadedServer, protocol: str
) -> None:
    burst = 3
    server = start_server(
        users=USERS,
        rate_limits=RateLimitConfig(tunnels_per_user=Rate(NEVER_REFILLS, burst), exempt_users=["carol"]),
    )
    opened: list[socket.socket] = []
    try:
        for attempt in range(burst + 2):
            sock, code, head = open_tunnel(server, protocol, echo.port, user="alice")
            opened.append(sock)
            if attempt < burst:
                assert code == SUCCESS[protocol], (attempt, code, head)
                assert_echoes(sock)
            else:
                assert_rate_limited(protocol, sock, code, head)
            # The exempt user, at the same time from the same address: never limited.
            sock, code, head = open_tunnel(server, protocol, echo.port, user="carol")
            opened.append(sock)
            assert code == SUCCESS[protocol], (attempt, code, head)
            assert_echoes(sock)
        # Another limited user has a bucket of its own.
        sock, code, head = open_tunnel(server, protocol, echo.port, user="bob")
        opened.append(sock)
        assert code == SUCCESS[protocol], head
    finally:
        for sock in opened:
            sock.close()
    samples = wait_connections(server, 2 * (burst + 2) + 1)
    assert sample(samples, "socks_sansio_rate_limited_total", kind="tunnels") == 2
    assert sample(samples, "socks_sansio_tunnels_total", protocol=protocol, outcome="rate limited") == 2
    assert sample(samples, "socks_sansio_tunnels_total", protocol=protocol, outcome="ok") == 2 * burst + 2 + 1


@pytest.mark.parametrize("protocol", ["socks5", "socks4", "http"])
def test_a_client_address_over_the_tunnel_rate_is_refused_while_another_goes_on(
    start_server: Callable[..., Running], echo: ThreadedServer, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="socks_sansio.server")
    burst = 2
    server = start_server(rate_limits=RateLimitConfig(tunnels_per_client=Rate(NEVER_REFILLS, burst)))
    opened: list[socket.socket] = []
    try:
        for attempt in range(burst + 2):
            sock, code, head = open_tunnel(server, protocol, echo.port)
            opened.append(sock)
            if attempt < burst:
                assert code == SUCCESS[protocol], (attempt, code, head)
                assert_echoes(sock)
            else:
                assert_rate_limited(protocol, sock, code, head)
            if attempt < burst:  # the other address has a burst of its own, spent at the same time
                sock, code, head = open_tunnel(server, protocol, echo.port, source=OTHER_CLIENT)
                opened.append(sock)
                assert code == SUCCESS[protocol], (attempt, code, head)
                assert_echoes(sock)
        sock, code, head = open_tunnel(server, protocol, echo.port, source=OTHER_CLIENT)
        opened.append(sock)
        assert_rate_limited(protocol, sock, code, head)
    finally:
        for sock in opened:
            sock.close()
    samples = wait_connections(server, 2 * burst + 3)
    assert sample(samples, "socks_sansio_rate_limited_total", kind="tunnels") == 3
    lines = [r.getMessage() for r in caplog.records if r.name == "socks_sansio.server" and "outcome=" in r.getMessage()]
    assert len(lines) == 2 * burst + 3, lines  # one line per connection, refused ones included
    limited = [line for line in lines if line.endswith("outcome=rate limited")]
    assert len(limited) == 3, lines
    assert sum(line.startswith(f"{OTHER_CLIENT}:") for line in limited) == 1


# ------------------------------------------------------------------ bytes a second


def download(server: Running, target: int, user: str, size: int, done: dict[str, float]) -> bytes:
    """Receive everything the source target sends through a SOCKS5 tunnel as *user*; note when it ended."""
    sock, code, _ = open_tunnel(server, "socks5", target, user=user)
    with sock:
        assert code == 0
        sock.settimeout(30.0)
        data = read_until_eof(sock, limit=size + 1)
    done[user] = time.monotonic()
    return data


def test_a_byte_limit_slows_one_users_transfer_and_not_anothers(start_server: Callable[..., Running]) -> None:
    size, rate = 256 * 1024, 64 * 1024
    chunk = 16 * 1024  # buffer_size: the most one read moves before the limiter can pause it
    server = start_server(
        users=USERS,
        buffer_size=chunk,
        rate_limits=RateLimitConfig(bytes_per_user=Rate(rate, rate), exempt_users=["carol"]),
    )
    data = payload(size)
    done: dict[str, float] = {}
    results: dict[str, bytes] = {}
    errors: list[BaseException] = []

    def run(user: str) -> None:
        try:
            results[user] = download(server, target.port, user, size, done)
        except BaseException as exc:
            errors.append(exc)

    with source_server(data) as target:
        started = time.monotonic()
        limited = threading.Thread(target=run, args=("alice",))
        limited.start()
        free = threading.Thread(target=run, args=("carol",))
        free.start()
        free.join(30.0)
        limited.join(60.0)
    assert not errors, errors
    assert results["alice"] == data, "the throttled transfer is not byte for byte"
    assert results["carol"] == data
    # The unlimited transfer ended while the throttled one was still running.
    assert done["carol"] < done["alice"]
    # A lower bound only: 64 KiB/s with a 64 KiB burst cannot deliver 256 KiB sooner.
    assert done["alice"] - started >= (size - rate) / rate * 0.8
    samples = wait_connections(server, 2)
    assert sample(samples, "socks_sansio_rate_limited_total", kind="bytes") >= 1
    assert sample(samples, "socks_sansio_bytes_total", direction="down") == 2 * size


def test_a_throttled_tunnel_is_not_closed_as_idle(start_server: Callable[..., Running], echo: ThreadedServer) -> None:
    """A pause longer than the idle time-out is not idleness: the tunnel stays up and delivers everything."""
    size = 32 * 1024
    server = start_server(
        buffer_size=16 * 1024,
        idle_timeout=0.5,
        rate_limits=RateLimitConfig(bytes_per_client=Rate(16 * 1024, 16 * 1024)),
    )
    data = payload(size)
    sock, code, _ = open_tunnel(server, "socks5", echo.port)
    with sock:
        assert code == 0
        sock.sendall(data)
        received = bytearray()
        while len(received) < size:  # (2 * size - burst) / rate = 3 s of pauses, most over the idle time-out
            chunk = sock.recv(65536)
            assert chunk, f"closed after {len(received)} of {size} octets"
            received += chunk
        assert bytes(received) == data
    samples = wait_connections(server, 1)
    assert sample(samples, "socks_sansio_tunnels_total", protocol="socks5", outcome="ok") == 1
    assert sample(samples, "socks_sansio_rate_limited_total", kind="bytes") >= 1


# ------------------------------------------------------------------ bytes a second, over UDP ASSOCIATE


UDP_ASSOCIATE = 3
DATAGRAM = 1024  # payload octets of each datagram


def udp_associate(server: Running, user: str, udp: socket.socket) -> tuple[socket.socket, tuple[str, int]]:
    """Log in as *user* and associate *udp* (bound already); ``(control connection, relay address)``."""
    control = server.connect()
    try:
        code, relay = socks5_open(control, UDP_ASSOCIATE, *udp.getsockname()[:2], user=user,
                                  password=PASSWORDS[user])
        assert code == 0, code
    except BaseException:
        control.close()
        raise
    return control, relay


def test_a_byte_limit_drops_a_users_datagrams_and_not_an_exempt_users(start_server: Callable[..., Running]) -> None:
    """A burst of datagrams over alice's association: what got through, both ways, fits burst + rate x time."""
    rate = burst = 16 * 1024
    sent = 128  # 128 KiB each way if nothing were dropped, eight times the burst
    server = start_server(
        users=USERS, rate_limits=RateLimitConfig(bytes_per_user=Rate(rate, burst), exempt_users=["carol"])
    )
    with contextlib.ExitStack() as stack:
        target, at_target = stack.enter_context(counting_udp_echo())
        header = udp_header(*target)
        sockets = {}
        relays = {}
        for user in ("alice", "carol"):
            udp = sockets[user] = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            udp.bind((HOST, 0))
            udp.settimeout(UDP_TIMEOUT)
            control, relays[user] = udp_associate(server, user, udp)
            stack.enter_context(control)

        # The exempt user, from the same address at the same time: every datagram comes back, in order.
        echoed: list[bytes] = []
        errors: list[BaseException] = []

        def exempt() -> None:
            try:
                for index in range(64):  # 64 KiB each way in well under a second: four times the burst
                    data = payload(DATAGRAM + index)[index:]
                    sockets["carol"].sendto(header + data, relays["carol"])
                    reply, _ = sockets["carol"].recvfrom(65535)
                    assert parse_udp(reply) == (target, data), index
                    echoed.append(data)
                    time.sleep(0.001)
            except BaseException as exc:
                errors.append(exc)

        carol = threading.Thread(target=exempt, name="exempt-udp")
        started = time.monotonic()
        carol.start()
        try:
            alice = sockets["alice"]
            for _ in range(sent):
                alice.sendto(header + payload(DATAGRAM), relays["alice"])
            alice.settimeout(0.3)  # the echoes of what was let through come back within this quiet spell
            back = 0
            with contextlib.suppress(TimeoutError):
                while back < sent:
                    reply, _ = alice.recvfrom(65535)
                    assert parse_udp(reply) == (target, payload(DATAGRAM))
                    back += 1
        finally:
            carol.join(30.0)
        forwarded = at_target[relays["alice"]]
        elapsed = time.monotonic() - started  # after the count: every admission it reflects came before
    assert not carol.is_alive() and not errors, errors
    assert len(echoed) == 64
    assert forwarded >= 1, "the burst lets the first datagrams through"
    # Both directions draw on alice's one bucket; two datagrams of slack for clocks read in other threads.
    assert (forwarded + back) * DATAGRAM <= burst + rate * elapsed + 2 * DATAGRAM, (forwarded, back, elapsed)
    dropped = server.server.stats.failures["udp rate limited"]
    assert dropped > 0
    samples = wait_connections(server, 2)
    # Every drop counts once in the metrics too (nothing else is rate limited here).
    assert sample(samples, "socks_sansio_rate_limited_total", kind="bytes") == server.server.stats.failures[
        "udp rate limited"
    ]
    assert sample(samples, "socks_sansio_bytes_total", direction="up") >= 64 * DATAGRAM


# ------------------------------------------------------------------ metrics


def test_metrics_count_tunnels_bytes_auth_failures_denials_and_handshakes(
    start_server: Callable[..., Running], echo: ThreadedServer
) -> None:
    denied_target = socket.socket()  # a listening port the rules deny (a dial would succeed otherwise)
    denied_target.bind((HOST, 0))
    denied_target.listen(1)
    denied_port = denied_target.getsockname()[1]
    server = start_server(
        users=USERS,
        policy=AccessPolicy(rules=(AccessRule.parse("deny", f"port={denied_port}"),)),
    )
    with denied_target:
        # A SOCKS5 tunnel, scraped while it is up.
        sock, code, _ = open_tunnel(server, "socks5", echo.port, user="alice")
        with sock:
            assert code == 0
            assert_echoes(sock, b"x" * 1000)
            during = scrape(server.metrics_address)
            assert sample(during, "socks_sansio_tunnels_active", protocol="socks5") == 1
        # An HTTP CONNECT tunnel.
        sock, code, head = open_tunnel(server, "http", echo.port, user="bob")
        with sock:
            assert code == 200, head
            assert_echoes(sock, b"y" * 500)
        # A wrong password.
        with server.connect() as sock:
            sock.sendall(socks5_greeting(auth=True) + rfc1929_request("alice", "wrong"))
            assert recv_exactly(sock, 2) == b"\x05\x02"
            assert recv_exactly(sock, 2) != b"\x01\x00"
        # A target the rules deny: REP 2 (not allowed).
        with server.connect() as sock:
            sock.sendall(socks5_greeting(auth=True) + rfc1929_request("alice", "pw-a"))
            assert recv_exactly(sock, 4) == b"\x05\x02\x01\x00"
            sock.sendall(socks5_request(CONNECT, HOST, denied_port))
            code, _ = read_socks5_reply(sock)
            assert code == 2
        samples = wait_connections(server, 4)
    assert sample(samples, "socks_sansio_tunnels_total", protocol="socks5", outcome="ok") == 1
    assert sample(samples, "socks_sansio_tunnels_total", protocol="http", outcome="ok") == 1
    assert sample(samples, "socks_sansio_tunnels_total", protocol="socks5", outcome="authentication failed") == 1
    assert sample(samples, "socks_sansio_tunnels_total", protocol="socks5", outcome="denied") == 1
    assert sample(samples, "socks_sansio_bytes_total", direction="up") == 1500
    assert sample(samples, "socks_sansio_bytes_total", direction="down") == 1500
    assert sample(samples, "socks_sansio_auth_failures_total") == 1
    assert sample(samples, "socks_sansio_rule_denials_total") == 1
    assert sample(samples, "socks_sansio_handshake_seconds_count") == 3  # the requests read (not the failed login)
    assert sample(samples, "socks_sansio_tunnels_active", protocol="socks5") == 0
    assert sample(samples, "socks_sansio_tunnels_active", protocol="http") == 0
    assert sample(samples, "socks_sansio_rate_limited_total", kind="tunnels") == 0


def test_the_metrics_endpoint_closes_with_the_server(backend: str) -> None:
    server = Running(backend, ServerConfig(listen=((HOST, 0),), metrics_listen=(HOST, 0)))
    try:
        address = server.metrics_address
        assert scrape(address)
    finally:
        server.close()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(address, timeout=TIMEOUT):
        pass


def test_without_metrics_listen_there_is_no_endpoint(backend: str) -> None:
    server = Running(backend, ServerConfig(listen=((HOST, 0),)))
    try:
        assert server.server.metrics_address is None
    finally:
        server.close()


# ------------------------------------------------------------------ the command line

METRICS_LINE = re.compile(r"metrics on http://([\d.]+):(\d+)/metrics")


def test_serve_with_rate_and_metrics_flags(backend: str, any_proxies: ProxyFactory, echo: ThreadedServer) -> None:
    proxy = any_proxies("--metrics-listen", f"{HOST}:0", "--rate-tunnels-per-client", "1:1", backend=backend)
    match = METRICS_LINE.search(proxy.wait_log("metrics on http://"))
    assert match, proxy.describe()
    metrics = (match[1], int(match[2]))
    assert metrics[1] != 0
    # The second request follows the first at once (milliseconds): the bucket of one has not refilled.
    with socket.create_connection(proxy.address, timeout=TIMEOUT) as first, \
            socket.create_connection(proxy.address, timeout=TIMEOUT) as second:
        code, _ = socks5_open(first, CONNECT, HOST, echo.port)
        assert code == 0
        code, _ = socks5_open(second, CONNECT, HOST, echo.port)
        assert code == 2
        assert_echoes(first)
    proxy.wait_log("outcome=", count=2)

    def check() -> Samples | None:
        samples = scrape(metrics)
        ended = sum(value for (name, _), value in samples.items() if name == "socks_sansio_tunnels_total")
        return samples if ended >= 2 else None

    samples = poll(check, "2 connections in the metrics")
    assert sample(samples, "socks_sansio_tunnels_total", protocol="socks5", outcome="ok") == 1
    assert sample(samples, "socks_sansio_tunnels_total", protocol="socks5", outcome="rate limited") == 1
    assert sample(samples, "socks_sansio_rate_limited_total", kind="tunnels") == 1
    assert sample(samples, "socks_sansio_handshake_seconds_count") == 2
    assert proxy.log_lines("outcome=rate limited")


# ------------------------------------------------------------------ asyncio: what holds a relay side


class _FakeTransport:
    """Records whether reading is paused; enough of a transport for :class:`_RelaySide`'s flow control."""

    def __init__(self) -> None:
        self.reading = True
        self.written = bytearray()

    def get_extra_info(self, name: str) -> None:
        return None

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def write(self, data: bytes) -> None:
        self.written += data

    def get_write_buffer_size(self) -> int:
        return 0


def test_asyncio_relay_side_reads_only_when_neither_the_limit_nor_the_peers_buffer_holds_it() -> None:
    """A throttle's end does not resume a side held by flow control, and resume_writing does not end a throttle."""
    loop = asyncio.new_event_loop()
    try:
        limits = RateLimitConfig(bytes_per_client=Rate(1000, 1000))
        session = ServerSession(
            ServerConfig(rate_limits=limits), (HOST, 40000), stats=ServerStats(), limiter=RateLimits(limits),
            metrics=NullMetrics(), clock=loop.time,
        )  # fmt: skip
        tunnel: Any = types.SimpleNamespace(session=session, loop=loop, last=0.0, splice_at=None)
        shared = [memoryview(bytearray(4096))]
        client, target = _FakeTransport(), _FakeTransport()
        client_side, target_side = _RelaySide(client, tunnel, True, shared), _RelaySide(target, tunnel, False, shared)
        client_side.peer, target_side.peer = target_side, client_side

        before = loop.time()
        client_side.buffer_updated(3000)  # 2000 over the burst: a 2 s pause
        assert target.written == bytes(3000) and session.up == 3000
        assert not client.is_reading() and client_side.throttled is not None
        assert tunnel.last >= before + 1.5  # the pause is not idleness (a bound the machine's load cannot break)
        target_side.pause_writing()  # the target's buffer fills too
        target_side.resume_writing()  # ... and drains: the throttle still holds the client's side
        assert not client.is_reading()
        target_side.pause_writing()
        client_side.throttled.cancel()
        client_side._unthrottle()  # the pause ends while the target's buffer is still full
        assert not client.is_reading()
        target_side.resume_writing()  # nothing holds it now
        assert client.is_reading()
        target_side.buffer_updated(10)  # the other direction is charged to the same client's bucket
        assert not target.is_reading()
        assert target_side.throttled is not None
        target_side.throttled.cancel()
    finally:
        loop.close()

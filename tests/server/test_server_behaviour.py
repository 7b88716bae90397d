"""What ``socks-sansio serve`` does on the wire, checked with hand-written raw clients on both backends.

Tunnels (half-close, early data, BIND, UDP ASSOCIATE), refusals (dial
failures, access rules, the SSRF guard), limits (negotiation time-out,
``--max-clients``), shutdown (SIGTERM drains, the grace period ends tunnels),
and hostile input (a plain GET, garbage). Nothing here measures time: every
wait is bounded by a socket time-out or a polling deadline.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import threading
from collections.abc import Callable

import pytest

from socks_sansio import UserDatabase
from tests.adapters.servers import ThreadedServer, echo_server, recv_exactly
from tests.peer_servers import free_port

from .conftest import (
    ALL_BACKENDS,
    HOST,
    PASSWORD,
    TIMEOUT,
    UDP_TIMEOUT,
    USER,
    InProcessProxy,
    ProxyFactory,
    ProxyProcess,
    closed_by_peer,
    closed_port,
    connect,
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

CONNECT, BIND, UDP_ASSOCIATE = 1, 2, 3
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
PROTOCOLS = ("socks5", "socks4", "http")


def open_tunnel(address: tuple[str, int], protocol: str, host: str, port: int) -> socket.socket:
    """A raw client connection with a CONNECT tunnel to *host:port* established (no auth)."""
    sock = connect(address)
    try:
        if protocol == "socks5":
            rep, _ = socks5_open(sock, CONNECT, host, port)
            assert rep == 0, f"REP {rep}"
        elif protocol == "socks4":
            sock.sendall(socks4_request(CONNECT, host, port, b"raw"))
            cd, _ = read_socks4_reply(sock)
            assert cd == 90, f"CD {cd}"
        else:
            sock.sendall(http_connect_request(f"{host}:{port}"))
            head = read_http_head(sock)
            assert http_status(head) == 200, head
    except BaseException:
        sock.close()
        raise
    return sock


def refusal(address: tuple[str, int], protocol: str, host: str, port: int) -> int:
    """Ask for a tunnel that must be refused; return REP / CD / HTTP status, after checking the server closes."""
    with connect(address) as sock:
        if protocol == "socks5":
            code, _ = socks5_open(sock, CONNECT, host, port)
        elif protocol == "socks4":
            sock.sendall(socks4_request(CONNECT, host, port))
            code, _ = read_socks4_reply(sock)
        else:
            sock.sendall(http_connect_request(f"{host}:{port}"))
            code = http_status(read_http_head(sock))
        assert read_until_eof(sock) == b"", "nothing may follow a refusal, and the server must close"
        return code


# ------------------------------------------------------------------ tunnels


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_half_close_passes_through(proxy: ProxyProcess, echo: ThreadedServer, protocol: str) -> None:
    """The client sends everything, shuts down its write side, and still gets the whole echo back."""
    payload = os.urandom(600_000)
    with open_tunnel(proxy.address, protocol, HOST, echo.port) as sock:

        def send() -> None:
            for start in range(0, len(payload), 50_000):
                sock.sendall(payload[start : start + 50_000])
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        try:
            received = read_until_eof(sock)
        finally:
            sender.join(TIMEOUT)
    assert len(received) == len(payload)
    assert received == payload


# protocol -> (the handshake in one write, how to read the server's answers, server fixture)
def _early(protocol: str, target: tuple[str, int]) -> bytes:
    host, port = target
    if protocol == "socks5":
        return socks5_greeting() + socks5_request(CONNECT, host, port)
    if protocol == "socks5-auth":
        return socks5_greeting(auth=True) + rfc1929_request(USER, PASSWORD) + socks5_request(CONNECT, host, port)
    if protocol == "socks4":
        return socks4_request(CONNECT, host, port)
    if protocol == "socks4a":
        return socks4_request(CONNECT, "localhost", port)
    return http_connect_request(f"{host}:{port}", basic=BASIC if protocol == "http-auth" else None)


def _read_answers(sock: socket.socket, protocol: str) -> None:
    if protocol.startswith("socks5"):
        assert recv_exactly(sock, 2) == (b"\x05\x02" if protocol == "socks5-auth" else b"\x05\x00")
        if protocol == "socks5-auth":
            assert recv_exactly(sock, 2) == b"\x01\x00"
        assert read_socks5_reply(sock)[0] == 0
    elif protocol.startswith("socks4"):
        assert read_socks4_reply(sock)[0] == 90
    else:
        assert http_status(read_http_head(sock)) == 200


@pytest.mark.parametrize("then_eof", [False, True], ids=["open", "eof"])
@pytest.mark.parametrize("protocol", ["socks5", "socks5-auth", "socks4", "socks4a", "http", "http-auth"])
@pytest.mark.usefixtures("backend")  # parametrizes the server fetched with getfixturevalue
def test_early_data_is_delivered(
    request: pytest.FixtureRequest, echo: ThreadedServer, protocol: str, then_eof: bool
) -> None:
    """Handshake, request and payload in one write (and optionally EOF right after): the payload arrives."""
    server: ProxyProcess = request.getfixturevalue("auth_proxy" if protocol.endswith("-auth") else "proxy")
    payload = b"early bird " * 1000
    with connect(server.address) as sock:
        sock.sendall(_early(protocol, (HOST, echo.port)) + payload)
        if then_eof:
            sock.shutdown(socket.SHUT_WR)
        _read_answers(sock, protocol)
        if then_eof:
            assert read_until_eof(sock) == payload
        else:
            assert recv_exactly(sock, len(payload)) == payload
            sock.sendall(b"and more")
            assert recv_exactly(sock, 8) == b"and more"
            sock.shutdown(socket.SHUT_WR)
            assert read_until_eof(sock) == b""


@pytest.mark.parametrize("protocol", ["socks5", "socks4"])
def test_bind_end_to_end(proxy: ProxyProcess, protocol: str) -> None:
    """BIND: the first reply gives the listening address, a peer connects, the second reply names it, data flows."""
    with connect(proxy.address) as control:
        if protocol == "socks5":
            rep, bound = socks5_open(control, BIND, HOST, 0)
            assert rep == 0
        else:
            control.sendall(socks4_request(BIND, HOST, 0))
            cd, bound = read_socks4_reply(control)
            assert cd == 90
        assert bound[0] == HOST, f"the listening address must be reachable: {bound}"
        assert bound[1] != 0
        control.sendall(b"before the peer came;")  # held by the server until the peer is there
        with socket.create_connection(bound, timeout=TIMEOUT) as peer:
            if protocol == "socks5":
                rep, announced = read_socks5_reply(control)
                assert rep == 0
            else:
                cd, announced = read_socks4_reply(control)
                assert cd == 90
            assert announced == peer.getsockname()
            control.sendall(b"from the client")
            assert recv_exactly(peer, 36) == b"before the peer came;from the client"
            peer.sendall(b"from the peer")
            assert recv_exactly(control, 13) == b"from the peer"
            peer.shutdown(socket.SHUT_WR)
            assert read_until_eof(control) == b"", "the peer's EOF reaches the client"
            control.sendall(b"last words")
            control.shutdown(socket.SHUT_WR)
            assert read_until_eof(peer) == b"last words"


@pytest.mark.parametrize("target", ["address", "name"])
@pytest.mark.parametrize("declare", ["unspecified", "own-port"])
def test_udp_associate_end_to_end(
    request: pytest.FixtureRequest,
    backend: str,
    proxy: ProxyProcess,
    udp_echo: tuple[str, int],
    declare: str,
    target: str,
) -> None:
    """UDP ASSOCIATE: datagrams with the RFC 1928 §7 header go to the target and come back with its address."""
    udp_timeout = UDP_TIMEOUT
    with connect(proxy.address) as control, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind((HOST, 0))
        udp.settimeout(udp_timeout)
        declared = ("0.0.0.0", 0) if declare == "unspecified" else udp.getsockname()
        rep, relay = socks5_open(control, UDP_ASSOCIATE, *declared)
        assert rep == 0
        assert relay[0] == HOST
        destination = ("localhost" if target == "name" else HOST, udp_echo[1])
        for index in range(3):
            payload = os.urandom(100 + index)
            udp.sendto(udp_header(*destination) + payload, relay)
            data, source = udp.recvfrom(65535)
            assert source == relay
            assert parse_udp(data) == (udp_echo, payload)


# ------------------------------------------------------------------ refusals


def test_refused_upstream_maps_to_each_protocol(proxy: ProxyProcess) -> None:
    """A closed port: SOCKS5 REP 5 (connection refused), SOCKS4 CD 91, HTTP 502."""
    port = closed_port()
    assert refusal(proxy.address, "socks5", HOST, port) == 5
    assert refusal(proxy.address, "socks4", HOST, port) == 91
    assert refusal(proxy.address, "http", HOST, port) == 502
    proxy.wait_log(f"target={HOST}:{port} ", count=3)
    assert all("outcome=ok" not in line for line in proxy.log_lines(f"target={HOST}:{port} "))


def test_deny_rule(start_proxy: ProxyFactory, echo: ThreadedServer) -> None:
    """``--deny 'to=127.0.0.0/8'``: REP 2 / CD 91 / 403, also for a name that resolves there."""
    server = start_proxy("--deny", "to=127.0.0.0/8")
    assert refusal(server.address, "socks5", HOST, echo.port) == 2
    assert refusal(server.address, "socks5", "localhost", echo.port) == 2
    assert refusal(server.address, "socks4", HOST, echo.port) == 91
    assert refusal(server.address, "http", HOST, echo.port) == 403
    server.wait_log("outcome=denied", count=4)


def test_allow_rule_with_port_and_default_deny(start_proxy: ProxyFactory, echo: ThreadedServer) -> None:
    """``--default-deny --allow 'to=127.0.0.1/32 port=N'``: only that port is reachable."""
    server = start_proxy("--default-deny", "--allow", f"to=127.0.0.1/32 port={echo.port}")
    with open_tunnel(server.address, "socks5", HOST, echo.port) as sock:
        sock.sendall(b"allowed")
        assert recv_exactly(sock, 7) == b"allowed"
    assert refusal(server.address, "socks5", HOST, closed_port()) == 2


def test_block_private(start_proxy: ProxyFactory, echo: ThreadedServer) -> None:
    """The SSRF guard refuses a name resolving to loopback and the IP literal, on every protocol."""
    server = start_proxy("--block-private")
    assert refusal(server.address, "socks5", "localhost", echo.port) == 2
    assert refusal(server.address, "socks5", HOST, echo.port) == 2
    assert refusal(server.address, "socks5", "::1", echo.port) == 2
    assert refusal(server.address, "socks4", "localhost", echo.port) == 91
    assert refusal(server.address, "http", "localhost", echo.port) == 403
    server.wait_log("outcome=denied", count=5)
    assert "SSRF" in server.log()


# ------------------------------------------------------------------ limits


def test_negotiation_timeout_drops_slow_clients(start_proxy: ProxyFactory) -> None:
    """``--negotiation-timeout 1``: a silent client and one that stops mid-greeting are both closed."""
    server = start_proxy("--negotiation-timeout", "1")
    with connect(server.address) as silent, connect(server.address) as stalled:
        stalled.sendall(b"\x05")
        assert closed_by_peer(silent)
        assert closed_by_peer(stalled)
    server.wait_log("negotiation timeout", count=2)


def test_max_clients_refuses_then_recovers(start_proxy: ProxyFactory, echo: ThreadedServer) -> None:
    """``--max-clients 2``: a third client is closed at once; once the two leave, clients are served again."""
    server = start_proxy("--max-clients", "2")
    first, second = connect(server.address), connect(server.address)
    try:
        for sock in (first, second):  # both are being served (so they count)
            sock.sendall(socks5_greeting())
            assert recv_exactly(sock, 2) == b"\x05\x00"
        with connect(server.address) as third:
            with contextlib.suppress(OSError):  # the server may have reset it already
                third.sendall(socks5_greeting())
            assert closed_by_peer(third)
    finally:
        first.close()
        second.close()

    def served() -> bool | None:
        try:
            with open_tunnel(server.address, "socks5", HOST, echo.port) as sock:
                sock.sendall(b"back")
                return recv_exactly(sock, 4) == b"back" or None
        except (OSError, EOFError, AssertionError):
            return None

    assert poll(served, "the server to accept clients again")


# ------------------------------------------------------------------ shutdown


@pytest.mark.parametrize("backend", ALL_BACKENDS, indirect=True)
def test_sigterm_drains_open_tunnels(start_proxy: ProxyFactory, echo: ThreadedServer) -> None:
    """After SIGTERM: no new clients, the open tunnel keeps working, and the process exits 0 once it ends."""
    server = start_proxy("--shutdown-grace", "30")
    with open_tunnel(server.address, "socks5", HOST, echo.port) as sock:
        sock.sendall(b"before")
        assert recv_exactly(sock, 6) == b"before"
        server.send_signal(signal.SIGTERM)

        def refused() -> bool | None:
            try:
                socket.create_connection(server.address, timeout=TIMEOUT).close()
            except ConnectionRefusedError:
                return True
            return None

        assert poll(refused, "the listener to close after SIGTERM")
        sock.sendall(b"during the drain")
        assert recv_exactly(sock, 16) == b"during the drain"
        sock.shutdown(socket.SHUT_WR)
        assert read_until_eof(sock) == b""
    assert server.wait_exit() == 0, server.describe()
    assert not server.problems(), server.describe()


def test_grace_period_ends_idle_tunnels(start_proxy: ProxyFactory, echo: ThreadedServer) -> None:
    """A tunnel still open when ``--shutdown-grace`` runs out is closed, and the exit status is still 0."""
    server = start_proxy("--shutdown-grace", "1")
    with open_tunnel(server.address, "http", HOST, echo.port) as sock:
        sock.sendall(b"x")
        assert recv_exactly(sock, 1) == b"x"
        server.send_signal(signal.SIGTERM)
        assert read_until_eof(sock) == b"", "the server closes the tunnel when the grace period ends"
    assert server.wait_exit() == 0, server.describe()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_an_idle_server(start_proxy: ProxyFactory, sig: int) -> None:
    server = start_proxy()
    assert server.stop(sig) == 0, server.describe()


# ------------------------------------------------------------------ hostile input


def test_a_get_to_an_origin_that_is_not_http_gets_502(proxy: ProxyProcess, echo: ThreadedServer) -> None:
    """Forwarded, but the origin (an echo server) answers no HTTP: 502 with a reason, then close."""
    with connect(proxy.address) as sock:
        sock.sendall(f"GET http://{HOST}:{echo.port}/ HTTP/1.1\r\nHost: {HOST}:{echo.port}\r\n\r\n".encode())
        head = read_http_head(sock)
        assert http_status(head) == 502, head
        assert b"the origin broke HTTP/1.1" in read_until_eof(sock)


def test_plain_get_gets_405_when_forwarding_is_off(
    in_process_proxy: Callable[..., InProcessProxy], echo: ThreadedServer
) -> None:
    """Without HTTP forwarding a plain GET is refused: 405 with ``Allow: CONNECT``, then close."""
    proxy = in_process_proxy(http_forward=False)
    with connect(proxy.address) as sock:
        sock.sendall(f"GET http://{HOST}:{echo.port}/ HTTP/1.1\r\nHost: {HOST}:{echo.port}\r\n\r\n".encode())
        head = read_http_head(sock)
        assert http_status(head) == 405, head
        assert b"\r\nallow: connect\r\n" in head.lower(), head
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        assert len(read_until_eof(sock)) == length, "the body its Content-Length announces, then close"


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32),  # a TLS ClientHello
        b"\x00\xff\xfe\xfd garbage",
        b"\x05\x00",  # SOCKS5 greeting offering no method at all
        b"\x04\x09\x00\x50\x7f\x00\x00\x01\x00",  # SOCKS4 with an unknown command
    ],
    ids=["tls", "binary", "socks5-no-methods", "socks4-bad-command"],
)
def test_garbage_closes_the_connection(proxy: ProxyProcess, garbage: bytes) -> None:
    """Bytes no protocol accepts: the server closes (after at most the protocol's own refusal)."""
    with connect(proxy.address) as sock:
        sock.sendall(garbage)
        answer = read_until_eof(sock)
    assert len(answer) <= 8, answer
    if garbage[0] not in (4, 5):
        assert answer == b"", "an unknown protocol gets no answer"


# ------------------------------------------------------------------ IPv6


def test_ipv6_listener_and_target(start_proxy: ProxyFactory) -> None:
    """Listening on [::1] as well, and CONNECT to an IPv6 target (SOCKS5 ATYP 4 and HTTP ``[::1]:port``)."""
    server = start_proxy("--listen", "[::1]:0")
    v6 = next(address for address in server.addresses if ":" in address[0])
    with echo_server(family=socket.AF_INET6) as echo6:
        for protocol in ("socks5", "http"):
            with socket.create_connection(v6, timeout=TIMEOUT) as sock:
                if protocol == "socks5":
                    assert socks5_open(sock, CONNECT, "::1", echo6.port)[0] == 0
                else:
                    sock.sendall(http_connect_request(f"[::1]:{echo6.port}"))
                    assert http_status(read_http_head(sock)) == 200
                sock.sendall(b"six")
                assert recv_exactly(sock, 3) == b"six"


# ------------------------------------------------------------------ counters (in-process asyncio)


def test_in_process_counters(in_process_proxy: Callable[..., InProcessProxy], echo: ThreadedServer) -> None:
    """The asyncio server's counters: a tunnel with its byte counts, a failed login, a busy refusal."""
    server = in_process_proxy(users=UserDatabase({USER: PASSWORD}), max_clients=1)
    payload = os.urandom(5000)
    with connect(server.address) as sock:
        assert socks5_open(sock, CONNECT, HOST, echo.port, user=USER, password=PASSWORD)[0] == 0
        with connect(server.address) as extra:  # the only slot is taken
            assert closed_by_peer(extra)
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        assert read_until_eof(sock) == payload
    server.wait_stats(lambda s: s["active"] == 0 and s["tunnels"].get("socks5") == 1)
    with connect(server.address) as sock:
        sock.sendall(socks5_greeting(auth=True) + rfc1929_request(USER, "wrong"))
        assert recv_exactly(sock, 4) == b"\x05\x02\x01\x01"
        assert closed_by_peer(sock)
    stats = server.wait_stats(lambda s: s["failures"].get("authentication failed") == 1 and s["active"] == 0)
    assert stats["bytes_up"] == stats["bytes_down"] == len(payload)
    assert stats["failures"]["busy"] == 1



# ------------------------------------------------------------------ more lifecycle


def test_abandoned_bind_frees_its_listener(start_proxy: ProxyFactory) -> None:
    """A client closes its BIND control connection before any peer came: the server ends the BIND at once.

    Observed through the log line (written when the connection's task ends), then the port: probing
    the port first would itself be the awaited peer.
    """
    server = start_proxy("--bind-timeout", "60", "--shutdown-grace", "1")
    with connect(server.address) as control:
        rep, bound = socks5_open(control, BIND, HOST, 0)
        assert rep == 0
    server.wait_log("cmd=BIND", timeout=2)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(bound, timeout=TIMEOUT).close()


def test_idle_timeout_closes_silent_tunnels(start_proxy: ProxyFactory, echo: ThreadedServer) -> None:
    server = start_proxy("--idle-timeout", "1")
    with open_tunnel(server.address, "socks5", HOST, echo.port) as sock:
        sock.sendall(b"ping")
        assert recv_exactly(sock, 4) == b"ping"
        assert read_until_eof(sock) == b"", "closed once silent for the idle time-out"
    server.wait_log("idle")


def test_http_407_then_credentials_on_the_same_connection(auth_proxy: ProxyProcess, echo: ThreadedServer) -> None:
    """A 407 keeps the connection open (framed, no ``Connection: close``): the retry with credentials succeeds."""
    with connect(auth_proxy.address) as sock:
        sock.sendall(http_connect_request(f"{HOST}:{echo.port}"))
        head = read_http_head(sock)
        assert http_status(head) == 407, head
        assert b'proxy-authenticate: basic realm="socks-sansio"' in head.lower(), head
        assert b"connection: close" not in head.lower()
        sock.sendall(http_connect_request(f"{HOST}:{echo.port}", basic=BASIC))
        assert http_status(read_http_head(sock)) == 200
        sock.sendall(b"retried")
        assert recv_exactly(sock, 7) == b"retried"


def test_stats_lines(start_proxy: ProxyFactory, echo: ThreadedServer) -> None:
    server = start_proxy("--stats-interval", "0.2")
    with open_tunnel(server.address, "socks4", HOST, echo.port) as sock:
        sock.sendall(b"s")
        assert recv_exactly(sock, 1) == b"s"
    server.wait_log("stats: active=0 tunnels=1 up=1 down=1")


def test_workers_share_a_fixed_port(start_proxy: ProxyFactory, echo: ThreadedServer) -> None:
    """``--workers 2`` forks two processes on one port (SO_REUSEPORT); SIGTERM stops them all with status 0."""
    port = free_port()
    server = start_proxy("--workers", "2", "--listen", f"{HOST}:{port}", listen=False)
    server.wait_log("listening on", count=4)  # each worker: the log record and the printed line
    for _ in range(6):
        with open_tunnel(server.address, "socks5", HOST, echo.port) as sock:
            sock.sendall(b"w")
            assert recv_exactly(sock, 1) == b"w"

"""The blocking-socket adapter (``socks_sansio.adapters.sync``) against scripted and real peers.

Scripted peers (here and in :mod:`tests.adapters.servers`) cover what real proxies
rarely do: replies cut into one-octet segments, tunnel bytes in the reply's segment,
an HTTP head in two segments, stalls, every failure code. Real peers (microsocks,
Dante, tinyproxy) cover interoperability. Everything runs on loopback, with bounded
waits; every socket is closed (a leaked one fails the run through ResourceWarning).
"""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from socks_sansio import (
    Address,
    LocalProtocolError,
    ProxyAuthError,
    ProxyConnectionError,
    ProxyProtocol,
    ProxyRefusedError,
    ProxyTimeoutError,
    RemoteProtocolError,
    UdpDatagram,
    encode_udp_datagram,
    parse_udp_datagram,
)
from socks_sansio.adapters.sync import (
    TLSInTLSSocket,
    connect,
    open_bind,
    open_tunnel,
    open_udp_association,
    wrap_tls,
)

from ..peer_servers import (
    DANTE_PASSWORD,
    DANTE_USER,
    PeerServer,
    dante_server,
    microsocks_server,
    tinyproxy_server,
)
from .servers import (
    SOCKS5_OK,
    TIMEOUT,
    ThreadedServer,
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

IO = 5.0  # the timeout= of calls expected to succeed
MIB = 1024 * 1024

# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def files() -> TLSFiles:
    return TLSFiles()


@pytest.fixture(scope="module")
def echo_target() -> Iterator[ThreadedServer]:
    with echo_server() as server:
        yield server


@pytest.fixture(scope="module")
def tls_target(files: TLSFiles) -> Iterator[ThreadedServer]:
    with serve(tls_echo(files)) as server:
        yield server


@pytest.fixture(scope="module")
def microsocks() -> Iterator[PeerServer]:
    with microsocks_server() as peer:
        yield peer


@pytest.fixture(scope="module")
def tinyproxy() -> Iterator[PeerServer]:
    with tinyproxy_server() as peer:
        yield peer


@pytest.fixture(scope="module")
def dante() -> Iterator[PeerServer]:
    with dante_server() as peer:
        yield peer


@pytest.fixture(scope="module")
def https_proxy(files: TLSFiles, tinyproxy: PeerServer) -> Iterator[ThreadedServer]:
    """An https:// proxy: TLS terminated in front of tinyproxy."""
    with serve(tls_forwarder(files, tinyproxy.address)) as server:
        yield server


class _Origin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._answer(f"hello from {self.path}; host {self.headers['Host']}".encode())

    def do_POST(self) -> None:
        self._answer(self.rfile.read(int(self.headers["Content-Length"])))

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def http_origin() -> Iterator[tuple[str, int]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield ("127.0.0.1", server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


@pytest.fixture
def udp_echo() -> Iterator[tuple[str, int]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.05)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(65536)
            except TimeoutError:
                continue
            sock.sendto(data, peer)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()
    finally:
        stop.set()
        thread.join(TIMEOUT)
        sock.close()


# ------------------------------------------------------------- scripted peers


def read_socks5_request(conn: socket.socket) -> tuple[int, Address]:
    """Read a no-auth greeting (answer it) and a request: (CMD, address)."""
    _, count = recv_exactly(conn, 2)
    recv_exactly(conn, count)
    conn.sendall(b"\x05\x00")
    _, command, _, atyp = recv_exactly(conn, 4)
    host: ipaddress.IPv4Address | ipaddress.IPv6Address | bytes
    if atyp == 1:
        host = ipaddress.IPv4Address(recv_exactly(conn, 4))
    elif atyp == 4:
        host = ipaddress.IPv6Address(recv_exactly(conn, 16))
    else:
        host = recv_exactly(conn, recv_exactly(conn, 1)[0])
    return command, Address(host, int.from_bytes(recv_exactly(conn, 2), "big"))


def wait_for_eof(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while conn.recv(65536):
            pass


def socks5_recorder(seen: list[Address]) -> Callable[[socket.socket], None]:
    """A SOCKS5 proxy that records the requested address, says yes and echoes (it forwards nowhere)."""

    def handler(conn: socket.socket) -> None:
        _, address = read_socks5_request(conn)
        seen.append(address)
        conn.sendall(SOCKS5_OK)
        echo(conn)

    return handler


def socks5_forwarder(seen: list[Address]) -> Callable[[socket.socket], None]:
    """A real (if tiny) SOCKS5 CONNECT proxy: dials the target and relays, passing half-closes on."""

    def handler(conn: socket.socket) -> None:
        _, address = read_socks5_request(conn)
        seen.append(address)
        with socket.create_connection((address.host_str, address.port), TIMEOUT) as upstream:
            conn.sendall(SOCKS5_OK)
            back = threading.Thread(target=pump, args=(upstream, conn), daemon=True)
            back.start()
            pump(conn, upstream)
            back.join(TIMEOUT)

    return handler


def read_until_nul(conn: socket.socket) -> bytes:
    data = b""
    while (octet := recv_exactly(conn, 1)) != b"\x00":
        data += octet
    return data


def socks4_handler(code: int, seen: list[tuple[Address, bytes]]) -> Callable[[socket.socket], None]:
    """A SOCKS4/4a proxy answering CD *code*, recording (address, user id); echoes when granted."""

    def handler(conn: socket.socket) -> None:
        head = recv_exactly(conn, 8)
        user_id = read_until_nul(conn)
        ip = head[4:8]
        host = read_until_nul(conn) if ip[:3] == b"\x00\x00\x00" and ip[3] else ipaddress.IPv4Address(ip)
        seen.append((Address(host, int.from_bytes(head[2:4], "big")), user_id))
        conn.sendall(bytes((0, code)) + bytes(6))
        if code == 90:
            echo(conn)
        else:
            wait_for_eof(conn)

    return handler


def read_http_head(conn: socket.socket) -> bytes:
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += recv_exactly(conn, 1)
    return head


def http_split_handler(early: bytes) -> Callable[[socket.socket], None]:
    """An HTTP proxy whose 200 head arrives in two segments, the second one followed by tunnel bytes."""

    def handler(conn: socket.socket) -> None:
        read_http_head(conn)
        conn.sendall(b"HTTP/1.1 200 Conn")
        time.sleep(0.05)
        conn.sendall(b"ection established\r\nVia: 1.1 test\r\n\r\n" + early)
        echo(conn)

    return handler


def http_status_handler(status: int) -> Callable[[socket.socket], None]:
    def handler(conn: socket.socket) -> None:
        read_http_head(conn)
        extra = b'Proxy-Authenticate: Basic realm="test"\r\n' if status == 407 else b""
        conn.sendall(b"HTTP/1.1 %d No\r\nContent-Length: 0\r\n%s\r\n" % (status, extra))
        wait_for_eof(conn)

    return handler


def trickle_handler(conn: socket.socket) -> None:
    """A SOCKS5 proxy sending every octet of its answers 0.1 s apart (each step is short, the sum is not)."""
    _, count = recv_exactly(conn, 2)
    recv_exactly(conn, count)
    for answer in (b"\x05\x00", SOCKS5_OK):
        for octet in answer:
            time.sleep(0.1)
            conn.sendall(bytes((octet,)))
        if answer != SOCKS5_OK:
            recv_exactly(conn, 10)


def stall_handler(conn: socket.socket) -> None:
    """A SOCKS5 proxy that reads the request and then never answers."""
    _, count = recv_exactly(conn, 2)
    recv_exactly(conn, count)
    conn.sendall(b"\x05\x00")
    wait_for_eof(conn)


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def roundtrip(sock: socket.socket | TLSInTLSSocket, size: int = MIB, chunk: int = 64 * 1024) -> None:
    """Send *size* octets through an echo in lock-step chunks and check every one comes back."""
    payload = os.urandom(size)
    for start in range(0, size, chunk):
        piece = payload[start : start + chunk]
        sock.sendall(piece)
        got = b""
        while len(got) < len(piece):
            data = sock.recv(len(piece) - len(got))
            assert data, "the tunnel closed early"
            got += data
        assert got == piece


def recv_all(sock: socket.socket | TLSInTLSSocket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        assert chunk
        data += chunk
    return data


# ------------------------------------------------------------------ scripted: framing and leftovers


def test_reply_and_tunnel_bytes_in_one_segment_reach_a_plain_socket() -> None:
    handler = socks5_connect_handler(SOCKS5_OK, extra=b"early tunnel bytes")
    with serve(handler) as proxy:
        sock = connect("target.test", 80, proxy=f"socks5h://127.0.0.1:{proxy.port}", timeout=IO)
        with sock:
            assert type(sock) is socket.socket
            assert sock.gettimeout() is None
            assert recv_all(sock, 18) == b"early tunnel bytes"
            sock.sendall(b"then the echo")
            assert recv_all(sock, 13) == b"then the echo"


def test_reply_split_into_one_octet_segments() -> None:
    with (
        serve(socks5_connect_handler(SOCKS5_OK, split=True, extra=b"X")) as proxy,
        connect("target.test", 80, proxy=f"socks5h://127.0.0.1:{proxy.port}", timeout=IO) as sock,
    ):
        assert recv_all(sock, 1) == b"X"
        roundtrip(sock, 4096)


def test_http_head_in_two_segments_then_tunnel_bytes() -> None:
    with (
        serve(http_split_handler(b"first")) as proxy,
        open_tunnel("target.test", 443, proxy=f"http://127.0.0.1:{proxy.port}", timeout=IO) as tunnel,
    ):
        assert type(tunnel.socket) is socket.socket
        assert recv_all(tunnel.socket, 5) == b"first"
        roundtrip(tunnel.socket, 4096)
        assert tunnel.info.protocol is ProxyProtocol.HTTP


def test_half_close_reaches_the_target() -> None:
    with (
        serve(socks5_connect_handler(SOCKS5_OK)) as proxy,
        open_tunnel("target.test", 80, proxy=f"socks5h://127.0.0.1:{proxy.port}", timeout=IO) as tunnel,
    ):
        tunnel.sendall(b"last words")
        tunnel.shutdown_write()
        assert recv_all(tunnel.socket, 10) == b"last words"
        assert tunnel.recv() == b""  # the echo saw our EOF and closed its side


# ------------------------------------------------------------------ scripted: deadline


def test_deadline_covers_the_whole_call_not_each_step() -> None:
    with serve(trickle_handler) as proxy:
        start = time.monotonic()
        with pytest.raises(ProxyTimeoutError) as caught:
            connect("127.0.0.1", 80, proxy=f"socks5h://127.0.0.1:{proxy.port}", timeout=0.5)  # a 10-octet request
        assert time.monotonic() - start < 5.0
        assert caught.value.proxy == f"socks5h://127.0.0.1:{proxy.port}"
        assert "handshake" in caught.value.message


def test_stalled_handshake_times_out() -> None:
    with serve(stall_handler) as proxy:
        start = time.monotonic()
        with pytest.raises(ProxyTimeoutError):
            connect("target.test", 80, proxy=f"socks5h://127.0.0.1:{proxy.port}", timeout=0.3)
        assert time.monotonic() - start < 3.0


def test_stalled_tls_handshake_with_the_target_times_out(files: TLSFiles) -> None:
    with serve(socks5_connect_handler(SOCKS5_OK, after=wait_for_eof)) as proxy:
        with pytest.raises(ProxyTimeoutError) as caught:
            connect(
                "localhost", 443, proxy=f"socks5h://127.0.0.1:{proxy.port}", timeout=0.3, ssl=files.client_context()
            )
        assert "TLS" in caught.value.message


def test_stalled_tls_handshake_with_an_https_proxy_times_out(files: TLSFiles) -> None:
    with serve(wait_for_eof) as proxy:
        with pytest.raises(ProxyTimeoutError) as caught:
            connect(
                "target.test", 80, proxy=f"https://127.0.0.1:{proxy.port}", timeout=0.3,
                proxy_ssl=files.client_context(),
            )
        assert caught.value.proxy == f"https://127.0.0.1:{proxy.port}"


# ------------------------------------------------------------------ scripted: refusals and failures


@pytest.mark.parametrize("rep", range(1, 9))
def test_socks5_failure_replies(rep: int) -> None:
    with serve(socks5_connect_handler(bytes((5, rep, 0, 1, 0, 0, 0, 0, 0, 0)))) as proxy:
        with pytest.raises(ProxyRefusedError) as caught:
            connect("target.test", 80, proxy=f"socks5h://127.0.0.1:{proxy.port}", timeout=IO)
        assert caught.value.code == rep
        assert caught.value.protocol == "socks5"


@pytest.mark.parametrize("cd", [91, 92, 93])
def test_socks4_failure_replies(cd: int) -> None:
    seen: list[tuple[Address, bytes]] = []
    with serve(socks4_handler(cd, seen)) as proxy:
        with pytest.raises(ProxyRefusedError) as caught:
            connect("127.0.0.1", 80, proxy=f"socks4://bob@127.0.0.1:{proxy.port}", timeout=IO)
        assert caught.value.code == cd
    assert seen == [(Address("127.0.0.1", 80), b"bob")]


@pytest.mark.parametrize(
    ("status", "error"), [(403, ProxyRefusedError), (407, ProxyAuthError), (502, ProxyRefusedError)]
)
def test_http_failure_statuses(status: int, error: type[ProxyRefusedError]) -> None:
    with serve(http_status_handler(status)) as proxy:
        with pytest.raises(error) as caught:
            connect("target.test", 443, proxy=f"http://127.0.0.1:{proxy.port}", timeout=IO)
        assert type(caught.value) is error
        assert caught.value.code == status


def test_dead_port_names_the_proxy_without_the_password() -> None:
    port = dead_port()
    with pytest.raises(ProxyConnectionError) as caught:
        connect("target.test", 80, proxy=f"socks5h://alice:hunter2@127.0.0.1:{port}", timeout=IO)
    error = caught.value
    assert isinstance(error.__cause__, OSError)
    assert error.proxy == f"socks5h://alice:***@127.0.0.1:{port}"
    assert "hunter2" not in str(error)
    assert "hunter2" not in repr(error)
    assert f"127.0.0.1:{port}" in str(error)


def test_proxy_closing_mid_handshake() -> None:
    def handler(conn: socket.socket) -> None:
        recv_exactly(conn, 3)

    with serve(handler) as proxy, pytest.raises(ProxyConnectionError):
        connect("target.test", 80, proxy=f"socks5h://127.0.0.1:{proxy.port}", timeout=IO)


def test_impossible_requests_are_local_errors() -> None:
    # Refused before any I/O: the dead port is never dialled.
    with pytest.raises(LocalProtocolError):
        connect("::1", 80, proxy=f"socks4://127.0.0.1:{dead_port()}", timeout=IO)
    with pytest.raises(LocalProtocolError):
        connect("::1", 80, proxy=[f"socks5h://127.0.0.1:{dead_port()}", "socks4://127.0.0.1:1080"], timeout=IO)
    with pytest.raises(LocalProtocolError):
        open_udp_association("http://127.0.0.1:8080")
    with pytest.raises(LocalProtocolError):
        open_udp_association(["socks5://127.0.0.1:1", "socks5://127.0.0.1:2"])
    with pytest.raises(LocalProtocolError):
        open_bind("http://127.0.0.1:8080")


# ------------------------------------------------------------------ scripted: addresses, resolution, environment


def test_ipv6_proxy_and_ipv6_target() -> None:
    seen: list[Address] = []
    with (
        echo_server(family=socket.AF_INET6) as target,
        serve(socks5_forwarder(seen), family=socket.AF_INET6) as proxy,
        connect("::1", target.port, proxy=f"socks5h://[::1]:{proxy.port}", timeout=IO) as sock,
    ):
        assert sock.family == socket.AF_INET6
        roundtrip(sock, 65536)
    assert seen == [Address("::1", target.port)]


@pytest.mark.parametrize(
    ("scheme", "expected"), [("socks5h", Address("localhost", 80)), ("socks5", Address("127.0.0.1", 80))]
)
def test_socks5_resolves_locally_and_socks5h_remotely(scheme: str, expected: Address) -> None:
    seen: list[Address] = []
    # "localhost" may resolve to ::1 first; the recorder answers either way.
    with (
        serve(socks5_recorder(seen)) as proxy,
        connect("localhost", 80, proxy=f"{scheme}://127.0.0.1:{proxy.port}", timeout=IO),
    ):
        pass
    if scheme == "socks5" and seen[0] == Address("::1", 80):
        expected = Address("::1", 80)
    assert seen == [expected]


def test_socks4_resolves_locally_and_socks4a_remotely() -> None:
    seen: list[tuple[Address, bytes]] = []
    with serve(socks4_handler(90, seen)) as proxy:
        with connect("localhost", 80, proxy=f"socks4://127.0.0.1:{proxy.port}", timeout=IO):
            pass
        with connect("localhost", 80, proxy=f"socks4a://127.0.0.1:{proxy.port}", timeout=IO):
            pass
    assert seen == [(Address("127.0.0.1", 80), b""), (Address("localhost", 80), b"")]


def test_trust_env_picks_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Address] = []
    with serve(socks5_recorder(seen)) as proxy:
        monkeypatch.setenv("ALL_PROXY", f"socks5h://127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        with open_tunnel("target.test", 80, trust_env=True, timeout=IO) as tunnel:
            assert tunnel.info.proxies == (f"socks5h://127.0.0.1:{proxy.port}",)
        monkeypatch.setenv("NO_PROXY", "target.test")
        with pytest.raises(socket.gaierror):  # direct now: the name does not resolve
            connect("target.test", 80, trust_env=True, timeout=IO)
    assert seen == [Address("target.test", 80)]


def test_direct_connection_without_proxy(echo_target: ThreadedServer) -> None:
    with open_tunnel(*echo_target.address, timeout=IO) as tunnel:
        assert tunnel.info.proxies == ()
        assert tunnel.info.protocol is None
        roundtrip(tunnel.socket, 4096)


def test_socket_options_are_set() -> None:
    with serve(socks5_connect_handler(SOCKS5_OK)) as proxy:
        url = f"socks5h://127.0.0.1:{proxy.port}"
        with connect("target.test", 80, proxy=url, timeout=IO) as sock:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        with connect("target.test", 80, proxy=url, timeout=IO, nodelay=False, keepalive=False) as sock:
            assert not sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert not sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)


def test_logging_at_debug_never_shows_the_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="socks_sansio")
    with microsocks_server(username="alice", password="pw-s3cret-42") as peer:
        url = f"socks5h://alice:pw-s3cret-42@{peer.url}"
        with echo_server() as target, connect(*target.address, proxy=url, timeout=IO) as sock:
            roundtrip(sock, 1024)
    assert "pw-s3cret-42" not in caplog.text
    assert "TCP connect" in caplog.text
    assert "ESTABLISHED" in caplog.text


# ------------------------------------------------------------------ real peers: microsocks


def test_microsocks_connect_one_mebibyte(microsocks: PeerServer, echo_target: ThreadedServer) -> None:
    with open_tunnel(*echo_target.address, proxy=f"socks5h://{microsocks.url}", timeout=IO) as tunnel:
        assert type(tunnel.socket) is socket.socket
        roundtrip(tunnel.socket)
        info = tunnel.info
        assert info.protocol is ProxyProtocol.SOCKS5
        assert info.target == Address(*echo_target.address)
        assert info.tls is False
        assert info.bound is not None
        assert 0 <= info.connect_time <= info.total_time
        assert 0 <= info.handshake_time <= info.total_time


def test_microsocks_auth(echo_target: ThreadedServer) -> None:
    with microsocks_server(username="alice", password="s3cret") as peer:
        with connect(*echo_target.address, proxy=f"socks5h://alice:s3cret@{peer.url}", timeout=IO) as sock:
            roundtrip(sock, 4096)
        with pytest.raises(ProxyAuthError):
            connect(*echo_target.address, proxy=f"socks5h://alice:wrong@{peer.url}", timeout=IO)
        with pytest.raises(ProxyAuthError):
            connect(*echo_target.address, proxy=f"socks5h://{peer.url}", timeout=IO)


def test_frames_through_a_tunnel(microsocks: PeerServer, echo_target: ThreadedServer) -> None:
    with open_tunnel(*echo_target.address, proxy=f"socks5h://{microsocks.url}", timeout=IO) as tunnel:
        messages = [b"", b"one", os.urandom(200_000)]
        for message in messages:
            tunnel.send_frame(message)
        assert [tunnel.receive_frame() for _ in messages] == messages
        # Frames never read past themselves: raw bytes after a frame stay readable.
        tunnel.send_frame(b"framed")
        tunnel.sendall(b"raw")
        assert tunnel.receive_frame() == b"framed"
        assert recv_all(tunnel.socket, 3) == b"raw"


def test_frame_decoder_reports_eof() -> None:
    with serve(socks5_connect_handler(SOCKS5_OK)) as proxy:
        with open_tunnel("target.test", 80, proxy=f"socks5h://127.0.0.1:{proxy.port}", timeout=IO) as tunnel:
            tunnel.send_frame(b"bye")
            tunnel.sendall(b"\x00\x00")  # half a length
            tunnel.shutdown_write()
            assert tunnel.receive_frame() == b"bye"
            with pytest.raises(RemoteProtocolError):
                tunnel.receive_frame()
        with open_tunnel("target.test", 80, proxy=f"socks5h://127.0.0.1:{proxy.port}", timeout=IO) as tunnel:
            tunnel.shutdown_write()
            with pytest.raises(EOFError):
                tunnel.receive_frame()


# ------------------------------------------------------------------ real peers: tinyproxy


def test_tinyproxy_connect(tinyproxy: PeerServer, echo_target: ThreadedServer) -> None:
    with connect(*echo_target.address, proxy=f"http://{tinyproxy.url}", timeout=IO) as sock:
        assert type(sock) is socket.socket
        roundtrip(sock)


def test_tinyproxy_basic_auth(echo_target: ThreadedServer) -> None:
    with tinyproxy_server(username="alice", password="s3cret") as peer:
        with connect(*echo_target.address, proxy=f"http://alice:s3cret@{peer.url}", timeout=IO) as sock:
            roundtrip(sock, 4096)
        with pytest.raises(ProxyAuthError):
            connect(*echo_target.address, proxy=f"http://alice:wrong@{peer.url}", timeout=IO)
        with pytest.raises(ProxyAuthError):
            connect(*echo_target.address, proxy=f"http://{peer.url}", timeout=IO)


def test_http_request_through_a_tunnel(tinyproxy: PeerServer, http_origin: tuple[str, int]) -> None:
    host, port = http_origin
    with open_tunnel(host, port, proxy=f"http://{tinyproxy.url}", timeout=IO) as tunnel:
        response = tunnel.http_request("GET", "/hello")
        assert response.status_code == 200
        assert response.body == f"hello from /hello; host {host}:{port}".encode()
        response = tunnel.http_request("POST", "/echo", headers=[("X-Test", "1")], body=b"posted body")
        assert (response.status_code, response.body) == (200, b"posted body")


def test_http_request_over_tls_in_tls(files: TLSFiles, https_proxy: ThreadedServer) -> None:
    handler = _Origin
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.socket = files.server_context().wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        with open_tunnel(
            "127.0.0.1", server.server_address[1], proxy=f"https://127.0.0.1:{https_proxy.port}",
            proxy_ssl=files.client_context(), ssl=files.client_context(), timeout=IO,
        ) as tunnel:
            assert isinstance(tunnel.socket, TLSInTLSSocket)
            response = tunnel.http_request("GET", "/secure")
            assert response.status_code == 200
            assert response.body.startswith(b"hello from /secure")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


# ------------------------------------------------------------------ real peers: dante


def test_dante_socks5_connect(dante: PeerServer, echo_target: ThreadedServer) -> None:
    with connect(*echo_target.address, proxy=f"socks5://{dante.url}", timeout=IO) as sock:
        roundtrip(sock, 256 * 1024)


def test_dante_pipelined(dante: PeerServer, echo_target: ThreadedServer) -> None:
    # Not microsocks: it reads the greeting with one recv() and drops what was pipelined after it.
    with connect(*echo_target.address, proxy=f"socks5://{dante.url}", timeout=IO, pipelined=True) as sock:
        roundtrip(sock, 4096)


def test_dante_socks4_connect(dante: PeerServer, echo_target: ThreadedServer) -> None:
    with connect(*echo_target.address, proxy=f"socks4://{dante.url}", timeout=IO) as sock:
        roundtrip(sock, 4096)


def test_dante_username_auth(echo_target: ThreadedServer) -> None:
    with dante_server(auth="username") as peer:
        url = f"socks5h://{DANTE_USER}:{DANTE_PASSWORD}@{peer.url}"
        with connect(*echo_target.address, proxy=url, timeout=IO) as sock:
            roundtrip(sock, 4096)
        with connect(*echo_target.address, proxy=url, timeout=IO, pipelined=True) as sock:
            roundtrip(sock, 4096)
        with pytest.raises(ProxyAuthError):
            connect(*echo_target.address, proxy=f"socks5h://{DANTE_USER}:wrong@{peer.url}", timeout=IO)


@pytest.mark.parametrize("scheme", ["socks5", "socks4"])
def test_dante_bind(dante: PeerServer, scheme: str) -> None:
    with open_bind(f"{scheme}://{dante.url}", expected_peer=Address("127.0.0.1", 0), timeout=IO) as listener:
        assert listener.address.port != 0
        with pytest.raises(ProxyTimeoutError):
            listener.accept(timeout=0.2)  # nobody yet; nothing is lost, accept again
        with socket.create_connection((listener.address.host_str, listener.address.port), IO) as remote:
            sock = listener.accept(timeout=IO)
            with sock:
                assert listener.peer == Address(*remote.getsockname())
                remote.sendall(b"from the remote")
                assert recv_all(sock, 15) == b"from the remote"
                sock.sendall(b"from the client")
                assert recv_exactly(remote, 15) == b"from the client"
        with pytest.raises(RuntimeError):
            listener.accept()


def test_dante_udp_associate(dante: PeerServer, udp_echo: tuple[str, int]) -> None:
    with open_udp_association(f"socks5://{dante.url}", timeout=IO) as association:
        assert association.relay.port != 0
        association.sendto(b"datagram one", udp_echo)
        assert association.recvfrom(timeout=IO) == (b"datagram one", Address(*udp_echo))
        association.sendto(b"x" * 1000, Address(*udp_echo))
        assert association.recvfrom(timeout=IO) == (b"x" * 1000, Address(*udp_echo))


# ------------------------------------------------------------------ scripted UDP relay


def udp_associate_handler(relay_port: int, close: threading.Event) -> Callable[[socket.socket], None]:
    """A SOCKS5 proxy answering UDP ASSOCIATE with relay 0.0.0.0:relay_port; closes the control on *close*."""

    def handler(conn: socket.socket) -> None:
        command, _ = read_socks5_request(conn)
        assert command == 3
        conn.sendall(b"\x05\x00\x00\x01\x00\x00\x00\x00" + relay_port.to_bytes(2, "big"))
        conn.settimeout(0.05)
        while not close.is_set():
            try:
                if not conn.recv(1024):
                    return
            except TimeoutError:
                continue

    return handler


def test_udp_drops_strangers_fragments_and_garbage() -> None:
    close = threading.Event()
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as relay,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger,
    ):
        relay.bind(("127.0.0.1", 0))
        relay.settimeout(IO)
        with (
            serve(udp_associate_handler(relay.getsockname()[1], close)) as proxy,
            open_udp_association(f"socks5h://127.0.0.1:{proxy.port}", timeout=IO) as association,
        ):
            assert association.relay == Address("127.0.0.1", relay.getsockname()[1])  # 0.0.0.0 replaced
            association.sendto(b"out", ("example.test", 53))
            packet, source = relay.recvfrom(65536)
            assert parse_udp_datagram(packet) == UdpDatagram(address=Address("example.test", 53), data=b"out")
            origin = Address("192.0.2.1", 7)
            good = encode_udp_datagram(UdpDatagram(address=origin, data=b"good"))
            stranger.sendto(good, source)
            relay.sendto(encode_udp_datagram(UdpDatagram(address=origin, data=b"frag", fragment=1)), source)
            relay.sendto(b"\x01\x00garbage", source)
            relay.sendto(good, source)
            assert association.recvfrom(timeout=IO) == (b"good", origin)
            with pytest.raises(TimeoutError):
                association.recvfrom(timeout=0.1)
            close.set()
            with pytest.raises(ProxyConnectionError):
                association.recvfrom(timeout=IO)


# ------------------------------------------------------------------ chains and TLS


def test_chain_microsocks_then_tinyproxy(
    microsocks: PeerServer, tinyproxy: PeerServer, echo_target: ThreadedServer
) -> None:
    chain = [f"socks5h://{microsocks.url}", f"http://{tinyproxy.url}"]
    with open_tunnel(*echo_target.address, proxy=chain, timeout=IO) as tunnel:
        assert type(tunnel.socket) is socket.socket
        roundtrip(tunnel.socket)
        assert tunnel.info.proxies == tuple(chain)
        assert tunnel.info.protocol is ProxyProtocol.HTTP


def test_chain_https_proxy_then_scripted_socks5(
    files: TLSFiles, https_proxy: ThreadedServer, echo_target: ThreadedServer
) -> None:
    seen: list[Address] = []
    with serve(socks5_forwarder(seen)) as socks:
        chain = [f"https://127.0.0.1:{https_proxy.port}", f"socks5h://127.0.0.1:{socks.port}"]
        with connect(*echo_target.address, proxy=chain, proxy_ssl=files.client_context(), timeout=IO) as sock:
            assert isinstance(sock, ssl.SSLSocket)
            roundtrip(sock, 256 * 1024)
    assert seen == [Address(*echo_target.address)]


def test_tls_to_the_target_through_a_proxy(
    files: TLSFiles, microsocks: PeerServer, tls_target: ThreadedServer
) -> None:
    with open_tunnel(
        "127.0.0.1", tls_target.port, proxy=f"socks5h://{microsocks.url}", ssl=files.client_context(), timeout=IO
    ) as tunnel:
        assert isinstance(tunnel.socket, ssl.SSLSocket)
        assert tunnel.info.tls is True
        assert tunnel.info.tls_time > 0
        roundtrip(tunnel.socket)


def test_server_hostname_is_checked(files: TLSFiles, microsocks: PeerServer, tls_target: ThreadedServer) -> None:
    url = f"socks5h://{microsocks.url}"
    ctx = files.client_context()
    with connect("127.0.0.1", tls_target.port, proxy=url, ssl=ctx, server_hostname="target.test", timeout=IO):
        pass
    with pytest.raises(ssl.SSLCertVerificationError):
        connect("127.0.0.1", tls_target.port, proxy=url, ssl=ctx, server_hostname="other.test", timeout=IO)
    with pytest.raises(ssl.SSLCertVerificationError):  # not trusted: the target's error, as it is
        connect("127.0.0.1", tls_target.port, proxy=url, ssl=ssl.create_default_context(), timeout=IO)


def test_tls_to_an_https_proxy(files: TLSFiles, https_proxy: ThreadedServer, echo_target: ThreadedServer) -> None:
    url = f"https://127.0.0.1:{https_proxy.port}"
    with open_tunnel(*echo_target.address, proxy=url, proxy_ssl=files.client_context(), timeout=IO) as tunnel:
        assert isinstance(tunnel.socket, ssl.SSLSocket)
        assert tunnel.info.tls is False
        roundtrip(tunnel.socket)
        with pytest.raises(NotImplementedError):
            tunnel.shutdown_write()


def test_untrusted_https_proxy_is_a_connection_error(
    https_proxy: ThreadedServer, echo_target: ThreadedServer
) -> None:
    with pytest.raises(ProxyConnectionError) as caught:
        connect(*echo_target.address, proxy=f"https://127.0.0.1:{https_proxy.port}", timeout=IO)
    assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)


def test_tls_in_tls(files: TLSFiles, https_proxy: ThreadedServer, tls_target: ThreadedServer) -> None:
    with connect(
        "127.0.0.1", tls_target.port, proxy=f"https://127.0.0.1:{https_proxy.port}",
        proxy_ssl=files.client_context(), ssl=files.client_context(), timeout=IO,
    ) as sock:
        assert isinstance(sock, TLSInTLSSocket)
        assert sock.version() is not None
        assert sock.server_hostname == "127.0.0.1"
        assert sock.getpeername()[1] == https_proxy.port
        roundtrip(sock)
        sock.sendall(b"into")
        buffer = bytearray(10)
        count = 0
        while count < 4:
            count += sock.recv_into(memoryview(buffer)[count:])
        assert buffer[:4] == b"into"
        assert sock.send(b"x" * 20000) == 16384
        assert len(recv_all(sock, 16384)) == 16384
        assert sock.pending() == 0


def test_tls_on_an_inner_hop_then_tls_in_tls(
    files: TLSFiles, microsocks: PeerServer, https_proxy: ThreadedServer, tls_target: ThreadedServer
) -> None:
    chain = [f"socks5h://{microsocks.url}", f"https://127.0.0.1:{https_proxy.port}"]
    ctx = files.client_context()
    with connect("127.0.0.1", tls_target.port, proxy=chain, proxy_ssl=ctx, ssl=ctx, timeout=IO) as sock:
        assert isinstance(sock, TLSInTLSSocket)
        roundtrip(sock, 256 * 1024)


def test_tls_in_tls_half_close_with_close_notify(files: TLSFiles, https_proxy: ThreadedServer) -> None:
    def handler(conn: socket.socket) -> None:
        with files.server_context().wrap_socket(conn, server_side=True) as tls:
            received = b""
            while chunk := tls.recv(65536):  # until our close_notify
                received += chunk
            tls.sendall(b"got %d octets after your EOF" % len(received))

    with serve(handler) as target:
        ctx = files.client_context()
        url = f"https://127.0.0.1:{https_proxy.port}"
        with open_tunnel("127.0.0.1", target.port, proxy=url, proxy_ssl=ctx, ssl=ctx, timeout=IO) as tunnel:
            tunnel.sendall(b"y" * 5000)
            tunnel.shutdown_write()
            tunnel.shutdown_write()  # idempotent
            # Read exactly the answer: the tls_forwarder cannot pass the target's EOF on over TLS.
            assert recv_all(tunnel.socket, 30) == b"got 5000 octets after your EOF"


def test_tls_in_tls_half_close_keeps_unread_octets(files: TLSFiles, https_proxy: ThreadedServer) -> None:
    def handler(conn: socket.socket) -> None:
        with files.server_context().wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"z" * 40000)  # before the client's close_notify, so it is unread then
            while tls.recv(65536):
                pass
            tls.sendall(b"end")

    with serve(handler) as target:
        ctx = files.client_context()
        url = f"https://127.0.0.1:{https_proxy.port}"
        with connect("127.0.0.1", target.port, proxy=url, proxy_ssl=ctx, ssl=ctx, timeout=IO) as sock:
            assert isinstance(sock, TLSInTLSSocket)
            assert recv_all(sock, 10) == b"z" * 10
            time.sleep(0.1)  # the rest is in flight or buffered in every layer
            sock.shutdown(socket.SHUT_WR)
            assert recv_all(sock, 39993) == b"z" * 39990 + b"end"


def test_three_tls_layers(files: TLSFiles, tinyproxy: PeerServer, tls_target: ThreadedServer) -> None:
    with (
        serve(tls_forwarder(files, tinyproxy.address)) as first,
        serve(tls_forwarder(files, tinyproxy.address)) as second,
    ):
        chain = [f"https://127.0.0.1:{first.port}", f"https://127.0.0.1:{second.port}"]
        ctx = files.client_context()
        with connect("127.0.0.1", tls_target.port, proxy=chain, proxy_ssl=ctx, ssl=ctx, timeout=IO) as sock:
            assert isinstance(sock, TLSInTLSSocket)
            roundtrip(sock, 128 * 1024)


def test_wrap_tls_over_every_kind_of_socket(
    files: TLSFiles, https_proxy: ThreadedServer, tls_target: ThreadedServer
) -> None:
    ctx = files.client_context()
    plain = connect("127.0.0.1", tls_target.port, timeout=IO)
    with wrap_tls(plain, ctx, server_hostname="localhost", timeout=IO) as tls:
        assert isinstance(tls, ssl.SSLSocket)
        roundtrip(tls, 1024)
    outer = connect(
        "127.0.0.1", tls_target.port, proxy=f"https://127.0.0.1:{https_proxy.port}", proxy_ssl=ctx, timeout=IO
    )
    with wrap_tls(outer, ctx, server_hostname="localhost", timeout=IO) as inner:
        assert isinstance(inner, TLSInTLSSocket)
        assert inner.gettimeout() == IO
        roundtrip(inner, 1024)
    outer = connect(
        "127.0.0.1", tls_target.port, proxy=f"https://127.0.0.1:{https_proxy.port}", proxy_ssl=ctx, timeout=IO
    )
    with pytest.raises(ssl.SSLCertVerificationError):
        wrap_tls(outer, ctx, server_hostname="wrong.test", timeout=IO)


def test_http_request_leaves_what_follows_the_response_in_the_socket() -> None:
    """Bytes the target sends right after its response (same segment) are not lost."""

    def target(conn: socket.socket) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloAFTER THE RESPONSE")

    with serve(socks5_connect_handler(SOCKS5_OK, after=target)) as proxy, open_tunnel(
        "example.test", 80, proxy=f"socks5h://127.0.0.1:{proxy.port}", timeout=10
    ) as tunnel:
        response = tunnel.http_request("GET", "/")
        assert (response.status_code, response.body) == (200, b"hello")
        rest = b""
        while len(rest) < len(b"AFTER THE RESPONSE"):
            chunk = tunnel.recv(100)
            if not chunk:
                break
            rest += chunk
        assert rest == b"AFTER THE RESPONSE"

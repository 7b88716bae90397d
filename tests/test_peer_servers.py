"""Smoke tests: the real peers in tests/peer_servers.py start and proxy on loopback.

The clients here are curl and hand-written SOCKS5 / HTTP CONNECT exchanges on
raw sockets, not socks_sansio: these tests prove the peers (and their configs)
work, so that interop tests of our own code against them mean something.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import os
import socket
import socketserver
import struct
import subprocess
import threading
from typing import TYPE_CHECKING, cast

import pytest

from . import peer_servers
from .peer_servers import (
    DANTE_PASSWORD,
    DANTE_USER,
    HOST,
    PeerServer,
    dante_server,
    microsocks_server,
    process_group_alive,
    require_binary,
    tinyproxy_server,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

IO_TIMEOUT = 5.0
ORIGIN_BODY = b"hello from the loopback origin\n"

# ------------------------------------------------------------ loopback targets


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(IO_TIMEOUT)
        with contextlib.suppress(OSError):
            while data := self.request.recv(65536):
                self.request.sendall(data)


class _ThreadingTCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False


class _OriginHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(ORIGIN_BODY)))
        self.end_headers()
        self.wfile.write(ORIGIN_BODY)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _ThreadingHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


@contextlib.contextmanager
def _serving(server: socketserver.BaseServer) -> Iterator[tuple[str, int]]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        host, port = cast("tuple[str, int]", server.server_address)[:2]
        yield (host, port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=IO_TIMEOUT)


@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    """A TCP echo server on 127.0.0.1:<free>."""
    with _serving(_ThreadingTCPServer((HOST, 0), _EchoHandler)) as address:
        yield address


@pytest.fixture
def origin() -> Iterator[str]:
    """An HTTP origin on 127.0.0.1:<free>; yields its base URL."""
    with _serving(_ThreadingHTTPServer((HOST, 0), _OriginHandler)) as (host, port):
        yield f"http://{host}:{port}/"


@pytest.fixture
def udp_echo_server() -> Iterator[tuple[str, int]]:
    """A UDP echo server on 127.0.0.1:<free>."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.settimeout(0.1)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            sock.sendto(data, peer)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()
    finally:
        stop.set()
        thread.join(timeout=IO_TIMEOUT)
        sock.close()


# ------------------------------------------------------------------ the clients


def _curl(*args: str) -> subprocess.CompletedProcess[str]:
    curl = require_binary("curl")
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return subprocess.run(
        [curl, "-q", "--silent", "--show-error", "--max-time", "5", *args],
        capture_output=True,
        text=True,
        timeout=15,
        env=env,
        check=False,
    )


def _curl_ok(peer: PeerServer, *args: str) -> None:
    result = _curl(*args)
    assert result.returncode == 0, f"curl failed: {result.stderr}\n{peer.read_logs()}"
    assert result.stdout.encode() == ORIGIN_BODY


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"peer closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def _socks5_greet(sock: socket.socket, auth: tuple[str, str] | None) -> int:
    """Offer one method (no-auth, or username/password); return the chosen one."""
    method = 0x02 if auth else 0x00
    sock.sendall(bytes([5, 1, method]))
    version, chosen = _recv_exact(sock, 2)
    assert version == 5
    if chosen == 0x02 and auth:
        user, password = (part.encode() for part in auth)
        sock.sendall(bytes([1, len(user)]) + user + bytes([len(password)]) + password)
        _, status = _recv_exact(sock, 2)
        if status != 0:
            return -1
    return chosen


def _socks5_request(sock: socket.socket, command: int, host: str, port: int) -> tuple[int, str, int]:
    """Send a request with an IPv4 address; return (reply code, bound host, bound port)."""
    sock.sendall(bytes([5, command, 0, 1]) + socket.inet_aton(host) + struct.pack("!H", port))
    return _socks5_reply(sock)


def _socks5_reply(sock: socket.socket) -> tuple[int, str, int]:
    version, rep, _, atyp = _recv_exact(sock, 4)
    assert version == 5
    if atyp == 1:
        bound = socket.inet_ntoa(_recv_exact(sock, 4))
    elif atyp == 4:
        bound = socket.inet_ntop(socket.AF_INET6, _recv_exact(sock, 16))
    else:
        bound = _recv_exact(sock, _recv_exact(sock, 1)[0]).decode()
    (bound_port,) = struct.unpack("!H", _recv_exact(sock, 2))
    return rep, bound, bound_port


def _socks5_connect(peer: PeerServer, target: tuple[str, int], auth: tuple[str, str] | None = None) -> socket.socket:
    sock = socket.create_connection(peer.address, timeout=IO_TIMEOUT)
    try:
        assert _socks5_greet(sock, auth) == (0x02 if auth else 0x00)
        rep, _, _ = _socks5_request(sock, 1, *target)
        assert rep == 0, f"CONNECT refused with {rep}\n{peer.read_logs()}"
    except BaseException:
        sock.close()
        raise
    return sock


def _assert_echoes(sock: socket.socket, payload: bytes = b"ping through the proxy") -> None:
    sock.sendall(payload)
    assert _recv_exact(sock, len(payload)) == payload


def _http_connect(
    peer: PeerServer, target: tuple[str, int], auth: tuple[str, str] | None = None
) -> tuple[socket.socket, bytes]:
    """Send CONNECT; return the socket and the response head (status line + headers)."""
    sock = socket.create_connection(peer.address, timeout=IO_TIMEOUT)
    authority = f"{target[0]}:{target[1]}"
    request = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request += f"Proxy-Authorization: Basic {token}\r\n"
    sock.sendall((request + "\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)  # byte by byte: nothing past the head is consumed
        if not chunk:
            break
        head += chunk
    return sock, head


def _status(head: bytes) -> int:
    return int(head.split(b" ", 2)[1])


# ------------------------------------------------------------------ microsocks


def test_microsocks_connect_no_auth(echo_server: tuple[str, int], origin: str) -> None:
    with microsocks_server() as peer:
        _curl_ok(peer, "--socks5-hostname", peer.url, origin)
        with _socks5_connect(peer, echo_server) as sock:
            _assert_echoes(sock)


def test_microsocks_connect_with_auth(echo_server: tuple[str, int], origin: str) -> None:
    with microsocks_server(username="alice", password="s3cret") as peer:
        _curl_ok(peer, "--socks5", peer.url, "--proxy-user", "alice:s3cret", origin)
        assert _curl("--socks5", peer.url, "--proxy-user", "alice:wrong", origin).returncode != 0
        with _socks5_connect(peer, echo_server, auth=("alice", "s3cret")) as sock:
            _assert_echoes(sock)
        # No -1 (auth-once): after a successful login, no-auth is still refused.
        with socket.create_connection(peer.address, timeout=IO_TIMEOUT) as sock:
            assert _socks5_greet(sock, None) == 0xFF


# ----------------------------------------------------------------------- dante


def test_dante_connect_no_auth(echo_server: tuple[str, int], origin: str) -> None:
    with dante_server() as peer:
        _curl_ok(peer, "--socks5-hostname", peer.url, origin)
        # Dante's server speaks SOCKS4 but not 4a (a 4a request reads as 0.0.0.x).
        _curl_ok(peer, "--socks4", peer.url, origin)
        with _socks5_connect(peer, echo_server) as sock:
            _assert_echoes(sock)
        # A domain name is resolved by Dante and then matched against the rules.
        with socket.create_connection(peer.address, timeout=IO_TIMEOUT) as sock:
            assert _socks5_greet(sock, None) == 0
            name = b"localhost"
            sock.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack("!H", echo_server[1]))
            rep, _, _ = _socks5_reply(sock)
            assert rep == 0, peer.read_logs()
            _assert_echoes(sock)


def test_dante_username_auth(echo_server: tuple[str, int], origin: str) -> None:
    with dante_server("username") as peer:
        assert (peer.username, peer.password) == (DANTE_USER, DANTE_PASSWORD)
        credentials = f"{DANTE_USER}:{DANTE_PASSWORD}"
        _curl_ok(peer, "--socks5", peer.url, "--proxy-user", credentials, origin)
        wrong = _curl("--socks5", peer.url, "--proxy-user", f"{DANTE_USER}:wrong", origin)
        assert wrong.returncode != 0
        with _socks5_connect(peer, echo_server, auth=(DANTE_USER, DANTE_PASSWORD)) as sock:
            _assert_echoes(sock)
        with socket.create_connection(peer.address, timeout=IO_TIMEOUT) as sock:
            assert _socks5_greet(sock, None) == 0xFF


def test_dante_udp_associate(udp_echo_server: tuple[str, int]) -> None:
    with (
        dante_server() as peer,
        socket.create_connection(peer.address, timeout=IO_TIMEOUT) as control,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
    ):
        udp.bind((HOST, 0))
        udp.settimeout(IO_TIMEOUT)
        assert _socks5_greet(control, None) == 0
        # Announce the address we will send from, as RFC 1928 suggests.
        rep, relay_host, relay_port = _socks5_request(control, 3, *udp.getsockname())
        assert rep == 0, peer.read_logs()
        assert relay_port != 0
        relay = ("127.0.0.1" if relay_host == "0.0.0.0" else relay_host, relay_port)

        target_host, target_port = udp_echo_server
        header = b"\x00\x00\x00\x01" + socket.inet_aton(target_host) + struct.pack("!H", target_port)
        udp.sendto(header + b"datagram one", relay)
        data, source = udp.recvfrom(65536)
        assert source == relay
        assert data == header + b"datagram one", peer.read_logs()


def test_dante_bind(echo_server: tuple[str, int]) -> None:
    with (
        dante_server() as peer,
        socket.create_connection(peer.address, timeout=IO_TIMEOUT) as control,
    ):
        assert _socks5_greet(control, None) == 0
        # DST.ADDR of BIND is the host expected to connect back.
        rep, bound_host, bound_port = _socks5_request(control, 2, HOST, 0)
        assert rep == 0, peer.read_logs()
        assert bound_port != 0
        with socket.create_connection((bound_host, bound_port), timeout=IO_TIMEOUT) as remote:
            rep, peer_host, peer_port = _socks5_reply(control)
            assert rep == 0, peer.read_logs()
            assert (peer_host, peer_port) == remote.getsockname()
            remote.sendall(b"from the remote")
            assert _recv_exact(control, 15) == b"from the remote"
            control.sendall(b"from the client")
            assert _recv_exact(remote, 15) == b"from the client"


# ------------------------------------------------------------------- tinyproxy


def test_tinyproxy_connect_no_auth(echo_server: tuple[str, int], origin: str) -> None:
    with tinyproxy_server() as peer:
        _curl_ok(peer, "--proxytunnel", "--proxy", f"http://{peer.url}", origin)
        sock, head = _http_connect(peer, echo_server)
        with sock:
            assert _status(head) == 200, head
            _assert_echoes(sock)


def test_tinyproxy_basic_auth(echo_server: tuple[str, int], origin: str) -> None:
    proxy = ("--proxytunnel", "--proxy")
    with tinyproxy_server(username="alice", password="s3cret") as peer:
        url = f"http://{peer.url}"
        _curl_ok(peer, *proxy, url, "--proxy-user", "alice:s3cret", origin)
        assert _curl(*proxy, url, origin).returncode != 0

        sock, head = _http_connect(peer, echo_server, auth=("alice", "s3cret"))
        with sock:
            assert _status(head) == 200, head
            _assert_echoes(sock)
        sock, head = _http_connect(peer, echo_server)
        with sock:
            assert _status(head) == 407, head
            assert b"Proxy-Authenticate: Basic" in head
        # tinyproxy 1.11 answers wrong credentials with 401, not 407.
        sock, head = _http_connect(peer, echo_server, auth=("alice", "wrong"))
        with sock:
            assert _status(head) in (401, 407), head


# --------------------------------------------------------------------- helpers


def test_peer_is_gone_after_exit() -> None:
    with dante_server() as peer:
        workdir, pid = peer.workdir, peer.pid
        assert workdir.exists()
    assert not workdir.parent.exists()
    assert not process_group_alive(pid)  # the mother and all of its children
    with pytest.raises(OSError):  # noqa: PT011 - refused, whatever the errno
        socket.create_connection(peer.address, timeout=1).close()


@pytest.mark.parametrize("start", [microsocks_server, dante_server, tinyproxy_server])
def test_lost_port_race_is_retried(
    start: Callable[[], contextlib.AbstractContextManager[PeerServer]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as squatter:
        squatter.bind((HOST, 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        real_free_port = peer_servers.free_port
        monkeypatch.setattr(peer_servers, "free_port", lambda: next(ports, None) or real_free_port())
        with start() as peer:
            assert peer.port != taken
            assert peer_servers.group_owns_listener(peer.pid, peer.port)


def test_missing_binary_fails_under_ci_and_skips_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "no-such-peer-binary-3f9a"
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"install-peers\.sh"):
        require_binary(name)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match=r"install-peers\.sh"):
        require_binary(name)

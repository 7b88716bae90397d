"""Interop with a real PROXY protocol sender: HAProxy (2.6, Debian) in front of a test server.

HAProxy runs in the foreground (``-db``) in its own process group, ``mode
tcp``, its frontend on a free loopback port and its backend pointing at a
small threaded TCP server. That server reads the header with
:class:`ProxyHeaderReader`, asking the socket for exactly ``read_size_hint``
octets at a time, then reads the rest of the connection with plain
``recv``: so every octet after the header must come out of the socket, never
out of the reader. A plain client connects to HAProxy from a known port.

Without haproxy the tests skip, and fail when ``CI`` is set
(:func:`tests.peer_servers.require_binary`); ``.ci/install-peers.sh`` installs it.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from socks_sansio import NEED_DATA, Address, RemoteProtocolError
from socks_sansio._proxy_protocol import (
    ProxyCommand,
    ProxyFamily,
    ProxyHeader,
    ProxyHeaderReader,
    ProxyTLVType,
    encode_proxy_header,
)
from tests.peer_servers import HOST, free_port, group_owns_listener, require_binary, wait_for_port

TIMEOUT = 10.0
PAYLOAD = b"hello through haproxy\r\n" + bytes(range(256)) * 64  # 16 KiB and a bit: several segments

CONFIG = """\
global
    log stderr format raw local0 info
defaults
    mode tcp
    log global
    option tcplog
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend fe
    bind {host}:{port}
    unique-id-format uid-%ci-%cp
    default_backend be
backend be
    server s1 {host}:{backend_port} {options}
"""


@dataclass
class Received:
    """What the test server saw on one connection."""

    peer: tuple[str, int]
    local: tuple[str, int]
    raw: bytes = b""
    header: ProxyHeader | None = None
    error: str | None = None
    payload: bytes = b""
    payload_error: str | None = None  # e.g. a reset after the header (HAProxy's health checks)
    hints: list[int] = field(default_factory=list)


class HeaderServer:
    """A threaded TCP server on 127.0.0.1:0 that reads a PROXY header by ``read_size_hint``, then until EOF."""

    def __init__(self) -> None:
        self.listener = socket.create_server((HOST, 0))
        self.listener.settimeout(0.2)
        self.address: tuple[str, int] = self.listener.getsockname()
        self.results: queue.Queue[Received] = queue.Queue()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        accept = threading.Thread(target=self._accept, name="proxy-header-server", daemon=True)
        accept.start()
        self.threads.append(accept)

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, peer = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            worker = threading.Thread(target=self._handle, args=(conn, peer), daemon=True)
            worker.start()
            self.threads.append(worker)

    def _handle(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        with conn:
            conn.settimeout(TIMEOUT)
            got = Received(peer=peer, local=conn.getsockname())
            reader = ProxyHeaderReader()
            raw = bytearray()
            try:
                while (event := reader.next_event()) is NEED_DATA:
                    hint = reader.read_size_hint
                    got.hints.append(hint)
                    data = conn.recv(hint)
                    assert len(data) <= hint
                    raw += data
                    reader.receive_data(data)
                assert isinstance(event, ProxyHeader)
                got.header = event
                got.raw = bytes(raw)
                leftover, eof = reader.trailing_data
                if leftover or eof:
                    got.error = f"the reader read past the header: {reader.trailing_data!r}"
                payload = bytearray(leftover)
                try:
                    while chunk := conn.recv(65536):
                        payload += chunk
                except OSError as exc:
                    got.payload_error = repr(exc)
                got.payload = bytes(payload)
            except (OSError, RemoteProtocolError, AssertionError) as exc:
                got.raw = bytes(raw)
                got.error = repr(exc)
            self.results.put(got)

    def wait_for(self, matches: Callable[[Received], object], timeout: float = TIMEOUT) -> Received:
        """The first connection for which ``matches(received)`` is true (others are dropped)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                got = self.results.get(timeout=left)
            except queue.Empty:
                break
            if matches(got):
                return got
        pytest.fail(f"no matching connection reached the test server within {timeout}s")

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        for thread in list(self.threads):
            thread.join(TIMEOUT)


@pytest.fixture
def header_server() -> Iterator[HeaderServer]:
    server = HeaderServer()
    try:
        yield server
    finally:
        server.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(TIMEOUT)


def _listening(proc: subprocess.Popen[bytes], port: int) -> bool:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        owns = group_owns_listener(proc.pid, port)
        if owns is None:  # no /proc: probe (the test server ignores connections it was not waiting for)
            return wait_for_port(HOST, port, deadline - time.monotonic(), alive=lambda: proc.poll() is None)
        if owns:
            return True
        time.sleep(0.02)
    return False


@contextlib.contextmanager
def haproxy(tmp_path: Path, backend: tuple[str, int], options: str) -> Iterator[int]:
    """HAProxy forwarding a free loopback port to *backend* with the server *options*; yields the port."""
    binary = require_binary("haproxy")
    procs: list[subprocess.Popen[bytes]] = []
    failures = []
    try:
        for attempt in (1, 2):  # the free port may be taken before haproxy binds it: retry once
            port = free_port()
            config = tmp_path / f"haproxy-{attempt}.cfg"
            config.write_text(CONFIG.format(host=HOST, port=port, backend_port=backend[1], options=options))
            log = tmp_path / f"haproxy-{attempt}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen([binary, "-db", "-f", str(config)], stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True)
            procs.append(proc)
            if _listening(proc, port):
                yield port
                return
            _stop(proc)
            failures.append(f"attempt {attempt} on port {port}: exit {proc.returncode}\n{log.read_text()}")
        pytest.fail("haproxy did not start:\n" + "\n".join(failures))
    finally:
        for proc in procs:
            _stop(proc)


def relay(port: int) -> tuple[str, int]:
    """Connect to HAProxy from a known local port, send PAYLOAD, half-close; return our address."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.bind((HOST, 0))
        ours: tuple[str, int] = sock.getsockname()
        sock.connect((HOST, port))
        sock.sendall(PAYLOAD)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)  # wait for HAProxy to close once the server did: the payload has been delivered
    return ours


def relayed_through(tmp_path: Path, server: HeaderServer, options: str) -> tuple[Received, tuple[str, int], int]:
    with haproxy(tmp_path, server.address, options) as port:
        ours = relay(port)
        got = server.wait_for(lambda r: (r.header is not None and r.header.source == Address(*ours)) or r.error)
    assert got.error is None and got.payload_error is None, got
    return got, ours, port


def test_send_proxy_v1(tmp_path: Path, header_server: HeaderServer) -> None:
    got, ours, port = relayed_through(tmp_path, header_server, "send-proxy")
    assert got.header == ProxyHeader(version=1, family=ProxyFamily.TCP4, source=Address(*ours),
                                     destination=Address(HOST, port))
    assert got.raw == f"PROXY TCP4 {HOST} {HOST} {ours[1]} {port}\r\n".encode()
    assert encode_proxy_header(got.header) == got.raw
    assert got.payload == PAYLOAD
    assert got.hints[0] == 15 and len(got.hints) < len(got.raw) // 3  # a few reads, not one per octet


def test_send_proxy_v2(tmp_path: Path, header_server: HeaderServer) -> None:
    got, ours, port = relayed_through(tmp_path, header_server, "send-proxy-v2")
    assert got.header is not None
    assert (got.header.version, got.header.command, got.header.family) == (2, ProxyCommand.PROXY, ProxyFamily.TCP4)
    assert (got.header.source, got.header.destination) == (Address(*ours), Address(HOST, port))
    assert encode_proxy_header(got.header) == got.raw  # our encoder writes what HAProxy writes
    assert got.payload == PAYLOAD
    assert got.hints == [15, 1, len(got.raw) - 16]


def test_send_proxy_v2_with_crc32c_and_unique_id(tmp_path: Path, header_server: HeaderServer) -> None:
    got, ours, port = relayed_through(tmp_path, header_server, "send-proxy-v2 proxy-v2-options crc32c,unique-id")
    header = got.header
    assert header is not None
    assert (header.source, header.destination) == (Address(*ours), Address(HOST, port))
    assert [kind for kind, _ in header.tlvs] == [ProxyTLVType.CRC32C, ProxyTLVType.UNIQUE_ID]
    assert header.tlv(ProxyTLVType.UNIQUE_ID) == f"uid-{HOST}-{ours[1]}".encode()
    # The reader verified HAProxy's checksum (a mismatch is an error), and computes the same one.
    assert encode_proxy_header(header) == got.raw
    damaged = bytearray(got.raw)
    damaged[-1] ^= 1
    reader = ProxyHeaderReader()
    reader.receive_data(bytes(damaged))
    with pytest.raises(RemoteProtocolError, match="CRC32C"):
        reader.next_event()
    assert got.payload == PAYLOAD


@pytest.mark.parametrize("options", ["send-proxy-v2 check check-send-proxy inter 200ms",
                                     "send-proxy check check-send-proxy inter 200ms"])
def test_health_checks(tmp_path: Path, header_server: HeaderServer, options: str) -> None:
    with haproxy(tmp_path, header_server.address, options):
        got = header_server.wait_for(lambda r: True)
    assert got.error is None, got
    if "v2" in options:  # a check is the proxy's own connection: LOCAL, no address (§2.2)
        assert got.header == ProxyHeader(version=2, command=ProxyCommand.LOCAL, family=ProxyFamily.UNSPEC)
    else:  # version 1 has no LOCAL: HAProxy describes the check connection itself (§2.1)
        assert got.header == ProxyHeader(version=1, family=ProxyFamily.TCP4, source=Address(*got.peer),
                                         destination=Address(*got.local))
    assert encode_proxy_header(got.header) == got.raw
    assert got.payload == b""

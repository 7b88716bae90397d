"""Behind a balancer, on both backends: the PROXY header in (trusted only from its sources) and out.

A raw client plays the balancer: it sends a PROXY header (v1 or v2) naming
another client, then SOCKS5. The header is believed only from a
``--proxy-protocol-from`` network; from anywhere else a header is refused.
``--upstream-proxy-protocol`` makes the server send a v2 header to the target,
read here with the core's own :class:`ProxyHeaderReader`. (The real HAProxy
runs in tests/fleet.)
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from socks_sansio import (
    NEED_DATA,
    Address,
    ProxyCommand,
    ProxyFamily,
    ProxyHeader,
    ProxyHeaderReader,
    encode_proxy_header,
)

from .conftest import HOST, TIMEOUT, ProxyFactory, connect, read_until_eof, recv_exactly, socks5_open

CLAIMED = ("192.0.2.55", 40404)


def header(version: int, command: ProxyCommand = ProxyCommand.PROXY) -> bytes:
    if command is ProxyCommand.LOCAL:
        return encode_proxy_header(ProxyHeader(version=version, family=ProxyFamily.UNSPEC, command=command))
    return encode_proxy_header(ProxyHeader(
        version=version, family=ProxyFamily.TCP4, source=Address(*CLAIMED), destination=Address(HOST, 1080)
    ))  # fmt: skip


@pytest.fixture
def target() -> Iterator[tuple[int, list[ProxyHeader], list[bytes]]]:
    """A TCP target that reads a PROXY header (if any) and echoes what follows; records both."""
    listener = socket.create_server((HOST, 0))
    listener.settimeout(TIMEOUT)
    headers: list[ProxyHeader] = []
    payloads: list[bytes] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(TIMEOUT)
            reader = ProxyHeaderReader()
            while reader.next_event() is NEED_DATA:
                reader.receive_data(conn.recv(reader.read_size_hint))
            assert reader.header is not None
            headers.append(reader.header)
            data = reader.trailing_data[0] + conn.recv(4 - len(reader.trailing_data[0]))
            payloads.append(data)
            conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], headers, payloads
    finally:
        listener.close()
        thread.join(TIMEOUT)


@pytest.mark.parametrize("version", [1, 2])
def test_the_balancers_header_names_the_client(start_proxy: ProxyFactory, echo: object, version: int) -> None:
    proxy = start_proxy("--proxy-protocol-from", f"{HOST}/32", "--deny", "from=192.0.2.66/32")
    with connect(proxy.address) as sock:
        sock.sendall(header(version))
        rep, _ = socks5_open(sock, 1, HOST, echo.port)  # type: ignore[attr-defined]
        assert rep == 0
        sock.sendall(b"ping")
        assert recv_exactly(sock, 4) == b"ping"
    line = proxy.wait_log("outcome=ok")
    assert f"{CLAIMED[0]}:{CLAIMED[1]} user=-" in line, "the client is the header's source, not the balancer"


def test_a_local_header_keeps_the_balancers_address(start_proxy: ProxyFactory, echo: object) -> None:
    proxy = start_proxy("--proxy-protocol-from", f"{HOST}/32")
    with connect(proxy.address) as sock:
        sock.sendall(header(2, ProxyCommand.LOCAL))
        assert socks5_open(sock, 1, HOST, echo.port)[0] == 0  # type: ignore[attr-defined]
    assert f"{HOST}:" in proxy.wait_log("outcome=ok").split("outcome=ok")[0].splitlines()[-1]


def test_a_header_from_anyone_else_is_refused(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy()  # no --proxy-protocol-from: a header is a claim nobody may make
    with connect(proxy.address) as sock:
        sock.sendall(header(1) + b"\x05\x01\x00")
        assert read_until_eof(sock) == b""
    assert "not a configured balancer" in proxy.wait_log("outcome=protocol error")


def test_no_header_from_the_balancer_is_refused(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy("--proxy-protocol-from", f"{HOST}/32")
    with connect(proxy.address) as sock:
        sock.sendall(b"\x05\x01\x00")  # SOCKS5 straight away: the balancer must speak first
        assert read_until_eof(sock) == b""
    assert "PROXY header" in proxy.wait_log("outcome=protocol error")


def test_the_header_goes_out_to_a_directly_dialled_target(
    start_proxy: ProxyFactory, target: tuple[int, list[ProxyHeader], list[bytes]]
) -> None:
    port, headers, payloads = target
    proxy = start_proxy("--upstream-proxy-protocol")
    with connect(proxy.address) as sock:
        assert socks5_open(sock, 1, HOST, port)[0] == 0
        sock.sendall(b"data")
        assert recv_exactly(sock, 4) == b"data"
        client = sock.getsockname()
    proxy.wait_log("outcome=ok")
    assert headers[0].command is ProxyCommand.PROXY and headers[0].version == 2
    assert headers[0].source == Address(client[0], client[1])
    assert headers[0].destination == Address(HOST, port)
    assert payloads == [b"data"], "the tunnel's first octets follow the header, none lost"

"""The delay forwarder of the pool benchmark (``bench._server_util.delay_process``) forwards faithfully.

Only what it passes on is checked (order per direction, half-close both ways,
closing): how long it delays is a timing and is not asserted.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from bench._server_util import delay_process

TIMEOUT = 10.0


@pytest.fixture
def upstream() -> Iterator[tuple[socket.socket, list[bytes]]]:
    """A one-connection server: reads to EOF, answers b"got:" + what it read, then half-closes and waits for EOF."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(TIMEOUT)
    received: list[bytes] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(TIMEOUT)
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
            received.append(data)
            conn.sendall(b"got:" + data)
            conn.shutdown(socket.SHUT_WR)
            conn.recv(1)  # EOF once the forwarder closes its side

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener, received
    finally:
        listener.close()
        thread.join(TIMEOUT)


def test_forwards_in_order_and_passes_half_closes_on(upstream: tuple[socket.socket, list[bytes]]) -> None:
    listener, received = upstream
    parts = [bytes([65 + i]) * (i + 1) for i in range(20)]
    with (
        delay_process(listener.getsockname(), 0.002) as forwarder,
        socket.create_connection(forwarder.address, timeout=TIMEOUT) as sock,
    ):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for part in parts:
            sock.sendall(part)
        sock.shutdown(socket.SHUT_WR)  # the upstream answers only after this EOF reached it
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert received == [b"".join(parts)]
    assert answer == b"got:" + b"".join(parts)


def test_a_refused_upstream_closes_the_client() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        address = unused.getsockname()  # bound, not listening: connects are refused
        with (
            delay_process(address, 0.001) as forwarder,
            socket.create_connection(forwarder.address, timeout=TIMEOUT) as sock,
            contextlib.suppress(ConnectionResetError),  # a reset is a close too
        ):
            assert sock.recv(1) == b""


def test_rejects_a_negative_delay() -> None:
    from bench._server_util import run_delay

    with pytest.raises(ValueError, match="one-way delay must be >= 0"):
        run_delay(("127.0.0.1", 9), -0.001)

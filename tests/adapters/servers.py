"""Loopback servers the adapter tests connect to, on every backend.

Each runs in a thread on 127.0.0.1, port 0, bounded by socket time-outs, and
is closed (and its thread joined) when its context manager exits.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Final

import trustme

HOST: Final = "127.0.0.1"
TIMEOUT: Final = 10.0


class ThreadedServer:
    """Accepts connections on 127.0.0.1:0 and runs *handler(conn)* for each in a thread."""

    def __init__(self, handler: Callable[[socket.socket], None], *, family: int = socket.AF_INET) -> None:
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.bind(("::1" if family == socket.AF_INET6 else HOST, 0))
        self.listener.listen(128)
        self.listener.settimeout(0.2)
        self.address: tuple[str, int] = self.listener.getsockname()[:2]
        self.handler = handler
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept_loop, daemon=True)
        self._accepter.start()

    @property
    def port(self) -> int:
        return self.address[1]

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(TIMEOUT)
            try:
                self.handler(conn)
            except (OSError, ssl.SSLError):
                pass  # the client went away: that is the client test's business
            except BaseException as exc:  # an assertion inside a scripted peer
                self.errors.append(exc)

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        self._accepter.join(TIMEOUT)
        for thread in self._threads:
            thread.join(TIMEOUT)
        if self.errors:
            raise self.errors[0]


@contextlib.contextmanager
def serve(handler: Callable[[socket.socket], None], *, family: int = socket.AF_INET) -> Iterator[ThreadedServer]:
    """Run a :class:`ThreadedServer` for the duration of the block."""
    server = ThreadedServer(handler, family=family)
    try:
        yield server
    finally:
        server.close()


def recv_exactly(conn: socket.socket, count: int) -> bytes:
    """Read exactly *count* octets (raises EOFError if the peer closes first)."""
    data = b""
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        if not chunk:
            raise EOFError(f"peer closed after {len(data)} of {count} octets")
        data += chunk
    return data


def echo(conn: socket.socket) -> None:
    """Echo everything until EOF, then shut down our write side (half-close aware)."""
    while chunk := conn.recv(65536):
        conn.sendall(chunk)
    conn.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def echo_server(*, family: int = socket.AF_INET) -> Iterator[ThreadedServer]:
    """A TCP echo server: the target most adapter tests tunnel to."""
    with serve(echo, family=family) as server:
        yield server


class TLSFiles:
    """A throwaway CA and a certificate for ``localhost``, 127.0.0.1 and ::1."""

    def __init__(self) -> None:
        self.ca = trustme.CA()
        self.cert = self.ca.issue_cert("localhost", "127.0.0.1", "::1", "proxy.test", "target.test")

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(ctx)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx


def tls_echo(files: TLSFiles) -> Callable[[socket.socket], None]:
    """A handler: TLS server handshake, then echo."""
    ctx = files.server_context()

    def handler(conn: socket.socket) -> None:
        with ctx.wrap_socket(conn, server_side=True) as tls:
            while chunk := tls.recv(65536):
                tls.sendall(chunk)

    return handler


def socks5_connect_handler(
    reply: bytes,
    *,
    after: Callable[[socket.socket], None] = echo,
    split: bool = False,
    extra: bytes = b"",
) -> Callable[[socket.socket], None]:
    """A scripted SOCKS5 proxy: no-auth greeting, reads a request, sends *reply* (+ *extra*) then runs *after*.

    With *split*, every octet of the method selection and reply goes in its own segment.
    """

    def send(conn: socket.socket, data: bytes) -> None:
        if split:
            for i in range(len(data)):
                conn.sendall(data[i : i + 1])
        else:
            conn.sendall(data)

    def handler(conn: socket.socket) -> None:
        version, count = recv_exactly(conn, 2)
        assert version == 5
        recv_exactly(conn, count)
        send(conn, b"\x05\x00")
        head = recv_exactly(conn, 4)
        atyp = head[3]
        length = {1: 4 + 2, 4: 16 + 2}.get(atyp)
        if length is None:
            length = recv_exactly(conn, 1)[0] + 2
        recv_exactly(conn, length)
        send(conn, reply + extra)
        if reply[1] == 0:
            after(conn)

    return handler


SOCKS5_OK: Final = b"\x05\x00\x00\x01\x7f\x00\x00\x01\x04\x38"
"""A success reply with BND 127.0.0.1:1080."""


def pump(source: socket.socket | ssl.SSLSocket, sink: socket.socket | ssl.SSLSocket) -> None:
    """Copy *source* to *sink* until EOF, then half-close *sink* (plain sockets; one thread per direction)."""
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        return
    with contextlib.suppress(OSError):
        if isinstance(sink, ssl.SSLSocket):
            return
        sink.shutdown(socket.SHUT_WR)


def tls_forwarder(files: TLSFiles, upstream: tuple[str, int]) -> Callable[[socket.socket], None]:
    """A handler that terminates TLS and forwards the plaintext to *upstream*: an ``https://`` proxy
    when *upstream* is a plain HTTP or SOCKS proxy.

    One thread drives both sockets (an SSL socket must not be read and written from two threads at
    once). The client's EOF becomes a TCP half-close upstream; the upstream's EOF becomes a TLS
    close_notify to the client.
    """
    ctx = files.server_context()

    def handler(conn: socket.socket) -> None:
        with ctx.wrap_socket(conn, server_side=True) as tls, socket.create_connection(upstream, TIMEOUT) as up:
            client_open = True
            while True:
                readable = [up] + ([tls] if client_open else [])
                ready = [tls] if client_open and tls.pending() else []
                if not ready:
                    ready, _, _ = select.select(readable, [], [], TIMEOUT)
                    if not ready:
                        return  # idle for TIMEOUT: give up
                if tls in ready:
                    data = tls.recv(65536)
                    if data:
                        up.sendall(data)
                    else:
                        client_open = False
                        up.shutdown(socket.SHUT_WR)
                if up in ready:
                    data = up.recv(65536)
                    if not data:
                        with contextlib.suppress(OSError, ssl.SSLError):
                            tls.unwrap()  # close_notify: the client sees a clean EOF
                        return
                    tls.sendall(data)

    return handler

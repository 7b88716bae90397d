"""TLS over a stream that is already TLS, for blocking sockets; and ``wrap_tls`` for any socket.

:meth:`ssl.SSLContext.wrap_socket` needs a file descriptor, so TLS over an
:class:`ssl.SSLSocket` (an ``https://`` proxy carrying TLS to the target, or to
a further ``https://`` proxy) runs on an :class:`ssl.SSLObject` and two
:class:`ssl.MemoryBIO`: :class:`TLSInTLSSocket`. asyncio and trio layer TLS on
any transport or stream themselves, so this is the blocking backend's alone.
"""

from __future__ import annotations

import functools
import socket
import ssl
from collections.abc import Callable
from typing import Final, TypeVar, final

__all__ = ["SocketLike", "TLSInTLSSocket", "half_close", "wrap", "wrap_tls"]

_T = TypeVar("_T")

_TLS_RECORD_PLAINTEXT: Final = 16 * 1024
"""2**14: the most plaintext one TLS record carries (RFC 8446 §5.1); writes are cut to this."""

@final
class TLSInTLSSocket:
    """TLS inside a stream that is already TLS, with the methods of a blocking socket.

    :meth:`ssl.SSLContext.wrap_socket` needs a file descriptor, so TLS over an
    :class:`ssl.SSLSocket` (an ``https://`` proxy carrying TLS to the target, or to a
    further ``https://`` proxy) runs on an :class:`ssl.SSLObject` with two
    :class:`ssl.MemoryBIO`: the ciphertext the object produces is written to the
    transport with ``sendall``, and when it needs input, up to 64 KiB are read from the
    transport into the incoming buffer. Reading ahead is harmless there, since those
    octets are this layer's ciphertext and stay in the buffer.

    It offers ``sendall``, ``send``, ``recv``, ``recv_into``, ``shutdown``, ``close``,
    ``settimeout``, ``gettimeout``, ``getpeername``, ``getsockname``, ``pending`` and the
    TLS details (``version``, ``cipher``, ``getpeercert``, ``selected_alpn_protocol``,
    ``ssl_object``), and is a context manager. It has **no** ``fileno()``: decrypted
    octets can wait in the TLS buffers while the descriptor is not readable, so
    ``select()`` on it would lie; check :meth:`pending` first.

    Time-outs (:meth:`settimeout`) are the transport's and apply to each operation on
    it. :meth:`shutdown` half-closes the TCP connection underneath without a TLS
    ``close_notify``, as :meth:`ssl.SSLSocket.shutdown` does; peers see a plain EOF.

    Args:
        transport: the stream underneath: an :class:`ssl.SSLSocket` or another
            :class:`TLSInTLSSocket`, in blocking mode (with or without a timeout).
        context: the TLS configuration (trust, ALPN...).
        server_hostname: the name (or IP literal) to send as SNI and check the
            certificate against.

    The handshake is not run by the constructor: call :meth:`do_handshake` (or use
    :func:`wrap_tls`, which does).
    """

    __slots__ = ("_before_io", "_closed", "_eof_sent", "_incoming", "_outgoing", "_plaintext", "_tls", "_transport")

    _READ_SIZE: Final = 65536

    def __init__(
        self,
        transport: SocketLike,
        context: ssl.SSLContext,
        *,
        server_hostname: str | None = None,
    ) -> None:
        self._transport = transport
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=server_hostname)
        self._closed = False
        self._eof_sent = False
        self._plaintext = b""  # decrypted octets set aside by shutdown(), returned first by recv()
        self._before_io: Callable[[], None] | None = None

    # -- the engine --------------------------------------------------------------------

    def _run(self, operation: Callable[[], _T]) -> _T:
        """Run one SSLObject operation, moving ciphertext until it completes."""
        while True:
            try:
                result = operation()
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
                continue
            self._flush()
            return result

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            if self._before_io is not None:
                self._before_io()
            self._transport.sendall(data)

    def _fill(self) -> None:
        if self._before_io is not None:
            self._before_io()
        data = self._transport.recv(self._READ_SIZE)
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    def _handshake(self, before_io: Callable[[], None] | None) -> None:
        self._before_io = before_io
        try:
            self._run(self._tls.do_handshake)
        finally:
            self._before_io = None

    # -- socket methods ------------------------------------------------------------------

    def do_handshake(self) -> None:
        """Run the TLS handshake over the transport.

        Raises:
            ssl.SSLError: the handshake failed (for example the certificate is not trusted).
            OSError: the transport failed; ``TimeoutError`` when its timeout expired.
        """
        self._handshake(None)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Up to *bufsize* decrypted octets; ``b""`` when the peer closed (with or without ``close_notify``).

        Raises:
            ValueError: *flags* is not 0.
            OSError: the transport failed.
        """
        if flags:
            raise ValueError("recv() flags are not supported on a TLS stream")
        if bufsize <= 0:
            return b""
        if self._plaintext:
            data, self._plaintext = self._plaintext[:bufsize], self._plaintext[bufsize:]
            return data
        try:
            return self._run(functools.partial(self._tls.read, bufsize))
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return b""  # a clean close_notify, or an EOF without one (as suppress_ragged_eofs does)

    def recv_into(self, buffer: bytearray | memoryview, nbytes: int = 0, flags: int = 0) -> int:
        """Like :meth:`recv`, into *buffer*; returns the number of octets written."""
        view = memoryview(buffer).cast("B")
        data = self.recv(nbytes or len(view), flags)
        view[: len(data)] = data
        return len(data)

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt and send all of *data*.

        Raises:
            OSError: the transport failed; part of *data* may have been sent.
        """
        view = memoryview(data).cast("B")
        for start in range(0, len(view), _TLS_RECORD_PLAINTEXT):
            self._run(functools.partial(self._tls.write, view[start : start + _TLS_RECORD_PLAINTEXT]))

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Send up to one TLS record of *data*; returns how many octets were sent."""
        view = memoryview(data).cast("B")[:_TLS_RECORD_PLAINTEXT]
        self.sendall(view)
        return len(view)

    def pending(self) -> int:
        """Decrypted octets buffered and readable without I/O."""
        return len(self._plaintext) + self._tls.pending()

    def shutdown(self, how: int) -> None:
        """Half-close: with ``socket.SHUT_WR`` (or ``SHUT_RDWR``) send a TLS ``close_notify``; reading goes on.

        TLS 1.3 closes one direction this way (RFC 8446 §6.1): the peer reads EOF
        and may still answer. (A TLS 1.2 peer usually closes in turn.) The layers
        underneath are left open. ``SHUT_RD`` does nothing.
        """
        if how in (socket.SHUT_WR, socket.SHUT_RDWR) and not self._eof_sent:
            self._eof_sent = True
            self._send_close_notify()

    def _send_close_notify(self) -> None:
        # unwrap() calls SSL_shutdown twice: the first writes close_notify, the second
        # waits for the peer's and fails on application data that it finds. So hand it
        # nothing to find: decrypted octets are set aside, unprocessed ciphertext is
        # taken out of the incoming buffer and put back after; it then wants to read.
        pending = self._tls.pending()
        if pending:
            self._plaintext += self._tls.read(pending)
        held = self._incoming.read()
        try:
            self._tls.unwrap()
        except ssl.SSLWantReadError:
            pass  # close_notify is written; the peer's arrives through recv() as usual
        finally:
            self._incoming.write(held)
        self._flush()

    def close(self) -> None:
        """Close this stream and every layer under it. Idempotent."""
        if not self._closed:
            self._closed = True
            self._transport.close()

    def settimeout(self, timeout: float | None) -> None:
        """Set the transport's timeout (per operation on it), as :meth:`socket.socket.settimeout`."""
        self._transport.settimeout(timeout)

    def gettimeout(self) -> float | None:
        """The transport's timeout."""
        return self._transport.gettimeout()

    def getpeername(self) -> tuple[str, int] | tuple[str, int, int, int]:
        """The TCP peer's address (the first proxy)."""
        return self._transport.getpeername()

    def getsockname(self) -> tuple[str, int] | tuple[str, int, int, int]:
        """Our local TCP address."""
        return self._transport.getsockname()

    @property
    def ssl_object(self) -> ssl.SSLObject:
        """The :class:`ssl.SSLObject` of this layer."""
        return self._tls

    @property
    def server_hostname(self) -> str | None:
        """The name the certificate was checked against."""
        return self._tls.server_hostname

    def version(self) -> str | None:
        """The negotiated TLS version, like ``"TLSv1.3"``."""
        return self._tls.version()

    def cipher(self) -> tuple[str, str, int] | None:
        """``(name, protocol, secret bits)`` of the negotiated cipher."""
        return self._tls.cipher()

    def selected_alpn_protocol(self) -> str | None:
        """The ALPN protocol the server chose, if any."""
        return self._tls.selected_alpn_protocol()

    def getpeercert(self, binary_form: bool = False) -> object:
        """The peer's certificate, as :meth:`ssl.SSLSocket.getpeercert` returns it."""
        return self._tls.getpeercert(binary_form)

    def __enter__(self) -> TLSInTLSSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self._tls.version() or "handshaking"
        return f"<TLSInTLSSocket {self._tls.server_hostname or ''} {state} over {self._transport!r}>"


def half_close(stream: SocketLike) -> None:
    """Stop sending on *stream* and keep receiving (see ``Tunnel.shutdown_write``).

    Raises:
        NotImplementedError: *stream* is an :class:`ssl.SSLSocket`.
    """
    if isinstance(stream, ssl.SSLSocket):
        raise NotImplementedError(
            "an ssl.SSLSocket cannot be half-closed: the ssl module can only send close_notify while "
            "waiting for the peer's (which fails on data still in flight), and a TCP half-close under "
            "TLS is taken by OpenSSL peers as a truncation after which they cannot answer"
        )
    stream.shutdown(socket.SHUT_WR)


SocketLike = socket.socket | TLSInTLSSocket
"""What ``connect`` returns: a :class:`socket.socket` (an :class:`ssl.SSLSocket` when TLS
runs over it) or a :class:`TLSInTLSSocket`."""


def wrap(
    stream: SocketLike, context: ssl.SSLContext, server_hostname: str | None
) -> ssl.SSLSocket | TLSInTLSSocket:
    """TLS over *stream*, without handshaking yet: ``wrap_socket`` on a plain socket, else TLS in TLS."""
    if isinstance(stream, ssl.SSLSocket | TLSInTLSSocket):
        return TLSInTLSSocket(stream, context, server_hostname=server_hostname)
    return context.wrap_socket(stream, server_hostname=server_hostname, do_handshake_on_connect=False)


def wrap_tls(
    sock: SocketLike,
    context: ssl.SSLContext,
    *,
    server_hostname: str | None = None,
    timeout: float | None = None,
) -> SocketLike:
    """Run a TLS client handshake over *sock*, whatever it is (plain, TLS, TLS in TLS).

    Args:
        sock: a connected socket, as ``connect`` returns. It belongs to the
            result from now on (a plain socket is detached into the
            :class:`ssl.SSLSocket`); on failure it is closed.
        context: the TLS configuration.
        server_hostname: the name to check the certificate against (and send as SNI).
        timeout: the handshake's timeout (and the result's timeout afterwards).

    Returns:
        an :class:`ssl.SSLSocket` over a plain socket, else a :class:`TLSInTLSSocket`.

    Raises:
        ssl.SSLError: the handshake failed.
        OSError: the connection failed; ``TimeoutError`` on time-out.
    """
    tls = wrap(sock, context, server_hostname)
    try:
        tls.settimeout(timeout)
        tls.do_handshake()
    except BaseException:
        tls.close()
        sock.close()
        raise
    return tls



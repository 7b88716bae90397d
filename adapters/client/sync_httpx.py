"""The blocking httpcore network backend: every TCP connection httpcore opens is a tunnel.

:class:`ProxyBackend` goes into an ``httpcore.ConnectionPool(network_backend=...)``
(:class:`socks_sansio.adapters.httpx.SyncProxyTransport` does that): its
``connect_tcp(host, port)`` runs :func:`~socks_sansio.adapters.sync.connect`
through the proxy chain, and :class:`TunnelStream` is the result as httpcore
wants it. ``connect`` reads nothing past the last proxy's reply, so the first
octet httpcore reads is the target's first octet. TLS to the target
(``start_tls``) is :func:`~socks_sansio.adapters.sync.wrap_tls`: an
:class:`ssl.SSLSocket` over a plain tunnel, TLS inside TLS through an
``https://`` proxy.
"""

from __future__ import annotations

import select
import socket
import ssl
from collections.abc import Iterable, Sequence
from typing import Any

import httpcore

from socks_sansio import ProxySpec, to_proxies

from ._httpx_common import connect_errors, io_errors
from .sync import connect
from .tls_in_tls import SocketLike, TLSInTLSSocket, wrap_tls

__all__ = ["ProxyBackend", "TunnelStream"]


def _raw_socket(sock: SocketLike) -> socket.socket:
    """The TCP socket under every TLS layer."""
    while isinstance(sock, TLSInTLSSocket):
        sock = sock._transport
    return sock


def _readable(sock: socket.socket) -> bool:
    """Whether a ``recv`` would return at once: on an idle keep-alive connection, the server closed it."""
    fd = sock.fileno()
    if fd < 0:
        return True
    if hasattr(select, "poll"):  # no FD_SETSIZE limit
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([fd], [], [], 0)[0])  # pragma: no cover - Windows


class TunnelStream(httpcore.NetworkStream):
    """One connection through the proxies (plain, TLS, or TLS in TLS), as httpcore reads and writes it.

    Args:
        sock: the connection, as :func:`~socks_sansio.adapters.sync.connect` returns it.
        tls: whether the last TLS layer of *sock* is TLS with the target (``start_tls``),
            not with an ``https://`` proxy: only then is it the ``ssl_object``.
    """

    def __init__(self, sock: SocketLike, *, tls: bool = False) -> None:
        self._sock = sock
        self._tls = tls

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Up to *max_bytes* octets from the target (``b""`` once it closed)."""
        with io_errors(httpcore.ReadTimeout, httpcore.ReadError, (TimeoutError,), (OSError,)):
            self._sock.settimeout(timeout)
            return self._sock.recv(max_bytes)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Send all of *buffer*."""
        if buffer:
            with io_errors(httpcore.WriteTimeout, httpcore.WriteError, (TimeoutError,), (OSError,)):
                self._sock.settimeout(timeout)
                self._sock.sendall(buffer)

    def close(self) -> None:
        """Close the connection, every layer."""
        self._sock.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> TunnelStream:
        """TLS with the target over this tunnel; this stream belongs to the result from now on.

        Raises:
            httpcore.ConnectTimeout: the handshake took longer than *timeout*.
            httpcore.ConnectError: it failed (the ``ssl.SSLError`` is the ``__cause__``).
        """
        with connect_errors():
            sock = wrap_tls(self._sock, ssl_context, server_hostname=server_hostname, timeout=timeout)
        return TunnelStream(sock, tls=True)

    def get_extra_info(self, info: str) -> Any:
        """``ssl_object`` (TLS with the target), ``client_addr``, ``server_addr`` (the first proxy), ``socket``
        (the TCP socket to the first proxy) and ``is_readable`` (the pool asks it of idle connections)."""
        sock = self._sock
        if info == "ssl_object":
            if not self._tls:
                return None
            return sock.ssl_object if isinstance(sock, TLSInTLSSocket) else sock
        if info == "client_addr":
            return sock.getsockname()
        if info == "server_addr":
            return sock.getpeername()
        if info == "socket":
            return _raw_socket(sock)
        if info == "is_readable":
            if isinstance(sock, TLSInTLSSocket | ssl.SSLSocket) and sock.pending():
                return True
            return _readable(_raw_socket(sock))
        return None


class ProxyBackend(httpcore.NetworkBackend):
    """httpcore's blocking network backend, every connection through *proxy*.

    Args:
        proxy: a proxy URL, a :class:`~socks_sansio.ProxyURL`, or a chain of them (first
            hop first); ``None`` or an empty chain: connect directly.
        proxy_ssl: the TLS context for ``https://`` proxies (default: the system's trust store).
        pipelined: SOCKS5 hops send greeting, credentials and request in one write.
    """

    def __init__(
        self,
        proxy: ProxySpec | Sequence[ProxySpec] | None,
        *,
        proxy_ssl: ssl.SSLContext | None = None,
        pipelined: bool = False,
    ) -> None:
        self._proxy = to_proxies(proxy) or None
        self._proxy_ssl = proxy_ssl
        self._pipelined = pipelined

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> TunnelStream:
        """A tunnel to *host*:*port*; *timeout* is one deadline for every hop's connect and handshake.

        Raises:
            httpcore.ConnectTimeout: the deadline passed (``ProxyTimeoutError`` is the ``__cause__``).
            httpcore.ConnectError: a proxy (or the target, directly) could not be reached.
            ProxyRefusedError: a proxy refused (``ProxyAuthError``: the credentials).
            ProxyProtocolError: a proxy broke its protocol.
            httpcore.UnsupportedProtocol: a *local_address* was asked for.
        """
        if local_address is not None:
            raise httpcore.UnsupportedProtocol("local_address cannot be chosen for a connection through proxies")
        with connect_errors():
            sock = connect(host, port, proxy=self._proxy, timeout=timeout, proxy_ssl=self._proxy_ssl,
                           pipelined=self._pipelined)  # fmt: skip
        if socket_options and isinstance(sock, socket.socket):
            for option in socket_options:
                sock.setsockopt(*option)
        return TunnelStream(sock)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> TunnelStream:
        """Not through a proxy.

        Raises:
            httpcore.UnsupportedProtocol: always.
        """
        raise httpcore.UnsupportedProtocol("a Unix socket cannot be reached through a proxy")

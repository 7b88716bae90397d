"""The blocking runner: the operations of a client plan, performed with ``socket`` and ``ssl``.

:class:`Link` owns one connection (a plain socket, an :class:`ssl.SSLSocket` or
a :class:`TLSInTLSSocket`) and performs each operation a plan yields on it;
:meth:`Link.run` is the runner's whole loop. Before every blocking call the
socket's time-out is set to what is left of the plan's deadline, so a time-out
there is the deadline passing (the plan says so in its error).
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Sequence
from typing import Any, Final, final

from socks_sansio import Address, AssociatePlan, ConnectPlan, HandshakePlan, Stepper
from socks_sansio import client_operations as ops

from ._common import literal_sockaddr, logger, peer_ip
from .tls_in_tls import SocketLike, TLSInTLSSocket, wrap

__all__ = ["Link", "resolve"]

_RECEIVE: Final = ops.Receive
_SEND: Final = ops.Send


@final
class Link:
    """The socket a plan drives, and how each of its operations is done with blocking calls.

    Args:
        plan: the plan whose deadline bounds every operation.
        tls: the target's TLS context (``StartTLS`` with ``to_proxy=False``).
        proxy_ssl: the context for ``https://`` proxies (default: the system's).
        nodelay, keepalive: socket options of the TCP connection.
    """

    __slots__ = ("_remaining", "keepalive", "nodelay", "plan", "proxy_ssl", "stream", "tls", "udp")

    def __init__(
        self,
        plan: ConnectPlan | AssociatePlan | HandshakePlan,
        *,
        tls: ssl.SSLContext | None = None,
        proxy_ssl: ssl.SSLContext | None = None,
        nodelay: bool = True,
        keepalive: bool = True,
        stream: SocketLike | None = None,
    ) -> None:
        self.plan = plan
        self._remaining = plan.deadline.remaining  # bound once: the deadline is read before every blocking call
        self.tls = tls
        self.proxy_ssl = proxy_ssl
        self.nodelay = nodelay
        self.keepalive = keepalive
        self.stream: SocketLike | None = stream
        self.udp: socket.socket | None = None

    def run(self, steps: Any, *, close_on_error: bool = True) -> Any:
        """Perform every operation of *steps* (a plan's generator); returns what it returned.

        On any error the connection (and the UDP socket) is closed, then the error
        raised; with *close_on_error* false the caller decides.
        """
        stepper: Stepper[ops.Operation, Any] = Stepper(steps)
        try:
            return stepper.run(self.perform)
        except BaseException:
            if close_on_error:
                self.close()
            raise

    def _arm(self, stream: SocketLike) -> None:
        """Give *stream* what is left of the deadline as its time-out (a TimeoutError if nothing is)."""
        remaining = self._remaining()
        if remaining is not None:
            if remaining <= 0:
                raise TimeoutError("the deadline passed")
            stream.settimeout(remaining)

    def perform(self, operation: ops.Operation) -> object:
        """Do one operation (see :mod:`socks_sansio.client_operations`) and return its result."""
        stream = self.stream
        kind = type(operation)  # the operation classes are final
        if kind is _RECEIVE or kind is _SEND:
            assert stream is not None
            remaining = self._remaining()  # _arm(), inlined: Receive and Send are most of a plan's operations
            if remaining is not None:
                if remaining <= 0:
                    raise TimeoutError("the deadline passed")
                stream.settimeout(remaining)
            if kind is _RECEIVE:
                return stream.recv(operation.max_bytes)  # type: ignore[union-attr]
            stream.sendall(operation.data)  # type: ignore[union-attr]
        elif isinstance(operation, ops.Dial):
            self.stream = self._dial(operation.address)
        elif isinstance(operation, ops.StartTLS):
            self.stream = self._start_tls(operation)
        elif isinstance(operation, ops.Resolve):
            return resolve(operation)
        elif isinstance(operation, ops.PeerAddress):
            assert stream is not None
            return peer_ip(stream.getpeername())
        elif isinstance(operation, ops.OpenDatagram):
            return self._open_datagram()
        elif isinstance(operation, ops.Sleep):
            time.sleep(operation.seconds)
        else:
            self.close()  # ops.Close
        return None

    def _dial(self, address: Address) -> socket.socket:
        """A TCP connection to *address*, trying each of its addresses in turn within the deadline."""
        literal = literal_sockaddr(address)
        infos: Sequence[tuple[Any, Any, int, str, tuple[Any, ...]]]
        if literal is not None:  # what getaddrinfo would answer, without asking it
            infos = ((literal[0], socket.SOCK_STREAM, socket.IPPROTO_TCP, "", literal[1]),)
        else:
            infos = socket.getaddrinfo(address.host_str, address.port, type=socket.SOCK_STREAM)
        error: OSError = OSError(f"no address found for {address.host_str}")
        for family, kind, proto, _, sockaddr in infos:
            sock = socket.socket(family, kind, proto)
            try:
                self._arm(sock)
                sock.connect(sockaddr)
                if self.nodelay:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.keepalive:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            except OSError as exc:
                sock.close()
                if isinstance(exc, TimeoutError) and self.plan.deadline.at is not None:
                    raise  # the deadline passed: no time for the next address
                error = exc
                logger.debug("TCP connect to %s failed: %s", sockaddr, exc)
                continue
            except BaseException:
                sock.close()
                raise
            return sock
        raise error

    def _start_tls(self, operation: ops.StartTLS) -> SocketLike:
        stream = self.stream
        assert stream is not None
        if operation.to_proxy:
            context = self.proxy_ssl if self.proxy_ssl is not None else ssl.create_default_context()
        else:
            assert self.tls is not None
            context = self.tls
        tls = wrap(stream, context, operation.server_hostname)
        try:
            if isinstance(tls, TLSInTLSSocket):
                tls._handshake(lambda: self._arm(tls))
            else:
                self._arm(tls)
                tls.do_handshake()
        except BaseException:
            tls.close()
            self.stream = None
            raise
        return tls

    def _open_datagram(self) -> Address:
        stream = self.stream
        assert isinstance(stream, socket.socket)
        udp = self.udp = socket.socket(stream.family, socket.SOCK_DGRAM)
        udp.bind((stream.getsockname()[0], 0))
        host, port = udp.getsockname()[:2]
        return Address(peer_ip((host,)), port)

    def close(self) -> None:
        """Close the connection and the UDP socket, if open."""
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.close()
        udp, self.udp = self.udp, None
        if udp is not None:
            udp.close()


def resolve(operation: ops.Resolve) -> Address:
    """A plan's :class:`~socks_sansio.client_operations.Resolve`, with ``getaddrinfo``."""
    family = {4: socket.AF_INET, 6: socket.AF_INET6}.get(operation.family, socket.AF_UNSPEC)
    kind = socket.SOCK_DGRAM if operation.datagram else socket.SOCK_STREAM
    infos = socket.getaddrinfo(operation.host, operation.port, family, kind)
    return Address(peer_ip(infos[0][4]), operation.port)

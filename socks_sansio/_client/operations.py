"""The I/O operations a client plan yields, and what a runner answers to each.

A plan (:class:`~socks_sansio.ConnectPlan`, :class:`~socks_sansio.AssociatePlan`)
is a generator. It yields one of these objects at a time; the runner performs it
on *the connection* (each plan drives at most one at a time) and sends back the
result named below, or throws in the exception the I/O raised. The plan decides
everything else: which proxy, in which order, what to send, what an error means.

======================  =================================================  ==================
operation               the runner does                                    it sends back
======================  =================================================  ==================
:class:`Dial`           open a TCP connection to ``address`` (a name is     ``None``
                        resolved by the runner's usual strategy); it
                        becomes the connection
:class:`StartTLS`       run a TLS client handshake over the connection     ``None``
                        (the proxy context if ``to_proxy``, else the
                        target's); the TLS stream becomes the connection
:class:`Send`           write all of ``data``                              ``None``
:class:`Receive`        read at most ``max_bytes`` octets                  the octets (``b""``
                                                                           at EOF)
:class:`Resolve`        look ``host`` up (IPv4 only / IPv6 only when       the first answer,
                        ``family`` is 4 / 6)                               an :class:`Address`
:class:`PeerAddress`    read the connection's peer IP                      that IP as ``str``
:class:`OpenDatagram`   bind a UDP socket on the connection's local IP,    its address, an
                        port 0 (UDP ASSOCIATE)                             :class:`Address`
:class:`Sleep`          wait ``seconds``                                   ``None``
:class:`Close`          close the connection (a failed attempt; another    ``None``
                        may follow)
======================  =================================================  ==================

Operations are immutable values; :class:`Close`, :class:`PeerAddress` and
:class:`OpenDatagram` carry nothing and are singletons. A runner dispatches on
``type(operation)``.

A pool's :class:`~socks_sansio.PoolKeeper` yields the second kind, below:
:class:`Prepare` (answered with a prepared connection, or the exception
preparing it raised, thrown in), :class:`Discard`, :class:`Pause`, :class:`Wait`,
:class:`Notify` and :class:`WaitChanged` (each answered with ``None``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Generic, TypeVar, final

from .._address import Address

__all__ = [
    "CLOSE",
    "NOTIFY",
    "OPEN_DATAGRAM",
    "PEER_ADDRESS",
    "PREPARE",
    "WAIT_CHANGED",
    "Close",
    "Dial",
    "Discard",
    "Notify",
    "OpenDatagram",
    "Operation",
    "Pause",
    "PeerAddress",
    "PoolOperation",
    "Prepare",
    "Receive",
    "Resolve",
    "Send",
    "Sleep",
    "StartTLS",
    "Wait",
    "WaitChanged",
]

_C = TypeVar("_C")


@final
class Dial:
    """Open a TCP connection to *address* (the first proxy, or the target itself)."""

    __slots__ = ("address",)

    def __init__(self, address: Address) -> None:
        self.address = address

    def __repr__(self) -> str:
        return f"Dial({self.address})"


@final
class StartTLS:
    """Run a TLS client handshake over the connection, checking *server_hostname*.

    Attributes:
        server_hostname: the name (or IP literal) sent as SNI and checked against the certificate.
        to_proxy: True for an ``https://`` proxy (the proxy context), False for the target.
    """

    __slots__ = ("server_hostname", "to_proxy")

    def __init__(self, server_hostname: str, *, to_proxy: bool) -> None:
        self.server_hostname = server_hostname
        self.to_proxy = to_proxy

    def __repr__(self) -> str:
        return f"StartTLS({self.server_hostname!r}, to_proxy={self.to_proxy})"


@final
class Send:
    """Write all of *data* to the connection."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"Send({len(self.data)} octets)"


@final
class Receive:
    """Read at most *max_bytes* octets (at least 1) from the connection; ``b""`` means EOF.

    Reading no more than asked is what keeps the first tunnel octets out of the
    handshake: they stay in the kernel, or in the runner's stream buffer.
    """

    __slots__ = ("max_bytes",)

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def __repr__(self) -> str:
        return f"Receive({self.max_bytes})"


@final
class Resolve:
    """Look up *host*; answer with the first address found, as an :class:`Address` with *port*.

    Attributes:
        host: the name (ASCII, IDNA-encoded).
        port: the port the answer carries.
        family: 0 for any, 4 for IPv4 only (SOCKS4 carries nothing else), 6 for IPv6 only.
        datagram: look up for UDP (``SOCK_DGRAM``) instead of TCP.
    """

    __slots__ = ("datagram", "family", "host", "port")

    def __init__(self, host: str, port: int, *, family: int = 0, datagram: bool = False) -> None:
        self.host = host
        self.port = port
        self.family = family
        self.datagram = datagram

    def __repr__(self) -> str:
        return f"Resolve({self.host!r}, {self.port}, family={self.family}, datagram={self.datagram})"


@final
class PeerAddress:
    """Tell the plan the IP address the connection is connected to (the first proxy's)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "PeerAddress()"


@final
class OpenDatagram:
    """Bind a UDP socket on the connection's local IP address, any port; answer with its address."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "OpenDatagram()"


@final
class Sleep:
    """Wait *seconds* (a failover backoff)."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __repr__(self) -> str:
        return f"Sleep({self.seconds})"


@final
class Close:
    """Close the connection: the attempt failed; the plan may dial again."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Close()"


CLOSE: Final = Close()
PEER_ADDRESS: Final = PeerAddress()
OPEN_DATAGRAM: Final = OpenDatagram()

Operation = Dial | StartTLS | Send | Receive | Resolve | PeerAddress | OpenDatagram | Sleep | Close
"""Any operation a client plan yields."""


# -- a pool's operations (PoolKeeper) ----------------------------------------------------------


@final
class Prepare:
    """Open one prepared connection (a :class:`~socks_sansio.ConnectPlan` with ``prepare=True``).

    Answer with it, or throw in the exception preparing it raised.
    """

    __slots__ = ()


@final
class Discard(Generic[_C]):
    """Close these prepared connections (expired, or not kept because the pool closed)."""

    __slots__ = ("connections",)

    def __init__(self, connections: Sequence[_C]) -> None:
        self.connections = connections


@final
class Pause:
    """Back off *seconds* before preparing again (it may end early when the pool closes)."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


@final
class Wait:
    """Sleep until woken (a take, a close) or *seconds* have passed (``None``: until woken)."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds


@final
class Notify:
    """The pool changed (refills ended): wake whoever waits for it (:class:`Wait`, :class:`WaitChanged`)."""

    __slots__ = ()


@final
class WaitChanged:
    """Wait for the next :class:`Notify` (refills the background already started are under way)."""

    __slots__ = ()


NOTIFY: Final = Notify()
PREPARE: Final = Prepare()
WAIT_CHANGED: Final = WaitChanged()

PoolOperation = Prepare | Discard[Any] | Pause | Wait | Notify | WaitChanged
"""Any operation a :class:`PoolKeeper` yields; each answers ``None`` but :class:`Prepare`."""

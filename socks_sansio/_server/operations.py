"""What a server session asks its runner to do, and what the runner answers.

A :class:`~socks_sansio.ServerSession`'s ``run()`` yields these; the runner
(asyncio or trio) performs each one on the client's connection, or opens what
it names, and sends back the result, or throws in the exception it raised.
Operations with a time bound (``deadline`` on the session's clock, or
``timeout`` seconds) are answered with a ``TimeoutError`` thrown in when it
passes.

=========================  ==================================================  =======================
operation                  the runner does                                     it sends back
=========================  ==================================================  =======================
:class:`Receive`           read some octets from the client                    the octets (``b""``: EOF)
:class:`Send`              write ``data`` to the client (``quiet``: a refusal   ``None``
                           before closing, write errors ignored)
:class:`CheckCredentials`  call ``config.check_credentials`` off its event      ``bool``
                           loop (PBKDF2 is slow)
:class:`Resolve`           look the name up (TCP)                              a list of IP addresses
:class:`Dial`              connect to each address in turn, one ``timeout``    ``(local, remote)``: both
                           for all; the first that answers is the upstream      ``(host, port)``
:class:`DialUpstream`      open a tunnel to ``target`` through ``chain`` with  our local ``(host, port)``
                           this package's client                               of the first hop
:class:`Listen`            BIND: listen on the client connection's local IP    the ``(host, port)`` bound
:class:`AwaitPeer`         BIND: wait for one connection there, keeping what   the peer's ``(host, port)``,
                           the client sends meanwhile for the peer             or ``None``: the client left
:class:`OpenDatagram`      UDP ASSOCIATE: bind a UDP socket on the client      the ``(host, port)`` bound
                           connection's local IP
:class:`SendUpstream`      write ``data`` to the connection ``Dial`` or         ``None``
                           ``DialUpstream`` opened (HTTP forwarding)
:class:`ReceiveUpstream`   read some octets from it                            the octets (``b""``: EOF)
:class:`CloseUpstream`     close it                                            ``None``
:class:`Pause`             wait ``seconds`` (a byte rate limit)                ``None``
:class:`AdmitShared`       run the shared limits' script on the rate store     the wait in seconds
                           (within ``timeout``); a failure as ``OSError``       (0: admitted)
=========================  ==================================================  =======================
"""

from __future__ import annotations

import ipaddress
from typing import final

from .._address import Address
from .._proxy_url import ProxyURL

__all__ = [
    "AdmitShared",
    "AwaitPeer",
    "CheckCredentials",
    "CloseUpstream",
    "Dial",
    "DialUpstream",
    "IPAddress",
    "Listen",
    "OpenDatagram",
    "Pause",
    "Receive",
    "ReceiveUpstream",
    "Resolve",
    "Send",
    "SendUpstream",
    "ServerOperation",
    "SockAddr",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
SockAddr = tuple[str, int]


@final
class Receive:
    """Read some octets from the client (``b""`` at EOF); a ``TimeoutError`` at *deadline* (``None``: none)."""

    __slots__ = ("deadline",)

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline


@final
class Send:
    """Write *data* to the client; with *quiet*, a failed write is ignored (the connection ends anyway)."""

    __slots__ = ("data", "quiet")

    def __init__(self, data: bytes, *, quiet: bool = False) -> None:
        self.data = data
        self.quiet = quiet


@final
class CheckCredentials:
    """Check these credentials against the user list, off the event loop; ``TimeoutError`` at *deadline*."""

    __slots__ = ("deadline", "password", "username")

    def __init__(self, username: bytes, password: bytes, deadline: float | None) -> None:
        self.username = username
        self.password = password
        self.deadline = deadline

    def __repr__(self) -> str:
        return f"CheckCredentials({self.username!r}, ***)"


@final
class Resolve:
    """Look *host* up; answer with every address (IPv6 zones dropped); ``TimeoutError`` after *timeout*."""

    __slots__ = ("host", "port", "timeout")

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout


@final
class Dial:
    """Connect to *addresses* in turn within one *timeout*; raise the last error if none answers."""

    __slots__ = ("addresses", "timeout")

    def __init__(self, addresses: tuple[tuple[IPAddress, int], ...], timeout: float) -> None:
        self.addresses = addresses
        self.timeout = timeout


@final
class DialUpstream:
    """Open a tunnel to *target* through the proxy *chain*, within *timeout* (the client plan's deadline)."""

    __slots__ = ("chain", "target", "timeout")

    def __init__(self, target: Address, chain: tuple[ProxyURL, ...], timeout: float) -> None:
        self.target = target
        self.chain = chain
        self.timeout = timeout


@final
class Listen:
    """BIND: listen (backlog 1) on the client connection's local IP, any port."""

    __slots__ = ()


@final
class AwaitPeer:
    """BIND: wait up to *timeout* for the peer; ``None`` if the client leaves first."""

    __slots__ = ("timeout",)

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout


@final
class OpenDatagram:
    """UDP ASSOCIATE: bind a UDP socket on the client connection's local IP, any port."""

    __slots__ = ()


@final
class SendUpstream:
    """Write *data* to the upstream connection (the origin, for HTTP forwarding)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


@final
class ReceiveUpstream:
    """Read some octets from the upstream connection (``b""`` at EOF); ``TimeoutError`` at *deadline*."""

    __slots__ = ("deadline",)

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline


@final
class CloseUpstream:
    """Close the upstream connection (a new origin, or the end of forwarding)."""

    __slots__ = ()


@final
class Pause:
    """Wait *seconds* before reading on (a byte rate limit's pause)."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


@final
class AdmitShared:
    """Ask the rate store to admit a tunnel against *buckets* (``(key, rate, burst)`` each), within *timeout*.

    Answer with the seconds to wait (0: admitted); any failure of the store as an ``OSError``.
    """

    __slots__ = ("buckets", "timeout")

    def __init__(self, buckets: tuple[tuple[str, float, float], ...], timeout: float) -> None:
        self.buckets = buckets
        self.timeout = timeout


ServerOperation = (
    Receive | Send | CheckCredentials | Resolve | Dial | DialUpstream | Listen | AwaitPeer | OpenDatagram
    | SendUpstream | ReceiveUpstream | CloseUpstream | Pause | AdmitShared
)
"""Any operation a server session yields."""

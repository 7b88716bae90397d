"""How a client connection ended, what it is counted as, and the one line logged for it. Pure.

Every connection a server accepts ends with exactly one :class:`Outcome`: a
:class:`OutcomeKind` and, for some kinds, a detail (``denied: <the rule>``,
``dial failed: connection_refused``). The kind is what counters, metrics
labels and tests look at; the text (:meth:`Outcome.__str__`) is what the log
line says. Also here: :class:`ServerStats` (the counters a running server
exposes), the mapping from a failed dial to the reply the client gets
(:func:`failure_for`, :func:`upstream_failure`), and :class:`MetricsSink`, the
calls a metrics backend receives.
"""

from __future__ import annotations

import enum
import errno
from collections import Counter
from typing import TYPE_CHECKING, Final, Protocol, final

import attrs

from .._address import Address
from .._errors import ProxyAuthError, ProxyError, ProxyRefusedError, ProxyTimeoutError
from .._proxy_url import ProxyProtocol
from .._server_driver import Failure

if TYPE_CHECKING:
    from .udp import UdpRelayPolicy

__all__ = [
    "MetricsSink",
    "Outcome",
    "OutcomeKind",
    "ServerStats",
    "StartRelay",
    "StartUdpRelay",
    "failure_for",
    "format_tunnel",
    "upstream_failure",
]


class OutcomeKind(enum.Enum):
    """How a connection ended. ``value`` is the text logged (before any detail)."""

    #: The tunnel (or UDP association) ran and ended normally.
    OK = "ok"
    #: Refused at once: ``max_clients`` connections were open.
    BUSY = "busy"
    #: The access rules refuse this client address.
    CLIENT_NOT_ALLOWED = "client not allowed"
    #: The handshake (TLS included) did not finish within ``negotiation_timeout``.
    NEGOTIATION_TIMEOUT = "negotiation timeout"
    #: The client closed before its request.
    CLOSED_DURING_NEGOTIATION = "closed during negotiation"
    #: The protocol refused it (no acceptable method, a protocol not served...).
    REFUSED = "refused"
    #: The client broke the protocol (the detail says how).
    PROTOCOL_ERROR = "protocol error"
    #: Wrong credentials.
    AUTH_FAILED = "authentication failed"
    #: Over a tunnel rate limit.
    RATE_LIMITED = "rate limited"
    #: The access rules refuse the target (the detail is the rule).
    DENIED = "denied"
    #: The target's name did not resolve (the detail is the error's name).
    RESOLVE_FAILED = "resolve failed"
    #: The target could not be reached (the detail is the failure sent).
    DIAL_FAILED = "dial failed"
    #: An upstream proxy could not open the tunnel.
    UPSTREAM_FAILED = "upstream failed"
    #: BIND's listening socket could not be made.
    BIND_FAILED = "bind failed"
    #: BIND through an upstream: not possible.
    BIND_UNSUPPORTED = "bind: not supported through an upstream"
    #: BIND: no peer connected within ``bind_timeout``.
    BIND_NO_PEER = "bind: no peer connected"
    #: BIND: the client left before a peer connected.
    BIND_CLIENT_LEFT = "bind: the client left before a peer connected"
    #: UDP ASSOCIATE's socket could not be made.
    UDP_FAILED = "udp associate failed"
    #: UDP ASSOCIATE with upstream proxies configured: not possible.
    UDP_UNSUPPORTED = "udp associate: not supported with upstreams"
    #: The tunnel was silent for ``idle_timeout``.
    IDLE_TIMEOUT = "idle timeout"
    #: The relay failed (the detail is the error's name).
    RELAY_ERROR = "relay error"
    #: The client's connection failed (the detail is the error's name).
    CONNECTION_ERROR = "connection error"
    #: A bug in socks-sansio (logged with its traceback).
    INTERNAL_ERROR = "internal error"
    #: The server stopped before the connection ended.
    CANCELLED = "cancelled"

    @property
    def label(self) -> str:
        """The counter and metrics label: the text before any colon (``bind``, ``udp associate``, ``denied``)."""
        return _LABELS[self]


_LABELS: Final = {kind: kind.value.split(":", 1)[0] for kind in OutcomeKind}


@final
@attrs.frozen
class Outcome:
    """How one connection ended: a kind and, for some kinds, a detail."""

    kind: OutcomeKind
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.detail}" if self.detail else self.kind.value

    @property
    def ok(self) -> bool:
        """Whether the tunnel ran and ended normally."""
        return self.kind is OutcomeKind.OK


OK: Final = Outcome(OutcomeKind.OK)


class MetricsSink(Protocol):
    """What a server reports to its metrics (Prometheus, or nothing)."""

    def tunnel_opened(self, protocol: ProxyProtocol | None) -> None:
        """A tunnel (or UDP association) is up."""

    def tunnel_closed(self, protocol: ProxyProtocol | None) -> None:
        """A tunnel counted by :meth:`tunnel_opened` ended."""

    def connection_closed(self, protocol: ProxyProtocol | None, outcome: Outcome, *, up: int, down: int) -> None:
        """A connection ended, with its outcome and byte counts."""

    def handshake_done(self, seconds: float) -> None:
        """A request was read, *seconds* after the connection was accepted."""

    def auth_failed(self) -> None:
        """Credentials were refused."""

    def denied(self) -> None:
        """The access rules refused a request."""

    def rate_limited(self, kind: str) -> None:
        """A rate limit hit: ``tunnels`` (refused) or ``bytes`` (relay paused, datagram dropped)."""

    def rate_store_failed(self) -> None:
        """A call to the shared rate store failed (it is down, or too slow)."""


@final
class ServerStats:
    """Counters readable while the server runs (and logged with ``stats_interval``).

    ``tunnels`` counts the connections that ended ``ok``, by protocol;
    ``failures`` the others, by :attr:`OutcomeKind.label` (plus the UDP relay's
    ``udp dropped``, ``udp malformed``, ``udp denied``, ``udp unreachable`` and
    ``udp rate limited`` datagrams).
    """

    __slots__ = ("active", "bytes_down", "bytes_up", "failures", "tunnels")

    def __init__(self) -> None:
        self.active = 0
        self.tunnels: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.bytes_up = 0
        self.bytes_down = 0

    def snapshot(self) -> dict[str, object]:
        """The counters as a plain dict."""
        return {
            "active": self.active,
            "tunnels": dict(self.tunnels),
            "failures": dict(self.failures),
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
        }

    def line(self) -> str:
        """One log line."""
        tunnels = sum(self.tunnels.values())
        failures = ", ".join(f"{k}={v}" for k, v in sorted(self.failures.items())) or "none"
        return (
            f"stats: active={self.active} tunnels={tunnels} up={self.bytes_up} down={self.bytes_down} "
            f"failures: {failures}"
        )


def format_tunnel(
    *,
    client: str,
    user: bytes | None,
    protocol: ProxyProtocol | None,
    command: str,
    target: Address | None,
    up: int,
    down: int,
    duration: float,
    outcome: Outcome | str,
) -> str:
    """The one line logged per connection. Never includes a password."""
    name = user.decode("utf-8", "backslashreplace") if user else "-"
    return (
        f"{client} user={name} proto={protocol.name.lower() if protocol else '-'} cmd={command} "
        f"target={target if target is not None else '-'} up={up} down={down} time={duration:.3f}s outcome={outcome}"
    )


_ERRNO_FAILURES: Final = {
    errno.ECONNREFUSED: Failure.CONNECTION_REFUSED,
    errno.ECONNRESET: Failure.CONNECTION_REFUSED,
    errno.ENETUNREACH: Failure.NETWORK_UNREACHABLE,
    errno.ENETDOWN: Failure.NETWORK_UNREACHABLE,
    errno.EHOSTUNREACH: Failure.HOST_UNREACHABLE,
    errno.EHOSTDOWN: Failure.HOST_UNREACHABLE,
    errno.EADDRNOTAVAIL: Failure.HOST_UNREACHABLE,
    errno.ETIMEDOUT: Failure.TIMED_OUT,
    errno.EAFNOSUPPORT: Failure.ADDRESS_TYPE_NOT_SUPPORTED,
}


def failure_for(exc: BaseException) -> Failure:
    """The reply for a dial that raised *exc* (time-outs map to TIMED_OUT)."""
    # Python 3.10's asyncio.TimeoutError is not yet the builtin; it has the same name.
    if isinstance(exc, TimeoutError) or type(exc).__name__ == "TimeoutError":
        return Failure.TIMED_OUT
    if isinstance(exc, OSError) and exc.errno is not None:
        return _ERRNO_FAILURES.get(exc.errno, Failure.GENERAL_FAILURE)
    return Failure.GENERAL_FAILURE


def upstream_failure(exc: ProxyError) -> Failure:
    """The reply for a tunnel an upstream proxy could not open.

    A SOCKS5 upstream's own refusal is passed on (a refused target stays
    CONNECTION_REFUSED, REP 5; an HTTP upstream's 502 or a SOCKS4 refusal says
    nothing finer, so it is CONNECTION_REFUSED too, while HTTP 403 and 504 are
    NOT_ALLOWED and TIMED_OUT); a time-out is TIMED_OUT; an unreachable upstream,
    a refused login or a broken protocol is GENERAL_FAILURE (the client can do
    nothing about the upstream's credentials).
    """
    if isinstance(exc, ProxyTimeoutError):
        return Failure.TIMED_OUT
    if isinstance(exc, ProxyRefusedError) and not isinstance(exc, ProxyAuthError):
        if exc.protocol == "socks5":
            return next((f for f in Failure if f.socks5_code == exc.code), Failure.GENERAL_FAILURE)
        if exc.protocol == "http":
            return {403: Failure.NOT_ALLOWED, 504: Failure.TIMED_OUT}.get(exc.code, Failure.CONNECTION_REFUSED)
        return Failure.CONNECTION_REFUSED
    return Failure.GENERAL_FAILURE


# -- what a session hands over instead of an outcome ------------------------------------------


@final
class StartRelay:
    """The tunnel is up: relay it, sending ``early`` to the target first and passing ``client_eof`` on.

    Attributes:
        early: what the client sent after its request, read with the handshake.
        client_eof: whether the client's EOF was read with them.
    """

    __slots__ = ("client_eof", "early")

    def __init__(self, early: bytes, client_eof: bool) -> None:
        self.early = early
        self.client_eof = client_eof


@final
class StartUdpRelay:
    """UDP ASSOCIATE is up: relay datagrams as ``policy`` decides until the client's connection ends."""

    __slots__ = ("policy",)

    def __init__(self, policy: UdpRelayPolicy) -> None:
        self.policy = policy

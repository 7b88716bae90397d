"""What the asyncio and trio proxy servers share; imports no I/O backend.

The protocol work is the core's :class:`ServerHandshake`; the decisions are
the core's :class:`UserDatabase` and :class:`AccessPolicy`. This module holds
the server's settings, its counters, how a failed dial maps to a reply, and
the one log line written per tunnel; the rate limiter and the metrics each
server builds from its settings (:meth:`ServerConfig.rate_limiter`,
:meth:`ServerConfig.metrics`); also the TLS contexts (listening with
``tls_cert``/``tls_key``, and the one used to reach ``https://`` upstreams) and
the upstream route of a target (see :mod:`._upstream`).
"""

from __future__ import annotations

import errno
import importlib.util
import ipaddress
import logging
import ssl
from collections import Counter
from typing import Final, final

import attrs

from socks_sansio import (
    Address,
    Failure,
    ProxyAuthError,
    ProxyError,
    ProxyProtocol,
    ProxyRefusedError,
    ProxyTimeoutError,
    ProxyURL,
    ServerHandshake,
)
from socks_sansio._policy import AccessPolicy, UserDatabase
from socks_sansio._ratelimit import RateLimitConfig, RateLimits

from ._metrics import MISSING_EXTRA, Metrics, NullMetrics, ServerMetrics
from ._upstream import UpstreamRule, pick_route

__all__ = [
    "ServerConfig",
    "ServerStats",
    "failure_for",
    "format_tunnel",
    "listen_address",
    "server_logger",
    "upstream_failure",
]

server_logger: Final = logging.getLogger("socks_sansio.server")


def listen_address(text: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``:port`` (all of 127.0.0.1) as ``(host, port)``."""
    if text.startswith(":"):
        text = "127.0.0.1" + text
    address = Address.parse_authority(text)
    return address.host_str, address.port


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@final
@attrs.frozen(kw_only=True)
class ServerConfig:
    """Everything ``socks-sansio serve`` can be told. Times are seconds.

    ``tls_listen`` addresses serve the same protocols inside TLS (an ``https://``
    proxy, SOCKS over TLS) with the certificate chain ``tls_cert`` and key
    ``tls_key`` (PEM files). ``upstreams`` route tunnels through other proxies
    (first matching rule wins; no match: direct); ``upstream_cacert`` is a PEM
    file of CAs trusted for ``https://`` upstreams (default: the system's).
    ``rate_limits`` caps new tunnels and bytes a second per user and per client
    address. ``metrics_listen`` serves Prometheus metrics over HTTP there (needs
    the ``metrics`` extra; loopback only unless ``allow_remote_metrics``).
    ``splice`` lets the asyncio server relay plain-TCP CONNECT tunnels with
    Linux ``splice()`` (zero-copy) when no byte rate limit is set; False keeps
    every tunnel on the copying relay. A tunnel starts on the copying relay and
    moves to splice once it has relayed ``splice_after`` octets (0: from the
    start): setting up a splice relay costs more than a short or idle tunnel
    would ever save.

    Raises:
        ValueError: listening beyond loopback with no authentication and without
            ``allow_open_relay`` (an accidental open proxy), a bad limit, TLS
            listeners without both certificate and key (or those without TLS
            listeners), per-user rate limits or exempt users without a user list,
            or a metrics address that is not loopback (without ``allow_remote_metrics``),
            is combined with ``reuse_port`` (several processes), or lacks the extra.
    """

    listen: tuple[tuple[str, int], ...] = (("127.0.0.1", 1080),)
    tls_listen: tuple[tuple[str, int], ...] = ()
    tls_cert: str | None = None
    tls_key: str | None = None
    upstreams: tuple[UpstreamRule, ...] = ()
    upstream_cacert: str | None = None
    protocols: frozenset[ProxyProtocol] = frozenset(ProxyProtocol)
    users: UserDatabase | None = None
    allow_socks4_without_auth: bool = False
    policy: AccessPolicy = attrs.field(factory=AccessPolicy)
    allow_open_relay: bool = False
    negotiation_timeout: float = 10.0
    connect_timeout: float = 10.0
    idle_timeout: float = 300.0
    bind_timeout: float = 60.0
    max_clients: int = 1024
    backlog: int = 1024
    buffer_size: int = 256 * 1024
    shutdown_grace: float = 10.0
    stats_interval: float = 0.0
    realm: str = "socks-sansio"
    reuse_port: bool = False
    rate_limits: RateLimitConfig = attrs.field(factory=RateLimitConfig)
    metrics_listen: tuple[str, int] | None = None
    allow_remote_metrics: bool = False
    splice: bool = True
    splice_after: int = 256 * 1024

    def __attrs_post_init__(self) -> None:
        if not self.listen and not self.tls_listen:
            raise ValueError("at least one listen address is needed")
        if self.tls_listen and not (self.tls_cert and self.tls_key):
            raise ValueError("tls:// listen addresses need both --tls-cert and --tls-key")
        if (self.tls_cert or self.tls_key) and not self.tls_listen:
            raise ValueError("--tls-cert/--tls-key apply to tls://host:port listen addresses, and none was given")
        exposed = [f"{h}:{p}" for h, p in (*self.listen, *self.tls_listen) if not _is_loopback(h)]
        if exposed and self.users is None and not self.allow_open_relay:
            raise ValueError(
                f"listening on {', '.join(exposed)} without authentication would make an open proxy; "
                "add --auth/--auth-file, or --allow-open-relay if that is really what you want"
            )
        if self.max_clients < 1 or self.backlog < 1 or self.buffer_size < 1024 or self.splice_after < 0:
            raise ValueError("max_clients and backlog must be >= 1, buffer_size >= 1024, splice_after >= 0")
        for name in ("negotiation_timeout", "connect_timeout", "idle_timeout", "bind_timeout", "shutdown_grace"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.users is None and (self.rate_limits.per_user or self.rate_limits.exempt_users):
            raise ValueError(
                "per-user rate limits and --rate-exempt need --auth/--auth-file: without logins there are no users"
            )
        if self.metrics_listen is not None:
            self._check_metrics_listen(*self.metrics_listen)

    def _check_metrics_listen(self, host: str, port: int) -> None:
        if not _is_loopback(host) and not self.allow_remote_metrics:
            raise ValueError(
                f"--metrics-listen {host}:{port} is not a loopback address; metrics show who uses the proxy, "
                "so add --allow-remote-metrics if that is really what you want"
            )
        if self.reuse_port:
            raise ValueError("--metrics-listen cannot be combined with --workers > 1 (each process has its own counts)")
        if importlib.util.find_spec("prometheus_client") is None:
            raise ValueError(f"--metrics-listen: {MISSING_EXTRA}")

    def handshake(self) -> ServerHandshake:
        """A fresh server driver with this configuration's policy."""
        return ServerHandshake(
            protocols=self.protocols,
            auth_required=self.users is not None,
            allow_socks4_without_auth=self.allow_socks4_without_auth,
            realm=self.realm,
        )

    def rate_limiter(self) -> RateLimits:
        """A fresh limiter with this configuration's limits (one per server: it holds the buckets)."""
        return RateLimits(self.rate_limits)

    def metrics(self) -> Metrics:
        """The server's metrics: serving on ``metrics_listen`` if set, else :class:`NullMetrics`.

        Close it with the server. Raises OSError when the metrics address cannot be bound.
        """
        if self.metrics_listen is None:
            return NullMetrics()
        metrics = ServerMetrics()
        metrics.serve(*self.metrics_listen)
        return metrics

    def rate_limited_user(self, handshake: ServerHandshake) -> bytes | None:
        """The user a handshake's rate limits count against: the one who logged in.

        ``None`` without a user list (any name is then accepted unchecked) and for
        SOCKS4, whose USERID is a claim, not a login: neither may pick another
        user's bucket or an exempt name.
        """
        if self.users is None or handshake.protocol is ProxyProtocol.SOCKS4:
            return None
        return handshake.username

    def server_ssl_context(self) -> ssl.SSLContext:
        """The context for ``tls_listen`` addresses (raises OSError / ssl.SSLError on unreadable files)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(self.tls_cert), str(self.tls_key))
        return context

    def upstream_ssl_context(self) -> ssl.SSLContext:
        """The context for ``https://`` upstreams: ``upstream_cacert`` if given, else the system's CAs."""
        return ssl.create_default_context(cafile=self.upstream_cacert)

    def route(self, target: Address) -> tuple[ProxyURL, ...]:
        """The proxy chain *target* goes through (``()``: dial directly)."""
        return pick_route(self.upstreams, target)

    def check_credentials(self, username: bytes, password: bytes) -> bool:
        """Whether the user list accepts these credentials (any, when there is no list)."""
        return self.users is None or self.users.check(username, password)


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


@final
class ServerStats:
    """Counters readable while the server runs (and logged with ``stats_interval``)."""

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
    outcome: str,
) -> str:
    """The one line logged per connection. Never includes a password."""
    name = user.decode("utf-8", "backslashreplace") if user else "-"
    return (
        f"{client} user={name} proto={protocol.name.lower() if protocol else '-'} cmd={command} "
        f"target={target if target is not None else '-'} up={up} down={down} time={duration:.3f}s outcome={outcome}"
    )

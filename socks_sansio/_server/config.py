"""The proxy server's settings, checked as a whole. Pure.

:class:`ServerConfig` is everything ``socks-sansio serve`` can be told (the
command line and its TOML file build one), validated when it is made so that
a server never starts half-configured: an open relay beyond loopback without
``allow_open_relay``, TLS listeners without a certificate, per-user limits
without users are all refused with a message naming the flag to change.

What needs I/O to exist (the TLS contexts, the metrics endpoint) is built from
it by the server runners in ``socks_sansio.adapters.server``.
"""

from __future__ import annotations

import importlib.util
import ipaddress
from typing import Final, Literal, final

import attrs

from .._address import Address
from .._proxy_url import ProxyProtocol, ProxyURL
from .._server_driver import ServerHandshake
from .policy import AccessPolicy, UserDatabase
from .ratelimit import RateLimitConfig, RateLimits
from .upstream import UpstreamRule, pick_route

__all__ = ["METRICS_EXTRA", "ServerConfig", "listen_address"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

METRICS_EXTRA: Final = "metrics need the 'metrics' extra: pip install 'socks-sansio[metrics]' (prometheus-client)"
UVLOOP_EXTRA: Final = (
    "--loop uvloop needs the 'uvloop' extra (Linux and macOS): pip install 'socks-sansio[uvloop]'; "
    "--loop auto takes uvloop when it is installed and asyncio's own loop otherwise"
)
EVENT_LOOPS: Final = ("auto", "asyncio", "uvloop")
"""The values of :attr:`ServerConfig.event_loop` (``--loop``)."""
EventLoopName = Literal["auto", "asyncio", "uvloop"]


def listen_address(text: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``:port`` (all of 127.0.0.1) as ``(host, port)``.

    Raises:
        LocalProtocolError: not an authority with a port.
    """
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
    ``splice`` lets the servers relay plain-TCP CONNECT tunnels with
    Linux ``splice()`` (zero-copy) when no byte rate limit is set; False keeps
    every tunnel on the copying relay. A tunnel starts on the copying relay and
    moves to splice once it has relayed ``splice_after`` octets (0: from the
    start): setting up a splice relay costs more than a short or idle tunnel
    would ever save. ``http_forward`` lets HTTP clients send plain requests
    (``GET http://host/path``) to be forwarded, besides ``CONNECT`` (only when
    the HTTP protocol is served). ``proxy_protocol_from`` are the networks of
    the load balancers in front: a connection from there must start with a
    PROXY protocol header, whose source then stands for the client; from
    anywhere else such a header is refused. ``upstream_proxy_protocol`` sends a
    version 2 header to every directly dialled target. ``rate_store`` (a
    ``redis://HOST:PORT/DB`` URL, the ``redis`` extra, asyncio backend) keeps
    the tunnel rate limits in Redis so several instances share them; when it
    cannot be reached within ``rate_store_timeout`` seconds, ``rate_store_fail``
    says whether tunnels are admitted (``open``) or refused (``closed``).
    ``health_listen`` answers ``GET /healthz`` (200 while accepting, 503 while
    draining; also on ``metrics_listen``); on SIGTERM the server keeps serving
    ``drain_delay`` seconds with ``/healthz`` at 503, so a balancer takes it out
    first, then stops accepting and drains for ``shutdown_grace``.
    ``event_loop`` is the event loop ``socks-sansio serve`` runs the asyncio
    server on (``--loop``): ``uvloop`` (the ``uvloop`` extra), ``asyncio``
    (the standard library's), or ``auto`` (uvloop when it is installed, else
    asyncio's); ``ProxyServer`` itself runs on whatever loop runs it, and
    the trio backend takes ``auto`` only.

    Raises:
        ValueError: listening beyond loopback with no authentication and without
            ``allow_open_relay`` (an accidental open proxy), a bad limit, TLS
            listeners without both certificate and key (or those without TLS
            listeners), per-user rate limits or exempt users without a user list,
            or a metrics address that is not loopback (without ``allow_remote_metrics``),
            is combined with ``reuse_port`` (several processes), or lacks the extra;
            an ``event_loop`` other than auto, asyncio or uvloop, or ``uvloop`` without uvloop installed.
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
    http_forward: bool = True
    proxy_protocol_from: tuple[IPNetwork, ...] = ()
    upstream_proxy_protocol: bool = False
    rate_store: str | None = None
    rate_store_fail: Literal["open", "closed"] = "open"
    rate_store_timeout: float = 0.25
    health_listen: tuple[str, int] | None = None
    drain_delay: float = 0.0
    event_loop: EventLoopName = "auto"

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
        self._check_rate_store()
        if self.event_loop not in EVENT_LOOPS:
            raise ValueError(f"--loop takes auto, asyncio or uvloop, not {self.event_loop!r}")
        if self.event_loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
            raise ValueError(UVLOOP_EXTRA)

    def _check_rate_store(self) -> None:
        if self.rate_store_fail not in ("open", "closed"):
            raise ValueError(f"--rate-store-fail takes open or closed, not {self.rate_store_fail!r}")
        if not self.rate_store_timeout > 0 or self.drain_delay < 0:
            raise ValueError("rate_store_timeout must be > 0 and drain_delay >= 0")
        if self.rate_store is None:
            return
        if not self.rate_store.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"--rate-store takes a redis://HOST:PORT/DB URL, not {self.rate_store!r}")
        if self.rate_limits.tunnels_per_user is None and self.rate_limits.tunnels_per_client is None:
            raise ValueError("--rate-store shares the tunnel limits: set --rate-tunnels-per-user or --per-client")
        if importlib.util.find_spec("redis") is None:
            raise ValueError("--rate-store needs the 'redis' extra: pip install 'socks-sansio[redis]'")

    def _check_metrics_listen(self, host: str, port: int) -> None:
        if not _is_loopback(host) and not self.allow_remote_metrics:
            raise ValueError(
                f"--metrics-listen {host}:{port} is not a loopback address; metrics show who uses the proxy, "
                "so add --allow-remote-metrics if that is really what you want"
            )
        if self.reuse_port:
            raise ValueError("--metrics-listen cannot be combined with --workers > 1 (each process has its own counts)")
        if importlib.util.find_spec("prometheus_client") is None:
            raise ValueError(f"--metrics-listen: {METRICS_EXTRA}")

    @property
    def byte_limits(self) -> bool:
        """Whether any byte rate limit is set (relays then charge what they move)."""
        limits = self.rate_limits
        return limits.bytes_per_user is not None or limits.bytes_per_client is not None

    @property
    def splice_wanted(self) -> bool:
        """Whether relays may move plain-TCP tunnels to ``splice()``: asked for, and no byte limit to charge.

        Byte limits are charged by copying, so they keep every tunnel on the copying
        relay; a backend adds only whether its platform supports splice.
        """
        return self.splice and not self.byte_limits

    @property
    def udp_allowed(self) -> bool:
        """UDP ASSOCIATE cannot follow a TCP proxy chain: refused when any upstream rule names a proxy."""
        return not any(rule.via for rule in self.upstreams)

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

    def rate_limited_user(self, handshake: ServerHandshake) -> bytes | None:
        """The user a handshake's rate limits count against: the one who logged in.

        ``None`` without a user list (any name is then accepted unchecked) and for
        SOCKS4, whose USERID is a claim, not a login: neither may pick another
        user's bucket or an exempt name.
        """
        if self.users is None or handshake.protocol is ProxyProtocol.SOCKS4:
            return None
        return handshake.username

    def route(self, target: Address) -> tuple[ProxyURL, ...]:
        """The proxy chain *target* goes through (``()``: dial directly)."""
        return pick_route(self.upstreams, target)

    def check_credentials(self, username: bytes, password: bytes) -> bool:
        """Whether the user list accepts these credentials (any, when there is no list).

        A hashed password costs PBKDF2: runners call this off their event loop.
        """
        return self.users is None or self.users.check(username, password)

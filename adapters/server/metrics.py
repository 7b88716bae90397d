"""Prometheus metrics for the proxy servers (the optional ``metrics`` extra).

:class:`ServerMetrics` keeps its own ``CollectorRegistry``, so two servers in
one process never mix their numbers, and exposes it in the Prometheus text
format on a :class:`~.health.StatusEndpoint` (with ``/healthz``; :meth:`ServerMetrics.serve`).
The servers call its methods unconditionally: when metrics are off they hold a
:class:`NullMetrics`, whose methods do nothing. prometheus_client is imported
only when a :class:`ServerMetrics` is made, so the extra stays optional.

Every metric is named ``socks_sansio_*``. Bytes are counted when a connection
ends, so a long tunnel shows its bytes when it closes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, final

from socks_sansio import Outcome, ProxyProtocol, ServerConfig

from .health import StatusEndpoint

__all__ = ["Metrics", "NullMetrics", "ServerMetrics", "start_health", "start_metrics"]

MISSING_EXTRA: Final = "metrics need the 'metrics' extra: pip install 'socks-sansio[metrics]' (prometheus-client)"
_NAMESPACE: Final = "socks_sansio"
# Handshakes take from a millisecond (loopback, no auth) to seconds (PBKDF2, slow clients).
_HANDSHAKE_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _protocol_label(protocol: ProxyProtocol | None) -> str:
    return protocol.name.lower() if protocol is not None else "unknown"


@final
class ServerMetrics:
    """The counters, gauges and histogram of one server, in a registry of their own.

    Raises:
        ImportError: prometheus_client is not installed (the message names the extra).
    """

    def __init__(self) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError as exc:
            raise ImportError(MISSING_EXTRA) from exc
        self.registry: Final = CollectorRegistry()
        ns, reg = _NAMESPACE, self.registry
        self._tunnels = Counter("tunnels", "Connections ended, by protocol and outcome", ["protocol", "outcome"],
                                namespace=ns, registry=reg)
        self._active = Gauge("tunnels_active", "Tunnels relaying now", ["protocol"], namespace=ns, registry=reg)
        self._bytes = Counter("bytes", "Bytes relayed (up: client to target)", ["direction"],
                              namespace=ns, registry=reg)
        self._handshake = Histogram("handshake_seconds", "From accept to the tunnel request read, auth included",
                                    buckets=_HANDSHAKE_BUCKETS, namespace=ns, registry=reg)
        self._auth_failures = Counter("auth_failures", "Credentials refused", namespace=ns, registry=reg)
        self._denials = Counter("rule_denials", "Requests refused by the access rules", namespace=ns, registry=reg)
        self._rate_limited = Counter("rate_limited", "Rate limit hits: tunnels refused, relays paused, datagrams lost",
                                     ["kind"], namespace=ns, registry=reg)
        self._store_failures = Counter("rate_store_failures", "Calls to the shared rate store that failed",
                                       namespace=ns, registry=reg)
        self._endpoints: list[StatusEndpoint] = []

    def serve(self, host: str, port: int, *, ready: Callable[[], bool] = lambda: True) -> tuple[str, int]:
        """Expose ``/metrics`` (and ``/healthz``, from *ready*) on *host*:*port* (port 0: any free one).

        Returns:
            the bound ``(host, port)``.

        Raises:
            OSError: the address cannot be bound.
        """
        from prometheus_client import make_wsgi_app

        endpoint = StatusEndpoint(host, port, ready=ready, metrics_app=make_wsgi_app(self.registry))
        self._endpoints.append(endpoint)
        return endpoint.address

    @property
    def address(self) -> tuple[str, int] | None:
        """Where the first endpoint listens, if one was started."""
        return self._endpoints[0].address if self._endpoints else None

    def close(self) -> None:
        """Stop every endpoint and release its port; the counters stay readable."""
        while self._endpoints:
            self._endpoints.pop().close()

    def tunnel_opened(self, protocol: ProxyProtocol | None) -> None:
        """A tunnel (or UDP association) is up: one more active. Pair with :meth:`tunnel_closed`."""
        self._active.labels(_protocol_label(protocol)).inc()

    def tunnel_closed(self, protocol: ProxyProtocol | None) -> None:
        """A tunnel counted by :meth:`tunnel_opened` ended: one fewer active."""
        self._active.labels(_protocol_label(protocol)).dec()

    def connection_closed(self, protocol: ProxyProtocol | None, outcome: Outcome, *, up: int, down: int) -> None:
        """Count one finished connection and its bytes.

        Args:
            protocol: what the client spoke (``None``: it closed before saying).
            outcome: how it ended; the label is its kind's (``connection error``,
                not its detail), which keeps the label values few.
            up: bytes from the client to the target.
            down: bytes from the target to the client.
        """
        self._tunnels.labels(_protocol_label(protocol), outcome.kind.label).inc()
        if up:
            self._bytes.labels("up").inc(up)
        if down:
            self._bytes.labels("down").inc(down)

    def handshake_done(self, seconds: float) -> None:
        """Observe how long a handshake took."""
        self._handshake.observe(seconds)

    def auth_failed(self) -> None:
        """Count refused credentials."""
        self._auth_failures.inc()

    def denied(self) -> None:
        """Count a request the access rules refused."""
        self._denials.inc()

    def rate_limited(self, kind: str) -> None:
        """Count a rate limit hit: ``kind`` is ``tunnels`` (refused) or ``bytes`` (relay paused, datagram dropped)."""
        self._rate_limited.labels(kind).inc()

    def rate_store_failed(self) -> None:
        """Count a failed call to the shared rate store."""
        self._store_failures.inc()


@final
class NullMetrics:
    """What servers hold when metrics are off: the same calls, doing nothing."""

    address: Final = None

    def close(self) -> None:
        """Nothing to stop."""

    def tunnel_opened(self, protocol: ProxyProtocol | None) -> None:
        """Nothing counted."""

    def tunnel_closed(self, protocol: ProxyProtocol | None) -> None:
        """Nothing counted."""

    def connection_closed(self, protocol: ProxyProtocol | None, outcome: Outcome, *, up: int, down: int) -> None:
        """Nothing counted."""

    def handshake_done(self, seconds: float) -> None:
        """Nothing counted."""

    def auth_failed(self) -> None:
        """Nothing counted."""

    def denied(self) -> None:
        """Nothing counted."""

    def rate_limited(self, kind: str) -> None:
        """Nothing counted."""

    def rate_store_failed(self) -> None:
        """Nothing counted."""


Metrics = ServerMetrics | NullMetrics
"""What a server holds: :class:`ServerMetrics`, or :class:`NullMetrics` when metrics are off."""


def start_metrics(config: ServerConfig, ready: Callable[[], bool] = lambda: True) -> Metrics:
    """A server's metrics: serving on ``config.metrics_listen`` (with ``/healthz``) if set, else :class:`NullMetrics`.

    Close it with the server.

    Raises:
        OSError: the metrics address cannot be bound.
    """
    if config.metrics_listen is None:
        return NullMetrics()
    metrics = ServerMetrics()
    metrics.serve(*config.metrics_listen, ready=ready)
    return metrics


def start_health(config: ServerConfig, ready: Callable[[], bool]) -> StatusEndpoint | None:
    """The ``health_listen`` endpoint (``/healthz`` only), if configured.

    Raises:
        OSError: the address cannot be bound.
    """
    if config.health_listen is None:
        return None
    return StatusEndpoint(*config.health_listen, ready=ready)

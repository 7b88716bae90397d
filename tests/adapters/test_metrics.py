"""Prometheus metrics, and the ``serve`` settings for metrics and rate limits.

The endpoint runs on 127.0.0.1 port 0 and is scraped over loopback with
urllib; the text is parsed with prometheus_client's own parser, so the values
are checked as a Prometheus server would read them. Settings go through the
real ``serve`` argument parser and config loader.
"""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from socks_sansio import (
    Outcome,
    OutcomeKind,
    ProxyProtocol,
    Rate,
    RateLimitConfig,
    ServerConfig,
    ServerHandshake,
    UserDatabase,
)
from socks_sansio.adapters import cli
from socks_sansio.adapters.cli.serve import config_from_argv
from socks_sansio.adapters.server.metrics import NullMetrics, ServerMetrics, start_metrics

TIMEOUT = 10.0
USERS = UserDatabase({"alice": "pw"})


def scrape(address: tuple[str, int]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the endpoint as ``{(name, sorted labels): value}``."""
    with urllib.request.urlopen(f"http://{address[0]}:{address[1]}/metrics", timeout=TIMEOUT) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def metrics() -> Iterator[ServerMetrics]:
    server = ServerMetrics()
    yield server
    server.close()


def test_the_endpoint_is_scraped_and_parsed(metrics: ServerMetrics) -> None:
    address = metrics.serve("127.0.0.1", 0)
    assert address[0] == "127.0.0.1" and address[1] > 0 and metrics.address == address
    metrics.tunnel_opened(ProxyProtocol.SOCKS5)
    metrics.tunnel_opened(ProxyProtocol.SOCKS5)
    metrics.handshake_done(0.003)
    metrics.handshake_done(0.2)
    during = scrape(address)
    metrics.tunnel_closed(ProxyProtocol.SOCKS5)
    metrics.connection_closed(ProxyProtocol.SOCKS5, Outcome(OutcomeKind.OK), up=100, down=2000)
    metrics.connection_closed(ProxyProtocol.HTTP, Outcome(OutcomeKind.CONNECTION_ERROR, "OSError"), up=7, down=0)
    metrics.connection_closed(None, Outcome(OutcomeKind.CLOSED_DURING_NEGOTIATION), up=0, down=0)
    metrics.auth_failed()
    metrics.denied()
    metrics.denied()
    metrics.rate_limited("tunnels")
    metrics.rate_limited("bytes")
    metrics.rate_limited("bytes")
    after = scrape(address)

    assert during[("socks_sansio_tunnels_active", (("protocol", "socks5"),))] == 2
    assert after[("socks_sansio_tunnels_active", (("protocol", "socks5"),))] == 1
    tunnels = "socks_sansio_tunnels_total"
    assert after[(tunnels, (("outcome", "ok"), ("protocol", "socks5")))] == 1
    assert after[(tunnels, (("outcome", "connection error"), ("protocol", "http")))] == 1
    assert after[(tunnels, (("outcome", "closed during negotiation"), ("protocol", "unknown")))] == 1
    assert after[("socks_sansio_bytes_total", (("direction", "up"),))] == 107
    assert after[("socks_sansio_bytes_total", (("direction", "down"),))] == 2000
    assert after[("socks_sansio_handshake_seconds_count", ())] == 2
    assert after[("socks_sansio_handshake_seconds_sum", ())] == pytest.approx(0.203)
    assert after[("socks_sansio_handshake_seconds_bucket", (("le", "0.005"),))] == 1
    assert after[("socks_sansio_handshake_seconds_bucket", (("le", "+Inf"),))] == 2
    assert after[("socks_sansio_auth_failures_total", ())] == 1
    assert after[("socks_sansio_rule_denials_total", ())] == 2
    assert after[("socks_sansio_rate_limited_total", (("kind", "tunnels"),))] == 1
    assert after[("socks_sansio_rate_limited_total", (("kind", "bytes"),))] == 2


def test_each_server_counts_alone(metrics: ServerMetrics) -> None:
    other = ServerMetrics()
    try:
        address = metrics.serve("127.0.0.1", 0)
        other.auth_failed()
        assert scrape(address)[("socks_sansio_auth_failures_total", ())] == 0
    finally:
        other.close()


def test_close_releases_the_port(metrics: ServerMetrics) -> None:
    _host, port = metrics.serve("127.0.0.1", 0)
    metrics.close()
    assert metrics.address is None
    again = ServerMetrics()
    try:
        assert again.serve("127.0.0.1", port) == ("127.0.0.1", port)
    finally:
        again.close()


def test_null_metrics_take_the_same_calls() -> None:
    null = NullMetrics()
    null.tunnel_opened(ProxyProtocol.HTTP)
    null.tunnel_closed(ProxyProtocol.HTTP)
    null.connection_closed(ProxyProtocol.HTTP, Outcome(OutcomeKind.OK), up=1, down=1)
    null.handshake_done(0.1)
    null.auth_failed()
    null.denied()
    null.rate_limited("bytes")
    null.close()
    assert null.address is None


def test_without_the_extra_the_message_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # what a missing package looks like
    with pytest.raises(ImportError, match=r"socks-sansio\[metrics\]"):
        ServerMetrics()
    with pytest.raises(ValueError, match=r"socks-sansio\[metrics\]"):
        ServerConfig(metrics_listen=("127.0.0.1", 9100))


# -- ServerConfig -----------------------------------------------------------------------


def test_config_builds_serving_metrics_or_none() -> None:
    assert isinstance(start_metrics(ServerConfig()), NullMetrics)
    metrics = start_metrics(ServerConfig(metrics_listen=("127.0.0.1", 0)))
    try:
        assert isinstance(metrics, ServerMetrics) and metrics.address is not None
        assert ("socks_sansio_auth_failures_total", ()) in scrape(metrics.address)
    finally:
        metrics.close()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"metrics_listen": ("0.0.0.0", 9100)}, "--allow-remote-metrics"),
        ({"metrics_listen": ("127.0.0.1", 9100), "reuse_port": True}, "--workers"),
        ({"rate_limits": RateLimitConfig(tunnels_per_user=Rate(1))}, "need --auth"),
        ({"rate_limits": RateLimitConfig(exempt_users=frozenset({b"alice"}))}, "need --auth"),
    ],
)
def test_config_refuses(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServerConfig(**settings)


def test_remote_metrics_need_the_explicit_flag() -> None:
    config = ServerConfig(metrics_listen=("0.0.0.0", 9100), allow_remote_metrics=True)
    assert config.metrics_listen == ("0.0.0.0", 9100)


def handshake_of(protocol: str) -> ServerHandshake:
    """A server handshake up to the request, with user alice (logged in, or a SOCKS4 USERID)."""
    handshake = ServerHandshake(auth_required=True, allow_socks4_without_auth=True)
    if protocol == "socks4":
        handshake.receive_data(b"\x04\x01\x00\x50\x7f\x00\x00\x01alice\x00")
        handshake.next_event()
        return handshake
    handshake.receive_data(b"\x05\x01\x02" + b"\x01\x05alice\x02pw")
    handshake.next_event()
    handshake.accept_credentials(True)
    handshake.receive_data(b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50")
    handshake.next_event()
    return handshake


def test_only_a_login_picks_a_users_limits() -> None:
    with_users = ServerConfig(users=USERS)
    assert with_users.rate_limited_user(handshake_of("socks5")) == b"alice"
    assert with_users.rate_limited_user(handshake_of("socks4")) is None  # a USERID is a claim
    assert ServerConfig().rate_limited_user(handshake_of("socks5")) is None  # nothing was checked


def test_config_builds_a_limiter_of_its_limits() -> None:
    limits = RateLimitConfig(tunnels_per_client=Rate(1, 1))
    limiter = ServerConfig(rate_limits=limits).rate_limiter()
    assert limiter.config is limits
    assert ServerConfig(rate_limits=limits).rate_limiter() is not limiter  # one per server


# -- the serve flags and config file ------------------------------------------------------


def serve_config(*argv: str) -> ServerConfig:
    return config_from_argv(argv)


def test_rate_and_metrics_flags() -> None:
    config = serve_config(
        "--auth", "alice:pw", "--auth", "bob:pw",
        "--rate-tunnels-per-user", "5:10", "--rate-tunnels-per-client", "20",
        "--rate-bytes-per-user", "1M", "--rate-bytes-per-client", "64k:256k",
        "--rate-exempt", "bob", "--rate-exempt", "carol",
        "--metrics-listen", ":0",
    )  # fmt: skip
    assert config.rate_limits == RateLimitConfig(
        tunnels_per_user=Rate(5, 10),
        tunnels_per_client=Rate(20, 20),
        bytes_per_user=Rate(1024**2, 1024**2),
        bytes_per_client=Rate(65536, 262144),
        exempt_users=frozenset({b"bob", b"carol"}),
    )
    assert config.metrics_listen == ("127.0.0.1", 0) and not config.allow_remote_metrics


def test_no_flags_no_limits_no_metrics() -> None:
    config = serve_config()
    assert not config.rate_limits.enabled and config.metrics_listen is None


def test_the_config_file_takes_the_same_keys(tmp_path: Path) -> None:
    path = tmp_path / "serve.toml"
    path.write_text(
        'auth = ["alice:pw"]\n'
        "rate-tunnels-per-user = 2.5\n"
        'rate_bytes_per_client = "1M:4M"\n'
        'rate-exempt = "alice"\n'
        'metrics-listen = "[::1]:0"\n'
        "allow-remote-metrics = true\n"
    )
    config = serve_config("--config", str(path), "--rate-tunnels-per-client", "3")
    assert config.rate_limits == RateLimitConfig(
        tunnels_per_user=Rate(2.5, 2.5),
        tunnels_per_client=Rate(3, 3),
        bytes_per_client=Rate(1024**2, 4 * 1024**2),
        exempt_users=frozenset({b"alice"}),
    )
    assert config.metrics_listen == ("::1", 0) and config.allow_remote_metrics


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rate-tunnels-per-client", "fast"], "rate 'fast' must be N or N:BURST"),
        (["--rate-bytes-per-client", "0"], "--rate-bytes-per-client: a rate must be a finite number > 0"),
        (["--rate-tunnels-per-client", "1:0.5"], "tunnel burst must be >= 1"),
        (["--rate-bytes-per-user", "1M"], "need --auth"),
        (["--rate-exempt", "bob"], "need --auth"),
        (["--metrics-listen", "192.0.2.1:9100", "--allow-open-relay"], "not a loopback address"),
        (["--metrics-listen", "127.0.0.1:99999"], "port"),
    ],
)
def test_bad_settings_exit_2_with_a_message(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve", *argv]) == 2
    assert message in capsys.readouterr().err

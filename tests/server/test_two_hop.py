"""Two-hop deployments: upstream routes and TLS listeners of the asyncio server, on loopback.

Strategy. A "remote" server listens with TLS (``tls_listen``, certificates from
:class:`tests.adapters.servers.TLSFiles` written to files) and requires a
password; a "local" server forwards through it with an ``https://`` upstream
(trusting the test CA with ``upstream_cacert``). Both run in process
(:class:`InProcessProxy`) so their counters prove which hop a tunnel took;
one test runs the exact README commands as subprocesses and uses curl.
Clients are our sync adapter, curl, and the raw encoders of the conftest
(wrapped in TLS by hand for SOCKS5 over TLS, which no proxy URL expresses:
``ProxyURL(tls=True)`` is for ``https://`` only). The trio server's versions
of these tests are in ``tests/adapters/test_trio_server_two_hop.py``.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from socks_sansio import (
    Address,
    Failure,
    LocalProtocolError,
    ProxyAuthError,
    ProxyConnectionError,
    ProxyRefusedError,
    ProxyTimeoutError,
    ProxyURL,
    ServerConfig,
    UserDatabase,
    parse_upstream,
)
from socks_sansio._server.outcome import upstream_failure
from socks_sansio._server.upstream import pick_route
from socks_sansio.adapters.cli import main
from socks_sansio.adapters.cli.serve import build_config
from socks_sansio.adapters.server.tls import server_ssl_context
from socks_sansio.adapters.sync import connect as sync_connect
from tests.adapters.servers import ThreadedServer, TLSFiles, echo_server, recv_exactly

from .conftest import (
    HOST,
    PASSWORD,
    TIMEOUT,
    USER,
    InProcessProxy,
    ProxyFactory,
    closed_port,
    http_connect_request,
    http_status,
    read_http_head,
    run_curl,
    socks5_open,
)

MIB = 1 << 20


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The test CA and a certificate for 127.0.0.1 / localhost, as PEM files."""
    files = TLSFiles()
    directory = tmp_path_factory.mktemp("tls")
    ca, cert, key = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    files.ca.cert_pem.write_to_path(str(ca))
    files.cert.cert_chain_pems[0].write_to_path(str(cert))
    for extra in files.cert.cert_chain_pems[1:]:
        extra.write_to_path(str(cert), append=True)
    files.cert.private_key_pem.write_to_path(str(key))
    return {"files": files, "ca": str(ca), "cert": str(cert), "key": str(key)}


@pytest.fixture
def remote(in_process_proxy: Callable[..., InProcessProxy], tls: dict[str, Any]) -> InProcessProxy:
    """A password-protected server listening with TLS only."""
    return in_process_proxy(
        listen=(),
        tls_listen=((HOST, 0),),
        tls_cert=tls["cert"],
        tls_key=tls["key"],
        users=UserDatabase({USER: PASSWORD}),
    )


def upstream_url(server: InProcessProxy, scheme: str = "https", password: str = PASSWORD) -> str:
    return f"{scheme}://{USER}:{password}@{HOST}:{server.address[1]}"


def local_via(
    in_process_proxy: Callable[..., InProcessProxy], tls: dict[str, Any], *rules: str, **fields: Any
) -> InProcessProxy:
    """A plain loopback server routing with *rules*."""
    return in_process_proxy(
        upstreams=tuple(parse_upstream(rule) for rule in rules), upstream_cacert=tls["ca"], **fields
    )


def tunnels(server: InProcessProxy) -> int:
    return sum(server.stats()["tunnels"].values())


def exchange(sock: Any, payload: bytes) -> bytes:
    """Send *payload* while reading the echo; returns what came back.

    A large payload is sent from a thread (plain sockets only: a TLS socket must
    not be used from two threads at once); a small one fits the socket buffers.
    """
    if len(payload) <= 16384:
        sock.sendall(payload)
        sender = None
    else:
        sender = threading.Thread(target=sock.sendall, args=(payload,), daemon=True)
        sender.start()
    received = bytearray()
    while len(received) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    if sender is not None:
        sender.join(TIMEOUT)
    return bytes(received)


@pytest.fixture
def echo() -> Iterator[ThreadedServer]:
    with echo_server() as server:
        yield server


# ------------------------------------------------------------------ end to end


def test_two_hop_over_tls_one_mebibyte(
    in_process_proxy: Callable[..., InProcessProxy], tls: dict[str, Any], remote: InProcessProxy, echo: ThreadedServer
) -> None:
    local = local_via(in_process_proxy, tls, upstream_url(remote))
    payload = bytes(range(256)) * (MIB // 256)
    with sync_connect(HOST, echo.port, proxy=f"socks5h://{HOST}:{local.address[1]}", timeout=TIMEOUT) as sock:
        sock.settimeout(TIMEOUT)
        assert exchange(sock, payload) == payload
    stats = remote.wait_stats(lambda s: s["tunnels"].get("http") == 1)
    assert stats["bytes_up"] == MIB and stats["bytes_down"] == MIB
    local.wait_stats(lambda s: s["tunnels"].get("socks5") == 1)


def test_rules_route_targets_differently(
    in_process_proxy: Callable[..., InProcessProxy], tls: dict[str, Any], remote: InProcessProxy
) -> None:
    with echo_server() as direct, echo_server() as routed:
        local = local_via(
            in_process_proxy, tls, f"to=127.0.0.0/8 port={direct.port} via=direct", upstream_url(remote)
        )
        for target, message in ((direct, b"straight"), (routed, b"two hops")):
            with sync_connect(HOST, target.port, proxy=f"socks5://{HOST}:{local.address[1]}", timeout=TIMEOUT) as s:
                s.settimeout(TIMEOUT)
                assert exchange(s, message) == message
        local.wait_stats(lambda s: s["tunnels"].get("socks5") == 2)
        stats = remote.wait_stats(lambda s: tunnels_of(s) == 1)
        assert stats["bytes_up"] == len(b"two hops")


def tunnels_of(stats: dict[str, Any]) -> int:
    return sum(stats["tunnels"].values())


def test_chain_of_two_upstreams(
    in_process_proxy: Callable[..., InProcessProxy], tls: dict[str, Any], remote: InProcessProxy, echo: ThreadedServer
) -> None:
    middle = in_process_proxy()
    local = local_via(in_process_proxy, tls, f"via=socks5h://{HOST}:{middle.address[1]},{upstream_url(remote)}")
    with sync_connect(HOST, echo.port, proxy=f"http://{HOST}:{local.address[1]}", timeout=TIMEOUT) as sock:
        sock.settimeout(TIMEOUT)
        assert exchange(sock, b"x" * 5000) == b"x" * 5000
    middle.wait_stats(lambda s: s["tunnels"].get("socks5") == 1)
    remote.wait_stats(lambda s: s["tunnels"].get("http") == 1)


def test_https_proxy_with_our_client(remote: InProcessProxy, tls: dict[str, Any], echo: ThreadedServer) -> None:
    context = tls["files"].client_context()
    with sync_connect(HOST, echo.port, proxy=upstream_url(remote), proxy_ssl=context, timeout=TIMEOUT) as sock:
        sock.settimeout(TIMEOUT)
        assert exchange(sock, b"hello over TLS") == b"hello over TLS"


def test_https_proxy_with_curl(remote: InProcessProxy, tls: dict[str, Any], origin: tuple[str, int]) -> None:
    result = run_curl(
        "--proxy", f"https://{HOST}:{remote.address[1]}", "--proxy-cacert", tls["ca"],
        "--proxy-user", f"{USER}:{PASSWORD}", "--proxytunnel", f"http://{HOST}:{origin[1]}/via-curl",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "hello from the origin, path /via-curl" in result.stdout


def test_socks5_over_tls_by_hand(remote: InProcessProxy, tls: dict[str, Any], echo: ThreadedServer) -> None:
    context = tls["files"].client_context()
    raw = socket.create_connection(remote.address, timeout=TIMEOUT)
    with context.wrap_socket(raw, server_hostname=HOST) as sock:
        rep, _ = socks5_open(sock, 1, HOST, echo.port, user=USER, password=PASSWORD)
        assert rep == 0
        sock.sendall(b"socks5 inside TLS")
        assert recv_exactly(sock, 17) == b"socks5 inside TLS"
    remote.wait_stats(lambda s: s["tunnels"].get("socks5") == 1)


def test_plain_bytes_on_a_tls_listener_are_dropped(remote: InProcessProxy) -> None:
    with socket.create_connection(remote.address, timeout=TIMEOUT) as sock:
        sock.sendall(http_connect_request("example.com:443"))
        with contextlib.suppress(ConnectionResetError):
            assert not sock.recv(100).startswith(b"HTTP/")  # a TLS alert or a close, never an HTTP reply
    remote.wait_stats(lambda s: s["active"] == 0)
    assert tunnels(remote) == 0


# ------------------------------------------------------------------ refusals


def test_refused_target_through_upstream(
    in_process_proxy: Callable[..., InProcessProxy], tls: dict[str, Any], remote: InProcessProxy
) -> None:
    socks_remote = in_process_proxy()
    for upstream in (upstream_url(remote), f"socks5h://{HOST}:{socks_remote.address[1]}"):
        local = local_via(in_process_proxy, tls, upstream)
        with socket.create_connection(local.address, timeout=TIMEOUT) as sock:
            rep, _ = socks5_open(sock, 1, HOST, closed_port())
            assert rep == 5, upstream
        with socket.create_connection(local.address, timeout=TIMEOUT) as sock:
            sock.sendall(http_connect_request(f"{HOST}:{closed_port()}"))
            assert http_status(read_http_head(sock)) == 502


@pytest.mark.parametrize("case", ["wrong password", "dead upstream"])
def test_upstream_failures_are_general(
    in_process_proxy: Callable[..., InProcessProxy],
    tls: dict[str, Any],
    remote: InProcessProxy,
    echo: ThreadedServer,
    case: str,
) -> None:
    url = upstream_url(remote, password="nope") if case == "wrong password" else f"socks5h://{HOST}:{closed_port()}"
    local = local_via(in_process_proxy, tls, url)
    with socket.create_connection(local.address, timeout=TIMEOUT) as sock:
        rep, _ = socks5_open(sock, 1, HOST, echo.port)
        assert rep == 1
    local.wait_stats(lambda s: s["failures"].get("upstream failed") == 1)


def test_untrusted_upstream_certificate_fails(
    in_process_proxy: Callable[..., InProcessProxy], remote: InProcessProxy, echo: ThreadedServer
) -> None:
    local = in_process_proxy(upstreams=(parse_upstream(upstream_url(remote)),))  # the system CAs only
    with socket.create_connection(local.address, timeout=TIMEOUT) as sock:
        rep, _ = socks5_open(sock, 1, HOST, echo.port)
        assert rep == 1
    assert tunnels(remote) == 0


def test_local_rules_still_apply_before_the_upstream(
    in_process_proxy: Callable[..., InProcessProxy], tls: dict[str, Any], remote: InProcessProxy, echo: ThreadedServer
) -> None:
    from socks_sansio import AccessPolicy, AccessRule

    policy = AccessPolicy(rules=(AccessRule.parse("deny", f"port={echo.port}"),))
    local = local_via(in_process_proxy, tls, upstream_url(remote), policy=policy)
    with socket.create_connection(local.address, timeout=TIMEOUT) as sock:
        rep, _ = socks5_open(sock, 1, "localhost", echo.port)
        assert rep == 2
    assert tunnels(remote) == 0


@pytest.mark.parametrize("command", [2, 3])
def test_bind_and_udp_through_upstream_not_supported(
    in_process_proxy: Callable[..., InProcessProxy], tls: dict[str, Any], remote: InProcessProxy, command: int
) -> None:
    local = local_via(in_process_proxy, tls, upstream_url(remote))
    with socket.create_connection(local.address, timeout=TIMEOUT) as sock:
        rep, _ = socks5_open(sock, command, HOST, 9)
        assert rep == 7


def test_udp_allowed_when_every_route_is_direct(
    in_process_proxy: Callable[..., InProcessProxy], tls: dict[str, Any]
) -> None:
    local = local_via(in_process_proxy, tls, "port=443 via=direct")
    with socket.create_connection(local.address, timeout=TIMEOUT) as sock:
        rep, _ = socks5_open(sock, 3, HOST, 0)
        assert rep == 0


# ------------------------------------------------------------------ the README commands, as subprocesses


def test_readme_two_hop_commands(
    any_proxies: ProxyFactory, tls: dict[str, Any], origin: tuple[str, int]
) -> None:
    remote = any_proxies(
        "--listen", f"tls://{HOST}:0", "--tls-cert", tls["cert"], "--tls-key", tls["key"],
        "--auth", f"{USER}:{PASSWORD}", backend="asyncio", listen=False,
    )  # fmt: skip
    local = any_proxies(
        "--upstream", f"https://{USER}:{PASSWORD}@{HOST}:{remote.port}", "--upstream-cacert", tls["ca"],
        backend="asyncio",
    )  # fmt: skip
    result = run_curl("--socks5-hostname", local.authority, f"http://localhost:{origin[1]}/two-hop")
    assert result.returncode == 0, result.stderr + local.log() + remote.log()
    assert "hello from the origin, path /two-hop" in result.stdout
    remote.wait_log(f"proto=http cmd=CONNECT target=localhost:{origin[1]} ")
    local.wait_log(f"proto=socks5 cmd=CONNECT target=localhost:{origin[1]} ")
    assert PASSWORD not in local.log()


# ------------------------------------------------------------------ configuration and rules


def test_build_config_splits_tls_listens(tls: dict[str, Any]) -> None:
    config = build_config(
        {"listen": ["127.0.0.1:1080", "tls://[::1]:1443"], "tls_cert": tls["cert"], "tls_key": tls["key"],
         "upstream": ["to=*.internal via=direct", "socks5h://u:pw@10.0.0.1:1080"]}
    )  # fmt: skip
    assert config.listen == (("127.0.0.1", 1080),)
    assert config.tls_listen == (("::1", 1443),)
    assert config.route(Address("db.internal", 5432)) == ()
    assert config.route(Address("example.com", 443)) == (ProxyURL.parse("socks5h://u:pw@10.0.0.1:1080"),)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"listen": (), "tls_listen": ((HOST, 1443),)}, "need both --tls-cert and --tls-key"),
        ({"tls_cert": "c.pem", "tls_key": "k.pem"}, "apply to tls://host:port"),
        ({"listen": (), "tls_listen": (("0.0.0.0", 1443),), "tls_cert": "c", "tls_key": "k"}, "open proxy"),
    ],
)
def test_bad_tls_configs(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServerConfig(**fields)


def test_cli_reports_bad_upstream(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--upstream", "to=*.internal"]) == 2
    assert "via=" in capsys.readouterr().err


def test_rules_first_match_wins() -> None:
    rules = [
        parse_upstream("to=*.internal,10.0.0.0/8 port=443 via=direct"),
        parse_upstream("to=*.corp via=socks5h://a:1080,https://b:443"),
        parse_upstream("https://user:secret@remote:1443"),
    ]
    remote = (ProxyURL.parse("https://user:secret@remote:1443"),)
    assert pick_route(rules, Address("db.internal", 443)) == ()
    assert pick_route(rules, Address("10.1.2.3", 443)) == ()
    assert pick_route(rules, Address("db.internal", 80)) == remote
    assert pick_route(rules, Address("10.1.2.3", 80)) == remote
    assert [url.address.host_str for url in pick_route(rules, Address("x.corp", 22))] == ["a", "b"]
    assert pick_route(rules, Address("example.com", 443)) == remote
    assert pick_route(rules[:2], Address("example.com", 443)) == ()
    assert "secret" not in rules[2].text and "***" in rules[2].text


@pytest.mark.parametrize(
    "text", ["", "to=*.internal", "via=", "via=direct via=direct", "from=10.0.0.0/8 via=direct", "bogus=1 via=direct",
             "via=ftp://x:1", "port=99999 via=direct"],
)
def test_bad_upstream_rules(text: str) -> None:
    with pytest.raises(LocalProtocolError):
        parse_upstream(text)


def test_bad_upstream_rule_never_shows_password() -> None:
    with pytest.raises(LocalProtocolError) as info:
        parse_upstream("port=x via=https://user:hunter2@remote:1443")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("error", "failure"),
    [
        (ProxyRefusedError("r", protocol="socks5", code=5), Failure.CONNECTION_REFUSED),
        (ProxyRefusedError("r", protocol="socks5", code=2), Failure.NOT_ALLOWED),
        (ProxyRefusedError("r", protocol="socks5", code=4), Failure.HOST_UNREACHABLE),
        (ProxyRefusedError("r", protocol="socks5", code=99), Failure.GENERAL_FAILURE),
        (ProxyRefusedError("r", protocol="http", code=502), Failure.CONNECTION_REFUSED),
        (ProxyRefusedError("r", protocol="http", code=403), Failure.NOT_ALLOWED),
        (ProxyRefusedError("r", protocol="http", code=504), Failure.TIMED_OUT),
        (ProxyRefusedError("r", protocol="socks4", code=91), Failure.CONNECTION_REFUSED),
        (ProxyAuthError("a", protocol="socks5", code=1), Failure.GENERAL_FAILURE),
        (ProxyTimeoutError("t"), Failure.TIMED_OUT),
        (ProxyConnectionError("c"), Failure.GENERAL_FAILURE),
    ],
)
def test_upstream_failure_mapping(error: Any, failure: Failure) -> None:
    assert upstream_failure(error) is failure


def test_tls_context_from_files(tls: dict[str, Any], tmp_path: Path) -> None:
    config = ServerConfig(listen=(), tls_listen=((HOST, 0),), tls_cert=tls["cert"], tls_key=tls["key"])
    assert isinstance(server_ssl_context(config), ssl.SSLContext)
    assert server_ssl_context(ServerConfig()) is None
    missing = ServerConfig(listen=(), tls_listen=((HOST, 0),), tls_cert=str(tmp_path / "no"), tls_key="no")
    with pytest.raises(FileNotFoundError):
        server_ssl_context(missing)


def test_readme_upstream_rules_parse() -> None:
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    rules = re.findall(r"--upstream '([^']+)'", readme)
    assert len(rules) >= 4
    for text in rules:
        parse_upstream(text)


def test_block_private_through_upstream_applies_to_ip_literals_only(
    in_process_proxy: Callable[..., InProcessProxy], tls: dict[str, Any], remote: InProcessProxy, echo: ThreadedServer
) -> None:
    from socks_sansio import AccessPolicy

    local = local_via(in_process_proxy, tls, upstream_url(remote), policy=AccessPolicy(block_private=True))
    with socket.create_connection(local.address, timeout=TIMEOUT) as sock:
        rep, _ = socks5_open(sock, 1, HOST, echo.port)
        assert rep == 2  # a literal: refused here, never sent upstream
    assert tunnels(remote) == 0
    with socket.create_connection(local.address, timeout=TIMEOUT) as sock:
        rep, _ = socks5_open(sock, 1, "localhost", echo.port)
        assert rep == 0  # a name: not resolved here; the remote (no guard) resolves and dials it
        sock.sendall(b"ping")
        assert recv_exactly(sock, 4) == b"ping"
    remote.wait_stats(lambda s: tunnels_of(s) == 1)

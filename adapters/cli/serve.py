"""``socks-sansio serve``: the proxy server, from flags and a TOML file.

Every flag can also be given in a TOML file (``--config``) under the same name
with dashes or underscores (``max-clients = 100``); flags win. The file is
checked against the flags' own definitions (:func:`define_flags`, read by
:mod:`.config_file`): an unknown key or a wrong type is refused. The settings
become one :class:`~socks_sansio.ServerConfig` (which checks them as a whole),
run by the asyncio or the trio server, in one process or several sharing the
port (``--workers``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from socks_sansio import (
    AccessPolicy,
    AccessRule,
    LocalProtocolError,
    ProxyProtocol,
    Rate,
    RateLimitConfig,
    ServerConfig,
    UserDatabase,
    listen_address,
    parse_upstream,
)

from .config_file import ConfigFileError, load_config, number_or_text, options_of

__all__ = ["add_parser", "build_config", "config_from_argv", "define_flags", "run"]

_PROTOCOL_NAMES = {"socks5": ProxyProtocol.SOCKS5, "socks4": ProxyProtocol.SOCKS4, "http": ProxyProtocol.HTTP}
server_logger = logging.getLogger("socks_sansio.server")


def add_parser(commands: Any) -> None:
    """Add ``serve`` and its flags (:func:`define_flags`) to the command line."""
    define_flags(commands.add_parser("serve", help="run a SOCKS5 + SOCKS4/4a + HTTP CONNECT proxy"))


def define_flags(serve: argparse.ArgumentParser) -> None:
    """Every flag of ``serve``, in one place: the ``--config`` file takes the same keys, checked against these.

    A flag added here is a key of the config file at once, with the type its
    argparse action gives it (see :mod:`.config_file`). Leave defaults to
    :func:`build_config` (``default=None``), so that a flag not given does not
    override the file.
    """
    serve.add_argument("--config", type=Path, help="TOML file with the same keys as these flags (dashes or "
                       "underscores; flags given too win); unknown keys and wrong types are refused")
    serve.add_argument("--listen", action="append", help="host:port or [v6]:port to listen on (repeatable; "
                       "default 127.0.0.1:1080); tls://host:port serves the same protocols inside TLS "
                       "(HTTPS proxy, SOCKS over TLS) with --tls-cert/--tls-key")
    serve.add_argument("--tls-cert", metavar="FILE", help="PEM certificate chain for every tls:// listen address")
    serve.add_argument("--tls-key", metavar="FILE", help="PEM private key for --tls-cert")
    serve.add_argument("--upstream", action="append", metavar="RULE",
                       help="forward tunnels through other proxies (repeatable; first match wins; no match: "
                       "direct): a proxy URL such as 'https://user:pass@remote:1443' routes everything, "
                       "'to=*.internal,10.0.0.0/8 port=443 via=direct' or 'to=... via=URL[,URL...]' (a chain) "
                       "routes matching targets; names are matched as sent, not resolved")
    serve.add_argument("--upstream-cacert", metavar="FILE",
                       help="PEM file of CAs trusted for https:// upstreams (default: the system's)")
    serve.add_argument("--protocols", help="comma-separated subset of socks5,socks4,http,http-forward (default: "
                       "all; http-forward: plain requests such as 'GET http://host/' forwarded besides CONNECT)")
    serve.add_argument("--auth", action="append", metavar="USER:PASS", help="a user (repeatable)")
    serve.add_argument("--auth-file", type=Path, help="file of user:password lines (passwords may be hashed)")
    serve.add_argument("--allow-socks4-without-auth", action="store_true", default=None,
                       help="accept SOCKS4 (which has no password) even when auth is required")
    serve.add_argument("--allow", action="append", metavar="RULE", help="allow rule, e.g. 'to=10.0.0.0/8 port=443'")
    serve.add_argument("--deny", action="append", metavar="RULE", help="deny rule, e.g. 'from=192.0.2.0/24'")
    serve.add_argument("--default-deny", action="store_true", default=None, help="deny what no rule allows")
    serve.add_argument("--block-private", action="store_true", default=None,
                       help="deny private, loopback and link-local destinations (SSRF guard; checked after DNS)")
    serve.add_argument("--allow-open-relay", action="store_true", default=None,
                       help="allow listening beyond loopback without authentication")
    for name, default, text in (
        ("negotiation-timeout", 10.0, "seconds a client has to finish its handshake"),
        ("connect-timeout", 10.0, "seconds to resolve and connect upstream"),
        ("idle-timeout", 300.0, "seconds a tunnel may stay silent"),
        ("bind-timeout", 60.0, "seconds BIND waits for its peer"),
        ("shutdown-grace", 10.0, "seconds tunnels may drain after SIGTERM"),
        ("stats-interval", 0.0, "log a stats line every N seconds (0: off)"),
    ):
        serve.add_argument(f"--{name}", type=float, help=f"{text} (default {default})")
    tunnels = "new tunnels a second (over it: refused with SOCKS5 REP 2, SOCKS4 91, HTTP 429)"
    traffic = "bytes a second, both directions together (over it: reading slows down)"
    for flag, text, who in (
        ("--rate-tunnels-per-user", tunnels, "logged-in user"),
        ("--rate-tunnels-per-client", tunnels, "client address (IPv6: per /64)"),
        ("--rate-bytes-per-user", traffic, "logged-in user"),
        ("--rate-bytes-per-client", traffic, "client address (IPv6: per /64)"),
    ):
        serve.add_argument(flag, metavar="N[:BURST]", type=number_or_text,
                           help=f"{text} for each {who}; BURST (default N, at least 1) may be spent at once after "
                           "a quiet spell; K, M, G multiply by 1024, 1024², 1024³")
    serve.add_argument("--rate-exempt", action="append", metavar="USER",
                       help="a user no rate limit applies to (repeatable; needs --auth/--auth-file)")
    serve.add_argument("--metrics-listen", metavar="HOST:PORT",
                       help="serve Prometheus metrics at http://HOST:PORT/metrics (loopback only unless "
                       "--allow-remote-metrics; needs the 'metrics' extra: pip install 'socks-sansio[metrics]')")
    serve.add_argument("--allow-remote-metrics", action="store_true", default=None,
                       help="allow --metrics-listen on a non-loopback address")
    serve.add_argument("--max-clients", type=int, help="concurrent clients; excess is refused at once (default 1024)")
    serve.add_argument("--backlog", type=int, help="listen backlog (default 1024)")
    serve.add_argument("--workers", type=int, help="processes sharing the port with SO_REUSEPORT (default 1)")
    serve.add_argument("--backend", choices=("asyncio", "trio"), help="I/O backend (default asyncio)")
    serve.add_argument("--loop", choices=("auto", "asyncio", "uvloop"),
                       help="event loop of the asyncio backend: uvloop (the 'uvloop' extra: pip install "
                       "'socks-sansio[uvloop]'), asyncio (the standard library's), or auto (default: uvloop "
                       "when installed, else asyncio); --workers processes all run on it")
    serve.add_argument("--no-splice", dest="splice", action="store_false", default=None,
                       help="relay every tunnel by copying through user space; by default the asyncio backend "
                       "on Linux relays plain-TCP CONNECT tunnels with splice() (zero-copy) unless a "
                       "--rate-bytes-* limit is set (TOML: splice = false)")
    serve.add_argument("--proxy-protocol-from", action="append", metavar="CIDR",
                       help="a load balancer's network (repeatable): connections from it must start with a PROXY "
                       "protocol header (v1 or v2), whose source is then the client for rules, limits and logs; "
                       "from anywhere else such a header is refused")
    serve.add_argument("--upstream-proxy-protocol", action="store_true", default=None,
                       help="send a PROXY protocol v2 header naming the client to every directly dialled target "
                       "(e.g. another instance behind a balancer)")
    serve.add_argument("--rate-store", metavar="URL",
                       help="share the tunnel rate limits between instances in Redis: redis://HOST:PORT/DB "
                       "(asyncio backend; needs the 'redis' extra)")
    serve.add_argument("--rate-store-fail", choices=("open", "closed"),
                       help="when Redis cannot be reached: admit tunnels (open, default) or refuse them (closed)")
    serve.add_argument("--rate-store-timeout", type=float,
                       help="seconds a call to the rate store may take before it counts as failed (default 0.25)")
    serve.add_argument("--health-listen", metavar="HOST:PORT",
                       help="answer GET /healthz at http://HOST:PORT/ (200 while accepting, 503 while draining); "
                       "/healthz is also on --metrics-listen")
    serve.add_argument("--drain-delay", type=float,
                       help="seconds to keep serving after SIGTERM with /healthz at 503, so a balancer takes the "
                       "instance out before it stops accepting (default 0)")
    serve.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="default info")


def _merge(args: argparse.Namespace) -> dict[str, Any]:
    """Flags over the TOML file: one dict of settings with underscore keys.

    Raises:
        ConfigFileError: (a ValueError) the file cannot be read or does not fit the flags.
    """
    settings: dict[str, Any] = {}
    if args.config is not None:
        flags = argparse.ArgumentParser(add_help=False)
        define_flags(flags)
        settings = load_config(args.config, options_of(flags))
    for key, value in vars(args).items():
        if value is not None and key not in ("config", "command"):
            settings[key] = value
    return settings


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        message = f"--proxy-protocol-from takes a network such as 10.0.0.0/8 or 127.0.0.1, not {text!r}"
        raise ValueError(message) from None


def config_from_argv(argv: Sequence[str]) -> ServerConfig:
    """The :class:`ServerConfig` that ``socks-sansio serve ARGV...`` would run (its ``--config`` file included).

    Raises:
        SystemExit: a flag the command line refuses (argparse's usage error).
        ValueError, LocalProtocolError, OSError: settings that cannot work.
    """
    parser = argparse.ArgumentParser(prog="socks-sansio")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return build_config(_merge(parser.parse_args(["serve", *argv])))


def build_config(settings: dict[str, Any]) -> ServerConfig:
    """Turn merged settings into a :class:`ServerConfig` (raises ValueError / LocalProtocolError on bad ones)."""
    users: dict[str | bytes, str] = {}
    for entry in settings.get("auth", []) or []:
        name, colon, password = entry.partition(":")
        if not colon or not name:
            raise ValueError("--auth takes USER:PASSWORD")
        users[name] = password
    database = None
    if settings.get("auth_file"):
        path = Path(settings["auth_file"])
        database = UserDatabase.from_lines(path.read_text("utf-8").splitlines(), source=str(path))
        if users:
            raise ValueError("use either --auth or --auth-file, not both")
    elif users:
        database = UserDatabase(users)
    rules = [AccessRule.parse("allow", text) for text in settings.get("allow", []) or []]
    rules += [AccessRule.parse("deny", text) for text in settings.get("deny", []) or []]
    protocols = frozenset(ProxyProtocol)
    http_forward = True
    if settings.get("protocols"):
        names = [p.strip().lower() for p in str(settings["protocols"]).split(",") if p.strip()]
        http_forward = "http-forward" in names
        if http_forward and "http" not in names:
            names.append("http")  # forwarding is the HTTP side of the port
        names = [n for n in names if n != "http-forward"]
        unknown = [n for n in names if n not in _PROTOCOL_NAMES]
        if unknown or not names:
            raise ValueError(
                f"--protocols takes a comma-separated subset of socks5,socks4,http,http-forward, not {unknown}"
            )
        protocols = frozenset(_PROTOCOL_NAMES[n] for n in names)
    optional = {
        key: settings[key]
        for key in ("negotiation_timeout", "connect_timeout", "idle_timeout", "bind_timeout", "shutdown_grace",
                    "stats_interval", "max_clients", "backlog", "rate_store_timeout", "drain_delay")
        if settings.get(key) is not None
    }
    listens = [str(text) for text in settings.get("listen") or ["127.0.0.1:1080"]]

    def rate(key: str) -> Rate | None:
        if settings.get(key) is None:
            return None
        try:
            return Rate.parse(settings[key])
        except LocalProtocolError as exc:
            raise ValueError(f"--{key.replace('_', '-')}: {exc}") from None

    splice = settings.get("splice", True)
    if not isinstance(splice, bool):
        raise ValueError(f"splice must be true or false, not {splice!r}")
    exempt = settings.get("rate_exempt") or []
    rate_limits = RateLimitConfig(
        tunnels_per_user=rate("rate_tunnels_per_user"),
        tunnels_per_client=rate("rate_tunnels_per_client"),
        bytes_per_user=rate("rate_bytes_per_user"),
        bytes_per_client=rate("rate_bytes_per_client"),
        exempt_users=[exempt] if isinstance(exempt, str) else [str(name) for name in exempt],
    )
    return ServerConfig(
        listen=tuple(listen_address(text) for text in listens if not text.lower().startswith("tls://")),
        tls_listen=tuple(listen_address(text[6:]) for text in listens if text.lower().startswith("tls://")),
        tls_cert=settings.get("tls_cert"),
        tls_key=settings.get("tls_key"),
        upstreams=tuple(parse_upstream(text) for text in settings.get("upstream", []) or []),
        upstream_cacert=settings.get("upstream_cacert"),
        protocols=protocols,
        users=database,
        allow_socks4_without_auth=bool(settings.get("allow_socks4_without_auth")),
        policy=AccessPolicy(
            rules=tuple(rules),
            default_allow=not settings.get("default_deny"),
            block_private=bool(settings.get("block_private")),
        ),
        allow_open_relay=bool(settings.get("allow_open_relay")),
        reuse_port=int(settings.get("workers") or 1) > 1,
        rate_limits=rate_limits,
        metrics_listen=listen_address(str(settings["metrics_listen"])) if settings.get("metrics_listen") else None,
        allow_remote_metrics=bool(settings.get("allow_remote_metrics")),
        splice=splice,
        http_forward=http_forward,
        proxy_protocol_from=tuple(_network(text) for text in settings.get("proxy_protocol_from") or []),
        upstream_proxy_protocol=bool(settings.get("upstream_proxy_protocol")),
        rate_store=settings.get("rate_store"),
        rate_store_fail=settings.get("rate_store_fail") or "open",
        health_listen=listen_address(str(settings["health_listen"])) if settings.get("health_listen") else None,
        event_loop=settings.get("loop") or "auto",
        **optional,
    )


def _run(config: ServerConfig, backend: str) -> None:
    if backend == "trio":
        from ..server.trio import run as run_trio

        run_trio(config)
    else:
        from ..server.asyncio import run as run_asyncio

        run_asyncio(config)


def run(args: argparse.Namespace) -> int:
    """``socks-sansio serve``: returns the exit status."""
    try:
        settings = _merge(args)
    except ConfigFileError as exc:
        print(f"socks-sansio serve: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, str(settings.get("log_level", "info")).upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = build_config(settings)
    except (ValueError, OSError) as exc:
        print(f"socks-sansio serve: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # LocalProtocolError from a rule or user list
        print(f"socks-sansio serve: {exc}", file=sys.stderr)
        return 2
    backend = str(settings.get("backend", "asyncio"))
    if backend == "trio" and config.event_loop != "auto":
        print(f"socks-sansio serve: --loop {config.event_loop} applies to the asyncio backend; trio runs its own "
              "loop (leave --loop at auto, or use --backend asyncio)", file=sys.stderr)  # fmt: skip
        return 2
    if backend == "trio" and importlib.util.find_spec("trio") is None:
        print("socks-sansio serve: --backend trio needs the trio package: pip install 'socks-sansio[trio]'",
              file=sys.stderr)
        return 2
    workers = int(settings.get("workers") or 1)
    if workers > 1:
        if any(port == 0 for _, port in (*config.listen, *config.tls_listen)):
            print("socks-sansio serve: --workers needs fixed ports (not 0)", file=sys.stderr)
            return 2
        return _run_workers(config, backend, workers)
    _run(config, backend)
    return 0


def _run_workers(config: ServerConfig, backend: str, workers: int) -> int:
    """Fork *workers* processes that share the listening ports through SO_REUSEPORT."""
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            try:
                _run(config, backend)
            finally:
                os._exit(0)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for child in children:
        _, code = os.waitpid(child, 0)
        status = status or os.waitstatus_to_exitcode(code)
    return status



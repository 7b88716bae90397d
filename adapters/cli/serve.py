"""``socks-sansio serve``: the proxy server, from flags and a TOML file.

Every flag can also be given in a TOML file (``--config``) under the same name
with dashes or underscores (``max-clients = 100``); flags win. The settings
become one :class:`~socks_sansio.ServerConfig` (which checks them as a whole),
run by the asyncio or the trio server, in one process or several sharing the
port (``--workers``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
    __version__,
    listen_address,
    parse_upstream,
)

__all__ = ["add_parser", "build_config", "config_from_argv", "run"]

_PROTOCOL_NAMES = {"socks5": ProxyProtocol.SOCKS5, "socks4": ProxyProtocol.SOCKS4, "http": ProxyProtocol.HTTP}
server_logger = logging.getLogger("socks_sansio.server")


def add_parser(commands: Any) -> None:
    """Add ``serve`` and its flags to the command line."""
    serve = commands.add_parser("serve", help="run a SOCKS5 + SOCKS4/4a + HTTP CONNECT proxy")
    serve.add_argument("--config", type=Path, help="TOML file with the same keys as these flags")
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
    serve.add_argument("--protocols", help="comma-separated subset of socks5,socks4,http (default: all)")
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
        serve.add_argument(flag, metavar="N[:BURST]", help=f"{text} for each {who}; BURST (default N, at least 1) "
                           "may be spent at once after a quiet spell; K, M, G multiply by 1024, 1024², 1024³")
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
    serve.add_argument("--no-splice", dest="splice", action="store_false", default=None,
                       help="relay every tunnel by copying through user space; by default the asyncio backend "
                       "on Linux relays plain-TCP CONNECT tunnels with splice() (zero-copy) unless a "
                       "--rate-bytes-* limit is set (TOML: splice = false)")
    serve.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="default info")


def _merge(args: argparse.Namespace) -> dict[str, Any]:
    """Flags over the TOML file: one dict of settings with underscore keys."""
    settings: dict[str, Any] = {}
    if args.config is not None:
        import tomllib  # Python 3.11+; on 3.10 --config needs the 'tomli' backport

        with args.config.open("rb") as file:
            settings = {key.replace("-", "_"): value for key, value in tomllib.load(file).items()}
    for key, value in vars(args).items():
        if value is not None and key not in ("config", "command"):
            settings[key] = value
    return settings


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
    if settings.get("protocols"):
        names = [p.strip().lower() for p in str(settings["protocols"]).split(",") if p.strip()]
        unknown = [n for n in names if n not in _PROTOCOL_NAMES]
        if unknown or not names:
            raise ValueError(f"--protocols takes a comma-separated subset of socks5,socks4,http, not {unknown}")
        protocols = frozenset(_PROTOCOL_NAMES[n] for n in names)
    optional = {
        key: settings[key]
        for key in ("negotiation_timeout", "connect_timeout", "idle_timeout", "bind_timeout", "shutdown_grace",
                    "stats_interval", "max_clients", "backlog")
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
        **optional,
    )


async def _run_asyncio(config: ServerConfig) -> None:
    from ..server.asyncio import ProxyServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    server = ProxyServer(config)
    await server.start()
    print(f"socks-sansio {__version__} listening on " + ", ".join(f"{h}:{p}" for h, p in server.addresses),
          file=sys.stderr, flush=True)
    try:
        await stop.wait()
        server_logger.info("shutting down: no new clients; draining for up to %s s", config.shutdown_grace)
    finally:
        await server.aclose()


def _run(config: ServerConfig, backend: str) -> None:
    if backend == "trio":
        from ..server.trio import run as run_trio

        run_trio(config)
    else:
        asyncio.run(_run_asyncio(config))


def run(args: argparse.Namespace) -> int:
    """``socks-sansio serve``: returns the exit status."""
    settings = _merge(args)
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



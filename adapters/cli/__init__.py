"""The ``socks-sansio`` command: ``serve`` (the proxy), ``connect`` (a netcat-like tunnel), ``check``, ``demo``,
``hash-password``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from socks_sansio import __version__

from . import connect as connect_command
from . import hash_password, serve
from .demo import demo

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: every subcommand and its arguments (each with a help text)."""
    parser = argparse.ArgumentParser(
        prog="socks-sansio",
        description="A SOCKS5, SOCKS4/4a and HTTP proxy server, and tools to connect through proxies and check them.",
        epilog="'socks-sansio COMMAND --help' describes each command.",
    )
    parser.add_argument("--version", action="version", version=f"socks-sansio {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help="what to do")
    serve.add_parser(commands)
    connect = commands.add_parser(
        "connect", help="open a tunnel through a proxy and pipe stdin/stdout through it",
        epilog="exit status: 0 when the remote side closed, 1 when the tunnel could not be opened, 2 on usage errors",
    )
    connect.add_argument("--proxy", action="append",
                         help="proxy URL, e.g. socks5h://user:pass@host:1080 (repeat for a chain; default: "
                         "ALL_PROXY from the environment, honouring NO_PROXY)")
    connect.add_argument("--timeout", type=float, default=30.0,
                         help="seconds for connect + handshake (default: %(default)s)")
    connect.add_argument("--no-shutdown", action="store_true",
                         help="keep the tunnel open when stdin ends (no half-close: the remote side does not see "
                         "an EOF); exit when the remote side closes, as ncat --no-shutdown")
    connect.add_argument("host", help="the target's host name or IP address (the last proxy resolves a name for "
                         "socks5h://, socks4a:// and http://)")
    connect.add_argument("port", type=int, help="the target's TCP port")
    check = commands.add_parser(
        "check", help="check proxies: protocol, auth, latency, bound address, diagnosis",
        epilog="exit status: 0 when every proxy is healthy, 1 when any failed, 2 on usage errors",
    )
    check.add_argument("urls", nargs="+", metavar="URL", help="proxy URL, e.g. socks5h://user:pass@host:1080")
    check.add_argument("--target", required=True, metavar="HOST:PORT", help="where to tunnel to through each proxy")
    check.add_argument("--timeout", type=float, default=10.0,
                       help="seconds per proxy for connect + handshake, and again for the first byte "
                       "(default: %(default)s)")
    check.add_argument("--json", action="store_true", help="one JSON object per line")
    check.add_argument("--send", metavar="BYTES", help="send this (escapes like \\r\\n decoded) and time the "
                       "first byte back, e.g. for an echo target")
    check.add_argument("--banner", action="store_true",
                       help="time the target's first byte without sending (SSH, SMTP); with neither --send nor "
                       "--banner the check ends after the handshake")
    show = commands.add_parser("demo", help="show a SOCKS5 handshake between two in-memory machines")
    show.add_argument("target", nargs="?", default="example.com:443", help="host:port to CONNECT to")
    show.add_argument("--user", help="authenticate with RFC 1929 as this user")
    show.add_argument("--password", default="", help="password for --user")
    hash_password.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve.run(args)
    if args.command == "connect":
        return connect_command.run(args)
    if args.command == "hash-password":
        return hash_password.run(args)
    if args.command == "check":
        from .check import run_checks

        return run_checks(args.urls, args.target, timeout=args.timeout, as_json=args.json, send=args.send,
                          banner=args.banner)
    return demo(args.target, args.user, args.password)

"""``socks-sansio connect``: a netcat-like tunnel through proxies, for checks and scripts."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
from collections.abc import Mapping
from typing import Any

from socks_sansio import LocalProtocolError, ProxyError, ProxyURL, select_proxy

from ..client.sync import connect

__all__ = ["run"]


def run(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> int:
    """``socks-sansio connect``: returns the exit status (0 done, 1 the tunnel failed, 2 usage).

    Without ``--proxy`` the proxy comes from ``ALL_PROXY`` (or ``all_proxy``) in
    *environ* (default :data:`os.environ`), and a target ``NO_PROXY`` names is
    connected to directly, as curl does for protocols without a variable of
    their own.
    """
    proxy: list[str] | ProxyURL | None = args.proxy
    if proxy is None:
        environ = os.environ if environ is None else environ
        if not any(environ.get(name, "").strip() for name in ("ALL_PROXY", "all_proxy")):
            print("socks-sansio connect: no proxy: give --proxy URL or set ALL_PROXY", file=sys.stderr)
            return 2
        try:
            # "all" makes select_proxy read all_proxy/ALL_PROXY only, and NO_PROXY
            proxy = select_proxy("all", args.host, args.port, environ=environ)
        except LocalProtocolError as exc:  # the message names the variable, never a password
            print(f"socks-sansio connect: {exc}", file=sys.stderr)
            return 2
    try:
        sock = connect(args.host, args.port, proxy=proxy, timeout=args.timeout)
    except (ProxyError, LocalProtocolError, OSError) as exc:
        print(f"socks-sansio connect: {exc}", file=sys.stderr)
        return 1
    with sock:
        return _pipe_stdio(sock, half_close=not getattr(args, "no_shutdown", False))


def _pipe_stdio(sock: Any, *, half_close: bool = True) -> int:
    """Copy stdin to the tunnel and the tunnel to stdout, until the remote side closes.

    When stdin ends the tunnel is half-closed (the remote side sees our EOF),
    unless *half_close* is false (``--no-shutdown``): then it stays open both
    ways, for servers that take an EOF for a hang-up.
    """
    def upstream() -> None:
        with contextlib.suppress(OSError):
            while data := os.read(sys.stdin.fileno(), 65536):
                sock.sendall(data)
            if half_close:
                sock.shutdown(1)  # SHUT_WR: the remote side sees our EOF

    thread = threading.Thread(target=upstream, daemon=True)
    thread.start()
    out = sys.stdout.buffer
    try:
        while data := sock.recv(65536):
            out.write(data)
            out.flush()
    except BrokenPipeError:
        # The reader went away (``| head -2``): stop quietly, as cat does. Point
        # stdout at /dev/null so the interpreter's final flush cannot fail too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return 0



"""``socks-sansio connect``: a netcat-like tunnel through proxies, for checks and scripts."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
from typing import Any

from socks_sansio import LocalProtocolError, ProxyError

from ..client.sync import connect

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    """``socks-sansio connect``: returns the exit status."""
    try:
        sock = connect(args.host, args.port, proxy=args.proxy, timeout=args.timeout)
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
    while data := sock.recv(65536):
        out.write(data)
        out.flush()
    return 0



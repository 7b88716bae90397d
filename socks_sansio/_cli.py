"""The ``socks-sansio`` command line.

``demo`` runs a SOCKS5 client and server machine against each other in memory
and prints every message and the octets that carry it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ._address import Address
from ._codes import AuthMethod, Command
from ._rfc1929 import UsernamePasswordReply, UsernamePasswordRequest
from ._socks5_connection import Socks5Connection
from ._socks5_events import CommandReply, CommandRequest, Greeting, MethodSelection, Socks5Event
from ._util import CLIENT, NEED_DATA, PAUSED, SERVER
from ._version import __version__


def _demo(target: str, username: str | None, password: str) -> int:
    client, server = Socks5Connection(CLIENT), Socks5Connection(SERVER)
    method = AuthMethod.USERNAME_PASSWORD if username else AuthMethod.NO_AUTH
    script: list[tuple[Socks5Connection, Socks5Event]] = [
        (client, Greeting(methods=(method,))),
        (server, MethodSelection(method=method)),
    ]
    if username:
        script += [
            (client, UsernamePasswordRequest(username=username, password=password)),
            (server, UsernamePasswordReply(success=True)),
        ]
    script += [
        (client, CommandRequest(command=Command.CONNECT, address=Address.parse_authority(target))),
        (server, CommandReply(code=0, bound=Address("192.0.2.1", 40000))),
    ]
    for sender, event in script:
        receiver = server if sender is client else client
        wire = sender.send(event)
        receiver.receive_data(wire)
        received = receiver.next_event()
        if received != event or receiver.next_event() not in (NEED_DATA, PAUSED):
            raise AssertionError(f"{event!r} was received as {received!r}")
        print(f"{sender.our_role.value:>6} -> {wire.hex(' ')}\n         {received!r}")
    print(f"state: client {client.state.name}, server {server.state.name}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="socks-sansio", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"socks-sansio {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="show a SOCKS5 handshake between two in-memory machines")
    demo.add_argument("target", nargs="?", default="example.com:443", help="host:port to CONNECT to")
    demo.add_argument("--user", help="authenticate with RFC 1929 as this user")
    demo.add_argument("--password", default="", help="password for --user")
    args = parser.parse_args(argv)
    return _demo(args.target, args.user, args.password)

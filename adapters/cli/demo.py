"""``socks-sansio demo``: a SOCKS5 client and server machine run against each other in memory.

It prints every message and the octets that carry it: no I/O, the core alone.
"""

from __future__ import annotations

from socks_sansio import (
    CLIENT,
    NEED_DATA,
    PAUSED,
    SERVER,
    Address,
    AuthMethod,
    Command,
    CommandReply,
    CommandRequest,
    Greeting,
    MethodSelection,
    Socks5Connection,
    Socks5Event,
    UsernamePasswordReply,
    UsernamePasswordRequest,
)


def demo(target: str, username: str | None, password: str) -> int:
    """Print a whole SOCKS5 handshake to *target*; returns the exit status."""
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

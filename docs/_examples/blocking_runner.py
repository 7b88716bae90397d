"""A client runner of socks-sansio's connect plan, with blocking sockets and nothing else.

Everything a proxied connect decides (which proxy, what to send, how much to
read, what an error means) is the plan's; this file only performs the
operations it yields. It leaves out what socks_sansio.adapters.sync adds: TLS
(``StartTLS``), UDP (``OpenDatagram``), socket options, and the deadline
(a socket time-out before each operation, from ``plan.remaining()``).
"""

from __future__ import annotations

import socket
import time

from socks_sansio import Address, ConnectPlan, Stepper
from socks_sansio import client_operations as ops


class BlockingRunner:
    """Performs a plan's operations on one socket."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None

    def perform(self, operation: ops.Operation) -> object:
        """Do *operation*; return its result (see socks_sansio.client_operations)."""
        if isinstance(operation, ops.Dial):
            self.sock = socket.create_connection((operation.address.host_str, operation.address.port))
        elif isinstance(operation, ops.Send):
            assert self.sock is not None
            self.sock.sendall(operation.data)
        elif isinstance(operation, ops.Receive):
            assert self.sock is not None
            return self.sock.recv(operation.max_bytes)  # never more: tunnel bytes stay in the socket
        elif isinstance(operation, ops.Resolve):
            family = {4: socket.AF_INET, 6: socket.AF_INET6}.get(operation.family, socket.AF_UNSPEC)
            sockaddr = socket.getaddrinfo(operation.host, operation.port, family, socket.SOCK_STREAM)[0][4]
            return Address(sockaddr[0], operation.port)
        elif isinstance(operation, ops.PeerAddress):
            assert self.sock is not None
            return self.sock.getpeername()[0]
        elif isinstance(operation, ops.Sleep):
            time.sleep(operation.seconds)
        elif isinstance(operation, ops.Close):
            self.close()
        else:
            raise NotImplementedError(f"this runner does not do {operation!r}")
        return None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def connect(host: str, port: int, proxy: str | list[str]) -> socket.socket:
    """A socket connected to *host*:*port* through *proxy* (a URL, or a chain of them)."""
    plan = ConnectPlan.for_call(host, port, proxy=proxy)
    runner = BlockingRunner()
    try:
        Stepper(plan.run()).run(runner.perform)  # raises the plan's ProxyError on failure
    except BaseException:
        runner.close()
        raise
    assert runner.sock is not None
    return runner.sock

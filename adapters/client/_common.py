"""What the three client runners share that is about sockets, not about any one backend.

The decisions are the core's (:class:`~socks_sansio.ConnectPlan` and friends);
this module only holds the socket-level facts every runner needs the same way.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Final

from socks_sansio import Address

__all__ = ["DEFAULT_RECV_SIZE", "UDP_MAX", "SockAddr", "host_header", "literal_sockaddr", "logger", "peer_ip"]

logger: Final = logging.getLogger("socks_sansio.adapters")
"""What a runner itself does is logged here at DEBUG level (the plans log to ``socks_sansio.client``)."""

DEFAULT_RECV_SIZE: Final = 65536
UDP_MAX: Final = 65535
"""The largest UDP datagram a ``recvfrom()`` may return."""

SockAddr = tuple[str, int] | tuple[str, int, int, int]


def literal_sockaddr(address: Address) -> tuple[socket.AddressFamily, SockAddr] | None:
    """The family and socket address of an IP literal, as ``getaddrinfo`` gives them; ``None`` for a name.

    An IPv6 address with a zone (``fe80::1%eth0``) is left to ``getaddrinfo``, which knows the zone's index.
    """
    host = address.host
    if type(host) is ipaddress.IPv4Address:
        return socket.AF_INET, (str(host), address.port)
    if type(host) is ipaddress.IPv6Address and host.scope_id is None:
        return socket.AF_INET6, (str(host), address.port, 0, 0)
    return None


def peer_ip(sockaddr: tuple[object, ...]) -> str:
    """The IP of a socket address, without an IPv6 zone (what a plan's ``PeerAddress`` is answered with)."""
    return str(sockaddr[0]).partition("%")[0]


def host_header(target: Address, tls: bool) -> str:
    """``Host`` for a request through a tunnel: the authority, without the scheme's default port."""
    if target.port == (443 if tls else 80):
        return f"[{target.host}]" if isinstance(target.host, ipaddress.IPv6Address) else target.host_str
    return target.authority

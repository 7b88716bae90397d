"""Blocking sockets: connect through proxies with the stdlib ``socket`` and ``ssl`` modules.

The public face of :mod:`socks_sansio.adapters.client.sync` (and its pool and TLS
layers): ``from socks_sansio.adapters.sync import connect``.
"""

from .client.sync import (
    BindListener,
    Tunnel,
    UdpAssociation,
    connect,
    open_bind,
    open_tunnel,
    open_udp_association,
)
from .client.sync_pool import ProxyPool
from .client.tls_in_tls import (
    SocketLike,
    TLSInTLSSocket,
    wrap_tls,
)

__all__ = [
    "BindListener",
    "ProxyPool",
    "SocketLike",
    "TLSInTLSSocket",
    "Tunnel",
    "UdpAssociation",
    "connect",
    "open_bind",
    "open_tunnel",
    "open_udp_association",
    "wrap_tls",
]

"""trio: connect through proxies and get a ``trio.abc.Stream``.

The public face of :mod:`socks_sansio.adapters.client.trio` (and its pool and
streams): ``from socks_sansio.adapters.trio import open_tcp_stream``.
"""

from .client.trio import (
    BindListener,
    Tunnel,
    UdpAssociation,
    handshake_over,
    open_bind,
    open_tcp_stream,
    open_tunnel,
    open_udp_association,
)
from .client.trio_pool import ProxyPool
from .client.trio_streams import HalfCloseablePrefixedStream, PrefixedStream

__all__ = [
    "BindListener",
    "HalfCloseablePrefixedStream",
    "PrefixedStream",
    "ProxyPool",
    "Tunnel",
    "UdpAssociation",
    "handshake_over",
    "open_bind",
    "open_tcp_stream",
    "open_tunnel",
    "open_udp_association",
]

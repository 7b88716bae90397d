"""asyncio: connect through proxies with asyncio streams or protocols.

The public face of :mod:`socks_sansio.adapters.client.asyncio` (and its pool):
``from socks_sansio.adapters.asyncio import open_connection``.
"""

from .client.asyncio import Tunnel, create_connection, open_connection, open_tunnel
from .client.asyncio_commands import BindListener, UdpAssociation, open_bind, open_udp_association
from .client.asyncio_pool import ProxyPool

__all__ = [
    "BindListener",
    "ProxyPool",
    "Tunnel",
    "UdpAssociation",
    "create_connection",
    "open_bind",
    "open_connection",
    "open_tunnel",
    "open_udp_association",
]

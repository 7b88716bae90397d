"""I/O bindings of socks-sansio, installed as ``socks_sansio.adapters``.

* ``sync``, ``asyncio``, ``trio``: the clients (connect through proxies), each
  importing only its own I/O library; importing this package imports none.
* ``server``: the proxy server on asyncio and trio.
* ``cli``: the ``socks-sansio`` command.

It also exports the backend-free values the clients share in their
signatures: :class:`RetryPolicy`, the failover policy, and :class:`PoolStats`,
the counters of a ``ProxyPool`` (both from the core).
"""

from socks_sansio import PoolStats as PoolStats
from socks_sansio import RetryPolicy as RetryPolicy

__all__ = ["PoolStats", "RetryPolicy"]

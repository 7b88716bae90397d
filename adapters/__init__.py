"""I/O bindings of socks-sansio, installed as ``socks_sansio.adapters``.

Each backend lives in its own module (``sync``, ``asyncio``, ``trio``) and imports
only its own I/O library; importing this package imports none of them. It
exports the backend-free values the backends share in their signatures:
:class:`RetryPolicy`, the failover policy, and :class:`PoolStats`, the
counters of a ``ProxyPool``.
"""

from ._failover import RetryPolicy as RetryPolicy
from ._pool import PoolStats as PoolStats

__all__ = ["PoolStats", "RetryPolicy"]

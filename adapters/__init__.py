"""I/O bindings of socks-sansio, installed as ``socks_sansio.adapters``.

Each backend lives in its own module (``sync``, ``asyncio``, ``trio``) and imports
only its own I/O library; importing this package imports none of them. It
exports the one backend-free value the backends share in their signatures:
:class:`RetryPolicy`, the failover policy.
"""

from ._failover import RetryPolicy as RetryPolicy

__all__ = ["RetryPolicy"]

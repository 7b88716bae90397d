"""The client runners: the core's connect plans performed on three I/O libraries.

* :mod:`.sync` (with :mod:`.sync_link`, :mod:`.sync_pool`, :mod:`.tls_in_tls`): blocking sockets;
* :mod:`.asyncio` (with :mod:`.asyncio_link`, :mod:`.asyncio_pool`): asyncio streams and protocols;
* :mod:`.trio` (with :mod:`.trio_link`, :mod:`.trio_pool`): trio streams.

Each performs the operations of :class:`~socks_sansio.ConnectPlan`,
:class:`~socks_sansio.AssociatePlan`, :class:`~socks_sansio.HandshakePlan` and
:class:`~socks_sansio.PoolKeeper` with its own primitives and keeps what is
genuinely its own: the stream types, TLS layering, how a deadline is enforced.
Import them through :mod:`socks_sansio.adapters.sync`, ``.asyncio`` and ``.trio``.
"""

"""The client side above the handshake driver: how a connection through proxies is made. Pure.

* :mod:`.operations`: the I/O operations a plan asks a runner to perform.
* :mod:`.hops`: the ``proxy=`` argument as hops, the connection report, the deadline.
* :mod:`.failover`: which proxies to try in which order, and what to raise in the end.
* :mod:`.plan`: :class:`~.plan.ConnectPlan` (connect, BIND, prepared connections)
  and :class:`~.plan.AssociatePlan` (UDP ASSOCIATE), generators of operations.
* :mod:`.pool`: the bookkeeping and background policy of a pool of prepared connections.

Nothing here imports an I/O library; ``socks_sansio.adapters`` runs these plans
on blocking sockets, asyncio and trio.
"""

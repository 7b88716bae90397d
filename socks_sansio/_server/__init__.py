"""The server side above the handshake driver: what a proxy does with each client. Pure.

* :mod:`.config`: :class:`~.config.ServerConfig`, everything ``socks-sansio serve`` can be told.
* :mod:`.policy`: users and passwords, access rules and the SSRF guard.
* :mod:`.ratelimit`: token buckets per user and per client address.
* :mod:`.upstream`: which proxy chain (if any) a tunnel goes through.
* :mod:`.outcome`: how a connection ended, the counters, and the one log line.
* :mod:`.operations`: what a session asks its runner to do.
* :mod:`.session`: :class:`~.session.ServerSession`, one accepted client from
  its first octet to the hand-over to the relay, as a generator of operations.
* :mod:`.udp`: the decisions of a UDP ASSOCIATE relay, datagram by datagram.

Nothing here imports an I/O library; ``socks_sansio.adapters.server`` runs the
sessions on asyncio and trio.
"""

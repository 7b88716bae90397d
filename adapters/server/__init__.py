"""The proxy server: the core's :class:`~socks_sansio.ServerSession` run on asyncio and trio.

* :mod:`.asyncio` (:class:`~.asyncio.ProxyServer`) with :mod:`.asyncio_relay`
  and :mod:`.splice`: negotiation on protocol callbacks, a relay of protocols
  sharing one buffer, ``splice()`` on Linux;
* :mod:`.trio` (:class:`~.trio.TrioProxyServer`) with :mod:`.trio_relay`: a task
  per client, a task per relay direction;
* :mod:`.metrics` (Prometheus, the ``metrics`` extra) and :mod:`.tls` (the contexts).

What a server decides is the session's: both servers only accept, read and
write, dial, listen, time out and relay.
"""

"""The UDP ASSOCIATE plan (RFC 1928 §7): a control connection, a UDP socket, the relay's address."""


from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from typing import Any, final

from .._address import Address
from .._client_driver import ClientHandshake, needs_local_resolution
from .._codes import Command
from .._errors import LocalProtocolError, ProxyError
from .._udp import UdpDatagram, encode_udp_datagram
from .base import _DATAGRAM, _RESOLVE, _SOCKS5, ANY_ADDRESS, Plan
from .hops import ConnectionInfo, Hop, ProxySpec, advertised, client_logger, to_proxies
from .operations import OPEN_DATAGRAM, PEER_ADDRESS, Operation, Resolve

__all__ = ["AssociatePlan"]


@final
class AssociatePlan(Plan):
    """Open a SOCKS5 UDP association (RFC 1928 §7) through one proxy.

    :meth:`run` dials the proxy, asks the runner for a UDP socket on the
    control connection's local IP (:class:`OpenDatagram`), announces that
    address in the request (RFC 1928 §4: where we will send from), and works
    out the relay from the reply: an unspecified address means the proxy's
    own IP, a name is resolved in the control connection's address family.
    Then :attr:`local`, :attr:`relay` and :meth:`info` are set.

    Args:
        proxy: one ``socks5://`` or ``socks5h://`` proxy, or a list holding one.
        timeout, io_errors, clock: as for :class:`ConnectPlan`.
        pipelined: send greeting, credentials and request in one write.

    Raises:
        LocalProtocolError: not exactly one SOCKS5 proxy (the relay must be reachable by UDP from here).
    """

    __slots__ = ("_pipelined", "handshake", "local", "proxy", "relay")

    def __init__(
        self,
        proxy: ProxySpec | Sequence[ProxySpec],
        *,
        timeout: float | None = None,
        pipelined: bool = False,
        io_errors: tuple[type[BaseException], ...] = (OSError,),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        proxies = to_proxies(proxy)
        if len(proxies) != 1 or proxies[0].protocol is not _SOCKS5:
            raise LocalProtocolError("UDP ASSOCIATE needs exactly one SOCKS5 proxy (socks5:// or socks5h://)")
        super().__init__(timeout, io_errors, clock)
        self.proxy = proxies[0]
        self._pipelined = pipelined
        self.handshake: ClientHandshake | None = None
        self.local: Address = ANY_ADDRESS
        self.relay: Address = ANY_ADDRESS

    def run(self) -> Generator[Operation, Any, ClientHandshake]:
        """The operations of the association; returns its (established) handshake.

        Raises:
            ProxyError: as for :meth:`ConnectPlan.run`.
            Exception: what binding the UDP socket or resolving the relay raised, as it was.
        """
        proxy = self.proxy
        hop = Hop(proxy, ANY_ADDRESS)
        yield from self._dial(proxy.address, hop)
        self._doing = _DATAGRAM
        local: Address = yield OPEN_DATAGRAM
        self.local = local
        handshake = ClientHandshake(proxy, local, command=Command.UDP_ASSOCIATE, pipelined=self._pipelined)
        yield from self._exchange(handshake, Hop(proxy, local))
        self.handshake = handshake
        if handshake.bound is None:  # pragma: no cover - a success reply always carries one
            raise ProxyError("the UDP ASSOCIATE reply carried no address", proxy=proxy.redacted())
        relay = advertised(handshake.bound, (yield PEER_ADDRESS))
        if relay.is_domain:
            self._doing, self._subject = _RESOLVE, f"the relay {relay}"
            family = 6 if ":" in local.host_str else 4
            relay = yield Resolve(relay.host_str, relay.port, family=family, datagram=True)
        self.relay = relay
        if self._debug:
            client_logger.debug("UDP association through %s: relay %s, local %s", hop.describe(), relay, local)
        return handshake

    def info(self) -> ConnectionInfo:
        """What the association went through; ``target`` is the address we announced."""
        return self._info((self.proxy,), self.local, self.handshake, False)

    def datagram(
        self, data: bytes | bytearray | memoryview, address: tuple[str | bytes, int] | Address
    ) -> Generator[Resolve, Any, bytes]:
        """The packet to send to the relay for *data* to *address*: its SOCKS5 UDP header, then *data*.

        A name is resolved here first (one :class:`Resolve`) for a ``socks5://``
        proxy; ``socks5h://`` lets the proxy resolve it.

        Raises:
            LocalProtocolError: *address* is not a valid host and port.
        """
        target = address if isinstance(address, Address) else Address(address[0], address[1])
        if needs_local_resolution(self.proxy, target):
            target = yield Resolve(target.host_str, target.port, datagram=True)
        return encode_udp_datagram(UdpDatagram(address=target, data=data))


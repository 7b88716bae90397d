"""The decisions of a UDP ASSOCIATE relay, datagram by datagram (RFC 1928 §7). Pure.

A relay socket receives two kinds of datagrams: from the client (a SOCKS5 UDP
header, then the payload for the target it names) and from the targets the
client wrote to (a bare payload, to wrap in a header naming its sender and
send to the client). :class:`UdpRelayPolicy` tells them apart and decides:

* the client is the address of its TCP control connection; its UDP port is the
  one it declared in the request or, when it declared 0, the first one it sends
  from (RFC 1928 §6: the client's expected source, port 0 meaning not known);
* a datagram from the client that does not parse is dropped (``udp malformed``),
  a fragment is dropped (FRAG != 0: no reassembly, which §7 allows), one over
  the byte rate limits is dropped (``udp rate limited``: a datagram cannot be
  slowed down, only policed) before its name is looked up;
* the target is checked as a TCP target is (:meth:`ServerSession.addresses`:
  the rules on the name and on every address, the SSRF guard), and sent to the
  first address of the relay socket's family (``udp denied``, ``udp unreachable``);
* a datagram from anyone else, or from a target the client never wrote to, is
  dropped (``udp dropped``): the relay is not an open UDP reflector.

The runner's loop is: ``recvfrom``; :meth:`UdpRelayPolicy.received`; then
``sendto`` what it answers, running :meth:`UdpRelayPolicy.destination` (a
generator that may ask for one :class:`~.operations.Resolve`) for a client's
datagram.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, final

from .._address import Address
from .._errors import RemoteProtocolError
from .._udp import UdpDatagram, encode_udp_datagram, parse_udp_datagram
from .operations import Resolve, SockAddr

if TYPE_CHECKING:
    from .session import ServerSession

__all__ = ["UdpRelayPolicy"]


@final
class UdpRelayPolicy:
    """What to do with each datagram of one UDP association.

    Args:
        session: the association's session (the client, the rules, the limits, the counters).
        declared_port: the UDP port the client named in its request (0: not known yet).
    """

    __slots__ = ("_peers", "_session", "client_port")

    def __init__(self, session: ServerSession, declared_port: int) -> None:
        self._session = session
        self.client_port: int | None = declared_port or None
        self._peers: set[SockAddr] = set()

    def received(self, data: bytes, source: tuple[Any, ...]) -> UdpDatagram | tuple[bytes, SockAddr] | None:
        """Classify a datagram the relay socket received from *source* (``(host, port, ...)``).

        Returns:
            a client's :class:`UdpDatagram` to forward (find where with
            :meth:`destination`); or ``(packet, address)``: a target's reply,
            wrapped, to send to the client; or ``None``: dropped (and counted).
        """
        session = self._session
        host, port = str(source[0]).partition("%")[0], int(source[1])
        try:
            sender = ipaddress.ip_address(host)
        except ValueError:
            session.count("udp dropped")
            return None
        if sender == session.client_ip and (self.client_port is None or port == self.client_port):
            self.client_port = port
            try:
                datagram = parse_udp_datagram(data)
            except RemoteProtocolError:
                session.count("udp malformed")
                return None
            if datagram.is_fragment:
                return None  # no reassembly: RFC 1928 §7 lets us drop fragments
            if not session.admit_datagram(len(datagram.data)):  # before any lookup: a drop costs nothing
                return None
            return datagram
        if (host, port) in self._peers and self.client_port is not None:
            if not session.admit_datagram(len(data)):
                return None
            packet = encode_udp_datagram(UdpDatagram(address=Address(sender, port), data=data))
            return packet, (str(session.client_ip), self.client_port)
        session.count("udp dropped")
        return None

    def destination(self, datagram: UdpDatagram, *, ipv6: bool) -> Generator[Resolve, Any, SockAddr | None]:
        """Where to send a client's datagram: the first allowed address of the relay socket's family.

        Args:
            datagram: what :meth:`received` returned.
            ipv6: whether the relay socket is IPv6.

        Returns:
            the ``(host, port)`` to send the payload to, or ``None`` (denied,
            unresolvable or no address of that family: counted).
        """
        session = self._session
        addresses = yield from session.addresses(datagram.address)
        if not isinstance(addresses, tuple):
            session.count("udp denied")
            return None
        usable = [(a, p) for a, p in addresses if (a.version == 6) == ipv6]
        if not usable:
            session.count("udp unreachable")
            return None
        address, port = usable[0]
        destination = (str(address), port)
        self._peers.add(destination)
        return destination

    def sent(self, upward: bool, nbytes: int) -> None:
        """A payload of *nbytes* went out (*upward*: to a target); counted in the session's bytes."""
        session = self._session
        if upward:
            session.up += nbytes
        else:
            session.down += nbytes

"""The SOCKS5 UDP request header (RFC 1928 §7), as a stateless codec.

After a UDP ASSOCIATE, every datagram between the client and the relay carries

    +----+------+------+----------+----------+----------+
    |RSV | FRAG | ATYP | DST.ADDR | DST.PORT |   DATA   |
    +----+------+------+----------+----------+----------+
    | 2  |  1   |  1   | Variable |    2     | Variable |

with RSV X'0000'. UDP keeps message boundaries, so there is no buffering here:
one datagram in, one :class:`UdpDatagram` out, and the octets after the header
are the whole of DATA (which may be empty). The header is at most
2 + 1 + 1 + 1 + 255 + 2 = 262 octets (a 255-octet domain name).

Fragmentation: FRAG X'00' marks a standalone datagram; 1 to 127 give a
fragment's position in a sequence, and the high-order bit marks the last
fragment. socks-sansio does not reassemble fragments. RFC 1928 §7 lets an
implementation without reassembly drop every datagram whose FRAG is not
X'00': check :attr:`UdpDatagram.is_fragment` and drop those. The FRAG octet
is still parsed and kept, so an application that wants reassembly can build it
on :attr:`UdpDatagram.fragment_position` and :attr:`UdpDatagram.is_last_fragment`.

The address is read by the same code as the TCP request's (:mod:`._socks5_wire`),
so the two cannot disagree. Parsing raises only :class:`RemoteProtocolError`;
it has no ``reply_hint``, since UDP has no reply: a relay drops a bad datagram.
"""

from __future__ import annotations

from typing import Final, final

import attrs

from ._address import Address
from ._errors import RemoteProtocolError
from ._socks5_wire import encode_address, parse_address
from ._validators import check_octet

__all__ = [
    "MAX_UDP_HEADER_SIZE",
    "UdpDatagram",
    "encode_udp_datagram",
    "parse_udp_datagram",
]

MAX_UDP_HEADER_SIZE: Final = 2 + 1 + 1 + 1 + 255 + 2
"""262: RSV FRAG ATYP, a length octet, a 255-octet domain name, DST.PORT (RFC 1928 §7)."""

_MIN_HEADER_SIZE: Final = 2 + 1 + 1 + 1 + 1 + 2
"""8: the shortest header, with a one-octet domain name (RFC 1928 §7)."""

_END_OF_FRAGMENTS: Final = 0x80
"""High-order bit of FRAG: the last fragment of a sequence (RFC 1928 §7)."""

_ATYP_OFFSET: Final = 3


def _to_data(value: bytes | bytearray | memoryview) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"data must be bytes, not {type(value).__name__}")


@final
@attrs.frozen(kw_only=True)
class UdpDatagram:
    """One datagram relayed through a SOCKS5 UDP association (RFC 1928 §7).

    Args:
        address: DST.ADDR and DST.PORT. From client to relay, where the relay
            should send *data*; from relay to client, where *data* came from.
        data: the payload, possibly empty. ``bytearray`` and ``memoryview`` are
            copied to ``bytes``.
        fragment: the FRAG octet, 0 to 255. 0 (the default) is a standalone
            datagram; see :attr:`is_fragment`.

    Raises:
        LocalProtocolError: *fragment* outside 0..255.
        TypeError: a value of the wrong Python type.
    """

    address: Address = attrs.field(validator=attrs.validators.instance_of(Address))
    data: bytes = attrs.field(converter=_to_data)
    fragment: int = attrs.field(default=0, validator=lambda _i, _a, v: check_octet("fragment", v))

    @property
    def is_fragment(self) -> bool:
        """True when FRAG is not X'00': part of a fragment sequence.

        socks-sansio does not reassemble; RFC 1928 §7 says an implementation
        without reassembly drops such datagrams, so a relay or client should
        ``continue`` past any datagram for which this is true.
        """
        return self.fragment != 0

    @property
    def fragment_position(self) -> int:
        """FRAG without its high-order bit: the position in a sequence (0 when standalone)."""
        return self.fragment & 0x7F

    @property
    def is_last_fragment(self) -> bool:
        """True when FRAG's high-order bit is set: the end of a fragment sequence."""
        return bool(self.fragment & _END_OF_FRAGMENTS)


def encode_udp_datagram(datagram: UdpDatagram) -> bytes:
    """The octets of one UDP datagram: RSV X'0000', FRAG, ATYP, DST.ADDR, DST.PORT, DATA.

    Raises:
        TypeError: *datagram* is not a :class:`UdpDatagram`.
    """
    if not isinstance(datagram, UdpDatagram):
        raise TypeError(f"expected a UdpDatagram, not {type(datagram).__name__}")
    return bytes((0, 0, datagram.fragment)) + encode_address(datagram.address) + datagram.data


def parse_udp_datagram(packet: bytes | bytearray | memoryview) -> UdpDatagram:
    """Parse one whole datagram as received from a socket.

    Everything after the header is DATA; a datagram is never split or joined.
    Datagrams with FRAG other than X'00' are returned too: drop them unless you
    reassemble (see :attr:`UdpDatagram.is_fragment`).

    Raises:
        RemoteProtocolError: the packet is shorter than its header, RSV is not
            X'0000', ATYP is unknown, or the domain name is empty or invalid.
            ``reply_hint`` is ``None``: drop the datagram.
        TypeError: *packet* is not bytes-like.
    """
    if isinstance(packet, memoryview):
        packet = packet.tobytes()
    elif not isinstance(packet, bytes | bytearray):
        raise TypeError(f"packet must be bytes, not {type(packet).__name__}")
    size = len(packet)
    if size >= 2 and (packet[0] or packet[1]):
        raise RemoteProtocolError(
            f"SOCKS5 UDP datagram: the reserved field RSV is 0x{packet[0]:02x}{packet[1]:02x}, "
            "must be 0x0000 (RFC 1928 §7)"
        )
    try:
        parsed = parse_address(packet, _ATYP_OFFSET) if size > _ATYP_OFFSET else _MIN_HEADER_SIZE
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(f"SOCKS5 UDP datagram: {exc.message}") from None
    if isinstance(parsed, int):
        needed = max(parsed, _MIN_HEADER_SIZE)
        raise RemoteProtocolError(
            f"SOCKS5 UDP datagram truncated: its header (RSV FRAG ATYP DST.ADDR DST.PORT, RFC 1928 §7) "
            f"needs at least {needed} octets, the datagram has only {size}"
        )
    address, end = parsed
    return UdpDatagram(address=address, data=bytes(packet[end:]), fragment=packet[2])

"""The PROXY protocol's octets (HAProxy, versions 1 and 2): codes, readers, writers, CRC32c.

Section numbers (§) refer to HAProxy's specification, "The PROXY protocol,
Versions 1 & 2" (doc/proxy-protocol.txt in the haproxy repository, revision
of 2020/03/05). This module knows octets only; the value class and the
receiving object are in :mod:`._proxy_protocol`, which re-exports the public
names defined here.

:func:`read_header` is the whole parser, a pure function of the octets
buffered so far. It returns either the parsed header with its size, or a lower
bound on the octets still needed, and raises :class:`RemoteProtocolError` as
soon as the octets cannot begin a valid header. It reads at most the first
:data:`MAX_PROXY_V1_HEADER_SIZE` octets of a version 1 line, and only the
fixed 16 octets of a version 2 header until the whole header announced by
its length is buffered, so repeated calls on a growing buffer cost
constant time each, and the header itself is decoded once.
"""

from __future__ import annotations

import enum
import ipaddress
from typing import Final, NamedTuple

from ._address import Address, trusted_address
from ._errors import RemoteProtocolError

__all__ = [
    "DEFAULT_MAX_PROXY_HEADER_SIZE",
    "MAX_PROXY_V1_HEADER_SIZE",
    "MAX_PROXY_V2_HEADER_SIZE",
    "PROXY_V2_SIGNATURE",
    "UNIX_ADDRESS_SIZE",
    "ProxyCommand",
    "ProxyFamily",
    "ProxyTLVType",
    "RawHeader",
    "crc32c",
    "encode_v1",
    "encode_v2",
    "format_ipv6",
    "read_header",
]

PROXY_V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
"""The 12 octets that open every version 2 header (§2.2); note the NUL at the 5th position."""

MAX_PROXY_V1_HEADER_SIZE: Final = 107
"""The longest version 1 line, CRLF included: ``PROXY UNKNOWN`` with two full IPv6 addresses and ports (§2.1)."""

MAX_PROXY_V2_HEADER_SIZE: Final = 16 + 0xFFFF
"""65551: the 16 fixed octets plus the largest length a 16-bit field can announce (§2.2)."""

DEFAULT_MAX_PROXY_HEADER_SIZE: Final = 4096
"""The largest version 2 header a :class:`ProxyHeaderReader` accepts unless told otherwise."""

UNIX_ADDRESS_SIZE: Final = 108
"""Octets of each AF_UNIX address in a version 2 header (§2.2, ``unix_addr``)."""

_V1_PREFIX: Final = b"PROXY "
"""``PROXY`` and exactly one space (§2.1)."""
_V1_LONGEST_LINE: Final = MAX_PROXY_V1_HEADER_SIZE - 2
"""105: the longest version 1 line without its CRLF."""
_V2_FIXED_SIZE: Final = 16
"""Signature (12), version and command (1), family and protocol (1), length (2) (§2.2)."""
_V2_VERSION: Final = 0x2
"""The high nibble of the 13th octet; receivers must accept no other value (§2.2)."""
_SHOWN: Final = 16


class ProxyCommand(enum.IntEnum):
    """The low nibble of a version 2 header's 13th octet (§2.2). Version 1 always means PROXY."""

    #: The proxy opened the connection itself (a health check): use the real
    #: connection endpoints; the header carries no address.
    LOCAL = 0x0
    #: The connection is relayed on behalf of the client the header describes.
    PROXY = 0x1


class ProxyFamily(enum.IntEnum):
    """The address family and transport protocol: a version 2 header's 14th octet (§2.2).

    The high nibble is the family (0 AF_UNSPEC, 1 AF_INET, 2 AF_INET6,
    3 AF_UNIX), the low nibble the transport (0 UNSPEC, 1 STREAM, 2 DGRAM);
    the members are the seven combinations §2.2 lists. Version 1 names TCP4,
    TCP6 and UNKNOWN (§2.1); its UNKNOWN is :attr:`UNSPEC`.
    """

    #: 0x00: unknown, unspecified or unsupported; no address (§2.2). Version 1's "UNKNOWN" (§2.1).
    UNSPEC = 0x00
    #: 0x11: TCP over IPv4; 12 address octets (§2.2); version 1's "TCP4" (§2.1).
    TCP4 = 0x11
    #: 0x12: UDP over IPv4; 12 address octets (§2.2). Version 2 only.
    UDP4 = 0x12
    #: 0x21: TCP over IPv6; 36 address octets (§2.2); version 1's "TCP6" (§2.1).
    TCP6 = 0x21
    #: 0x22: UDP over IPv6; 36 address octets (§2.2). Version 2 only.
    UDP6 = 0x22
    #: 0x31: SOCK_STREAM over AF_UNIX; two 108-octet addresses (§2.2). Version 2 only.
    UNIX_STREAM = 0x31
    #: 0x32: SOCK_DGRAM over AF_UNIX; two 108-octet addresses (§2.2). Version 2 only.
    UNIX_DGRAM = 0x32

    @property
    def address_size(self) -> int:
        """Octets of the address block this family carries in version 2 (§2.2)."""
        return _ADDRESS_SIZE[self]

    @property
    def is_ip(self) -> bool:
        """True for TCP and UDP over IPv4 or IPv6 (the families with :class:`Address` values)."""
        return self in _IPV4_FAMILIES or self in _IPV6_FAMILIES

    @property
    def is_unix(self) -> bool:
        """True for the two AF_UNIX families (raw 108-octet addresses)."""
        return self is ProxyFamily.UNIX_STREAM or self is ProxyFamily.UNIX_DGRAM


class ProxyTLVType(enum.IntEnum):
    """The registered types of version 2 TLVs (§2.2). A header keeps every type, known or not, as an int."""

    #: Application-Layer Protocol Negotiation, e.g. the TLS ALPN value (§2.2.1).
    ALPN = 0x01
    #: The host name the client asked for, UTF-8, e.g. the TLS SNI (§2.2.2).
    AUTHORITY = 0x02
    #: A CRC32c of the whole header, 4 octets big-endian; checked on receipt, computed on encoding (§2.2.3).
    CRC32C = 0x03
    #: Padding, to be ignored (§2.2.4).
    NOOP = 0x04
    #: An opaque connection identifier of up to 128 octets (§2.2.5).
    UNIQUE_ID = 0x05
    #: TLS information: client flags, verify result, then sub-TLVs (§2.2.6).
    SSL = 0x20
    #: Sub-TLV of SSL: the TLS version, US-ASCII (§2.2.6).
    SSL_VERSION = 0x21
    #: Sub-TLV of SSL: the client certificate's Common Name, UTF-8 (§2.2.6).
    SSL_CN = 0x22
    #: Sub-TLV of SSL: the cipher's name, US-ASCII (§2.2.6).
    SSL_CIPHER = 0x23
    #: Sub-TLV of SSL: the certificate's signature algorithm (§2.2.6).
    SSL_SIG_ALG = 0x24
    #: Sub-TLV of SSL: the certificate's key algorithm (§2.2.6).
    SSL_KEY_ALG = 0x25
    #: The network namespace's name, US-ASCII (§2.2.7).
    NETNS = 0x30


_ADDRESS_SIZE: Final = {
    ProxyFamily.UNSPEC: 0,
    ProxyFamily.TCP4: 12,
    ProxyFamily.UDP4: 12,
    ProxyFamily.TCP6: 36,
    ProxyFamily.UDP6: 36,
    ProxyFamily.UNIX_STREAM: 2 * UNIX_ADDRESS_SIZE,
    ProxyFamily.UNIX_DGRAM: 2 * UNIX_ADDRESS_SIZE,
}
_IPV4_FAMILIES: Final = frozenset({ProxyFamily.TCP4, ProxyFamily.UDP4})
_IPV6_FAMILIES: Final = frozenset({ProxyFamily.TCP6, ProxyFamily.UDP6})
_FAMILY_OF_OCTET: Final = {int(member): member for member in ProxyFamily}
_CRC32C: Final = int(ProxyTLVType.CRC32C)


class RawHeader(NamedTuple):
    """What :func:`read_header` found: the fields of a ``ProxyHeader``, and the header's size in octets."""

    version: int
    command: ProxyCommand
    family: ProxyFamily
    source: Address | None
    destination: Address | None
    unix_source: bytes | None
    unix_destination: bytes | None
    tlvs: tuple[tuple[int, bytes], ...]
    size: int


# -- CRC32c (RFC 4960 Appendix B; Castagnoli polynomial, reflected) -----------------


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for index in range(256):
        crc = index
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE: Final = _crc32c_table()


def crc32c(data: bytes | bytearray) -> int:
    """The CRC32c of *data* (the checksum of iSCSI and SCTP, RFC 4960 Appendix B), as §2.2.3 asks."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for octet in data:
        crc = table[(crc ^ octet) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# -- writers ------------------------------------------------------------------------


def format_ipv6(address: ipaddress.IPv6Address) -> str:
    """The RFC 5952 text of an IPv6 address: lowercase, the longest zero run as ``::``, no dotted quad.

    Written out rather than ``str()`` so the octets sent do not depend on the
    Python version (3.13 writes IPv4-mapped addresses as ``::ffff:1.2.3.4``).
    """
    packed = address.packed
    hextets = [f"{packed[i] << 8 | packed[i + 1]:x}" for i in range(0, 16, 2)]
    best, best_size, start = -1, 1, -1
    for index in range(9):
        if index < 8 and hextets[index] == "0":
            if start < 0:
                start = index
            continue
        if start >= 0 and index - start > best_size:
            best, best_size = start, index - start
        start = -1
    if best < 0:
        return ":".join(hextets)
    return ":".join(hextets[:best]) + "::" + ":".join(hextets[best + best_size :])


def _host_text(address: Address) -> str:
    host = address.host
    if isinstance(host, ipaddress.IPv6Address):
        return format_ipv6(host)
    return str(host)


def encode_v1(family: ProxyFamily, source: Address | None, destination: Address | None) -> bytes:
    """The version 1 line, CRLF included (§2.1); *source* and *destination* are set unless UNSPEC."""
    if family is ProxyFamily.UNSPEC or source is None or destination is None:
        return b"PROXY UNKNOWN\r\n"
    name = "TCP4" if family is ProxyFamily.TCP4 else "TCP6"
    line = f"PROXY {name} {_host_text(source)} {_host_text(destination)} {source.port} {destination.port}\r\n"
    return line.encode("ascii")


def encode_v2(
    command: ProxyCommand,
    family: ProxyFamily,
    source: Address | None,
    destination: Address | None,
    unix_source: bytes | None,
    unix_destination: bytes | None,
    tlvs: tuple[tuple[int, bytes], ...],
) -> bytes:
    """The version 2 header (§2.2): signature, ver/cmd, fam, length, addresses, TLVs.

    A CRC32C TLV's value is computed here over the finished header (§2.2.3);
    the value passed in is ignored. The caller has checked that the fields
    agree and that the length fits in 16 bits.
    """
    body = bytearray()
    if source is not None and destination is not None:
        for address in (source, destination):
            host = address.host
            assert not isinstance(host, bytes)
            body += host.packed
        body += source.port.to_bytes(2, "big") + destination.port.to_bytes(2, "big")
    elif unix_source is not None and unix_destination is not None:
        body += unix_source + unix_destination
    crc_at = -1
    for kind, value in tlvs:
        size = len(value)
        body += bytes((kind, size >> 8, size & 0xFF))
        if kind == _CRC32C:
            crc_at = _V2_FIXED_SIZE + len(body)
            body += bytes(4)
        else:
            body += value
    header = bytearray(PROXY_V2_SIGNATURE)
    header += bytes((_V2_VERSION << 4 | command, family))
    header += len(body).to_bytes(2, "big")
    header += body
    if crc_at >= 0:
        header[crc_at : crc_at + 4] = crc32c(header).to_bytes(4, "big")
    return bytes(header)


# -- the reader -----------------------------------------------------------------------


def read_header(buf: bytes | bytearray, max_size: int) -> RawHeader | int:
    """Parse the PROXY header at the start of *buf*, if it is all there.

    Args:
        buf: every octet received so far (the header, perhaps more after it).
        max_size: the largest version 2 header accepted, in octets.

    Returns:
        the header's fields and size; or, while the header is incomplete, a
        lower bound (at least 1) on the octets still needed: reading that many
        never reads past the header.

    Raises:
        RemoteProtocolError: the octets cannot begin a valid header (checked as
            early as the octets allow), or a complete header is invalid.
    """
    if not buf:
        return len(b"PROXY UNKNOWN\r\n")  # 15: the shortest header of either version
    first = buf[0]
    if first == _V1_PREFIX[0]:
        if not _V1_PREFIX.startswith(bytes(buf[: len(_V1_PREFIX)])):
            raise _not_a_header(bytes(buf[:_SHOWN]))
        return _read_v1(bytes(buf[:MAX_PROXY_V1_HEADER_SIZE]))
    if first == PROXY_V2_SIGNATURE[0]:
        if not PROXY_V2_SIGNATURE.startswith(bytes(buf[: len(PROXY_V2_SIGNATURE)])):
            raise _not_a_header(bytes(buf[:_SHOWN]))
        return _read_v2(buf, max_size)
    raise _not_a_header(bytes(buf[:_SHOWN]))


def _not_a_header(head: bytes) -> RemoteProtocolError:
    first = head[0]
    if first == 0x16:
        looks = "a TLS ClientHello (TLS sent straight to a port that expects the PROXY protocol?)"
    elif first == 0x05:
        looks = "a SOCKS5 greeting (a client connecting directly, not through the load balancer?)"
    elif first == 0x04:
        looks = "a SOCKS4 request (a client connecting directly, not through the load balancer?)"
    elif head.startswith(b"PROXY"):
        looks = "'PROXY' without the single space that must follow it (§2.1)"
    elif head[:6].upper() == _V1_PREFIX:
        looks = "a version 1 line in the wrong case: the keyword is the uppercase 'PROXY' (§2.1)"
    elif 0x41 <= first <= 0x5A or 0x61 <= first <= 0x7A:
        looks = f"text such as an HTTP request ({head!r}: a client connecting directly?)"
    else:
        looks = "no PROXY protocol header"
    return RemoteProtocolError(
        f"expected a PROXY protocol header, 'PROXY ' (version 1) or the 12-octet signature "
        f"\\r\\n\\r\\n\\x00\\r\\nQUIT\\n (version 2), but the first octets ({head.hex(' ')}) look like {looks}; "
        "the sender must be configured to send it (HAProxy: send-proxy or send-proxy-v2)"
    )


# -- version 1 (§2.1) -------------------------------------------------------------------

_V1_FAMILIES: Final = {b"TCP4": ProxyFamily.TCP4, b"TCP6": ProxyFamily.TCP6, b"UNKNOWN": ProxyFamily.UNSPEC}
_V1_SHORTEST_LINE: Final = {
    b"UNKNOWN": len(b"PROXY UNKNOWN\r\n"),
    b"TCP4": len(b"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n"),
    b"TCP6": len(b"PROXY TCP6 :: :: 0 0\r\n"),
}
_V1_FIELD_NAMES: Final = ("source address", "destination address", "source port", "destination port")
_V1_SHORTEST_FIELDS: Final = {ProxyFamily.TCP4: (7, 7, 1, 1), ProxyFamily.TCP6: (2, 2, 1, 1)}
_DIGITS: Final = frozenset(b"0123456789")
_IPV6_CHARS: Final = frozenset(b"0123456789abcdefABCDEF:.")
_LONGEST_IPV6_TEXT: Final = len("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255")


def _v1_error(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"PROXY protocol v1: {message}")


def _read_v1(head: bytes) -> RawHeader | int:
    """*head*: the first octets (at most 107), starting with a prefix of ``PROXY ``."""
    cr = head.find(b"\r")
    lf = head.find(b"\n")
    stop = min(len(head), _V1_LONGEST_LINE, *(i for i in (cr, lf) if i >= 0))
    # The octets before the first CR, LF or the length limit are judged first, as
    # they would have been had they arrived alone: the outcome never depends on
    # how the line was split.
    need = _v1_scan(head[:stop], complete=False) if stop >= len(_V1_PREFIX) else 15 - stop
    assert isinstance(need, int)
    if stop == lf:
        raise _v1_error("the line ends with a bare LF; it must end with CRLF (§2.1)")
    if stop != cr:
        if len(head) > _V1_LONGEST_LINE:
            raise _v1_error(f"no CRLF within the first {MAX_PROXY_V1_HEADER_SIZE} octets: the line is too long (§2.1)")
        return need
    if cr + 1 == len(head):
        return 1
    if head[cr + 1] != 0x0A:
        raise _v1_error("the line ends with a CR not followed by LF; it must end with CRLF (§2.1)")
    parsed = _v1_scan(head[:cr], complete=True)
    assert isinstance(parsed, RawHeader)
    return parsed._replace(size=cr + 2)


def _v1_scan(line: bytes, *, complete: bool) -> RawHeader | int:
    """Check a line (no CR or LF in it) that starts with ``PROXY ``.

    Complete: parse it (size 0, set by the caller). Incomplete: check that it
    can still begin a valid line, and return the fewest octets, CRLF included,
    that could complete it.
    """
    rest = line[len(_V1_PREFIX) :]
    name, space, fields_text = rest.partition(b" ")
    if not space:
        if complete and rest == b"UNKNOWN":
            return _unknown()
        if complete and rest in _V1_FAMILIES:
            raise _v1_error(f"the {_V1_FIELD_NAMES[0]} is missing (§2.1)")
        fits = [size for known, size in _V1_SHORTEST_LINE.items() if known.startswith(rest) and not complete]
        if not fits:
            raise _v1_error(f"unknown protocol {rest[:8]!r}: expected TCP4, TCP6 or UNKNOWN (§2.1)")
        return max(1, min(fits) - len(line))
    family = _V1_FAMILIES.get(name)
    if not name:
        raise _v1_error("an empty protocol: fields are separated by exactly one space (§2.1)")
    if family is None:
        raise _v1_error(f"unknown protocol {name[:8]!r}: expected TCP4, TCP6 or UNKNOWN (§2.1)")
    if family is ProxyFamily.UNSPEC:
        return _unknown() if complete else 2  # the receiver ignores the rest of the line (§2.1)
    fields = fields_text.split(b" ")
    last = len(fields) - 1
    # Left to right, so the first wrong octet decides the error however the line was split.
    values = [_v1_field(family, index, field, partial=not complete and index == last)
              for index, field in enumerate(fields[: len(_V1_FIELD_NAMES)])]
    if len(fields) > len(_V1_FIELD_NAMES):
        raise _v1_error("more than four fields after the protocol; fields are separated by exactly one space (§2.1)")
    if complete and len(fields) < len(_V1_FIELD_NAMES):
        raise _v1_error(f"the {_V1_FIELD_NAMES[len(fields)]} is missing (§2.1)")
    if not complete:
        shortest = _V1_SHORTEST_FIELDS[family]
        current = fields[last]
        if family is ProxyFamily.TCP4 and last < 2:
            missing = (0 if current and not current.endswith(b".") else 1) + 2 * (3 - current.count(b"."))
        else:
            missing = max(0, shortest[last] - len(current))
        return missing + sum(shortest[last + 1 :]) + (len(shortest) - 1 - last) + 2
    source_host, destination_host, source_port, destination_port = values
    assert isinstance(source_host, ipaddress.IPv4Address | ipaddress.IPv6Address)
    assert isinstance(destination_host, ipaddress.IPv4Address | ipaddress.IPv6Address)
    assert isinstance(source_port, int)
    assert isinstance(destination_port, int)
    return RawHeader(1, ProxyCommand.PROXY, family, trusted_address(source_host, source_port),
                     trusted_address(destination_host, destination_port), None, None, (), 0)


def _unknown() -> RawHeader:
    return RawHeader(1, ProxyCommand.PROXY, ProxyFamily.UNSPEC, None, None, None, None, (), 0)


def _v1_field(
    family: ProxyFamily, index: int, field: bytes, *, partial: bool
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | int | None:
    """One field; *partial*: it may still grow, so check only what more octets cannot repair."""
    name = _V1_FIELD_NAMES[index]
    if not field:
        if partial:
            return None
        raise _v1_error(f"the {name} is empty; fields are separated by exactly one space (§2.1)")
    if index >= 2:
        if not _DIGITS.issuperset(field):
            raise _v1_error(f"the {name} {field[:8]!r} is not a decimal number (§2.1)")
        if len(field) > 1 and field[0] == 0x30:
            raise _v1_error(f"the {name} {field[:8]!r} has a leading zero, which §2.1 forbids")
        if len(field) > 5 or int(field) > 0xFFFF:
            raise _v1_error(f"the {name} {field[:8]!r} is not in 0..65535 (§2.1)")
        return None if partial else int(field)
    if family is ProxyFamily.TCP4:
        return _v1_ipv4(name, field, partial=partial)
    if not _IPV6_CHARS.issuperset(field) or len(field) > _LONGEST_IPV6_TEXT:
        raise _v1_error(f"the {name} {field[:_LONGEST_IPV6_TEXT]!r} is not an IPv6 address (§2.1)")
    if partial:
        return None
    try:
        return ipaddress.IPv6Address(field.decode("ascii"))
    except ValueError:
        raise _v1_error(f"the {name} {field!r} is not an IPv6 address (§2.1)") from None


def _v1_ipv4(name: str, field: bytes, *, partial: bool) -> ipaddress.IPv4Address | None:
    """Four decimal numbers 0..255, one dot between each, no leading zeros (§2.1)."""
    parts = field.split(b".")
    bad = len(parts) > 4 or (not partial and len(parts) < 4)
    value = 0
    for position, part in enumerate(parts):
        if bad:
            break
        if not part:
            bad = not (partial and position == len(parts) - 1)
        elif not _DIGITS.issuperset(part) or len(part) > 3 or (len(part) > 1 and part[0] == 0x30) or int(part) > 255:
            bad = True
        else:
            value = value << 8 | int(part)
    if bad:
        raise _v1_error(
            f"the {name} {field[:16]!r} is not an IPv4 address: four numbers 0..255 separated by dots, "
            "without leading zeros (§2.1)"
        )
    return None if partial else ipaddress.IPv4Address(value)


# -- version 2 (§2.2) -------------------------------------------------------------------


def _v2_error(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"PROXY protocol v2: {message}")


def _read_v2(buf: bytes | bytearray, max_size: int) -> RawHeader | int:
    """*buf* starts with a prefix of the signature."""
    have = len(buf)
    if have > len(PROXY_V2_SIGNATURE):
        version, command = buf[12] >> 4, buf[12] & 0x0F
        if version != _V2_VERSION:
            raise _v2_error(f"the version is {version}, not 2 (the 13th octet is 0x{buf[12]:02x}, §2.2)")
        if command > ProxyCommand.PROXY:
            raise _v2_error(f"unassigned command 0x{command:x}: expected 0 (LOCAL) or 1 (PROXY) (§2.2)")
    if have > 13 and buf[13] not in _FAMILY_OF_OCTET:
        fam = buf[13]
        raise _v2_error(
            f"unknown family and protocol 0x{fam:02x}: expected 0x00, 0x11, 0x12, 0x21, 0x22, 0x31 or 0x32 (§2.2)"
        )
    if have < _V2_FIXED_SIZE:
        return _V2_FIXED_SIZE - have
    command = ProxyCommand(buf[12] & 0x0F)
    family = _FAMILY_OF_OCTET[buf[13]]
    length = buf[14] << 8 | buf[15]
    total = _V2_FIXED_SIZE + length
    if total > max_size:
        raise _v2_error(f"the header announces {total} octets, more than the maximum of {max_size}")
    address_size = _ADDRESS_SIZE[family]
    if command is ProxyCommand.LOCAL and length == 0:
        address_size = 0  # a LOCAL header should carry no address, whatever its family (§2.2)
    if length < address_size:
        raise _v2_error(
            f"the length {length} is shorter than the {address_size} address octets of family "
            f"{family.name} (0x{int(family):02x}) (§2.2)"
        )
    if have < total:
        return total - have
    header = bytes(buf[:total])
    block = header[_V2_FIXED_SIZE:]
    source = destination = None
    unix_source = unix_destination = None
    if command is ProxyCommand.LOCAL:
        family = ProxyFamily.UNSPEC  # the receiver discards the address block and the family (§2.2)
    elif family in _IPV4_FAMILIES:
        source = trusted_address(ipaddress.IPv4Address(block[0:4]), block[8] << 8 | block[9])
        destination = trusted_address(ipaddress.IPv4Address(block[4:8]), block[10] << 8 | block[11])
    elif family in _IPV6_FAMILIES:
        source = trusted_address(ipaddress.IPv6Address(block[0:16]), block[32] << 8 | block[33])
        destination = trusted_address(ipaddress.IPv6Address(block[16:32]), block[34] << 8 | block[35])
    elif family is not ProxyFamily.UNSPEC:
        unix_source, unix_destination = block[:UNIX_ADDRESS_SIZE], block[UNIX_ADDRESS_SIZE:address_size]
    tlvs = _read_tlvs(header, _V2_FIXED_SIZE + address_size)
    return RawHeader(2, command, family, source, destination, unix_source, unix_destination, tlvs, total)


def _read_tlvs(header: bytes, at: int) -> tuple[tuple[int, bytes], ...]:
    """The TLVs from offset *at* to the end of *header*, which they must fill exactly; checks a CRC32C."""
    end = len(header)
    tlvs = []
    crc_at = -1
    while at < end:
        if end - at < 3:
            raise _v2_error(
                f"{end - at} octet(s) left after the last TLV, too few for a TLV's type and length (§2.2)"
            )
        kind, size = header[at], header[at + 1] << 8 | header[at + 2]
        start, stop = at + 3, at + 3 + size
        if stop > end:
            raise _v2_error(
                f"TLV type 0x{kind:02x} announces {size} octets but only {end - start} remain in the header (§2.2)"
            )
        if kind == _CRC32C:
            if size != 4:
                raise _v2_error(f"the CRC32C TLV holds {size} octets, not 4 (§2.2.3)")
            if crc_at >= 0:
                raise _v2_error("more than one CRC32C TLV (§2.2.3 describes one checksum field)")
            crc_at = start
        tlvs.append((kind, header[start:stop]))
        at = stop
    if crc_at >= 0:
        received = int.from_bytes(header[crc_at : crc_at + 4], "big")
        computed = crc32c(header[:crc_at] + bytes(4) + header[crc_at + 4 :])
        if received != computed:
            raise _v2_error(
                f"the CRC32C TLV says 0x{received:08x} but the header's checksum is 0x{computed:08x} (§2.2.3)"
            )
    return tuple(tlvs)

"""The PROXY protocol (HAProxy, versions 1 and 2) as a sans-I/O codec.

A load balancer or TCP proxy in front of a server opens each connection to
it with one header that says who the real client is: the addresses and ports
its own ``getpeername()`` and ``getsockname()`` saw, and in version 2 optional
type-length-value extensions (TLVs). Nothing is sent back. Section numbers
(§) refer to HAProxy's specification, "The PROXY protocol, Versions 1 & 2"
(doc/proxy-protocol.txt, revision of 2020/03/05).

* :class:`ProxyHeader` is the header as a value, validated on construction;
  the header a sender encodes is the header the receiver gets back.
* :func:`encode_proxy_header` writes it: the version 1 text line or the
  version 2 binary header, in one canonical form.
* :class:`ProxyHeaderReader` is the receiving side (a server behind a load
  balancer), with the contract of the connection classes: ``receive_data``
  only buffers (``b""`` is EOF), ``next_event`` returns the
  :class:`ProxyHeader` once and ``PAUSED`` ever after, ``trailing_data`` hands
  back exactly the octets after the header, and ``read_size_hint`` tells a
  blocking reader how much it may read without reading past the header, so
  the rest stays in the kernel for whatever reads the connection next.

Strategy, for linear time however the octets arrive: one ``bytearray``
(:class:`ReceiveBuffer`), and a pure parser (:func:`read_header` in
:mod:`._proxy_protocol_wire`) that looks at a bounded prefix only: at most
107 octets of a version 1 line, the 16 fixed octets of a version 2 header
until all the octets its length announces are here. The first octet decides
the version (``P`` or CR), and each further octet is checked as it arrives,
so a peer that is not a PROXY sender (a TLS ClientHello, a SOCKS5 greeting,
``GET /``) is refused at once, with a message saying what was expected. The
header is removed with one ``del``.

Decisions where the specification leaves room (each one tested):

* version 1 is parsed strictly: single spaces, no leading zeros in ports or
  IPv4 numbers, IPv6 as ``inet_pton`` reads it (no zone id), CRLF within
  107 octets; after ``UNKNOWN`` (followed by a space or the CRLF) the rest of
  the line is ignored, as §2.1 requires;
* version 2: only the seven family/protocol octets §2.2 lists are accepted;
  the address block must fit in the length; what follows it must be a
  sequence of whole TLVs that fills the header exactly, for LOCAL too; a
  LOCAL header's family and addresses are discarded (§2.2), so it reads as
  family UNSPEC; a LOCAL header with length 0 is accepted whatever its family;
* a CRC32C TLV (§2.2.3) is verified on receipt (a mismatch is an error) and
  computed by the encoder; other TLVs are kept as raw octets, unchecked, in
  order;
* AF_UNIX addresses are kept as their raw 108 octets (``unix_source``,
  ``unix_destination``);
* the size cap applies to version 2 (default 4096 octets, at most 65551);
  version 1 is capped at 107 octets by §2.1.

Raises only :class:`RemoteProtocolError` on the peer's octets (from
``next_event``) and :class:`LocalProtocolError` on a header you build.
Remember §5: accept the PROXY protocol only from trusted proxies, and never
guess whether a connection carries it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final, final

import attrs

from ._address import Address
from ._buffer import ReceiveBuffer
from ._errors import LocalProtocolError, RemoteProtocolError
from ._proxy_protocol_wire import (
    DEFAULT_MAX_PROXY_HEADER_SIZE,
    MAX_PROXY_V1_HEADER_SIZE,
    MAX_PROXY_V2_HEADER_SIZE,
    PROXY_V2_SIGNATURE,
    UNIX_ADDRESS_SIZE,
    ProxyCommand,
    ProxyFamily,
    ProxyTLVType,
    encode_v1,
    encode_v2,
    read_header,
)
from ._util import NEED_DATA, PAUSED, NeedData, Paused

__all__ = [
    "DEFAULT_MAX_PROXY_HEADER_SIZE",
    "MAX_PROXY_V1_HEADER_SIZE",
    "MAX_PROXY_V2_HEADER_SIZE",
    "PROXY_V2_SIGNATURE",
    "ProxyCommand",
    "ProxyFamily",
    "ProxyHeader",
    "ProxyHeaderReader",
    "ProxyTLVType",
    "encode_proxy_header",
]

_V1_FAMILIES: Final = frozenset({ProxyFamily.TCP4, ProxyFamily.TCP6, ProxyFamily.UNSPEC})
_MIN_V2_HEADER_SIZE: Final = 16
_MAX_BLOCK: Final = 0xFFFF
_CRC32C: Final = int(ProxyTLVType.CRC32C)


# -- converters (check as they convert) -----------------------------------------------


def _version(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"version must be int, not {type(value).__name__}")
    if value not in (1, 2):
        raise LocalProtocolError(f"the PROXY protocol has versions 1 and 2, not {value}")
    return value


def _command(value: object) -> ProxyCommand:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"command must be a ProxyCommand, not {type(value).__name__}")
    try:
        return ProxyCommand(value)
    except ValueError:
        raise LocalProtocolError(f"unknown PROXY command {value}: 0 (LOCAL) or 1 (PROXY) (§2.2)") from None


def _family(value: object) -> ProxyFamily:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"family must be a ProxyFamily, not {type(value).__name__}")
    try:
        return ProxyFamily(value)
    except ValueError:
        raise LocalProtocolError(f"unknown PROXY family and protocol 0x{value:02x} (§2.2)") from None


def _address(value: object) -> Address | None:
    if value is None or type(value) is Address:
        return value
    raise TypeError(f"an address must be an Address or None, not {type(value).__name__}")


def _unix(value: object) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"a UNIX address must be bytes or None, not {type(value).__name__}")
    raw = bytes(value)
    if len(raw) > UNIX_ADDRESS_SIZE:
        raise LocalProtocolError(f"a UNIX address is at most {UNIX_ADDRESS_SIZE} octets, got {len(raw)} (§2.2)")
    return raw.ljust(UNIX_ADDRESS_SIZE, b"\0")


def _tlvs(values: Iterable[tuple[int, bytes]]) -> tuple[tuple[int, bytes], ...]:
    items: object = values
    if isinstance(items, bytes | bytearray | str) or not isinstance(items, Iterable):
        raise TypeError("tlvs must be a sequence of (type, value) pairs")
    out = []
    for pair in items:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise TypeError(f"each TLV must be a (type, value) pair, not {pair!r}")
        kind, value = pair
        if isinstance(kind, bool) or not isinstance(kind, int):
            raise TypeError(f"a TLV type must be int, not {type(kind).__name__}")
        if not 0 <= kind <= 0xFF:
            raise LocalProtocolError(f"a TLV type must be in 0..255, got {kind} (§2.2)")
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"a TLV value must be bytes, not {type(value).__name__}")
        raw = bytes(value)
        if len(raw) > _MAX_BLOCK:
            raise LocalProtocolError(f"a TLV value is at most 65535 octets, got {len(raw)} (§2.2)")
        out.append((int(kind), raw))
    return tuple(out)


@final
@attrs.frozen(kw_only=True)
class ProxyHeader:
    """One PROXY protocol header: who the client is, as the proxy saw it.

    Args:
        version: 1 (the text line, §2.1) or 2 (binary, §2.2).
        family: the address family and transport. Version 1 has TCP4, TCP6
            and UNSPEC (its "UNKNOWN"); version 2 also UDP4, UDP6, UNIX_STREAM
            and UNIX_DGRAM.
        command: ``PROXY`` (the default: a relayed connection) or ``LOCAL``
            (version 2 only: the proxy's own connection, such as a health
            check; its family is UNSPEC and it has no address).
        source: the client's address (the proxy's ``getpeername()``), an IP
            address of the family's version, for the TCP and UDP families;
            ``None`` otherwise.
        destination: the address the client connected to (the proxy's
            ``getsockname()``), as *source*.
        unix_source: for the UNIX families, the client's ``sun_path`` as raw
            octets, padded with NULs to 108 (a shorter value is padded);
            ``None`` otherwise.
        unix_destination: for the UNIX families, the listening socket's path, as *unix_source*.
        tlvs: version 2 only: the TLVs in order, each ``(type, value)`` with a
            type 0-255 (see :class:`ProxyTLVType`; any type is kept as an int)
            and a value of at most 65535 octets. A CRC32C TLV's value must be 4
            octets and is computed by :func:`encode_proxy_header` whatever it is
            here (pass ``bytes(4)``); a received one was verified.

    Raises:
        LocalProtocolError: a value out of range, or fields that disagree: an
            address missing or of the wrong IP version for the family, an
            address given where the family or command has none, a v1 header
            with LOCAL, UDP, UNIX or TLVs, a LOCAL header with a family other
            than UNSPEC, an IPv6 zone id, more than one CRC32C TLV, or a version 2
            header longer than 65551 octets.
        TypeError: a value of the wrong Python type.
    """

    version: int = attrs.field(converter=_version)
    family: ProxyFamily = attrs.field(converter=_family)
    command: ProxyCommand = attrs.field(default=ProxyCommand.PROXY, converter=_command)
    source: Address | None = attrs.field(default=None, converter=_address)
    destination: Address | None = attrs.field(default=None, converter=_address)
    unix_source: bytes | None = attrs.field(default=None, converter=_unix)
    unix_destination: bytes | None = attrs.field(default=None, converter=_unix)
    tlvs: tuple[tuple[int, bytes], ...] = attrs.field(default=(), converter=_tlvs)

    def __attrs_post_init__(self) -> None:
        family = self.family
        if self.version == 1:
            if self.command is not ProxyCommand.PROXY:
                raise LocalProtocolError("a version 1 header cannot carry LOCAL; use version 2 (§2.1)")
            if family not in _V1_FAMILIES:
                raise LocalProtocolError(f"version 1 carries TCP4, TCP6 or UNKNOWN only, not {family.name} (§2.1)")
            if self.tlvs:
                raise LocalProtocolError("a version 1 header cannot carry TLVs; use version 2 (§2.1)")
        if self.command is ProxyCommand.LOCAL and family is not ProxyFamily.UNSPEC:
            raise LocalProtocolError(f"a LOCAL header has family UNSPEC and no address, not {family.name} (§2.2)")
        addresses = (self.source, self.destination)
        unix = (self.unix_source, self.unix_destination)
        if family.is_ip:
            want = ipaddress.IPv4Address if family in (ProxyFamily.TCP4, ProxyFamily.UDP4) else ipaddress.IPv6Address
            for name, address in zip(("source", "destination"), addresses, strict=True):
                if address is None:
                    raise LocalProtocolError(f"family {family.name} needs a {name} address")
                if type(address.host) is not want:
                    raise LocalProtocolError(
                        f"the {name} {address} is not an {want.__name__[:4]} address, as family {family.name} needs"
                    )
                if isinstance(address.host, ipaddress.IPv6Address) and address.host.scope_id:
                    raise LocalProtocolError(f"the {name} {address} has a zone id, which the header cannot carry")
        elif addresses != (None, None):
            raise LocalProtocolError(f"family {family.name} carries no IP address; source and destination are None")
        if family.is_unix:
            if None in unix:
                raise LocalProtocolError(f"family {family.name} needs unix_source and unix_destination")
        elif unix != (None, None):
            raise LocalProtocolError(f"unix_source and unix_destination are for the UNIX families, not {family.name}")
        crcs = [value for kind, value in self.tlvs if kind == _CRC32C]
        if len(crcs) > 1:
            raise LocalProtocolError("at most one CRC32C TLV (§2.2.3)")
        if crcs and len(crcs[0]) != 4:
            raise LocalProtocolError(f"a CRC32C TLV's value is 4 octets, got {len(crcs[0])} (§2.2.3)")
        block = family.address_size + sum(3 + len(value) for _, value in self.tlvs)
        if block > _MAX_BLOCK:
            raise LocalProtocolError(
                f"the addresses and TLVs take {block} octets; a version 2 header has room for 65535 (§2.2)"
            )

    def tlv(self, kind: int) -> bytes | None:
        """The value of the first TLV of type *kind* (e.g. ``ProxyTLVType.AUTHORITY``), or None."""
        for tlv_kind, value in self.tlvs:
            if tlv_kind == kind:
                return value
        return None


def encode_proxy_header(header: ProxyHeader) -> bytes:
    """The octets of *header*, to send first on the connection, at once (§2).

    Version 1: ``PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\\r\\n`` (IPv6 in
    RFC 5952 form), or ``PROXY UNKNOWN\\r\\n``. Version 2: the signature, the
    version and command, the family, the length (big-endian), the address
    block, the TLVs in order, with any CRC32C TLV computed over the result.
    The output is canonical: a :class:`ProxyHeaderReader` reads it back as an
    equal header (the CRC32C value aside, which is always the computed one).

    Raises:
        TypeError: *header* is not a :class:`ProxyHeader`.
    """
    if type(header) is not ProxyHeader:
        raise TypeError(f"expected a ProxyHeader, not {type(header).__name__}")
    if header.version == 1:
        return encode_v1(header.family, header.source, header.destination)
    return encode_v2(header.command, header.family, header.source, header.destination,
                     header.unix_source, header.unix_destination, header.tlvs)


def _check_max_size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_header_size must be int, not {type(value).__name__}")
    if not _MIN_V2_HEADER_SIZE <= value <= MAX_PROXY_V2_HEADER_SIZE:
        raise LocalProtocolError(
            f"max_header_size must be in {_MIN_V2_HEADER_SIZE}..{MAX_PROXY_V2_HEADER_SIZE}, got {value}"
        )
    return value


@final
class ProxyHeaderReader:
    """Reads the PROXY header that opens a connection from a load balancer.

    Feed every octet received to :meth:`receive_data` (``b""`` when the peer
    closed) and call :meth:`next_event` until it returns the header; then
    hand :attr:`trailing_data` (the first octets of the real protocol) to
    whatever reads the connection next, before anything read later. Both
    versions are accepted; the first octet decides which.

    A blocking server can read exactly :attr:`read_size_hint` octets at a time
    (``sock.recv(reader.read_size_hint)``): it never reads past the header,
    so the socket can be handed on with nothing consumed.

    Args:
        max_header_size: the largest version 2 header accepted, in octets
            (default 4096, at most 65551; a header that announces more is
            refused as soon as its length arrives). A version 1 line is at
            most 107 octets in any case (§2.1).

    Raises:
        LocalProtocolError: *max_header_size* out of range.
        TypeError: *max_header_size* is not an int.
    """

    __slots__ = ("_buffer", "_error", "_header", "_max_size")

    def __init__(self, *, max_header_size: int = DEFAULT_MAX_PROXY_HEADER_SIZE) -> None:
        self._max_size = _check_max_size(max_header_size)
        self._buffer = ReceiveBuffer()
        self._header: ProxyHeader | None = None
        self._error: str | None = None

    @property
    def max_header_size(self) -> int:
        """The largest version 2 header accepted."""
        return self._max_size

    @property
    def header(self) -> ProxyHeader | None:
        """The header once :meth:`next_event` returned it; None before."""
        return self._header

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer octets received from the peer; ``b""`` means the peer closed (EOF).

        Nothing is parsed here: call :meth:`next_event`.

        Raises:
            RuntimeError: non-empty data after EOF.
        """
        self._buffer.feed(data)

    def next_event(self) -> ProxyHeader | NeedData | Paused:
        """Parse the header, if it has arrived whole.

        Returns:
            the :class:`ProxyHeader` (once); ``NEED_DATA`` while only part of it
            is buffered (read more: see :attr:`read_size_hint`); ``PAUSED`` on
            every call after the header was returned (nothing more is parsed:
            the rest belongs to the real protocol, in :attr:`trailing_data`).

        Raises:
            RemoteProtocolError: the octets are not a valid PROXY header (the
                message says why, and what was expected), the header is larger
                than ``max_header_size``, or the peer closed before the header
                was complete. The reader is then broken: every later call
                raises again. ``reply_hint`` is ``None``: the PROXY protocol
                has no reply; close the connection.
        """
        if self._header is not None:
            return PAUSED
        if self._error is not None:
            raise RemoteProtocolError(f"the PROXY header reader failed earlier: {self._error}")
        buffer = self._buffer
        try:
            result = read_header(buffer.data, self._max_size)
            if isinstance(result, int):
                if not buffer.eof:
                    return NEED_DATA
                have = len(buffer.data)
                if not have:
                    raise RemoteProtocolError("the peer closed the connection without sending a PROXY header")
                raise RemoteProtocolError(
                    f"the peer closed the connection in the middle of the PROXY header "
                    f"(received {have} octets, at least {result} more were needed)"
                )
            header = ProxyHeader(
                version=result.version,
                family=result.family,
                command=result.command,
                source=result.source,
                destination=result.destination,
                unix_source=result.unix_source,
                unix_destination=result.unix_destination,
                tlvs=result.tlvs,
            )
        except RemoteProtocolError as exc:
            self._error = exc.message
            raise
        except LocalProtocolError as exc:  # the parser let through what the header refuses: still the peer's fault
            self._error = exc.message
            raise RemoteProtocolError(exc.message) from exc
        buffer.consume(result.size)
        self._header = header
        return header

    @property
    def trailing_data(self) -> tuple[bytes, bool]:
        """``(octets, eof_seen)``: everything received and not consumed as the header.

        After the header was returned, these are exactly the octets that came
        after it: the first octets of the real protocol. Before, they are
        everything buffered so far.
        """
        return self._buffer.snapshot()

    @property
    def read_size_hint(self) -> int:
        """How many octets can be read without reading past the header.

        While :meth:`next_event` returns ``NEED_DATA``, a lower bound (at least
        1) on the octets the header still needs: for a version 1 line, the
        fewest that could complete what has arrived, so a line arrives in a
        few reads; for version 2, 15, then 1, then the rest of the length.
        ``0`` once the header is buffered whole or was returned, after EOF
        and after an error; ``1`` when the buffered octets are already
        invalid but :meth:`next_event` has not reported it yet.
        """
        buffer = self._buffer
        if self._header is not None or self._error is not None or buffer.eof:
            return 0
        try:
            result = read_header(buffer.data, self._max_size)
        except RemoteProtocolError:
            return 1
        return result if isinstance(result, int) else 0

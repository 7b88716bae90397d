"""SOCKS5 wire format (RFC 1928): one reader and one writer per message.

Readers look at the start of the receive buffer and return either
``(event, octets consumed)`` or, when the buffer holds only part of the
message, the total number of octets the message needs *so far as can be told*
(that number is also the read-size hint). Fixed octets are checked the moment
they arrive, so a TLS ClientHello or an HTTP request sent to a SOCKS port fails
on its first byte. Readers raise only :class:`RemoteProtocolError`.

Every SOCKS5 message is at most 4 + 1 + 255 + 2 = 262 octets (RFC 1929 requests
at most 513), so re-reading a partial message after each new segment costs a
bounded amount: the total work stays linear in the bytes received.

Speed: readers build events with the ``parsed_*`` builders of
:mod:`._socks5_events`, which skip the constructors' conversions (the octets
were checked here), and map octets to enum members by table lookups.
"""

from __future__ import annotations

import ipaddress
from typing import Final

from ._address import Address, Host, checked_domain
from ._codes import AddressType, AuthMethod, Command, ReplyCode, describe_reply
from ._errors import LocalProtocolError, RemoteProtocolError
from ._rfc1929 import UsernamePasswordReply, UsernamePasswordRequest, encode_auth_reply, encode_auth_request
from ._socks5_events import (
    CommandReply,
    CommandRequest,
    Greeting,
    MethodSelection,
    Socks5Event,
    parsed_greeting,
    parsed_reply,
    parsed_request,
    parsed_selection,
)
from ._util import remember

__all__ = [
    "SOCKS5_VERSION",
    "describe_failed_reply",
    "encode_address",
    "encode_event",
    "parse_address",
    "parse_greeting",
    "parse_method_selection",
    "parse_reply",
    "parse_request",
]

SOCKS5_VERSION: Final = 0x05
"""VER of every SOCKS5 message (RFC 1928 §3)."""

_UNSUPPORTED_ATYP: Final = CommandReply(code=ReplyCode.ADDRESS_TYPE_NOT_SUPPORTED)
_UNSUPPORTED_COMMAND: Final = CommandReply(code=ReplyCode.COMMAND_NOT_SUPPORTED)
_GENERAL_FAILURE: Final = CommandReply(code=ReplyCode.GENERAL_FAILURE)
_NO_ACCEPTABLE: Final = MethodSelection(method=AuthMethod.NO_ACCEPTABLE)

# Enum members are slow to look up on their class (EnumType.__getattr__): read them once.
_IPV4: Final = AddressType.IPV4
_DOMAIN: Final = AddressType.DOMAIN
_IPV6: Final = AddressType.IPV6
_SUCCEEDED: Final = ReplyCode.SUCCEEDED
_COMMAND_OF_OCTET: Final = {int(command): command for command in Command}
_IPv4Address = ipaddress.IPv4Address
_IPv6Address = ipaddress.IPv6Address
_from_bytes = int.from_bytes
_new = object.__new__
_set = object.__setattr__

# Every possible MethodSelection, by its METHOD octet (events are immutable: one of each).
_SELECTION_OF_OCTET: Final = tuple([parsed_selection(octet) for octet in range(256)])

# IPv4 hosts already seen, by their 32-bit value: a client hears the same few
# BND.ADDRs again and again, and an IPv4Address is immutable, so one is shared.
# Bounded: emptied when full.
_IPV4_HOSTS: Final[dict[int, ipaddress.IPv4Address]] = {}
_IPV4_HOSTS_MAX: Final = 1024


def _ipv4_host(packed: int) -> ipaddress.IPv4Address:
    return remember(_IPV4_HOSTS, packed, _IPv4Address(packed), _IPV4_HOSTS_MAX)


def encode_address(address: Address) -> bytes:
    """ATYP, the address (a domain after its length octet) and the port (RFC 1928 §4-5)."""
    host = address.host
    port = address.port.to_bytes(2, "big")
    if isinstance(host, bytes):
        return bytes((_DOMAIN, len(host))) + host + port
    if isinstance(host, _IPv4Address):
        return b"\x01" + host.packed + port
    return b"\x04" + host.packed + port


def parse_address(buf: bytes | bytearray, start: int) -> tuple[Address, int] | int:
    """Read ATYP ADDR PORT at ``buf[start:]``.

    Returns:
        ``(address, end offset)``, or the total length of ``buf`` needed so far.

    Raises:
        RemoteProtocolError: an unknown ATYP (hint: REP 0x08), a zero-length or
            otherwise invalid domain name.
    """
    have = len(buf)
    if have <= start:
        return start + 1
    atyp = buf[start]
    if atyp == _IPV4:
        end = start + 1 + 4 + 2
        if have < end:
            return end
        packed = _from_bytes(buf[start + 1 : start + 5], "big")
        host: Host | None = _IPV4_HOSTS.get(packed)
        if host is None:
            host = _ipv4_host(packed)
    elif atyp == _DOMAIN:
        if have <= start + 1:
            return start + 2
        length = buf[start + 1]
        if length == 0:
            raise RemoteProtocolError("domain name of length 0 (RFC 1928 §5 requires 1 to 255 octets)",
                                      reply_hint=_GENERAL_FAILURE)
        end = start + 2 + length + 2
        if have < end:
            return end
        try:
            host = checked_domain(bytes(buf[start + 2 : start + 2 + length]))
        except LocalProtocolError as exc:
            raise RemoteProtocolError(f"invalid address: {exc.message}", reply_hint=_GENERAL_FAILURE) from None
    elif atyp == _IPV6:
        end = start + 1 + 16 + 2
        if have < end:
            return end
        host = _IPv6Address(bytes(buf[start + 1 : start + 17]))
    else:
        raise RemoteProtocolError(
            f"unknown address type 0x{atyp:02x}; RFC 1928 §5 defines 0x01 (IPv4), 0x03 (domain), 0x04 (IPv6)",
            reply_hint=_UNSUPPORTED_ATYP,
        )
    address = _new(Address)  # trusted_address, inlined: the octets were checked above
    _set(address, "host", host)
    _set(address, "port", (buf[end - 2] << 8) | buf[end - 1])
    return address, end


def _bad_version(buf: bytes | bytearray, what: str, reply_hint: object) -> RemoteProtocolError:
    return RemoteProtocolError(
        f"{what} starts with 0x{buf[0]:02x}, expected SOCKS version 0x05{_looks_like(buf[0])}",
        reply_hint=reply_hint,
    )


def _looks_like(first: int) -> str:
    if first == 0x04:
        return " (this looks like SOCKS4)"
    if first == 0x16:
        return " (this looks like a TLS handshake)"
    if 0x41 <= first <= 0x5A:
        return " (this looks like HTTP)"
    return ""


# Each reader checks VER the moment it arrives: ``buf and buf[0] != 5`` inline
# (no call on the usual path), then ``_bad_version`` builds the error.


def parse_greeting(buf: bytearray) -> tuple[Greeting, int] | int:
    """VER NMETHODS METHODS (RFC 1928 §3)."""
    if buf and buf[0] != SOCKS5_VERSION:
        raise _bad_version(buf, "the greeting", None)
    if len(buf) < 2:
        return 2
    count = buf[1]
    if count == 0:
        raise RemoteProtocolError("the greeting offers no methods (NMETHODS is 0)", reply_hint=_NO_ACCEPTABLE)
    end = 2 + count
    if len(buf) < end:
        return end
    return parsed_greeting(buf[2:end]), end


def parse_method_selection(buf: bytearray) -> tuple[MethodSelection, int] | int:
    """VER METHOD (RFC 1928 §3)."""
    if buf and buf[0] != SOCKS5_VERSION:
        raise _bad_version(buf, "the method selection", None)
    if len(buf) < 2:
        return 2
    return _SELECTION_OF_OCTET[buf[1]], 2


def parse_request(buf: bytearray) -> tuple[CommandRequest, int] | int:
    """VER CMD RSV ATYP DST.ADDR DST.PORT (RFC 1928 §4)."""
    if buf and buf[0] != SOCKS5_VERSION:
        raise _bad_version(buf, "the request", _GENERAL_FAILURE)
    have = len(buf)
    if have >= 2 and buf[1] not in _COMMAND_OF_OCTET:
        raise RemoteProtocolError(
            f"unknown command 0x{buf[1]:02x}; RFC 1928 §4 defines 0x01 CONNECT, 0x02 BIND, 0x03 UDP ASSOCIATE",
            reply_hint=_UNSUPPORTED_COMMAND,
        )
    if have >= 3 and buf[2] != 0:
        raise RemoteProtocolError(f"reserved octet of the request is 0x{buf[2]:02x}, must be 0x00",
                                  reply_hint=_GENERAL_FAILURE)
    if have < 3:
        return 3 + 1
    parsed = parse_address(buf, 3)
    if isinstance(parsed, int):
        return parsed
    address, end = parsed
    return parsed_request(_COMMAND_OF_OCTET[buf[1]], address), end


def parse_reply(buf: bytearray, *, eof: bool) -> tuple[CommandReply, int] | int:
    """VER REP RSV ATYP BND.ADDR BND.PORT (RFC 1928 §6).

    A failure reply is reported with its REP even when the rest of it is
    malformed, or truncated by the server closing the connection (*eof*): the
    code is what the caller needs, and servers in the field send such replies.
    Its ``bound`` is then :data:`UNSPECIFIED_ADDRESS`; a malformed address
    consumes VER REP RSV ATYP only, a truncated reply everything received.
    """
    if buf and buf[0] != SOCKS5_VERSION:
        raise _bad_version(buf, "the reply", None)
    have = len(buf)
    # Ask for VER REP RSV ATYP and the address's first octet at once: every whole
    # reply is longer (8 octets at least), and those five give its exact length.
    if have < 2:
        return 5
    code = buf[1]
    if code == _SUCCEEDED:
        if have >= 3 and buf[2] != 0:
            raise RemoteProtocolError(f"reserved octet of the reply is 0x{buf[2]:02x}, must be 0x00")
        if have < 3:
            return 5
        parsed = parse_address(buf, 3)
        if isinstance(parsed, int):
            return parsed
        reply = _new(CommandReply)  # parsed_reply, inlined on the usual path
        _set(reply, "code", _SUCCEEDED)
        _set(reply, "bound", parsed[0])
        return reply, parsed[1]
    # A failure: the code is known already; the rest only has to be skipped.
    try:
        parsed = parse_address(buf, 3) if have >= 3 else 5
    except RemoteProtocolError:
        # Bad ATYP or address: consume VER REP RSV ATYP (a fixed length, so what is
        # left in trailing_data does not depend on how the bytes were split).
        return parsed_reply(code), 4
    if isinstance(parsed, int):
        return (parsed_reply(code), have) if eof else parsed
    return parsed_reply(code, parsed[0]), parsed[1]


def describe_failed_reply(reply: CommandReply) -> str:
    """``"connection refused (REP 0x05)"``."""
    return f"{describe_reply(reply.code)} (REP 0x{reply.code:02x})"


def encode_event(event: Socks5Event) -> bytes:
    """The octets that carry *event* (:class:`ConnectionClosed` has none; ``send()`` handles it)."""
    # The event classes are final: an identity test of type() per class, cheapest first.
    if type(event) is CommandRequest:
        return bytes((SOCKS5_VERSION, event.command, 0)) + encode_address(event.address)
    if type(event) is Greeting:
        return bytes((SOCKS5_VERSION, len(event.methods), *event.methods))
    if type(event) is UsernamePasswordRequest:
        return encode_auth_request(event)
    if type(event) is MethodSelection:
        return bytes((SOCKS5_VERSION, event.method))
    if type(event) is CommandReply:
        return bytes((SOCKS5_VERSION, event.code, 0)) + encode_address(event.bound)
    if type(event) is UsernamePasswordReply:
        return encode_auth_reply(event)
    raise TypeError(f"not an encodable SOCKS5 event: {event!r}")

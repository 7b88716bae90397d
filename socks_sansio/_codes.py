"""Wire codes of SOCKS5 (RFC 1928), RFC 1929 and SOCKS4, with the sections that define them.

Codes that arrive from a peer are plain integers 0-255; these enums only name
the known ones. Converters in the event classes turn a known integer into its
enum member and keep any other integer as it is, so an unknown code never
raises by itself.
"""

from __future__ import annotations

import enum
from typing import cast

__all__ = ["AddressType", "AuthMethod", "Command", "ReplyCode", "Socks4ReplyCode", "octet_table"]


class AuthMethod(enum.IntEnum):
    """SOCKS5 authentication methods (RFC 1928 §3; IANA "SOCKS Methods")."""

    NO_AUTH = 0x00
    """X'00' NO AUTHENTICATION REQUIRED."""
    GSSAPI = 0x01
    """X'01' GSSAPI (RFC 1961). Recognised, but not implemented by socks-sansio."""
    USERNAME_PASSWORD = 0x02
    """X'02' USERNAME/PASSWORD (RFC 1929)."""
    NO_ACCEPTABLE = 0xFF
    """X'FF' NO ACCEPTABLE METHODS: the server refuses every offered method."""


class Command(enum.IntEnum):
    """SOCKS5 request commands (RFC 1928 §4). SOCKS4 uses CONNECT and BIND with the same values."""

    CONNECT = 0x01
    BIND = 0x02
    UDP_ASSOCIATE = 0x03


class AddressType(enum.IntEnum):
    """SOCKS5 address types, ATYP (RFC 1928 §5)."""

    IPV4 = 0x01
    DOMAIN = 0x03
    IPV6 = 0x04


class ReplyCode(enum.IntEnum):
    """SOCKS5 reply field REP (RFC 1928 §6)."""

    SUCCEEDED = 0x00
    GENERAL_FAILURE = 0x01
    CONNECTION_NOT_ALLOWED = 0x02
    NETWORK_UNREACHABLE = 0x03
    HOST_UNREACHABLE = 0x04
    CONNECTION_REFUSED = 0x05
    TTL_EXPIRED = 0x06
    COMMAND_NOT_SUPPORTED = 0x07
    ADDRESS_TYPE_NOT_SUPPORTED = 0x08

    @property
    def description(self) -> str:
        """The RFC's wording for this reply."""
        return _REPLY_TEXT[self]


_REPLY_TEXT = {
    ReplyCode.SUCCEEDED: "succeeded",
    ReplyCode.GENERAL_FAILURE: "general SOCKS server failure",
    ReplyCode.CONNECTION_NOT_ALLOWED: "connection not allowed by ruleset",
    ReplyCode.NETWORK_UNREACHABLE: "network unreachable",
    ReplyCode.HOST_UNREACHABLE: "host unreachable",
    ReplyCode.CONNECTION_REFUSED: "connection refused",
    ReplyCode.TTL_EXPIRED: "TTL expired",
    ReplyCode.COMMAND_NOT_SUPPORTED: "command not supported",
    ReplyCode.ADDRESS_TYPE_NOT_SUPPORTED: "address type not supported",
}


class Socks4ReplyCode(enum.IntEnum):
    """SOCKS4 reply field CD (SOCKS4 protocol, "CD is the result code")."""

    GRANTED = 90
    """Request granted."""
    REJECTED = 91
    """Request rejected or failed."""
    NO_IDENTD = 92
    """Rejected: the SOCKS server cannot connect to identd on the client."""
    IDENTD_MISMATCH = 93
    """Rejected: the client program and identd report different user-ids."""

    @property
    def description(self) -> str:
        """The protocol document's wording for this reply."""
        return _SOCKS4_REPLY_TEXT[self]


_SOCKS4_REPLY_TEXT = {
    Socks4ReplyCode.GRANTED: "request granted",
    Socks4ReplyCode.REJECTED: "request rejected or failed",
    Socks4ReplyCode.NO_IDENTD: "request rejected: the server cannot reach identd on the client",
    Socks4ReplyCode.IDENTD_MISMATCH: "request rejected: identd reports a different user-id",
}


def describe_reply(code: int) -> str:
    """Human text for a SOCKS5 REP value, known or not."""
    try:
        return ReplyCode(code).description
    except ValueError:
        return f"unassigned reply code 0x{code:02x}"


def describe_socks4_reply(code: int) -> str:
    """Human text for a SOCKS4 CD value, known or not."""
    try:
        return Socks4ReplyCode(code).description
    except ValueError:
        return f"unknown SOCKS4 reply code {code}"


def as_known(enum_type: type[enum.IntEnum], value: int) -> int:
    """Return the enum member for *value* if it has one, else *value* unchanged."""
    # The lookup table behind enum_type(value), without the exception for unknown values.
    return cast(int, enum_type._value2member_map_.get(value, value))


def octet_table(enum_type: type[enum.IntEnum]) -> tuple[int, ...]:
    """``as_known(enum_type, octet)`` for every octet 0-255, indexed by the octet.

    Parsers index it with a received octet: one tuple lookup instead of a call.
    """
    return tuple(as_known(enum_type, octet) for octet in range(256))

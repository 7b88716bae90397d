"""RFC 1929 username/password authentication, the sub-negotiation inside SOCKS5.

After a server selects method X'02', the client sends

    +----+------+----------+------+----------+
    |VER | ULEN |  UNAME   | PLEN |  PASSWD  |
    +----+------+----------+------+----------+
    | 1  |  1   | 1 to 255 |  1   | 1 to 255 |

with VER X'01', and the server answers VER STATUS, STATUS X'00' meaning
success; on any other status the server MUST close the connection (RFC 1929 §2).

Choices made here:

* The version byte is X'01' on everything we send. Some servers answer with
  X'05'; a client may opt in to tolerate that (``lenient_auth_version``).
* An empty password (PLEN 0) is accepted, both ways: curl sends one for
  ``--proxy-user name:``, and refusing it at the parser would turn a credentials
  decision into a protocol error. The server's credential check decides.
  The username must hold 1 to 255 octets, as the RFC says.
"""

from __future__ import annotations

from typing import Final, final

import attrs

from ._errors import RemoteProtocolError
from ._validators import check_length, to_bytes

__all__ = [
    "AUTH_VERSION",
    "UsernamePasswordReply",
    "UsernamePasswordRequest",
    "encode_auth_reply",
    "encode_auth_request",
    "parse_auth_reply",
    "parse_auth_request",
]

AUTH_VERSION: Final = 0x01
"""VER of the sub-negotiation (RFC 1929 §2)."""

_SOCKS5_VERSION: Final = 0x05


_new = object.__new__
_set = object.__setattr__


def _username(value: object) -> bytes:
    # Converters check as they convert (no validators), calling out only for errors.
    octets = value.encode() if type(value) is str else to_bytes(value)
    if not 0 < len(octets) <= 255:
        check_length("username", octets, 1, 255)  # raises
    return octets


def _password(value: object) -> bytes:
    octets = value.encode() if type(value) is str else to_bytes(value)
    if len(octets) > 255:
        check_length("password", octets, 0, 255)  # raises
    return octets


def _success(value: bool) -> bool:
    if type(value) is not bool:
        raise TypeError(f"success must be a bool, not {type(value).__name__}")
    return value


@final
@attrs.frozen(kw_only=True, init=False)
class UsernamePasswordRequest:
    """Client → server: credentials (RFC 1929 §2).

    Args:
        username: 1 to 255 octets; ``str`` is encoded as UTF-8.
        password: 0 to 255 octets; ``str`` is encoded as UTF-8. Hidden from ``repr``.
    """

    username: bytes
    password: bytes = attrs.field(repr=False)

    def __init__(self, *, username: object, password: object) -> None:
        # Written by hand (attrs writes the rest): the converters, one call each.
        _set(self, "username", _username(username))
        _set(self, "password", _password(password))


@final
@attrs.frozen(kw_only=True)
class UsernamePasswordReply:
    """Server → client: whether the credentials were accepted (RFC 1929 §2).

    On the wire ``success`` is STATUS X'00'; a failure is sent as X'01' and any
    non-zero STATUS received is a failure.
    """

    success: bool = attrs.field(converter=_success)


# The parsers build events from octets they have checked: object.__new__ plus
# the slots, as attrs' own __init__ sets them, skipping the converters.
_SUCCESS: Final = _new(UsernamePasswordReply)
_set(_SUCCESS, "success", True)
_FAILURE: Final = _new(UsernamePasswordReply)
_set(_FAILURE, "success", False)
_SUCCESS_OCTETS: Final = bytes((AUTH_VERSION, 0x00))
_FAILURE_OCTETS: Final = bytes((AUTH_VERSION, 0x01))


def encode_auth_request(event: UsernamePasswordRequest) -> bytes:
    """VER ULEN UNAME PLEN PASSWD."""
    return (
        bytes((AUTH_VERSION, len(event.username)))
        + event.username
        + bytes((len(event.password),))
        + event.password
    )


def encode_auth_reply(event: UsernamePasswordReply) -> bytes:
    """VER STATUS."""
    return _SUCCESS_OCTETS if event.success else _FAILURE_OCTETS


def parse_auth_request(buf: bytearray) -> tuple[UsernamePasswordRequest, int] | int:
    """Read one request from the start of *buf*.

    Returns:
        ``(event, octets consumed)``, or the total number of octets the message
        needs when *buf* holds only part of it.

    Raises:
        RemoteProtocolError: a wrong version byte (checked as soon as it arrives).
    """
    have = len(buf)
    if have and buf[0] != AUTH_VERSION:
        raise RemoteProtocolError(_version_message(buf[0]), reply_hint=_FAILURE)
    if have < 2:
        return 2
    ulen = buf[1]
    plen_at = 2 + ulen
    if have <= plen_at:
        return plen_at + 1
    end = plen_at + 1 + buf[plen_at]
    if have < end:
        return end
    if not ulen:
        raise RemoteProtocolError("username must be 1 to 255 octets long, got 0")
    event = _new(UsernamePasswordRequest)
    _set(event, "username", bytes(buf[2:plen_at]))
    _set(event, "password", bytes(buf[plen_at + 1 : end]))
    return event, end


def parse_auth_reply(buf: bytearray, *, lenient_version: bool) -> tuple[UsernamePasswordReply, int] | int:
    """Read VER STATUS; with *lenient_version*, VER X'05' is accepted too.

    Raises:
        RemoteProtocolError: a wrong version byte.
    """
    if len(buf) < 2:
        if buf:
            _check_reply_version(buf[0], lenient_version)
        return 2
    if buf[0] != AUTH_VERSION:
        _check_reply_version(buf[0], lenient_version)
    return (_FAILURE if buf[1] else _SUCCESS), 2


def _check_reply_version(version: int, lenient: bool) -> None:
    if version == AUTH_VERSION or (lenient and version == _SOCKS5_VERSION):
        return
    hint = " (this server sends 0x05; pass lenient_auth_version=True to accept it)" if version == 5 else ""
    raise RemoteProtocolError(_version_message(version) + hint)


def _version_message(version: int) -> str:
    return f"username/password sub-negotiation version must be 0x01 (RFC 1929), got 0x{version:02x}"

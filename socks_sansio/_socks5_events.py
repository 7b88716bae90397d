"""Events of the SOCKS5 conversation (RFC 1928).

Every event is an immutable, keyword-only value. The event a client passes to
``send()`` is exactly the event the server's ``next_event()`` returns, and the
other way round. Don't subclass these.

The RFC 1929 username/password events live in :mod:`._rfc1929`; they are part
of the same conversation and of the :data:`Socks5Event` union.

Constructors validate everything, through converters that check as they
convert (one call per field, with a fast path for enum members). The
``parsed_*`` builders at the end are for the parsers only: the same values,
built without the checks the parser has already made.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final, final

import attrs

from ._address import Address
from ._codes import AuthMethod, Command, ReplyCode, octet_table
from ._errors import LocalProtocolError
from ._rfc1929 import UsernamePasswordReply, UsernamePasswordRequest
from ._validators import check_octet

__all__ = [
    "SOCKS5_EVENT_TYPES",
    "UNSPECIFIED_ADDRESS",
    "CommandReply",
    "CommandRequest",
    "ConnectionClosed",
    "Greeting",
    "MethodSelection",
    "Socks5Event",
    "parsed_greeting",
    "parsed_reply",
    "parsed_request",
    "parsed_selection",
]

_new = object.__new__
_set = object.__setattr__

UNSPECIFIED_ADDRESS: Final = Address(ipaddress.IPv4Address(0), 0)
"""``0.0.0.0:0``: the bound address of a reply that carries none worth reporting."""


# Converters check as they convert (one call per field, no validators), with a
# fast path for the values callers usually pass (enum members need no conversion).

_METHOD_OF_OCTET: Final = octet_table(AuthMethod)
_REPLY_CODE_OF_OCTET: Final = octet_table(ReplyCode)
_SUCCEEDED: Final = ReplyCode.SUCCEEDED  # enum members are slow to look up on their class: read once


def _method(value: int) -> int:
    if type(value) is int and 0 <= value <= 0xFF:
        return _METHOD_OF_OCTET[value]
    check_octet("method", value)
    return value


def _methods(values: Iterable[int]) -> tuple[int, ...]:
    if type(values) is tuple and 1 <= len(values) <= 255:
        for value in values:
            if type(value) is not AuthMethod:
                break
        else:
            return values  # AuthMethod members only: nothing to convert or check
    if isinstance(values, int):
        raise TypeError("methods must be a sequence of ints, e.g. (AuthMethod.NO_AUTH,)")
    methods = tuple([_METHOD_OF_OCTET[v] if type(v) is int and 0 <= v <= 0xFF else v for v in values])
    if not 1 <= len(methods) <= 255:
        raise LocalProtocolError(f"a greeting offers 1 to 255 methods, got {len(methods)}")
    for method in methods:
        check_octet("method", method)
    return methods


@final
@attrs.frozen(kw_only=True, init=False)
class Greeting:
    """Client → server: the authentication methods the client offers (RFC 1928 §3).

    Args:
        methods: 1 to 255 method codes, each 0-255. Known codes become
            :class:`AuthMethod` members; unknown codes are kept as ints.
    """

    methods: tuple[int, ...]

    def __init__(self, *, methods: Iterable[int]) -> None:
        # Written by hand (attrs writes the rest): the converter, one call (its fast
        # path takes a tuple of AuthMethod members, the usual value, as it is).
        _set(self, "methods", _methods(methods))


@final
@attrs.frozen(kw_only=True)
class MethodSelection:
    """Server → client: the method the server chose (RFC 1928 §3).

    ``AuthMethod.NO_ACCEPTABLE`` (0xFF) refuses the client; the client must close.
    """

    method: int = attrs.field(converter=_method)


def _command(value: object) -> Command:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"command must be a Command, not {type(value).__name__}")
    try:
        return Command(value)
    except ValueError:
        raise LocalProtocolError(f"unknown SOCKS5 command 0x{value:02x}; RFC 1928 §4 defines 1, 2 and 3") from None


def _address(value: Address) -> Address:
    if type(value) is not Address:
        raise TypeError(f"address must be an Address, not {type(value).__name__}")
    return value


@final
@attrs.frozen(kw_only=True, init=False)
class CommandRequest:
    """Client → server: CONNECT, BIND or UDP ASSOCIATE with its address (RFC 1928 §4).

    For CONNECT the address is the target. For BIND it is the host the client
    expects the incoming connection from. For UDP ASSOCIATE it is the address the
    client will send datagrams from (``0.0.0.0:0`` when unknown).
    """

    command: Command
    address: Address

    def __init__(self, *, command: object, address: Address) -> None:
        # Written by hand (attrs writes the rest): the usual values cost no call.
        _set(self, "command", command if type(command) is Command else _command(command))
        _set(self, "address", address if type(address) is Address else _address(address))


def _reply_code(value: int) -> int:
    if type(value) is int and 0 <= value <= 0xFF:
        return _REPLY_CODE_OF_OCTET[value]
    check_octet("reply code", value)
    return value


@final
@attrs.frozen(kw_only=True)
class CommandReply:
    """Server → client: the outcome of a request (RFC 1928 §6).

    ``code`` 0 is success; any other value (known codes become
    :class:`ReplyCode` members) is a failure, after which the server closes.
    ``bound`` is BND.ADDR/BND.PORT: for CONNECT the server's outgoing address,
    for BIND the listening address (first reply) then the connecting peer (second
    reply), for UDP ASSOCIATE the relay address to send datagrams to. Its address
    type need not match the request's. A failure reply whose address is missing or
    malformed is reported with ``bound`` set to :data:`UNSPECIFIED_ADDRESS`.
    """

    code: int = attrs.field(converter=_reply_code)
    bound: Address = attrs.field(default=UNSPECIFIED_ADDRESS, converter=_address)

    @property
    def succeeded(self) -> bool:
        """True for REP 0x00."""
        return self.code == _SUCCEEDED


@final
@attrs.frozen
class ConnectionClosed:
    """Either direction: the peer closed the connection (EOF) at a message boundary."""


Socks5Event = (
    Greeting
    | MethodSelection
    | UsernamePasswordRequest
    | UsernamePasswordReply
    | CommandRequest
    | CommandReply
    | ConnectionClosed
)
"""Every event a :class:`Socks5Connection` sends or receives."""

SOCKS5_EVENT_TYPES: Final = frozenset(
    {Greeting, MethodSelection, UsernamePasswordRequest, UsernamePasswordReply, CommandRequest, CommandReply,
     ConnectionClosed}
)
"""The classes of :data:`Socks5Event`, for a check by ``type(event) in`` (cheaper than isinstance of a union)."""


# The parsers build events from octets they have checked, so they skip the
# converters: object.__new__ plus the slots, as attrs' own __init__ sets them.


def parsed_greeting(octets: bytes | bytearray) -> Greeting:
    """A Greeting offering the method *octets* (1 to 255 of them)."""
    event = _new(Greeting)
    _set(event, "methods", tuple([_METHOD_OF_OCTET[octet] for octet in octets]))
    return event


def parsed_selection(octet: int) -> MethodSelection:
    """A MethodSelection of the method *octet*."""
    event = _new(MethodSelection)
    _set(event, "method", _METHOD_OF_OCTET[octet])
    return event


def parsed_request(command: Command, address: Address) -> CommandRequest:
    """A CommandRequest of a known *command*."""
    event = _new(CommandRequest)
    _set(event, "command", command)
    _set(event, "address", address)
    return event


def parsed_reply(octet: int, bound: Address = UNSPECIFIED_ADDRESS) -> CommandReply:
    """A CommandReply with the REP *octet*."""
    event = _new(CommandReply)
    _set(event, "code", _REPLY_CODE_OF_OCTET[octet])
    _set(event, "bound", bound)
    return event

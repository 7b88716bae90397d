"""Events of the SOCKS5 conversation (RFC 1928).

Every event is an immutable, keyword-only value. The event a client passes to
``send()`` is exactly the event the server's ``next_event()`` returns, and the
other way round. Don't subclass these.

The RFC 1929 username/password events live in :mod:`._rfc1929`; they are part
of the same conversation and of the :data:`Socks5Event` union.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final, final

import attrs

from ._address import Address
from ._codes import AuthMethod, Command, ReplyCode, as_known
from ._errors import LocalProtocolError
from ._rfc1929 import UsernamePasswordReply, UsernamePasswordRequest
from ._validators import check_octet

__all__ = [
    "UNSPECIFIED_ADDRESS",
    "CommandReply",
    "CommandRequest",
    "ConnectionClosed",
    "Greeting",
    "MethodSelection",
    "Socks5Event",
]

UNSPECIFIED_ADDRESS: Final = Address(ipaddress.IPv4Address(0), 0)
"""``0.0.0.0:0``: the bound address of a reply that carries none worth reporting."""


def _method(value: int) -> int:
    return as_known(AuthMethod, value) if type(value) is int else value


def _methods(values: Iterable[int]) -> tuple[int, ...]:
    if isinstance(values, int):
        raise TypeError("methods must be a sequence of ints, e.g. (AuthMethod.NO_AUTH,)")
    return tuple(_method(v) for v in values)


def _check_methods(_i: object, _a: object, methods: tuple[int, ...]) -> None:
    if not 1 <= len(methods) <= 255:
        raise LocalProtocolError(f"a greeting offers 1 to 255 methods, got {len(methods)}")
    for method in methods:
        check_octet("method", method)


@final
@attrs.frozen(kw_only=True)
class Greeting:
    """Client → server: the authentication methods the client offers (RFC 1928 §3).

    Args:
        methods: 1 to 255 method codes, each 0-255. Known codes become
            :class:`AuthMethod` members; unknown codes are kept as ints.
    """

    methods: tuple[int, ...] = attrs.field(converter=_methods, validator=_check_methods)


@final
@attrs.frozen(kw_only=True)
class MethodSelection:
    """Server → client: the method the server chose (RFC 1928 §3).

    ``AuthMethod.NO_ACCEPTABLE`` (0xFF) refuses the client; the client must close.
    """

    method: int = attrs.field(converter=_method, validator=lambda _i, _a, v: check_octet("method", v))


def _command(value: object) -> Command:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"command must be a Command, not {type(value).__name__}")
    try:
        return Command(value)
    except ValueError:
        raise LocalProtocolError(f"unknown SOCKS5 command 0x{value:02x}; RFC 1928 §4 defines 1, 2 and 3") from None


_check_address: Final = attrs.validators.instance_of(Address)


@final
@attrs.frozen(kw_only=True)
class CommandRequest:
    """Client → server: CONNECT, BIND or UDP ASSOCIATE with its address (RFC 1928 §4).

    For CONNECT the address is the target. For BIND it is the host the client
    expects the incoming connection from. For UDP ASSOCIATE it is the address the
    client will send datagrams from (``0.0.0.0:0`` when unknown).
    """

    command: Command = attrs.field(converter=_command)
    address: Address = attrs.field(validator=_check_address)


def _reply_code(value: int) -> int:
    return as_known(ReplyCode, value) if type(value) is int else value


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

    code: int = attrs.field(converter=_reply_code, validator=lambda _i, _a, v: check_octet("reply code", v))
    bound: Address = attrs.field(default=UNSPECIFIED_ADDRESS, validator=_check_address)

    @property
    def succeeded(self) -> bool:
        """True for REP 0x00."""
        return self.code == ReplyCode.SUCCEEDED


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

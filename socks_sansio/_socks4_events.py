"""Events of the SOCKS4 and SOCKS4a conversation.

SOCKS4 is described by Ying-Da Lee's "SOCKS: A protocol for TCP proxy across
firewalls" (no RFC); SOCKS4a by his extension "SOCKS 4A: A Simple Extension to
SOCKS 4 Protocol". Section names below refer to those two documents.

Every event is an immutable, keyword-only value, validated on construction:
the event a client passes to ``send()`` is exactly the event the server's
``next_event()`` returns, and the other way round. Don't subclass these.

One normalisation makes that symmetry hold for SOCKS4a. A host given as domain
octets that spell an IP literal (``b"10.0.0.1"``) is stored as the IP address
it spells: an IPv4 literal is then sent as DSTIP (plain SOCKS4, never as a 4a
HOSTNAME), and an IPv6 literal is refused, because SOCKS4 cannot carry IPv6.
So ``Socks4Request.address.host`` is always an :class:`~ipaddress.IPv4Address`
or a name that is not an IP literal, whichever side built the event.
"""

from __future__ import annotations

import ipaddress
from typing import Final, final

import attrs

from ._address import Address
from ._codes import Command, Socks4ReplyCode, as_known, describe_socks4_reply
from ._errors import LocalProtocolError
from ._socks5_events import UNSPECIFIED_ADDRESS, ConnectionClosed
from ._validators import check_octet, to_bytes

__all__ = ["ConnectionClosed", "Socks4Event", "Socks4Reply", "Socks4Request"]

_SOCKS4_COMMANDS: Final = (Command.CONNECT, Command.BIND)


def _command(value: object) -> Command:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"command must be a Command, not {type(value).__name__}")
    if value not in _SOCKS4_COMMANDS:
        raise LocalProtocolError(
            f"SOCKS4 has no command {value!r}; its CD is 1 (CONNECT) or 2 (BIND) "
            "(UDP ASSOCIATE needs SOCKS5)"
        )
    return Command(value)


def _literal(name: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address that domain octets *name* spell, if they spell one."""
    try:
        return ipaddress.ip_address(name.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None


def _address(value: object) -> Address:
    if not isinstance(value, Address):
        raise TypeError(f"address must be an Address, not {type(value).__name__}")
    host = value.host
    if isinstance(host, bytes):
        literal = _literal(host)
        if literal is not None:
            host = literal
    if isinstance(host, ipaddress.IPv6Address):
        raise LocalProtocolError(
            f"SOCKS4 cannot carry IPv6 (destination {value.authority}); use SOCKS5 or HTTP CONNECT"
        )
    if host is not value.host:
        return Address(host, value.port)
    return value


def _check_destination(_i: object, _a: object, address: Address) -> None:
    host = address.host
    if isinstance(host, ipaddress.IPv4Address) and host.packed[:3] == b"\0\0\0" and host.packed[3]:
        raise LocalProtocolError(
            f"destination {host} cannot be sent: SOCKS4a reserves 0.0.0.x (x != 0) to mean "
            "'a host name follows'"
        )


def _check_user_id(_i: object, _a: object, user_id: bytes) -> None:
    if 0 in user_id:
        raise LocalProtocolError("user_id must not contain a NUL octet (SOCKS4 ends USERID with NUL)")


@final
@attrs.frozen(kw_only=True)
class Socks4Request:
    """Client → server: CONNECT or BIND (SOCKS4 "CONNECT" and "BIND"; SOCKS4a).

    Args:
        command: ``Command.CONNECT`` or ``Command.BIND``.
        address: the destination. An IPv4 host is sent as DSTIP (SOCKS4); a
            domain name is sent as a SOCKS4a HOSTNAME after DSTIP 0.0.0.1. Domain
            octets that spell an IPv4 literal are stored as that IPv4 address
            (see the module docstring). For BIND it is the host the client
            expects the incoming connection from.
        user_id: USERID, any octets but NUL; ``str`` is encoded as UTF-8. Its length
            is not limited here; a server caps what it accepts (``Socks4Connection``'s
            ``max_field_size``, 1024 octets by default).

    Raises:
        LocalProtocolError: a command other than CONNECT or BIND; an IPv6
            destination (SOCKS4 cannot carry IPv6); an IPv4 destination of the
            form 0.0.0.x with x != 0 (SOCKS4a's marker); a NUL in *user_id*.
        TypeError: values of the wrong Python type.
    """

    command: Command = attrs.field(converter=_command)
    address: Address = attrs.field(converter=_address, validator=_check_destination)
    user_id: bytes = attrs.field(default=b"", converter=to_bytes, validator=_check_user_id)

    @property
    def is_socks4a(self) -> bool:
        """True when the destination is a name, sent with the SOCKS4a extension."""
        return self.address.is_domain


def _reply_code(value: int) -> int:
    return as_known(Socks4ReplyCode, value) if type(value) is int else value


def _check_bound(_i: object, _a: object, bound: object) -> None:
    if not isinstance(bound, Address):
        raise TypeError(f"bound must be an Address, not {type(bound).__name__}")
    if not isinstance(bound.host, ipaddress.IPv4Address):
        raise LocalProtocolError(
            f"a SOCKS4 reply carries an IPv4 address only (DSTIP), not {bound.authority}"
        )


@final
@attrs.frozen(kw_only=True)
class Socks4Reply:
    """Server → client: the outcome of a request (SOCKS4 "CD is the result code").

    ``code`` 90 grants the request; anything else (91-93 become
    :class:`Socks4ReplyCode` members, unknown values stay ints) is a failure,
    after which the server closes. ``bound`` is DSTPORT/DSTIP: ignored for
    CONNECT, and for BIND the listening address (first reply) and then the
    connecting peer (second reply).

    Args:
        code: CD, 0-255.
        bound: an IPv4 address and port; ``0.0.0.0:0`` by default.

    Raises:
        LocalProtocolError: a code outside 0-255; a *bound* that is not IPv4.
        TypeError: values of the wrong Python type.
    """

    code: int = attrs.field(converter=_reply_code, validator=lambda _i, _a, v: check_octet("reply code", v))
    bound: Address = attrs.field(default=UNSPECIFIED_ADDRESS, validator=_check_bound)

    @property
    def granted(self) -> bool:
        """True for CD 90, "request granted"."""
        return self.code == Socks4ReplyCode.GRANTED

    @property
    def description(self) -> str:
        """Human text with the code: ``"request rejected or failed (CD 91)"``."""
        return f"{describe_socks4_reply(self.code)} (CD {int(self.code)})"


Socks4Event = Socks4Request | Socks4Reply | ConnectionClosed
"""Every event a :class:`Socks4Connection` sends or receives."""

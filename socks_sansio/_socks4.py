"""``Socks4Connection``: one SOCKS4 / SOCKS4a conversation, either role.

The wire format (Ying-Da Lee, "SOCKS: A protocol for TCP proxy across
firewalls", and "SOCKS 4A: A Simple Extension to SOCKS 4 Protocol")::

    request  VN=4 | CD | DSTPORT (2) | DSTIP (4) | USERID | NUL [| HOSTNAME | NUL]
    reply    VN=0 | CD | DSTPORT (2) | DSTIP (4)

HOSTNAME is present (SOCKS4a) exactly when DSTIP is 0.0.0.x with x != 0.

This module holds the three layers SOCKS5 keeps in separate files, each small:

* the table (:class:`Socks4State`, :data:`TRANSITIONS`, :data:`SENDER`),
  which, after h11's ``_state.py``, knows nothing about our role;
* the readers and writers. A reader looks at the start of the receive buffer
  and returns ``(event, octets consumed)`` or the total number of octets
  needed so far (also the read-size hint). Fixed octets are checked as soon as
  they arrive, so a SOCKS5, TLS or HTTP client is refused on its first byte.
  Readers raise only :class:`RemoteProtocolError`;
* the connection, which remembers the request's command (a granted reply to
  BIND means a second reply follows).

Linear time. USERID and HOSTNAME end with NUL, so the request has no length to
read up front. Rescanning the buffer each time a segment arrives would cost
O(n²) for n one-octet segments; instead :class:`RequestProgress` remembers where
the NUL search stopped, and each octet is searched once. Independently, each
field is capped (``max_field_size``; a HOSTNAME also at 255 octets, the most a
domain name may have) and the error is raised the moment the cap is exceeded,
so a request never takes more than 8 + 2 * (cap + 1) octets of buffer and the
search never waits for a NUL that is not coming.
"""

from __future__ import annotations

import enum
import ipaddress
from typing import Final, final

from ._address import Address
from ._codes import Command, Socks4ReplyCode
from ._errors import LocalProtocolError, RemoteProtocolError
from ._machine import Machine
from ._socks4_events import ConnectionClosed, Socks4Event, Socks4Reply, Socks4Request
from ._util import CLIENT, SERVER, Role

__all__ = [
    "SENDER",
    "SOCKS4_REPLY_VERSION",
    "SOCKS4_VERSION",
    "TRANSITIONS",
    "Input",
    "RequestProgress",
    "Socks4Connection",
    "Socks4State",
    "classify",
    "encode_event",
    "parse_reply",
    "parse_request",
]

# -- the table ---------------------------------------------------------------


class Socks4State(enum.Enum):
    """Where a SOCKS4 conversation stands. Both ends agree on it."""

    # Members are singletons: identity hashing is correct, and much cheaper than Enum's.
    __hash__ = object.__hash__

    #: The client has to send its request (SOCKS4 "CONNECT" / "BIND").
    AWAIT_REQUEST = "AWAIT_REQUEST"
    #: The server has to reply to the request.
    AWAIT_REPLY = "AWAIT_REPLY"
    #: BIND was granted: the server listens and has to send the second reply
    #: when the expected host connects (SOCKS4 "BIND").
    AWAIT_BIND_PEER = "AWAIT_BIND_PEER"
    #: Terminal: CONNECT granted, or BIND's second reply granted; the connection carries the tunnel.
    TUNNEL = "TUNNEL"
    #: Terminal: the request was rejected or failed; the server closes the connection.
    MUST_CLOSE = "MUST_CLOSE"
    #: Terminal: one side closed the connection.
    CLOSED = "CLOSED"
    #: Terminal: a protocol error (ours or the peer's).
    ERROR = "ERROR"


class Input(enum.Enum):
    """What an event means for the conversation (the key into :data:`TRANSITIONS`)."""

    # Members are singletons: identity hashing is correct, and much cheaper than Enum's.
    __hash__ = object.__hash__

    REQUEST = enum.auto()
    CONNECT_GRANTED = enum.auto()
    BIND_GRANTED = enum.auto()
    REPLY_FAILED = enum.auto()


S = Socks4State
TRANSITIONS: Final[dict[tuple[Socks4State, Input], Socks4State]] = {
    (S.AWAIT_REQUEST, Input.REQUEST): S.AWAIT_REPLY,
    (S.AWAIT_REPLY, Input.CONNECT_GRANTED): S.TUNNEL,
    (S.AWAIT_REPLY, Input.BIND_GRANTED): S.AWAIT_BIND_PEER,
    (S.AWAIT_REPLY, Input.REPLY_FAILED): S.MUST_CLOSE,
    (S.AWAIT_BIND_PEER, Input.BIND_GRANTED): S.TUNNEL,
    (S.AWAIT_BIND_PEER, Input.REPLY_FAILED): S.MUST_CLOSE,
}
"""Every legal transition; a missing ``(state, input)`` pair is a protocol error."""

SENDER: Final[dict[Socks4State, Role]] = {
    S.AWAIT_REQUEST: CLIENT,
    S.AWAIT_REPLY: SERVER,
    S.AWAIT_BIND_PEER: SERVER,
}
"""Whose turn it is in each non-terminal state."""


def classify(event: Socks4Event, command: Command | None) -> Input | None:
    """The input *event* stands for, given the request's *command*; ``None`` for ConnectionClosed.

    A granted reply means BIND_GRANTED after a BIND request and CONNECT_GRANTED
    otherwise; before any request (*command* is ``None``) no reply is legal in
    the table, so either input is refused there.
    """
    if isinstance(event, Socks4Request):
        return Input.REQUEST
    if isinstance(event, Socks4Reply):
        if not event.granted:
            return Input.REPLY_FAILED
        return Input.BIND_GRANTED if command is Command.BIND else Input.CONNECT_GRANTED
    return None


# -- the wire ----------------------------------------------------------------

SOCKS4_VERSION: Final = 0x04
"""VN of a request (SOCKS4: "VN is the SOCKS protocol version number and should be 4")."""
SOCKS4_REPLY_VERSION: Final = 0x00
"""VN of a reply (SOCKS4: "VN is the version of the reply code and should be 0")."""

_HEADER: Final = 8  # VN CD DSTPORT(2) DSTIP(4), in requests and replies alike
_SOCKS4A_DSTIP: Final = b"\0\0\0\x01"  # SOCKS4a: 0.0.0.x with x != 0; we send x = 1
_MAX_HOSTNAME: Final = 255  # the longest domain name an Address holds (RFC 1035 §2.3.4, RFC 1928 §5)
_REJECTED: Final = Socks4Reply(code=Socks4ReplyCode.REJECTED)


class RequestProgress:
    """How far the NUL searches in the request at the start of the buffer have got.

    Valid while that request is being received (the buffer only grows); start a
    new one for each request.
    """

    __slots__ = ("searched", "user_id_end")

    def __init__(self) -> None:
        self.searched = _HEADER  # every octet before this offset is known not to end the current field
        self.user_id_end = -1  # offset of USERID's NUL, once found


def _looks_like(first: int) -> str:
    if first == 0x05:
        return " (this looks like SOCKS5)"
    if first == 0x16:
        return " (this looks like a TLS handshake)"
    if 0x41 <= first <= 0x5A:
        return " (this looks like HTTP)"
    return ""


def _find_nul(buf: bytearray, progress: RequestProgress, start: int, cap: int, field: str) -> int:
    """The offset of the NUL ending the field at *start*, or -1 while it has not arrived.

    Raises:
        RemoteProtocolError: more than *cap* octets arrived without a NUL.
    """
    limit = start + cap + 1  # the NUL is at most the (cap + 1)-th octet of the field
    nul = buf.find(0, progress.searched, limit)
    if nul >= 0:
        return nul
    if len(buf) >= limit:
        raise RemoteProtocolError(
            f"{field} is longer than the {cap} octets this server accepts (no NUL within {cap + 1} octets)",
            reply_hint=_REJECTED,
        )
    progress.searched = len(buf)
    return -1


def parse_request(
    buf: bytearray, progress: RequestProgress, *, max_field_size: int
) -> tuple[Socks4Request, int] | int:
    """VN CD DSTPORT DSTIP USERID NUL, then HOSTNAME NUL if DSTIP is 0.0.0.x, x != 0.

    Args:
        buf: the receive buffer; the request starts at offset 0.
        progress: where the NUL searches stopped on earlier calls for this request.
        max_field_size: the most octets USERID may hold, and HOSTNAME (which is
            also capped at 255).

    Returns:
        ``(event, octets consumed)``, or the total octets needed so far (one more
        than buffered while a NUL is awaited).

    Raises:
        RemoteProtocolError: VN is not 4 (hint: none, the peer does not speak
            SOCKS4); an unknown CD, a field over its cap, an empty or invalid
            HOSTNAME, an IPv6 HOSTNAME (hint: CD 91 for each).
    """
    have = len(buf)
    if have >= 1 and buf[0] != SOCKS4_VERSION:
        raise RemoteProtocolError(
            f"the request starts with 0x{buf[0]:02x}, expected SOCKS version 0x04{_looks_like(buf[0])}"
        )
    if have >= 2 and buf[1] not in (Command.CONNECT, Command.BIND):
        raise RemoteProtocolError(
            f"unknown SOCKS4 command {buf[1]}; CD must be 1 (CONNECT) or 2 (BIND)", reply_hint=_REJECTED
        )
    if have < _HEADER:
        return _HEADER + 1  # the header, then at least USERID's NUL
    if progress.user_id_end < 0:
        nul = _find_nul(buf, progress, _HEADER, max_field_size, "USERID")
        if nul < 0:
            return have + 1
        progress.user_id_end = nul
        progress.searched = nul + 1
    end = progress.user_id_end + 1
    host: ipaddress.IPv4Address | bytes
    if buf[4:7] == b"\0\0\0" and buf[7] != 0:  # SOCKS4a: a HOSTNAME follows
        nul = _find_nul(buf, progress, end, min(max_field_size, _MAX_HOSTNAME), "HOSTNAME")
        if nul < 0:
            return max(have + 1, end + 2)  # at least one octet of name, then NUL
        if nul == end:
            raise RemoteProtocolError(
                "SOCKS4a request has an empty HOSTNAME (DSTIP 0.0.0.x announces a host name)",
                reply_hint=_REJECTED,
            )
        host, end = bytes(buf[end:nul]), nul + 1
    else:
        host = ipaddress.IPv4Address(bytes(buf[4:8]))
    try:
        event = Socks4Request(
            command=Command(buf[1]),
            address=Address(host, (buf[2] << 8) | buf[3]),
            user_id=bytes(buf[_HEADER : progress.user_id_end]),
        )
    except LocalProtocolError as exc:
        raise RemoteProtocolError(f"invalid SOCKS4 request: {exc.message}", reply_hint=_REJECTED) from None
    return event, end


def parse_reply(buf: bytearray, *, eof: bool, lenient_version: bool) -> tuple[Socks4Reply, int] | int:
    """VN CD DSTPORT DSTIP: always 8 octets.

    A failure reply cut short by the server closing (*eof*) after VN CD is still
    reported with its CD, and ``bound`` ``0.0.0.0:0``: the code is what the
    caller needs.

    Args:
        buf: the receive buffer; the reply starts at offset 0.
        eof: the server has closed the connection.
        lenient_version: accept VN 4 as well as the correct 0.

    Raises:
        RemoteProtocolError: a wrong VN, checked on the first octet.
    """
    have = len(buf)
    if have >= 1 and buf[0] != SOCKS4_REPLY_VERSION and not (lenient_version and buf[0] == SOCKS4_VERSION):
        hint = " (this server sends 4; pass lenient_reply_version=True to accept it)" if buf[0] == 4 else ""
        raise RemoteProtocolError(
            f"the reply starts with 0x{buf[0]:02x}, expected SOCKS4 reply version 0x00"
            f"{hint or _looks_like(buf[0])}"
        )
    if have < _HEADER:
        if eof and have >= 2 and buf[1] != Socks4ReplyCode.GRANTED:
            return Socks4Reply(code=buf[1]), have
        return _HEADER
    bound = Address(ipaddress.IPv4Address(bytes(buf[4:8])), (buf[2] << 8) | buf[3])
    return Socks4Reply(code=buf[1], bound=bound), _HEADER


def encode_event(event: Socks4Event) -> bytes:
    """The octets that carry *event* (``b""`` for :class:`ConnectionClosed`)."""
    if isinstance(event, Socks4Request):
        address = event.address
        head = bytes((SOCKS4_VERSION, event.command)) + address.port.to_bytes(2, "big")
        if isinstance(address.host, ipaddress.IPv4Address):
            return head + address.host.packed + event.user_id + b"\0"
        assert isinstance(address.host, bytes), "Socks4Request refuses IPv6"
        return head + _SOCKS4A_DSTIP + event.user_id + b"\0" + address.host + b"\0"
    if isinstance(event, Socks4Reply):
        bound = event.bound
        assert isinstance(bound.host, ipaddress.IPv4Address), "Socks4Reply holds IPv4 only"
        return bytes((SOCKS4_REPLY_VERSION, event.code)) + bound.port.to_bytes(2, "big") + bound.host.packed
    if isinstance(event, ConnectionClosed):
        return b""
    raise TypeError(f"not a SOCKS4 event: {event!r}")


# -- the connection ----------------------------------------------------------

_AWAITED: Final = {
    S.AWAIT_REQUEST: "the request",
    S.AWAIT_REPLY: "the reply",
    S.AWAIT_BIND_PEER: "the second BIND reply",
}
_CONNECTION_CLOSED: Final = ConnectionClosed()
_EVENT_TYPES: Final = frozenset({Socks4Request, Socks4Reply, ConnectionClosed})
_AWAIT_REQUEST: Final = Socks4State.AWAIT_REQUEST  # enum members are slow to look up on their class


@final
class Socks4Connection(Machine[Socks4State, Socks4Event]):
    """A SOCKS4 or SOCKS4a conversation, as a client or as a server, without I/O.

    Feed received bytes to :meth:`receive_data`, take events from
    :meth:`next_event`, and turn your events into bytes with :meth:`send`.
    A request whose address is a domain name is sent as SOCKS4a; a server
    accepts both forms. The conversation ends in a terminal state: ``TUNNEL``
    (CONNECT granted, or BIND after its second reply), ``MUST_CLOSE``,
    ``CLOSED`` or ``ERROR``. Bytes after the final reply are never parsed:
    :attr:`trailing_data` returns them.

    Args:
        our_role: ``CLIENT`` or ``SERVER``.
        max_field_size: server only; the most octets a received USERID may hold,
            and a received HOSTNAME (which is capped at 255 in any case). A longer
            field is a RemoteProtocolError as soon as the cap is passed.
        lenient_reply_version: client only; accept a reply whose VN is 4 (some
            servers echo the request's version) as well as the correct 0.

    Raises:
        TypeError: *our_role* is not a Role, or *max_field_size* is not an int.
        LocalProtocolError: *max_field_size* is less than 1.
    """

    __slots__ = ("_command", "_lenient_reply_version", "_max_field_size", "_progress")
    _protocol = "SOCKS4"

    def __init__(
        self, our_role: Role, *, max_field_size: int = 1024, lenient_reply_version: bool = False
    ) -> None:
        Machine.__init__(self, our_role, _AWAIT_REQUEST)
        if type(max_field_size) is not int:
            raise TypeError(f"max_field_size must be int, not {type(max_field_size).__name__}")
        if max_field_size < 1:
            raise LocalProtocolError(f"max_field_size must be at least 1, got {max_field_size}")
        self._max_field_size = max_field_size
        self._lenient_reply_version = lenient_reply_version
        self._progress = RequestProgress()
        self._command: Command | None = None

    @property
    def command(self) -> Command | None:
        """The command of the request, once it was sent or received."""
        return self._command

    # -- protocol hooks -------------------------------------------------------

    _SENDER = SENDER
    _AWAITED = _AWAITED
    _ERROR = Socks4State.ERROR
    _CLOSED = Socks4State.CLOSED
    _CLOSED_EVENT = _CONNECTION_CLOSED
    _encode = staticmethod(encode_event)  # no wrapper method: one call less per send

    def _read(self) -> tuple[Socks4Event, int] | int:
        buffer = self._buffer
        if self._state is _AWAIT_REQUEST:
            return parse_request(buffer.data, self._progress, max_field_size=self._max_field_size)
        return parse_reply(buffer.data, eof=buffer.eof, lenient_version=self._lenient_reply_version)

    def _apply(self, role: Role, event: Socks4Event) -> None:
        if type(event) not in _EVENT_TYPES:
            raise TypeError(f"not a SOCKS4 event: {event!r}")
        state = self._state
        what = classify(event, self._command)
        next_state = TRANSITIONS.get((state, what)) if what is not None else None
        if next_state is None:
            raise LocalProtocolError(
                f"{type(event).__name__} from the {role.value} is not legal in state {state.name}"
            )
        if type(event) is Socks4Request:
            self._command = event.command
            self._progress = RequestProgress()
        self._state = next_state

    def _is_refusal(self, event: object) -> bool:
        return isinstance(event, Socks4Reply) and not event.granted

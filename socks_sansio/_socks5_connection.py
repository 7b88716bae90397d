"""``Socks5Connection``: one SOCKS5 conversation (RFC 1928 + RFC 1929), either role.

The rules live in :mod:`._socks5_state` (the table) and :mod:`._socks5_wire`
(the octets); this class adds what depends on the conversation so far: the
method must be one the client offered, the reply's meaning depends on the
request's command, and methods socks-sansio does not implement are refused
with a clear message rather than left hanging.
"""

from __future__ import annotations

from typing import Final, NoReturn, final

from ._codes import AuthMethod, Command
from ._errors import LocalProtocolError
from ._machine import Machine
from ._rfc1929 import UsernamePasswordReply, parse_auth_reply, parse_auth_request
from ._socks5_events import (
    SOCKS5_EVENT_TYPES,
    CommandReply,
    CommandRequest,
    ConnectionClosed,
    Greeting,
    MethodSelection,
    Socks5Event,
)
from ._socks5_state import SENDER, TRANSITIONS, Input, Socks5State, classify
from ._socks5_wire import encode_event, parse_greeting, parse_method_selection, parse_reply, parse_request
from ._util import CLIENT, Role

__all__ = ["Socks5Connection"]

_AWAITED: Final = {
    Socks5State.AWAIT_GREETING: "the greeting",
    Socks5State.AWAIT_METHOD: "the method selection",
    Socks5State.AWAIT_AUTH_REQUEST: "the username/password request",
    Socks5State.AWAIT_AUTH_REPLY: "the username/password reply",
    Socks5State.AWAIT_COMMAND: "the request",
    Socks5State.AWAIT_REPLY: "the reply",
    Socks5State.AWAIT_BIND_PEER: "the second BIND reply",
}
_CONNECTION_CLOSED: Final = ConnectionClosed()
_EARLY_STATES: Final = frozenset({Socks5State.AWAIT_METHOD, Socks5State.AWAIT_AUTH_REPLY})
_PIPELINE_METHODS: Final[dict[int, Socks5State]] = {
    AuthMethod.NO_AUTH: Socks5State.AWAIT_COMMAND,
    AuthMethod.USERNAME_PASSWORD: Socks5State.AWAIT_AUTH_REQUEST,
}
# Enum members are slow to look up on their class (EnumType.__getattr__): read them once.
_AWAIT_GREETING: Final = Socks5State.AWAIT_GREETING
_AWAIT_METHOD: Final = Socks5State.AWAIT_METHOD
_AWAIT_AUTH_REQUEST: Final = Socks5State.AWAIT_AUTH_REQUEST
_AWAIT_AUTH_REPLY: Final = Socks5State.AWAIT_AUTH_REPLY
_AWAIT_COMMAND: Final = Socks5State.AWAIT_COMMAND
_MUST_CLOSE: Final = Socks5State.MUST_CLOSE
_NO_ACCEPTABLE: Final = AuthMethod.NO_ACCEPTABLE


@final
class Socks5Connection(Machine[Socks5State, Socks5Event]):
    """A SOCKS5 conversation, as a client or as a server, without I/O.

    Feed received bytes to :meth:`receive_data`, take events from
    :meth:`next_event`, and turn your events into bytes with :meth:`send`.
    The conversation ends in a terminal state: ``TUNNEL`` (CONNECT, or BIND after
    its second reply), ``ASSOCIATED`` (UDP ASSOCIATE), ``MUST_CLOSE``,
    ``CLOSED`` or ``ERROR``. Bytes after the final reply are never parsed:
    :attr:`trailing_data` returns them.

    Args:
        our_role: ``CLIENT`` or ``SERVER``.
        lenient_auth_version: client only; accept an RFC 1929 reply whose version
            octet is 0x05 (some servers send it) as well as the correct 0x01.
        pipelining: client only; allow sending the username/password request and
            the command request before the server's answers arrive, so the whole
            handshake costs one round trip. It needs a greeting that offers exactly
            one method, so the server can only accept that method or refuse
            (0xFF); the early events are then replayed as the answers come in, and
            dropped if the server refuses.
    """

    __slots__ = ("_ahead", "_command", "_lenient_auth_version", "_method", "_offered", "_pipelining", "_predicted")
    _protocol = "SOCKS5"

    def __init__(self, our_role: Role, *, lenient_auth_version: bool = False, pipelining: bool = False) -> None:
        Machine.__init__(self, our_role, _AWAIT_GREETING)
        self._lenient_auth_version = lenient_auth_version
        self._pipelining = pipelining and our_role is CLIENT
        self._offered: tuple[int, ...] = ()
        self._method: int | None = None
        self._command: Command | None = None
        # Pipelining: events sent before their turn (a list once there is one), and the state they lead to.
        self._ahead: list[Socks5Event] | None = None
        self._predicted: Socks5State | None = None

    @property
    def method(self) -> int | None:
        """The method the server selected, once it has."""
        return self._method

    @property
    def command(self) -> Command | None:
        """The command of the request, once it was sent."""
        return self._command

    def _send_out_of_turn(self, event: Socks5Event) -> bytes:
        # With pipelining=True a client may send its username/password request and
        # its command request while waiting for the server.
        if not (self._pipelining and self._state in _EARLY_STATES):
            return super()._send_out_of_turn(event)
        self._send_ahead(event)
        return encode_event(event)

    def _send_ahead(self, event: Socks5Event) -> None:
        predicted = self._predicted
        if predicted is None:
            if self._state is _AWAIT_AUTH_REPLY:
                predicted = _AWAIT_COMMAND
            elif len(self._offered) == 1 and self._offered[0] in _PIPELINE_METHODS:
                predicted = _PIPELINE_METHODS[self._offered[0]]
            else:
                raise LocalProtocolError(
                    "pipelining needs a greeting that offers exactly one method, NO_AUTH or USERNAME_PASSWORD"
                )
        what = classify(event, self._command)
        next_state = TRANSITIONS.get((predicted, what)) if what is not None else None
        if next_state is None or SENDER.get(predicted) is not CLIENT:
            raise LocalProtocolError(f"{type(event).__name__} cannot be pipelined after state {predicted.name}")
        if type(event) is CommandRequest:
            self._command = event.command
        if self._ahead is None:
            self._ahead = []
        self._ahead.append(event)
        # Past the server's turn, assume its successful answer (a refusal drops the queue).
        self._predicted = _AWAIT_COMMAND if next_state is _AWAIT_AUTH_REPLY else next_state

    def _replay_ahead(self, ahead: list[Socks5Event]) -> None:
        if self._state is _MUST_CLOSE:
            ahead.clear()  # the server refused; it ignores what we sent early
            self._predicted = None
        while ahead and SENDER.get(self._state) is CLIENT:
            event = ahead.pop(0)
            self._state = TRANSITIONS[(self._state, classify(event, self._command))]  # type: ignore[index]
        if not ahead:
            self._predicted = None

    # -- protocol hooks -------------------------------------------------------

    _SENDER = SENDER
    _AWAITED = _AWAITED
    _ERROR = Socks5State.ERROR
    _CLOSED = Socks5State.CLOSED
    _CLOSED_EVENT = _CONNECTION_CLOSED
    _encode = staticmethod(encode_event)  # no wrapper method: one call less per send

    def _read(self) -> tuple[Socks5Event, int] | int:
        buffer = self._buffer
        state = self._state
        if state is _AWAIT_METHOD:
            return parse_method_selection(buffer.data)
        if state is _AWAIT_GREETING:
            return parse_greeting(buffer.data)
        if state is _AWAIT_AUTH_REPLY:
            return parse_auth_reply(buffer.data, lenient_version=self._lenient_auth_version)
        if state is _AWAIT_COMMAND:
            return parse_request(buffer.data)
        if state is _AWAIT_AUTH_REQUEST:
            return parse_auth_request(buffer.data)
        return parse_reply(buffer.data, eof=buffer.eof)

    def _apply(self, role: Role, event: Socks5Event) -> None:
        what = classify(event, self._command)
        next_state = TRANSITIONS.get((self._state, what)) if what is not None else None
        if next_state is None:
            self._refuse(role, event, what)
        if type(event) is MethodSelection:
            method = event.method
            if method != _NO_ACCEPTABLE and method not in self._offered:
                self._check_offered(method)  # raises
            self._method = method
        elif type(event) is CommandRequest:
            self._command = event.command
        elif type(event) is Greeting:
            self._offered = event.methods
        self._state = next_state
        if self._ahead and role is self.their_role:
            self._replay_ahead(self._ahead)

    def _refuse(self, role: Role, event: Socks5Event, what: Input | None) -> NoReturn:
        """Raise the error for an event the table does not allow in the current state."""
        if type(event) not in SOCKS5_EVENT_TYPES:
            raise TypeError(f"not a SOCKS5 event: {event!r}")
        state = self._state
        if what is Input.SELECT_UNIMPLEMENTED and state is _AWAIT_METHOD:
            assert isinstance(event, MethodSelection)
            self._check_offered(event.method)
            raise LocalProtocolError(
                f"method {_method_name(event.method)} was selected, which socks-sansio does not implement "
                "(it implements NO_AUTH 0x00 and USERNAME_PASSWORD 0x02)"
            )
        raise LocalProtocolError(f"{type(event).__name__} from the {role.value} is not legal in state {state.name}")

    def _check_offered(self, method: int) -> None:
        if method not in self._offered:
            offered = ", ".join(_method_name(m) for m in self._offered)
            raise LocalProtocolError(
                f"method {_method_name(method)} was selected but the client offered only {offered}"
            )

    def _is_refusal(self, event: object) -> bool:
        if isinstance(event, MethodSelection):
            return event.method == AuthMethod.NO_ACCEPTABLE
        if isinstance(event, UsernamePasswordReply):
            return not event.success
        return isinstance(event, CommandReply) and not event.succeeded


def _method_name(method: int) -> str:
    try:
        return f"{AuthMethod(method).name} (0x{method:02x})"
    except ValueError:
        return f"0x{method:02x}"

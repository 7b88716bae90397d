"""The SOCKS5 conversation as a table (RFC 1928 with RFC 1929 inside it).

Two rules, after h11's ``_state.py``:

1. Everything that decides a transition is here: the states, the inputs an
   event is classified as, the table of legal transitions, and whose turn each
   state is.
2. Nothing here knows which role *we* play. The same table judges the events we
   send and the events the peer sends, so both ends obey the same rules.

SOCKS5 is strictly lock-step, so one state describes the whole conversation:
in every non-terminal state exactly one side may speak (:data:`SENDER`).
"""

from __future__ import annotations

import enum
from typing import Final

from ._codes import AuthMethod, Command
from ._rfc1929 import UsernamePasswordReply, UsernamePasswordRequest
from ._socks5_events import CommandReply, CommandRequest, Greeting, MethodSelection, Socks5Event
from ._util import CLIENT, SERVER, Role

__all__ = ["SENDER", "TERMINAL", "TRANSITIONS", "Input", "Socks5State", "classify"]


class Socks5State(enum.Enum):
    """Where a SOCKS5 conversation stands. Both ends agree on it."""

    # Members are singletons: identity hashing is correct, and much cheaper than Enum's.
    __hash__ = object.__hash__

    #: The client has to send its greeting (RFC 1928 §3).
    AWAIT_GREETING = "AWAIT_GREETING"
    #: The server has to select a method (RFC 1928 §3).
    AWAIT_METHOD = "AWAIT_METHOD"
    #: The client has to send username and password (RFC 1929 §2).
    AWAIT_AUTH_REQUEST = "AWAIT_AUTH_REQUEST"
    #: The server has to accept or reject the credentials (RFC 1929 §2).
    AWAIT_AUTH_REPLY = "AWAIT_AUTH_REPLY"
    #: The client has to send its request (RFC 1928 §4).
    AWAIT_COMMAND = "AWAIT_COMMAND"
    #: The server has to reply to the request (RFC 1928 §6).
    AWAIT_REPLY = "AWAIT_REPLY"
    #: BIND: the server listens and has to send the second reply when a peer connects (RFC 1928 §6).
    AWAIT_BIND_PEER = "AWAIT_BIND_PEER"
    #: Terminal: CONNECT or BIND succeeded; the connection now carries the tunnel.
    TUNNEL = "TUNNEL"
    #: Terminal: UDP ASSOCIATE succeeded; the TCP connection is the association's control channel (RFC 1928 §7).
    ASSOCIATED = "ASSOCIATED"
    #: Terminal: refused (no acceptable method, bad credentials, failed request); the connection must be closed.
    MUST_CLOSE = "MUST_CLOSE"
    #: Terminal: one side closed the connection.
    CLOSED = "CLOSED"
    #: Terminal: a protocol error (ours or the peer's).
    ERROR = "ERROR"


class Input(enum.Enum):
    """What an event means for the conversation (the key into :data:`TRANSITIONS`)."""

    # Members are singletons: identity hashing is correct, and much cheaper than Enum's.
    __hash__ = object.__hash__

    GREETING = enum.auto()
    SELECT_NO_AUTH = enum.auto()
    SELECT_USERNAME_PASSWORD = enum.auto()
    SELECT_NO_ACCEPTABLE = enum.auto()
    SELECT_UNIMPLEMENTED = enum.auto()
    AUTH_REQUEST = enum.auto()
    AUTH_SUCCESS = enum.auto()
    AUTH_FAILURE = enum.auto()
    REQUEST = enum.auto()
    CONNECT_SUCCEEDED = enum.auto()
    BIND_SUCCEEDED = enum.auto()
    UDP_ASSOCIATE_SUCCEEDED = enum.auto()
    REPLY_FAILED = enum.auto()


S = Socks5State
TRANSITIONS: Final[dict[tuple[Socks5State, Input], Socks5State]] = {
    (S.AWAIT_GREETING, Input.GREETING): S.AWAIT_METHOD,
    (S.AWAIT_METHOD, Input.SELECT_NO_AUTH): S.AWAIT_COMMAND,
    (S.AWAIT_METHOD, Input.SELECT_USERNAME_PASSWORD): S.AWAIT_AUTH_REQUEST,
    (S.AWAIT_METHOD, Input.SELECT_NO_ACCEPTABLE): S.MUST_CLOSE,
    (S.AWAIT_AUTH_REQUEST, Input.AUTH_REQUEST): S.AWAIT_AUTH_REPLY,
    (S.AWAIT_AUTH_REPLY, Input.AUTH_SUCCESS): S.AWAIT_COMMAND,
    (S.AWAIT_AUTH_REPLY, Input.AUTH_FAILURE): S.MUST_CLOSE,  # RFC 1929 §2: the server MUST close
    (S.AWAIT_COMMAND, Input.REQUEST): S.AWAIT_REPLY,
    (S.AWAIT_REPLY, Input.CONNECT_SUCCEEDED): S.TUNNEL,
    (S.AWAIT_REPLY, Input.BIND_SUCCEEDED): S.AWAIT_BIND_PEER,
    (S.AWAIT_REPLY, Input.UDP_ASSOCIATE_SUCCEEDED): S.ASSOCIATED,
    (S.AWAIT_REPLY, Input.REPLY_FAILED): S.MUST_CLOSE,
    (S.AWAIT_BIND_PEER, Input.BIND_SUCCEEDED): S.TUNNEL,
    (S.AWAIT_BIND_PEER, Input.REPLY_FAILED): S.MUST_CLOSE,
}
"""Every legal transition; a missing ``(state, input)`` pair is a protocol error."""

SENDER: Final[dict[Socks5State, Role]] = {
    S.AWAIT_GREETING: CLIENT,
    S.AWAIT_METHOD: SERVER,
    S.AWAIT_AUTH_REQUEST: CLIENT,
    S.AWAIT_AUTH_REPLY: SERVER,
    S.AWAIT_COMMAND: CLIENT,
    S.AWAIT_REPLY: SERVER,
    S.AWAIT_BIND_PEER: SERVER,
}
"""Whose turn it is in each non-terminal state."""

TERMINAL: Final = frozenset({S.TUNNEL, S.ASSOCIATED, S.MUST_CLOSE, S.CLOSED, S.ERROR})

_SELECTIONS: Final[dict[int, Input]] = {
    AuthMethod.NO_AUTH: Input.SELECT_NO_AUTH,
    AuthMethod.USERNAME_PASSWORD: Input.SELECT_USERNAME_PASSWORD,
    AuthMethod.NO_ACCEPTABLE: Input.SELECT_NO_ACCEPTABLE,
}
_SUCCESSES: Final[dict[Command | None, Input]] = {
    Command.CONNECT: Input.CONNECT_SUCCEEDED,
    Command.BIND: Input.BIND_SUCCEEDED,
    Command.UDP_ASSOCIATE: Input.UDP_ASSOCIATE_SUCCEEDED,
}
# Enum members are slow to look up on their class (EnumType.__getattr__): read them once.
_GREETING: Final = Input.GREETING
_SELECT_UNIMPLEMENTED: Final = Input.SELECT_UNIMPLEMENTED
_AUTH_REQUEST: Final = Input.AUTH_REQUEST
_AUTH_SUCCESS: Final = Input.AUTH_SUCCESS
_AUTH_FAILURE: Final = Input.AUTH_FAILURE
_REQUEST: Final = Input.REQUEST
_CONNECT_SUCCEEDED: Final = Input.CONNECT_SUCCEEDED
_REPLY_FAILED: Final = Input.REPLY_FAILED


def classify(event: Socks5Event, command: Command | None) -> Input | None:
    """The input *event* stands for, given the request's *command*; ``None`` for ConnectionClosed
    (and for anything that is not a SOCKS5 event)."""
    # The event classes are final: identity tests of the class, most frequent first.
    if type(event) is MethodSelection:
        return _SELECTIONS.get(event.method, _SELECT_UNIMPLEMENTED)
    if type(event) is CommandReply:
        if event.code:  # not REP 0x00 SUCCEEDED
            return _REPLY_FAILED
        # Before any request there is no command; no state then accepts a reply anyway.
        return _SUCCESSES.get(command, _CONNECT_SUCCEEDED)
    if type(event) is Greeting:
        return _GREETING
    if type(event) is CommandRequest:
        return _REQUEST
    if type(event) is UsernamePasswordRequest:
        return _AUTH_REQUEST
    if type(event) is UsernamePasswordReply:
        return _AUTH_SUCCESS if event.success else _AUTH_FAILURE
    return None

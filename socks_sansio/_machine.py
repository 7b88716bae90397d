"""The contract shared by every connection class, written once.

Each protocol (SOCKS5, SOCKS4, HTTP CONNECT) is a lock-step conversation: in
every live state exactly one side may speak. A subclass supplies the protocol
as class attributes (whose turn each state is, the error and closed states)
and four hooks (read the awaited message, judge an event and advance the
state, encode an event, recognise a refusal); this base supplies the rest of
the contract:

* ``receive_data`` only buffers; ``b""`` is EOF; data after EOF is an error.
* ``next_event`` returns one event, ``NEED_DATA`` or ``PAUSED``; it converts
  any :class:`LocalProtocolError` raised while judging the peer's bytes into a
  :class:`RemoteProtocolError`, so the blame always names the right side.
* ``send`` encodes our event after the same rules judged it.
* ``trailing_data`` hands back, exactly, every byte not consumed as protocol.

Speed: a handshake is a handful of calls, so the per-call overhead is the
cost. ``receive_data`` appends to the buffer's bytearray itself (one ``+=``
per segment, one ``del`` per event); the protocol's constants are class
attributes rather than hook methods, so the common path makes no call that
only returns a constant.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, TypeVar

from ._buffer import ReceiveBuffer
from ._errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from ._util import CLIENT, NEED_DATA, PAUSED, SERVER, NeedData, Paused, Role

StateT = TypeVar("StateT", bound=enum.Enum)
EventT = TypeVar("EventT")

__all__ = ["Machine"]

_PEER: dict[Role, Role] = {CLIENT: SERVER, SERVER: CLIENT}


class Machine(Generic[StateT, EventT]):
    """Base of the connection classes; see the module docstring. Not public."""

    __slots__ = ("_buffer", "_error_reply", "_state", "our_role", "their_role")

    # -- what a protocol supplies: constants ---------------------------------

    #: Name of the protocol, for error messages.
    _protocol: ClassVar[str] = "protocol"
    #: Whose turn each live state is; a state missing here is terminal.
    _SENDER: ClassVar[Mapping[Any, Role]] = {}
    #: Name of the message awaited in each live state, for error messages.
    _AWAITED: ClassVar[Mapping[Any, str]] = {}
    #: The ERROR and CLOSED states (members of StateT).
    _ERROR: ClassVar[Any]
    _CLOSED: ClassVar[Any]
    #: The ConnectionClosed event.
    _CLOSED_EVENT: ClassVar[Any]

    def __init__(self, our_role: Role, initial: StateT) -> None:
        their_role = _PEER.get(our_role) if type(our_role) is Role else None
        if their_role is None:
            raise TypeError(f"our_role must be CLIENT or SERVER, not {our_role!r}")
        self.our_role: Role = our_role
        """The role this object plays."""
        self.their_role: Role = their_role
        """The peer's role."""
        self._state: StateT = initial
        self._buffer = ReceiveBuffer()
        # After the peer broke the protocol, a server may still send one refusal
        # of this type (the RemoteProtocolError's reply_hint), then must close.
        self._error_reply: type | None = None

    # -- what a protocol supplies: hooks --------------------------------------

    def _read(self) -> tuple[EventT, int] | int:
        """Read the awaited message: ``(event, consumed)`` or octets needed so far."""
        raise NotImplementedError

    def _apply(self, role: Role, event: EventT) -> None:
        """Judge *event* sent by *role* and advance the state; raise LocalProtocolError if illegal."""
        raise NotImplementedError

    def _encode(self, event: EventT) -> bytes:
        raise NotImplementedError

    def _is_refusal(self, event: object) -> bool:
        """Whether *event* is a failure reply a server may send after the peer's error."""
        raise NotImplementedError

    def _send_out_of_turn(self, event: EventT) -> bytes:
        """Called by :meth:`send` when it is not our turn; raise LocalProtocolError (the state becomes ERROR)."""
        raise LocalProtocolError(
            f"a {self.our_role.value} cannot send {type(event).__name__} in state "
            f"{self._state.name}: it is not its turn"
        )

    # -- the contract -------------------------------------------------------

    @property
    def state(self) -> StateT:
        """Where the conversation stands."""
        return self._state

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer bytes received from the peer; ``b""`` means the peer closed (EOF).

        Nothing is parsed here: call :meth:`next_event`.

        Raises:
            RuntimeError: non-empty data after EOF.
        """
        buffer = self._buffer  # ReceiveBuffer.feed, inlined: one call less per segment
        if not data:
            buffer.eof = True
        elif buffer.eof:
            raise RuntimeError("received data after EOF")
        else:
            buffer.data += data

    def next_event(self) -> EventT | NeedData | Paused:
        """Parse and return the next event from the peer.

        Returns:
            an event; ``NEED_DATA`` when the buffer holds only part of the awaited
            message (read more and call :meth:`receive_data`); ``PAUSED`` when it
            is our turn (call :meth:`send`) or the conversation is over (the
            tunnel is up, it was refused, closed, or failed). On our turn, a
            closed, empty connection yields a ``ConnectionClosed`` event instead.

        Raises:
            RemoteProtocolError: the peer's bytes break the protocol, or it closed
                in the middle of a message. The state becomes ``ERROR``; a server may
                still send the error's ``reply_hint``.
        """
        state = self._state
        sender = self._SENDER.get(state)
        if sender is None:  # a terminal state
            if state is self._ERROR:
                raise RemoteProtocolError(f"{self._protocol} connection is in ERROR; no more events")
            return PAUSED
        buffer = self._buffer
        data = buffer.data
        if sender is self.our_role:
            if buffer.eof and not data:
                self._state = self._CLOSED
                return self._CLOSED_EVENT  # type: ignore[no-any-return]
            return PAUSED
        try:
            result = self._read()
            if isinstance(result, int):
                if not buffer.eof:
                    return NEED_DATA
                if not data:
                    self._state = self._CLOSED
                    return self._CLOSED_EVENT  # type: ignore[no-any-return]
                raise RemoteProtocolError(
                    f"the {self.their_role.value} closed the connection in the middle of "
                    f"{self._AWAITED.get(state, 'a message')} (received {len(data)} of at least {result} octets)"
                )
            event, consumed = result
            self._apply(self.their_role, event)
        except RemoteProtocolError as exc:
            self._fail(exc.reply_hint)
            raise
        except LocalProtocolError as exc:
            self._fail(None)
            raise RemoteProtocolError(exc.message) from exc
        del data[:consumed]
        return event

    def send(self, event: EventT) -> bytes:
        """Judge *event* against the protocol and return the octets to transmit.

        Raises:
            LocalProtocolError: the event is not legal now (wrong turn, wrong
                state, or a value the conversation so far rules out). The state
                becomes ``ERROR``, except after a peer's error, when one refusal
                of the hinted kind may still be sent.
        """
        state = self._state
        if state is self._ERROR:
            if self._error_reply is not None and type(event) is self._error_reply and self._is_refusal(event):
                self._error_reply = None
                return self._encode(event)
            raise LocalProtocolError(f"{self._protocol} connection is in ERROR; only closing is possible")
        if type(event) is type(self._CLOSED_EVENT):
            self._state = self._CLOSED
            return b""
        try:
            if self._SENDER.get(state) is not self.our_role:
                return self._send_out_of_turn(event)
            self._apply(self.our_role, event)
        except LocalProtocolError:
            self._fail(None)
            raise
        return self._encode(event)

    def send_failed(self) -> None:
        """Tell the machine that bytes returned by :meth:`send` never reached the peer.

        The state becomes ``ERROR``.
        """
        self._fail(None)

    @property
    def trailing_data(self) -> tuple[bytes, bool]:
        """``(bytes, eof_seen)``: every byte received and not consumed as protocol.

        Once the tunnel is up these are the first tunnel bytes (for example data a
        client sent together with its request, or a server's first bytes sent with
        its reply). Deliver them before anything read later. They are never parsed.
        """
        return self._buffer.snapshot()

    @property
    def read_size_hint(self) -> int:
        """How many octets can be read without reading past the awaited message.

        ``0`` when no message from the peer is awaited (our turn, or the
        conversation is over) or when it is already buffered whole. A blocking
        adapter that reads at most this much leaves every tunnel byte in the
        socket, so it can hand back a plain socket with nothing lost.
        """
        if self._SENDER.get(self._state) is not self.their_role:
            return 0
        try:
            result = self._read()
        except ProtocolError:
            return 1  # next_event() will report it; one octet more changes nothing
        if isinstance(result, int):
            return result - len(self._buffer.data)
        return 0

    def _fail(self, reply_hint: object) -> None:
        self._state = self._ERROR
        self._error_reply = type(reply_hint) if reply_hint is not None and self.our_role is SERVER else None

"""The contract shared by every connection class, written once.

Each protocol (SOCKS5, SOCKS4, HTTP CONNECT) is a lock-step conversation: in
every live state exactly one side may speak. A subclass supplies the protocol
(whose turn it is, how to read the awaited message, what an event does to the
state, how to encode it); this base supplies the rest of the contract:

* ``receive_data`` only buffers; ``b""`` is EOF; data after EOF is an error.
* ``next_event`` returns one event, ``NEED_DATA`` or ``PAUSED``; it converts
  any :class:`LocalProtocolError` raised while judging the peer's bytes into a
  :class:`RemoteProtocolError`, so the blame always names the right side.
* ``send`` encodes our event after the same rules judged it.
* ``trailing_data`` hands back, exactly, every byte not consumed as protocol.
"""

from __future__ import annotations

import enum
from typing import Generic, TypeVar

from ._buffer import ReceiveBuffer
from ._errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from ._util import NEED_DATA, PAUSED, NeedData, Paused, Role

StateT = TypeVar("StateT", bound=enum.Enum)
EventT = TypeVar("EventT")

__all__ = ["Machine"]


class Machine(Generic[StateT, EventT]):
    """Base of the connection classes; see the module docstring. Not public."""

    __slots__ = ("_buffer", "_error_reply", "_state", "our_role", "their_role")

    #: Name of the protocol, for error messages.
    _protocol = "protocol"

    def __init__(self, our_role: Role, initial: StateT) -> None:
        if not isinstance(our_role, Role):
            raise TypeError(f"our_role must be CLIENT or SERVER, not {our_role!r}")
        self.our_role: Role = our_role
        """The role this object plays."""
        self.their_role: Role = our_role.peer
        """The peer's role."""
        self._state = initial
        self._buffer = ReceiveBuffer()
        # After the peer broke the protocol, a server may still send one refusal
        # of this type (the RemoteProtocolError's reply_hint), then must close.
        self._error_reply: type | None = None

    # -- hooks a protocol supplies ----------------------------------------

    def _sender(self, state: StateT) -> Role | None:
        """Whose turn it is in *state*; ``None`` in a terminal state."""
        raise NotImplementedError

    def _read(self) -> tuple[EventT, int] | int:
        """Read the awaited message: ``(event, consumed)`` or octets needed so far."""
        raise NotImplementedError

    def _apply(self, role: Role, event: EventT) -> None:
        """Judge *event* sent by *role* and advance the state; raise LocalProtocolError if illegal."""
        raise NotImplementedError

    def _encode(self, event: EventT) -> bytes:
        raise NotImplementedError

    def _closed_event(self) -> EventT:
        raise NotImplementedError

    def _is_refusal(self, event: object) -> bool:
        """Whether *event* is a failure reply a server may send after the peer's error."""
        raise NotImplementedError

    def _error_state(self) -> StateT:
        raise NotImplementedError

    def _closed_state(self) -> StateT:
        raise NotImplementedError

    def _awaited(self) -> str:
        """Name of the message awaited in the current state, for error messages."""
        raise NotImplementedError

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
        self._buffer.feed(data)

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
        if state is self._error_state():
            raise RemoteProtocolError(f"{self._protocol} connection is in ERROR; no more events")
        sender = self._sender(state)
        if sender is None:
            return PAUSED
        buffer = self._buffer
        if sender is self.our_role:
            if buffer.eof and not buffer.data:
                self._state = self._closed_state()
                return self._closed_event()
            return PAUSED
        try:
            result = self._read()
            if isinstance(result, int):
                if not buffer.eof:
                    return NEED_DATA
                if not buffer.data:
                    self._state = self._closed_state()
                    return self._closed_event()
                raise RemoteProtocolError(
                    f"the {self.their_role.value} closed the connection in the middle of {self._awaited()} "
                    f"(received {len(buffer.data)} of at least {result} octets)"
                )
            event, consumed = result
            self._apply(self.their_role, event)
        except RemoteProtocolError as exc:
            self._fail(exc.reply_hint)
            raise
        except LocalProtocolError as exc:
            self._fail(None)
            raise RemoteProtocolError(exc.message) from exc
        buffer.consume(consumed)
        return event

    def send(self, event: EventT) -> bytes:
        """Judge *event* against the protocol and return the octets to transmit.

        Raises:
            LocalProtocolError: the event is not legal now (wrong turn, wrong
                state, or a value the conversation so far rules out). The state
                becomes ``ERROR``, except after a peer's error, when one refusal
                of the hinted kind may still be sent.
        """
        if self._state is self._error_state():
            if self._error_reply is not None and type(event) is self._error_reply and self._is_refusal(event):
                self._error_reply = None
                return self._encode(event)
            raise LocalProtocolError(f"{self._protocol} connection is in ERROR; only closing is possible")
        if isinstance(event, type(self._closed_event())):
            self._state = self._closed_state()
            return b""
        try:
            if self._sender(self._state) is not self.our_role:
                raise LocalProtocolError(
                    f"a {self.our_role.value} cannot send {type(event).__name__} in state "
                    f"{self._state.name}: it is not its turn"
                )
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
        if self._sender(self._state) is not self.their_role:
            return 0
        try:
            result = self._read()
        except ProtocolError:
            return 1  # next_event() will report it; one octet more changes nothing
        if isinstance(result, int):
            return result - len(self._buffer.data)
        return 0

    def _fail(self, reply_hint: object) -> None:
        self._state = self._error_state()
        self._error_reply = type(reply_hint) if reply_hint is not None and self.our_role is Role.SERVER else None

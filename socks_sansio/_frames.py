"""A length-prefixed frame codec: each frame is a 4-octet length, then that many octets.

    +----------------------+-------------------+
    | LENGTH (big-endian)  |      PAYLOAD      |
    +----------------------+-------------------+
    |          4           |      LENGTH       |

This is not a proxy protocol: it is the framing an application can use to
carry messages over a byte stream (a tunnel, or a TCP control channel), and it
follows the same contract as the connection classes, so the same I/O loop
drives it: ``receive_data`` only buffers (``b""`` is EOF), ``next_event``
returns a :class:`Frame`, ``NEED_DATA``, or ``ConnectionClosed`` at a clean EOF.
There are no turns and no states to speak of, so it is not a ``Machine``.

Strategy, for linear time however the bytes arrive: one ``bytearray``
(:class:`ReceiveBuffer`); each ``next_event`` call looks only at the first four
octets and at the buffer's length, never at the bytes in between, and a whole
frame is removed with one slice and one ``del``. A frame's size is capped
(default 10 MiB): a length over the cap is refused as soon as its four octets
are here, so a peer cannot make the decoder buffer toward a huge frame.
"""

from __future__ import annotations

from typing import Final, NoReturn, final

import attrs

from ._buffer import ReceiveBuffer
from ._errors import LocalProtocolError, RemoteProtocolError
from ._socks5_events import ConnectionClosed
from ._util import NEED_DATA, NeedData

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "FRAME_HEADER_SIZE",
    "Frame",
    "FrameDecoder",
    "encode_frame",
]

FRAME_HEADER_SIZE: Final = 4
"""Octets of the big-endian length that opens every frame."""

DEFAULT_MAX_FRAME_SIZE: Final = 10 * 1024 * 1024
"""10 MiB: the largest payload accepted or sent unless told otherwise."""

_LARGEST_LENGTH: Final = 0xFFFF_FFFF
"""The largest length four octets can carry; no cap can exceed it."""

_CLOSED: Final = ConnectionClosed()


def _to_payload(value: bytes | bytearray | memoryview) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"payload must be bytes, not {type(value).__name__}")


def _check_max_size(max_size: object) -> int:
    if isinstance(max_size, bool) or not isinstance(max_size, int):
        raise TypeError(f"max_size must be int, not {type(max_size).__name__}")
    if not 0 <= max_size <= _LARGEST_LENGTH:
        raise LocalProtocolError(f"max_size must be in 0..{_LARGEST_LENGTH} (a 4-octet length), got {max_size}")
    return max_size


@final
@attrs.frozen(kw_only=True)
class Frame:
    """One frame's payload (possibly empty). ``bytearray`` and ``memoryview`` are copied to ``bytes``."""

    payload: bytes = attrs.field(converter=_to_payload)


def encode_frame(payload: bytes | bytearray | memoryview, *, max_size: int = DEFAULT_MAX_FRAME_SIZE) -> bytes:
    """The octets of one frame: the payload's length (4 octets, big-endian), then the payload.

    Args:
        payload: the message, possibly empty.
        max_size: the largest payload allowed; use the peer decoder's cap.

    Raises:
        LocalProtocolError: the payload is longer than *max_size*, or *max_size*
            is outside 0..2**32-1.
        TypeError: *payload* is not bytes-like.
    """
    max_size = _check_max_size(max_size)
    if not isinstance(payload, bytes | bytearray):
        if not isinstance(payload, memoryview):
            raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
        payload = payload.tobytes()
    size = len(payload)
    if size > max_size:
        raise LocalProtocolError(f"a frame payload of {size} octets exceeds the maximum of {max_size}")
    return size.to_bytes(FRAME_HEADER_SIZE, "big") + payload


@final
class FrameDecoder:
    """Turns a byte stream back into frames, incrementally.

    Feed received bytes to :meth:`receive_data` (``b""`` when the peer closed)
    and call :meth:`next_event` until it returns ``NEED_DATA``.

    Args:
        max_size: the largest payload accepted, in octets (default 10 MiB,
            at most 2**32-1).

    Raises:
        LocalProtocolError: *max_size* out of range.
        TypeError: *max_size* is not an int.
    """

    __slots__ = ("_buffer", "_error", "_max_size")

    def __init__(self, *, max_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self._max_size = _check_max_size(max_size)
        self._buffer = ReceiveBuffer()
        self._error: str | None = None

    @property
    def max_size(self) -> int:
        """The largest payload accepted."""
        return self._max_size

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer bytes received from the peer; ``b""`` means the peer closed (EOF).

        Nothing is parsed here: call :meth:`next_event`.

        Raises:
            RuntimeError: non-empty data after EOF.
        """
        self._buffer.feed(data)

    def next_event(self) -> Frame | ConnectionClosed | NeedData:
        """Return the next whole frame, if one is buffered.

        Returns:
            a :class:`Frame`; ``NEED_DATA`` when only part of a frame is buffered;
            ``ConnectionClosed`` (again on every later call) when the peer closed
            at a frame boundary.

        Raises:
            RemoteProtocolError: the peer announced a frame longer than
                ``max_size``, or closed in the middle of a frame. The decoder is
                then broken: every later call raises again.
        """
        if self._error is not None:
            raise RemoteProtocolError(f"the frame decoder failed earlier: {self._error}")
        buffer = self._buffer
        buf = buffer.data
        have = len(buf)
        if have < FRAME_HEADER_SIZE:
            if not buffer.eof:
                return NEED_DATA
            if have == 0:
                return _CLOSED
            self._fail(
                "the peer closed the connection in the middle of a frame's length "
                f"(received {have} of {FRAME_HEADER_SIZE} octets, {FRAME_HEADER_SIZE - have} missing)"
            )
        length = int.from_bytes(buf[:FRAME_HEADER_SIZE], "big")
        if length > self._max_size:
            self._fail(f"the peer announced a frame of {length} octets; the maximum is {self._max_size}")
        end = FRAME_HEADER_SIZE + length
        if have < end:
            if not buffer.eof:
                return NEED_DATA
            self._fail(
                f"the peer closed the connection in the middle of a frame of {length} octets "
                f"(received {have - FRAME_HEADER_SIZE} of them, {end - have} missing)"
            )
        payload = bytes(buf[FRAME_HEADER_SIZE:end])
        buffer.consume(end)
        return Frame(payload=payload)

    @property
    def read_size_hint(self) -> int:
        """How many octets can be read without reading past the current frame.

        Positive exactly when :meth:`next_event` would return ``NEED_DATA``;
        ``0`` when a whole frame is buffered, after EOF, or after an error. It can
        be as large as ``max_size``: cap your read size as usual.
        """
        buffer = self._buffer
        if self._error is not None or buffer.eof:
            return 0
        have = len(buffer.data)
        if have < FRAME_HEADER_SIZE:
            return FRAME_HEADER_SIZE - have
        length = int.from_bytes(buffer.data[:FRAME_HEADER_SIZE], "big")
        if length > self._max_size:
            return 0  # next_event() will report it
        return max(0, FRAME_HEADER_SIZE + length - have)

    def _fail(self, message: str) -> NoReturn:
        self._error = message
        raise RemoteProtocolError(message)

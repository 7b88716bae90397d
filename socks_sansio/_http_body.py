"""Streaming HTTP/1.1 body decoding (RFC 9112 §6, §7.1): the one body decoder of the library.

The forward proxy's readers stream bodies through it; the CONNECT client's
:class:`~socks_sansio.ResponseReader` gathers an error response's body with it.

A :class:`BodyReader` turns the octets after a head into :class:`ForwardBodyData`
events as they arrive (never buffering the body: memory is bounded by what the
caller fed and by the line caps), then one :class:`ForwardEndOfMessage`.

Strategy, linear however the input is fragmented:

* a ``Content-Length`` or until-close body: each call hands over what is
  buffered (up to the length) with one slice and one delete;
* a chunked body is walked with a cursor: the chunk-size and trailer line
  searches resume where they stopped, the data of every chunk a call can see is
  gathered into one :class:`ForwardBodyData`, and the consumed octets are deleted once
  at the end of the call. A chunk-size line and the trailer section are capped.
* When a problem follows data gathered in the same call, the data is returned
  first and the error raised by the next call, so the events before an error do
  not depend on how the input was cut.

Only :class:`RemoteProtocolError` leaves a reader (without ``reply_hint``:
the connection-level readers add theirs).
"""

from __future__ import annotations

import enum
import re
from typing import Final, final

from ._buffer import ReceiveBuffer
from ._errors import LocalProtocolError, RemoteProtocolError
from ._http_forward_events import ForwardBodyData, ForwardEndOfMessage, Framing
from ._http_wire import _fields  # private: field-line parsing (RFC 9112 §5), for trailers

__all__ = ["BodyReader"]

# chunk = chunk-size [ chunk-ext ] CRLF (RFC 9112 §7.1, §7.1.1):
#   chunk-size = 1*HEXDIG
#   chunk-ext  = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
#   chunk-ext-val = token / quoted-string (RFC 9110 §5.6.4)
# Token characters exclude SP, HTAB, ";", "=" and DQUOTE, and qdtext excludes the
# backslash, so every branch below is decided by one octet: no backtracking blow-up.
_TCHARS: Final = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED: Final = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_CHUNK_LINE: Final = re.compile(
    rb"([0-9A-Fa-f]+)(?:[ \t]*;[ \t]*" + _TCHARS + rb"(?:[ \t]*=[ \t]*(?:" + _TCHARS + rb"|" + _QUOTED + rb"))?)*"
)
_HEXDIGITS: Final = frozenset(b"0123456789abcdefABCDEF")
_MAX_SIZE_DIGITS: Final = 15  # 16**15 octets in one chunk: beyond that it is an attack, not a body


class _Phase(enum.Enum):
    LENGTH = enum.auto()  # Content-Length octets left (also NONE: 0 left)
    UNTIL_CLOSE = enum.auto()
    SIZE = enum.auto()  # chunk-size [ chunk-ext ] CRLF
    DATA = enum.auto()  # chunk-data
    DATA_END = enum.auto()  # the CRLF after chunk-data
    TRAILERS = enum.auto()  # trailer-section CRLF
    DONE = enum.auto()


@final
class BodyReader:
    """Reads one body of the given framing from a :class:`ReceiveBuffer`.

    Args:
        framing: how the body is delimited.
        length: its length, with :attr:`Framing.CONTENT_LENGTH`.
        max_line: the longest chunk-size line, and the longest trailer section.
        max_body_size: the longest chunked or until-close body accepted (``None``:
            no limit, for a body that is streamed on). A chunk whose size would
            pass it is refused when its size line arrives.
    """

    __slots__ = ("_error", "_left", "_max_body_size", "_max_line", "_phase", "_scan", "_seen", "_trailer_size",
                 "_trailers")  # fmt: skip

    def __init__(self, framing: Framing, length: int | None, max_line: int, max_body_size: int | None = None) -> None:
        self._max_line = max_line
        self._max_body_size = max_body_size
        # Body octets announced by Content-Length or chunk sizes, or received until close (the latter two
        # against max_body_size).
        self._seen = length or 0
        self._left = length or 0  # octets left of the body (LENGTH) or of the chunk (DATA)
        self._scan = 0  # where the current line search resumes
        self._trailers: list[tuple[bytes, bytes]] = []
        self._trailer_size = 0
        self._error: RemoteProtocolError | None = None
        if framing is Framing.CHUNKED:
            self._phase = _Phase.SIZE
        elif framing is Framing.UNTIL_CLOSE:
            self._phase = _Phase.UNTIL_CLOSE
        else:
            self._phase = _Phase.LENGTH
            if framing is Framing.NONE:
                self._left = 0

    @property
    def done(self) -> bool:
        """True once :class:`ForwardEndOfMessage` was returned."""
        return self._phase is _Phase.DONE

    def next_event(self, buffer: ReceiveBuffer) -> ForwardBodyData | ForwardEndOfMessage | None:
        """The next body event from *buffer*, or ``None`` until more octets (or EOF) arrive.

        Raises:
            RemoteProtocolError: a malformed chunked body, a line over the cap, EOF
                before the body's end.
        """
        if self._error is not None:
            raise self._error
        phase = self._phase
        if phase is _Phase.LENGTH:
            return self._length(buffer)
        if phase is _Phase.UNTIL_CLOSE:
            buf = buffer.data
            if buf:
                self._seen += len(buf)
                if self._max_body_size is not None and self._seen > self._max_body_size:
                    raise RemoteProtocolError(
                        "the body (delimited by the end of the connection) is longer than max_body_size "
                        f"({self._max_body_size} octets)"
                    )
                data = bytes(buf)
                buf.clear()
                return ForwardBodyData(data=data)
            if buffer.eof:
                self._phase = _Phase.DONE
                return ForwardEndOfMessage()
            return None
        if phase is _Phase.DONE:
            raise LocalProtocolError("the body already ended")  # the readers never ask
        return self._chunked(buffer)

    def read_size_hint(self, buf: bytearray) -> int:
        """Octets that can surely be read without passing the body's end (at least 1 until it is done)."""
        phase = self._phase
        if phase is _Phase.LENGTH:
            return max(1, self._left - len(buf))
        if phase is _Phase.UNTIL_CLOSE:
            return 65536
        if phase is _Phase.DATA:
            return max(1, self._left + 2 - len(buf))  # the data, then its CRLF
        if phase is _Phase.DATA_END:
            return max(1, 2 - len(buf))
        if phase is _Phase.DONE:
            return 0
        return 1 if buf.endswith(b"\r") else 2  # a chunk-size or trailer line ends with CRLF

    def _length(self, buffer: ReceiveBuffer) -> ForwardBodyData | ForwardEndOfMessage | None:
        left = self._left
        if not left:
            self._phase = _Phase.DONE
            return ForwardEndOfMessage()
        buf = buffer.data
        if buf:
            data = bytes(buf[:left])
            del buf[: len(data)]
            self._left = left - len(data)
            return ForwardBodyData(data=data)
        if buffer.eof:
            raise RemoteProtocolError(
                f"the peer closed the connection after {self._seen - left} of the {self._seen} body octets "
                "its Content-Length announced"
            )
        return None

    def _chunked(self, buffer: ReceiveBuffer) -> ForwardBodyData | ForwardEndOfMessage | None:
        buf = buffer.data
        pos = 0  # octets of buf this call consumed
        pieces: list[bytes] = []
        ended: ForwardEndOfMessage | None = None
        try:
            while ended is None:
                phase = self._phase
                if phase is _Phase.DATA:
                    take = min(len(buf) - pos, self._left)
                    if take:
                        pieces.append(bytes(buf[pos : pos + take]))
                        pos += take
                        self._left -= take
                    if self._left:
                        break
                    self._phase = _Phase.DATA_END
                elif phase is _Phase.DATA_END:
                    have = bytes(buf[pos : pos + 2])
                    if have != b"\r\n"[: len(have)]:
                        raise RemoteProtocolError(
                            f"chunk data must be followed by CRLF, got {have!r} (is the chunk longer than its size?)"
                        )
                    if len(have) < 2:
                        break
                    pos += 2
                    self._scan = pos
                    self._phase = _Phase.SIZE
                elif phase is _Phase.SIZE:
                    if pos < len(buf) and buf[pos] not in _HEXDIGITS:
                        raise RemoteProtocolError(
                            f"expected a chunk size in hex digits (RFC 9112 §7.1), got {bytes(buf[pos : pos + 16])!r}"
                        )
                    lf = self._line_end(buf, pos, self._max_line, "chunk-size line")
                    if lf < 0:
                        break
                    self._chunk_size(bytes(buf[pos : lf - 1]))
                    pos = self._scan = lf + 1
                    if self._phase is _Phase.TRAILERS and pieces:
                        break  # hand the data over before the trailers
                else:  # TRAILERS
                    lf = self._line_end(buf, pos, self._max_line - self._trailer_size, "trailer section")
                    if lf < 0:
                        break
                    line = bytes(buf[pos : lf - 1])
                    self._trailer_size += lf + 1 - pos
                    pos = self._scan = lf + 1
                    if line:
                        self._trailer(line)
                    else:
                        ended = self._end()
        except RemoteProtocolError as exc:
            if not pieces:
                raise
            self._error = exc  # the data that came before the problem goes first
        finally:
            if pos:
                del buf[:pos]  # one delete per call
                self._scan = max(0, self._scan - pos)
        if pieces:
            return ForwardBodyData(data=b"".join(pieces))
        if ended is not None:
            return ended
        if buffer.eof:
            raise RemoteProtocolError("the peer closed the connection in the middle of the chunked body")
        return None

    def _line_end(self, buf: bytearray, pos: int, limit: int, what: str) -> int:
        """The offset of the LF ending the line at *pos*, or -1 while it is incomplete.

        The search resumes at ``self._scan`` and never looks past ``pos + limit``.
        """
        end = pos + max(limit, 0)
        lf = buf.find(b"\n", self._scan, end)
        if lf < 0:
            self._scan = max(pos, min(len(buf), end))
            if len(buf) - pos >= limit:
                raise RemoteProtocolError(f"the {what} is longer than {self._max_line} octets")
            return -1
        if lf == pos or buf[lf - 1] != 0x0D:
            raise RemoteProtocolError(f"bare LF in the {what}: lines must end with CRLF (RFC 9112 §2.2)")
        return lf

    def _chunk_size(self, line: bytes) -> None:
        match = _CHUNK_LINE.fullmatch(line)
        if match is None:
            raise RemoteProtocolError(
                f"malformed chunk-size line {line[:64]!r}: expected hex digits and optional "
                "';name=value' extensions (RFC 9112 §7.1, §7.1.1)"
            )
        digits = match[1].lstrip(b"0")
        if len(digits) > _MAX_SIZE_DIGITS:
            raise RemoteProtocolError(f"chunk size {match[1][:40]!r} is absurdly large")
        size = int(digits or b"0", 16)
        if self._max_body_size is not None:
            self._seen += size
            if self._seen > self._max_body_size:
                raise RemoteProtocolError(
                    f"a chunk of {size} octets makes the body longer than max_body_size ({self._max_body_size} octets)"
                )
        if size:
            self._left = size
            self._phase = _Phase.DATA
        else:
            self._phase = _Phase.TRAILERS

    def _trailer(self, line: bytes) -> None:
        if b"\r" in line:
            raise RemoteProtocolError(f"bare CR in trailer line {line[:64]!r} (RFC 9112 §2.2)")
        self._trailers.extend(_fields([line], None))

    def _end(self) -> ForwardEndOfMessage:
        try:
            event = ForwardEndOfMessage(trailers=self._trailers)
        except LocalProtocolError as exc:
            raise RemoteProtocolError(f"bad trailer field: {exc.message}") from None
        self._phase = _Phase.DONE
        return event

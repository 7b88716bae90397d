"""Streaming readers for plain-HTTP forward proxying, without I/O (RFC 9112).

* :class:`ForwardRequestReader` reads what a client sends to the proxy: request
  heads in absolute form, their bodies, and the next request on the same
  (persistent) connection once the caller says the exchange is over.
* :class:`ForwardResponseReader` (in :mod:`._http_forward_response`) reads
  what the origin sends back.

Both follow the contract of the connection classes: ``receive_data`` only
buffers (``b""`` is EOF), ``next_event`` returns one event, ``NEED_DATA`` or
``PAUSED``, ``trailing_data`` holds every octet not consumed, and only
:class:`RemoteProtocolError` escapes (with a ``reply_hint``: the response to
send the client, a :class:`ConnectResponse` with ``Connection: close``).

Head reading is the CONNECT machine's (:mod:`._http_wire`): the first octets
are judged at once (TLS, SOCKS, HTTP/2 fail before a line ends), the head-end
search resumes where it stopped and never looks past ``max_head_size``, bare
LF, bare CR, obsolete line folding and malformed fields are refused. Bodies
are streamed by :class:`BodyReader`.
"""

from __future__ import annotations

import enum
import re
from typing import Final, final

from ._buffer import ReceiveBuffer
from ._errors import LocalProtocolError, RemoteProtocolError
from ._http1 import _VISIBLE  # private: visible ASCII (VCHAR)
from ._http_body import BodyReader
from ._http_events import TOKEN, ConnectResponse
from ._http_forward_events import (
    ConnectHandOff,
    ForwardBodyData,
    ForwardEndOfMessage,
    ForwardRequest,
    FramingRefused,
    host_authority,
    request_framing,
)
from ._http_wire import (
    _fields,  # private: field-line parsing (RFC 9112 §5)
    _guess,  # private: what a non-HTTP first octet looks like
    _lines,  # private: head lines, bare CR refused
    find_head_end,
    head_octets_needed,
)
from ._socks5_events import ConnectionClosed
from ._util import NEED_DATA, PAUSED, NeedData, Paused

__all__ = [
    "BAD_GATEWAY",
    "BAD_REQUEST",
    "HEAD_TOO_LARGE",
    "IDLE",
    "NOT_IMPLEMENTED",
    "TLS_NOT_ORIGINATED",
    "VERSION_NOT_SUPPORTED",
    "ForwardRequestReader",
    "ForwardState",
    "check_size",
]


def _refusal(status: int, text: str) -> ConnectResponse:
    return ConnectResponse(
        status_code=status,
        headers=((b"Connection", b"close"), (b"Content-Type", b"text/plain")),
        body=text.encode("ascii") + b"\n",
    )


BAD_REQUEST: Final = _refusal(400, "The request is malformed or is not one a forward proxy can forward.")
"""Hint for a malformed request, or one not in absolute form (RFC 9110 §15.5.1)."""
HEAD_TOO_LARGE: Final = _refusal(431, "The request head is too large.")
"""Hint for a request head over ``max_head_size`` (RFC 6585 §5)."""
NOT_IMPLEMENTED: Final = _refusal(501, "This proxy forwards http:// URLs with chunked or Content-Length bodies only.")
"""Hint for an unsupported transfer coding or URI scheme (RFC 9110 §15.6.2)."""
TLS_NOT_ORIGINATED: Final = _refusal(
    501, "This proxy does not originate TLS: send https:// requests through a CONNECT tunnel."
)
"""Hint for an ``https://`` absolute-form target."""
VERSION_NOT_SUPPORTED: Final = _refusal(505, "This proxy speaks HTTP/1.0 and HTTP/1.1.")
"""Hint for HTTP/0.9, HTTP/2 or another major version (RFC 9110 §15.6.6)."""
BAD_GATEWAY: Final = _refusal(502, "The origin server sent an invalid response.")
"""Hint of the response reader: what to tell the client when the origin broke HTTP (RFC 9110 §15.6.3)."""

_HINTS: Final = {400: BAD_REQUEST, 501: NOT_IMPLEMENTED}
_CONNECT: Final = b"CONNECT "
_METHOD_SCAN: Final = 32
# request-line = method SP request-target SP HTTP-version (RFC 9112 §3)
_REQUEST_LINE: Final = re.compile(rb"([^ ]+) ([^ ]+) HTTP/([0-9])\.([0-9])")
_SCHEME: Final = re.compile(rb"[A-Za-z][A-Za-z0-9+\-.]*")


class ForwardState(enum.Enum):
    """Where a forward reader is."""

    AWAIT_HEAD = "AWAIT_HEAD"
    """Reading a head (after a 1xx too, for the response reader)."""
    BODY = "BODY"
    """Reading the body: :class:`ForwardBodyData` events, then :class:`ForwardEndOfMessage`."""
    DONE = "DONE"
    """The message is whole; ``PAUSED`` until ``start_next_cycle()``."""
    MUST_CLOSE = "MUST_CLOSE"
    """The message is whole and the connection cannot carry another; ``PAUSED`` from now on."""
    HANDED_OFF = "HANDED_OFF"
    """A CONNECT request starts ``trailing_data`` (request reader only); ``PAUSED`` from now on."""
    CLOSED = "CLOSED"
    """The peer closed between messages (:class:`ConnectionClosed` was returned)."""
    ERROR = "ERROR"
    """The peer broke the protocol; ``next_event`` raises again."""


IDLE: Final = frozenset({ForwardState.DONE, ForwardState.MUST_CLOSE, ForwardState.HANDED_OFF, ForwardState.CLOSED})


def check_size(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


def _split_target(target: bytes, method: bytes) -> tuple[bytes, bytes, bytes]:
    """``(scheme, authority, origin-form path)`` of an absolute-form *target* (RFC 9112 §3.2.2)."""
    if target.startswith(b"/") or target == b"*":
        raise RemoteProtocolError(
            f"request-target {target[:64]!r} is in origin form: a proxy needs the absolute form "
            "(http://host/path, RFC 9112 §3.2.2); is this request meant for an origin server?",
            reply_hint=BAD_REQUEST,
        )
    scheme, sep, rest = target.partition(b"://")
    if not sep or not _SCHEME.fullmatch(scheme):
        raise RemoteProtocolError(
            f"request-target {target[:64]!r} is not in absolute form (http://host/path, RFC 9112 §3.2.2)",
            reply_hint=BAD_REQUEST,
        )
    scheme = scheme.lower()
    if scheme == b"https":
        raise RemoteProtocolError(
            "an https:// target: this proxy does not originate TLS; the client must use CONNECT",
            reply_hint=TLS_NOT_ORIGINATED,
        )
    if scheme != b"http":
        raise RemoteProtocolError(f"scheme {scheme[:16]!r} is not forwarded: only http", reply_hint=NOT_IMPLEMENTED)
    if not _VISIBLE.fullmatch(target):
        raise RemoteProtocolError(
            f"request-target {target[:64]!r} holds a control or non-ASCII octet", reply_hint=BAD_REQUEST
        )
    end = len(rest)
    for stop in (b"/", b"?", b"#"):
        at = rest.find(stop)
        if 0 <= at < end:
            end = at
    authority, path = rest[:end], rest[end:]
    if b"#" in path:
        raise RemoteProtocolError(
            "the request-target has a fragment ('#'), which is never sent (RFC 9112 §3.2)", reply_hint=BAD_REQUEST
        )
    if not path:
        path = b"*" if method == b"OPTIONS" else b"/"  # RFC 9112 §3.2.4, §3.2.1
    elif path.startswith(b"?"):
        path = b"/" + path
    return scheme, authority, path


def _parse_request_head(head: bytes) -> ForwardRequest:
    """A whole request head (ending in CRLF CRLF) as a ForwardRequest.

    Raises:
        RemoteProtocolError: with the hint to answer (400, 501, 505).
    """
    lines = _lines(head, BAD_REQUEST)
    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        raise RemoteProtocolError(
            f"request line {lines[0][:100]!r} is not 'METHOD http://host/path HTTP/1.1'", reply_hint=BAD_REQUEST
        )
    method, target = match[1], match[2]
    if not TOKEN.fullmatch(method):
        raise RemoteProtocolError(f"method {method[:40]!r} is not a token (RFC 9110 §9.1)", reply_hint=BAD_REQUEST)
    if match[3] != b"1":
        raise RemoteProtocolError(
            f"HTTP/{match[3].decode()}.{match[4].decode()} is not spoken here: HTTP/1.x only",
            reply_hint=VERSION_NOT_SUPPORTED,
        )
    version = b"1." + match[4]
    fields = _fields(lines[1:], BAD_REQUEST)
    hosts = sum(1 for name, _ in fields if name.lower() == b"host")
    if hosts > 1 or (hosts == 0 and version != b"1.0"):
        raise RemoteProtocolError(
            f"an HTTP/1.1 request carries exactly one Host header, got {hosts} (RFC 9112 §3.2)", reply_hint=BAD_REQUEST
        )
    scheme, authority, path = _split_target(target, method)
    try:
        address = host_authority(authority)
        return ForwardRequest(
            method=method, target=address, path=path, headers=fields, http_version=version, scheme=scheme
        )
    except FramingRefused as exc:
        raise RemoteProtocolError(f"bad request framing: {exc.message}", reply_hint=_HINTS[exc.status]) from None
    except LocalProtocolError as exc:
        raise RemoteProtocolError(f"bad request: {exc.message}", reply_hint=BAD_REQUEST) from None


@final
class ForwardRequestReader:
    """Reads the requests a client sends to a forward proxy, one exchange after another.

    ``next_event()`` returns a :class:`ForwardRequest`, then its body as
    :class:`ForwardBodyData` events and one :class:`ForwardEndOfMessage` (right away when it
    has no body), then ``PAUSED`` in ``DONE`` until :meth:`start_next_cycle`
    (or in ``MUST_CLOSE`` when the request was the last, :attr:`keep_alive`).
    A ``CONNECT`` request is not read: :class:`ConnectHandOff` is returned and
    ``trailing_data`` starts with it. EOF between requests is
    :class:`ConnectionClosed`. Empty lines before a request line are skipped
    (RFC 9112 §2.2).

    Args:
        max_head_size: the longest head (CRLF CRLF included), chunk-size line and
            trailer section accepted (default 16 KiB).

    Raises:
        TypeError, ValueError: *max_head_size* not an int >= 1.
    """

    __slots__ = ("_body", "_buffer", "_max_head_size", "_request", "_scan", "_started", "_state")

    def __init__(self, *, max_head_size: int = 16 * 1024) -> None:
        self._max_head_size = check_size("max_head_size", max_head_size)
        self._buffer = ReceiveBuffer()
        self._state = ForwardState.AWAIT_HEAD
        self._request: ForwardRequest | None = None
        self._body: BodyReader | None = None
        self._scan = 0  # where the head-end search resumes
        self._started = False  # the head's first octets were judged: a method, not CONNECT

    @property
    def state(self) -> ForwardState:
        """The reader's state."""
        return self._state

    @property
    def request(self) -> ForwardRequest | None:
        """The request being read or just read (``None`` before its head)."""
        return self._request

    @property
    def keep_alive(self) -> bool:
        """Whether another request may follow on this connection (:attr:`ForwardRequest.keep_alive`)."""
        return self._request is not None and self._state is not ForwardState.ERROR and self._request.keep_alive

    @property
    def trailing_data(self) -> tuple[bytes, bool]:
        """``(octets, eof_seen)``: what was received and not consumed (after ``HANDED_OFF``: the CONNECT request on)."""
        return self._buffer.snapshot()

    @property
    def read_size_hint(self) -> int:
        """How many octets can be read without reading past the current message (0 when paused)."""
        state = self._state
        if state is ForwardState.AWAIT_HEAD:
            return head_octets_needed(self._buffer.data)
        if state is ForwardState.BODY and self._body is not None:
            return self._body.read_size_hint(self._buffer.data)
        return 0

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer octets from the client; ``b""`` means it closed (EOF). Nothing is parsed here.

        Raises:
            RuntimeError: non-empty data after EOF.
        """
        self._buffer.feed(data)

    def start_next_cycle(self) -> None:
        """The exchange is over (the response was sent): read the next request.

        Raises:
            LocalProtocolError: not in ``DONE`` (the request is not whole, or it
                was the last one: ``MUST_CLOSE``).
        """
        if self._state is not ForwardState.DONE:
            raise LocalProtocolError(f"start_next_cycle() needs state DONE, not {self._state.name}")
        self._state = ForwardState.AWAIT_HEAD
        self._request = None
        self._body = None
        self._scan = 0
        self._started = False

    def next_event(
        self,
    ) -> ForwardRequest | ForwardBodyData | ForwardEndOfMessage | ConnectHandOff | ConnectionClosed | NeedData | Paused:
        """Parse what was received so far.

        Raises:
            RemoteProtocolError: the client broke HTTP/1.1 or a limit; its
                ``reply_hint`` is the response to send before closing (400, 431,
                501, 505). The state is then ``ERROR`` and every call raises again.
        """
        state = self._state
        if state in IDLE:
            return PAUSED
        if state is ForwardState.ERROR:
            raise RemoteProtocolError("the client broke the protocol; this reader cannot go on", reply_hint=BAD_REQUEST)
        try:
            if state is ForwardState.AWAIT_HEAD:
                return self._read_head()
            assert self._body is not None
            event = self._body.next_event(self._buffer)
        except RemoteProtocolError as exc:
            self._state = ForwardState.ERROR
            if exc.reply_hint is None:
                raise RemoteProtocolError(exc.message, reply_hint=BAD_REQUEST) from None
            raise
        except LocalProtocolError as exc:  # a received value our own validators refused
            self._state = ForwardState.ERROR
            raise RemoteProtocolError(f"bad request: {exc.message}", reply_hint=BAD_REQUEST) from None
        if event is None:
            return NEED_DATA
        if isinstance(event, ForwardEndOfMessage):
            self._state = ForwardState.DONE if self.keep_alive else ForwardState.MUST_CLOSE
        return event

    def _read_head(self) -> ForwardRequest | ConnectHandOff | ConnectionClosed | NeedData:
        buffer = self._buffer
        buf = buffer.data
        if not self._started:
            skip = 0
            while buf[skip : skip + 2] == b"\r\n":
                skip += 2
            if skip:
                del buf[:skip]  # empty lines before a request line (RFC 9112 §2.2)
            if not buf:
                if buffer.eof:
                    self._state = ForwardState.CLOSED
                    return ConnectionClosed()
                return NEED_DATA
            if buf == b"\r" and not buffer.eof:
                return NEED_DATA
            if self._judge_start(buf):
                self._state = ForwardState.HANDED_OFF
                return ConnectHandOff()
            if not self._started:
                if buffer.eof:
                    raise RemoteProtocolError("the client closed the connection in the middle of a request line")
                return NEED_DATA
        end, self._scan = find_head_end(buf, self._scan, self._max_head_size, BAD_REQUEST)
        if end < 0:
            if len(buf) >= self._max_head_size:
                raise RemoteProtocolError(
                    f"the request head is longer than max_head_size ({self._max_head_size} octets)",
                    reply_hint=HEAD_TOO_LARGE,
                )
            if buffer.eof:
                raise RemoteProtocolError(
                    f"the client closed the connection in the middle of a request head ({len(buf)} octets)"
                )
            return NEED_DATA
        head = bytes(buf[:end])
        del buf[:end]  # one delete per head
        self._scan = 0
        request = _parse_request_head(head)
        self._request = request
        framing, length = request_framing(request.headers, request.http_version)
        self._body = BodyReader(framing, length, self._max_head_size)
        self._state = ForwardState.BODY
        return request

    def _judge_start(self, buf: bytearray) -> bool:
        """Judge a head's first octets (a bounded amount of work); True for CONNECT.

        Sets ``_started`` once they are a method that is not CONNECT.

        Raises:
            RemoteProtocolError: no method (TLS, SOCKS, garbage), the HTTP/2 preface.
        """
        have = min(len(buf), len(_CONNECT))
        if buf[:have] == _CONNECT[:have]:
            return have == len(_CONNECT)
        scan = min(_METHOD_SCAN, self._max_head_size)
        space = buf.find(b" ", 0, scan)
        method = bytes(buf[: space if space >= 0 else scan])
        if not TOKEN.fullmatch(method):
            raise RemoteProtocolError(
                f"the request does not start with an HTTP method: {bytes(buf[:16])!r}{_guess(buf[0])}",
                reply_hint=BAD_REQUEST,
            )
        if space < 0:
            if len(buf) < scan:
                return False
            raise RemoteProtocolError(f"no method in the request's first {scan} octets", reply_hint=BAD_REQUEST)
        if method == b"PRI":
            raise RemoteProtocolError(
                "the client sent the HTTP/2 connection preface; this proxy speaks HTTP/1.x",
                reply_hint=VERSION_NOT_SUPPORTED,
            )
        self._started = True
        return False

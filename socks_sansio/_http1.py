"""A small HTTP/1.1 client codec: write one request, read its response (RFC 9112).

The adapters' ``http_request()`` sends one request through a tunnel and reads
one response; this module is the pure part of that. It is not a general HTTP
client: no pipelining, no connection reuse, no content codings.

Strategy:

* :func:`encode_request` validates every field before producing any octet:
  the method must be a token, the target and Host visible ASCII, header names
  tokens and values free of CR, LF, NUL and other controls (the header rules of
  :mod:`._http_events` are reused), so nothing can inject a line.
* :class:`ResponseReader` reuses the CONNECT machine's head reading
  (:mod:`._http_wire`): garbage is refused from its first octets, the head-end
  search resumes where it stopped and is capped at ``max_head_size``, and the
  head is parsed by the same status-line and field rules. 1xx heads are
  skipped; then the body is framed as RFC 9112 §6.3 says: none (HEAD, 1xx,
  204, 304, a 2xx to CONNECT), ``Transfer-Encoding: chunked`` (§7.1),
  ``Content-Length`` (§6.2) or, with neither, everything until EOF.
* The body is decoded by :class:`._http_body.BodyReader`, the library's one
  body decoder (the forward proxy streams with it too), and gathered here up
  to ``max_body_size``: linear however the input is fragmented, a chunked
  body walked with a cursor, a chunk that would pass the cap refused when its
  size line arrives.
* Every problem in the received octets raises :class:`RemoteProtocolError`
  and leaves the reader in error; nothing else escapes.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from typing import Final, final

import attrs

from ._buffer import ReceiveBuffer
from ._errors import LocalProtocolError, RemoteProtocolError
from ._http_body import BodyReader
from ._http_events import (
    TOKEN,
    Headers,
    _headers,  # private: the header normalisation and validation ConnectRequest uses
    _reason,  # private: reason-phrase validation (RFC 9112 §4)
    _status,  # private: status-code validation (100..599)
    content_length,
)
from ._http_forward_events import ForwardEndOfMessage, Framing
from ._http_wire import (
    check_response_start,
    find_head_end,
    parse_response_head,
)
from ._util import NEED_DATA, NeedData
from ._validators import to_bytes

__all__ = ["HttpResponse", "ResponseReader", "encode_request"]

# Methods whose requests carry content by definition, so an empty body is
# still announced (RFC 9110 §8.6: a user agent SHOULD send Content-Length then).
_CONTENT_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
# Visible ASCII (VCHAR, RFC 5234 B.1): what a request-target and a Host value are made of
# once percent-encoded (RFC 3986 §2.1).
_VISIBLE: Final = re.compile(rb"[\x21-\x7e]+")
_HTTP1_PREFIX: Final = len(b"HTTP/1.")
# "HTTP/1.x SSS " is 13 octets: the reason phrase starts after it (RFC 9112 §4).
_REASON_AT: Final = len(b"HTTP/1.1 200 ")


def _visible(what: str, value: object) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be str, not {type(value).__name__}")
    if not value:
        raise LocalProtocolError(f"{what} must not be empty")
    if any(c in value for c in "\r\n\0"):
        raise LocalProtocolError(f"{what} {value!r} contains CR, LF or NUL (refused: that would inject lines)")
    if not value.isascii():
        raise LocalProtocolError(
            f"{what} {value!r} holds non-ASCII characters: percent-encode them (RFC 3986 §2.1) "
            "or use the IDNA form of a host name"
        )
    octets = value.encode("ascii")
    if not _VISIBLE.fullmatch(octets):
        raise LocalProtocolError(f"{what} {value!r} contains whitespace or a control character")
    return octets


def encode_request(
    method: str,
    target: str,
    *,
    host: str,
    headers: Iterable[tuple[str | bytes, str | bytes]] = (),
    body: bytes = b"",
) -> bytes:
    """The octets of one HTTP/1.1 request (RFC 9112 §3).

    Written as ``METHOD target HTTP/1.1``, then ``Host: host`` (first, RFC 9110
    §7.2) unless *headers* hold a ``Host`` (that one is sent instead), then
    *headers* in order, then ``Content-Length`` when *body* is not empty or the
    method is ``POST``, ``PUT`` or ``PATCH`` (``Content-Length: 0``), unless
    *headers* already hold a matching one. The body is always framed by
    ``Content-Length``. Nothing else is added: send ``Connection: close`` to have
    the server end the connection after its response.

    Args:
        method: a token (RFC 9110 §9.1), case-sensitive: ``"GET"``, ``"POST"``...
        target: the request-target as it goes on the wire (RFC 9112 §3.2):
            ``"/path?query"``, ``"http://host/path"`` (to a forwarding proxy),
            ``"*"``; visible ASCII only, so percent-encode anything else.
        host: the ``Host`` value, ``host`` or ``host:port`` (IPv6 bracketed),
            visible ASCII (use the IDNA form of an internationalised name).
        headers: ``(name, value)`` pairs, ``str`` (UTF-8) or bytes; values lose
            surrounding SP/HTAB.
        body: the content, sent as is.

    Returns:
        The request head followed by the body.

    Raises:
        TypeError: an argument of the wrong type.
        LocalProtocolError: a method that is not a token; CR, LF, NUL or another
            control in any field; an empty target or host; more than one ``Host``
            or ``Content-Length``; a ``Transfer-Encoding`` header; a
            ``Content-Length`` header that disagrees with *body*.
    """
    if not isinstance(method, str):
        raise TypeError(f"method must be str, not {type(method).__name__}")
    method_octets = method.encode("ascii") if method.isascii() else b""
    if not TOKEN.fullmatch(method_octets):
        raise LocalProtocolError(f"method {method!r} is not a token (RFC 9110 §9.1, §5.6.2)")
    target_octets = _visible("target", target)
    host_octets = _visible("host", host)
    if not isinstance(body, bytes | bytearray | memoryview):
        raise TypeError(f"body must be bytes, not {type(body).__name__}")
    body = bytes(body)
    fields = _headers(headers)
    names = [name.lower() for name, _ in fields]
    hosts = names.count(b"host")
    if hosts > 1:
        raise LocalProtocolError(f"a request carries one Host header, got {hosts} (RFC 9112 §3.2)")
    if b"transfer-encoding" in names:
        raise LocalProtocolError(
            "encode_request frames the body with Content-Length; remove the Transfer-Encoding header"
        )
    if not hosts:
        fields = ((b"Host", host_octets), *fields)
    lengths = names.count(b"content-length")
    if lengths > 1:
        raise LocalProtocolError(f"a request carries at most one Content-Length header, got {lengths}")
    if lengths:
        if content_length(fields) != len(body):
            given = [value for name, value in fields if name.lower() == b"content-length"]
            raise LocalProtocolError(f"Content-Length {given!r} disagrees with the body of {len(body)} octets")
    elif body or method in _CONTENT_METHODS:
        fields = (*fields, (b"Content-Length", b"%d" % len(body)))
    return (
        method_octets + b" " + target_octets + b" HTTP/1.1\r\n"
        + b"".join(name + b": " + value + b"\r\n" for name, value in fields)
        + b"\r\n" + body
    )


@final
@attrs.frozen(kw_only=True)
class HttpResponse:
    """The final response to a request, with its whole body (RFC 9112 §4, §6).

    Interim (1xx) responses are not represented: the reader skips them. A 101
    is final here (the connection then speaks another protocol: its octets are
    in the reader's ``trailing_data``).

    Args:
        status_code: 100 to 599.
        reason: the reason phrase exactly as received (may be empty).
        headers: the header fields in order, as ``(name, value)`` octets, names
            in their received case, values without surrounding SP/HTAB. Trailer
            fields of a chunked body are not included (RFC 9110 §6.5.2).
        body: the content, with its transfer coding (chunked) removed; content
            codings such as gzip are left as received.

    Raises:
        TypeError: a field of the wrong type.
        LocalProtocolError: a status out of range, a control character in the
            reason or a header field, a header name that is not a token.
    """

    status_code: int = attrs.field(converter=_status)
    reason: bytes = attrs.field(default=b"", converter=_reason)
    headers: Headers = attrs.field(default=(), converter=_headers)
    body: bytes = attrs.field(default=b"", converter=to_bytes, repr=lambda b: f"<{len(b)} octets>")

    def get(self, name: str | bytes) -> bytes | None:
        """The first value of header *name* (any case), or ``None``."""
        values = self.get_all(name)
        return values[0] if values else None

    def get_all(self, name: str | bytes) -> tuple[bytes, ...]:
        """Every value of header *name* (any case), in order (for example every ``Set-Cookie``)."""
        wanted = to_bytes(name).lower()
        return tuple(value for key, value in self.headers if key.lower() == wanted)


class _Phase(enum.Enum):
    HEAD = enum.auto()  # reading a status line and header section (interim ones too)
    BODY = enum.auto()  # reading the body with a BodyReader (RFC 9112 §6, §7.1)
    DONE = enum.auto()
    ERROR = enum.auto()


@final
class ResponseReader:
    """Reads the response to one HTTP/1.1 request, without I/O.

    Feed received octets to :meth:`receive_data` and call :meth:`next_event`
    until it returns the :class:`HttpResponse` instead of ``NEED_DATA``. The
    octets after the response (none, unless the server sent more) are then in
    :attr:`trailing_data`.

    Args:
        max_head_size: the longest head accepted, CRLF CRLF included; also the
            longest chunk-size line and the longest trailer section.
        max_body_size: the longest body accepted (after removing the chunked coding).
        request_method: the method of the request this answers: a response to
            ``HEAD`` has no body, nor does a 2xx to ``CONNECT`` (RFC 9112 §6.3).

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: *max_head_size* below 1 or *max_body_size* below 0.
        LocalProtocolError: *request_method* is not a token.
    """

    __slots__ = (
        "_body",
        "_body_reader",
        "_buffer",
        "_max_body_size",
        "_max_head_size",
        "_phase",
        "_request_method",
        "_response",
        "_scan",
    )

    def __init__(
        self, *, max_head_size: int = 16 * 1024, max_body_size: int = 16 * 1024 * 1024, request_method: str = "GET"
    ) -> None:
        for name, value, low in (("max_head_size", max_head_size, 1), ("max_body_size", max_body_size, 0)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be int, not {type(value).__name__}")
            if value < low:
                raise ValueError(f"{name} must be at least {low}, got {value}")
        if not isinstance(request_method, str):
            raise TypeError(f"request_method must be str, not {type(request_method).__name__}")
        if not (request_method.isascii() and TOKEN.fullmatch(request_method.encode("ascii"))):
            raise LocalProtocolError(f"request_method {request_method!r} is not a token (RFC 9110 §9.1)")
        self._max_head_size = max_head_size
        self._max_body_size = max_body_size
        self._request_method = request_method
        self._buffer = ReceiveBuffer()
        self._phase = _Phase.HEAD
        # Where the current search for a line end (or head end) resumes.
        self._scan = 0
        # The final head, once read, as (status, reason, headers).
        self._response: tuple[int, bytes, Headers] | None = None
        self._body = bytearray()  # the body, as it is decoded
        self._body_reader: BodyReader | None = None  # once the final head was read (None: no body)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer octets received from the server; ``b""`` means it closed (EOF).

        Nothing is parsed here: call :meth:`next_event`.

        Raises:
            RuntimeError: non-empty data after EOF.
        """
        self._buffer.feed(data)

    def next_event(self) -> HttpResponse | NeedData:
        """Parse what was received so far.

        Returns:
            The final :class:`HttpResponse` once it is whole; ``NEED_DATA`` until then
            (read more and call :meth:`receive_data`, with ``b""`` at EOF).

        Raises:
            RemoteProtocolError: the server's octets break HTTP/1.1 or exceed a
                limit, or it closed before the response was whole. The reader is
                then in error and raises it again on every call.
            LocalProtocolError: the response was already returned (its following
                octets are in :attr:`trailing_data`).
        """
        if self._phase is _Phase.DONE:
            raise LocalProtocolError("the response was already returned; later octets are in trailing_data")
        if self._phase is _Phase.ERROR:
            raise RemoteProtocolError("the response was malformed; this reader cannot go on")
        try:
            return self._advance()
        except RemoteProtocolError:
            self._phase = _Phase.ERROR
            raise
        except LocalProtocolError as exc:  # a received value our own validators refused
            self._phase = _Phase.ERROR
            raise RemoteProtocolError(f"bad response: {exc.message}") from exc

    @property
    def trailing_data(self) -> tuple[bytes, bool]:
        """``(octets, eof_seen)``: what was received and not consumed as the response.

        After the response is returned these are the octets the server sent after
        it (for example a second response, or the new protocol after a 101).
        """
        return self._buffer.snapshot()

    # -- reading ---------------------------------------------------------------------------

    @property
    def read_size_hint(self) -> int:
        """How many octets can be read without reading past the end of the response.

        ``0`` once the response was returned (or failed). While a head or a line is
        incomplete this is small (it cannot know where the line ends), so a reader
        that must never over-read pays a few extra reads; bodies are read in one go.
        """
        phase, buf = self._phase, self._buffer.data
        if phase is _Phase.BODY:
            assert self._body_reader is not None
            return self._body_reader.read_size_hint(buf)
        if phase is _Phase.HEAD:
            for tail, need in ((b"\r\n\r", 1), (b"\r\n", 2), (b"\r", 3)):
                if buf.endswith(tail):
                    return need
            return 4
        return 0

    def _advance(self) -> HttpResponse | NeedData:
        while self._phase is _Phase.HEAD:
            if not self._read_head():
                return NEED_DATA
        reader = self._body_reader
        if reader is None:  # no body
            return self._finish()
        while (event := reader.next_event(self._buffer)) is not None:
            if isinstance(event, ForwardEndOfMessage):  # its trailers are judged, then dropped
                return self._finish()
            self._body += event.data
        return NEED_DATA

    def _read_head(self) -> bool:
        """Read one head; ``True`` when one was consumed (the phase then tells what follows)."""
        buf = self._buffer.data
        if not buf:
            if self._buffer.eof:
                what = "the final response after an interim one" if self._response else "a response"
                raise RemoteProtocolError(f"the server closed the connection without sending {what}")
            return False
        if self._scan < _HTTP1_PREFIX:  # once the search passed it, the prefix was checked whole
            check_response_start(buf)
        end, self._scan = find_head_end(buf, self._scan, self._max_head_size, None)
        if end < 0:
            if len(buf) >= self._max_head_size:
                raise RemoteProtocolError(
                    f"the response head is longer than max_head_size ({self._max_head_size} octets) "
                    "without ending in CRLF CRLF"
                )
            if self._buffer.eof:
                raise RemoteProtocolError(
                    f"the server closed the connection in the middle of the response head ({len(buf)} octets)"
                )
            return False
        head = bytes(buf[:end])
        del buf[:end]  # one delete per head
        self._scan = 0
        parsed = parse_response_head(head)
        status = parsed.status_code
        reason = head[_REASON_AT : head.index(b"\r\n")]
        self._response = (status, reason, parsed.headers)
        if 100 <= status <= 199 and status != 101:
            return True  # interim (RFC 9110 §15.2): the final response follows; phase stays HEAD
        self._body_reader = self._framing(status, parsed.headers)
        self._phase = _Phase.BODY
        return True

    def _framing(self, status: int, headers: Headers) -> BodyReader | None:
        """How the body is delimited (RFC 9112 §6.3): its reader, ``None`` for no body."""
        if (
            self._request_method == "HEAD"
            or status <= 199
            or status in (204, 304)
            or (self._request_method == "CONNECT" and status <= 299)
        ):
            return None
        codings = [
            coding.strip(b" \t").lower()
            for name, value in headers
            if name.lower() == b"transfer-encoding"
            for coding in value.split(b",")
        ]
        codings = [coding for coding in codings if coding]
        lengths = [value for name, value in headers if name.lower() == b"content-length"]
        if any(name.lower() == b"transfer-encoding" for name, _ in headers):
            if lengths:
                raise RemoteProtocolError(
                    "the response has both Transfer-Encoding and Content-Length; a server must not send "
                    "both (RFC 9112 §6.1), and reading either could let a body be misread"
                )
            if codings != [b"chunked"]:
                shown = b", ".join(codings).decode("ascii", "replace")
                raise RemoteProtocolError(
                    f"unsupported Transfer-Encoding {shown!r}: only 'chunked' alone is read (RFC 9112 §7)"
                )
            return BodyReader(Framing.CHUNKED, None, self._max_head_size, self._max_body_size)
        if lengths:
            length = content_length(headers)
            if length is None and all(value == lengths[0] for value in lengths) and lengths[0].isdigit():
                raise RemoteProtocolError(f"Content-Length {lengths[0][:64]!r} is absurdly large")
            if length is None:
                raise RemoteProtocolError(
                    f"invalid Content-Length {lengths!r}: expected one decimal number (RFC 9110 §8.6)"
                )
            if length > self._max_body_size:
                raise RemoteProtocolError(
                    f"the body announces {length} octets, more than max_body_size ({self._max_body_size})"
                )
            return BodyReader(Framing.CONTENT_LENGTH, length, self._max_head_size) if length else None
        return BodyReader(Framing.UNTIL_CLOSE, None, self._max_head_size, self._max_body_size)

    def _finish(self) -> HttpResponse:
        assert self._response is not None, "a head was read"
        status, reason, headers = self._response
        self._phase = _Phase.DONE
        return HttpResponse(status_code=status, reason=reason, headers=headers, body=bytes(self._body))

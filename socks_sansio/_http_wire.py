"""HTTP CONNECT wire format (RFC 9112): find a head, parse it, write one.

Strategy:

* A head ends at the first CRLF CRLF (RFC 9112 §2.1). :func:`find_head_end`
  walks the buffer from line end to line end and returns where to resume, so the
  connection never looks at an octet twice however the head is fragmented (one
  octet per segment costs the same as one segment). The search never looks past
  ``max_head_size`` octets.
* Line endings must be CRLF, both ways. A bare LF is refused the moment it
  arrives (a client that ends lines with LF alone would otherwise wait for a
  head end that never comes); a bare CR is refused once the head is complete.
* Before a head is complete its first octets are checked at once (a bounded
  amount of work): a request must start with ``CONNECT ``, a response with
  ``HTTP/1.``. So TLS, SOCKS, HTTP/2 or ``GET`` fail at once with a message that
  says what it looked like, instead of waiting for a head end.
* Readers raise only :class:`RemoteProtocolError`. For a request the error
  carries the response a server should send (400, 405 or 431).
* Parsed heads become events through ``parsed_request``/``parsed_response``,
  which apply the constructors' rules to what the head syntax leaves open
  (target, field values, Host) without re-checking what it settled (names).
"""

from __future__ import annotations

import re
from typing import Final

from ._errors import LocalProtocolError, RemoteProtocolError
from ._http_events import (
    TOKEN,
    ConnectRequest,
    ConnectResponse,
    Headers,
    HttpConnectEvent,
    content_length,
    parsed_request,
    parsed_response,
)
from ._socks5_events import ConnectionClosed
from ._util import remember

__all__ = [
    "BAD_REQUEST",
    "HEAD_TOO_LARGE",
    "METHOD_NOT_ALLOWED",
    "START_CHECKED",
    "check_request_start",
    "check_response_start",
    "encode_event",
    "find_head_end",
    "head_octets_needed",
    "parse_request_head",
    "parse_response_head",
    "read_response_head",
    "response_body_length",
]

_CLOSE: Final = (b"Connection", b"close")

BAD_REQUEST: Final = ConnectResponse(status_code=400, headers=(_CLOSE,))
"""Hint for a malformed request (RFC 9110 §15.5.1)."""
HEAD_TOO_LARGE: Final = ConnectResponse(status_code=431, headers=(_CLOSE,))
"""Hint for a request head over ``max_head_size`` (RFC 6585 §5)."""
METHOD_NOT_ALLOWED: Final = ConnectResponse(
    status_code=405,
    headers=((b"Allow", b"CONNECT"), _CLOSE, (b"Content-Type", b"text/plain")),
    body=b"This is an HTTP CONNECT proxy: it only accepts CONNECT requests (RFC 9110 9.3.6).\n",
)
"""Hint for any method but CONNECT; ``Allow`` is required in a 405 (RFC 9110 §15.5.6)."""

_CONNECT: Final = b"CONNECT "
_HTTP1: Final = b"HTTP/1."
_END: Final = b"\r\n\r\n"
_METHOD_SCAN: Final = 32  # a method longer than this is not one we would answer anyway

START_CHECKED: Final = _METHOD_SCAN
"""Once a buffer of this many octets passed :func:`check_request_start` or
:func:`check_response_start`, every longer one does: the start is settled."""
_REQUEST_LINE: Final = re.compile(rb"CONNECT ([^ ]+) HTTP/(1\.[0-9])")
# status-line = HTTP-version SP status-code SP [ reason-phrase ] (RFC 9112 §4);
# a missing SP before an empty reason is tolerated.
_STATUS_LINE: Final = re.compile(rb"HTTP/(1\.[0-9]) ([0-9]{3})(?: (.*))?", re.DOTALL)


def _guess(first: int) -> str:
    if first in (0x16, 0x15):
        return " (this looks like TLS: is this HTTPS to a plain-HTTP port, or TLS the other end does not expect?)"
    if first == 0x05:
        return " (this looks like SOCKS5)"
    if first in (0x00, 0x04):
        return " (this looks like SOCKS4)"
    return ""


def check_request_start(buf: bytearray) -> None:
    """Refuse a request at once when its first octets cannot begin ``CONNECT ``.

    Raises:
        RemoteProtocolError: TLS or SOCKS bytes, the HTTP/2 preface (RFC 9113 §3.4)
            or a non-token (hint 400); another method, once complete (hint 405).
    """
    have = min(len(buf), len(_CONNECT))
    if buf[:have] == _CONNECT[:have]:
        return
    space = buf.find(b" ", 0, _METHOD_SCAN)
    method = bytes(buf[: space if space >= 0 else _METHOD_SCAN])
    if not TOKEN.fullmatch(method):
        raise RemoteProtocolError(
            f"the request does not start with an HTTP method: {bytes(buf[:16])!r}{_guess(buf[0])}",
            reply_hint=BAD_REQUEST,
        )
    if space < 0:
        if len(buf) < _METHOD_SCAN:
            return
        raise RemoteProtocolError(f"no method in the request's first {_METHOD_SCAN} octets", reply_hint=BAD_REQUEST)
    if method == b"PRI":
        raise RemoteProtocolError(
            "the client sent the HTTP/2 connection preface; this proxy speaks HTTP/1.1 CONNECT only",
            reply_hint=BAD_REQUEST,
        )
    raise RemoteProtocolError(
        f"method {method.decode('ascii')} is not allowed: this is an HTTP CONNECT proxy, which only "
        "tunnels (the client may be using it as a forwarding proxy for plain HTTP)",
        reply_hint=METHOD_NOT_ALLOWED,
    )


def check_response_start(buf: bytearray) -> None:
    """Refuse a response at once when its first octets cannot begin ``HTTP/1.``.

    Raises:
        RemoteProtocolError: anything else, with a guess at what it is.
    """
    have = min(len(buf), len(_HTTP1))
    if buf[:have] != _HTTP1[:have]:
        raise RemoteProtocolError(
            f"the response does not start with 'HTTP/1.': {bytes(buf[:16])!r}{_guess(buf[0])}"
        )


def find_head_end(buf: bytearray, start: int, limit: int, hint: ConnectResponse | None) -> tuple[int, int]:
    """Look for the CRLF CRLF that ends a head, from line end to line end.

    Args:
        buf: the receive buffer; the head starts at offset 0.
        start: where the previous call stopped (0 at first).
        limit: octets the head may span (``max_head_size``); nothing past it is read.
        hint: ``reply_hint`` of a bare-LF error.

    Returns:
        ``(head_end, resume)``: the offset just past CRLF CRLF, or -1 when not
        found; and the offset to resume from next time.

    Raises:
        RemoteProtocolError: an LF not preceded by CR (RFC 9112 §2.2 requires CRLF here).
    """
    lf = buf.find(b"\n", start, limit)
    if lf < 0:
        return -1, max(start, min(len(buf), limit))
    # A whole head usually arrives at once: take the first CRLF CRLF from here in
    # one search, when no LF before it lacks its CR (else walk the lines, below).
    end = buf.find(_END, max(lf - 3, 0), limit)
    if end >= 0 and lf and buf.count(b"\n", lf, end + 4) == buf.count(b"\r\n", lf - 1, end + 4):
        return end + 4, end + 4
    pos = start
    while True:
        lf = buf.find(b"\n", pos, limit)
        if lf < 0:
            return -1, max(pos, min(len(buf), limit))
        if lf == 0 or buf[lf - 1] != 0x0D:
            raise RemoteProtocolError(
                f"bare LF at offset {lf} of the head: lines must end with CRLF (RFC 9112 §2.2)", reply_hint=hint
            )
        pos = lf + 1
        if lf >= 3 and buf[lf - 3] == 0x0D and buf[lf - 2] == 0x0A:
            return pos, pos


def head_octets_needed(buf: bytearray) -> int:
    """Octets that can surely be read without passing the head's end (1 to 4)."""
    last = buf[-1:]  # most heads end in neither CR nor LF so far: one test
    if last == b"\r":
        return 1 if buf.endswith(b"\r\n\r") else 3
    if last == b"\n" and buf.endswith(b"\r\n"):
        return 2
    return 4


def _lines(head: bytes, hint: ConnectResponse | None) -> list[bytes]:
    lines = head[: -len(_END)].split(b"\r\n")
    for line in lines:
        if b"\r" in line:
            raise RemoteProtocolError(f"bare CR in head line {line[:64]!r} (RFC 9112 §2.2)", reply_hint=hint)
    return lines


def _fields(lines: list[bytes], hint: ConnectResponse | None) -> Headers:
    out = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            raise RemoteProtocolError(
                f"obsolete line folding in {line[:64]!r} is not accepted (RFC 9112 §5.2)", reply_hint=hint
            )
        name, colon, value = line.partition(b":")
        if not colon:
            raise RemoteProtocolError(f"header line {line[:64]!r} has no ':'", reply_hint=hint)
        if name[-1:] in (b" ", b"\t"):
            raise RemoteProtocolError(
                f"whitespace between header name {name.rstrip()[:64]!r} and ':' (RFC 9112 §5.1)", reply_hint=hint
            )
        if not TOKEN.fullmatch(name):
            raise RemoteProtocolError(f"header name {name[:64]!r} is not a token (RFC 9110 §5.1)", reply_hint=hint)
        out.append((name, value))
    return tuple(out)


def parse_request_head(head: bytes) -> ConnectRequest:
    """Parse a whole request head (ending in CRLF CRLF).

    Raises:
        RemoteProtocolError: anything but ``CONNECT <authority> HTTP/1.x`` with
            well-formed header fields, a bad authority or port 0, a ``Host`` naming
            another authority. The hint is 400 (405 for another method).
    """
    lines = _lines(head, BAD_REQUEST)
    request_line = lines[0]
    match = _REQUEST_LINE.fullmatch(request_line)
    if match is None:
        version = request_line.rpartition(b" ")[2]
        detail = f" (HTTP version {version!r} is not HTTP/1.x)" if version.startswith(b"HTTP/") else ""
        raise RemoteProtocolError(
            f"request line {request_line[:100]!r} is not 'CONNECT host:port HTTP/1.1'{detail}",
            reply_hint=BAD_REQUEST,
        )
    fields = _fields(lines[1:], BAD_REQUEST)
    try:
        return parsed_request(match[1], fields, match[2])
    except LocalProtocolError as exc:
        raise RemoteProtocolError(f"bad CONNECT request: {exc.message}", reply_hint=BAD_REQUEST) from None


def parse_response_head(head: bytes) -> ConnectResponse:
    """Parse a whole response head (ending in CRLF CRLF); its body is not read here.

    Raises:
        RemoteProtocolError: a malformed status line or header field, status 000-099
            or 600-999.
    """
    lines = _lines(head, None)
    match = _STATUS_LINE.fullmatch(lines[0])
    if match is None:
        raise RemoteProtocolError(f"status line {lines[0][:100]!r} is not 'HTTP/1.1 SSS reason'")
    fields = _fields(lines[1:], None)
    try:
        return parsed_response(int(match[2]), match[3] or b"", fields, match[1])
    except LocalProtocolError as exc:
        raise RemoteProtocolError(f"bad response: {exc.message}") from None


# Response heads already parsed. A proxy answers every CONNECT with the same head
# ("HTTP/1.1 200 Connection established" and a header or two), and the event is
# immutable and a function of the octets alone, so one is shared. Bounded: short
# heads only, emptied when full. Errors are not kept.
_RESPONSE_HEADS: Final[dict[bytes, ConnectResponse]] = {}
_RESPONSE_HEADS_MAX: Final = 256
_RESPONSE_HEAD_KEPT: Final = 512  # octets


def read_response_head(head: bytes) -> ConnectResponse:
    """:func:`parse_response_head`, through the cache of heads already parsed."""
    response = _RESPONSE_HEADS.get(head)
    if response is None:
        response = parse_response_head(head)
        if len(head) <= _RESPONSE_HEAD_KEPT:
            remember(_RESPONSE_HEADS, head, response, _RESPONSE_HEADS_MAX)
    return response


def response_body_length(response: ConnectResponse, max_body_size: int) -> int:
    """How many octets after the head are *response*'s body, to be read into the event.

    0 for a 1xx, 2xx (the tunnel starts right after the head: RFC 9110 §8.6 has a
    recipient ignore Content-Length and Transfer-Encoding there), 204 or 304; and
    for a refusal that is unframed (no valid Content-Length, or Transfer-Encoding,
    RFC 9112 §6.3) or larger than *max_body_size*: its body then stays in
    ``trailing_data``.
    """
    status = response.status_code
    if status < 300 or status in (204, 304) or response.get_all(b"transfer-encoding"):
        return 0
    length = content_length(response.headers)
    if length is None or length > max_body_size:
        return 0
    return length


def _head_fields(headers: Headers) -> bytes:
    return b"".join([name + b": " + value + b"\r\n" for name, value in headers])


def encode_event(event: HttpConnectEvent) -> bytes:
    """The octets of *event* (``b""`` for :class:`ConnectionClosed`)."""
    if isinstance(event, ConnectRequest):
        return (
            b"CONNECT " + event.target.authority.encode("ascii") + b" HTTP/" + event.http_version + b"\r\n"
            + _head_fields(event.headers) + b"\r\n"
        )
    if isinstance(event, ConnectResponse):
        return (
            b"HTTP/" + event.http_version + b" %d " % event.status_code + event.reason + b"\r\n"
            + _head_fields(event.headers) + b"\r\n" + event.body
        )
    if isinstance(event, ConnectionClosed):
        return b""
    raise TypeError(f"not an HTTP CONNECT event: {event!r}")

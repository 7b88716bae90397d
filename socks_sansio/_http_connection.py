"""``HttpConnectConnection``: one HTTP CONNECT conversation (RFC 9110 §9.3.6), either role.

The conversation is lock-step: the client sends a request, the proxy answers.
The state table below judges the events both ends send (it does not know which
role we play); :func:`classify` turns a response into what it means for the
conversation, from the two events alone:

* 1xx: interim, surfaced as an event; the final response is still awaited
  (101 is refused: a CONNECT is not upgraded);
* 2xx: the tunnel is open; every byte after the head is tunnel data;
* any other: refused. When the refusal is framed (its whole body was carried,
  as declared by ``Content-Length``; or 204/304) and both messages are HTTP/1.1
  without ``Connection: close`` (RFC 9112 §9.3), the connection can carry a new
  request (``AWAIT_REQUEST``: answer a 407 with credentials); otherwise it must
  be closed (``MUST_CLOSE``) and any unread body is in ``trailing_data``.

What we send is held to the RFC's "MUST NOT send" rules (no Content-Length or
Transfer-Encoding in a 1xx/2xx response to CONNECT, RFC 9110 §8.6; a body only
with a matching Content-Length); what we receive is held only to the rules a
recipient must enforce, so a proxy's 2xx with a stray Content-Length still
opens the tunnel.
"""

from __future__ import annotations

import enum
from typing import Final, final

import attrs

from ._errors import LocalProtocolError, RemoteProtocolError
from ._http_events import ConnectRequest, ConnectResponse, HttpConnectEvent, content_length
from ._http_wire import (
    BAD_REQUEST,
    HEAD_TOO_LARGE,
    START_CHECKED,
    check_request_start,
    check_response_start,
    encode_event,
    find_head_end,
    head_octets_needed,
    parse_request_head,
    read_response_head,
    response_body_length,
)
from ._machine import Machine
from ._socks5_events import ConnectionClosed
from ._util import CLIENT, SERVER, Role

__all__ = ["SENDER", "TRANSITIONS", "HttpConnectConnection", "HttpConnectState", "Input", "classify"]


class HttpConnectState(enum.Enum):
    """Where an HTTP CONNECT conversation stands. Both ends agree on it."""

    # Members are singletons: identity hashing is correct, and much cheaper than Enum's.
    __hash__ = object.__hash__

    #: The client has to send its CONNECT request (RFC 9110 §9.3.6).
    AWAIT_REQUEST = "AWAIT_REQUEST"
    #: The proxy has to answer (an interim 1xx keeps it here).
    AWAIT_RESPONSE = "AWAIT_RESPONSE"
    #: Terminal: a 2xx was sent; the connection now carries the tunnel.
    TUNNEL = "TUNNEL"
    #: Terminal: refused, and the connection cannot carry another request.
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
    INTERIM = enum.auto()
    SUCCESS = enum.auto()
    REFUSED_KEEP_ALIVE = enum.auto()
    REFUSED_CLOSE = enum.auto()


S = HttpConnectState
TRANSITIONS: Final[dict[tuple[HttpConnectState, Input], HttpConnectState]] = {
    (S.AWAIT_REQUEST, Input.REQUEST): S.AWAIT_RESPONSE,
    (S.AWAIT_RESPONSE, Input.INTERIM): S.AWAIT_RESPONSE,
    (S.AWAIT_RESPONSE, Input.SUCCESS): S.TUNNEL,
    (S.AWAIT_RESPONSE, Input.REFUSED_KEEP_ALIVE): S.AWAIT_REQUEST,
    (S.AWAIT_RESPONSE, Input.REFUSED_CLOSE): S.MUST_CLOSE,
}
"""Every legal transition; a missing ``(state, input)`` pair is a protocol error."""

SENDER: Final[dict[HttpConnectState, Role]] = {S.AWAIT_REQUEST: CLIENT, S.AWAIT_RESPONSE: SERVER}
"""Whose turn it is in each non-terminal state."""

_AWAITED: Final = {S.AWAIT_REQUEST: "the CONNECT request", S.AWAIT_RESPONSE: "the response"}
_CONNECTION_CLOSED: Final = ConnectionClosed()
_AWAIT_REQUEST: Final = S.AWAIT_REQUEST  # enum members are slow to look up on their class: read once


def _wants_close(message: ConnectRequest | ConnectResponse) -> bool:
    if message.http_version == b"1.0":
        return True
    tokens = (t.strip(b" \t").lower() for value in message.get_all(b"connection") for t in value.split(b","))
    return b"close" in tokens


def _framed(response: ConnectResponse) -> bool:
    """Whether the response's whole body is known to be in the event."""
    if response.status_code in (204, 304):
        return True
    if response.get_all(b"transfer-encoding"):
        return False
    return content_length(response.headers) == len(response.body)


def classify(event: ConnectRequest | ConnectResponse, request: ConnectRequest | None) -> Input:
    """The input *event* stands for, given the *request* it answers (if any).

    Raises:
        LocalProtocolError: a 101 response, which cannot answer a CONNECT.
    """
    if isinstance(event, ConnectRequest):
        return Input.REQUEST
    status = event.status_code
    if status == 101:
        raise LocalProtocolError("101 Switching Protocols cannot answer a CONNECT request (RFC 9110 §9.3.6)")
    if status <= 199:
        return Input.INTERIM
    if status <= 299:
        return Input.SUCCESS
    if request is None or not _framed(event) or _wants_close(request) or _wants_close(event):
        return Input.REFUSED_CLOSE
    return Input.REFUSED_KEEP_ALIVE


def _check_sendable(response: ConnectResponse) -> None:
    """The rules on what a proxy may send, beyond what the event itself enforces."""
    status = response.status_code
    if response.get_all(b"transfer-encoding"):
        raise LocalProtocolError(
            "a response to CONNECT is sent without Transfer-Encoding (RFC 9110 §8.6 for a 2xx; "
            "socks-sansio frames refusal bodies with Content-Length)"
        )
    lengths = response.get_all(b"content-length")
    if not lengths:
        return
    if status <= 299 or status == 204:
        raise LocalProtocolError(
            f"a {status} response to CONNECT must not carry Content-Length (RFC 9110 §8.6)"
        )
    if content_length(response.headers) != len(response.body):
        raise LocalProtocolError(
            f"Content-Length {lengths!r} announces a body but the event's body holds {len(response.body)} "
            "octets; put the body in the event"
        )


def _check_size(name: str, value: int, low: int) -> None:
    """Raise the error for a size that is not an int of at least *low*."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be int, not {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be at least {low}, got {value}")


@final
class HttpConnectConnection(Machine[HttpConnectState, HttpConnectEvent]):
    """An HTTP CONNECT conversation, as a client or as a proxy, without I/O.

    Feed received bytes to :meth:`receive_data`, take events from
    :meth:`next_event`, and turn your events into bytes with :meth:`send`. A
    client sends :class:`ConnectRequest` and receives :class:`ConnectResponse`;
    a proxy the other way round. The conversation ends in ``TUNNEL`` (after any
    2xx), ``MUST_CLOSE``, ``CLOSED`` or ``ERROR``, or returns to
    ``AWAIT_REQUEST`` after a refusal that keeps the connection (see
    :func:`classify`). Bytes after the final head (a client's early data, a
    proxy's first tunnel bytes, an unread refusal body) are never parsed:
    :attr:`trailing_data` returns them.

    Line endings must be CRLF in both directions; a bare LF is a protocol error.

    Args:
        our_role: ``CLIENT`` or ``SERVER``.
        max_head_size: the longest head accepted, CRLF CRLF included. A longer
            request is refused with a 431 hint; a longer response is an error.
        max_body_size: the longest refusal body a client reads into the event; a
            longer one is left in ``trailing_data`` and the connection must close.

    Raises:
        TypeError: a wrong type of argument.
        ValueError: *max_head_size* below 1 or *max_body_size* below 0.
    """

    __slots__ = ("_max_body_size", "_max_head_size", "_pending", "_request", "_scan")
    _protocol = "HTTP CONNECT"

    def __init__(self, our_role: Role, *, max_head_size: int = 16 * 1024, max_body_size: int = 64 * 1024) -> None:
        Machine.__init__(self, our_role, _AWAIT_REQUEST)
        if type(max_head_size) is not int or max_head_size < 1:  # the check calls out only for errors
            _check_size("max_head_size", max_head_size, 1)
        if type(max_body_size) is not int or max_body_size < 0:
            _check_size("max_body_size", max_body_size, 0)
        self._max_head_size = max_head_size
        self._max_body_size = max_body_size
        self._request: ConnectRequest | None = None
        # Reading the awaited head: where the head-end search resumes, and once the
        # head is parsed, (event, head end, body length) so it is parsed only once.
        self._scan = 0
        self._pending: tuple[ConnectRequest | ConnectResponse, int, int] | None = None

    @property
    def request(self) -> ConnectRequest | None:
        """The latest request sent or received (the one a response answers)."""
        return self._request

    # -- protocol hooks -------------------------------------------------------

    _SENDER = SENDER
    _AWAITED = _AWAITED
    _ERROR = HttpConnectState.ERROR
    _CLOSED = HttpConnectState.CLOSED
    _CLOSED_EVENT = _CONNECTION_CLOSED
    _encode = staticmethod(encode_event)  # no wrapper method: one call less per send

    def _read(self) -> tuple[HttpConnectEvent, int] | int:
        buffer = self._buffer
        buf = buffer.data
        if self._pending is None:
            reading_request = self._state is _AWAIT_REQUEST
            scan = self._scan
            if scan < START_CHECKED and buf:  # past START_CHECKED octets the start was accepted already
                (check_request_start if reading_request else check_response_start)(buf)
            end, self._scan = find_head_end(buf, scan, self._max_head_size, BAD_REQUEST if reading_request else None)
            if end < 0:
                if len(buf) >= self._max_head_size:
                    what = "request" if reading_request else "response"
                    raise RemoteProtocolError(
                        f"the {what} head is longer than max_head_size ({self._max_head_size} octets) "
                        "without ending in CRLF CRLF",
                        reply_hint=HEAD_TOO_LARGE if reading_request else None,
                    )
                return len(buf) + head_octets_needed(buf)
            head = bytes(buf[:end])
            if reading_request:
                self._pending = (parse_request_head(head), end, 0)
            else:
                response = read_response_head(head)
                self._pending = (response, end, response_body_length(response, self._max_body_size))
        event, end, body_length = self._pending
        if not body_length:
            return event, end
        total = end + body_length
        if len(buf) < total:
            # Closed in the middle of a refusal's body: report the refusal anyway
            # (it is what the caller needs); the partial body stays in trailing_data.
            return (event, end) if buffer.eof else total
        assert isinstance(event, ConnectResponse), "only a response has a body"
        return attrs.evolve(event, body=bytes(buf[end:total])), total

    def _apply(self, role: Role, event: HttpConnectEvent) -> None:
        if type(event) is not ConnectRequest and type(event) is not ConnectResponse:
            raise TypeError(f"not an HTTP CONNECT event: {event!r}")
        state = self._state
        what = classify(event, self._request)
        next_state = TRANSITIONS.get((state, what))
        if next_state is None:
            raise LocalProtocolError(
                f"{type(event).__name__} from the {role.value} is not legal in state {state.name}"
            )
        if type(event) is ConnectRequest:
            self._request = event
        elif role is self.our_role:
            _check_sendable(event)
        self._state = next_state
        self._scan = 0
        self._pending = None

    def _is_refusal(self, event: object) -> bool:
        return isinstance(event, ConnectResponse) and event.status_code >= 300


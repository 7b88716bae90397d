"""Streaming reader of an origin server's responses, for plain-HTTP forward proxying (RFC 9112 §4, §6).

:class:`ForwardResponseReader` reads what the origin sends back to the proxy:
interim (1xx) and final response heads, and the body framed as RFC 9112 §6.3
says given the request method, streamed as :class:`ForwardBodyData` events. Its
contract and head reading are those of :class:`ForwardRequestReader`
(:mod:`._http_forward_reader`).
"""

from __future__ import annotations

from typing import final

from ._buffer import ReceiveBuffer
from ._errors import LocalProtocolError, RemoteProtocolError
from ._http_body import BodyReader
from ._http_events import TOKEN
from ._http_forward_events import ForwardBodyData, ForwardEndOfMessage, ForwardResponse, Framing, response_framing
from ._http_forward_reader import BAD_GATEWAY, IDLE, ForwardState, check_size
from ._http_wire import check_response_start, find_head_end, head_octets_needed, parse_response_head
from ._socks5_events import ConnectionClosed
from ._util import NEED_DATA, PAUSED, NeedData, Paused
from ._validators import to_bytes

__all__ = ["ForwardResponseReader"]


def _method(value: str | bytes) -> bytes:
    method = to_bytes(value)
    if not TOKEN.fullmatch(method):
        raise LocalProtocolError(f"request_method {method[:40]!r} is not a token (RFC 9110 §9.1)")
    if method == b"CONNECT":
        raise LocalProtocolError("the response to CONNECT is read by HttpConnectConnection, not this reader")
    return method


@final
class ForwardResponseReader:
    """Reads an origin server's responses to forwarded requests.

    ``next_event()`` returns every interim :class:`ForwardResponse` (1xx: pass
    them on, ``100 Continue`` especially), then the final one, its body as
    :class:`ForwardBodyData` events as the octets arrive, and one
    :class:`ForwardEndOfMessage`; then ``PAUSED`` until :meth:`start_next_cycle`.
    The body is framed as RFC 9112 §6.3 says: none for a HEAD request or a 1xx,
    204, 304; chunked; ``Content-Length``; otherwise until the server closes.
    A close between responses is :class:`ConnectionClosed`.

    Args:
        request_method: the method of the request this answers (a response to
            HEAD has no body); not CONNECT.
        max_head_size: the longest head, chunk-size line and trailer section.

    Raises:
        TypeError, ValueError: *max_head_size* not an int >= 1.
        LocalProtocolError: *request_method* not a token, or CONNECT.
    """

    __slots__ = ("_body", "_buffer", "_framing", "_interim", "_max_head_size", "_method", "_response", "_scan",
                 "_state")

    def __init__(self, *, request_method: str | bytes = b"GET", max_head_size: int = 16 * 1024) -> None:
        self._max_head_size = check_size("max_head_size", max_head_size)
        self._buffer = ReceiveBuffer()
        self._reset(_method(request_method))

    def _reset(self, method: bytes) -> None:
        self._method = method
        self._state = ForwardState.AWAIT_HEAD
        self._response: ForwardResponse | None = None
        self._framing: Framing | None = None
        self._body: BodyReader | None = None
        self._scan = 0
        self._interim = False

    @property
    def state(self) -> ForwardState:
        """The reader's state."""
        return self._state

    @property
    def response(self) -> ForwardResponse | None:
        """The final response being read or just read (``None`` before its head)."""
        return self._response

    @property
    def framing(self) -> Framing | None:
        """How the final response's body is delimited (``None`` before its head)."""
        return self._framing

    @property
    def keep_alive(self) -> bool:
        """Whether the connection can carry another request, once the response is whole (RFC 9112 §9.3).

        False before that, after an error or EOF, for a body delimited by the
        close, and when the server did not announce persistence.
        """
        return self._state is ForwardState.DONE and not self._buffer.eof

    @property
    def trailing_data(self) -> tuple[bytes, bool]:
        """``(octets, eof_seen)``: what was received and not consumed."""
        return self._buffer.snapshot()

    @property
    def read_size_hint(self) -> int:
        """How many octets can be read without reading past the current response (0 when paused)."""
        if self._state is ForwardState.AWAIT_HEAD:
            return head_octets_needed(self._buffer.data)
        if self._state is ForwardState.BODY and self._body is not None:
            return self._body.read_size_hint(self._buffer.data)
        return 0

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer octets from the origin; ``b""`` means it closed (EOF). Nothing is parsed here.

        Raises:
            RuntimeError: non-empty data after EOF.
        """
        self._buffer.feed(data)

    def start_next_cycle(self, *, request_method: str | bytes = b"GET") -> None:
        """Read the response to the next request sent on this connection.

        Raises:
            LocalProtocolError: not in ``DONE`` (the response is not whole, or the
                connection cannot carry another: ``MUST_CLOSE``); *request_method* is
                not a token, or CONNECT. After EOF the next event is
                :class:`ConnectionClosed`.
        """
        if self._state is not ForwardState.DONE:
            raise LocalProtocolError(
                f"start_next_cycle() needs a whole response on a persistent connection (state DONE, not "
                f"{self._state.name})"
            )
        self._reset(_method(request_method))

    def next_event(
        self,
    ) -> ForwardResponse | ForwardBodyData | ForwardEndOfMessage | ConnectionClosed | NeedData | Paused:
        """Parse what was received so far.

        Raises:
            RemoteProtocolError: the origin broke HTTP/1.1 or a limit, or closed in
                the middle of a response; ``reply_hint`` is a 502 for the client
                (useful only while no response head went to it). The state is then
                ``ERROR`` and every call raises again.
        """
        state = self._state
        if state in IDLE:
            return PAUSED
        if state is ForwardState.ERROR:
            raise RemoteProtocolError("the origin broke the protocol; this reader cannot go on", reply_hint=BAD_GATEWAY)
        try:
            if state is ForwardState.AWAIT_HEAD:
                return self._read_head()
            assert self._body is not None
            event = self._body.next_event(self._buffer)
        except RemoteProtocolError as exc:
            self._state = ForwardState.ERROR
            raise RemoteProtocolError(exc.message, reply_hint=BAD_GATEWAY) from None
        except LocalProtocolError as exc:
            self._state = ForwardState.ERROR
            raise RemoteProtocolError(f"bad response: {exc.message}", reply_hint=BAD_GATEWAY) from None
        if event is None:
            return NEED_DATA
        if isinstance(event, ForwardEndOfMessage):
            self._state = ForwardState.DONE if self._persists() else ForwardState.MUST_CLOSE
        return event

    def _persists(self) -> bool:
        response = self._response
        return (
            response is not None
            and response.keep_alive
            and self._framing is not Framing.UNTIL_CLOSE
        )

    def _read_head(self) -> ForwardResponse | ConnectionClosed | NeedData:
        buffer = self._buffer
        buf = buffer.data
        if not buf:
            if not buffer.eof:
                return NEED_DATA
            if self._interim:
                raise RemoteProtocolError("the origin closed the connection after an interim response")
            self._state = ForwardState.CLOSED
            return ConnectionClosed()
        if self._scan < len(b"HTTP/1."):  # once the search passed it, the prefix was checked whole
            check_response_start(buf)
        end, self._scan = find_head_end(buf, self._scan, self._max_head_size, None)
        if end < 0:
            if len(buf) >= self._max_head_size:
                raise RemoteProtocolError(
                    f"the response head is longer than max_head_size ({self._max_head_size} octets)"
                )
            if buffer.eof:
                raise RemoteProtocolError(
                    f"the origin closed the connection in the middle of a response head ({len(buf)} octets)"
                )
            return NEED_DATA
        head = bytes(buf[:end])
        del buf[:end]
        self._scan = 0
        parsed = parse_response_head(head)
        response = ForwardResponse(
            status_code=parsed.status_code, reason=parsed.reason, headers=parsed.headers,
            http_version=parsed.http_version,
        )
        if response.is_interim:
            self._interim = True
            return response
        framing, length = response_framing(response.status_code, response.headers, response.http_version, self._method)
        self._response = response
        self._framing = framing
        self._body = BodyReader(framing, length, self._max_head_size)
        self._state = ForwardState.BODY
        return response


"""Fuzz target for the HTTP/1.1 client codec's response reader (``http_request()``'s pure part).

``check_http_response(payload, sizes, eof, decisions)`` feeds *payload* (what
a server answered one request with) to a :class:`ResponseReader` three ways:
whole, in the chunks *sizes* gives, and as a blocking client would read it,
exactly ``read_size_hint`` octets at a time. It checks:

* only :class:`RemoteProtocolError` escapes, and the reader then stays in
  error (the same error type again on the next call);
* the three ways agree: the same response (status, reason, headers, body)
  or the same error; the same trailing data whole and in chunks; reading by
  the hint never reads an octet past the response, unless the body ends
  only at EOF;
* ``read_size_hint`` is positive after ``NEED_DATA``, 0 after the response
  and after an error; asking again after it is a :class:`LocalProtocolError`;
* the body respects ``max_body_size``, and ``trailing_data`` is exactly the
  octets after the response.

The decision bits choose the request method (bits 0-1: ``GET``, ``HEAD``,
``CONNECT``, ``POST``) and the caps (bits 2-3: the defaults; a 64-octet head
and body; a 64-octet head; no body at all). ``target_http_response(data)``
reads the input layout of :mod:`fuzz.common`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from fuzz.common import Finding, make_input, pieces_of, same, split_input
from socks_sansio import NEED_DATA, HttpResponse, LocalProtocolError, RemoteProtocolError, ResponseReader

__all__ = ["check_http_response", "seed_inputs", "target_http_response"]

_METHODS: Final = ("GET", "HEAD", "CONNECT", "POST")
_CAPS: Final[tuple[dict[str, int], ...]] = (
    {},
    {"max_head_size": 64, "max_body_size": 64},
    {"max_head_size": 64},
    {"max_body_size": 0},
)
_LOOPS: Final = 4
"""More ``next_event`` calls than a piece can need: the response, then the error for asking again."""


def _reader(decisions: int) -> ResponseReader:
    return ResponseReader(request_method=_METHODS[decisions & 3], **_CAPS[decisions >> 2 & 3])


def _outcome(response: HttpResponse, decisions: int) -> tuple[object, ...]:
    cap = _CAPS[decisions >> 2 & 3].get("max_body_size", 16 * 1024 * 1024)
    if len(response.body) > cap:
        raise Finding(f"a body of {len(response.body)} octets passed max_body_size {cap}")
    return ("response", response.status_code, response.reason, response.headers, response.body)


def _step(reader: ResponseReader, decisions: int) -> tuple[object, ...] | None:
    """Call next_event until it waits; the outcome once the response is here."""
    finding = Finding
    for _ in range(_LOOPS):
        event = reader.next_event()
        if event is NEED_DATA:
            if reader.read_size_hint <= 0:
                raise finding(f"NEED_DATA but read_size_hint is {reader.read_size_hint}")
            return None
        if not isinstance(event, HttpResponse):
            raise finding(f"next_event returned {event!r}")
        if reader.read_size_hint != 0:
            raise finding(f"read_size_hint is {reader.read_size_hint} after the response")
        try:
            reader.next_event()
        except LocalProtocolError:
            pass
        except RemoteProtocolError as exc:
            raise finding("asking again after the response blamed the server") from exc
        else:
            raise finding("next_event returned something after the response")
        return _outcome(event, decisions)
    raise finding("next_event never stopped")


def _failed(reader: ResponseReader) -> tuple[object, ...]:
    """The reader raised RemoteProtocolError: it must raise it again, and hint no reads."""
    try:
        reader.next_event()
    except RemoteProtocolError:
        pass
    else:
        raise Finding("a reader in error returned an event")
    if reader.read_size_hint != 0:
        raise Finding(f"a reader in error hints {reader.read_size_hint} octets")
    return ("error", RemoteProtocolError)


def _run(payload: bytes, sizes: Sequence[int] | None, eof: bool, decisions: int) -> tuple[object, ...]:
    reader = _reader(decisions)
    pieces = pieces_of(payload, [len(payload)] if sizes is None else sizes)
    outcome: tuple[object, ...] | None = None
    fed = size = 0
    try:
        for piece in pieces:
            reader.receive_data(piece)
            fed += len(piece)
            if outcome is None and (outcome := _step(reader, decisions)) is not None:
                size = fed - len(reader.trailing_data[0])
        if eof:
            reader.receive_data(b"")
            if outcome is None and (outcome := _step(reader, decisions)) is not None:
                size = fed - len(reader.trailing_data[0])
    except RemoteProtocolError:
        return _failed(reader)
    trailing = reader.trailing_data
    if outcome is None:  # (the heads and body octets read so far are consumed already)
        return ("need",)
    if trailing != (payload[size:], eof):
        raise Finding(f"trailing_data {trailing!r} is not what followed the {size}-octet response")
    return (*outcome, size, trailing)


def _run_by_hint(payload: bytes, eof: bool, decisions: int) -> tuple[object, ...]:
    """A blocking client: ``recv(read_size_hint)`` until the response is here."""
    reader = _reader(decisions)
    kernel = payload
    try:
        while (outcome := _step(reader, decisions)) is None:
            if not kernel:
                if not eof or reader.trailing_data[1]:
                    return ("need",)
                reader.receive_data(b"")
                continue
            size = reader.read_size_hint
            reader.receive_data(kernel[:size])
            kernel = kernel[size:]
    except RemoteProtocolError:
        return _failed(reader)
    if reader.trailing_data[0] and not reader.trailing_data[1]:
        raise Finding(f"reading by read_size_hint read past the response: {reader.trailing_data!r}")
    return outcome


def check_http_response(payload: bytes, sizes: Sequence[int], eof: bool, decisions: int) -> None:
    """``ResponseReader`` (method and caps from *decisions*); *payload* is the server's answer."""
    whole = _run(payload, None, eof, decisions)
    same("ResponseReader", whole, _run(payload, sizes, eof, decisions))
    expected = whole[:5] if whole[0] == "response" else whole if whole[0] == "error" else whole[:1]
    same("ResponseReader", expected, _run_by_hint(payload, eof, decisions), ("whole", "by hint"))


def target_http_response(data: bytes) -> None:
    """:func:`check_http_response` on the input layout of :mod:`fuzz.common`."""
    check_http_response(*split_input(data))


def seed_inputs() -> dict[str, bytes]:
    """Seeds for ``fuzz/corpus/http_response/`` (whole fuzzer inputs, header octets included)."""
    m = make_input
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    head, connect, post, small = 1, 2, 3, 1 << 2
    return {
        "407_with_body": m(b"HTTP/1.1 407 Auth\r\nProxy-Authenticate: Basic\r\nContent-Length: 5\r\n\r\nwho?!"),
        "200_connect_then_tunnel": m(b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x01", decisions=connect),
        "chunked_trailers_bytewise": m(chunked + b"5;ext=\"q\"\r\nhello\r\n0\r\nT: 1\r\n\r\nnext", seed=0),
        "chunked_over_small_cap": m(chunked + b"41\r\n" + b"x" * 65 + b"\r\n0\r\n\r\n", decisions=small, seed=9),
        "interim_then_final": m(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
                                decisions=post, seed=13),
        "until_eof": m(b"HTTP/1.0 200 OK\r\n\r\nthe rest of the connection", eof=True, seed=3),
        "head_with_length": m(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", decisions=head),
        "not_modified": m(b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\nHTTP/1.1", seed=5),
        "te_and_length": m(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"),
        "eof_in_chunk": m(chunked + b"a\r\nhal", eof=True, seed=1),
        "socks5_reply": m(b"\x05\x00\x00\x01\x7f\x00\x00\x01\x04\x38"),
    }

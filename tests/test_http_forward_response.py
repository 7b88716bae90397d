"""ForwardResponseReader: what an origin sends back to a forward proxy (RFC 9112 §4, §6.3, §7.1, §9.3).

Every vector runs whole, one octet at a time, in halves and in 7-octet pieces,
and again followed by another response (read after start_next_cycle, or left
in trailing_data).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from socks_sansio import NEED_DATA, PAUSED, ConnectionClosed, LocalProtocolError, RemoteProtocolError
from socks_sansio._http_forward_events import ForwardBodyData, ForwardEndOfMessage, ForwardResponse, Framing
from socks_sansio._http_forward_reader import ForwardState
from socks_sansio._http_forward_response import ForwardResponseReader

from .http_forward_helpers import SPLITS, drive

EOM = ForwardEndOfMessage()
NEXT = b"HTTP/1.1 204 No Content\r\nServer: next\r\n\r\n"
NEXT_RESPONSE = ForwardResponse(status_code=204, headers=[(b"Server", b"next")])


def resp(status: int, headers: list[tuple[bytes, bytes]] = [], **kw: Any) -> ForwardResponse:  # noqa: B006
    return ForwardResponse(status_code=status, headers=headers, **kw)


# name, wire, request method, expected events, final state, framing
FRAMED: list[tuple[str, bytes, bytes, list[Any], ForwardState, Framing]] = [
    ("content_length", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"GET",
     [resp(200, [(b"Content-Length", b"5")]), ForwardBodyData(data=b"hello"), EOM], ForwardState.DONE,
     Framing.CONTENT_LENGTH),
    ("content_length_zero", b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", b"GET",
     [resp(404, [(b"Content-Length", b"0")]), EOM], ForwardState.DONE, Framing.CONTENT_LENGTH),
    ("chunked_with_trailers", b"HTTP/1.1 200 Fine\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
     b"6\r\nhello \r\n5;e=1\r\nworld\r\n0\r\nX-Sum: 1\r\n\r\n", b"GET",
     [resp(200, [(b"Transfer-Encoding", b"chunked"), (b"Trailer", b"X-Sum")], reason=b"Fine"),
      ForwardBodyData(data=b"hello world"), ForwardEndOfMessage(trailers=[(b"X-Sum", b"1")])],
     ForwardState.DONE, Framing.CHUNKED),
    ("head_has_no_body", b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", b"HEAD",
     [resp(200, [(b"Content-Length", b"1234")]), EOM], ForwardState.DONE, Framing.NONE),
    ("head_chunked_has_no_body", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"HEAD",
     [resp(200, [(b"Transfer-Encoding", b"chunked")]), EOM], ForwardState.DONE, Framing.NONE),
    ("204_has_no_body", b"HTTP/1.1 204 No Content\r\n\r\n", b"DELETE", [resp(204), EOM], ForwardState.DONE,
     Framing.NONE),
    ("304_has_no_body", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\nETag: \"x\"\r\n\r\n", b"GET",
     [resp(304, [(b"Content-Length", b"99"), (b"ETag", b'"x"')]), EOM], ForwardState.DONE, Framing.NONE),
    ("100_continue_then_200", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
     b"POST", [resp(100), resp(201, [(b"Content-Length", b"2")]), ForwardBodyData(data=b"ok"), EOM], ForwardState.DONE,
     Framing.CONTENT_LENGTH),
    ("several_interim", b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 102 Processing\r\n"
     b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b"GET",
     [resp(103, [(b"Link", b"</a.css>; rel=preload")]), resp(102), resp(200, [(b"Content-Length", b"0")]), EOM],
     ForwardState.DONE, Framing.CONTENT_LENGTH),
    ("http10_keep_alive", b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx", b"GET",
     [resp(200, [(b"Connection", b"keep-alive"), (b"Content-Length", b"1")], http_version=b"1.0"),
      ForwardBodyData(data=b"x"), EOM], ForwardState.DONE, Framing.CONTENT_LENGTH),
    ("http10_is_the_last", b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", b"GET",
     [resp(200, [(b"Content-Length", b"1")], http_version=b"1.0"), ForwardBodyData(data=b"x"), EOM],
     ForwardState.MUST_CLOSE, Framing.CONTENT_LENGTH),
    ("connection_close", b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx", b"GET",
     [resp(200, [(b"Connection", b"close"), (b"Content-Length", b"1")]), ForwardBodyData(data=b"x"), EOM],
     ForwardState.MUST_CLOSE, Framing.CONTENT_LENGTH),
    ("no_reason", b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", b"GET",
     [resp(200, [(b"Content-Length", b"0")]), EOM], ForwardState.DONE, Framing.CONTENT_LENGTH),
]


@pytest.mark.parametrize("split", SPLITS.values(), ids=SPLITS.keys())
@pytest.mark.parametrize(("name", "wire", "method", "expected", "state", "framing"), FRAMED,
                         ids=[f[0] for f in FRAMED])
def test_framed_responses(
    name: str, wire: bytes, method: bytes, expected: list[Any], state: ForwardState, framing: Framing,
    split: Callable[[bytes], list[bytes]],
) -> None:
    reader = ForwardResponseReader(request_method=method)
    events, outcome = drive(reader, split(wire + NEXT), cycle=False)
    assert events == expected
    assert outcome is state
    assert reader.framing is framing
    assert reader.response == expected[-2 if len(expected) > 1 and isinstance(expected[-2], ForwardResponse) else -3]
    assert reader.trailing_data == (NEXT, False)
    assert reader.keep_alive is (state is ForwardState.DONE)
    if state is ForwardState.DONE:
        reader.start_next_cycle(request_method=b"GET")
        assert drive(reader, [], eof=True, cycle=False) == ([NEXT_RESPONSE, EOM], ForwardState.DONE)
        assert not reader.keep_alive  # EOF came
    else:
        with pytest.raises(LocalProtocolError):
            reader.start_next_cycle()


UNTIL_CLOSE = [
    ("no_framing", b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nbody until the end", b"body until the end"),
    ("no_framing_empty", b"HTTP/1.1 500 Oops\r\n\r\n", b""),
    ("http10", b"HTTP/1.0 200 OK\r\n\r\nold" + NEXT, b"old" + NEXT),
]


@pytest.mark.parametrize("split", SPLITS.values(), ids=SPLITS.keys())
@pytest.mark.parametrize(("name", "wire", "body"), UNTIL_CLOSE, ids=[u[0] for u in UNTIL_CLOSE])
def test_bodies_delimited_by_the_close(
    name: str, wire: bytes, body: bytes, split: Callable[[bytes], list[bytes]]
) -> None:
    reader = ForwardResponseReader()
    events, outcome = drive(reader, split(wire))
    assert reader.framing is Framing.UNTIL_CLOSE
    assert outcome is ForwardState.BODY
    assert events[1:] == ([ForwardBodyData(data=body)] if body else [])
    assert reader.read_size_hint > 0
    events, outcome = drive(reader, [], eof=True)
    assert events == [EOM]
    assert outcome is ForwardState.MUST_CLOSE
    assert not reader.keep_alive


@pytest.mark.parametrize("split", SPLITS.values(), ids=SPLITS.keys())
def test_several_responses_on_one_connection(split: Callable[[bytes], list[bytes]]) -> None:
    wire = b"".join(f[1] for f in FRAMED if f[4] is ForwardState.DONE)
    methods = [f[2] for f in FRAMED if f[4] is ForwardState.DONE]
    expected = [e for f in FRAMED if f[4] is ForwardState.DONE for e in f[3]]
    reader = ForwardResponseReader(request_method=methods[0])
    events, outcome = drive(reader, split(wire), eof=True,
                            next_method=lambda n: methods[n] if n < len(methods) else b"GET")
    assert events == [*expected, ConnectionClosed()]
    assert outcome is ForwardState.CLOSED


ERRORS = [
    ("cl_and_te", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("differing_cl", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
    ("bad_cl", b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n"),
    ("te_gzip", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
    ("te_in_http10", b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("101", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"),
    ("status_out_of_range", b"HTTP/1.1 099 Low\r\n\r\n"),
    ("status_not_digits", b"HTTP/1.1 2x0 OK\r\n\r\n"),
    ("http2_status_line", b"HTTP/2 200\r\n\r\n"),
    ("garbage", b"<html>hello</html>"),
    ("tls_alert", b"\x15\x03\x03\x00\x02\x02\x28"),
    ("bare_lf", b"HTTP/1.1 200 OK\nContent-Length: 0\n\n"),
    ("obs_fold", b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n"),
    ("nul_in_value", b"HTTP/1.1 200 OK\r\nX: \x00\r\nContent-Length: 0\r\n\r\n"),
    ("head_too_large", b"HTTP/1.1 200 OK\r\nX: " + b"a" * 17000 + b"\r\n\r\n"),
    ("eof_mid_head", b"HTTP/1.1 200 OK\r\nContent-"),
    ("eof_mid_cl_body", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"),
    ("eof_mid_chunk", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"),
    ("eof_after_interim", b"HTTP/1.1 100 Continue\r\n\r\n"),
    ("bad_chunk_size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nq\r\n"),
    ("chunk_without_crlf", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n"),
]


@pytest.mark.parametrize("split", SPLITS.values(), ids=SPLITS.keys())
@pytest.mark.parametrize(("name", "wire"), ERRORS, ids=[e[0] for e in ERRORS])
def test_malformed_responses_are_refused_with_a_502_hint(
    name: str, wire: bytes, split: Callable[[bytes], list[bytes]]
) -> None:
    reader = ForwardResponseReader()
    _, outcome = drive(reader, split(wire), eof=True)
    assert outcome == ("error", 502)
    with pytest.raises(RemoteProtocolError):
        reader.next_event()
    assert not reader.keep_alive


def test_a_close_before_any_response_is_connection_closed() -> None:
    reader = ForwardResponseReader()
    assert drive(reader, [], eof=True) == ([ConnectionClosed()], ForwardState.CLOSED)
    assert reader.next_event() is PAUSED
    assert reader.read_size_hint == 0


def test_a_body_streams_as_it_arrives() -> None:
    reader = ForwardResponseReader()
    reader.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel")
    assert isinstance(reader.next_event(), ForwardResponse)
    assert reader.next_event() == ForwardBodyData(data=b"hel")
    assert reader.next_event() is NEED_DATA
    assert reader.read_size_hint == 7
    reader.receive_data(b"lo world and more")
    assert reader.next_event() == ForwardBodyData(data=b"lo worl")
    assert reader.next_event() == EOM
    assert reader.trailing_data == (b"d and more", False)


def test_start_next_cycle_checks_its_argument_and_state() -> None:
    reader = ForwardResponseReader()
    with pytest.raises(LocalProtocolError):
        reader.start_next_cycle()
    drive(reader, [b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"], cycle=False)
    with pytest.raises(LocalProtocolError):
        reader.start_next_cycle(request_method=b"CONNECT")
    with pytest.raises(LocalProtocolError):
        reader.start_next_cycle(request_method=b"G T")
    reader.start_next_cycle(request_method="HEAD")
    assert reader.state is ForwardState.AWAIT_HEAD


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"request_method": "CONNECT"}, LocalProtocolError),
    ({"request_method": "BAD METHOD"}, LocalProtocolError),
    ({"request_method": 5}, TypeError),
    ({"max_head_size": 0}, ValueError),
    ({"max_head_size": 1.5}, TypeError),
])
def test_reader_arguments_are_checked(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        ForwardResponseReader(**kwargs)


READ_SIZE_CASES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n1a\r\n" + b"x" * 26 + b"\r\n0\r\nTrailer: t\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
]


@pytest.mark.parametrize("response", READ_SIZE_CASES)
def test_reading_by_read_size_hint_never_reads_past_the_response(response: bytes) -> None:
    reader = ForwardResponseReader()
    stream = response + NEXT
    at = 0
    for _ in range(len(stream)):
        event = reader.next_event()
        if isinstance(event, ForwardEndOfMessage):
            break
        if event is NEED_DATA:
            hint = reader.read_size_hint
            assert hint > 0
            reader.receive_data(stream[at : at + hint])
            at += hint
    assert at == len(response)
    assert reader.read_size_hint == 0

"""The HTTP/1.1 client codec: encode_request, HttpResponse and ResponseReader."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from socks_sansio import NEED_DATA, LocalProtocolError, RemoteProtocolError
from socks_sansio._http1 import HttpResponse, ResponseReader, encode_request

from .helpers import SPLITS, chunked

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
EXTRA = b"HTTP/1.1 200 OK\r\n\r\nnext response, never parsed"


# -- helpers ---------------------------------------------------------------------------------


def drain(reader: ResponseReader) -> list[Any]:
    """One next_event call as a list: [] for NEED_DATA, else [the response] (it is never called twice)."""
    event = reader.next_event()
    return [] if event is NEED_DATA else [event]


def read(wire_pieces: list[bytes], *, eof: bool = False, **kwargs: Any) -> tuple[HttpResponse, ResponseReader]:
    """Feed *pieces* (then EOF if asked) to a fresh reader; return the one response and the reader."""
    reader = ResponseReader(**kwargs)
    events: list[Any] = []
    for piece in wire_pieces:
        assert not events, "nothing may be fed after the response"
        reader.receive_data(piece)
        events += drain(reader)
    if eof:
        reader.receive_data(b"")
        if not events:
            events += drain(reader)
    assert len(events) == 1, events
    return events[0], reader


def read_error(wire: bytes, split: Callable[[bytes], list[bytes]] = SPLITS["whole"], **kwargs: Any) -> str:
    """Feed *wire* then EOF; return the message of the RemoteProtocolError it must raise."""
    reader = ResponseReader(**kwargs)

    def feed_all() -> None:
        for piece in [*split(wire), b""]:
            reader.receive_data(piece)
            assert drain(reader) == []

    with pytest.raises(RemoteProtocolError) as info:
        feed_all()
    with pytest.raises(RemoteProtocolError):
        reader.next_event()  # the reader stays in error
    return info.value.message


def parse_request(wire: bytes) -> tuple[str, str, list[tuple[bytes, bytes]], bytes, bytes]:
    """A tiny server-side parser, written independently of the code under test.

    Returns (method, target, headers, body, rest).
    """
    head, sep, rest = wire.partition(b"\r\n\r\n")
    assert sep, "no end of head"
    request_line, *lines = head.split(b"\r\n")
    assert re.fullmatch(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ [\x21-\x7e]+ HTTP/1\.1", request_line), request_line
    method, target, _ = request_line.split(b" ")
    headers = []
    for line in lines:
        name, colon, value = line.partition(b":")
        assert colon and re.fullmatch(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name), line
        assert b"\r" not in value and b"\n" not in value and b"\0" not in value
        headers.append((name, value.strip(b" \t")))
    lengths = [v for n, v in headers if n.lower() == b"content-length"]
    assert len(lengths) <= 1
    size = int(lengths[0]) if lengths else 0
    assert not [n for n, _ in headers if n.lower() == b"transfer-encoding"]
    return method.decode(), target.decode(), headers, rest[:size], rest[size:]


# -- encode_request ----------------------------------------------------------------------------


def test_get_request_octets() -> None:
    wire = encode_request("GET", "/index.html?q=1", host="example.com", headers=[("Accept", "*/*")])
    assert wire == b"GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n"


def test_body_gets_content_length_last() -> None:
    wire = encode_request("GET", "/", host="h:8080", headers=[(b"X-A", b"1")], body=b"hello")
    assert wire == b"GET / HTTP/1.1\r\nHost: h:8080\r\nX-A: 1\r\nContent-Length: 5\r\n\r\nhello"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_content_methods_announce_an_empty_body(method: str) -> None:
    wire = encode_request(method, "/", host="h")
    assert wire == method.encode() + b" / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE", "OPTIONS", "post"])
def test_other_methods_without_body_have_no_content_length(method: str) -> None:
    assert b"Content-Length" not in encode_request(method, "*", host="h")


def test_host_in_headers_replaces_the_argument() -> None:
    wire = encode_request("GET", "/", host="ignored", headers=[("X-First", "1"), ("host", "[::1]:8443")])
    assert wire == b"GET / HTTP/1.1\r\nX-First: 1\r\nhost: [::1]:8443\r\n\r\n"


def test_matching_content_length_is_kept_not_doubled() -> None:
    wire = encode_request("POST", "/", host="h", headers=[("content-length", "3")], body=b"abc")
    assert wire == b"POST / HTTP/1.1\r\nHost: h\r\ncontent-length: 3\r\n\r\nabc"
    assert encode_request("GET", "/", host="h", headers=[("Content-Length", "0")]).count(b"Content-Length") == 1


def test_absolute_form_target_for_a_forwarding_proxy() -> None:
    wire = encode_request("GET", "http://example.com/a%20b", host="example.com")
    assert wire.startswith(b"GET http://example.com/a%20b HTTP/1.1\r\n")


INJECTIONS = ["\r", "\n", "\0", "\r\nX-Evil: 1"]


@pytest.mark.parametrize("bad", INJECTIONS)
@pytest.mark.parametrize("where", ["method", "target", "host", "name", "value"])
def test_cr_lf_nul_anywhere_are_refused(where: str, bad: str) -> None:
    args: dict[str, Any] = {"method": "GET", "target": "/", "host": "h", "headers": [("X-A", "v")]}
    if where in ("method", "target", "host"):
        args[where] = args[where] + bad + "x"
    elif where == "name":
        args["headers"] = [("X" + bad + "A", "v")]
    else:
        args["headers"] = [("X-A", "v" + bad + "x")]
    with pytest.raises(LocalProtocolError) as info:
        encode_request(args.pop("method"), args.pop("target"), **args)
    if where in ("target", "host", "value"):
        assert "CR, LF or NUL" in info.value.message


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "GE T"}, "not a token"),
        ({"method": ""}, "not a token"),
        ({"method": "G(ET"}, "not a token"),
        ({"method": "GÉT"}, "not a token"),
        ({"method": "G\ud800"}, "not a token"),
        ({"target": ""}, "must not be empty"),
        ({"target": "/a b"}, "whitespace"),
        ({"target": "/\t"}, "whitespace"),
        ({"target": "/é"}, "percent-encode"),
        ({"target": "/\ud800"}, "percent-encode"),
        ({"target": "/\x7f"}, "control"),
        ({"host": ""}, "must not be empty"),
        ({"host": "a b"}, "whitespace"),
        ({"host": "bücher.de"}, "IDNA"),
        ({"headers": [("Host", "a"), ("host", "b")]}, "one Host"),
        ({"headers": [("Transfer-Encoding", "chunked")]}, "remove the Transfer-Encoding"),
        ({"headers": [("Content-Length", "4")], "body": b"abc"}, "disagrees"),
        ({"headers": [("Content-Length", "x")], "body": b""}, "disagrees"),
        ({"headers": [("Content-Length", "1"), ("Content-Length", "1")], "body": b"a"}, "at most one"),
        ({"headers": [("Bad Name", "v")]}, "not a token"),
        ({"headers": [("X", "\x01")]}, "control character"),
    ],
)
def test_invalid_requests_are_refused_with_a_reason(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"method": "GET", "target": "/", "host": "h", **kwargs}
    with pytest.raises(LocalProtocolError) as info:
        encode_request(args.pop("method"), args.pop("target"), **args)
    assert message in info.value.message


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": b"GET"},
        {"target": b"/"},
        {"host": None},
        {"body": "text"},
        {"headers": "Host: h"},
        {"headers": [("a", "b", "c")]},
        {"headers": [("a", 1)]},
    ],
)
def test_wrong_types_are_type_errors(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"method": "GET", "target": "/", "host": "h", **kwargs}
    with pytest.raises(TypeError):
        encode_request(args.pop("method"), args.pop("target"), **args)


tokens = st.text(alphabet=TCHARS, min_size=1, max_size=12)
visible = st.text(alphabet=[chr(c) for c in range(0x21, 0x7F)], min_size=1, max_size=40)
field_values = st.binary(max_size=40).map(lambda b: bytes(c for c in b if c == 9 or 0x20 <= c != 0x7F))
header_names = tokens.filter(lambda n: n.lower() not in ("host", "content-length", "transfer-encoding"))
header_lists = st.lists(st.tuples(header_names, field_values), max_size=6)


@given(method=tokens, target=visible, host=visible, headers=header_lists, body=st.binary(max_size=200))
def test_request_round_trip_through_a_server_side_parse(
    method: str, target: str, host: str, headers: list[tuple[str, bytes]], body: bytes
) -> None:
    wire = encode_request(method, target, host=host, headers=headers, body=body)
    got_method, got_target, got_headers, got_body, rest = parse_request(wire)
    assert (got_method, got_target, got_body, rest) == (method, target, body, b"")
    expected = [(b"Host", host.encode()), *((n.encode(), v.strip(b" \t")) for n, v in headers)]
    if body or method in ("POST", "PUT", "PATCH"):
        expected.append((b"Content-Length", str(len(body)).encode()))
    assert got_headers == expected


# -- HttpResponse ------------------------------------------------------------------------------


def test_http_response_is_a_validated_frozen_value() -> None:
    response = HttpResponse(
        status_code=200, reason="OK", headers=[("Set-Cookie", " a=1 "), (b"set-cookie", b"b=2")], body=b"x"
    )
    assert response.get("SET-COOKIE") == b"a=1"
    assert response.get_all(b"Set-Cookie") == (b"a=1", b"b=2")
    assert response.get("missing") is None
    assert response.headers == ((b"Set-Cookie", b"a=1"), (b"set-cookie", b"b=2"))
    assert "<1 octets>" in repr(response)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        response.status_code = 404  # type: ignore[misc]
    with pytest.raises(TypeError):
        HttpResponse(200, b"OK", (), b"")  # type: ignore[call-arg]  # keyword-only
    assert HttpResponse(status_code=204) == HttpResponse(status_code=204, reason=b"", headers=(), body=b"")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"status_code": 99}, LocalProtocolError),
        ({"status_code": 600}, LocalProtocolError),
        ({"status_code": True}, TypeError),
        ({"status_code": "200"}, TypeError),
        ({"reason": b"O\rK"}, LocalProtocolError),
        ({"headers": [("a b", "c")]}, LocalProtocolError),
        ({"headers": [("a", "c\nd")]}, LocalProtocolError),
        ({"body": 5}, TypeError),
    ],
)
def test_http_response_refuses_bad_fields(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        HttpResponse(**{"status_code": 200, **kwargs})


# -- ResponseReader: valid responses -------------------------------------------------------------


def resp(status: int, reason: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> HttpResponse:
    return HttpResponse(status_code=status, reason=reason, headers=headers, body=body)


CHUNKED_WIRE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"\r\n"
    b"5\r\nhello\r\n"
    b"0001 ; name ;q=\"a \\\"quoted\\\" ;=value\"; t = tok\r\n,\r\n"
    b"A\r\n0123456789\r\n"
    b"00\r\n"
    b"Expires: never\r\n"
    b"X-Trailer:  \tvalue\r\n"
    b"\r\n"
)
CHUNKED = resp(200, b"OK", [(b"Transfer-Encoding", b"chunked")], b"hello,0123456789")

# (name, wire, expected, reader kwargs). Each is complete without EOF: extra bytes may follow.
FRAMED: list[tuple[str, bytes, HttpResponse, dict[str, Any]]] = [
    (
        "content-length",
        b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nnot found",
        resp(404, b"Not Found", [(b"Content-Type", b"text/plain"), (b"Content-Length", b"9")], b"not found"),
        {},
    ),
    (
        "content-length-zero",
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        resp(200, b"OK", [(b"content-length", b"0")]),
        {},
    ),
    (
        "repeated-equal-content-length",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
        resp(200, b"OK", [(b"Content-Length", b"2"), (b"Content-Length", b"2")], b"ok"),
        {},
    ),
    ("chunked", CHUNKED_WIRE, CHUNKED, {}),
    (
        "chunked-case-and-empty-list-members",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: , Chunked ,\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        resp(200, b"OK", [(b"Transfer-Encoding", b", Chunked ,")], b"abc"),
        {},
    ),
    (
        "chunked-empty",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        resp(200, b"OK", [(b"Transfer-Encoding", b"chunked")]),
        {},
    ),
    (
        "interim-responses-skipped",
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 102 Processing\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
        resp(201, b"Created", [(b"Content-Length", b"2")], b"ok"),
        {},
    ),
    (
        "204-ignores-content-length",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
        resp(204, b"No Content", [(b"Content-Length", b"10")]),
        {},
    ),
    (
        "304-ignores-transfer-encoding",
        b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
        resp(304, b"Not Modified", [(b"Transfer-Encoding", b"chunked")]),
        {},
    ),
    (
        "head-has-no-body",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
        resp(200, b"OK", [(b"Content-Length", b"1000")]),
        {"request_method": "HEAD"},
    ),
    (
        "connect-2xx-has-no-body",
        b"HTTP/1.1 200 Connection established\r\nTransfer-Encoding: gzip\r\n\r\n",
        resp(200, b"Connection established", [(b"Transfer-Encoding", b"gzip")]),
        {"request_method": "CONNECT"},
    ),
    (
        "101-is-final",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        resp(101, b"Switching Protocols", [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")]),
        {},
    ),
    (
        "empty-reason-and-missing-space",
        b"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\n!",
        resp(200, b"", [(b"Content-Length", b"1")], b"!"),
        {},
    ),
    (
        "reason-kept-as-sent",
        b"HTTP/1.0 404 Nicht \xe2\x80\x9cgefunden\xe2\x80\x9d\tok\r\nX:   a b  \r\nContent-Length: 0\r\n\r\n",
        resp(404, b"Nicht \xe2\x80\x9cgefunden\xe2\x80\x9d\tok", [(b"X", b"a b"), (b"Content-Length", b"0")]),
        {},
    ),
]

# Responses whose body ends at EOF: nothing can follow them.
UNTIL_EOF: list[tuple[str, bytes, HttpResponse, dict[str, Any]]] = [
    (
        "http10-until-eof",
        b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nall of\r\nthis\r\n\r\nis body",
        resp(200, b"OK", [(b"Server", b"x")], b"all of\r\nthis\r\n\r\nis body"),
        {},
    ),
    (
        "http11-until-eof-empty",
        b"HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\n\r\n",
        resp(500, b"Internal Server Error", [(b"Connection", b"close")]),
        {},
    ),
]


@pytest.mark.parametrize("split", SPLITS.values(), ids=SPLITS.keys())
@pytest.mark.parametrize(("name", "wire", "expected", "kwargs"), FRAMED, ids=[c[0] for c in FRAMED])
def test_framed_responses(
    name: str, wire: bytes, expected: HttpResponse, kwargs: dict[str, Any], split: Callable[[bytes], list[bytes]]
) -> None:
    response, reader = read(split(wire), **kwargs)
    assert response == expected
    assert reader.trailing_data == (b"", False)


@pytest.mark.parametrize("split", SPLITS.values(), ids=SPLITS.keys())
@pytest.mark.parametrize(("name", "wire", "expected", "kwargs"), FRAMED, ids=[c[0] for c in FRAMED])
def test_bytes_after_a_framed_response_come_back_exactly(
    name: str, wire: bytes, expected: HttpResponse, kwargs: dict[str, Any], split: Callable[[bytes], list[bytes]]
) -> None:
    pieces = split(wire + EXTRA)
    reader = ResponseReader(**kwargs)
    events: list[Any] = []
    for piece in pieces:
        reader.receive_data(piece)
        if not events:
            events += drain(reader)
    reader.receive_data(b"")
    assert events == [expected]
    assert reader.trailing_data == (EXTRA, True)
    with pytest.raises(LocalProtocolError, match="already returned"):
        reader.next_event()


@pytest.mark.parametrize("split", SPLITS.values(), ids=SPLITS.keys())
@pytest.mark.parametrize(("name", "wire", "expected", "kwargs"), UNTIL_EOF, ids=[c[0] for c in UNTIL_EOF])
def test_responses_delimited_by_eof(
    name: str, wire: bytes, expected: HttpResponse, kwargs: dict[str, Any], split: Callable[[bytes], list[bytes]]
) -> None:
    reader = ResponseReader(**kwargs)
    for piece in split(wire):
        reader.receive_data(piece)
        assert reader.next_event() is NEED_DATA
    reader.receive_data(b"")
    assert reader.next_event() == expected
    assert reader.trailing_data == (b"", True)


@pytest.mark.parametrize(("name", "wire", "expected", "kwargs"), FRAMED, ids=[c[0] for c in FRAMED])
def test_eof_right_after_a_framed_response_is_fine(
    name: str, wire: bytes, expected: HttpResponse, kwargs: dict[str, Any]
) -> None:
    response, reader = read([wire], eof=True, **kwargs)
    assert response == expected
    assert reader.trailing_data == (b"", True)


def test_chunked_body_split_at_every_point() -> None:
    wire = CHUNKED_WIRE + EXTRA
    for at in range(1, len(wire)):
        reader = ResponseReader()
        reader.receive_data(wire[:at])
        events = drain(reader)
        reader.receive_data(wire[at:])
        if not events:
            events = drain(reader)
        assert events == [CHUNKED], at
        assert reader.trailing_data == (EXTRA, False), at


def test_chunked_body_split_at_every_pair_of_points() -> None:
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n1\r\nd\r\n0\r\nT: v\r\n\r\n"
    expected = resp(200, b"OK", [(b"Transfer-Encoding", b"chunked")], b"abcd")
    for i in range(len(wire) + 1):
        for j in range(i, len(wire) + 1):
            response, _ = read([p for p in (wire[:i], wire[i:j], wire[j:]) if p])
            assert response == expected, (i, j)


def test_a_response_is_returned_as_soon_as_it_is_whole() -> None:
    reader = ResponseReader()
    wire = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
    for octet in wire[:-1]:
        reader.receive_data(bytes([octet]))
        assert reader.next_event() is NEED_DATA
    reader.receive_data(wire[-1:])
    assert reader.next_event() == resp(200, b"OK", [(b"Content-Length", b"3")], b"abc")


# -- ResponseReader: errors -----------------------------------------------------------------------

HEAD200 = b"HTTP/1.1 200 OK\r\n"
CHUNKED_HEAD = HEAD200 + b"Transfer-Encoding: chunked\r\n\r\n"

ERRORS: list[tuple[str, bytes, str, dict[str, Any]]] = [
    ("request-instead", b"GET / HTTP/1.1\r\n\r\n", "does not start with 'HTTP/1.'", {}),
    ("tls", b"\x16\x03\x01\x00\xa5\x01\x00", "looks like TLS", {}),
    ("http2", b"HTTP/2 200\r\n\r\n", "does not start with 'HTTP/1.'", {}),
    ("bare-lf", b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", "bare LF", {}),
    ("bare-cr", b"HTTP/1.1 200 OK\rX\r\n\r\n", "bare CR", {}),
    ("head-too-long", HEAD200 + b"X: " + b"v" * 100 + b"\r\n\r\n", "longer than max_head_size", {"max_head_size": 64}),
    ("bad-status", b"HTTP/1.1 2000 OK\r\n\r\n", "status line", {}),
    ("status-099", b"HTTP/1.1 099 Low\r\n\r\n", "status_code", {}),
    ("no-colon", HEAD200 + b"Broken header\r\n\r\n", "has no ':'", {}),
    ("space-before-colon", HEAD200 + b"Name : v\r\n\r\n", "whitespace between", {}),
    ("obs-fold", HEAD200 + b"A: b\r\n c\r\n\r\n", "folding", {}),
    ("control-in-value", HEAD200 + b"A: b\x01c\r\n\r\n", "control character", {}),
    ("te-and-cl", HEAD200 + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", "both", {}),
    ("te-gzip", HEAD200 + b"Transfer-Encoding: gzip, chunked\r\n\r\n", "unsupported Transfer-Encoding", {}),
    ("te-twice", HEAD200 + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "only 'chunked'", {}),
    ("te-empty", HEAD200 + b"Transfer-Encoding: \r\n\r\n", "unsupported Transfer-Encoding", {}),
    ("cl-not-number", HEAD200 + b"Content-Length: 1e3\r\n\r\n", "invalid Content-Length", {}),
    ("cl-list", HEAD200 + b"Content-Length: 3, 3\r\n\r\nabc", "invalid Content-Length", {}),
    ("cl-negative", HEAD200 + b"Content-Length: -1\r\n\r\n", "invalid Content-Length", {}),
    ("cl-disagree", HEAD200 + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab", "invalid Content-Length", {}),
    ("cl-absurd", HEAD200 + b"Content-Length: " + b"9" * 40 + b"\r\n\r\n", "absurdly large", {}),
    ("cl-too-big", HEAD200 + b"Content-Length: 11\r\n\r\n", "more than max_body_size", {"max_body_size": 10}),
    ("eof-body-too-big", HEAD200 + b"\r\n" + b"x" * 11, "longer than max_body_size", {"max_body_size": 10}),
    ("chunk-not-hex", CHUNKED_HEAD + b"zz\r\n", "hex digits", {}),
    ("chunk-negative", CHUNKED_HEAD + b"-1\r\n", "hex digits", {}),
    ("chunk-0x", CHUNKED_HEAD + b"0x5\r\nhello\r\n0\r\n\r\n", "malformed chunk-size line", {}),
    ("chunk-trailing-space", CHUNKED_HEAD + b"5 \r\nhello\r\n0\r\n\r\n", "malformed chunk-size line", {}),
    ("chunk-ext-no-name", CHUNKED_HEAD + b"5;=x\r\nhello\r\n0\r\n\r\n", "malformed chunk-size line", {}),
    ("chunk-ext-open-quote", CHUNKED_HEAD + b'5;a="x\r\nhello\r\n0\r\n\r\n', "malformed chunk-size line", {}),
    ("chunk-ext-control", CHUNKED_HEAD + b"5;a=\x01\r\nhello\r\n0\r\n\r\n", "malformed chunk-size line", {}),
    ("chunk-bare-lf", CHUNKED_HEAD + b"5\nhello\r\n0\r\n\r\n", "bare LF in the chunk-size line", {}),
    ("chunk-line-bare-cr", CHUNKED_HEAD + b"5\r\r\nhello\r\n0\r\n\r\n", "malformed chunk-size line", {}),
    ("chunk-too-long", CHUNKED_HEAD + b"3\r\nabcd\r\n0\r\n\r\n", "followed by CRLF", {}),
    ("chunk-data-bare-lf", CHUNKED_HEAD + b"3\r\nabc\n0\r\n\r\n", "followed by CRLF", {}),
    ("chunk-line-too-long", CHUNKED_HEAD + b"1;" + b"a" * 200 + b"\r\nx\r\n", "chunk-size line is longer", {
        "max_head_size": 100
    }),
    ("chunk-sum-too-big", CHUNKED_HEAD + b"6\r\nabcdef\r\n5\r\n", "longer than max_body_size", {"max_body_size": 10}),
    ("chunk-huge", CHUNKED_HEAD + b"f" * 100 + b"\r\n", "absurdly large", {}),
    ("chunk-over-the-cap", CHUNKED_HEAD + b"f" * 15 + b"\r\n", "longer than max_body_size", {}),
    ("trailer-no-colon", CHUNKED_HEAD + b"0\r\nbroken\r\n\r\n", "has no ':'", {}),
    ("trailer-fold", CHUNKED_HEAD + b"0\r\nA: b\r\n c\r\n\r\n", "folding", {}),
    ("trailer-bare-cr", CHUNKED_HEAD + b"0\r\nA: b\rc\r\n\r\n", "bare CR", {}),
    ("trailer-bare-lf", CHUNKED_HEAD + b"0\r\nA: b\n\r\n", "bare LF in the trailer section", {}),
    ("trailer-control", CHUNKED_HEAD + b"0\r\nA: \x7f\r\n\r\n", "control character", {}),
    (
        "trailers-too-long",
        CHUNKED_HEAD + b"0\r\n" + b"X: 123456789\r\n" * 10 + b"\r\n",
        "trailer section is longer",
        {"max_head_size": 100},
    ),
    ("eof-empty", b"", "without sending a response", {}),
    ("eof-after-interim", b"HTTP/1.1 100 Continue\r\n\r\n", "without sending the final response", {}),
    ("eof-in-head", HEAD200 + b"Content-Length: 3\r\n", "middle of the response head", {}),
    ("eof-in-length-body", HEAD200 + b"Content-Length: 3\r\n\r\nab", "after 2 of the 3 body octets", {}),
    ("eof-in-chunk-line", CHUNKED_HEAD + b"5", "middle of the chunked body", {}),
    ("eof-in-chunk-data", CHUNKED_HEAD + b"5\r\nhel", "middle of the chunked body", {}),
    ("eof-after-chunk-data", CHUNKED_HEAD + b"5\r\nhello\r", "middle of the chunked body", {}),
    ("eof-in-trailers", CHUNKED_HEAD + b"0\r\nA: b\r\n", "middle of the chunked body", {}),
]


@pytest.mark.parametrize("split", SPLITS.values(), ids=SPLITS.keys())
@pytest.mark.parametrize(("name", "wire", "message", "kwargs"), ERRORS, ids=[c[0] for c in ERRORS])
def test_malformed_responses_raise_remote_protocol_error(
    name: str, wire: bytes, message: str, kwargs: dict[str, Any], split: Callable[[bytes], list[bytes]]
) -> None:
    assert message in read_error(wire, split, **kwargs)


def test_garbage_is_refused_at_its_first_octet() -> None:
    reader = ResponseReader()
    reader.receive_data(b"<")
    with pytest.raises(RemoteProtocolError, match=r"does not start with 'HTTP/1\.'"):
        reader.next_event()


def test_a_bad_chunk_size_is_refused_at_its_first_octet() -> None:
    reader = ResponseReader()
    reader.receive_data(CHUNKED_HEAD + b"g")
    with pytest.raises(RemoteProtocolError, match="hex digits"):
        reader.next_event()


def test_a_long_chunk_is_refused_at_the_first_wrong_octet() -> None:
    reader = ResponseReader()
    reader.receive_data(CHUNKED_HEAD + b"1\r\nab")
    with pytest.raises(RemoteProtocolError, match="followed by CRLF"):
        reader.next_event()


def test_limits_are_inclusive() -> None:
    head = HEAD200 + b"Content-Length: 4\r\n\r\n"
    response, _ = read([head + b"body"], max_head_size=len(head), max_body_size=4)
    assert response.body == b"body"
    wire = CHUNKED_HEAD + b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n"
    response, _ = read([wire], max_body_size=4)
    assert response.body == b"abcd"
    response, _ = read([HEAD200 + b"\r\nabcd"], eof=True, max_body_size=4)
    assert response.body == b"abcd"


def test_data_after_eof_is_a_runtime_error() -> None:
    reader = ResponseReader()
    reader.receive_data(b"")
    with pytest.raises(RuntimeError):
        reader.receive_data(b"x")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_head_size": 0}, ValueError),
        ({"max_body_size": -1}, ValueError),
        ({"max_head_size": 1.5}, TypeError),
        ({"max_body_size": True}, TypeError),
        ({"request_method": b"GET"}, TypeError),
        ({"request_method": "GE T"}, LocalProtocolError),
        ({"request_method": "HÉAD"}, LocalProtocolError),
        ({"request_method": ""}, LocalProtocolError),
    ],
)
def test_reader_arguments_are_checked(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        ResponseReader(**kwargs)


# -- properties ----------------------------------------------------------------------------------

field_lines = st.lists(
    st.tuples(header_names.map(str.encode), field_values.map(lambda v: v.strip(b" \t"))), max_size=5
)
# quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE (RFC 9110 §5.6.4)
quoted_strings = st.lists(st.sampled_from(["a", " ", "\t", "=", ";", "\\\"", "\\\\", "\\x"]), max_size=6).map(
    lambda parts: '"' + "".join(parts) + '"'
)
extensions = st.lists(
    st.tuples(tokens, st.one_of(st.none(), tokens, quoted_strings)), max_size=2
).map(lambda exts: "".join(f";{n}" if v is None else f" ; {n}={v}" for n, v in exts).encode())


@st.composite
def responses(draw: st.DrawFn) -> tuple[bytes, HttpResponse, bool]:
    """(wire, expected response, ends_at_eof) for a random framed or unframed response."""
    interim = b"".join(
        b"HTTP/1.1 %d Interim\r\n" % code + b"".join(n + b": " + v + b"\r\n" for n, v in hdrs) + b"\r\n"
        for code, hdrs in draw(st.lists(st.tuples(st.sampled_from([100, 102, 103, 199]), field_lines), max_size=2))
    )
    status = draw(st.integers(200, 599).filter(lambda s: s not in (204, 304)))
    reason = draw(field_values).strip(b" \t") if draw(st.booleans()) else b""
    headers = draw(field_lines)
    body = draw(st.binary(max_size=300))
    framing = draw(st.sampled_from(["length", "chunked", "eof"]))
    if framing == "length":
        headers = [*headers, (b"Content-Length", b"%d" % len(body))]
        payload = body
    elif framing == "chunked":
        headers = [*headers, (b"Transfer-Encoding", b"chunked")]
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=5)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        data_chunks = b"".join(b"%x" % len(p) + draw(extensions) + b"\r\n" + p + b"\r\n" for p in pieces if p)
        trailers = b"".join(n + b": " + v + b"\r\n" for n, v in draw(field_lines))
        payload = data_chunks + b"0" + draw(extensions) + b"\r\n" + trailers + b"\r\n"
    else:
        payload = body
    head = b"HTTP/1.1 %d %s\r\n" % (status, reason) + b"".join(n + b": " + v + b"\r\n" for n, v in headers) + b"\r\n"
    expected = HttpResponse(status_code=status, reason=reason, headers=headers, body=body)
    return interim + head + payload, expected, framing == "eof"


@given(case=responses(), sizes=st.lists(st.integers(1, 40), min_size=1, max_size=10), extra=st.binary(max_size=20))
def test_any_chunking_of_a_random_response_reads_the_same(
    case: tuple[bytes, HttpResponse, bool], sizes: list[int], extra: bytes
) -> None:
    wire, expected, ends_at_eof = case
    if ends_at_eof:
        extra = b""
    reader = ResponseReader()
    events: list[Any] = []
    for piece in [*chunked(wire + extra, sizes), b""]:
        reader.receive_data(piece)
        if not events:
            events += drain(reader)
    assert events == [expected]
    assert reader.trailing_data == (extra, True)


VALID_PREFIXES = [
    b"",
    HEAD200,
    CHUNKED_HEAD,
    CHUNKED_HEAD + b"5;a=b\r\nhello\r\n",
    CHUNKED_HEAD + b"0\r\n",
    HEAD200 + b"Content-Length: 5\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
]


@pytest.mark.parametrize("prefix", VALID_PREFIXES)
@given(
    garbage=st.binary(max_size=200),
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=5),
    small=st.booleans(),
    method=st.sampled_from(["GET", "HEAD", "CONNECT"]),
)
def test_garbage_raises_only_remote_protocol_error(
    prefix: bytes, garbage: bytes, sizes: list[int], small: bool, method: str
) -> None:
    limits = {"max_head_size": 40, "max_body_size": 30} if small else {}
    reader = ResponseReader(request_method=method, **limits)
    wire = prefix + garbage
    try:
        done = False
        for piece in [*chunked(wire, sizes), b""]:
            reader.receive_data(piece)
            if not done:
                event = reader.next_event()
                done = event is not NEED_DATA
        assert done  # at EOF the reader either has a response or raised
        assert isinstance(event, HttpResponse)
        data, eof = reader.trailing_data
        assert eof
        assert wire.endswith(data)
    except RemoteProtocolError as exc:
        assert exc.message
        with pytest.raises(RemoteProtocolError):
            reader.next_event()


@given(wire=st.binary(max_size=300))
def test_bytewise_and_whole_feeding_agree_on_anything(wire: bytes) -> None:
    def outcome(pieces: list[bytes]) -> object:
        reader = ResponseReader(max_head_size=64, max_body_size=64)
        events: list[Any] = []
        try:
            for piece in [*pieces, b""]:
                reader.receive_data(piece)
                if not events:
                    events += drain(reader)
            return events, reader.trailing_data
        except RemoteProtocolError:
            return "error"

    assert outcome([wire]) == outcome(SPLITS["bytewise"](wire))


# -- linear time ---------------------------------------------------------------------------------


class CountingBytearray(bytearray):
    """Counts the octets ``find`` looks at and the octets copied out by slicing."""

    work = 0

    def find(self, sub: Any, start: Any = None, end: Any = None) -> int:
        found = super().find(sub, start, end)
        low = 0 if start is None else start
        high = len(self) if end is None else min(end, len(self))
        CountingBytearray.work += max(0, (found + 1 if found >= 0 else high) - low)  # what find looked at
        return found

    def __getitem__(self, key):  # type: ignore[no-untyped-def]
        result = super().__getitem__(key)
        if isinstance(key, slice):
            CountingBytearray.work += len(result)
        return result


def counting_reader() -> ResponseReader:
    reader = ResponseReader()
    reader._buffer.data = CountingBytearray()  # white-box: measure the work, not the clock
    CountingBytearray.work = 0
    return reader


def test_bytewise_feeding_of_a_big_head_and_chunked_body_is_linear() -> None:
    head = HEAD200 + b"".join(b"X-%05d: %s\r\n" % (i, b"v" * 40) for i in range(300)) + CHUNKED_HEAD[len(HEAD200) :]
    chunks = b"".join(b"%x;ext=%s\r\n%s\r\n" % (n, b"e" * 200, b"d" * n) for n in range(1, 60))
    trailers = b"0\r\n" + b"T: " + b"t" * 2000 + b"\r\n\r\n"
    wire = head + chunks + trailers
    reader = counting_reader()
    for i in range(len(wire) - 1):
        reader.receive_data(wire[i : i + 1])
        assert reader.next_event() is NEED_DATA
    reader.receive_data(wire[-1:])
    response = reader.next_event()
    assert isinstance(response, HttpResponse)
    assert len(response.body) == sum(range(1, 60))
    assert CountingBytearray.work <= 4 * len(wire)


def test_waiting_for_a_big_body_does_not_rescan_it() -> None:
    reader = counting_reader()
    reader.receive_data(HEAD200 + b"Content-Length: 1000000\r\n\r\n")
    assert reader.next_event() is NEED_DATA
    for _ in range(10_000):
        reader.receive_data(b"x" * 50)
        assert reader.next_event() is NEED_DATA
    reader.receive_data(b"x" * 500_000)
    response = reader.next_event()
    assert isinstance(response, HttpResponse) and len(response.body) == 1_000_000
    assert CountingBytearray.work <= 2_000_000  # each octet moved out once as it came; a rescan would be quadratic


def test_many_tiny_chunks_in_one_piece_are_linear() -> None:
    count = 20_000
    reader = counting_reader()
    reader.receive_data(CHUNKED_HEAD + b"1\r\nx\r\n" * count + b"0\r\n\r\n")
    response = reader.next_event()
    assert isinstance(response, HttpResponse)
    assert response.body == b"x" * count
    assert CountingBytearray.work <= 10 * count + 1000


# -- cross-check with h11 (a test dependency, not a runtime one) -----------------------------------


def test_h11_server_reads_our_requests_and_we_read_its_responses() -> None:
    import h11
    server = h11.Connection(h11.SERVER)
    server.receive_data(encode_request("POST", "/upload?x=1", host="example.com", headers=[("X-A", "b")], body=b"data"))
    request = server.next_event()
    assert (request.method, request.target) == (b"POST", b"/upload?x=1")
    assert (b"host", b"example.com") in request.headers
    assert server.next_event() == h11.Data(data=b"data")
    assert isinstance(server.next_event(), h11.EndOfMessage)
    wire = server.send(h11.InformationalResponse(status_code=103, headers=[("Link", "</a>")]))
    wire += server.send(h11.Response(status_code=200, headers=[("Transfer-Encoding", "chunked")], reason=b"Fine"))
    wire += server.send(h11.Data(data=b"hello ")) + server.send(h11.Data(data=b"world"))
    wire += server.send(h11.EndOfMessage(headers=[("Trailer-A", "1")]))
    for split in SPLITS.values():
        response, _ = read(split(wire))
        assert (response.status_code, response.reason, response.body) == (200, b"Fine", b"hello world")


READ_SIZE_CASES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n1a\r\n" + b"x" * 26 + b"\r\n0\r\nTrailer: t\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
]


@pytest.mark.parametrize("response", READ_SIZE_CASES)
def test_reading_by_read_size_hint_never_reads_past_the_response(response: bytes) -> None:
    reader = ResponseReader()
    stream = response + b"NEXT RESPONSE"
    at = 0
    for _ in range(len(stream)):
        event = reader.next_event()
        if isinstance(event, HttpResponse):
            break
        hint = reader.read_size_hint
        assert hint > 0
        reader.receive_data(stream[at : at + hint])
        at += hint
    assert at == len(response)
    assert reader.read_size_hint == 0

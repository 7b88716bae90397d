"""ForwardRequestReader: what a client sends to a forward proxy (RFC 9112 §3.2.2, §6, §7.1, §9.3).

Every vector runs whole, one octet at a time, in halves and in 7-octet pieces,
and again with the octets of another request after it (which must come back in
``trailing_data`` exactly, or be read as the next request).
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv6Address
from typing import Any

import pytest

from socks_sansio import NEED_DATA, PAUSED, Address, ConnectionClosed, LocalProtocolError, RemoteProtocolError
from socks_sansio._http_forward_events import ConnectHandOff, ForwardBodyData, ForwardEndOfMessage, ForwardRequest
from socks_sansio._http_forward_reader import ForwardRequestReader, ForwardState

from .http_forward_helpers import SPLITS, drive

NEXT = b"GET http://next.example/ HTTP/1.1\r\nHost: next.example\r\n\r\n"
NEXT_REQUEST = ForwardRequest(method=b"GET", target="next.example", headers=[(b"Host", b"next.example")])
EOM = ForwardEndOfMessage()


def req(method: bytes, target: str | Address, path: bytes, headers: list[tuple[bytes, bytes]], **kw: Any) -> Any:
    return ForwardRequest(method=method, target=target, path=path, headers=headers, **kw)


VALID: list[tuple[str, bytes, list[Any], ForwardState]] = [
    (
        "get",
        b"GET http://example.com/index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n",
        [req(b"GET", "example.com", b"/index.html?q=1", [(b"Host", b"example.com"), (b"Accept", b"*/*")]), EOM],
        ForwardState.DONE,
    ),
    (
        "content_length",
        b"POST http://h:8080/up HTTP/1.1\r\nHost: h:8080\r\nContent-Length: 5\r\n\r\nhello",
        [req(b"POST", "h:8080", b"/up", [(b"Host", b"h:8080"), (b"Content-Length", b"5")]),
         ForwardBodyData(data=b"hello"), EOM],
        ForwardState.DONE,
    ),
    (
        "content_length_zero",
        b"PUT http://h/x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
        [req(b"PUT", "h", b"/x", [(b"Host", b"h"), (b"Content-Length", b"0")]), EOM],
        ForwardState.DONE,
    ),
    (
        "content_length_identical_list",
        b"POST http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\nabc",
        [req(b"POST", "h", b"/", [(b"Host", b"h"), (b"Content-Length", b"3, 3"), (b"Content-Length", b"3")]),
         ForwardBodyData(data=b"abc"), EOM],
        ForwardState.DONE,
    ),
    (
        "chunked_with_extensions_and_trailers",
        b"POST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n6 ; q=\"a;b\"\r\n world\r\n0\r\nX-Sum: 42\r\nX-Other: y\r\n\r\n",
        [req(b"POST", "h", b"/", [(b"Host", b"h"), (b"Transfer-Encoding", b"chunked")]),
         ForwardBodyData(data=b"hello world"), ForwardEndOfMessage(trailers=[(b"X-Sum", b"42"), (b"X-Other", b"y")])],
        ForwardState.DONE,
    ),
    (
        "chunked_case_and_spaces",
        b"POST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:  , Chunked \r\n\r\nA\r\n0123456789\r\n0\r\n\r\n",
        [req(b"POST", "h", b"/", [(b"Host", b"h"), (b"Transfer-Encoding", b", Chunked")]),
         ForwardBodyData(data=b"0123456789"), EOM],
        ForwardState.DONE,
    ),
    (
        "empty_path",
        b"GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n",
        [req(b"GET", "example.com", b"/", [(b"Host", b"example.com")]), EOM],
        ForwardState.DONE,
    ),
    (
        "options_empty_path_is_asterisk",
        b"OPTIONS http://example.com:81 HTTP/1.1\r\nHost: example.com:81\r\n\r\n",
        [req(b"OPTIONS", "example.com:81", b"*", [(b"Host", b"example.com:81")]), EOM],
        ForwardState.DONE,
    ),
    (
        "query_without_path",
        b"GET http://example.com?a=b HTTP/1.1\r\nHost: example.com\r\n\r\n",
        [req(b"GET", "example.com", b"/?a=b", [(b"Host", b"example.com")]), EOM],
        ForwardState.DONE,
    ),
    (
        "ipv6_and_port",
        b"GET http://[2001:db8::1]:8080/x HTTP/1.1\r\nHost: [2001:db8::1]:8080\r\n\r\n",
        [req(b"GET", Address(IPv6Address("2001:db8::1"), 8080), b"/x", [(b"Host", b"[2001:db8::1]:8080")]), EOM],
        ForwardState.DONE,
    ),
    (
        "scheme_case_and_empty_port",
        b"GET HTTP://Example.COM:/ HTTP/1.1\r\nHost: Example.COM\r\n\r\n",
        [req(b"GET", Address(b"Example.COM", 80), b"/", [(b"Host", b"Example.COM")]), EOM],
        ForwardState.DONE,
    ),
    (
        "http10_without_host_is_the_last",
        b"GET http://old.example/ HTTP/1.0\r\nUser-Agent: x\r\n\r\n",
        [req(b"GET", "old.example", b"/", [(b"Host", b"old.example"), (b"User-Agent", b"x")], http_version=b"1.0"),
         EOM],
        ForwardState.MUST_CLOSE,
    ),
    (
        "http10_keep_alive_is_not_honoured_by_a_proxy",
        b"GET http://h/ HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n",
        [req(b"GET", "h", b"/", [(b"Host", b"h"), (b"Connection", b"keep-alive")], http_version=b"1.0"), EOM],
        ForwardState.MUST_CLOSE,
    ),
    (
        "connection_close",
        b"GET http://h/ HTTP/1.1\r\nHost: h\r\nConnection: Keep-Alive, CLOSE\r\n\r\n",
        [req(b"GET", "h", b"/", [(b"Host", b"h"), (b"Connection", b"Keep-Alive, CLOSE")]), EOM],
        ForwardState.MUST_CLOSE,
    ),
    (
        "leading_empty_lines_are_skipped",
        b"\r\n\r\nGET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
        [req(b"GET", "h", b"/", [(b"Host", b"h")]), EOM],
        ForwardState.DONE,
    ),
    (
        "host_differs_from_target",
        b"GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n",
        [req(b"GET", "a.example", b"/", [(b"Host", b"b.example")]), EOM],
        ForwardState.DONE,
    ),
    (
        "http12_is_http11",
        b"GET http://h/ HTTP/1.2\r\nHost: h\r\n\r\n",
        [req(b"GET", "h", b"/", [(b"Host", b"h")], http_version=b"1.2"), EOM],
        ForwardState.DONE,
    ),
]


@pytest.mark.parametrize("split", SPLITS.values(), ids=SPLITS.keys())
@pytest.mark.parametrize(("name", "wire", "expected", "state"), VALID, ids=[v[0] for v in VALID])
def test_valid_requests(
    name: str, wire: bytes, expected: list[Any], state: ForwardState, split: Callable[[bytes], list[bytes]]
) -> None:
    reader = ForwardRequestReader()
    events, outcome = drive(reader, split(wire), cycle=False)
    assert events == expected
    assert outcome is state
    assert reader.trailing_data == (b"", False)
    assert reader.next_event() is PAUSED


@pytest.mark.parametrize("split", SPLITS.values(), ids=SPLITS.keys())
@pytest.mark.parametrize(("name", "wire", "expected", "state"), VALID, ids=[v[0] for v in VALID])
def test_bytes_after_a_request_are_the_next_request_or_trailing_data(
    name: str, wire: bytes, expected: list[Any], state: ForwardState, split: Callable[[bytes], list[bytes]]
) -> None:
    reader = ForwardRequestReader()
    events, _ = drive(reader, split(wire + NEXT), cycle=False)
    assert events == expected
    assert reader.trailing_data == (NEXT, False)  # never parsed before start_next_cycle, never dropped
    if state is ForwardState.DONE:
        reader.start_next_cycle()
        assert drive(reader, [], eof=True) == ([NEXT_REQUEST, EOM, ConnectionClosed()], ForwardState.CLOSED)
    else:
        with pytest.raises(LocalProtocolError):
            reader.start_next_cycle()


@pytest.mark.parametrize("split", SPLITS.values(), ids=SPLITS.keys())
def test_pipelined_requests_on_one_keep_alive_connection(split: Callable[[bytes], list[bytes]]) -> None:
    wire = b"".join(v[1] for v in VALID if v[3] is ForwardState.DONE)
    expected = [e for v in VALID if v[3] is ForwardState.DONE for e in v[2]]
    reader = ForwardRequestReader()
    events, outcome = drive(reader, split(wire + NEXT + b"\r\n"), eof=True)
    assert events == [*expected, NEXT_REQUEST, EOM, ConnectionClosed()]
    assert outcome is ForwardState.CLOSED


@pytest.mark.parametrize("split", SPLITS.values(), ids=SPLITS.keys())
def test_the_last_request_stops_the_connection(split: Callable[[bytes], list[bytes]]) -> None:
    last = b"GET http://h/ HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    reader = ForwardRequestReader()
    events, outcome = drive(reader, split(NEXT + last + NEXT))
    assert len(events) == 4
    assert outcome is ForwardState.MUST_CLOSE
    assert reader.trailing_data == (NEXT, False)
    assert not reader.keep_alive


ERRORS: list[tuple[str, bytes, int]] = [
    ("origin_form", b"GET /index.html HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    ("asterisk_form", b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    ("authority_form_without_connect", b"GET h:80 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    ("https_target", b"GET https://h/ HTTP/1.1\r\nHost: h\r\n\r\n", 501),
    ("ftp_target", b"GET ftp://h/ HTTP/1.1\r\nHost: h\r\n\r\n", 501),
    ("userinfo", b"GET http://user:pw@h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    ("empty_host", b"GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    ("port_zero", b"GET http://h:0/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    ("port_too_big", b"GET http://h:65536/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    ("unbracketed_ipv6", b"GET http://::1/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    ("fragment", b"GET http://h/a#frag HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    ("non_ascii_target", b"GET http://h/\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    ("nul_in_target", b"GET http://h/\x00 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    ("two_spaces", b"GET  http://h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    ("lowercase_version", b"GET http://h/ http/1.1\r\nHost: h\r\n\r\n", 400),
    ("http2_version", b"GET http://h/ HTTP/2.0\r\nHost: h\r\n\r\n", 505),
    ("http09_version", b"GET http://h/ HTTP/0.9\r\nHost: h\r\n\r\n", 505),
    ("http2_preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    ("tls_client_hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),
    ("socks5_greeting", b"\x05\x01\x00", 400),
    ("no_host_http11", b"GET http://h/ HTTP/1.1\r\nAccept: */*\r\n\r\n", 400),
    ("two_hosts", b"GET http://h/ HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n", 400),
    ("bad_host_value", b"GET http://h/ HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    ("host_with_userinfo", b"GET http://h/ HTTP/1.1\r\nHost: u@h\r\n\r\n", 400),
    ("cl_and_te", b"POST http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", 400),
    ("te_and_cl", b"POST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n"
     b"\r\n", 400),
    ("differing_cl", b"POST http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400),
    ("differing_cl_list", b"POST http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\nhello", 400),
    ("cl_not_a_number", b"POST http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n", 400),
    ("cl_negative", b"POST http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400),
    ("cl_plus", b"POST http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\nhello", 400),
    ("cl_empty", b"POST http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n", 400),
    ("cl_absurd", b"POST http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 1" + b"0" * 30 + b"\r\n\r\n", 400),
    ("te_not_chunked", b"POST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    ("te_chunked_not_last", b"POST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
    ("te_chunked_twice", b"POST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n", 400),
    ("te_empty", b"POST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \r\n\r\n", 400),
    ("te_gzip_chunked", b"POST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    ("te_in_http10", b"POST http://h/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("chunk_size_not_hex", b"POST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    ("chunk_size_0x", b"POST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n", 400),
    ("chunk_size_space_first", b"POST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\n", 400),
    ("chunk_size_negative", b"POST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\n", 400),
    ("chunk_size_absurd", b"POST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
     + b"f" * 20 + b"\r\n", 400),
    ("chunk_longer_than_size", b"POST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"3\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk_size_bare_lf", b"POST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello", 400),
    ("chunk_line_too_long", b"POST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;"
     + b"x" * 20000 + b"\r\n", 400),
    ("trailer_obs_fold", b"POST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: 1\r\n"
     b" folded\r\n\r\n", 400),
    ("trailer_nul", b"POST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: \x00\r\n"
     b"\r\n", 400),
    ("obs_fold", b"GET http://h/ HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n  continued\r\n\r\n", 400),
    ("space_before_first_header", b"GET http://h/ HTTP/1.1\r\n Host: h\r\n\r\n", 400),
    ("bare_lf_head", b"GET http://h/ HTTP/1.1\nHost: h\n\n", 400),
    ("bare_cr_head", b"GET http://h/ HTTP/1.1\r\nHost: h\rX: y\r\n\r\n", 400),
    ("nul_in_value", b"GET http://h/ HTTP/1.1\r\nHost: h\r\nX-A: a\x00b\r\n\r\n", 400),
    ("space_before_colon", b"GET http://h/ HTTP/1.1\r\nHost : h\r\n\r\n", 400),
    ("no_colon", b"GET http://h/ HTTP/1.1\r\nHost: h\r\nnocolon\r\n\r\n", 400),
    ("head_too_large", b"GET http://h/ HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 17000 + b"\r\n\r\n", 431),
    ("eof_mid_head", b"GET http://h/ HTTP/1.1\r\nHo", 400),
    ("eof_mid_request_line", b"GET http://h/", 400),
    ("eof_mid_content_length_body", b"POST http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nhello", 400),
    ("eof_mid_chunk", b"POST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", 400),
    ("eof_before_trailers_end", b"POST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n", 400),
    ("eof_after_cr", b"\r", 400),
    ("lone_lf_first", b"\nGET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    ("method_not_token", b"G(T http://h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    ("long_method", b"A" * 40 + b" http://h/ HTTP/1.1\r\n\r\n", 400),
]


@pytest.mark.parametrize("split", SPLITS.values(), ids=SPLITS.keys())
@pytest.mark.parametrize(("name", "wire", "status"), ERRORS, ids=[e[0] for e in ERRORS])
def test_malformed_requests_are_refused_with_a_hint(
    name: str, wire: bytes, status: int, split: Callable[[bytes], list[bytes]]
) -> None:
    reader = ForwardRequestReader()
    _, outcome = drive(reader, split(wire), eof=True)
    assert outcome == ("error", status)
    assert reader.state is ForwardState.ERROR
    with pytest.raises(RemoteProtocolError) as info:
        reader.next_event()  # the reader stays in error
    assert info.value.reply_hint is not None


def test_garbage_is_refused_at_its_first_octet() -> None:
    for first in (b"\x16", b"\x05", b"\x04", b"(", b" "):
        reader = ForwardRequestReader()
        reader.receive_data(first)
        with pytest.raises(RemoteProtocolError) as info:
            reader.next_event()
        assert info.value.reply_hint.status_code == 400


def test_an_https_refusal_says_why() -> None:
    reader = ForwardRequestReader()
    reader.receive_data(b"GET https://h/ HTTP/1.1\r\nHost: h\r\n\r\n")
    with pytest.raises(RemoteProtocolError, match="does not originate TLS") as info:
        reader.next_event()
    assert b"CONNECT" in info.value.reply_hint.body


def test_an_origin_form_refusal_says_why() -> None:
    reader = ForwardRequestReader()
    reader.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    with pytest.raises(RemoteProtocolError, match="absolute form"):
        reader.next_event()


@pytest.mark.parametrize("split", SPLITS.values(), ids=SPLITS.keys())
@pytest.mark.parametrize("before", [b"", b"\r\n", NEXT], ids=["first", "after_empty_line", "after_a_request"])
def test_connect_is_handed_off_with_every_octet(split: Callable[[bytes], list[bytes]], before: bytes) -> None:
    connect = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01tls"
    reader = ForwardRequestReader()
    events, outcome = drive(reader, split(before + connect))
    assert events[-1] == ConnectHandOff()
    assert outcome is ForwardState.HANDED_OFF
    assert reader.trailing_data == (connect, False)
    assert reader.next_event() is PAUSED
    assert reader.read_size_hint == 0


def test_a_connect_prefix_waits() -> None:
    reader = ForwardRequestReader()
    reader.receive_data(b"CONNEC")
    assert reader.next_event() is NEED_DATA
    reader.receive_data(b"TX http://h/ HTTP/1.1\r\nHost: h\r\n\r\n")
    event = reader.next_event()
    assert isinstance(event, ForwardRequest)
    assert event.method == b"CONNECTX"


def test_eof_between_requests_is_connection_closed() -> None:
    reader = ForwardRequestReader()
    assert drive(reader, [b""], eof=True) == ([ConnectionClosed()], ForwardState.CLOSED)
    assert reader.next_event() is PAUSED
    reader = ForwardRequestReader()
    assert drive(reader, [NEXT], eof=True) == ([NEXT_REQUEST, EOM, ConnectionClosed()], ForwardState.CLOSED)


def test_eof_after_a_request_is_kept_for_the_caller() -> None:
    reader = ForwardRequestReader()
    assert drive(reader, [NEXT], eof=True, cycle=False)[1] is ForwardState.DONE
    assert reader.trailing_data == (b"", True)
    reader.start_next_cycle()
    assert reader.next_event() == ConnectionClosed()


def test_data_after_eof_is_a_runtime_error() -> None:
    reader = ForwardRequestReader()
    reader.receive_data(b"")
    with pytest.raises(RuntimeError):
        reader.receive_data(b"x")


def test_start_next_cycle_needs_done() -> None:
    reader = ForwardRequestReader()
    with pytest.raises(LocalProtocolError):
        reader.start_next_cycle()
    reader.receive_data(b"POST http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nab")
    assert isinstance(reader.next_event(), ForwardRequest)
    assert reader.next_event() == ForwardBodyData(data=b"ab")
    assert reader.next_event() is NEED_DATA
    with pytest.raises(LocalProtocolError):
        reader.start_next_cycle()


def test_a_body_streams_as_it_arrives() -> None:
    reader = ForwardRequestReader()
    reader.receive_data(b"POST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n01234")
    assert isinstance(reader.next_event(), ForwardRequest)
    assert reader.next_event() == ForwardBodyData(data=b"01234")
    assert reader.next_event() is NEED_DATA
    assert reader.read_size_hint == 11 + 2  # the rest of the chunk and its CRLF
    reader.receive_data(b"56789abcdef\r\n0\r\n\r\n")
    assert reader.next_event() == ForwardBodyData(data=b"56789abcdef")
    assert reader.next_event() == EOM


def test_a_body_error_comes_after_the_data_before_it() -> None:
    reader = ForwardRequestReader()
    reader.receive_data(b"POST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n")
    assert isinstance(reader.next_event(), ForwardRequest)
    assert reader.next_event() == ForwardBodyData(data=b"abc")
    with pytest.raises(RemoteProtocolError, match="chunk size"):
        reader.next_event()


def test_the_request_and_keep_alive_are_exposed() -> None:
    fresh = ForwardRequestReader()
    assert (fresh.request, fresh.keep_alive) == (None, False)
    reader = ForwardRequestReader()
    reader.receive_data(NEXT)
    assert reader.next_event() == NEXT_REQUEST
    assert (reader.request, reader.keep_alive, reader.state) == (NEXT_REQUEST, True, ForwardState.BODY)


def test_limits_are_inclusive() -> None:
    head = b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n"
    reader = ForwardRequestReader(max_head_size=len(head))
    reader.receive_data(head)
    assert isinstance(reader.next_event(), ForwardRequest)
    reader = ForwardRequestReader(max_head_size=len(head) - 1)
    reader.receive_data(head)
    with pytest.raises(RemoteProtocolError) as info:
        reader.next_event()
    assert info.value.reply_hint.status_code == 431


@pytest.mark.parametrize(("value", "error"), [(0, ValueError), (True, TypeError), ("16", TypeError)])
def test_reader_arguments_are_checked(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        ForwardRequestReader(max_head_size=value)


READ_SIZE_CASES = [
    b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
    b"\r\nPOST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n1a\r\n" + b"x" * 26 + b"\r\n0\r\nTrailer: t\r\n\r\n",
]


@pytest.mark.parametrize("request_octets", READ_SIZE_CASES)
def test_reading_by_read_size_hint_never_reads_past_the_request(request_octets: bytes) -> None:
    reader = ForwardRequestReader()
    stream = request_octets + NEXT
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
    assert at == len(request_octets)
    assert reader.read_size_hint == 0


# -- linear time: count the work, not the clock ----------------------------------------------


class CountingBytearray(bytearray):
    """Counts the octets ``find`` looks at and the octets copied out by slicing."""

    work = 0

    def find(self, sub: Any, start: Any = None, end: Any = None) -> int:
        found = super().find(sub, start, end)
        low = 0 if start is None else start
        high = len(self) if end is None else min(end, len(self))
        CountingBytearray.work += max(0, (found + 1 if found >= 0 else high) - low)
        return found

    def __getitem__(self, key):  # type: ignore[no-untyped-def]
        result = super().__getitem__(key)
        if isinstance(key, slice):
            CountingBytearray.work += len(result)
        return result


def counting_reader() -> ForwardRequestReader:
    reader = ForwardRequestReader()
    reader._buffer.data = CountingBytearray()  # white-box: measure the work
    CountingBytearray.work = 0
    return reader


def test_bytewise_feeding_of_a_big_head_and_chunked_body_is_linear() -> None:
    head = b"POST http://h/ HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X-%05d: %s\r\n" % (i, b"v" * 40) for i in range(300))
    head += b"Transfer-Encoding: chunked\r\n\r\n"
    chunks = b"".join(b"%x;ext=%s\r\n%s\r\n" % (n, b"e" * 200, b"d" * n) for n in range(1, 60))
    wire = head + chunks + b"0\r\nT: " + b"t" * 2000 + b"\r\n\r\n"
    reader = counting_reader()
    data = bytearray()
    ended = False
    for i in range(len(wire)):
        reader.receive_data(wire[i : i + 1])
        while (event := reader.next_event()) is not NEED_DATA:
            if isinstance(event, ForwardBodyData):
                data += event.data
            ended = ended or isinstance(event, ForwardEndOfMessage)
            if event is PAUSED:
                break
    assert ended
    assert len(data) == sum(range(1, 60))
    assert CountingBytearray.work <= 4 * len(wire)


def test_bytewise_feeding_of_a_64k_body_is_linear() -> None:
    body = bytes(range(256)) * 256
    wire = b"POST http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 65536\r\n\r\n" + body
    reader = counting_reader()
    got = bytearray()
    for i in range(len(wire)):
        reader.receive_data(wire[i : i + 1])
        event = reader.next_event()
        if isinstance(event, ForwardBodyData):
            got += event.data
    assert reader.next_event() == EOM
    assert got == body
    assert CountingBytearray.work <= 3 * len(wire)


def test_many_tiny_chunks_in_one_piece_are_linear_and_one_event() -> None:
    count = 20_000
    reader = counting_reader()
    reader.receive_data(b"POST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                        + b"1\r\nx\r\n" * count + b"0\r\n\r\n")
    assert isinstance(reader.next_event(), ForwardRequest)
    assert reader.next_event() == ForwardBodyData(data=b"x" * count)
    assert reader.next_event() == EOM
    assert CountingBytearray.work <= 10 * count + 1000


def test_many_empty_lines_are_consumed_in_linear_time() -> None:
    reader = counting_reader()
    reader.receive_data(b"\r\n" * 50_000)
    assert reader.next_event() is NEED_DATA
    assert reader.trailing_data == (b"", False)
    reader.receive_data(NEXT)
    assert reader.next_event() == NEXT_REQUEST

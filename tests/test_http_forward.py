"""Forward-proxy events, head rewriting and body encoding (RFC 9110 §7.6, RFC 9112 §3.2.2, §6, §7.1)."""

from __future__ import annotations

import base64
from typing import Any

import attrs
import pytest

from socks_sansio import Address, LocalProtocolError
from socks_sansio._http_forward import (
    BodyEncoder,
    RequestKind,
    encode_forward_request,
    encode_forward_response,
    forward_request,
    forward_request_head,
    forward_response,
    forward_response_head,
    hop_by_hop_fields,
    proxy_credentials,
    request_kind,
)
from socks_sansio._http_forward_events import (
    ConnectHandOff,
    ForwardBodyData,
    ForwardEndOfMessage,
    ForwardRequest,
    ForwardResponse,
    Framing,
    FramingRefused,
)
from socks_sansio._http_forward_reader import ForwardRequestReader
from socks_sansio._http_forward_response import ForwardResponseReader


def head_fields(head: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """(start line, [(lower-cased name, value)]) of a head, parsed independently of the code under test."""
    assert head.endswith(b"\r\n\r\n")
    start, *lines = head[:-4].split(b"\r\n")
    fields = []
    for line in lines:
        name, colon, value = line.partition(b": ")
        assert colon, line
        fields.append((name.lower(), value))
    return start, fields


def names(fields: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [name for name, _ in fields]


GET = ForwardRequest(method="GET", target="example.com", path="/a?b=1", headers=[("Host", "example.com")])


# -- events ----------------------------------------------------------------------------------


def test_events_are_frozen_keyword_only_values() -> None:
    body = ForwardBodyData(data=b"x")
    events = (GET, ForwardResponse(status_code=200), body, ForwardEndOfMessage(), ConnectHandOff())
    for event in events:
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            event.x = 1  # type: ignore[union-attr]
    with pytest.raises(TypeError):
        ForwardRequest(b"GET", "h")  # type: ignore[call-arg]
    assert ForwardBodyData(data="é") == ForwardBodyData(data="é".encode())
    assert "3 octets" in repr(ForwardBodyData(data=b"abc"))


def test_request_defaults_and_normalisation() -> None:
    request = ForwardRequest(method="GET", target=Address("Example.org", 8080), headers=[("Accept", " */* ")])
    assert request.headers == ((b"Host", b"Example.org:8080"), (b"Accept", b"*/*"))
    assert request.path == b"/"
    assert request.scheme == b"http"
    assert request.absolute_target == b"http://Example.org:8080/"
    assert ForwardRequest(method="GET", target="[::1]").host_header == b"[::1]"
    assert ForwardRequest(method="GET", target="192.0.2.1:80").absolute_target == b"http://192.0.2.1/"
    assert ForwardRequest(method="OPTIONS", target="h", path="*").absolute_target == b"http://h"
    assert ForwardRequest(method="GET", target="h", scheme="HTTP").scheme == b"http"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": "CONNECT", "target": "h:443"}, "CONNECT is not forwarded"),
    ({"method": "G T", "target": "h"}, "not a token"),
    ({"method": "GET", "target": "h", "path": "relative"}, "must start with '/'"),
    ({"method": "GET", "target": "h", "path": "/a#b"}, "without '#'"),
    ({"method": "GET", "target": "h", "path": "/a b"}, "visible ASCII"),
    ({"method": "GET", "target": "h", "path": "*"}, "only for OPTIONS"),
    ({"method": "GET", "target": "h", "scheme": "https"}, "only http"),
    ({"method": "GET", "target": "h:0"}, "port 0"),
    ({"method": "GET", "target": "u@h"}, "userinfo"),
    ({"method": "GET", "target": "h", "headers": [("Host", "h"), ("host", "h")]}, "one Host"),
    ({"method": "GET", "target": "h", "headers": [("Host", "")]}, "no host"),
    ({"method": "GET", "target": "h", "headers": [("X", "a\r\nInjected: 1")]}, "CR, LF or NUL"),
    ({"method": "GET", "target": "h", "http_version": "2.0"}, "HTTP/1.x"),
    ({"method": "POST", "target": "h", "headers": [("Content-Length", "1"), ("Transfer-Encoding", "chunked")]},
     "both Transfer-Encoding and Content-Length"),
    ({"method": "POST", "target": "h", "headers": [("Content-Length", "1"), ("Content-Length", "2")]}, "differ"),
    ({"method": "POST", "target": "h", "headers": [("Transfer-Encoding", "chunked")], "http_version": "1.0"},
     "HTTP/1.0"),
])
def test_invalid_requests_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        ForwardRequest(**kwargs)


def test_framing_refusals_carry_the_status_to_answer() -> None:
    with pytest.raises(FramingRefused) as info:
        ForwardRequest(method="POST", target="h", headers=[("Transfer-Encoding", "gzip, chunked")])
    assert info.value.status == 501
    with pytest.raises(FramingRefused) as info:
        ForwardRequest(method="POST", target="h", headers=[("Transfer-Encoding", "gzip")])
    assert info.value.status == 400


def test_request_properties() -> None:
    post = ForwardRequest(method="POST", target="h", headers=[("Content-Length", "5"), ("Expect", "100-Continue")])
    assert (post.framing, post.content_length, post.expects_continue, post.keep_alive) == (
        Framing.CONTENT_LENGTH, 5, True, True)
    old = ForwardRequest(method="POST", target="h", headers=[("Expect", "100-continue")], http_version="1.0")
    assert (old.framing, old.expects_continue, old.keep_alive) == (Framing.NONE, False, False)
    chunked = ForwardRequest(method="PUT", target="h", headers=[("Transfer-Encoding", "chunked"),
                                                                 ("Connection", "Upgrade, close")])
    assert (chunked.framing, chunked.content_length, chunked.keep_alive) == (Framing.CHUNKED, None, False)
    assert chunked.connection_options == frozenset({b"upgrade", b"close"})
    assert GET.get("HOST") == b"example.com" and GET.get("x") is None
    for method, value, local in [("OPTIONS", "0", True), ("TRACE", "000", True), ("OPTIONS", "1", False),
                                 ("GET", "0", False), ("TRACE", "x", False)]:
        request = ForwardRequest(method=method, target="h", headers=[("Max-Forwards", value)])
        assert request.answer_locally is local


def test_response_events() -> None:
    assert ForwardResponse(status_code=404).reason == b"Not Found"
    assert ForwardResponse(status_code=299).reason == b""
    assert ForwardResponse(status_code=100).is_interim
    with pytest.raises(LocalProtocolError, match="101"):
        ForwardResponse(status_code=101)
    with pytest.raises(LocalProtocolError):
        ForwardResponse(status_code=600)
    with pytest.raises(LocalProtocolError):
        ForwardResponse(status_code=200, headers=[("Transfer-Encoding", "chunked"), ("Content-Length", "0")])
    ok = ForwardResponse(status_code=200, headers=[("Content-Length", "3")])
    assert (ok.framing(), ok.framing("HEAD"), ok.keep_alive) == (Framing.CONTENT_LENGTH, Framing.NONE, True)
    assert ForwardResponse(status_code=200).framing() is Framing.UNTIL_CLOSE
    assert ForwardResponse(status_code=304, headers=[("Content-Length", "3")]).framing() is Framing.NONE
    assert not ForwardResponse(status_code=200, http_version="1.0").keep_alive
    assert ForwardResponse(status_code=200, http_version="1.0", headers=[("Connection", "Keep-Alive")]).keep_alive
    assert not ForwardResponse(status_code=200, headers=[("Connection", "close")]).keep_alive


# -- request_kind, credentials -----------------------------------------------------------------


@pytest.mark.parametrize(("data", "kind"), [
    (b"", None),
    (b"C", None),
    (b"CONNECT", None),
    (b"CONNECT ", RequestKind.CONNECT),
    (b"CONNECT example.com:443 HTTP/1.1\r\n", RequestKind.CONNECT),
    (b"CONNECTX", RequestKind.FORWARD),
    (b"connect ", RequestKind.FORWARD),
    (b"GET http://h/ HTTP/1.1", RequestKind.FORWARD),
    (b"G", RequestKind.FORWARD),
    (b"\x16\x03\x01", RequestKind.FORWARD),
])
def test_request_kind(data: bytes, kind: RequestKind | None) -> None:
    assert request_kind(data) is kind
    assert request_kind(bytearray(data)) is kind


def basic(raw: bytes) -> ForwardRequest:
    return ForwardRequest(method="GET", target="h", headers=[("Proxy-Authorization", raw)])


def test_proxy_credentials() -> None:
    assert proxy_credentials(basic(b"Basic " + base64.b64encode(b"user:p:ss"))) == (b"user", b"p:ss")
    assert proxy_credentials(basic(b"basic  " + base64.b64encode(b"u:"))) == (b"u", b"")
    assert proxy_credentials(basic(b"Bearer abc")) is None
    assert proxy_credentials(basic(b"Basic !!!")) is None
    assert proxy_credentials(basic(b"Basic " + base64.b64encode(b"nocolon"))) is None
    assert proxy_credentials(GET) is None


# -- forward_request -----------------------------------------------------------------------------


def test_forwarded_request_octets() -> None:
    request = ForwardRequest(
        method="POST", target="example.com:8080", path="/up?x=1",
        headers=[("Host", "evil.example"), ("User-Agent", "t"), ("Content-Length", "5"), ("Via", "1.0 other")],
    )
    forwarded = forward_request(request, via="proxy")
    assert forwarded.data == (
        b"POST /up?x=1 HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: t\r\nVia: 1.0 other\r\nVia: 1.1 proxy\r\n"
        b"Content-Length: 5\r\nConnection: keep-alive\r\n\r\n"
    )
    assert (forwarded.framing, forwarded.content_length, forwarded.keep_alive) == (Framing.CONTENT_LENGTH, 5, True)
    assert forward_request_head(request, via=b"proxy", keep_alive=False).endswith(b"Connection: close\r\n\r\n")


def test_hop_by_hop_fields_are_removed_with_those_named_in_connection() -> None:
    request = ForwardRequest(method="GET", target="h", headers=[
        ("Host", "h"), ("Connection", "X-Secret, Keep-Alive, Upgrade"), ("connection", "x-other"),
        ("X-Secret", "1"), ("x-other", "2"), ("Keep-Alive", "timeout=5"), ("Upgrade", "websocket"),
        ("Proxy-Connection", "keep-alive"), ("TE", "trailers"), ("Proxy-Authorization", "Basic dTpw"),
        ("Proxy-Authenticate", "x"), ("Trailer", "X-T"), ("Authorization", "Bearer end-to-end"), ("X-Kept", "3"),
    ])
    start, fields = head_fields(forward_request_head(request, via="p"))
    assert start == b"GET / HTTP/1.1"
    assert fields == [(b"host", b"h"), (b"authorization", b"Bearer end-to-end"), (b"x-kept", b"3"),
                      (b"via", b"1.1 p"), (b"connection", b"keep-alive")]
    assert hop_by_hop_fields(request.headers) >= {b"x-secret", b"x-other", b"connection", b"te", b"trailer"}


def test_a_via_named_in_connection_is_replaced_by_ours() -> None:
    request = ForwardRequest(method="GET", target="h", headers=[("Via", "1.1 a"), ("Connection", "via")])
    assert head_fields(forward_request_head(request, via="p"))[1].count((b"via", b"1.1 p")) == 1
    assert b"1.1 a" not in forward_request_head(request, via="p")


def test_framing_is_written_as_the_body_will_go() -> None:
    chunked = ForwardRequest(method="POST", target="h", headers=[
        ("Transfer-Encoding", "Chunked"), ("Trailer", "X-Sum"), ("Content-Type", "text/plain")])
    forwarded = forward_request(chunked, via="p")
    _, fields = head_fields(forwarded.data)
    assert (b"transfer-encoding", b"chunked") in fields and (b"trailer", b"X-Sum") in fields
    assert forwarded.framing is Framing.CHUNKED
    http10 = ForwardRequest(method="GET", target="h", http_version="1.0")
    _, fields = head_fields(forward_request_head(http10, via="p"))
    assert (b"via", b"1.0 p") in fields
    assert b"content-length" not in names(fields) and b"transfer-encoding" not in names(fields)
    empty_post = ForwardRequest(method="POST", target="h", headers=[("Content-Length", "00")])
    assert (b"content-length", b"0") in head_fields(forward_request_head(empty_post, via="p"))[1]


def test_options_asterisk_and_max_forwards() -> None:
    options = ForwardRequest(method="OPTIONS", target="h:81", path="*", headers=[("Max-Forwards", "3")])
    start, fields = head_fields(forward_request_head(options, via="p"))
    assert start == b"OPTIONS * HTTP/1.1"
    assert (b"host", b"h:81") in fields and (b"max-forwards", b"2") in fields
    get = ForwardRequest(method="GET", target="h", headers=[("Max-Forwards", "3")])
    assert (b"max-forwards", b"3") in head_fields(forward_request_head(get, via="p"))[1]
    last = ForwardRequest(method="TRACE", target="h", headers=[("Max-Forwards", "0")])
    with pytest.raises(LocalProtocolError, match="answered by the proxy"):
        forward_request(last, via="p")


@pytest.mark.parametrize("via", ["two words", "", "a\r\nX: y", "p:port", "[::1", "é"])
def test_via_must_be_a_pseudonym(via: str) -> None:
    with pytest.raises(LocalProtocolError):
        forward_request(GET, via=via)


@pytest.mark.parametrize("via", ["proxy", "proxy.example:3128", "[2001:db8::1]:8080", "p_1"])
def test_via_accepts_pseudonyms_and_host_port(via: str) -> None:
    assert (b"via", b"1.1 " + via.encode()) in head_fields(forward_request_head(GET, via=via))[1]


# -- forward_response ----------------------------------------------------------------------------

HTTP10 = ForwardRequest(method="GET", target="h", http_version="1.0")
HEAD = ForwardRequest(method="HEAD", target="h")


def fwd(response: ForwardResponse, request: ForwardRequest = GET, **kw: Any) -> tuple[Any, list[Any], Any]:
    forwarded = forward_response(response, request=request, via="p", **kw)
    start, fields = head_fields(forwarded.data)
    return start, fields, forwarded


def test_forwarded_response_octets() -> None:
    response = ForwardResponse(status_code=200, reason="Fine", headers=[
        ("Content-Length", "5"), ("Connection", "close, X-Hop"), ("X-Hop", "1"), ("Server", "o"),
        ("Proxy-Authenticate", "Basic"), ("Keep-Alive", "timeout=1")])
    assert forward_response_head(response, request=GET, via="p") == (
        b"HTTP/1.1 200 Fine\r\nServer: o\r\nVia: 1.1 p\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n"
    )  # the origin's Connection: close concerns the proxy's own connection to it


def test_interim_responses() -> None:
    start, fields, forwarded = fwd(ForwardResponse(status_code=100))
    assert (start, fields, forwarded.framing) == (b"HTTP/1.1 100 Continue", [(b"via", b"1.1 p")], Framing.NONE)
    hints = ForwardResponse(status_code=103, headers=[("Link", "</s.css>")])
    assert fwd(hints)[1] == [(b"link", b"</s.css>"), (b"via", b"1.1 p")]
    assert forward_response(hints, request=HTTP10, via="p").data == b""  # never a 1xx to HTTP/1.0


def test_response_framing_follows_the_client() -> None:
    chunked = ForwardResponse(status_code=200, headers=[("Transfer-Encoding", "chunked"), ("Trailer", "X-T")])
    _, fields, forwarded = fwd(chunked)
    assert (forwarded.framing, forwarded.keep_alive) == (Framing.CHUNKED, True)
    assert (b"trailer", b"X-T") in fields and (b"transfer-encoding", b"chunked") in fields
    _, fields, forwarded = fwd(chunked, HTTP10)
    assert (forwarded.framing, forwarded.keep_alive) == (Framing.UNTIL_CLOSE, False)
    assert names(fields) == [b"via", b"connection"] and fields[-1] == (b"connection", b"close")
    until_close = ForwardResponse(status_code=200, headers=[("Server", "x")])
    _, fields, forwarded = fwd(until_close)
    assert (forwarded.framing, forwarded.keep_alive) == (Framing.CHUNKED, True)  # re-chunked: the client stays
    assert (b"transfer-encoding", b"chunked") in fields
    _, fields, forwarded = fwd(until_close, HTTP10)
    assert (forwarded.framing, forwarded.keep_alive) == (Framing.UNTIL_CLOSE, False)
    _, fields, forwarded = fwd(until_close, keep_alive=False)
    assert (forwarded.framing, forwarded.keep_alive, fields[-1]) == (Framing.CHUNKED, False, (b"connection", b"close"))


def test_bodyless_responses_keep_their_content_length() -> None:
    for status, request, kept in [(200, HEAD, True), (304, GET, True), (204, GET, False)]:
        response = ForwardResponse(status_code=status, headers=[("Content-Length", "42"), ("ETag", "e")])
        _, fields, forwarded = fwd(response, request)
        assert forwarded.framing is Framing.NONE
        assert ((b"content-length", b"42") in fields) is kept
    head_chunked = ForwardResponse(status_code=200, headers=[("Transfer-Encoding", "chunked")])
    assert b"transfer-encoding" not in names(fwd(head_chunked, HEAD)[1])


# -- bodies ----------------------------------------------------------------------------------------


def test_chunked_encoder() -> None:
    encoder = BodyEncoder(Framing.CHUNKED)
    assert encoder.send(ForwardBodyData(data=b"hello world!")) == b"c\r\nhello world!\r\n"
    assert encoder.send(ForwardBodyData(data=b"")) == b""  # never a premature last chunk
    trailers = [("X-Sum", "1"), ("Content-Length", "9"), ("Host", "h"), ("Connection", "x"), ("X-Other", "2")]
    assert encoder.send(ForwardEndOfMessage(trailers=trailers)) == b"0\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\n"
    assert encoder.finished
    with pytest.raises(LocalProtocolError):
        encoder.send(ForwardBodyData(data=b"late"))


def test_content_length_encoder_counts() -> None:
    encoder = BodyEncoder(Framing.CONTENT_LENGTH, content_length=5)
    assert encoder.send(ForwardBodyData(data=b"hel")) == b"hel"
    with pytest.raises(LocalProtocolError, match="only 2"):
        encoder.send(ForwardBodyData(data=b"lo!"))
    with pytest.raises(LocalProtocolError, match="short"):
        encoder.send(ForwardEndOfMessage())
    assert encoder.send(ForwardBodyData(data=b"lo")) == b"lo"
    assert encoder.send(ForwardEndOfMessage(trailers=[("X", "dropped")])) == b""


def test_other_encoders() -> None:
    assert BodyEncoder(Framing.UNTIL_CLOSE).send(ForwardBodyData(data=b"raw")) == b"raw"
    none = BodyEncoder(Framing.NONE)
    assert none.send(ForwardBodyData(data=b"")) == b""
    with pytest.raises(LocalProtocolError):
        none.send(ForwardBodyData(data=b"x"))
    assert none.send(ForwardEndOfMessage()) == b""
    with pytest.raises(TypeError):
        BodyEncoder("chunked")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="content_length"):
        BodyEncoder(Framing.CONTENT_LENGTH)
    with pytest.raises(TypeError):
        BodyEncoder(Framing.CHUNKED).send(GET)  # type: ignore[arg-type]
    forwarded = forward_request(ForwardRequest(method="PUT", target="h", headers=[("Content-Length", "2")]), via="p")
    encoder = forwarded.body_encoder()
    assert encoder.send(ForwardBodyData(data=b"ab")) + encoder.send(ForwardEndOfMessage()) == b"ab"


# -- round trips through the readers ---------------------------------------------------------------


def read_request(wire: bytes) -> list[Any]:
    reader = ForwardRequestReader()
    reader.receive_data(wire)
    out = []
    while not isinstance(event := reader.next_event(), ForwardEndOfMessage):
        out.append(event)
    return [*out, event]


def test_encoded_requests_read_back() -> None:
    requests = [
        GET,
        ForwardRequest(method="OPTIONS", target="h", path="*"),
        ForwardRequest(method="PUT", target="[2001:db8::5]:8080", headers=[("Transfer-Encoding", "chunked")]),
        ForwardRequest(method="DELETE", target="Example.com:80", http_version="1.0"),
    ]
    for request in requests:
        encoder = BodyEncoder(request.framing, content_length=request.content_length)
        wire = encode_forward_request(request) + encoder.send(ForwardBodyData(data=b""))
        wire += encoder.send(ForwardEndOfMessage())
        assert read_request(wire) == [request, ForwardEndOfMessage()]


def test_encoded_responses_read_back() -> None:
    for response in [ForwardResponse(status_code=100), ForwardResponse(status_code=299, reason="Odd"),
                     ForwardResponse(status_code=200, headers=[("Content-Length", "0")], http_version="1.0")]:
        reader = ForwardResponseReader()
        reader.receive_data(encode_forward_response(response))
        assert reader.next_event() == response


def test_fuzz_finding_max_forwards_is_read_the_same_way_everywhere() -> None:
    """Fuzz finding (http_forward_server, 2026-12-03): answer_locally read the first Max-Forwards field,
    forward_request every one, so a request the first called forwardable made the second raise."""
    request = ForwardRequest(method="TRACE", target="h", headers=[("Max-Forwards", ": h"), ("Max-Forwards", "0")])
    assert (request.max_forwards, request.answer_locally) == (None, False)
    assert b"Max-Forwards: : h\r\nMax-Forwards: 0\r\n" in forward_request_head(request, via="p")
    two = ForwardRequest(method="OPTIONS", target="h", headers=[("Max-Forwards", "5"), ("Max-Forwards", "0")])
    assert (two.max_forwards, two.answer_locally) == (5, False)
    _, fields = head_fields(forward_request_head(two, via="p"))
    assert [v for n, v in fields if n == b"max-forwards"] == [b"4"]
    huge = ForwardRequest(method="TRACE", target="h", headers=[("Max-Forwards", "9" * 5000)])
    assert huge.max_forwards == 10**18
    assert (b"max-forwards", b"%d" % (10**18 - 1)) in head_fields(forward_request_head(huge, via="p"))[1]

"""Properties of the forward-proxy codec, and cross-checks with h11 (the real-world peer implementation).

* arbitrary bytes: the readers raise only RemoteProtocolError, and fed whole or
  one octet at a time they give the same events and outcome;
* any chunking of a valid stream of requests or responses gives the same events;
* encode → read round trips (our encoder, our readers);
* h11 as the client/origin: what it writes, our readers read as h11 meant it;
  what we forward (heads rewritten, bodies re-encoded), h11 reads back with the
  same method, target, fields and body.
"""

from __future__ import annotations

from typing import Any

import h11
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from socks_sansio import Address
from socks_sansio._http_forward import (
    HOP_BY_HOP,
    BodyEncoder,
    encode_forward_request,
    encode_forward_response,
    forward_request,
    forward_response,
)
from socks_sansio._http_forward_events import (
    ForwardBodyData,
    ForwardEndOfMessage,
    ForwardRequest,
    ForwardResponse,
    Framing,
)
from socks_sansio._http_forward_reader import ForwardRequestReader, ForwardState
from socks_sansio._http_forward_response import ForwardResponseReader

from .http_forward_helpers import bytewise, drive, merged

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
RESERVED = {"host", "content-length", "transfer-encoding", "connection", "trailer", "te", "upgrade", "keep-alive",
            "proxy-connection", "proxy-authorization", "proxy-authenticate", "via", "expect", "max-forwards"}
relaxed = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], deadline=None)

# -- strategies (our own: tests/strategies.py is shared and not edited here) -----------------------

methods = st.text(TCHARS, min_size=1, max_size=8).filter(lambda m: m != "CONNECT")
field_names = st.text(TCHARS, min_size=1, max_size=12).filter(lambda n: n.lower() not in RESERVED)
field_values = st.binary(max_size=24).map(
    lambda b: bytes(c for c in b if c == 0x09 or 0x20 <= c <= 0x7E or c >= 0x80).strip(b" \t")
)
fields = st.lists(st.tuples(field_names.map(str.encode), field_values), max_size=5)
labels = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=10)
domains = st.lists(labels, min_size=1, max_size=3).map(".".join).filter(lambda d: not d[-1].isdigit())
hosts = st.one_of(domains, st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str))
ports = st.integers(1, 65535)
paths = st.text("abcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/%?", max_size=20).map(lambda p: "/" + p)
chunks = st.lists(st.binary(min_size=1, max_size=40), max_size=4)


@st.composite
def requests(draw: st.DrawFn, *, last: bool = False) -> tuple[ForwardRequest, list[bytes], list[Any]]:
    """A request, its body chunks and trailers (keep-alive unless *last* says it may be the last)."""
    version = draw(st.sampled_from(["1.1", "1.0"])) if last else "1.1"
    framing = draw(st.sampled_from(["none", "length", "chunked"] if version == "1.1" else ["none", "length"]))
    body = draw(chunks) if framing != "none" else []
    headers = draw(fields)
    if framing == "length":
        headers.append((b"Content-Length", b"%d" % sum(map(len, body))))
    elif framing == "chunked":
        headers.append((b"Transfer-Encoding", b"chunked"))
    trailers = draw(fields) if framing == "chunked" else []
    request = ForwardRequest(
        method=draw(methods), target=Address(draw(hosts), draw(ports)), path=draw(paths),
        headers=[(b"Host", b"ignored.example"), *headers], http_version=version,
    )
    return request, body, trailers


def encoded(request: ForwardRequest, body: list[bytes], trailers: list[Any]) -> tuple[bytes, list[Any]]:
    """The wire octets and the expected (merged) events of one request."""
    encoder = BodyEncoder(request.framing, content_length=request.content_length)
    wire = encode_forward_request(request) + b"".join(encoder.send(ForwardBodyData(data=c)) for c in body)
    wire += encoder.send(ForwardEndOfMessage(trailers=trailers))
    events: list[Any] = [request]
    if body:
        events.append(ForwardBodyData(data=b"".join(body)))
    events.append(ForwardEndOfMessage(trailers=trailers))
    return wire, events


def cut(data: bytes, sizes: list[int]) -> list[bytes]:
    out, at, i = [], 0, 0
    while at < len(data):
        out.append(data[at : at + sizes[i % len(sizes)]])
        at += sizes[i % len(sizes)]
        i += 1
    return out


# -- arbitrary bytes -------------------------------------------------------------------------------

PREFIXES = [b"", b"GET http://h/ HTTP/1.1\r\nHost: h\r\n", b"POST http://h/ HTTP/1.1\r\nHost: h\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n", b"PUT http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\n"]
RESPONSE_PREFIXES = [b"", b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                     b"HTTP/1.1 100 Continue\r\n\r\n"]


@relaxed
@given(prefix=st.sampled_from(PREFIXES), tail=st.binary(max_size=200), eof=st.booleans())
def test_any_bytes_give_only_remote_errors_and_do_not_depend_on_chunking(prefix: bytes, tail: bytes, eof: bool) -> None:
    data = prefix + tail
    # drive() lets anything but RemoteProtocolError through: that would fail the test
    whole = drive(ForwardRequestReader(max_head_size=256), [data] if data else [], eof=eof)
    assert drive(ForwardRequestReader(max_head_size=256), bytewise(data), eof=eof) == whole


@relaxed
@given(prefix=st.sampled_from(RESPONSE_PREFIXES), tail=st.binary(max_size=200), eof=st.booleans(),
       method=st.sampled_from([b"GET", b"HEAD"]))
def test_any_response_bytes_give_only_remote_errors(prefix: bytes, tail: bytes, eof: bool, method: bytes) -> None:
    data = prefix + tail
    whole = drive(ForwardResponseReader(request_method=method, max_head_size=256), [data] if data else [], eof=eof)
    assert drive(ForwardResponseReader(request_method=method, max_head_size=256), bytewise(data), eof=eof) == whole


# -- valid streams under any chunking --------------------------------------------------------------


@relaxed
@given(stream=st.lists(requests(), min_size=1, max_size=3), final=requests(last=True),
       sizes=st.lists(st.integers(1, 50), min_size=1, max_size=5))
def test_pipelined_requests_read_the_same_under_any_chunking(
    stream: list[Any], final: Any, sizes: list[int]
) -> None:
    wire, expected = b"", []
    for request, body, trailers in [*stream, final]:
        octets, events = encoded(request, body, trailers)
        wire += octets
        expected += events
    events, _ = drive(ForwardRequestReader(), cut(wire, sizes), eof=True)
    if final[0].keep_alive:
        expected.append(events[-1])  # ConnectionClosed
    assert events == expected


@st.composite
def responses(draw: st.DrawFn) -> tuple[ForwardResponse, bytes, list[bytes], list[Any], bool]:
    """(response, request method, body chunks, trailers, ends with the close)."""
    method = draw(st.sampled_from([b"GET", b"HEAD", b"POST"]))
    status = draw(st.sampled_from([200, 201, 204, 304, 404, 500, 299]))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    headers = draw(fields)
    body = draw(chunks)
    if framing == "length":
        headers.append((b"Content-Length", b"%d" % sum(map(len, body))))
    elif framing == "chunked":
        headers.append((b"Transfer-Encoding", b"chunked"))
    response = ForwardResponse(status_code=status, headers=headers)
    if response.framing(method) is Framing.NONE:
        body = []
    trailers = draw(fields) if response.framing(method) is Framing.CHUNKED else []
    return response, method, body, trailers, response.framing(method) is Framing.UNTIL_CLOSE


@relaxed
@given(case=responses(), interim=st.lists(st.sampled_from([100, 102, 103]), max_size=2),
       sizes=st.lists(st.integers(1, 50), min_size=1, max_size=5))
def test_responses_read_the_same_under_any_chunking(case: Any, interim: list[int], sizes: list[int]) -> None:
    response, method, body, trailers, until_close = case
    wire = b"".join(encode_forward_response(ForwardResponse(status_code=s)) for s in interim)
    wire += encode_forward_response(response)
    encoder = BodyEncoder(response.framing(method), content_length=response.get("content-length") and
                          int(response.get("content-length") or 0))
    wire += b"".join(encoder.send(ForwardBodyData(data=c)) for c in body)
    wire += encoder.send(ForwardEndOfMessage(trailers=trailers))
    expected = [ForwardResponse(status_code=s) for s in interim] + [response]
    expected += [ForwardBodyData(data=b"".join(body))] if body else []
    expected.append(ForwardEndOfMessage(trailers=trailers))
    reader = ForwardResponseReader(request_method=method)
    events, outcome = drive(reader, cut(wire, sizes), eof=True, cycle=False)
    assert events == expected
    assert outcome is (ForwardState.MUST_CLOSE if until_close else ForwardState.DONE)


# -- h11 as the client: it writes, we read -----------------------------------------------------------


def h11_client_wire(request: ForwardRequest, body: list[bytes], trailers: list[Any]) -> bytes:
    client = h11.Connection(h11.CLIENT)
    wire = client.send(h11.Request(method=request.method, target=request.absolute_target,
                                   headers=list(request.headers)))
    for chunk in body:
        wire += client.send(h11.Data(data=chunk))
    return wire + client.send(h11.EndOfMessage(headers=trailers))


@relaxed
@given(stream=st.lists(requests(), min_size=1, max_size=3))
def test_h11_clients_requests_read_back(stream: list[Any]) -> None:
    wire, expected = b"", []
    for request, body, trailers in stream:
        wire += h11_client_wire(request, body, trailers)
        expected += encoded(request, body, trailers)[1]
    events, _ = drive(ForwardRequestReader(), [wire])
    assert events == expected


# -- we forward, h11 (the origin) reads ---------------------------------------------------------------


def h11_events(conn: h11.Connection, wire: bytes, *, eof: bool = False) -> list[Any]:
    conn.receive_data(wire)
    if eof:
        conn.receive_data(b"")
    out: list[Any] = []
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA or event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
            return out
        out.append(event)
        if isinstance(event, h11.EndOfMessage):
            return out


def lower(headers: Any) -> list[tuple[bytes, bytes]]:
    return [(bytes(name).lower(), bytes(value)) for name, value in headers]


@relaxed
@given(case=requests(last=True), keep_alive=st.booleans())
def test_h11_origin_reads_what_we_forward(case: Any, keep_alive: bool) -> None:
    request, body, trailers = case
    forwarded = forward_request(request, via="proxy", keep_alive=keep_alive)
    encoder = forwarded.body_encoder()
    wire = forwarded.data + b"".join(encoder.send(ForwardBodyData(data=c)) for c in body)
    wire += encoder.send(ForwardEndOfMessage(trailers=trailers))
    got = h11_events(h11.Connection(h11.SERVER), wire)
    head, *rest = got
    assert head.method == request.method
    assert head.target == request.path
    assert head.http_version == b"1.1"
    received = lower(head.headers)
    assert received[0] == (b"host", request.host_header)
    assert not HOP_BY_HOP - {b"connection", b"transfer-encoding", b"trailer"} & {n for n, _ in received}
    assert (b"via", request.http_version + b" proxy") in received
    assert (b"connection", b"keep-alive" if keep_alive else b"close") in received
    rewritten = (b"host", b"via", b"connection", b"content-length", b"transfer-encoding")
    kept = [v for n, v in lower(request.headers) if n not in rewritten]
    assert [v for n, v in received if n not in rewritten] == kept
    assert b"".join(bytes(e.data) for e in rest if isinstance(e, h11.Data)) == b"".join(body)
    assert lower(rest[-1].headers) == lower(trailers)


# -- h11 as the origin: it answers, we read -----------------------------------------------------------


@st.composite
def h11_responses(draw: st.DrawFn) -> tuple[bytes, bytes, int, list[Any], list[bytes], list[Any], str]:
    method = draw(st.sampled_from([b"GET", b"HEAD", b"POST"]))
    version = draw(st.sampled_from([b"1.1", b"1.0"]))
    status = draw(st.sampled_from([200, 204, 304, 404, 502]))
    framing = draw(st.sampled_from(["length", "auto"]))
    headers = draw(fields)
    body = draw(chunks) if method != b"HEAD" and status not in (204, 304) else []
    if framing == "length":
        headers.append((b"Content-Length", b"%d" % sum(map(len, body))))
    trailers = draw(fields) if framing == "auto" and version == b"1.1" and body else []
    return method, version, status, headers, body, trailers, framing


@relaxed
@given(case=h11_responses(), interim=st.booleans(), sizes=st.lists(st.integers(1, 30), min_size=1, max_size=4),
       client_version=st.sampled_from([b"1.1", b"1.0"]))
def test_h11_origins_responses_read_back_and_forward_to_h11_clients(
    case: Any, interim: bool, sizes: list[int], client_version: bytes
) -> None:
    method, version, status, headers, body, trailers, _ = case
    origin = h11.Connection(h11.SERVER)
    origin.receive_data(method + b" /x HTTP/" + version + b"\r\nHost: o\r\n" +
                        (b"Content-Length: 0\r\n" if method == b"POST" else b"") + b"\r\n")
    origin.next_event()
    origin.next_event()
    wire = b""
    if interim and version == b"1.1":
        wire += origin.send(h11.InformationalResponse(status_code=100, headers=[]))
    wire += origin.send(h11.Response(status_code=status, headers=headers))
    for chunk in body:
        wire += origin.send(h11.Data(data=chunk))
    wire += origin.send(h11.EndOfMessage(headers=trailers))
    reader = ForwardResponseReader(request_method=method)
    events, _ = drive(reader, cut(wire, sizes), eof=True, cycle=False)
    final = [e for e in events if isinstance(e, ForwardResponse) and not e.is_interim]
    assert len(final) == 1
    assert final[0].status_code == status
    data = b"".join(e.data for e in events if isinstance(e, ForwardBodyData))
    assert data == b"".join(body)
    assert lower(events[-1].trailers) == lower(trailers)
    # and back to an h11 client, through forward_response
    client = h11.Connection(h11.CLIENT)
    # (h11 only speaks 1.1; a 1.0 request here checks h11 reads what an HTTP/1.0 client would get)
    request = ForwardRequest(method=method, target="o", http_version=client_version,
                             headers=[("Content-Length", "0")] if method == b"POST" else [])
    client.send(h11.Request(method=method, target=b"/x", headers=[("Host", "o")] + (
        [("Content-Length", "0")] if method == b"POST" else [])))
    client.send(h11.EndOfMessage())
    out, encoder, framing = b"", None, None
    for event in events:
        if isinstance(event, ForwardResponse):
            forwarded = forward_response(event, request=request, via="p")
            out += forwarded.data
            if not event.is_interim:
                encoder, framing = forwarded.body_encoder(), forwarded.framing
        else:
            assert encoder is not None
            out += encoder.send(event)
    assert encoder is not None
    got = []
    client.receive_data(out)
    if framing is Framing.UNTIL_CLOSE:
        assert client_version == b"1.0"
        client.receive_data(b"")
    while not isinstance(event := client.next_event(), h11.EndOfMessage):
        assert event is not h11.NEED_DATA
        got.append(event)
    responses_got = [e for e in got if isinstance(e, h11.Response)]
    assert [r.status_code for r in responses_got] == [status]
    assert b"".join(bytes(e.data) for e in got if isinstance(e, h11.Data)) == data
    assert (b"via", final[0].http_version + b" p") in lower(responses_got[0].headers)


def test_merged_joins_runs_of_data_only() -> None:
    eom = ForwardEndOfMessage()
    assert merged([ForwardBodyData(data=b"a"), ForwardBodyData(data=b"b"), eom, ForwardBodyData(data=b"c")]) == [
        ForwardBodyData(data=b"ab"), eom, ForwardBodyData(data=b"c")]

"""HTTP CONNECT: events, wire format, both roles of the machine, and properties."""

from __future__ import annotations

import base64
import ipaddress
import string
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from socks_sansio import (
    CLIENT,
    NEED_DATA,
    PAUSED,
    SERVER,
    Address,
    ConnectionClosed,
    LocalProtocolError,
    RemoteProtocolError,
    Role,
)
from socks_sansio._http_connection import (
    SENDER,
    TRANSITIONS,
    HttpConnectConnection,
    HttpConnectState,
    classify,
)
from socks_sansio._http_events import ConnectRequest, ConnectResponse, proxy_basic_auth
from socks_sansio._http_wire import encode_event

from .helpers import SPLITS, chunked, events_of, exchange, feed

S = HttpConnectState
TARGET = Address("example.com", 443)
CURL_REQUEST = (
    b"CONNECT example.com:443 HTTP/1.1\r\n"
    b"Host: example.com:443\r\n"
    b"User-Agent: curl/8.5.0\r\n"
    b"Proxy-Connection: Keep-Alive\r\n"
    b"\r\n"
)
EARLY = b"\x16\x03\x01\x02\x00early TLS bytes\r\n\r\n"


def feed_to_eof(conn: HttpConnectConnection, pieces: list[bytes]) -> list[Any]:
    """Feed *pieces*, then EOF, draining events after each."""
    return feed(conn, [*pieces, b""])


def server_error(data: bytes, **kwargs: Any) -> RemoteProtocolError:
    """Feed *data* to a fresh server (whole, then EOF) and return the error it raises."""
    conn = HttpConnectConnection(SERVER, **kwargs)
    with pytest.raises(RemoteProtocolError) as info:
        feed_to_eof(conn, [data])
    assert conn.state is S.ERROR
    return info.value


def client_awaiting(request: ConnectRequest | None = None, **kwargs: Any) -> HttpConnectConnection:
    conn = HttpConnectConnection(CLIENT, **kwargs)
    conn.send(request or ConnectRequest(target=TARGET))
    assert conn.state is S.AWAIT_RESPONSE
    return conn


def pair() -> tuple[HttpConnectConnection, HttpConnectConnection]:
    return HttpConnectConnection(CLIENT), HttpConnectConnection(SERVER)


# -- events -------------------------------------------------------------------


def test_request_adds_host_first_and_keeps_name_case() -> None:
    request = ConnectRequest(target="example.com:443", headers=[("User-AGENT", "x")])
    assert request.headers == ((b"Host", b"example.com:443"), (b"User-AGENT", b"x"))
    assert request.get("user-agent") == b"x"
    assert request.get(b"HOST") == b"example.com:443"
    assert request.get("missing") is None
    assert request.get_all("host") == (b"example.com:443",)


@pytest.mark.parametrize("host", ["EXAMPLE.com:443", "example.com:0443"])
def test_request_accepts_an_equal_host(host: str) -> None:
    request = ConnectRequest(target=TARGET, headers=[("host", host)])
    assert request.headers == ((b"host", host.encode()),)


def test_request_accepts_a_host_without_its_port() -> None:
    # PySocks sends "Host: example.com" for "CONNECT example.com:443": the request target decides.
    request = ConnectRequest(target=TARGET, headers=[("Host", "example.com")])
    assert request.get("host") == b"example.com"


@pytest.mark.parametrize("host", ["example.com:80", "other.com:443", "other.com", "[::1]:443", "x y"])
def test_request_refuses_a_different_host(host: str) -> None:
    with pytest.raises(LocalProtocolError, match="does not name the CONNECT target"):
        ConnectRequest(target=TARGET, headers=[("Host", host)])


def test_request_refuses_two_hosts() -> None:
    with pytest.raises(LocalProtocolError, match="one Host header"):
        ConnectRequest(target=TARGET, headers=[("Host", "example.com:443"), ("host", "example.com:443")])


def test_request_target_forms() -> None:
    v6 = ConnectRequest(target=Address("2001:db8::1", 8443))
    assert v6.get("host") == b"[2001:db8::1]:8443"
    assert ConnectRequest(target="[2001:db8::1]:8443") == v6
    # a domain that spells an IP literal is what a server will read: the address
    assert ConnectRequest(target=Address(b"127.0.0.1", 80)).target.host == ipaddress.IPv4Address("127.0.0.1")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (Address("example.com", 0), "port in 1..65535"),
        (Address(b"user@example.com", 80), "reg-name"),
        (Address(b"a/b", 80), "reg-name"),
        (Address(b"caf\xc3\xa9", 80), "reg-name"),
        (Address(ipaddress.IPv6Address("fe80::1%eth0"), 80), "scoped"),
        ("example.com", "no port"),
        ("::1:80", "brackets"),
    ],
)
def test_request_refuses_bad_targets(target: Any, message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        ConnectRequest(target=target)


def test_event_type_errors() -> None:
    with pytest.raises(TypeError):
        ConnectRequest(target=443)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ConnectRequest(target=TARGET, headers="Host: x")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ConnectRequest(target=TARGET, headers=[("a", "b", "c")])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        ConnectRequest(target=TARGET, headers=[("a", 1)])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        ConnectResponse(status_code="200")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ConnectResponse(status_code=True)


INJECTIONS = [b"a\r\nEvil: 1", b"a\nb", b"a\rb", b"a\0b", b"a\x01b", b"a\x7fb"]


@pytest.mark.parametrize("bad", INJECTIONS)
def test_injection_is_refused_everywhere(bad: bytes) -> None:
    with pytest.raises(LocalProtocolError):
        ConnectRequest(target=TARGET, headers=[(b"X-Test", bad)])
    with pytest.raises(LocalProtocolError):
        ConnectRequest(target=TARGET, headers=[(bad, b"v")])
    with pytest.raises(LocalProtocolError):
        ConnectResponse(status_code=407, reason=bad)
    with pytest.raises(LocalProtocolError):
        ConnectResponse(status_code=407, headers=[(b"X-Test", bad)])
    with pytest.raises(LocalProtocolError):
        ConnectRequest(target=Address(bad.replace(b" ", b""), 80))
    with pytest.raises(LocalProtocolError):
        ConnectRequest(target=TARGET, http_version=bad)


def test_injection_message_names_the_problem() -> None:
    with pytest.raises(LocalProtocolError, match="CR, LF or NUL"):
        ConnectRequest(target=TARGET, headers=[("X", "a\r\nHost: evil:1")])
    with pytest.raises(LocalProtocolError, match="not a token"):
        ConnectRequest(target=TARGET, headers=[("X Y", "a")])
    with pytest.raises(LocalProtocolError, match="not a token"):
        ConnectRequest(target=TARGET, headers=[("", "a")])


def test_header_values_lose_surrounding_whitespace_only() -> None:
    request = ConnectRequest(target=TARGET, headers=[("X", " \ta b\t ")])
    assert request.get("x") == b"a b"
    assert ConnectRequest(target=TARGET, headers=[("X", "caf\u00e9")]).get("x") == "café".encode()


def test_response_defaults_and_properties() -> None:
    ok = ConnectResponse(status_code=200)
    assert ok.reason == b"OK"
    assert ok.succeeded
    assert not ok.is_interim
    assert ConnectResponse(status_code=299).reason == b""
    assert ConnectResponse(status_code=407, reason="Go away").reason == b"Go away"
    assert ConnectResponse(status_code=100).is_interim
    refusal = ConnectResponse(
        status_code=407,
        headers=[("Proxy-Authenticate", 'Basic realm="a"'), ("proxy-authenticate", "Digest realm=b")],
    )
    assert refusal.challenges == (b'Basic realm="a"', b"Digest realm=b")
    assert not refusal.succeeded
    assert "octets" in repr(ConnectResponse(status_code=403, body=b"secret"))


@pytest.mark.parametrize("status", [99, 600, 0, -1, 1000])
def test_response_status_range(status: int) -> None:
    with pytest.raises(LocalProtocolError, match=r"100\.\.599"):
        ConnectResponse(status_code=status)


def test_response_body_rules() -> None:
    with_body = ConnectResponse(status_code=407, body=b"hello")
    assert with_body.get("content-length") == b"5"
    assert ConnectResponse(status_code=407, headers=[("Content-Length", "5")], body=b"hello") == attrs.evolve(
        with_body, headers=[("Content-Length", "5")]
    )
    for status in (100, 200, 204, 299, 304):
        with pytest.raises(LocalProtocolError, match="has no body"):
            ConnectResponse(status_code=status, body=b"x")
    with pytest.raises(LocalProtocolError, match="disagrees"):
        ConnectResponse(status_code=407, headers=[("Content-Length", "4")], body=b"hello")
    with pytest.raises(LocalProtocolError, match="disagrees"):
        ConnectResponse(status_code=407, headers=[("Content-Length", "5"), ("Content-Length", "6")], body=b"hello")
    with pytest.raises(LocalProtocolError, match="Transfer-Encoding"):
        ConnectResponse(status_code=407, headers=[("Transfer-Encoding", "chunked")], body=b"x")
    # a received refusal whose body was not read keeps its declared length
    assert ConnectResponse(status_code=407, headers=[("Content-Length", "99")]).body == b""


def test_proxy_basic_auth() -> None:
    name, value = proxy_basic_auth("Aladdin", "open sesame")
    assert name == b"Proxy-Authorization"
    assert value == b"Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="  # RFC 7617 §2
    assert proxy_basic_auth("us\u00e9r", "p\u00e4ss:word")[1] == b"Basic " + base64.b64encode(
        "usér:päss:word".encode()
    )
    assert proxy_basic_auth(b"\xe9", b"")[1] == b"Basic " + base64.b64encode(b"\xe9:")
    with pytest.raises(LocalProtocolError, match="':'"):
        proxy_basic_auth("a:b", "c")
    with pytest.raises(LocalProtocolError, match="control"):
        proxy_basic_auth("a", "b\r\nX: y")
    with pytest.raises(TypeError):
        proxy_basic_auth(1, "x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (proxy_basic_auth("user", "pa:ss")[1], (b"user", b"pa:ss")),
        (b"basic dXNlcjo=", (b"user", b"")),
        (b"Bearer abc", None),
        (b"Basic !!!", None),
        (b"Basic " + base64.b64encode(b"nocolon"), None),
    ],
)
def test_basic_credentials(value: bytes, expected: tuple[bytes, bytes] | None) -> None:
    request = ConnectRequest(target=TARGET, headers=[(b"Proxy-Authorization", value)])
    assert request.basic_credentials == expected
    assert ConnectRequest(target=TARGET).basic_credentials is None


# -- the server reads requests ---------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("extra", [b"", EARLY])
def test_curl_style_request(split: str, extra: bytes) -> None:
    server = HttpConnectConnection(SERVER)
    events = feed(server, SPLITS[split](CURL_REQUEST + extra))
    assert events == [
        ConnectRequest(
            target=TARGET,
            headers=[
                ("Host", "example.com:443"),
                ("User-Agent", "curl/8.5.0"),
                ("Proxy-Connection", "Keep-Alive"),
            ],
        )
    ]
    assert server.state is S.AWAIT_RESPONSE
    assert server.request == events[0]
    assert server.trailing_data == (extra, False)
    assert server.send(ConnectResponse(status_code=200, reason="Connection established")) == (
        b"HTTP/1.1 200 Connection established\r\n\r\n"
    )
    assert server.state is S.TUNNEL
    assert server.next_event() is PAUSED
    assert server.trailing_data == (extra, False)


@pytest.mark.parametrize("split", SPLITS)
def test_ipv6_request(split: str) -> None:
    client, server = pair()
    wire = client.send(ConnectRequest(target=Address("2001:db8::1", 443)))
    assert wire == b"CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n"
    (event,) = feed(server, SPLITS[split](wire + b"x"))
    assert event.target == Address(ipaddress.IPv6Address("2001:db8::1"), 443)
    assert server.trailing_data == (b"x", False)


def test_http10_request_without_host_gets_one() -> None:
    server = HttpConnectConnection(SERVER)
    server.receive_data(b"CONNECT 10.0.0.1:22 HTTP/1.0\r\n\r\n")
    (event,) = events_of(server)
    assert event.http_version == b"1.0"
    assert event.target == Address("10.0.0.1", 22)
    assert event.headers == ((b"Host", b"10.0.0.1:22"),)


def test_request_header_whitespace_and_empty_values() -> None:
    server = HttpConnectConnection(SERVER)
    server.receive_data(b"CONNECT a.b:1 HTTP/1.1\r\nX-Empty:\r\nX-Tight:v\r\nX-Pad: \t v w \t\r\n\r\n")
    (event,) = events_of(server)
    assert event.headers[1:] == ((b"X-Empty", b""), (b"X-Tight", b"v"), (b"X-Pad", b"v w"))


@pytest.mark.parametrize("method", [b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n", b"connect "])
def test_other_method_gets_405(method: bytes) -> None:
    error = server_error(method)
    assert error.reply_hint.status_code == 405
    assert error.reply_hint.get("allow") == b"CONNECT"
    assert "only tunnels" in error.message


def test_405_is_raised_when_the_method_is_complete() -> None:
    server = HttpConnectConnection(SERVER)
    for octet in b"GET":
        server.receive_data(bytes([octet]))
        assert server.next_event() is NEED_DATA
    server.receive_data(b" ")
    with pytest.raises(RemoteProtocolError, match="method GET") as info:
        server.next_event()
    # the server may send the hint, once, and nothing else
    wire = server.send(info.value.reply_hint)
    assert wire.startswith(b"HTTP/1.1 405 Method Not Allowed\r\nAllow: CONNECT\r\nConnection: close\r\n")
    with pytest.raises(LocalProtocolError):
        server.send(info.value.reply_hint)
    with pytest.raises(RemoteProtocolError):
        server.next_event()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "looks like TLS"),
        (b"\x05\x01\x00", "looks like SOCKS5"),
        (b"\x04\x01\x00\x50", "looks like SOCKS4"),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "HTTP/2 connection preface"),
        (b"A" * 40, "no method"),
        (b"\r\n\r\n", "does not start with an HTTP method"),
        (b"CONNECT example.com:443 HTTP/2.0\r\n\r\n", "HTTP version b'HTTP/2.0'"),
        (b"CONNECT example.com:443 HTTP/1.1 \r\n\r\n", "request line"),
        (b"CONNECT example.com:443\r\n\r\n", "request line"),
        (b"CONNECT  example.com:443 HTTP/1.1\r\n\r\n", "request line"),
        (b"CONNECT example.com:443 http/1.1\r\n\r\n", "request line"),
        (b"CONNECT example.com HTTP/1.1\r\n\r\n", "no port"),
        (b"CONNECT example.com:0 HTTP/1.1\r\n\r\n", "got 0"),
        (b"CONNECT example.com:65536 HTTP/1.1\r\n\r\n", "0..65535"),
        (b"CONNECT example.com:44x HTTP/1.1\r\n\r\n", "bad port"),
        (b"CONNECT ::1:443 HTTP/1.1\r\n\r\n", "brackets"),
        (b"CONNECT [::1:443 HTTP/1.1\r\n\r\n", "without ']'"),
        (b"CONNECT u@example.com:443 HTTP/1.1\r\n\r\n", "reg-name"),
        (b"CONNECT /x:443 HTTP/1.1\r\n\r\n", "reg-name"),
        (b"CONNECT \xff.com:443 HTTP/1.1\r\n\r\n", "not ASCII"),
        (b"CONNECT a.b:1 HTTP/1.1\r\nX: 1\r\n folded\r\n\r\n", "obsolete line folding"),
        (b"CONNECT a.b:1 HTTP/1.1\r\nX : 1\r\n\r\n", "whitespace between header name"),
        (b"CONNECT a.b:1 HTTP/1.1\r\nX(y): 1\r\n\r\n", "not a token"),
        (b"CONNECT a.b:1 HTTP/1.1\r\n: 1\r\n\r\n", "not a token"),
        (b"CONNECT a.b:1 HTTP/1.1\r\nno colon\r\n\r\n", "has no ':'"),
        (b"CONNECT a.b:1 HTTP/1.1\r\nX: a\0b\r\n\r\n", "CR, LF or NUL"),
        (b"CONNECT a.b:1 HTTP/1.1\r\nX: a\rb\r\n\r\n", "bare CR"),
        (b"CONNECT a.b:1 HTTP/1.1\nHost: a.b:1\n\n", "bare LF"),
        (b"CONNECT a.b:1 HTTP/1.1\r\nHost: c.d:1\r\n\r\n", "does not name the CONNECT target"),
        (b"CONNECT a.b:1 HTTP/1.1\r\nHost: a.b:1\r\nHost: a.b:1\r\n\r\n", "one Host header"),
    ],
)
def test_bad_requests_get_400(data: bytes, message: str) -> None:
    for split in SPLITS.values():
        server = HttpConnectConnection(SERVER)
        with pytest.raises(RemoteProtocolError, match=message) as info:
            feed_to_eof(server, split(data))
        assert info.value.reply_hint.status_code == 400
        assert info.value.reply_hint.get("connection") == b"close"


def test_bare_lf_is_refused_when_it_arrives() -> None:
    server = HttpConnectConnection(SERVER)
    server.receive_data(b"CONNECT a.b:1 HTTP/1.1")
    assert server.next_event() is NEED_DATA
    server.receive_data(b"\n")
    with pytest.raises(RemoteProtocolError, match="bare LF"):
        server.next_event()


@pytest.mark.parametrize("split", ["whole", "bytewise"])
def test_head_over_cap_gets_431(split: str) -> None:
    head = b"CONNECT a.b:1 HTTP/1.1\r\nX: " + b"v" * 200 + b"\r\n\r\n"
    fits = HttpConnectConnection(SERVER, max_head_size=len(head))
    assert len(feed(fits, SPLITS[split](head + b"tunnel"))) == 1
    assert fits.trailing_data == (b"tunnel", False)
    over = HttpConnectConnection(SERVER, max_head_size=len(head) - 1)
    with pytest.raises(RemoteProtocolError, match="longer than max_head_size") as info:
        feed(over, SPLITS[split](head))
    assert info.value.reply_hint.status_code == 431
    assert over.send(info.value.reply_hint).startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")


def test_default_cap_is_16_kib() -> None:
    server = HttpConnectConnection(SERVER)
    server.receive_data(b"CONNECT a.b:1 HTTP/1.1\r\nX: " + b"v" * (16 * 1024))
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.reply_hint.status_code == 431


def test_eof() -> None:
    server = HttpConnectConnection(SERVER)
    server.receive_data(b"")
    assert server.next_event() == ConnectionClosed()
    assert server.state is S.CLOSED
    assert server.next_event() is PAUSED
    with pytest.raises(RuntimeError):
        server.receive_data(b"x")
    server = HttpConnectConnection(SERVER)
    server.receive_data(b"CONNECT a.b:1 HTTP/1.1\r\n")
    server.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="in the middle of the CONNECT request"):
        server.next_event()
    client = client_awaiting()
    client.receive_data(b"")
    assert client.next_event() == ConnectionClosed()


# -- the client reads responses --------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize(
    "framing", [b"Content-Length: 1000\r\n", b"Transfer-Encoding: chunked\r\n", b"Content-Length: nonsense\r\n"]
)
def test_2xx_ignores_content_length_and_transfer_encoding(split: str, framing: bytes) -> None:
    client = client_awaiting()
    head = b"HTTP/1.1 200 Connection established\r\n" + framing + b"\r\n"
    (event,) = feed(client, SPLITS[split](head + b"tunnel bytes"))
    assert event.status_code == 200
    assert client.state is S.TUNNEL
    assert client.trailing_data == (b"tunnel bytes", False)
    assert client.next_event() is PAUSED


@pytest.mark.parametrize("status", [201, 204, 299])
def test_any_2xx_opens_the_tunnel(status: int) -> None:
    client = client_awaiting()
    client.receive_data(b"HTTP/1.0 %d Whatever\r\n\r\n" % status)
    (event,) = events_of(client)
    assert event.succeeded
    assert client.state is S.TUNNEL


@pytest.mark.parametrize("split", SPLITS)
def test_407_then_retry_on_the_same_connection(split: str) -> None:
    client, server = pair()
    exchange(client, server, ConnectRequest(target=TARGET))
    refusal = ConnectResponse(
        status_code=407,
        headers=[("Proxy-Authenticate", 'Basic realm="proxy"')],
        body=b"credentials, please\n",
    )
    wire = server.send(refusal)
    assert server.state is S.AWAIT_REQUEST
    (event,) = feed(client, SPLITS[split](wire))
    assert event == refusal
    assert event.challenges == (b'Basic realm="proxy"',)
    assert client.state is S.AWAIT_REQUEST
    assert client.trailing_data == (b"", False)

    retry = ConnectRequest(target=TARGET, headers=[proxy_basic_auth("user", "secret")])
    wire = client.send(retry)
    (got,) = feed(server, SPLITS[split](wire + EARLY))
    assert got == retry
    assert got.basic_credentials == (b"user", b"secret")
    assert server.trailing_data == (EARLY, False)

    wire = server.send(ConnectResponse(status_code=200))
    feed(client, SPLITS[split](wire + b"first tunnel bytes"))
    assert client.state is server.state is S.TUNNEL
    assert client.trailing_data == (b"first tunnel bytes", False)


@pytest.mark.parametrize(
    ("request_headers", "response", "state"),
    [
        ((), b"HTTP/1.1 407 X\r\nContent-Length: 0\r\n\r\n", S.AWAIT_REQUEST),
        ((), b"HTTP/1.1 304 X\r\n\r\n", S.AWAIT_REQUEST),
        ((), b"HTTP/1.1 407 X\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n", S.MUST_CLOSE),
        ((("Connection", "close"),), b"HTTP/1.1 407 X\r\nContent-Length: 0\r\n\r\n", S.MUST_CLOSE),
        ((), b"HTTP/1.0 407 X\r\nContent-Length: 0\r\n\r\n", S.MUST_CLOSE),
        ((), b"HTTP/1.1 407 X\r\n\r\n", S.MUST_CLOSE),
    ],
)
def test_refusal_reuse_rules(request_headers: Any, response: bytes, state: HttpConnectState) -> None:
    client = client_awaiting(ConnectRequest(target=TARGET, headers=request_headers))
    client.receive_data(response)
    (event,) = events_of(client)
    assert client.state is state
    assert event.status_code in (304, 407)


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 407 No\r\n\r\n",  # unframed: the body runs to EOF
        b"HTTP/1.1 407 No\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 407 No\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.1 407 No\r\nContent-Length: 100000\r\n\r\n",  # over max_body_size
        b"HTTP/1.1 407 No\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"HTTP/1.1 407 No\r\nContent-Length: 99999999999999999999999999\r\n\r\n",
    ],
)
def test_unframed_or_oversized_refusal_body_stays_in_trailing_data(split: str, head: bytes) -> None:
    client = client_awaiting()
    body = b"5\r\nhello\r\n0\r\n\r\n"
    (event,) = feed(client, SPLITS[split](head + body))
    assert event.status_code == 407
    assert event.body == b""
    assert client.state is S.MUST_CLOSE
    assert client.trailing_data == (body, False)


@pytest.mark.parametrize("split", SPLITS)
def test_framed_refusal_body_is_read_and_the_rest_left(split: str) -> None:
    client = client_awaiting(max_body_size=5)
    (event,) = feed(client, SPLITS[split](b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\nhelloNEXT"))
    assert event.body == b"hello"
    assert client.state is S.AWAIT_REQUEST
    assert client.trailing_data == (b"NEXT", False)


def test_eof_inside_a_refusal_body_still_reports_the_status() -> None:
    client = client_awaiting()
    client.receive_data(b"HTTP/1.1 407 No\r\nContent-Length: 10\r\n\r\nabc")
    assert client.next_event() is NEED_DATA
    assert client.read_size_hint == 7
    client.receive_data(b"")
    event = client.next_event()
    assert event.status_code == 407
    assert event.body == b""
    assert client.state is S.MUST_CLOSE
    assert client.trailing_data == (b"abc", True)


@pytest.mark.parametrize("split", SPLITS)
def test_interim_responses_are_surfaced_and_do_not_open_the_tunnel(split: str) -> None:
    client = client_awaiting()
    data = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n\r\nT"
    events = feed(client, SPLITS[split](data))
    assert [e.status_code for e in events] == [100, 103, 200]
    assert events[1].get("link") == b"</a>"
    assert client.state is S.TUNNEL
    assert client.trailing_data == (b"T", False)


def test_interim_does_not_leave_await_response() -> None:
    client = client_awaiting()
    client.receive_data(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert [e.status_code for e in events_of(client)] == [100]
    assert client.state is S.AWAIT_RESPONSE
    with pytest.raises(LocalProtocolError):
        client.send(ConnectRequest(target=TARGET))


def test_status_line_variants() -> None:
    client = client_awaiting()
    client.receive_data(b"HTTP/1.1 200\r\n\r\n")
    assert events_of(client)[0].reason == b"OK"
    client = client_awaiting()
    client.receive_data(b"HTTP/1.1 299 \r\n\r\n")
    assert events_of(client)[0].reason == b""
    client = client_awaiting()
    client.receive_data(b"HTTP/1.1 407  spaced\treason \r\n\r\n")
    assert events_of(client)[0].reason == b" spaced\treason "


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x05\x00", "looks like SOCKS5"),
        (b"\x00\x5a\x00\x00", "looks like SOCKS4"),
        (b"\x16\x03\x03", "looks like TLS"),
        (b"HTTP/2 200\r\n\r\n", "does not start with 'HTTP/1.'"),
        (b"<html>", "does not start with 'HTTP/1.'"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 20 OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 099 OK\r\n\r\n", "100..599"),
        (b"HTTP/1.1 600 OK\r\n\r\n", "100..599"),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "101"),
        (b"HTTP/1.1 200 O\x01K\r\n\r\n", "control character"),
        (b"HTTP/1.1 200 OK\nX: y\n\n", "bare LF"),
        (b"HTTP/1.1 200 OK\r\nX : y\r\n\r\n", "whitespace between"),
    ],
)
def test_bad_responses(data: bytes, message: str) -> None:
    for split in SPLITS.values():
        client = client_awaiting()
        with pytest.raises(RemoteProtocolError, match=message) as info:
            feed_to_eof(client, split(data))
        assert info.value.reply_hint is None
        assert client.state is S.ERROR


def test_response_head_over_cap() -> None:
    client = client_awaiting(max_head_size=64)
    client.receive_data(b"HTTP/1.1 200 OK\r\nX: " + b"v" * 64)
    with pytest.raises(RemoteProtocolError, match="response head is longer") as info:
        client.next_event()
    assert info.value.reply_hint is None


# -- what a proxy may send -----------------------------------------------------------


def server_awaiting_response() -> HttpConnectConnection:
    server = HttpConnectConnection(SERVER)
    server.receive_data(CURL_REQUEST)
    events_of(server)
    return server


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (ConnectResponse(status_code=200, headers=[("Content-Length", "0")]), "must not carry Content-Length"),
        (ConnectResponse(status_code=100, headers=[("Content-Length", "0")]), "must not carry Content-Length"),
        (ConnectResponse(status_code=204, headers=[("Content-Length", "0")]), "must not carry Content-Length"),
        (ConnectResponse(status_code=200, headers=[("Transfer-Encoding", "chunked")]), "Transfer-Encoding"),
        (ConnectResponse(status_code=407, headers=[("Transfer-Encoding", "chunked")]), "Transfer-Encoding"),
        (ConnectResponse(status_code=407, headers=[("Content-Length", "5")]), "put the body in the event"),
        (ConnectResponse(status_code=407, headers=[("Content-Length", "x")]), "put the body in the event"),
        (ConnectResponse(status_code=101), "101"),
    ],
)
def test_server_send_rules(response: ConnectResponse, message: str) -> None:
    server = server_awaiting_response()
    with pytest.raises(LocalProtocolError, match=message):
        server.send(response)
    assert server.state is S.ERROR


def test_server_interim_then_success() -> None:
    client, server = pair()
    exchange(client, server, ConnectRequest(target=TARGET))
    assert exchange(server, client, ConnectResponse(status_code=100)) == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert server.state is client.state is S.AWAIT_RESPONSE
    exchange(server, client, ConnectResponse(status_code=200))
    assert server.state is client.state is S.TUNNEL


def test_keep_alive_refusal_lets_the_server_read_the_next_request() -> None:
    server = server_awaiting_response()
    server.receive_data(CURL_REQUEST)  # arrives while it is the server's turn: not parsed yet
    assert server.next_event() is PAUSED
    server.send(ConnectResponse(status_code=407, headers=[("Content-Length", "0")]))
    assert server.state is S.AWAIT_REQUEST
    assert len(events_of(server)) == 1
    assert server.state is S.AWAIT_RESPONSE


def test_encode_event_directly() -> None:
    assert encode_event(ConnectionClosed()) == b""
    with pytest.raises(TypeError):
        encode_event(object())  # type: ignore[arg-type]


def test_connection_arguments() -> None:
    with pytest.raises(TypeError):
        HttpConnectConnection("client")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        HttpConnectConnection(CLIENT, max_head_size=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_head_size"):
        HttpConnectConnection(CLIENT, max_head_size=0)
    with pytest.raises(ValueError, match="max_body_size"):
        HttpConnectConnection(CLIENT, max_body_size=-1)
    conn = HttpConnectConnection(SERVER)
    assert conn.our_role is SERVER
    assert conn.their_role is CLIENT
    assert conn.state is S.AWAIT_REQUEST
    assert conn.request is None
    with pytest.raises(TypeError):
        HttpConnectConnection(CLIENT).send(object())  # type: ignore[arg-type]


# -- read_size_hint ----------------------------------------------------------------


def test_read_size_hint_for_a_head() -> None:
    server = HttpConnectConnection(SERVER)
    assert server.read_size_hint == 4
    for data, hint in [(b"CONNECT a.b:1 HTTP/1.1", 4), (b"\r", 3), (b"\n", 2), (b"\r", 1)]:
        server.receive_data(data)
        assert server.read_size_hint == hint
    server.receive_data(b"\nextra")
    assert server.read_size_hint == 0
    events_of(server)
    assert server.read_size_hint == 0  # our turn


def test_read_size_hint_for_a_body_and_on_errors() -> None:
    client = client_awaiting()
    client.receive_data(b"HTTP/1.1 407 X\r\nContent-Length: 10\r\n\r\n123")
    assert client.read_size_hint == 7
    client.receive_data(b"4567890")
    assert client.read_size_hint == 0
    assert HttpConnectConnection(CLIENT).read_size_hint == 0
    bad = client_awaiting()
    bad.receive_data(b"junk")
    assert bad.read_size_hint == 1  # the error is left to next_event()


@given(
    st.sampled_from(
        [
            (CLIENT, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n"),
            (CLIENT, b"HTTP/1.1 407 Go\r\nContent-Length: 4\r\n\r\nbodyHTTP/1.1 200 OK\r\n\r\n"),
            (SERVER, CURL_REQUEST),
        ]
    ),
    st.binary(min_size=1, max_size=20),
)
def test_reading_by_the_hint_never_reads_tunnel_bytes(case: tuple[Role, bytes], tunnel: bytes) -> None:
    role, head = case
    conn = client_awaiting() if role is CLIENT else HttpConnectConnection(SERVER)
    stream = head + tunnel
    while conn.state is not S.TUNNEL:
        if conn.state is S.AWAIT_REQUEST and role is CLIENT:
            conn.send(ConnectRequest(target=TARGET))
        if role is SERVER and conn.state is S.AWAIT_RESPONSE:
            conn.send(ConnectResponse(status_code=200))
            break
        hint = conn.read_size_hint
        if hint:
            assert stream, "the hint asked for bytes the head does not need"
            conn.receive_data(stream[:hint])
            stream = stream[hint:]
        events_of(conn)
    assert stream == tunnel
    assert conn.trailing_data == (b"", False)


# -- linear time -------------------------------------------------------------------------


class CountingBytearray(bytearray):
    """Counts the octets that ``find`` is asked to look at."""

    scanned = 0

    def find(self, sub: Any, start: Any = None, end: Any = None) -> int:
        low = 0 if start is None else start
        high = len(self) if end is None else min(end, len(self))
        CountingBytearray.scanned += max(0, high - low)
        return super().find(sub, start, end)


@pytest.mark.parametrize("role", [SERVER, CLIENT])
def test_one_byte_feeding_of_a_16_kib_head_is_linear(role: Role) -> None:
    first = b"CONNECT a.b:1 HTTP/1.1\r\n" if role is SERVER else b"HTTP/1.1 200 OK\r\n"
    lines = b"".join(b"X-%05d: %s\r\n" % (i, b"v" * 40) for i in range(320))
    head = first + lines + b"\r\n"
    assert 16_000 < len(head) <= 16 * 1024
    conn = HttpConnectConnection(SERVER) if role is SERVER else client_awaiting()
    conn._buffer.data = CountingBytearray()
    CountingBytearray.scanned = 0
    for i in range(len(head) - 1):
        conn.receive_data(head[i : i + 1])
        assert conn.next_event() is NEED_DATA
        # the search resumes where it stopped: every octet so far is searched once
        assert conn._scan == i + 1
    conn.receive_data(head[-1:] + b"tunnel")
    (event,) = events_of(conn)
    assert len(event.headers) >= 320
    assert CountingBytearray.scanned <= 2 * len(head)
    assert conn.trailing_data == (b"tunnel", False)


# -- the state table -----------------------------------------------------------------


EVENTS: dict[str, Any] = {
    "request": ConnectRequest(target=TARGET),
    "interim": ConnectResponse(status_code=100),
    "success": ConnectResponse(status_code=200),
    "refused-keep-alive": ConnectResponse(status_code=407, headers=[("Content-Length", "0")]),
    "refused-close": ConnectResponse(status_code=407),
    "closed": ConnectionClosed(),
}

LEGAL = {
    (CLIENT, S.AWAIT_REQUEST, "request"): S.AWAIT_RESPONSE,
    (SERVER, S.AWAIT_RESPONSE, "interim"): S.AWAIT_RESPONSE,
    (SERVER, S.AWAIT_RESPONSE, "success"): S.TUNNEL,
    (SERVER, S.AWAIT_RESPONSE, "refused-keep-alive"): S.AWAIT_REQUEST,
    (SERVER, S.AWAIT_RESPONSE, "refused-close"): S.MUST_CLOSE,
}


def conn_in(role: Role, state: HttpConnectState) -> HttpConnectConnection:
    client, server = pair()
    if state is S.AWAIT_REQUEST:
        pass
    elif state is S.CLOSED:
        client.send(ConnectionClosed())
        server.send(ConnectionClosed())
    elif state is S.ERROR:
        client.send_failed()
        server.send_failed()
    else:
        exchange(client, server, EVENTS["request"])
        if state is not S.AWAIT_RESPONSE:
            exchange(server, client, EVENTS["success" if state is S.TUNNEL else "refused-close"])
    conn = client if role is CLIENT else server
    assert conn.state is state
    return conn


@pytest.mark.parametrize("role", [CLIENT, SERVER])
@pytest.mark.parametrize("state", list(HttpConnectState))
@pytest.mark.parametrize("name", list(EVENTS))
def test_every_state_event_pair(role: Role, state: HttpConnectState, name: str) -> None:
    conn = conn_in(role, state)
    event = EVENTS[name]
    if name == "closed" and state is not S.ERROR:
        assert conn.send(event) == b""
        assert conn.state is S.CLOSED
    elif (role, state, name) in LEGAL:
        assert conn.send(event)
        assert conn.state is LEGAL[role, state, name]
    else:
        with pytest.raises(LocalProtocolError):
            conn.send(event)
        assert conn.state is S.ERROR


def test_table_is_role_agnostic_and_complete() -> None:
    assert set(SENDER) == {S.AWAIT_REQUEST, S.AWAIT_RESPONSE}
    assert {state for state, _ in TRANSITIONS} == set(SENDER)
    request = ConnectRequest(target=TARGET)
    for name, next_state in [(k[2], v) for k, v in LEGAL.items()]:
        event = EVENTS[name]
        start = S.AWAIT_REQUEST if name == "request" else S.AWAIT_RESPONSE
        assert TRANSITIONS[start, classify(event, request)] is next_state


# -- properties ---------------------------------------------------------------------------

TCHARS = "!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits
REG_NAME = string.ascii_letters + string.digits + "-._~!$&'()*+,;=%"
_RESERVED = {b"host", b"content-length", b"transfer-encoding", b"connection"}

names = st.text(TCHARS, min_size=1, max_size=12).map(str.encode).filter(lambda n: n.lower() not in _RESERVED)
texts = st.lists(st.sampled_from([9, *range(0x20, 0x7F), *range(0x80, 0x100)]), max_size=30).map(bytes)
header_lists = st.lists(st.tuples(names, texts), max_size=6)
addresses = st.builds(
    Address,
    st.one_of(
        st.ip_addresses(v=4),
        st.ip_addresses(v=6),
        st.text(REG_NAME, min_size=1, max_size=60),
    ),
    st.integers(1, 65535),
)
versions = st.sampled_from([b"1.0", b"1.1"])
requests = st.builds(ConnectRequest, target=addresses, headers=header_lists, http_version=versions)


@st.composite
def responses(draw: st.DrawFn) -> ConnectResponse:
    status = draw(st.integers(100, 599).filter(lambda s: s != 101))
    body = b""
    headers = draw(header_lists)
    if status >= 300 and status not in (204, 304):
        body = draw(st.binary(max_size=300))
        if not body and draw(st.booleans()):
            headers.append((b"Content-Length", b"0"))
        if draw(st.booleans()):
            headers.append((b"Connection", draw(st.sampled_from([b"close", b"keep-alive"]))))
    return ConnectResponse(
        status_code=status, reason=draw(texts), headers=headers, body=body, http_version=draw(versions)
    )


@given(requests, st.sampled_from(list(SPLITS)))
def test_request_round_trip(request: ConnectRequest, split: str) -> None:
    client, server = pair()
    wire = client.send(request)
    assert feed(server, SPLITS[split](wire)) == [request]
    assert client.state is server.state is S.AWAIT_RESPONSE
    assert server.request == client.request == request


@given(requests, responses(), st.sampled_from(list(SPLITS)), st.binary(max_size=20))
def test_response_round_trip(
    request: ConnectRequest, response: ConnectResponse, split: str, after: bytes
) -> None:
    client, server = pair()
    exchange(client, server, request)
    wire = server.send(response)
    if response.is_interim:
        after = b""  # the next bytes are read as the final response
    assert feed(client, SPLITS[split](wire + after)) == [response]
    assert client.state is server.state
    if client.state is not S.AWAIT_RESPONSE:
        assert client.trailing_data == (after, False)


@given(st.lists(st.integers(1, 40), min_size=1, max_size=10), st.binary(max_size=50))
def test_transcripts_are_chunking_invariant(sizes: list[int], early: bytes) -> None:
    retry = ConnectRequest(target=TARGET, headers=[proxy_basic_auth("u", "p")])

    def run_server(pieces: list[bytes]) -> tuple[list[Any], bytes, HttpConnectState]:
        server, out, seen = HttpConnectConnection(SERVER), b"", []
        for piece in pieces:
            server.receive_data(piece)
            while (event := server.next_event()) is not NEED_DATA:
                if event is PAUSED:
                    break
                seen.append(event)
                if event.basic_credentials is None:
                    out += server.send(
                        ConnectResponse(status_code=407, headers=[("Proxy-Authenticate", "Basic")], body=b"auth!")
                    )
                else:
                    out += server.send(ConnectResponse(status_code=200))
        return seen, out + server.trailing_data[0], server.state

    def run_client(pieces: list[bytes]) -> tuple[list[Any], bytes, HttpConnectState]:
        client, seen = HttpConnectConnection(CLIENT), []
        client.send(ConnectRequest(target=TARGET))
        for piece in pieces:
            client.receive_data(piece)
            while (event := client.next_event()) is not NEED_DATA:
                if event is PAUSED:
                    if client.state is not S.AWAIT_REQUEST:
                        break
                    client.send(retry)
                    continue
                seen.append(event)
        return seen, client.trailing_data[0], client.state

    client_bytes = ConnectRequest(target=TARGET), retry
    client_wire = b"".join(HttpConnectConnection(CLIENT)._encode(e) for e in client_bytes) + early
    whole = run_server([client_wire])
    assert whole[2] is S.TUNNEL
    assert run_server(chunked(client_wire, sizes)) == whole

    server_wire = whole[1].removesuffix(early) + b"tunnel" + early
    whole_client = run_client([server_wire])
    assert whole_client[2] is S.TUNNEL
    assert [e.status_code for e in whole_client[0]] == [407, 200]
    assert whole_client[1] == b"tunnel" + early
    assert run_client(chunked(server_wire, sizes)) == whole_client


def reading_conn(case: int, head_cap: int) -> HttpConnectConnection:
    kwargs = {"max_head_size": head_cap, "max_body_size": 16}
    if case == 0:
        return HttpConnectConnection(SERVER, **kwargs)
    if case == 1:  # a server back in AWAIT_REQUEST after a keep-alive refusal
        server = HttpConnectConnection(SERVER, **kwargs)
        server.receive_data(b"CONNECT a.b:1 HTTP/1.1\r\n\r\n")
        events_of(server)
        server.send(ConnectResponse(status_code=407, body=b"x"))
        assert server.state is S.AWAIT_REQUEST
        return server
    client = client_awaiting(**kwargs)
    if case == 3:  # after an interim response
        client.receive_data(b"HTTP/1.1 100 Continue\r\n\r\n")
        events_of(client)
        assert client.state is S.AWAIT_RESPONSE
    return client


def drain_allowing_only_remote_errors(conn: HttpConnectConnection, pieces: list[bytes], eof: bool) -> None:
    try:
        for piece in pieces:
            conn.receive_data(piece)
            assert conn.read_size_hint >= 0
            for _ in range(100):
                event = conn.next_event()
                if event is NEED_DATA or event is PAUSED:
                    break
                if conn.state is S.AWAIT_REQUEST and conn.our_role is CLIENT:
                    conn.send(ConnectRequest(target=TARGET))
                elif conn.state is S.AWAIT_RESPONSE and conn.our_role is SERVER:
                    conn.send(ConnectResponse(status_code=407, headers=[("Content-Length", "0")]))
        if eof:
            conn.receive_data(b"")
            events_of(conn)
    except RemoteProtocolError:
        assert conn.state is S.ERROR


@given(st.integers(0, 3), st.sampled_from([32, 64, 16 * 1024]), st.binary(max_size=300), st.booleans())
def test_arbitrary_bytes_raise_only_remote_protocol_error(case: int, cap: int, data: bytes, eof: bool) -> None:
    drain_allowing_only_remote_errors(reading_conn(case, cap), [data], eof)
    drain_allowing_only_remote_errors(reading_conn(case, cap), SPLITS["bytewise"](data), eof)


SEEDS = [
    CURL_REQUEST + EARLY,
    b"CONNECT [::1]:8080 HTTP/1.0\r\nProxy-Authorization: Basic dTpw\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 407 No\r\nProxy-Authenticate: Basic\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\ntunnel",
]


@given(
    st.integers(0, 3),
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255), st.sampled_from("rid")), max_size=6),
    st.lists(st.integers(1, 30), min_size=1, max_size=5),
    st.booleans(),
)
def test_mutated_transcripts_raise_only_remote_protocol_error(
    case: int, seed: bytes, edits: list[tuple[int, int, str]], sizes: list[int], eof: bool
) -> None:
    data = bytearray(seed)
    for offset, octet, kind in edits:
        at = offset % (len(data) + 1)
        if kind == "i":
            data[at:at] = bytes([octet])
        elif at < len(data):
            data[at : at + 1] = b"" if kind == "d" else bytes([octet])
    drain_allowing_only_remote_errors(reading_conn(case, 16 * 1024), chunked(bytes(data), sizes), eof)

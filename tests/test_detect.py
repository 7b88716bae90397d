"""Tests of protocol detection from a client's first bytes."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from socks_sansio import RemoteProtocolError
from socks_sansio._detect import MIN_DETECT_BYTES, detect_protocol
from socks_sansio._proxy_url import ProxyProtocol

from .helpers import SPLITS

UPPERCASE = range(ord("A"), ord("Z") + 1)
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

OPENINGS = {
    ProxyProtocol.SOCKS5: b"\x05\x02\x00\x02",
    ProxyProtocol.SOCKS4: b"\x04\x01\x00\x50\x00\x00\x00\x01alice\x00example.com\x00",
    ProxyProtocol.HTTP: b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
}


def test_min_detect_bytes() -> None:
    assert MIN_DETECT_BYTES == 1
    for protocol, opening in OPENINGS.items():
        assert detect_protocol(opening[:MIN_DETECT_BYTES]) is protocol


@pytest.mark.parametrize("protocol", list(OPENINGS))
@pytest.mark.parametrize("split", list(SPLITS))
def test_real_openings_on_every_prefix(protocol: ProxyProtocol, split: str) -> None:
    opening = OPENINGS[protocol]
    received = b""
    for piece in SPLITS[split](opening + b"early tunnel data"):
        received += piece
        assert detect_protocol(received) is protocol


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_bytes_like_inputs(kind: type) -> None:
    assert detect_protocol(kind(b"")) is None
    assert detect_protocol(kind(b"\x05")) is ProxyProtocol.SOCKS5
    assert detect_protocol(kind(HTTP2_PREFACE[:3])) is ProxyProtocol.HTTP
    with pytest.raises(RemoteProtocolError, match="HTTP/2"):
        detect_protocol(kind(HTTP2_PREFACE))


def test_no_bytes_yet() -> None:
    assert detect_protocol(b"") is None


def test_wrong_type() -> None:
    with pytest.raises(TypeError, match="bytes-like, not str"):
        detect_protocol("CONNECT")  # type: ignore[arg-type]


@pytest.mark.parametrize("first", range(256))
def test_every_first_byte(first: int) -> None:
    data = bytes([first])
    if first == 0x05:
        assert detect_protocol(data) is ProxyProtocol.SOCKS5
    elif first == 0x04:
        assert detect_protocol(data) is ProxyProtocol.SOCKS4
    elif first in UPPERCASE:
        assert detect_protocol(data) is ProxyProtocol.HTTP
    else:
        with pytest.raises(RemoteProtocolError) as info:
            detect_protocol(data)
        assert f"{first:02x})" in info.value.message
        assert info.value.reply_hint is None


def test_tls_client_hello() -> None:
    hello = bytes.fromhex("16 03 01 02 00 01 00 01 fc 03 03") + bytes(32)
    with pytest.raises(RemoteProtocolError) as info:
        detect_protocol(hello)
    message = info.value.message
    assert "looks like a TLS ClientHello: is the client using https:// or TLS to a plain proxy port?" in message
    assert "(first bytes: 16 03 01 02 00 01 00 01 fc 03 03 00 00 00 00 00)" in message  # 16 shown


@pytest.mark.parametrize("size", range(1, len(HTTP2_PREFACE) + 10))
def test_http2_preface(size: int) -> None:
    data = (HTTP2_PREFACE + b"\x00\x00\x12\x04")[:size]
    if size < len(b"PRI "):
        assert detect_protocol(data) is ProxyProtocol.HTTP  # could still be PROPFIND, PUT, ...
    else:
        with pytest.raises(RemoteProtocolError, match=r"HTTP/2 connection preface .* not supported"):
            detect_protocol(data)


@pytest.mark.parametrize("method", [b"PRIX", b"POST", b"PUT ", b"PATCH", b"PROPFIND", b"PRI/"])
def test_methods_near_the_preface_are_http(method: bytes) -> None:
    assert detect_protocol(method + b" x HTTP/1.1\r\n") is ProxyProtocol.HTTP


def test_lowercase_method() -> None:
    with pytest.raises(RemoteProtocolError, match="lowercase letter: HTTP methods are case-sensitive"):
        detect_protocol(b"connect example.com:443 HTTP/1.1\r\n")


def test_other_bytes_are_shown_in_hex() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        detect_protocol(b"\x00\xff")
    assert "(00 ff)" in info.value.message
    assert "expected 0x05 (SOCKS5), 0x04 (SOCKS4) or an uppercase HTTP method" in info.value.message


@given(st.binary())
@example(HTTP2_PREFACE)
@example(b"\x16\x03\x01")
def test_arbitrary_bytes_give_an_answer_or_remote_protocol_error(data: bytes) -> None:
    try:
        got = detect_protocol(data)
    except RemoteProtocolError as exc:
        assert exc.reply_hint is None
        assert data
        return
    assert (got is None) is (not data)


@given(st.binary(min_size=1, max_size=1), st.binary())
def test_only_the_first_byte_decides_outside_the_http2_preface(first: bytes, rest: bytes) -> None:
    data = first + rest
    if HTTP2_PREFACE.startswith(data[: len(HTTP2_PREFACE)]) and len(data) >= len(b"PRI "):
        return

    def outcome(chunk: bytes) -> object:
        try:
            return detect_protocol(chunk)
        except RemoteProtocolError:
            return RemoteProtocolError

    assert outcome(data) == outcome(first)

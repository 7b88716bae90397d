"""The PROXY protocol codec (HAProxy's doc/proxy-protocol.txt, versions 1 and 2): vectors and edge cases."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from socks_sansio import NEED_DATA, PAUSED, Address, LocalProtocolError, RemoteProtocolError
from socks_sansio._proxy_protocol import (
    DEFAULT_MAX_PROXY_HEADER_SIZE,
    MAX_PROXY_V1_HEADER_SIZE,
    MAX_PROXY_V2_HEADER_SIZE,
    PROXY_V2_SIGNATURE,
    ProxyCommand,
    ProxyFamily,
    ProxyHeader,
    ProxyHeaderReader,
    ProxyTLVType,
    encode_proxy_header,
)
from socks_sansio._proxy_protocol_wire import crc32c, format_ipv6

from .helpers import SPLITS

SIG = PROXY_V2_SIGNATURE
TRAILING = b"GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n"


def h(hex_text: str) -> bytes:
    return bytes.fromhex(hex_text.replace(" ", "").replace("\n", ""))


def padded(path: bytes) -> bytes:
    return path.ljust(108, b"\0")


V4 = (Address("192.168.0.1", 56324), Address("192.168.0.11", 443))
V6 = (Address("2001:db8::1", 1), Address("2001:db8::2", 2))
FFFF6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"

# (name, header, its canonical octets), written out by hand from §2.1 and §2.2.
VECTORS: list[tuple[str, ProxyHeader, bytes]] = [
    ("v1_tcp4_spec_example", ProxyHeader(version=1, family=ProxyFamily.TCP4, source=V4[0], destination=V4[1]),
     b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"),
    ("v1_tcp4_longest", ProxyHeader(version=1, family=ProxyFamily.TCP4, source=Address("255.255.255.255", 65535),
                                    destination=Address("255.255.255.255", 65535)),
     b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"),
    ("v1_tcp4_zeros", ProxyHeader(version=1, family=ProxyFamily.TCP4, source=Address("0.0.0.0", 0),
                                  destination=Address("10.0.0.1", 0)),
     b"PROXY TCP4 0.0.0.0 10.0.0.1 0 0\r\n"),
    ("v1_tcp6", ProxyHeader(version=1, family=ProxyFamily.TCP6, source=V6[0], destination=V6[1]),
     b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n"),
    ("v1_tcp6_longest", ProxyHeader(version=1, family=ProxyFamily.TCP6, source=Address(FFFF6, 65535),
                                    destination=Address(FFFF6, 65535)),
     f"PROXY TCP6 {FFFF6} {FFFF6} 65535 65535\r\n".encode()),
    ("v1_unknown", ProxyHeader(version=1, family=ProxyFamily.UNSPEC), b"PROXY UNKNOWN\r\n"),
    ("v2_tcp4", ProxyHeader(version=2, family=ProxyFamily.TCP4, source=V4[0], destination=V4[1]),
     SIG + h("21 11 000c c0a80001 c0a8000b dc04 01bb")),
    ("v2_local", ProxyHeader(version=2, command=ProxyCommand.LOCAL, family=ProxyFamily.UNSPEC),
     SIG + h("20 00 0000")),
    ("v2_local_with_tlv", ProxyHeader(version=2, command=ProxyCommand.LOCAL, family=ProxyFamily.UNSPEC,
                                      tlvs=((ProxyTLVType.NOOP, b""),)),
     SIG + h("20 00 0003 04 0000")),
    ("v2_proxy_unspec", ProxyHeader(version=2, family=ProxyFamily.UNSPEC), SIG + h("21 00 0000")),
    ("v2_udp4", ProxyHeader(version=2, family=ProxyFamily.UDP4, source=Address("192.0.2.1", 53),
                            destination=Address("198.51.100.2", 5353)),
     SIG + h("21 12 000c c0000201 c6336402 0035 14e9")),
    ("v2_tcp6_tlvs", ProxyHeader(version=2, family=ProxyFamily.TCP6, source=V6[0], destination=V6[1],
                                 tlvs=((ProxyTLVType.ALPN, b"h2"), (ProxyTLVType.AUTHORITY, b"example.com"))),
     SIG + h("21 21 0037 20010db8000000000000000000000001 20010db8000000000000000000000002 0001 0002"
             "01 0002 6832 02 000b 6578616d706c652e636f6d")),
    ("v2_udp6_custom_tlv", ProxyHeader(version=2, family=ProxyFamily.UDP6, source=Address("::1", 65535),
                                       destination=Address("::", 0), tlvs=((0xE0, b"\x00\xff"), (0xE0, b"x"))),
     SIG + h("21 22 002d" + "00" * 15 + "01" + "00" * 16 + "ffff 0000 e0 0002 00ff e0 0001 78")),
    ("v2_unix_stream", ProxyHeader(version=2, family=ProxyFamily.UNIX_STREAM, unix_source=b"/tmp/client",
                                   unix_destination=b"/run/server.sock"),
     SIG + h("21 31 00d8") + padded(b"/tmp/client") + padded(b"/run/server.sock")),
    ("v2_unix_dgram_abstract", ProxyHeader(version=2, family=ProxyFamily.UNIX_DGRAM, unix_source=b"\0abstract",
                                           unix_destination=b""),
     SIG + h("21 32 00d8") + padded(b"\0abstract") + bytes(108)),
    # What HAProxy 2.6 sent with `send-proxy-v2 proxy-v2-options crc32c,unique-id` (see
    # tests/test_proxy_protocol_haproxy.py): a third party's CRC32C.
    ("v2_haproxy_crc32c_unique_id", ProxyHeader(
        version=2, family=ProxyFamily.TCP4, source=Address("127.0.0.1", 38899),
        destination=Address("127.0.0.1", 23456),
        tlvs=((ProxyTLVType.CRC32C, h("eae6b4c4")), (ProxyTLVType.UNIQUE_ID, b"uid-127.0.0.1-38899"))),
     SIG + h("21 11 0029 7f000001 7f000001 97f3 5ba0 03 0004 eae6b4c4 05 0013") + b"uid-127.0.0.1-38899"),
]
VECTOR_IDS = [name for name, _, _ in VECTORS]


def read_all(pieces: list[bytes], *, eof: bool = False, max_header_size: int = DEFAULT_MAX_PROXY_HEADER_SIZE,
             ) -> tuple[list[Any], ProxyHeaderReader]:
    reader = ProxyHeaderReader(max_header_size=max_header_size)
    events: list[Any] = []
    for piece in [*pieces, b""] if eof else pieces:
        reader.receive_data(piece)
        while (event := reader.next_event()) is not NEED_DATA and event is not PAUSED:
            events.append(event)
    return events, reader


def parse(data: bytes, **kwargs: Any) -> ProxyHeader:
    events, _ = read_all([data], **kwargs)
    assert events[:1] and isinstance(events[0], ProxyHeader), events
    return events[0]


def refuse(data: bytes, *, eof: bool = False, **kwargs: Any) -> str:
    """The RemoteProtocolError message for *data* (fed whole)."""
    with pytest.raises(RemoteProtocolError) as info:
        read_all([data], eof=eof, **kwargs)
    assert info.value.reply_hint is None
    return info.value.message


# -- constants and enums (§2.1, §2.2) ---------------------------------------------------


def test_constants_follow_the_spec() -> None:
    assert PROXY_V2_SIGNATURE == b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"
    assert len(PROXY_V2_SIGNATURE) == 12 and PROXY_V2_SIGNATURE[4] == 0
    worst = f"PROXY UNKNOWN {FFFF6} {FFFF6} 65535 65535\r\n".encode()
    assert MAX_PROXY_V1_HEADER_SIZE == len(worst) == 107
    assert MAX_PROXY_V2_HEADER_SIZE == 16 + 65535
    assert DEFAULT_MAX_PROXY_HEADER_SIZE == 4096


def test_enum_values_are_the_wire_values() -> None:
    assert [int(c) for c in ProxyCommand] == [0, 1]
    assert {f.name: int(f) for f in ProxyFamily} == {
        "UNSPEC": 0x00, "TCP4": 0x11, "UDP4": 0x12, "TCP6": 0x21, "UDP6": 0x22, "UNIX_STREAM": 0x31, "UNIX_DGRAM": 0x32,
    }
    assert [f.address_size for f in ProxyFamily] == [0, 12, 12, 36, 36, 216, 216]
    assert [f for f in ProxyFamily if f.is_ip] == [ProxyFamily.TCP4, ProxyFamily.UDP4, ProxyFamily.TCP6,
                                                  ProxyFamily.UDP6]
    assert [f for f in ProxyFamily if f.is_unix] == [ProxyFamily.UNIX_STREAM, ProxyFamily.UNIX_DGRAM]
    assert {t.name: int(t) for t in ProxyTLVType} == {
        "ALPN": 0x01, "AUTHORITY": 0x02, "CRC32C": 0x03, "NOOP": 0x04, "UNIQUE_ID": 0x05, "SSL": 0x20,
        "SSL_VERSION": 0x21, "SSL_CN": 0x22, "SSL_CIPHER": 0x23, "SSL_SIG_ALG": 0x24, "SSL_KEY_ALG": 0x25,
        "NETNS": 0x30,
    }


def test_crc32c_check_values() -> None:
    # The CRC-32C check value and the iSCSI test patterns (RFC 3720 §B.4).
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert crc32c(b"") == 0


@pytest.mark.parametrize(("text", "expected"), [
    ("::", "::"), ("::1", "::1"), ("1::", "1::"), ("2001:0DB8:0:0:0:0:0:1", "2001:db8::1"),
    ("1:0:0:1:0:0:0:1", "1:0:0:1::1"), ("1:0:0:1:0:0:1:1", "1::1:0:0:1:1"), ("1:0:2:3:4:5:6:7", "1:0:2:3:4:5:6:7"),
    ("::ffff:192.0.2.1", "::ffff:c000:201"), (FFFF6, FFFF6),
])
def test_ipv6_text_is_rfc5952_without_dotted_quads(text: str, expected: str) -> None:
    assert format_ipv6(ipaddress.IPv6Address(text)) == expected


# -- encoding ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "header", "octets"), VECTORS, ids=VECTOR_IDS)
def test_encoding(name: str, header: ProxyHeader, octets: bytes) -> None:
    assert encode_proxy_header(header) == octets
    assert len(octets) <= (MAX_PROXY_V1_HEADER_SIZE if header.version == 1 else MAX_PROXY_V2_HEADER_SIZE)


def test_encoder_computes_the_crc32c() -> None:
    header = ProxyHeader(version=2, family=ProxyFamily.TCP4, source=Address("127.0.0.1", 38899),
                         destination=Address("127.0.0.1", 23456),
                         tlvs=((ProxyTLVType.CRC32C, bytes(4)), (ProxyTLVType.UNIQUE_ID, b"uid-127.0.0.1-38899")))
    assert encode_proxy_header(header) == {n: o for n, _, o in VECTORS}["v2_haproxy_crc32c_unique_id"]
    assert encode_proxy_header(header) == encode_proxy_header(parse(encode_proxy_header(header)))


def test_encode_refuses_other_types() -> None:
    with pytest.raises(TypeError):
        encode_proxy_header(b"PROXY UNKNOWN\r\n")  # type: ignore[arg-type]


# -- the header value ---------------------------------------------------------------------


def test_defaults_and_conversions() -> None:
    header = ProxyHeader(version=2, family=0x11, command=1, source=V4[0], destination=V4[1],
                         tlvs=[(ProxyTLVType.ALPN, bytearray(b"h2")), (7, memoryview(b"x"))])  # type: ignore[list-item]
    assert header.family is ProxyFamily.TCP4 and header.command is ProxyCommand.PROXY
    assert header.tlvs == ((1, b"h2"), (7, b"x"))
    assert all(type(kind) is int and type(value) is bytes for kind, value in header.tlvs)
    assert header.tlv(ProxyTLVType.ALPN) == b"h2" and header.tlv(0x30) is None
    assert ProxyHeader(version=1, family=ProxyFamily.UNSPEC).command is ProxyCommand.PROXY
    unix = ProxyHeader(version=2, family=ProxyFamily.UNIX_STREAM, unix_source=b"/a", unix_destination=bytearray(108))
    assert unix.unix_source == padded(b"/a") and unix.unix_destination == bytes(108)


def test_first_tlv_of_a_type() -> None:
    header = ProxyHeader(version=2, family=ProxyFamily.UNSPEC, tlvs=((5, b"first"), (5, b"second")))
    assert header.tlv(ProxyTLVType.UNIQUE_ID) == b"first"


A4, A6 = Address("192.0.2.1", 1), Address("2001:db8::1", 1)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"version": 3, "family": 0}, "versions 1 and 2"),
    ({"version": 0, "family": 0}, "versions 1 and 2"),
    ({"version": 2, "family": 0x13}, "unknown PROXY family"),
    ({"version": 2, "family": 0x10}, "unknown PROXY family"),
    ({"version": 2, "family": 0, "command": 2}, "unknown PROXY command"),
    ({"version": 1, "family": 0, "command": ProxyCommand.LOCAL}, "cannot carry LOCAL"),
    ({"version": 1, "family": ProxyFamily.UDP4, "source": A4, "destination": A4}, "TCP4, TCP6 or UNKNOWN only"),
    ({"version": 1, "family": ProxyFamily.UNIX_STREAM, "unix_source": b"", "unix_destination": b""}, "only"),
    ({"version": 1, "family": 0, "tlvs": ((1, b"h2"),)}, "cannot carry TLVs"),
    ({"version": 2, "family": ProxyFamily.TCP4, "command": 0, "source": A4, "destination": A4}, "LOCAL header"),
    ({"version": 2, "family": ProxyFamily.TCP4, "source": A4}, "needs a destination"),
    ({"version": 2, "family": ProxyFamily.TCP4, "destination": A4}, "needs a source"),
    ({"version": 2, "family": ProxyFamily.TCP4, "source": A4, "destination": A6}, "not an IPv4 address"),
    ({"version": 1, "family": ProxyFamily.TCP6, "source": A4, "destination": A6}, "not an IPv6 address"),
    ({"version": 2, "family": ProxyFamily.TCP4, "source": Address("example.com", 1), "destination": A4}, "IPv4"),
    ({"version": 2, "family": ProxyFamily.TCP6, "source": Address("fe80::1%eth0", 1), "destination": A6}, "zone id"),
    ({"version": 2, "family": 0, "source": A4, "destination": A4}, "carries no IP address"),
    ({"version": 2, "family": 0, "destination": A4}, "carries no IP address"),
    ({"version": 2, "family": ProxyFamily.UNIX_DGRAM, "unix_source": b"/a"}, "needs unix_source and"),
    ({"version": 2, "family": ProxyFamily.TCP4, "source": A4, "destination": A4, "unix_source": b"/a"}, "UNIX"),
    ({"version": 2, "family": ProxyFamily.UNIX_DGRAM, "unix_source": bytes(109), "unix_destination": b""}, "108"),
    ({"version": 2, "family": ProxyFamily.UNIX_DGRAM, "source": A4, "destination": A4, "unix_source": b"",
      "unix_destination": b""}, "no IP address"),
    ({"version": 2, "family": 0, "tlvs": ((256, b""),)}, "0..255"),
    ({"version": 2, "family": 0, "tlvs": ((-1, b""),)}, "0..255"),
    ({"version": 2, "family": 0, "tlvs": ((1, bytes(65536)),)}, "at most 65535"),
    ({"version": 2, "family": 0, "tlvs": ((1, bytes(65533)),)}, "room for 65535"),
    ({"version": 2, "family": ProxyFamily.TCP4, "source": A4, "destination": A4,
      "tlvs": ((1, bytes(65521)),)}, "take 65536"),
    ({"version": 2, "family": 0, "tlvs": ((3, b"\0\0\0"),)}, "4 octets, got 3"),
    ({"version": 2, "family": 0, "tlvs": ((3, bytes(4)), (3, bytes(4)))}, "at most one CRC32C"),
])
def test_invalid_headers_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(LocalProtocolError, match=match):
        ProxyHeader(**kwargs)


def test_the_largest_v2_header_is_allowed() -> None:
    header = ProxyHeader(version=2, family=0, tlvs=((1, bytes(65532)),))
    assert len(encode_proxy_header(header)) == MAX_PROXY_V2_HEADER_SIZE
    assert parse(encode_proxy_header(header), max_header_size=MAX_PROXY_V2_HEADER_SIZE) == header


@pytest.mark.parametrize("kwargs", [
    {"version": True, "family": 0},
    {"version": "1", "family": 0},
    {"version": 2, "family": "TCP4"},
    {"version": 2, "family": False},
    {"version": 2, "family": 0, "command": "LOCAL"},
    {"version": 2, "family": ProxyFamily.TCP4, "source": ("192.0.2.1", 1), "destination": A4},
    {"version": 2, "family": ProxyFamily.UNIX_STREAM, "unix_source": "/a", "unix_destination": b""},
    {"version": 2, "family": 0, "tlvs": b"\x01\x00\x00"},
    {"version": 2, "family": 0, "tlvs": 5},
    {"version": 2, "family": 0, "tlvs": ((1, b"x", 2),)},
    {"version": 2, "family": 0, "tlvs": ([1, b"x"],)},
    {"version": 2, "family": 0, "tlvs": ((True, b"x"),)},
    {"version": 2, "family": 0, "tlvs": ((1, "x"),)},
])
def test_wrong_python_types(kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        ProxyHeader(**kwargs)


# -- reading: every vector whole, byte by byte, in halves, with trailing octets ----------


@pytest.mark.parametrize("split", sorted(SPLITS))
@pytest.mark.parametrize("trailing", [b"", TRAILING, b"\r\n", PROXY_V2_SIGNATURE])
@pytest.mark.parametrize(("name", "header", "octets"), VECTORS, ids=VECTOR_IDS)
def test_reading(name: str, header: ProxyHeader, octets: bytes, trailing: bytes, split: str) -> None:
    events, reader = read_all(SPLITS[split](octets + trailing))
    assert events == [header]
    assert reader.header == header
    assert reader.trailing_data == (trailing, False)
    assert reader.next_event() is PAUSED and reader.next_event() is PAUSED
    assert reader.read_size_hint == 0
    reader.receive_data(b"more")
    assert reader.next_event() is PAUSED  # never parsed: it belongs to the real protocol
    assert reader.trailing_data == (trailing + b"more", False)
    reader.receive_data(b"")
    assert reader.trailing_data == (trailing + b"more", True)


@pytest.mark.parametrize(("name", "header", "octets"), VECTORS, ids=VECTOR_IDS)
def test_reencoding_is_exact(name: str, header: ProxyHeader, octets: bytes) -> None:
    assert encode_proxy_header(parse(octets)) == octets


def test_eof_right_after_the_header() -> None:
    events, reader = read_all([b"PROXY UNKNOWN\r\n"], eof=True)
    assert events == [ProxyHeader(version=1, family=ProxyFamily.UNSPEC)]
    assert reader.next_event() is PAUSED
    assert reader.trailing_data == (b"", True)


def test_bytearray_and_memoryview_are_accepted() -> None:
    octets = VECTORS[0][2]
    for data in (bytearray(octets), memoryview(octets)):
        assert parse(data) == VECTORS[0][1]  # type: ignore[arg-type]


def test_the_header_is_returned_once() -> None:
    reader = ProxyHeaderReader()
    assert reader.header is None
    reader.receive_data(VECTORS[0][2] * 2)
    assert reader.next_event() == VECTORS[0][1]
    assert reader.next_event() is PAUSED
    assert reader.trailing_data == (VECTORS[0][2], False)  # a second header is data, never parsed


class SocketLike:
    """A peer's octets in a kernel buffer: ``recv(n)`` takes at most *n* of them, at most *segment* at once."""

    def __init__(self, data: bytes, segment: int) -> None:
        self.data = data
        self.segment = segment

    def recv(self, size: int) -> bytes:
        assert size > 0
        out, self.data = self.data[: min(size, self.segment)], self.data[min(size, self.segment) :]
        return out


@pytest.mark.parametrize("segment", [1, 2, 7, 1000])
@pytest.mark.parametrize(("name", "header", "octets"), VECTORS, ids=VECTOR_IDS)
def test_read_size_hint_never_reads_past_the_header(name: str, header: ProxyHeader, octets: bytes,
                                                    segment: int) -> None:
    sock = SocketLike(octets + TRAILING, segment)
    reader = ProxyHeaderReader()
    reads = 0
    while (event := reader.next_event()) is NEED_DATA:
        hint = reader.read_size_hint
        assert hint > 0
        reader.receive_data(sock.recv(hint))
        reads += 1
    assert event == header
    assert sock.data == TRAILING  # nothing after the header left the "kernel"
    assert reader.trailing_data == (b"", False)
    if segment == 1000:  # the hint is a useful bound, not 1 octet at a time
        assert reads <= (len(octets) // 5 if header.version == 1 else 3)


def test_read_size_hint_values() -> None:
    reader = ProxyHeaderReader()
    assert reader.read_size_hint == 15  # PROXY UNKNOWN\r\n, the shortest header
    reader.receive_data(SIG)
    assert reader.read_size_hint == 4
    reader.receive_data(h("21 11 000c"))
    assert reader.read_size_hint == 12
    reader.receive_data(bytes(11))
    assert reader.read_size_hint == 1
    reader.receive_data(bytes(1))
    assert reader.read_size_hint == 0  # whole, not yet returned
    assert isinstance(reader.next_event(), ProxyHeader)
    assert reader.read_size_hint == 0


@pytest.mark.parametrize(("prefix", "hint"), [
    (b"PROXY ", 9), (b"PROXY U", 8), (b"PROXY UNKNOWN", 2), (b"PROXY UNKNOWN x", 2), (b"PROXY UNKNOWN\r", 1),
    (b"PROXY T", 15), (b"PROXY TCP4", 22), (b"PROXY TCP6", 12), (b"PROXY TCP4 ", 21), (b"PROXY TCP4 1", 20),
    (b"PROXY TCP4 1.", 19), (b"PROXY TCP4 1.2.3.4", 14), (b"PROXY TCP4 1.2.3.4 ", 13),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2", 2), (b"PROXY TCP6 ::1 ::", 6), (b"PROXY TCP6 ::1 :: 65535 1", 2),
])
def test_read_size_hint_is_the_shortest_completion(prefix: bytes, hint: int) -> None:
    reader = ProxyHeaderReader()
    reader.receive_data(prefix)
    assert reader.next_event() is NEED_DATA
    assert reader.read_size_hint == hint


# -- EOF, limits, garbage -------------------------------------------------------------------


@pytest.mark.parametrize(("name", "header", "octets"), VECTORS, ids=VECTOR_IDS)
def test_eof_in_the_middle_of_the_header(name: str, header: ProxyHeader, octets: bytes) -> None:
    for size in range(len(octets)):
        reader = ProxyHeaderReader()
        if size:
            reader.receive_data(octets[:size])
        assert reader.next_event() is NEED_DATA
        reader.receive_data(b"")
        assert reader.read_size_hint == 0
        with pytest.raises(RemoteProtocolError, match="closed the connection") as info:
            reader.next_event()
        assert ("without sending" in info.value.message) == (size == 0)
        with pytest.raises(RemoteProtocolError, match="failed earlier"):
            reader.next_event()


def test_data_after_eof_is_a_bug_of_the_caller() -> None:
    reader = ProxyHeaderReader()
    reader.receive_data(b"")
    with pytest.raises(RuntimeError, match="after EOF"):
        reader.receive_data(b"PROXY")


def test_v2_size_cap() -> None:
    header = ProxyHeader(version=2, family=0, tlvs=((4, bytes(100)),))  # 16 + 103 octets
    octets = encode_proxy_header(header)
    assert parse(octets, max_header_size=119) == header
    reader = ProxyHeaderReader(max_header_size=118)
    reader.receive_data(octets[:16])  # refused as soon as the length arrives
    with pytest.raises(RemoteProtocolError, match="announces 119 octets, more than the maximum of 118"):
        reader.next_event()
    assert reader.read_size_hint == 0
    big = SIG + h("21 00 1000 00 0ffd") + bytes(0xFFD)
    assert "more than the maximum of 4096" in refuse(big)
    assert parse(big, max_header_size=0x1010).tlvs == ((0, bytes(0xFFD)),)


@pytest.mark.parametrize("bad", [15, 65552, -1])
def test_max_header_size_range(bad: int) -> None:
    with pytest.raises(LocalProtocolError, match="max_header_size"):
        ProxyHeaderReader(max_header_size=bad)
    with pytest.raises(TypeError):
        ProxyHeaderReader(max_header_size=4096.0)  # type: ignore[arg-type]
    assert ProxyHeaderReader(max_header_size=16).max_header_size == 16


def test_v1_length_limit() -> None:
    line = f"PROXY UNKNOWN {FFFF6} {FFFF6} 65535 65535".encode()
    assert parse(line + b"\r\n") == ProxyHeader(version=1, family=ProxyFamily.UNSPEC)
    assert "too long" in refuse(line + b"5\r\n")
    assert "too long" in refuse(line + b"55")  # refused before any CRLF
    assert "too long" in refuse(b"PROXY UNKNOWN " + b"x" * 200)
    reader = ProxyHeaderReader()
    reader.receive_data(line + b"5")  # 106 octets, no CR: a CRLF can no longer fit in 107
    with pytest.raises(RemoteProtocolError, match="too long"):
        reader.next_event()


GARBAGE = {  # name: (octets, how many of them it takes to refuse them, what the message says they look like)
    "socks5_greeting": (b"\x05\x01\x00", 1, "SOCKS5 greeting"),
    "socks4_request": (b"\x04\x01\x00\x50\xc0\x00\x02\x01\x00", 1, "SOCKS4"),
    "tls_client_hello": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 1, "TLS ClientHello"),
    "http_get": (b"GET / HTTP/1.1\r\n", 1, "HTTP request"),
    "http_post": (b"POST / HTTP/1.1\r\n", 2, "HTTP request"),
    "lowercase_proxy": (b"proxy TCP4 ", 1, "HTTP request"),
    "proxy_without_space": (b"PROXY\tTCP4", 6, "single space"),
    "nul": (b"\x00" * 16, 1, "no PROXY protocol header"),
    "crlf_crlf_not_signature": (b"\r\n\r\nGET / HTTP/1.1\r\n", 5, "no PROXY protocol header"),
    "v2_signature_typo": (SIG[:11] + b"\r" + h("21 11 000c"), 12, "no PROXY protocol header"),
}


@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_garbage_is_refused_at_the_first_wrong_octet(name: str) -> None:
    data, refused_at, looks = GARBAGE[name]
    for size in range(1, refused_at):
        reader = ProxyHeaderReader()
        reader.receive_data(data[:size])
        assert reader.next_event() is NEED_DATA
    reader = ProxyHeaderReader()
    reader.receive_data(data[:refused_at])
    assert reader.read_size_hint == 1  # invalid, not yet reported
    with pytest.raises(RemoteProtocolError) as info:
        reader.next_event()
    message = info.value.message
    assert "expected a PROXY protocol header, 'PROXY ' (version 1) or the 12-octet signature" in message
    assert looks in message
    assert data[:refused_at].hex(" ") in message
    assert reader.read_size_hint == 0


def test_messages_name_what_the_octets_look_like_when_more_are_here() -> None:
    assert "the keyword is the uppercase 'PROXY'" in refuse(b"proxy TCP4 1.2.3.4")
    assert "'PROXY' without the single space" in refuse(b"PROXY\tTCP4 1.2.3.4")
    assert "empty protocol: fields are separated by exactly one space" in refuse(b"PROXY  TCP4")

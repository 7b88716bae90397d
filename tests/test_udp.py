"""The SOCKS5 UDP request header codec (RFC 1928 §7)."""

from __future__ import annotations

import array
import contextlib
import ipaddress

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from socks_sansio import Address, LocalProtocolError, RemoteProtocolError
from socks_sansio._udp import MAX_UDP_HEADER_SIZE, UdpDatagram, encode_udp_datagram, parse_udp_datagram

from .strategies import addresses, octets

datagrams = st.builds(UdpDatagram, address=addresses, data=st.binary(max_size=300), fragment=octets)

VECTORS = [
    (
        UdpDatagram(address=Address("192.0.2.1", 53), data=b"query"),
        b"\x00\x00\x00\x01\xc0\x00\x02\x01\x00\x35query",
    ),
    (
        UdpDatagram(address=Address("2001:db8::1", 443), data=b"", fragment=0x81),
        b"\x00\x00\x81\x04" + ipaddress.IPv6Address("2001:db8::1").packed + b"\x01\xbb",
    ),
    (
        UdpDatagram(address=Address("example.com", 80), data=b"\x00\xff"),
        b"\x00\x00\x00\x03\x0bexample.com\x00\x50\x00\xff",
    ),
]


def _header_size(datagram: UdpDatagram) -> int:
    return len(encode_udp_datagram(datagram)) - len(datagram.data)


@pytest.mark.parametrize(("datagram", "wire"), VECTORS)
def test_known_encodings(datagram: UdpDatagram, wire: bytes) -> None:
    assert encode_udp_datagram(datagram) == wire
    assert parse_udp_datagram(wire) == datagram
    assert parse_udp_datagram(bytearray(wire)) == datagram
    assert parse_udp_datagram(memoryview(wire)) == datagram


@given(datagrams)
def test_round_trip(datagram: UdpDatagram) -> None:
    wire = encode_udp_datagram(datagram)
    assert isinstance(wire, bytes)
    assert parse_udp_datagram(wire) == datagram
    assert parse_udp_datagram(bytearray(wire)) == datagram
    assert parse_udp_datagram(memoryview(wire)) == datagram
    assert _header_size(datagram) <= MAX_UDP_HEADER_SIZE
    assert wire.endswith(datagram.data)


def test_largest_header_is_262_octets() -> None:
    datagram = UdpDatagram(address=Address(b"a" * 255, 65535), data=b"")
    assert MAX_UDP_HEADER_SIZE == 262
    assert _header_size(datagram) == 262
    assert parse_udp_datagram(encode_udp_datagram(datagram)) == datagram


def test_data_is_everything_after_the_header_even_if_it_looks_like_a_header() -> None:
    inner = encode_udp_datagram(UdpDatagram(address=Address("10.0.0.1", 1), data=b"x"))
    outer = UdpDatagram(address=Address("10.0.0.2", 2), data=inner)
    assert parse_udp_datagram(encode_udp_datagram(outer)).data == inner


@given(datagrams)
def test_every_truncated_header_raises(datagram: UdpDatagram) -> None:
    wire = encode_udp_datagram(datagram)
    header = _header_size(datagram)
    for cut in range(header):
        with pytest.raises(RemoteProtocolError) as info:
            parse_udp_datagram(wire[:cut])
        assert info.value.reply_hint is None
    # Cutting into DATA is not detectable: UDP keeps boundaries, DATA is the rest.
    for cut in range(header, len(wire) + 1):
        assert parse_udp_datagram(wire[:cut]) == attrs.evolve(datagram, data=wire[header:cut])


def test_truncation_message_says_what_was_needed() -> None:
    with pytest.raises(RemoteProtocolError, match=r"truncated.*at least 10 octets.*only 9"):
        parse_udp_datagram(b"\x00\x00\x00\x01\x7f\x00\x00\x01\x00")
    with pytest.raises(RemoteProtocolError, match=r"truncated.*at least 8 octets.*only 0"):
        parse_udp_datagram(b"")
    with pytest.raises(RemoteProtocolError, match=r"truncated.*at least 22 octets"):
        parse_udp_datagram(b"\x00\x00\x00\x04" + bytes(10))
    with pytest.raises(RemoteProtocolError, match=r"truncated.*at least 12 octets"):
        parse_udp_datagram(b"\x00\x00\x00\x03\x05ab")


@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_remote_protocol_error(packet: bytes) -> None:
    try:
        datagram = parse_udp_datagram(packet)
    except RemoteProtocolError as exc:
        assert exc.reply_hint is None
        assert exc.message.startswith("SOCKS5 UDP datagram")
    else:
        # The encoding is canonical: what parses re-encodes to the same octets.
        assert encode_udp_datagram(datagram) == packet


@given(st.sampled_from([b"\x00\x00", b"\x00\x00\x00\x01", b"\x00\x00\x00\x03", b"\x00\x00\x00\x04"]),
       st.binary(max_size=300))
def test_plausible_headers_raise_only_remote_protocol_error(prefix: bytes, rest: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        parse_udp_datagram(prefix + rest)


@pytest.mark.parametrize("rsv", [b"\x00\x01", b"\x01\x00", b"\xff\xff"])
def test_nonzero_reserved_field_is_refused(rsv: bytes) -> None:
    good = encode_udp_datagram(VECTORS[0][0])
    with pytest.raises(RemoteProtocolError, match=rf"RSV is 0x{rsv.hex()}, must be 0x0000"):
        parse_udp_datagram(rsv + good[2:])
    with pytest.raises(RemoteProtocolError, match="RSV"):
        parse_udp_datagram(rsv)  # judged as soon as it is there


@pytest.mark.parametrize("atyp", sorted(set(range(256)) - {1, 3, 4}))
def test_unknown_address_type_is_refused(atyp: int) -> None:
    with pytest.raises(RemoteProtocolError, match=f"unknown address type 0x{atyp:02x}") as info:
        parse_udp_datagram(bytes((0, 0, 0, atyp)) + bytes(20))
    assert info.value.reply_hint is None


def test_zero_length_domain_is_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="domain name of length 0"):
        parse_udp_datagram(b"\x00\x00\x00\x03\x00\x00\x35data")


def test_domain_with_a_space_is_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="invalid address"):
        parse_udp_datagram(b"\x00\x00\x00\x03\x03a b\x00\x35")


def test_empty_data_is_allowed() -> None:
    wire = b"\x00\x00\x00\x01\x7f\x00\x00\x01\x00\x35"
    assert parse_udp_datagram(wire) == UdpDatagram(address=Address("127.0.0.1", 53), data=b"")


def test_non_byte_memoryview_is_read_as_its_octets() -> None:
    wire = b"\x00\x00\x00\x01\x7f\x00\x00\x01\x00\x35ab"
    view = memoryview(array.array("H", wire))  # item size 2: len(view) != octets
    assert parse_udp_datagram(view) == UdpDatagram(address=Address("127.0.0.1", 53), data=b"ab")


@pytest.mark.parametrize(
    ("fragment", "is_fragment", "position", "last"),
    [
        (0, False, 0, False),
        (1, True, 1, False),
        (127, True, 127, False),
        (0x81, True, 1, True),
        (0xFF, True, 127, True),
    ],
)
def test_fragment_helpers(fragment: int, is_fragment: bool, position: int, last: bool) -> None:
    datagram = UdpDatagram(address=Address("::1", 1), data=b"", fragment=fragment)
    assert datagram.is_fragment is is_fragment
    assert datagram.fragment_position == position
    assert datagram.is_last_fragment is last
    assert parse_udp_datagram(encode_udp_datagram(datagram)).fragment == fragment


def test_dropping_fragments_is_one_line() -> None:
    wires = [encode_udp_datagram(UdpDatagram(address=Address("::1", 1), data=bytes([f]), fragment=f))
             for f in (0, 1, 0x82, 0)]
    kept = [d.data for d in map(parse_udp_datagram, wires) if not d.is_fragment]
    assert kept == [b"\x00", b"\x00"]


def test_constructor_validates() -> None:
    address = Address("::1", 1)
    for bad in (-1, 256):
        with pytest.raises(LocalProtocolError, match=r"fragment must be in 0\.\.255"):
            UdpDatagram(address=address, data=b"", fragment=bad)
    with pytest.raises(TypeError):
        UdpDatagram(address=address, data=b"", fragment=True)
    with pytest.raises(TypeError, match="data must be bytes"):
        UdpDatagram(address=address, data="text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        UdpDatagram(address="::1", data=b"")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        UdpDatagram(address, b"")  # type: ignore[call-arg]  # keyword-only
    assert UdpDatagram(address=address, data=bytearray(b"x")).data == b"x"
    assert type(UdpDatagram(address=address, data=memoryview(b"x")).data) is bytes


def test_datagram_is_frozen() -> None:
    datagram = VECTORS[0][0]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        datagram.fragment = 1  # type: ignore[misc]


def test_wrong_types_are_type_errors() -> None:
    with pytest.raises(TypeError, match="expected a UdpDatagram"):
        encode_udp_datagram(b"\x00")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="packet must be bytes"):
        parse_udp_datagram("\x00\x00\x00")  # type: ignore[arg-type]

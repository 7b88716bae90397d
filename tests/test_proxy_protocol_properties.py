"""Properties of the PROXY protocol codec: round trip, any chunking, read-size hints, only our errors."""

from __future__ import annotations

import ipaddress
from typing import Any

import attrs
from hypothesis import assume, given
from hypothesis import strategies as st

from socks_sansio import NEED_DATA, PAUSED, Address, LocalProtocolError, RemoteProtocolError
from socks_sansio._proxy_protocol import (
    PROXY_V2_SIGNATURE,
    ProxyCommand,
    ProxyFamily,
    ProxyHeader,
    ProxyHeaderReader,
    ProxyTLVType,
    encode_proxy_header,
)
from socks_sansio._proxy_protocol_wire import format_ipv6, read_header

from .helpers import chunked

ports = st.integers(0, 0xFFFF)
ipv4 = st.builds(ipaddress.IPv4Address, st.integers(0, 2**32 - 1))
ipv6 = st.one_of(
    st.builds(ipaddress.IPv6Address, st.integers(0, 2**128 - 1)),
    st.builds(lambda n: ipaddress.IPv6Address(n << 64), st.integers(0, 2**64 - 1)),  # zero runs
    st.builds(lambda n: ipaddress.IPv6Address(0xFFFF << 32 | n), st.integers(0, 2**32 - 1)),  # IPv4-mapped
)
unix_paths = st.binary(max_size=108)
tlv_values = st.binary(max_size=40)
tlv_types = st.one_of(st.sampled_from(ProxyTLVType), st.integers(0, 255)).filter(lambda t: t != ProxyTLVType.CRC32C)


@st.composite
def tlv_lists(draw: st.DrawFn) -> tuple[tuple[int, bytes], ...]:
    tlvs = draw(st.lists(st.tuples(tlv_types, tlv_values), max_size=5))
    if draw(st.booleans()):
        tlvs.insert(draw(st.integers(0, len(tlvs))), (ProxyTLVType.CRC32C, bytes(4)))
    return tuple(tlvs)


def addresses_for(family: ProxyFamily) -> st.SearchStrategy[dict[str, Any]]:
    if family in (ProxyFamily.TCP4, ProxyFamily.UDP4):
        hosts: st.SearchStrategy[Any] = ipv4
    elif family in (ProxyFamily.TCP6, ProxyFamily.UDP6):
        hosts = ipv6
    elif family.is_unix:
        return st.fixed_dictionaries({"unix_source": unix_paths, "unix_destination": unix_paths})
    else:
        return st.just({})
    return st.fixed_dictionaries({"source": st.builds(Address, hosts, ports),
                                  "destination": st.builds(Address, hosts, ports)})


@st.composite
def headers(draw: st.DrawFn) -> ProxyHeader:
    if draw(st.booleans()):
        family = draw(st.sampled_from([ProxyFamily.TCP4, ProxyFamily.TCP6, ProxyFamily.UNSPEC]))
        return ProxyHeader(version=1, family=family, **draw(addresses_for(family)))
    if draw(st.integers(0, 5)) == 0:
        return ProxyHeader(version=2, command=ProxyCommand.LOCAL, family=ProxyFamily.UNSPEC, tlvs=draw(tlv_lists()))
    family = draw(st.sampled_from(ProxyFamily))
    return ProxyHeader(version=2, family=family, tlvs=draw(tlv_lists()), **draw(addresses_for(family)))


chunkings = st.lists(st.integers(1, 40), min_size=1, max_size=8)


def outcome(pieces: list[bytes], *, eof: bool = False) -> tuple[Any, ...]:
    """What a reader makes of *pieces*: the header or the error type, the trailing data, the hints seen."""
    reader = ProxyHeaderReader()
    got: Any = NEED_DATA
    try:
        for piece in [*(p for p in pieces if p), *([b""] if eof else [])]:
            reader.receive_data(piece)
            got = reader.next_event()
            if got is NEED_DATA:
                assert reader.read_size_hint > 0
            elif got is not PAUSED:
                assert isinstance(got, ProxyHeader)
                assert reader.read_size_hint == 0
                header = got
    except RemoteProtocolError as exc:
        assert exc.reply_hint is None
        return ("error",)
    if reader.header is not None:
        return ("header", header, reader.trailing_data)
    return ("need", reader.trailing_data)


def with_crc_zeroed(header: ProxyHeader) -> ProxyHeader:
    tlvs = tuple((kind, bytes(4) if kind == ProxyTLVType.CRC32C else value) for kind, value in header.tlvs)
    return attrs.evolve(header, tlvs=tlvs)


@given(header=headers(), trailing=st.binary(max_size=40), sizes=chunkings)
def test_round_trip_under_any_chunking(header: ProxyHeader, trailing: bytes, sizes: list[int]) -> None:
    octets = encode_proxy_header(header)
    whole = outcome([octets + trailing])
    assert whole[0] == "header"
    parsed = whole[1]
    assert with_crc_zeroed(parsed) == with_crc_zeroed(header)
    assert encode_proxy_header(parsed) == octets
    assert whole[2] == (trailing, False)
    assert outcome(chunked(octets + trailing, sizes)) == whole
    assert outcome([octets[i : i + 1] for i in range(len(octets))] + [trailing]) == whole


@given(header=headers(), trailing=st.binary(min_size=1, max_size=40), segment=st.integers(1, 64))
def test_reading_by_the_hint_leaves_everything_after_the_header(header: ProxyHeader, trailing: bytes,
                                                                 segment: int) -> None:
    octets = encode_proxy_header(header)
    kernel = octets + trailing
    reader = ProxyHeaderReader()
    while (event := reader.next_event()) is NEED_DATA:
        size = min(reader.read_size_hint, segment)
        assert size > 0
        reader.receive_data(kernel[:size])
        kernel = kernel[size:]
    assert isinstance(event, ProxyHeader)
    assert kernel == trailing
    assert reader.trailing_data == (b"", False)


@given(header=headers())
def test_the_hint_is_a_lower_bound_at_every_prefix(header: ProxyHeader) -> None:
    octets = encode_proxy_header(header)
    for size in range(len(octets)):
        need = read_header(octets[:size], 4096)
        assert isinstance(need, int)
        assert 1 <= need <= len(octets) - size


@given(header=headers(), sizes=chunkings)
def test_eof_anywhere_inside_the_header_is_an_error(header: ProxyHeader, sizes: list[int]) -> None:
    octets = encode_proxy_header(header)
    for size in range(len(octets)):
        assert outcome(chunked(octets[:size], sizes), eof=True) == ("error",)


@given(data=st.binary(max_size=300), sizes=chunkings, eof=st.booleans())
def test_arbitrary_octets_raise_only_our_errors(data: bytes, sizes: list[int], eof: bool) -> None:
    assert outcome(chunked(data, sizes), eof=eof) == outcome([data], eof=eof)


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A valid header (plus some octets) with a few octets changed, inserted or removed."""
    out = bytearray(encode_proxy_header(draw(headers())) + draw(st.binary(max_size=8)))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(out)))
        op = draw(st.integers(0, 2))
        if op == 0 and at < len(out):
            out[at] = draw(st.integers(0, 255))
        elif op == 1:
            out[at:at] = draw(st.binary(min_size=1, max_size=4))
        else:
            del out[at : at + draw(st.integers(1, 4))]
    return bytes(out)


@given(data=damaged(), sizes=chunkings, eof=st.booleans())
def test_damaged_headers_are_parsed_or_refused_alike_under_any_chunking(data: bytes, sizes: list[int],
                                                                        eof: bool) -> None:
    whole = outcome([data], eof=eof)
    assert outcome(chunked(data, sizes), eof=eof) == whole
    if whole[0] == "header":  # whatever was accepted re-encodes to octets read back alike
        again = outcome([encode_proxy_header(whole[1])])
        assert again[0] == "header" and again[1] == whole[1]


@given(data=st.binary(max_size=60))
def test_v2_prefixed_octets_raise_only_our_errors(data: bytes) -> None:
    octets = PROXY_V2_SIGNATURE + b"\x21" + data
    assert outcome(chunked(octets, [3]), eof=True) == outcome([octets], eof=True)


@given(text=st.text(alphabet="PROXY TCP46UNKNOW0123456789.:abcdefABCDEF\r\n", max_size=70))
def test_v1_like_text_raises_only_our_errors(text: str) -> None:
    octets = b"PROXY " + text.encode("ascii")
    assert outcome([octets[i : i + 1] for i in range(len(octets))]) == outcome([octets])


@given(address=ipv6)
def test_ipv6_text_matches_the_stdlib_and_any_spelling_reads_back(address: ipaddress.IPv6Address) -> None:
    if address.ipv4_mapped is None:
        assert format_ipv6(address) == str(address)
    for text in (format_ipv6(address), address.exploded, address.exploded.upper(), str(address)):
        line = f"PROXY TCP6 {text} ::1 1 2\r\n".encode()
        got = outcome([line])
        assert got[0] == "header" and got[1].source.host == address


@given(kind=st.integers(), value=st.binary(max_size=8))
def test_tlv_types_outside_an_octet_are_refused(kind: int, value: bytes) -> None:
    assume(not 0 <= kind <= 255)
    try:
        ProxyHeader(version=2, family=ProxyFamily.UNSPEC, tlvs=((kind, value),))
    except LocalProtocolError:
        return
    raise AssertionError("accepted")

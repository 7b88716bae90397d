"""The PROXY protocol reader's grammar: version 1 lines (§2.1) and version 2 layouts (§2.2), refused and accepted."""

from __future__ import annotations

import re

import pytest

from socks_sansio import NEED_DATA, Address, RemoteProtocolError
from socks_sansio._proxy_protocol import (
    ProxyCommand,
    ProxyFamily,
    ProxyHeader,
    ProxyHeaderReader,
    ProxyTLVType,
    encode_proxy_header,
)
from socks_sansio._proxy_protocol_wire import crc32c, read_header

from .helpers import SPLITS
from .test_proxy_protocol import GARBAGE, SIG, TRAILING, V6, VECTORS, h, parse, read_all, refuse

# -- version 1 grammar (§2.1) -----------------------------------------------------------

V1_REFUSED = [
    (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "the destination address is empty"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "leading zero"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n", "leading zero"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", "not in 0..65535"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 123456\r\n", "not in 0..65535"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "not a decimal number"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \xd9\xa1\r\n", "not a decimal number"),
    (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "the source address b'01.2.3.4' is not an IPv4 address"),
    (b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "is not an IPv4 address"),
    (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "is not an IPv4 address"),
    (b"PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", "is not an IPv4 address"),
    (b"PROXY TCP4 1..3.4 5.6.7.8 1 2\r\n", "is not an IPv4 address"),
    (b"PROXY TCP4 .1.2.3 5.6.7.8 1 2\r\n", "is not an IPv4 address"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.0x8 1 2\r\n", "destination address"),
    (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "is not an IPv4 address"),
    (b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", "is not an IPv4 address"),
    (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "the source address b'1.2.3.4' is not an IPv6 address"),
    (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "is not an IPv6 address"),
    (b"PROXY TCP6 ::1::2 ::1 1 2\r\n", "is not an IPv6 address"),
    (b"PROXY TCP6 12345:: ::1 1 2\r\n", "is not an IPv6 address"),
    (b"PROXY TCP6 ::1 ::ffff:01.2.3.4 1 2\r\n", "the destination address"),
    (b"PROXY TCP6 ::1 [::2] 1 2\r\n", "is not an IPv6 address"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "the destination port is missing"),
    (b"PROXY TCP6\r\n", "the source address is missing"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "more than four fields"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "more than four fields"),
    (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "unknown protocol b'TCP5'"),
    (b"PROXY UNKNOWNX\r\n", "unknown protocol"),
    (b"PROXY UNKNOWN\x00\r\n", "unknown protocol"),
    (b"PROXY unknown\r\n", "unknown protocol"),
    (b"PROXY \r\n", "unknown protocol b''"),
    (b"PROXY  UNKNOWN\r\n", "empty protocol"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "bare LF"),
    (b"PROXY UNKNOWN\n", "bare LF"),
    (b"PROXY UNKNOWN bare\nLF\r\n", "bare LF"),
    (b"PROXY UNKNOWN\rX", "CR not followed by LF"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", "CR not followed by LF"),
]


@pytest.mark.parametrize(("line", "match"), V1_REFUSED)
def test_v1_refusals(line: bytes, match: str) -> None:
    message = refuse(line)
    assert message.startswith("PROXY protocol v1: ")
    assert match in message


V1_ACCEPTED = [
    (b"PROXY UNKNOWN whatever \xff\x00 comes\r\n", ProxyHeader(version=1, family=ProxyFamily.UNSPEC)),
    (b"PROXY UNKNOWN \r\n", ProxyHeader(version=1, family=ProxyFamily.UNSPEC)),
    (b"PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n", ProxyHeader(version=1, family=ProxyFamily.UNSPEC)),
    (b"PROXY TCP6 2001:DB8:0:0:0:0:0:1 ::FFFF:1.2.3.4 0 65535\r\n",
     ProxyHeader(version=1, family=ProxyFamily.TCP6, source=Address("2001:db8::1", 0),
                 destination=Address("::ffff:102:304", 65535))),
    (b"PROXY TCP6 0000:0000:0000:0000:0000:0000:0000:0001 :: 80 443\r\n",
     ProxyHeader(version=1, family=ProxyFamily.TCP6, source=Address("::1", 80), destination=Address("::", 443))),
]


@pytest.mark.parametrize("split", sorted(SPLITS))
@pytest.mark.parametrize(("line", "header"), V1_ACCEPTED)
def test_v1_leniencies_of_the_spec(line: bytes, header: ProxyHeader, split: str) -> None:
    events, reader = read_all(SPLITS[split](line + b"rest"))
    assert events == [header]
    assert reader.trailing_data == (b"rest", False)


def test_v1_is_refused_before_the_crlf() -> None:
    for prefix in (b"PROXY TCP4 01", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ", b"PROXY TCP7",
                   b"PROXY TCP4 1.2.3.4 5.6.7.8 0x", b"PROXY UNKNOWN\n", b"PROXY UNKNOWNS", b"PROXY TCP6 ::1%",
                   b"PROXY TCP4 1.2.3.4 5.6.7.8 65536"):
        reader = ProxyHeaderReader()
        reader.receive_data(prefix[:-1])
        assert reader.next_event() is NEED_DATA, prefix
        reader.receive_data(prefix[-1:])
        with pytest.raises(RemoteProtocolError, match="PROXY protocol v1"):
            reader.next_event()


# -- version 2 layout (§2.2) ------------------------------------------------------------

ADDR4 = h("c0000201 c6336402 0035 14e9")
CRC_HEADER = {n: o for n, _, o in VECTORS}["v2_haproxy_crc32c_unique_id"]

V2_REFUSED = [  # (octets, the fewest octets that are refused, message)
    (SIG + h("11 11 000c") + ADDR4, 13, "the version is 1, not 2"),
    (SIG + h("31 11 000c") + ADDR4, 13, "the version is 3, not 2"),
    (SIG + h("01 00 0000"), 13, "the version is 0, not 2"),
    (SIG + h("22 11 000c") + ADDR4, 13, "unassigned command 0x2"),
    (SIG + h("2f 00 0000"), 13, "unassigned command 0xf"),
    *((SIG + bytes((0x21, fam)) + h("000c") + ADDR4, 14, f"unknown family and protocol 0x{fam:02x}")
      for fam in (0x01, 0x02, 0x03, 0x10, 0x13, 0x20, 0x23, 0x30, 0x33, 0x40, 0x41, 0xFF)),
    (SIG + h("21 11 000b") + ADDR4[:11], 16, "the length 11 is shorter than the 12 address octets of family TCP4"),
    (SIG + h("21 22 0023") + bytes(35), 16, "shorter than the 36 address octets of family UDP6"),
    (SIG + h("21 31 00d7") + bytes(215), 16, "shorter than the 216 address octets of family UNIX_STREAM"),
    (SIG + h("20 11 0005") + bytes(5), 16, "shorter than the 12 address octets"),
    (SIG + h("21 00 0002 0000"), 18, "2 octet(s) left after the last TLV, too few"),
    (SIG + h("21 00 0004 01 0002 00"), 20, "TLV type 0x01 announces 2 octets but only 1 remain"),
    (SIG + h("21 11 0012") + ADDR4 + h("05 0005 616263"), 34, "TLV type 0x05 announces 5 octets but only 3"),
    (SIG + h("21 11 000e") + ADDR4 + h("0000"), 30, "2 octet(s) left"),
    (SIG + h("20 11 000d") + ADDR4 + h("00"), 29, "1 octet(s) left"),
    (CRC_HEADER[:-1] + b"0", len(CRC_HEADER), "the CRC32C TLV says 0xeae6b4c4 but the header's checksum is"),
    (SIG + h("21 00 0006 03 0003 000000"), 22, "the CRC32C TLV holds 3 octets, not 4"),
    (SIG + h("21 00 000e 03 0004 00000000 03 0004 00000000"), 30, "more than one CRC32C TLV"),
]


@pytest.mark.parametrize(("octets", "refused_at", "match"), V2_REFUSED)
def test_v2_refusals(octets: bytes, refused_at: int, match: str) -> None:
    assert len(octets) == refused_at or refused_at <= 16
    message = refuse(octets)
    assert message.startswith("PROXY protocol v2: ")
    assert match in message
    reader = ProxyHeaderReader()
    reader.receive_data(octets[: refused_at - 1])
    assert reader.next_event() is NEED_DATA
    reader.receive_data(octets[refused_at - 1 : refused_at])
    with pytest.raises(RemoteProtocolError, match="PROXY protocol v2"):
        reader.next_event()


LOCAL = ProxyHeader(version=2, command=ProxyCommand.LOCAL, family=ProxyFamily.UNSPEC)


@pytest.mark.parametrize(("octets", "header"), [
    # LOCAL: the family and address block are discarded (§2.2), the TLVs after them kept.
    (SIG + h("20 11 0011") + ADDR4 + h("05 0002 6964"), ProxyHeader(
        version=2, command=ProxyCommand.LOCAL, family=ProxyFamily.UNSPEC, tlvs=((5, b"id"),))),
    (SIG + h("20 21 0000"), LOCAL),  # length 0: no address, whatever the family
    (SIG + h("20 32 00d8") + bytes(216), LOCAL),
    (SIG + h("21 00 0008 00 0000 e1 0002 0102"), ProxyHeader(
        version=2, family=ProxyFamily.UNSPEC, tlvs=((0, b""), (0xE1, b"\x01\x02")))),
    (SIG + h("21 12 0012") + ADDR4 + h("04 0003 000000"), ProxyHeader(
        version=2, family=ProxyFamily.UDP4, source=Address("192.0.2.1", 53),
        destination=Address("198.51.100.2", 5353), tlvs=((ProxyTLVType.NOOP, bytes(3)),))),
])
def test_v2_accepted(octets: bytes, header: ProxyHeader) -> None:
    for split in SPLITS.values():
        events, reader = read_all(split(octets + TRAILING))
        assert events == [header]
        assert reader.trailing_data == (TRAILING, False)


def test_crc32c_anywhere_in_the_tlvs() -> None:
    header = ProxyHeader(version=2, family=ProxyFamily.TCP6, source=V6[0], destination=V6[1],
                         tlvs=((ProxyTLVType.ALPN, b"http/1.1"), (ProxyTLVType.CRC32C, b"\xff" * 4), (0xEE, b"z")))
    octets = encode_proxy_header(header)
    got = parse(octets)
    crc = got.tlv(ProxyTLVType.CRC32C)
    assert crc is not None and crc != b"\xff" * 4
    assert crc32c(octets.replace(crc, bytes(4))) == int.from_bytes(crc, "big")
    assert got.tlvs[0] == header.tlvs[0] and got.tlvs[2] == header.tlvs[2]
    crc_type_at = octets.index(crc) - 3
    for index in range(16, len(octets)):  # any octet changed after the fixed part breaks the checksum...
        if index == crc_type_at:
            continue  # ... except the CRC32C TLV's own type: then there is no checksum to check
        damaged = bytearray(octets)
        damaged[index] ^= 0x40
        with pytest.raises(RemoteProtocolError):
            parse(bytes(damaged))


# -- refusals do not depend on how the octets arrive -------------------------------------


@pytest.mark.parametrize("octets", [line for line, _ in V1_REFUSED] + [o for o, _, _ in V2_REFUSED]
                         + [data for data, _, _ in GARBAGE.values()])
def test_refusals_do_not_depend_on_the_split(octets: bytes) -> None:
    # The same refusal, whatever the split; a quoted field shows the octets received so far.
    messages = set()
    for split in SPLITS.values():
        with pytest.raises(RemoteProtocolError) as info:
            read_all(split(octets + TRAILING))
        messages.add(re.sub(r"b'[^']*'|\((?:[0-9a-f]{2} ?)+\)", "...", info.value.message))
    assert len(messages) == 1 or octets.startswith(b"proxy"), messages


def test_a_failed_reader_stays_failed() -> None:
    reader = ProxyHeaderReader()
    reader.receive_data(b"GET / HTTP/1.1\r\n")
    with pytest.raises(RemoteProtocolError) as first:
        reader.next_event()
    for _ in range(2):
        with pytest.raises(RemoteProtocolError, match="failed earlier") as again:
            reader.next_event()
        assert first.value.message in again.value.message
    assert reader.header is None
    assert reader.read_size_hint == 0
    assert reader.trailing_data == (b"GET / HTTP/1.1\r\n", False)  # nothing consumed


def test_only_a_bounded_prefix_is_looked_at() -> None:
    # A v2 header still waiting for its TLVs, behind which a lot is already buffered elsewhere:
    # the parser reads the 16 fixed octets, not the rest (the answer does not change with it).
    prefix = SIG + h("21 00 0010")
    assert read_header(prefix, 4096) == 16
    assert read_header(prefix + bytes(15), 4096) == 1
    line = b"PROXY UNKNOWN "
    assert read_header(line + b"x" * 80, 4096) == 2
    with pytest.raises(RemoteProtocolError, match="too long"):
        read_header(line + b"x" * 10_000_000, 4096)

"""Fuzz target for the PROXY protocol reader (HAProxy's PROXY protocol, versions 1 and 2).

``check_proxy_protocol(payload, sizes, eof, decisions)`` feeds *payload* (what
a load balancer sent) to a :class:`ProxyHeaderReader` three ways: whole, in
the chunks *sizes* gives, and as a blocking server would read it, exactly
``read_size_hint`` octets at a time. It checks:

* only :class:`RemoteProtocolError` escapes (with no ``reply_hint``);
* the three ways agree: the same header or the same error, the same
  trailing data; reading by the hint never reads an octet past the header;
* ``read_size_hint`` is positive exactly while ``NEED_DATA``, and 0 after;
  ``PAUSED`` follows the header forever, and ``trailing_data`` is exactly the
  octets after it;
* **canonical re-encoding**: the header re-encodes to the octets it was read
  from, except where the specification leaves freedom (a version 1 IPv6
  address may be spelled many ways, the rest of an ``UNKNOWN`` line is
  ignored, a LOCAL header's family and addresses are discarded); in every
  case the re-encoding reads back as the same header.

The decision bits choose the size cap: 0 the default (4096), 1 the smallest
(16), 2 a small one (16 + the next 8 bits, to reach the limit), 3 the
largest (65551). ``target_proxy_protocol(data)`` reads the input layout of
:mod:`fuzz.common`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from fuzz.common import Finding, make_input, pieces_of, same, split_input
from socks_sansio import NEED_DATA, PAUSED, RemoteProtocolError
from socks_sansio._proxy_protocol import (
    DEFAULT_MAX_PROXY_HEADER_SIZE,
    MAX_PROXY_V2_HEADER_SIZE,
    PROXY_V2_SIGNATURE,
    ProxyCommand,
    ProxyFamily,
    ProxyHeader,
    ProxyHeaderReader,
    encode_proxy_header,
)

__all__ = ["check_proxy_protocol", "seed_inputs", "target_proxy_protocol"]

_LOOPS: Final = 8
"""More ``next_event`` calls than a piece can need: header, then PAUSED."""


def _cap(decisions: int) -> int:
    choice = decisions & 3
    if choice == 1:
        return 16
    if choice == 2:
        return 16 + (decisions >> 2 & 0xFF)
    return MAX_PROXY_V2_HEADER_SIZE if choice == 3 else DEFAULT_MAX_PROXY_HEADER_SIZE


def _finish(reader: ProxyHeaderReader, payload: bytes, fed: int) -> tuple[object, ...]:
    """The outcome once the input ran out: the header (with its size) or NEED_DATA, and the trailing data."""
    header = reader.header
    trailing = reader.trailing_data
    if header is None:
        if trailing[0] != payload[:fed]:
            raise Finding(f"NEED_DATA but trailing_data {trailing!r} is not all that was fed")
        return ("need", trailing)
    size = fed - len(trailing[0])
    if payload[size:fed] != trailing[0]:
        raise Finding(f"trailing_data {trailing!r} is not what followed the {size}-octet header")
    return ("header", header, size, trailing)


def _step(reader: ProxyHeaderReader) -> None:
    """Call next_event until it waits; check the hints and PAUSED."""
    finding = Finding
    for _ in range(_LOOPS):
        hint = reader.read_size_hint
        had_header = reader.header is not None
        event = reader.next_event()
        if event is NEED_DATA:
            if hint <= 0 or reader.read_size_hint != hint:
                raise finding(f"NEED_DATA but read_size_hint is {hint} (then {reader.read_size_hint})")
            return
        if event is PAUSED:
            if not had_header or hint != 0:
                raise finding(f"PAUSED before any header, or with read_size_hint {hint}")
            return
        if not isinstance(event, ProxyHeader) or had_header:
            raise finding(f"next_event returned {event!r} after the header")
        if reader.read_size_hint != 0:
            raise finding(f"read_size_hint is {reader.read_size_hint} after the header")
    raise finding("next_event never stopped")


def _run(payload: bytes, sizes: Sequence[int] | None, eof: bool, cap: int) -> tuple[object, ...]:
    reader = ProxyHeaderReader(max_header_size=cap)
    pieces = pieces_of(payload, [len(payload)] if sizes is None else sizes)
    fed = 0
    try:
        for piece in pieces:
            reader.receive_data(piece)
            fed += len(piece)
            _step(reader)
        if eof:
            reader.receive_data(b"")
            _step(reader)
    except RemoteProtocolError as exc:
        if exc.reply_hint is not None:
            raise Finding(f"a reply_hint {exc.reply_hint!r}: the PROXY protocol has no reply") from exc
        return ("error", RemoteProtocolError)
    return _finish(reader, payload, fed)


def _run_by_hint(payload: bytes, eof: bool, cap: int) -> tuple[object, ...]:
    """A blocking server: ``recv(read_size_hint)`` until the header is here."""
    reader = ProxyHeaderReader(max_header_size=cap)
    kernel = payload
    try:
        while reader.next_event() is NEED_DATA:
            if not kernel:
                if not eof:
                    break
                reader.receive_data(b"")
                continue
            size = reader.read_size_hint
            reader.receive_data(kernel[:size])
            kernel = kernel[size:]
    except RemoteProtocolError:
        return ("error", RemoteProtocolError)
    header = reader.header
    if header is None:
        return ("need",)
    if reader.trailing_data[0]:
        raise Finding(f"reading by read_size_hint read past the header: {reader.trailing_data!r}")
    return ("header", header, len(payload) - len(kernel))


def _reencode(header: ProxyHeader, consumed: bytes) -> None:
    finding = Finding
    encoded = encode_proxy_header(header)
    reader = ProxyHeaderReader(max_header_size=MAX_PROXY_V2_HEADER_SIZE)
    reader.receive_data(encoded)
    again = reader.next_event()
    if again != header or reader.trailing_data != (b"", False):
        raise finding(f"{header!r} encodes to {encoded!r}, which reads back as {again!r}")
    if encoded == consumed:
        return
    if header.version == 1 and header.family in (ProxyFamily.TCP6, ProxyFamily.UNSPEC):
        return  # IPv6 spellings (§2.1), and the ignored rest of an UNKNOWN line
    if header.command is ProxyCommand.LOCAL and (consumed[13] != 0 or len(consumed) > len(encoded)):
        return  # a LOCAL header's family and address block are discarded (§2.2)
    raise finding(f"{header!r} re-encodes to {encoded!r}, but was read from {consumed!r}")


def check_proxy_protocol(payload: bytes, sizes: Sequence[int], eof: bool, decisions: int) -> None:
    """``ProxyHeaderReader`` (size cap from *decisions*); *payload* is what the load balancer sent."""
    cap = _cap(decisions)
    whole = _run(payload, None, eof, cap)
    same("ProxyHeaderReader", whole, _run(payload, sizes, eof, cap))
    by_hint = _run_by_hint(payload, eof, cap)
    expected = whole[:3] if whole[0] == "header" else whole[:1] if whole[0] == "need" else whole
    same("ProxyHeaderReader", expected, by_hint, ("whole", "by hint"))
    if whole[0] == "header":
        header, size = whole[1], whole[2]
        assert isinstance(header, ProxyHeader)
        assert isinstance(size, int)
        _reencode(header, payload[:size])


def target_proxy_protocol(data: bytes) -> None:
    """:func:`check_proxy_protocol` on the input layout of :mod:`fuzz.common`."""
    payload, sizes, eof, decisions = split_input(data)
    check_proxy_protocol(payload, sizes, eof, decisions)


def seed_inputs() -> dict[str, bytes]:
    """Seeds for ``fuzz/corpus/proxy_protocol/`` (whole fuzzer inputs, header octets included)."""
    m = make_input
    sig = PROXY_V2_SIGNATURE
    addr4 = bytes.fromhex("c0a80001c0a8000bdc0401bb")
    addr6 = bytes.fromhex("20010db8" + "00" * 11 + "01" + "20010db8" + "00" * 11 + "02" + "00010002")
    crc = bytes.fromhex("2111 0029 7f000001 7f000001 97f3 5ba0 03 0004 eae6b4c4 05 0013") + b"uid-127.0.0.1-38899"
    http = b"GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n"
    ffff = ":".join(["ffff"] * 8)
    return {
        "v1_tcp4": m(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n" + http),
        "v1_tcp4_bytewise": m(b"PROXY TCP4 255.255.255.255 10.0.0.1 65535 0\r\n", seed=0),
        "v1_tcp6_chunked": m(b"PROXY TCP6 2001:db8::1 ::ffff:1.2.3.4 1 2\r\n\x16\x03\x01", seed=29),
        "v1_unknown": m(b"PROXY UNKNOWN\r\n", eof=True),
        "v1_unknown_longest": m(f"PROXY UNKNOWN {ffff} {ffff} 65535 65535\r\n".encode(), seed=5),
        "v1_eof_mid_line": m(b"PROXY TCP4 192.0.2.1 198.51", eof=True),
        "v2_tcp4": m(sig + bytes.fromhex("2111000c") + addr4 + http),
        "v2_tcp6_tlvs_chunked": m(sig + bytes.fromhex("21210037") + addr6
                                  + bytes.fromhex("01 0002 6832 02 000b") + b"example.com", seed=7),
        "v2_local": m(sig + bytes.fromhex("20000000") + b"SSH-2.0-x\r\n"),
        "v2_local_with_family": m(sig + bytes.fromhex("20110011") + addr4 + bytes.fromhex("0500026964")),
        "v2_udp4_noop": m(sig + bytes.fromhex("21120012") + addr4 + bytes.fromhex("04000300ff00"), seed=1),
        "v2_unix_stream": m(sig + bytes.fromhex("213100d8") + b"/tmp/c".ljust(108, b"\0") + bytes(108)),
        "v2_crc32c_haproxy": m(sig + crc, seed=11),
        "v2_over_small_cap": m(sig + bytes.fromhex("2111000c") + addr4, decisions=2 | 8 << 2),
        "v2_at_small_cap": m(sig + bytes.fromhex("2111000c") + addr4, decisions=2 | 12 << 2),
        "v2_eof_mid_tlv": m(sig + bytes.fromhex("21000010") + b"\x05\x00\x0dpartial", eof=True),
        "tls_client_hello": m(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
        "socks5_greeting": m(b"\x05\x01\x00"),
    }

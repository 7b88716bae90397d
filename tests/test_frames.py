"""The length-prefixed frame codec: 4-octet big-endian length + payload, with a size cap."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from socks_sansio import NEED_DATA, ConnectionClosed, LocalProtocolError, RemoteProtocolError
from socks_sansio._frames import DEFAULT_MAX_FRAME_SIZE, FRAME_HEADER_SIZE, Frame, FrameDecoder, encode_frame

from .helpers import SPLITS, chunked

payloads = st.binary(max_size=200)


def drain(decoder: FrameDecoder) -> list[Any]:
    """Every event until NEED_DATA; a ConnectionClosed ends the list."""
    out: list[Any] = []
    while (event := decoder.next_event()) is not NEED_DATA:
        out.append(event)
        if isinstance(event, ConnectionClosed):
            break
    return out


def decode(pieces: list[bytes], *, eof: bool = False, max_size: int = DEFAULT_MAX_FRAME_SIZE) -> list[Any]:
    decoder = FrameDecoder(max_size=max_size)
    out: list[Any] = []
    for piece in pieces:
        decoder.receive_data(piece)
        out += drain(decoder)
    if eof:
        decoder.receive_data(b"")
        out += drain(decoder)
    return out


def frames(*payloads: bytes) -> list[Frame]:
    return [Frame(payload=p) for p in payloads]


# -- encoding ------------------------------------------------------------------


def test_encoding() -> None:
    assert encode_frame(b"") == b"\x00\x00\x00\x00"
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert encode_frame(bytes(0x0102)) == b"\x00\x00\x01\x02" + bytes(0x0102)
    assert encode_frame(bytearray(b"ab")) == b"\x00\x00\x00\x02ab"
    assert encode_frame(memoryview(b"ab")) == b"\x00\x00\x00\x02ab"
    assert type(encode_frame(bytearray(b"ab"))) is bytes


def test_encoding_counts_octets_of_a_non_byte_memoryview() -> None:
    view = memoryview(b"abcd").cast("H")  # 2 items, 4 octets
    assert encode_frame(view) == b"\x00\x00\x00\x04abcd"


def test_encode_cap_is_inclusive() -> None:
    assert encode_frame(b"abc", max_size=3) == b"\x00\x00\x00\x03abc"
    with pytest.raises(LocalProtocolError, match="4 octets exceeds the maximum of 3"):
        encode_frame(b"abcd", max_size=3)
    assert encode_frame(b"", max_size=0) == bytes(4)
    with pytest.raises(LocalProtocolError):
        encode_frame(b"a", max_size=0)


def test_encode_default_cap() -> None:
    assert len(encode_frame(bytes(DEFAULT_MAX_FRAME_SIZE))) == DEFAULT_MAX_FRAME_SIZE + 4
    with pytest.raises(LocalProtocolError, match=f"exceeds the maximum of {DEFAULT_MAX_FRAME_SIZE}"):
        encode_frame(bytes(DEFAULT_MAX_FRAME_SIZE + 1))


def test_bad_arguments() -> None:
    for bad in (-1, 2**32):
        with pytest.raises(LocalProtocolError, match="max_size"):
            encode_frame(b"", max_size=bad)
        with pytest.raises(LocalProtocolError, match="max_size"):
            FrameDecoder(max_size=bad)
    for wrong in (True, 1.0, "10"):
        with pytest.raises(TypeError):
            encode_frame(b"", max_size=wrong)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            FrameDecoder(max_size=wrong)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="payload must be bytes"):
        encode_frame("text")  # type: ignore[arg-type]
    assert FrameDecoder(max_size=2**32 - 1).max_size == 2**32 - 1
    assert FrameDecoder().max_size == DEFAULT_MAX_FRAME_SIZE == 10 * 1024 * 1024


def test_frame_event() -> None:
    assert Frame(payload=bytearray(b"x")) == Frame(payload=b"x")
    assert type(Frame(payload=memoryview(b"x")).payload) is bytes
    with pytest.raises(TypeError, match="payload must be bytes"):
        Frame(payload="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Frame(b"x")  # type: ignore[call-arg]  # keyword-only
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        Frame(payload=b"").payload = b"x"  # type: ignore[misc]


# -- decoding ------------------------------------------------------------------

WIRE = encode_frame(b"hello") + encode_frame(b"") + encode_frame(b"\x00" * 300) + encode_frame(b"")
EXPECTED = frames(b"hello", b"", b"\x00" * 300, b"")


@pytest.mark.parametrize("split", SPLITS)
def test_many_frames(split: str) -> None:
    assert decode(SPLITS[split](WIRE)) == EXPECTED
    assert decode(SPLITS[split](WIRE), eof=True) == [*EXPECTED, ConnectionClosed()]


@pytest.mark.parametrize("split", SPLITS)
def test_extra_bytes_wait_for_the_rest(split: str) -> None:
    decoder = FrameDecoder()
    out = []
    for piece in SPLITS[split](WIRE + b"\x00\x00\x00\x05hel"):
        decoder.receive_data(piece)
        out += drain(decoder)
    assert out == EXPECTED
    assert decoder.next_event() is NEED_DATA
    assert decoder.read_size_hint == 2
    decoder.receive_data(b"lo")
    assert drain(decoder) == frames(b"hello")


def test_only_zero_length_frames() -> None:
    assert decode([bytes(4 * 50)], eof=True) == [*frames(*[b""] * 50), ConnectionClosed()]
    assert decode(SPLITS["bytewise"](bytes(4 * 5))) == frames(*[b""] * 5)


@given(st.lists(payloads, max_size=20), st.lists(st.integers(1, 50), min_size=1, max_size=20))
def test_any_chunking_gives_the_same_frames(items: list[bytes], sizes: list[int]) -> None:
    wire = b"".join(encode_frame(p) for p in items)
    assert decode(chunked(wire, sizes), eof=True) == [*frames(*items), ConnectionClosed()]


@given(payloads)
def test_round_trip(payload: bytes) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(encode_frame(payload))
    assert decoder.next_event() == Frame(payload=payload)
    assert decoder.next_event() is NEED_DATA


# -- the cap -------------------------------------------------------------------


@pytest.mark.parametrize("max_size", [0, 1, 7, 1000])
def test_decode_cap_is_inclusive(max_size: int) -> None:
    payload = b"x" * max_size
    assert decode(SPLITS["bytewise"](encode_frame(payload)), max_size=max_size) == frames(payload)


@pytest.mark.parametrize("max_size", [0, 1, 7, 1000])
def test_over_the_cap_fails_on_the_fourth_length_octet(max_size: int) -> None:
    header = (max_size + 1).to_bytes(4, "big")
    decoder = FrameDecoder(max_size=max_size)
    for octet in header[:3]:
        decoder.receive_data(bytes([octet]))
        assert decoder.next_event() is NEED_DATA
    decoder.receive_data(header[3:])
    assert decoder.read_size_hint == 0  # never read toward it
    with pytest.raises(RemoteProtocolError, match=f"frame of {max_size + 1} octets; the maximum is {max_size}"):
        decoder.next_event()


def test_default_cap() -> None:
    assert decode([encode_frame(bytes(DEFAULT_MAX_FRAME_SIZE))]) == frames(bytes(DEFAULT_MAX_FRAME_SIZE))
    with pytest.raises(RemoteProtocolError, match="maximum is 10485760"):
        decode([(DEFAULT_MAX_FRAME_SIZE + 1).to_bytes(4, "big")])
    with pytest.raises(RemoteProtocolError, match="4294967295 octets"):
        decode([b"\xff\xff\xff\xff"])


def test_frames_before_the_oversized_one_are_delivered() -> None:
    decoder = FrameDecoder(max_size=3)
    decoder.receive_data(encode_frame(b"abc") + b"\x00\x00\x00\x04abcd")
    assert decoder.next_event() == Frame(payload=b"abc")
    with pytest.raises(RemoteProtocolError):
        decoder.next_event()


# -- EOF and errors ------------------------------------------------------------


def test_clean_eof_is_connection_closed_every_time() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"")
    assert decoder.next_event() == ConnectionClosed()
    assert decoder.next_event() == ConnectionClosed()
    assert decoder.read_size_hint == 0


@pytest.mark.parametrize("have", [1, 2, 3])
def test_eof_in_the_length(have: int) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"\x00\x00\x00\x01"[:have])
    assert decoder.next_event() is NEED_DATA
    assert decoder.read_size_hint == 4 - have
    decoder.receive_data(b"")
    assert decoder.read_size_hint == 0
    with pytest.raises(RemoteProtocolError, match=rf"frame's length \(received {have} of 4 octets, {4 - have} missing"):
        decoder.next_event()


@pytest.mark.parametrize("have", [0, 1, 9])
def test_eof_in_the_payload(have: int) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(encode_frame(b"x" * 10)[: 4 + have])
    assert decoder.next_event() is NEED_DATA
    assert decoder.read_size_hint == 10 - have
    decoder.receive_data(b"")
    expected = rf"frame of 10 octets \(received {have} of them, {10 - have} missing"
    with pytest.raises(RemoteProtocolError, match=expected):
        decoder.next_event()


def test_after_an_error_every_call_raises() -> None:
    decoder = FrameDecoder(max_size=1)
    decoder.receive_data(b"\x00\x00\x00\x02")
    with pytest.raises(RemoteProtocolError) as first:
        decoder.next_event()
    for _ in range(3):
        with pytest.raises(RemoteProtocolError, match="failed earlier") as again:
            decoder.next_event()
        assert first.value.message in again.value.message
    assert decoder.read_size_hint == 0


def test_data_after_eof_is_a_runtime_error() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"")
    decoder.receive_data(b"")  # a second EOF is harmless
    with pytest.raises(RuntimeError):
        decoder.receive_data(b"x")


@given(st.binary(max_size=300), st.integers(0, 64), st.lists(st.integers(1, 20), min_size=1, max_size=10))
def test_arbitrary_bytes_raise_only_remote_protocol_error(data: bytes, max_size: int, sizes: list[int]) -> None:
    decoder = FrameDecoder(max_size=max_size)
    try:
        for piece in [*chunked(data, sizes), b""]:
            decoder.receive_data(piece)
            for event in drain(decoder):
                assert isinstance(event, Frame | ConnectionClosed)
                if isinstance(event, Frame):
                    assert len(event.payload) <= max_size
    except RemoteProtocolError:
        with pytest.raises(RemoteProtocolError):
            decoder.next_event()


# -- read_size_hint ------------------------------------------------------------


@given(st.lists(payloads, min_size=1, max_size=10), st.integers(1, 64))
def test_reading_by_the_hint_never_reads_past_a_frame(items: list[bytes], cap: int) -> None:
    stream = b"".join(encode_frame(p) for p in items)
    boundaries = set()
    at = 0
    for p in items:
        at += 4 + len(p)
        boundaries.add(at)
    decoder = FrameDecoder()
    pos, got = 0, list[object]()
    while len(got) < len(items):
        hint = decoder.read_size_hint
        event = decoder.next_event()
        assert (hint > 0) == (event is NEED_DATA)
        if event is NEED_DATA:
            take = min(hint, cap)  # a reader may take less than the hint, never more
            decoder.receive_data(stream[pos : pos + take])
            pos += take
        else:
            got.append(event)
            assert pos in boundaries  # nothing of the next frame was read
    assert got == frames(*items)
    assert pos == len(stream)


# -- linear time ---------------------------------------------------------------


class CountingBuffer(bytearray):
    """A receive buffer that counts every octet copied out of it by slicing."""

    copied = 0

    def __getitem__(self, key):  # type: ignore[no-untyped-def]
        result = super().__getitem__(key)
        if isinstance(key, slice):
            self.copied += len(result)
        return result


def counting_decoder() -> tuple[FrameDecoder, CountingBuffer]:
    decoder = FrameDecoder()
    buffer = CountingBuffer()
    decoder._buffer.data = buffer  # white-box: measure the work, not the clock
    return decoder, buffer


def test_a_10_mib_frame_in_64_kib_pieces_is_copied_once() -> None:
    wire = encode_frame(bytes(DEFAULT_MAX_FRAME_SIZE))
    decoder, buffer = counting_decoder()
    events = []
    pieces = 0
    for at in range(0, len(wire), 65536):
        decoder.receive_data(wire[at : at + 65536])
        events += drain(decoder)
        pieces += 1
    assert events == frames(bytes(DEFAULT_MAX_FRAME_SIZE))
    assert buffer.copied <= DEFAULT_MAX_FRAME_SIZE + 4 * pieces


def test_a_call_does_not_touch_what_is_buffered() -> None:
    # Linear in total means constant per call: with 4 MiB waiting, a one-octet
    # call may look at the 4-octet header, never at the waiting payload.
    decoder, buffer = counting_decoder()
    decoder.receive_data(encode_frame(bytes(8 << 20))[: 4 + (4 << 20)])
    buffer.copied = 0
    for _ in range(20_000):
        decoder.receive_data(b"\x00")
        assert decoder.next_event() is NEED_DATA
    assert buffer.copied <= 20_000 * FRAME_HEADER_SIZE


def test_many_small_frames_in_one_chunk_are_linear() -> None:
    count = 100_000
    decoder, buffer = counting_decoder()
    decoder.receive_data(encode_frame(b"ab") * count)
    assert len(drain(decoder)) == count
    assert buffer.copied <= count * (FRAME_HEADER_SIZE + 2) * 2

"""What every fuzz target shares: the input layout, the decision bits, and how a broken invariant is raised.

The layout, read by :func:`split_input` and built by :func:`make_input`::

    data[0]   chunking: bits 0-6 seed the chunk sizes (0 = one byte at a time),
              bit 7 = the peer closes (EOF) after the last byte
    data[1:3] decisions: 16 bits, read in order, choosing what *we* send
    data[3:]  the peer's bytes

Also the example targets and commands the SOCKS and driver targets pick from.
The target modules import from here; ``fuzz/targets.py`` registers them all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from socks_sansio import Address, Command

__all__ = [
    "COMMANDS",
    "EXAMPLE_DOMAIN",
    "EXAMPLE_TARGETS",
    "HEADER_SIZE",
    "Check",
    "Decisions",
    "Finding",
    "chunk_sizes",
    "make_input",
    "pieces_of",
    "same",
    "split_input",
]

Check = Callable[[bytes, Sequence[int], bool, int], None]
"""A stream target with an explicit chunking: ``check(payload, sizes, eof, decisions)``."""

EXAMPLE_DOMAIN: Final = Address("example.com", 443)
EXAMPLE_TARGETS: Final = (
    EXAMPLE_DOMAIN,
    Address("192.0.2.7", 80),
    Address("2001:db8::1", 8080),
    Address("0.0.0.0", 0),
)
COMMANDS: Final = (Command.CONNECT, Command.BIND, Command.UDP_ASSOCIATE, Command.CONNECT)

HEADER_SIZE: Final = 3
"""Octets before the peer's bytes: one for chunking, two for decisions."""

class Finding(AssertionError):
    """An invariant broke: a bug in the library (or in this target)."""


def chunk_sizes(seed: int) -> list[int]:
    """Chunk sizes (cycled) derived from a 7-bit seed; seed 0 means one octet at a time."""
    if seed == 0:
        return [1]
    return [1 + seed % 7, 1 + (seed >> 2) * 3 % 23, 1 + (seed >> 4), 1 + (seed * 5) % 11]


def split_input(data: bytes) -> tuple[bytes, list[int], bool, int]:
    """``(payload, chunk sizes, eof, decisions)`` from a fuzzer's input (see the module docstring)."""
    head = data[:HEADER_SIZE].ljust(HEADER_SIZE, b"\0")
    return data[HEADER_SIZE:], chunk_sizes(head[0] & 0x7F), bool(head[0] & 0x80), head[1] | head[2] << 8


def make_input(payload: bytes, *, seed: int = 0, eof: bool = False, decisions: int = 0) -> bytes:
    """The fuzzer input that :func:`split_input` reads back as these values."""
    return bytes((seed & 0x7F | (0x80 if eof else 0), decisions & 0xFF, decisions >> 8 & 0xFF)) + payload


def pieces_of(payload: bytes, sizes: Sequence[int]) -> list[bytes]:
    """*payload* cut into pieces of the given sizes (cycled); never an empty piece."""
    pieces, at, i = [], 0, 0
    while at < len(payload):
        size = max(1, sizes[i % len(sizes)])
        pieces.append(payload[at : at + size])
        at += size
        i += 1
    return pieces


class Decisions:
    """Bits read in order: every choice a target makes comes from here (0 once exhausted)."""

    __slots__ = ("_bits", "_left")

    def __init__(self, bits: int, width: int = 16) -> None:
        self._bits = bits
        self._left = width

    def take(self, count: int) -> int:
        value = self._bits & ((1 << count) - 1)
        self._bits >>= count
        self._left -= count
        return value

    def flag(self) -> bool:
        return bool(self.take(1))


def same(kind: str, whole: object, chunked: object, names: tuple[str, str] = ("whole", "chunked")) -> None:
    """Raise a :class:`Finding` unless the two outcomes of the same input are equal."""
    if whole != chunked:
        what = "fed whole and in chunks" if names == ("whole", "chunked") else " and ".join(names)
        raise Finding(f"{kind}: {what} gave different outcomes:\n  {names[0] + ':':10}{whole!r}\n"
                      f"  {names[1] + ':':10}{chunked!r}")

"""Test helpers shared by every machine's tests.

``events_of`` drains a connection; ``feed`` pushes bytes in whole, one byte at
a time, or in given chunks; ``SPLITS`` names the three ways every reader is fed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from socks_sansio import NEED_DATA, PAUSED


class Conn(Protocol):
    def receive_data(self, data: bytes) -> None: ...
    def next_event(self) -> Any: ...
    def send(self, event: Any) -> bytes: ...
    @property
    def trailing_data(self) -> tuple[bytes, bool]: ...


def events_of(conn: Conn) -> list[Any]:
    """Every event ``next_event`` returns until it says NEED_DATA or PAUSED."""
    out = []
    for _ in range(1000):
        event = conn.next_event()
        if event is NEED_DATA or event is PAUSED:
            return out
        out.append(event)
    raise AssertionError("next_event never stopped")


def chunked(data: bytes, sizes: Iterable[int]) -> list[bytes]:
    """Cut *data* into pieces of the given sizes (cycled); the last piece takes the rest."""
    pieces, at = [], 0
    sizes = list(sizes) or [len(data) or 1]
    i = 0
    while at < len(data):
        size = max(1, sizes[i % len(sizes)])
        pieces.append(data[at : at + size])
        at += size
        i += 1
    return pieces


def feed(conn: Conn, pieces: Sequence[bytes]) -> list[Any]:
    """Feed *pieces* one by one, draining events after each; return all events."""
    out: list[Any] = []
    for piece in pieces:
        conn.receive_data(piece)
        out += events_of(conn)
    return out


SPLITS: dict[str, Callable[[bytes], list[bytes]]] = {
    "whole": lambda data: [data],
    "bytewise": lambda data: [data[i : i + 1] for i in range(len(data))],
    "halves": lambda data: [data[: len(data) // 2], data[len(data) // 2 :]] if len(data) > 1 else [data],
}
"""The ways every reader is fed: whole, one byte at a time, and in two halves."""


def exchange(sender: Conn, receiver: Conn, event: Any) -> bytes:
    """Send *event* from *sender* and assert *receiver* gets exactly it back; return the wire bytes."""
    wire = sender.send(event)
    receiver.receive_data(wire)
    got = events_of(receiver)
    assert got == [event], (event, got)
    return wire

"""Helpers for the forward-proxy reader tests: drive a reader, merge body events, compare outcomes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from socks_sansio import NEED_DATA, PAUSED, RemoteProtocolError
from socks_sansio._http_forward_events import ForwardBodyData
from socks_sansio._http_forward_reader import ForwardRequestReader, ForwardState
from socks_sansio._http_forward_response import ForwardResponseReader

Reader = ForwardRequestReader | ForwardResponseReader


def merged(events: Sequence[Any]) -> list[Any]:
    """*events* with runs of ForwardBodyData joined into one (how the data was cut is not an outcome)."""
    out: list[Any] = []
    for event in events:
        if isinstance(event, ForwardBodyData) and out and isinstance(out[-1], ForwardBodyData):
            out[-1] = ForwardBodyData(data=out[-1].data + event.data)
        else:
            out.append(event)
    return out


def drive(
    reader: Reader,
    pieces: Sequence[bytes],
    *,
    eof: bool = False,
    cycle: bool = True,
    next_method: Callable[[int], bytes] | None = None,
) -> tuple[list[Any], Any]:
    """Feed *pieces* (then EOF), draining after each; start the next cycle whenever DONE if *cycle*.

    Returns ``(merged events, outcome)``: the outcome is the final state, or
    ``("error", status of the reply hint)``. For a response reader *next_method*
    gives the method of the n-th next request (default GET).
    """
    events: list[Any] = []
    cycles = 0

    def drain() -> None:
        nonlocal cycles
        for _ in range(100_000):
            event = reader.next_event()
            if event is NEED_DATA:
                assert reader.read_size_hint > 0
                return
            if event is PAUSED:
                if cycle and reader.state is ForwardState.DONE:
                    cycles += 1
                    if isinstance(reader, ForwardResponseReader):
                        method = next_method(cycles) if next_method else b"GET"
                        reader.start_next_cycle(request_method=method)
                    else:
                        reader.start_next_cycle()
                    continue
                return
            events.append(event)
        raise AssertionError("next_event never stopped")

    try:
        for piece in pieces:
            reader.receive_data(piece)
            drain()
        if eof:
            reader.receive_data(b"")
            drain()
    except RemoteProtocolError as exc:
        hint = exc.reply_hint
        return merged(events), ("error", None if hint is None else hint.status_code)
    return merged(events), reader.state


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


SPLITS: dict[str, Callable[[bytes], list[bytes]]] = {
    "whole": lambda data: [data],
    "bytewise": bytewise,
    "halves": lambda data: [data[: len(data) // 2], data[len(data) // 2 :]] if len(data) > 1 else [data],
    "sevens": lambda data: [data[i : i + 7] for i in range(0, len(data), 7)],
}
"""Every reader test runs whole, one octet at a time, in halves and in 7-octet pieces."""

"""The receive buffer shared by every connection class.

Strategy: one ``bytearray`` that ``receive_data`` appends to, and readers that
look at it without copying and report how many bytes a whole message takes.
The connection then removes exactly those bytes with one ``del`` per event, so
the cost is linear in the bytes received however the input is fragmented.
"""

from __future__ import annotations

__all__ = ["ReceiveBuffer"]


class ReceiveBuffer:
    """Bytes received but not yet consumed, plus whether the peer closed."""

    __slots__ = ("data", "eof")

    def __init__(self) -> None:
        self.data = bytearray()
        self.eof = False

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append *data*; ``b""`` marks EOF.

        Raises:
            RuntimeError: non-empty data after EOF (a bug in the caller's I/O loop).
        """
        if not data:
            self.eof = True
            return
        if self.eof:
            raise RuntimeError("received data after EOF")
        self.data += data

    def consume(self, count: int) -> None:
        """Drop the first *count* bytes (one ``del`` per event)."""
        del self.data[:count]

    def __len__(self) -> int:
        return len(self.data)

    def snapshot(self) -> tuple[bytes, bool]:
        """Everything still buffered and whether EOF was seen."""
        return bytes(self.data), self.eof

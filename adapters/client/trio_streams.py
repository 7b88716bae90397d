"""trio streams that hand out first the octets already read past a reply.

A :class:`PrefixedStream` carries the bytes a peer sent in the same segment as
a reply the application already read (after :meth:`Tunnel.http_request`, or a
handshake run with ``handshake_over`` on a stream read too eagerly), so they
reach the application first.
"""

from __future__ import annotations

import trio

from ._common import logger

__all__ = ["HalfCloseablePrefixedStream", "PrefixedStream", "with_leftovers"]


class PrefixedStream(trio.abc.Stream):
    """A stream that returns *prefix* before reading from *transport_stream*.

    It carries the bytes a proxy sent in the same segment as its final reply
    (the first tunnel bytes), so they reach the application first. Sending,
    closing and everything else go straight to the transport.

    Args:
        transport_stream: the stream the handshake ran over.
        prefix: octets already received from it that belong to the tunnel.
        eof: whether the transport's end of file was already seen after *prefix*.
    """

    def __init__(self, transport_stream: trio.abc.Stream, prefix: bytes, *, eof: bool = False) -> None:
        self.transport_stream = transport_stream
        self._prefix = bytes(prefix)
        self._eof = eof
        self._closed = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send *data* on the transport stream."""
        if self._closed:
            raise trio.ClosedResourceError("the stream was closed")
        await self.transport_stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the transport stream can take data."""
        await self.transport_stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Return buffered prefix octets first (at most *max_bytes*), then read from the transport."""
        if self._closed:
            raise trio.ClosedResourceError("the stream was closed")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        if self._prefix:
            size = len(self._prefix) if max_bytes is None else max_bytes
            chunk, self._prefix = self._prefix[:size], self._prefix[size:]
            await trio.lowlevel.checkpoint()
            return chunk
        if self._eof:
            await trio.lowlevel.checkpoint()
            return b""
        return await self.transport_stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        """Drop the prefix and close the transport stream (and everything under it)."""
        self._closed = True
        self._prefix = b""
        await self.transport_stream.aclose()


class HalfCloseablePrefixedStream(PrefixedStream, trio.abc.HalfCloseableStream):
    """A :class:`PrefixedStream` over a half-closeable transport (a plain TCP stream).

    Only built when the transport has ``send_eof``: a :class:`trio.SSLStream`
    does not (TLS has no half-close), so a prefixed TLS stream is a plain
    :class:`PrefixedStream` and ``isinstance(s, trio.abc.HalfCloseableStream)``
    tells the truth.
    """

    transport_stream: trio.abc.HalfCloseableStream

    def __init__(self, transport_stream: trio.abc.HalfCloseableStream, prefix: bytes, *, eof: bool = False) -> None:
        super().__init__(transport_stream, prefix, eof=eof)

    async def send_eof(self) -> None:
        """Half-close: send EOF on the transport; receiving still works."""
        await self.transport_stream.send_eof()


def with_leftovers(stream: trio.abc.Stream, data: bytes, eof: bool) -> trio.abc.Stream:
    """*stream*, wrapped so that *data* (and *eof*) come out first, or as is when there is nothing."""
    if not data and not eof:
        return stream
    logger.debug("trio: %d octets arrived with the final reply; they are delivered first", len(data))
    if isinstance(stream, trio.abc.HalfCloseableStream):
        return HalfCloseablePrefixedStream(stream, data, eof=eof)
    return PrefixedStream(stream, data, eof=eof)

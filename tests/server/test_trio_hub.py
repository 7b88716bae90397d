"""The trio server's relay hub (:class:`~socks_sansio.adapters.server.trio_hub.RelayHub`) over real sockets.

Strategy. Each test opens real TCP connections on 127.0.0.1 (port 0): a
"client" pair and an "upstream" pair, whose server-side ends are the trio
streams a server would hand to the hub after the handshake; the test drives
the far ends. The session is a real :class:`ServerSession` (it counts the
bytes and charges byte limits), and the outcome is what the hub reports to
``on_end``. Covered: both directions with a buffer smaller than the writes
(so the hub holds what a socket could not take, and stops reading that
direction), half-close passed through, a reset, the idle time-out, a byte
rate limit's pause, the move to splice() after a threshold, and the hub's
cancellation ending every tunnel. Every wait is bounded by ``fail_after``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

trio = pytest.importorskip("trio")

from socks_sansio import Outcome, OutcomeKind, Rate, RateLimitConfig, ServerConfig, ServerSession, ServerStats  # noqa: E402
from socks_sansio.adapters.server.metrics import NullMetrics  # noqa: E402
from socks_sansio.adapters.server.trio_hub import RelayHub  # noqa: E402

pytestmark = pytest.mark.skipif(not RelayHub.supported(), reason="the hub needs select.epoll (Linux)")

BOUND = 20.0


async def _pair(listener: trio.SocketListener) -> tuple[trio.SocketStream, trio.SocketStream]:
    """A connected TCP pair on loopback: (the end the hub takes, the far end the test drives)."""
    host, port = listener.socket.getsockname()[:2]
    far = await trio.open_tcp_stream(host, port)
    near = await listener.accept()
    return near, far


class Ended:
    """What the hub reported, per session."""

    def __init__(self) -> None:
        self.outcomes: dict[int, Outcome] = {}
        self.event = trio.Event()

    def __call__(self, session: ServerSession, outcome: Outcome) -> None:
        assert id(session) not in self.outcomes, "reported twice"
        self.outcomes[id(session)] = outcome
        self.event.set()

    async def wait(self, session: ServerSession) -> Outcome:
        with trio.fail_after(BOUND):
            while id(session) not in self.outcomes:
                self.event = trio.Event()
                await self.event.wait()
        return self.outcomes[id(session)]


class CountingMetrics(NullMetrics):
    """Counts the byte rate limit's pauses (``rate_limited("bytes")``: a chunk the session said to pause after)."""

    def __init__(self) -> None:
        self.pauses = 0

    def rate_limited(self, kind: str) -> None:
        self.pauses += kind == "bytes"


def _session(config: ServerConfig, metrics: NullMetrics | None = None) -> ServerSession:
    return ServerSession(config, ("127.0.0.1", 40000), stats=ServerStats(), limiter=config.rate_limiter(),
                         metrics=metrics or NullMetrics())  # fmt: skip


async def _read_all(stream: trio.SocketStream, digest: Callable[[bytes], object]) -> int:
    total = 0
    while data := await stream.receive_some(65536):
        digest(data)
        total += len(data)
    return total


async def _write(stream: trio.SocketStream, payload: bytes, *, eof: bool = True) -> None:
    view = memoryview(payload)
    for start in range(0, len(view), 1 << 20):
        await stream.send_all(view[start : start + (1 << 20)])
    if eof:
        await stream.send_eof()


async def _tunnel(
    hub: RelayHub, listener: trio.SocketListener, ended: Ended, config: ServerConfig, *, splice: bool = False,
    metrics: NullMetrics | None = None,
) -> tuple[ServerSession, trio.SocketStream, trio.SocketStream]:
    """A tunnel handed to *hub*: (its session, the client's far end, the target's far end)."""
    client, client_far = await _pair(listener)
    upstream, target_far = await _pair(listener)
    session = _session(config, metrics)
    assert hub.add(session, client, upstream, on_end=ended, splice=splice)
    return session, client_far, target_far


def trio_test(test: Callable[[trio.SocketListener], Awaitable[None]]) -> Callable[[], None]:
    """*test* run by ``trio.run`` with a fresh listener on 127.0.0.1 (port 0), closed afterwards."""

    def run() -> None:
        async def main() -> None:
            (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
            async with listener:
                await test(listener)

        trio.run(main)

    run.__name__, run.__doc__ = test.__name__, test.__doc__  # not functools.wraps: pytest would see its argument
    return run


@contextlib.asynccontextmanager
async def running(hub: RelayHub) -> AsyncIterator[trio.CancelScope]:
    """*hub* relaying in a task until the block ends (or the scope it yields is cancelled)."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.run)
        yield nursery.cancel_scope
        nursery.cancel_scope.cancel()


async def _both_ways(hub: RelayHub, listener: trio.SocketListener, size: int, *, splice: bool = False) -> None:
    ended = Ended()
    config = ServerConfig()
    session, client_far, target_far = await _tunnel(hub, listener, ended, config, splice=splice)
    up, down = os.urandom(size), os.urandom(size // 2)
    got_up, got_down = hashlib.sha256(), hashlib.sha256()
    counts: dict[str, int] = {}

    async def at_target() -> None:
        counts["up"] = await _read_all(target_far, got_up.update)  # the client's EOF arrives after its bytes

    async def at_client() -> None:
        counts["down"] = await _read_all(client_far, got_down.update)

    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(at_target)
            nursery.start_soon(at_client)
            nursery.start_soon(_write, client_far, up)
            nursery.start_soon(_write, target_far, down)
    assert (counts["up"], got_up.digest()) == (len(up), hashlib.sha256(up).digest())
    assert (counts["down"], got_down.digest()) == (len(down), hashlib.sha256(down).digest())
    assert await ended.wait(session) == Outcome(OutcomeKind.OK)
    assert (session.up, session.down) == (len(up), len(down))
    assert len(hub) == 0
    await client_far.aclose()
    await target_far.aclose()


@trio_test
async def test_relays_both_ways_through_a_small_buffer_and_passes_half_close_on(
    listener: trio.SocketListener,
) -> None:
    hub = RelayHub(4096, 60.0)  # writes of 1 MiB: the sockets fill, the hub holds what they could not take
    async with running(hub):
        await _both_ways(hub, listener, 6 << 20)


@trio_test
async def test_moves_a_tunnel_to_splice_after_the_threshold_without_losing_a_byte(
    listener: trio.SocketListener,
) -> None:
    hub = RelayHub(65536, 60.0, splice_after=256 << 10)
    async with running(hub):
        await _both_ways(hub, listener, 8 << 20, splice=True)


@trio_test
async def test_one_direction_ends_the_other_goes_on(listener: trio.SocketListener) -> None:
    hub = RelayHub(65536, 60.0)
    ended = Ended()
    async with running(hub):
        session, client_far, target_far = await _tunnel(hub, listener, ended, ServerConfig())
        with trio.fail_after(BOUND):
            await client_far.send_all(b"request")
            await client_far.send_eof()
            assert await target_far.receive_some(100) == b"request"
            assert await target_far.receive_some(100) == b""  # the half-close came through
            for _ in range(3):  # the target still answers, after the client's EOF
                await target_far.send_all(b"more")
                assert await client_far.receive_some(100) == b"more"
            await target_far.send_eof()
            assert await client_far.receive_some(100) == b""
        assert await ended.wait(session) == Outcome(OutcomeKind.OK)
        await client_far.aclose()
        await target_far.aclose()


@trio_test
async def test_a_reset_ends_the_tunnel_with_a_relay_error(listener: trio.SocketListener) -> None:
    hub = RelayHub(65536, 60.0)
    ended = Ended()
    async with running(hub):
        session, client_far, target_far = await _tunnel(hub, listener, ended, ServerConfig())
        target_far.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await target_far.aclose()  # an RST, not a FIN
        outcome = await ended.wait(session)
        assert outcome.kind is OutcomeKind.RELAY_ERROR
        assert outcome.detail == "ConnectionResetError"
        with trio.fail_after(BOUND):  # the hub closed the client's socket
            assert await client_far.receive_some(100) == b""
        await client_far.aclose()


@trio_test
async def test_a_silent_tunnel_ends_at_the_idle_timeout(listener: trio.SocketListener) -> None:
    hub = RelayHub(65536, 0.3)
    ended = Ended()
    async with running(hub):
        quiet, quiet_client, quiet_target = await _tunnel(hub, listener, ended, ServerConfig())
        busy, busy_client, busy_target = await _tunnel(hub, listener, ended, ServerConfig())
        with trio.fail_after(BOUND):
            while id(quiet) not in ended.outcomes:  # traffic on one tunnel does not keep the other alive
                await busy_client.send_all(b"x")
                assert await busy_target.receive_some(10) == b"x"
                await trio.sleep(0.05)
        assert ended.outcomes[id(quiet)] == Outcome(OutcomeKind.IDLE_TIMEOUT)
        assert id(busy) not in ended.outcomes
        assert len(hub) == 1
        assert await ended.wait(busy) == Outcome(OutcomeKind.IDLE_TIMEOUT)  # once it is quiet too
        for stream in (quiet_client, quiet_target, busy_client, busy_target):
            await stream.aclose()


@trio_test
async def test_a_byte_rate_limit_pauses_reading_and_every_byte_still_arrives(listener: trio.SocketListener) -> None:
    hub = RelayHub(16384, 60.0)
    ended = Ended()
    rate = 256 << 10  # a second's burst, then 256 KiB/s
    config = ServerConfig(rate_limits=RateLimitConfig(bytes_per_client=Rate(rate, rate)))
    payload = os.urandom(rate + (rate // 2))  # the burst, then half a second of limited rate
    metrics = CountingMetrics()
    async with running(hub):
        session, client_far, target_far = await _tunnel(hub, listener, ended, config, metrics=metrics)
        got = hashlib.sha256()
        with trio.fail_after(BOUND):
            async with trio.open_nursery() as transfer:
                transfer.start_soon(_write, client_far, payload)
                assert await _read_all(target_far, got.update) == len(payload)
        assert got.digest() == hashlib.sha256(payload).digest()
        # Past the burst the session said to pause (the hub then stops reading that direction until its timer
        # fires), and the hub resumed: every byte arrived. No clock is asserted here: speeds are bench/'s.
        assert metrics.pauses >= 1
        assert session.up == len(payload)
        await target_far.send_eof()
        assert await ended.wait(session) == Outcome(OutcomeKind.OK)
        await client_far.aclose()
        await target_far.aclose()


@trio_test
async def test_cancelling_the_hub_ends_every_tunnel_and_closes_its_sockets(listener: trio.SocketListener) -> None:
    hub = RelayHub(65536, 60.0)
    ended = Ended()
    async with running(hub) as stop:
        tunnels = [await _tunnel(hub, listener, ended, ServerConfig()) for _ in range(3)]
        assert len(hub) == 3
        stop.cancel()
    assert [ended.outcomes[id(session)] for session, _, _ in tunnels] == [Outcome(OutcomeKind.CANCELLED)] * 3
    client, upstream = await _pair(listener)
    assert not hub.add(_session(ServerConfig()), client, upstream, on_end=ended)  # a stopped hub takes nothing
    await client.aclose()
    await upstream.aclose()
    for _, client_far, target_far in tunnels:
        with trio.fail_after(BOUND):
            assert await client_far.receive_some(100) == b""
            assert await target_far.receive_some(100) == b""
        await client_far.aclose()
        await target_far.aclose()

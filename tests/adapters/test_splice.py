"""SpliceRelay (adapters/_splice.py) on real loopback sockets.

Each tunnel is two TCP pairs on 127.0.0.1 (port 0): the client application's
socket <-> the relay's client socket, and the relay's target socket <-> the
target application's socket. The applications use the same event loop
(``loop.sock_*``), so every test is one coroutine run by ``asyncio.run`` and
bounded by BOUND. Descriptor checks compare ``/proc/self/fd`` before and after.
Linux only (the Unix-only modules are imported where used, so collection works elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import pytest

from socks_sansio.adapters.server.splice import PipePool, SpliceRelay
from tests.adapters.servers import TLSFiles

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="os.splice is Linux-only")

BOUND = 60.0
MIB = 1 << 20


def aio(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test with ``asyncio.run``, bounded by BOUND."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), BOUND))

    return wrapper


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """Two connected non-blocking TCP sockets on loopback."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        a = socket.create_connection(listener.getsockname(), timeout=5)
        b, _ = listener.accept()
    for sock in (a, b):
        sock.setblocking(False)
    return a, b


@dataclass
class Tunnel:
    client: socket.socket  # the client application's end
    relay_client: socket.socket  # the relay's socket towards the client
    relay_target: socket.socket  # the relay's socket towards the target
    target: socket.socket  # the target application's end
    relay: SpliceRelay
    done: asyncio.Future[None]
    counts: list[int]
    last: list[float]


@contextlib.asynccontextmanager
async def tunnel(throttle: Callable[[int, int], float] | None = None) -> AsyncIterator[Tunnel]:
    loop = asyncio.get_running_loop()
    with contextlib.ExitStack() as stack:
        client, relay_client = (stack.enter_context(s) for s in tcp_pair())
        relay_target, target = (stack.enter_context(s) for s in tcp_pair())
        done: asyncio.Future[None] = loop.create_future()
        counts, last = [0, 0], [0.0]
        relay = SpliceRelay(loop, relay_client, relay_target, counts=counts, last=last, done=done, throttle=throttle)
        stack.callback(relay.close)  # runs before the sockets close
        yield Tunnel(client, relay_client, relay_target, target, relay, done, counts, last)


async def send_then_eof(sock: socket.socket, data: bytes) -> None:
    await asyncio.get_running_loop().sock_sendall(sock, data)
    sock.shutdown(socket.SHUT_WR)


async def read_to_eof(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    out = bytearray()
    while chunk := await loop.sock_recv(sock, 1 << 16):
        out += chunk
    return bytes(out)


async def read_exactly(sock: socket.socket, n: int) -> bytes:
    loop = asyncio.get_running_loop()
    out = bytearray()
    while len(out) < n:
        chunk = await loop.sock_recv(sock, n - len(out))
        assert chunk, f"EOF after {len(out)} of {n} bytes"
        out += chunk
    return bytes(out)


def queued(sock: socket.socket) -> int:
    """Bytes waiting in *sock*'s receive queue (SIOCINQ)."""
    import fcntl
    import termios

    return int.from_bytes(fcntl.ioctl(sock, termios.FIONREAD, b"\0\0\0\0"), sys.byteorder)


def reset(sock: socket.socket) -> None:
    """Close *sock* with an RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    sock.close()


# ------------------------------------------------------------------------- data


@aio
async def test_several_mib_both_ways_arrive_intact() -> None:
    up, down = os.urandom(6 * MIB + 123), os.urandom(5 * MIB + 7)
    async with tunnel() as t:
        t.relay.start()
        _, _, at_target, at_client = await asyncio.gather(
            send_then_eof(t.client, up), send_then_eof(t.target, down), read_to_eof(t.target), read_to_eof(t.client)
        )
        await t.done
        assert hashlib.sha256(at_target).digest() == hashlib.sha256(up).digest()
        assert hashlib.sha256(at_client).digest() == hashlib.sha256(down).digest()
        assert t.counts == [len(up), len(down)]


@aio
async def test_early_bytes_go_first_even_when_more_is_already_waiting() -> None:
    early_up = os.urandom(3 * MIB)  # more than a socket buffer: written in several goes
    async with tunnel() as t:
        await asyncio.get_running_loop().sock_sendall(t.client, b"then-the-client")  # waiting before start
        await send_then_eof(t.target, b"then-the-target")
        t.relay.start(early_up=early_up, early_down=b"early-down:")
        at_target = await read_exactly(t.target, len(early_up) + 15)
        assert at_target == early_up + b"then-the-client"
        assert await read_to_eof(t.client) == b"early-down:then-the-target"
        assert t.counts == [len(early_up) + 15, 26]
        assert not t.done.done()  # the client has not sent EOF
        t.client.shutdown(socket.SHUT_WR)
        assert await read_to_eof(t.target) == b""
        await t.done


@aio
async def test_client_eof_before_start_is_passed_on_after_the_early_bytes() -> None:
    async with tunnel() as t:
        t.relay.start(early_up=b"last words", client_eof=True)
        assert await read_to_eof(t.target) == b"last words"
        await send_then_eof(t.target, b"answer after the client's EOF")
        assert await read_to_eof(t.client) == b"answer after the client's EOF"
        await t.done
        assert t.counts == [10, 29]


# -------------------------------------------------------------------- half-close


@pytest.mark.parametrize("first", ["client", "target"])
@aio
async def test_half_close_passes_through_and_the_other_direction_goes_on(first: str) -> None:
    async with tunnel() as t:
        closer, other = (t.client, t.target) if first == "client" else (t.target, t.client)
        t.relay.start()
        await send_then_eof(closer, b"request")
        assert await read_to_eof(other) == b"request"  # EOF arrived, after the data
        assert not t.done.done()
        payload = os.urandom(MIB)
        await asyncio.get_running_loop().sock_sendall(other, payload)  # the half-closed side still receives
        assert await read_exactly(closer, len(payload)) == payload
        assert not t.done.done()
        other.shutdown(socket.SHUT_WR)
        assert await read_to_eof(closer) == b""
        await t.done


# ------------------------------------------------------------------------ errors


@pytest.mark.parametrize("side", ["client", "target"])
@aio
async def test_a_reset_ends_the_relay_with_the_error(side: str) -> None:
    async with tunnel() as t:
        t.relay.start()
        await asyncio.get_running_loop().sock_sendall(t.client, b"hello")
        assert await read_exactly(t.target, 5) == b"hello"
        reset(t.client if side == "client" else t.target)
        with pytest.raises(ConnectionResetError):
            await t.done


@aio
async def test_writing_to_a_reset_peer_ends_the_relay() -> None:
    async with tunnel() as t:
        t.relay.start()
        t.client.shutdown(socket.SHUT_WR)
        assert await read_to_eof(t.target) == b""  # the relay no longer reads the client
        reset(t.client)
        sender = asyncio.ensure_future(asyncio.get_running_loop().sock_sendall(t.target, bytes(64 * MIB)))
        try:
            with pytest.raises((BrokenPipeError, ConnectionResetError)):  # depending on when the RST is seen
                await t.done
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)


@aio
async def test_a_failing_throttle_ends_the_relay_with_its_exception() -> None:
    def throttle(direction: int, nbytes: int) -> float:
        raise ZeroDivisionError("rate limiter bug")

    async with tunnel(throttle) as t:
        t.relay.start()
        await asyncio.get_running_loop().sock_sendall(t.client, b"x")
        with pytest.raises(ZeroDivisionError, match="rate limiter bug"):
            await t.done


def test_misuse_is_refused_with_a_clear_message() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        a, b = tcp_pair()
        with a, b, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            before = open_fds()
            with pytest.raises(ValueError, match=r"plain TCP socket .* for target_sock"):
                SpliceRelay(loop, a, udp, counts=[0, 0], last=[0.0], done=done)
            with pytest.raises(ValueError, match="counts needs two items"):
                SpliceRelay(loop, a, b, counts=[0], last=[0.0], done=done)
            assert open_fds() == before
            relay = SpliceRelay(loop, a, b, counts=[0, 0], last=[0.0], done=done)
            relay.start()
            with pytest.raises(RuntimeError, match="once"):
                relay.start()
            relay.close()
            assert open_fds() == before

    asyncio.run(asyncio.wait_for(main(), BOUND))


# ------------------------------------------------------------- idle and throttle


@aio
async def test_deliveries_update_the_activity_timestamp() -> None:
    async with tunnel() as t:
        t.relay.start()
        before = time.monotonic()
        await asyncio.get_running_loop().sock_sendall(t.target, b"ping")
        assert await read_exactly(t.client, 4) == b"ping"
        assert before <= t.last[0] <= time.monotonic()


@aio
async def test_throttle_sees_every_delivered_byte() -> None:
    calls: list[tuple[int, int]] = []

    def throttle(direction: int, nbytes: int) -> float:
        calls.append((direction, nbytes))
        return 0.0

    up, down = os.urandom(2 * MIB), os.urandom(MIB)
    async with tunnel(throttle) as t:
        t.relay.start(early_up=b"early")
        await asyncio.gather(send_then_eof(t.client, up), send_then_eof(t.target, down),
                             read_to_eof(t.target), read_to_eof(t.client))
        await t.done
    assert sum(n for d, n in calls if d == 0) == len(up) + 5
    assert sum(n for d, n in calls if d == 1) == len(down)
    assert all(n > 0 for _, n in calls)


@aio
async def test_a_positive_throttle_delay_pauses_reading_that_direction_only() -> None:
    def throttle(direction: int, nbytes: int) -> float:
        return 3600.0 if direction == 0 else 0.0

    loop = asyncio.get_running_loop()
    async with tunnel(throttle) as t:
        t.relay.start()
        await loop.sock_sendall(t.client, b"first")
        assert await read_exactly(t.target, 5) == b"first"
        await loop.sock_sendall(t.client, b"second")
        for _ in range(1000):  # until the bytes wait in the relay's receive queue
            if queued(t.relay_client) == 6:
                break
            await asyncio.sleep(0.005)
        await loop.sock_sendall(t.target, b"down")  # the other direction is not paused
        assert await read_exactly(t.client, 4) == b"down"
        await asyncio.sleep(0.05)
        assert queued(t.relay_client) == 6  # nobody read them
        assert t.counts == [5, 4]


@aio
async def test_reading_resumes_after_the_throttle_delay() -> None:
    delays = [0.05, 0.05]

    def throttle(direction: int, nbytes: int) -> float:
        return delays.pop() if delays else 0.0

    payload = os.urandom(MIB)
    async with tunnel(throttle) as t:
        t.relay.start()
        _, received = await asyncio.gather(send_then_eof(t.client, payload), read_to_eof(t.target))
        assert received == payload
        assert not delays


# --------------------------------------------------------------- descriptors


@pytest.mark.parametrize("shared_pool", [False, True])
@aio
async def test_close_leaves_no_descriptor_open(shared_pool: bool) -> None:
    loop = asyncio.get_running_loop()
    a, b = tcp_pair()
    c, d = tcp_pair()
    pool = PipePool() if shared_pool else None
    with a, b, c, d:
        before = open_fds()
        done: asyncio.Future[None] = loop.create_future()
        relay = SpliceRelay(loop, b, c, counts=[0, 0], last=[0.0], done=done, pipes=pool)
        assert len(open_fds() - before) == 2  # the dups; no pipe until bytes arrive
        relay.start()
        await loop.sock_sendall(a, b"through")
        assert await read_exactly(d, 7) == b"through"
        # An idle tunnel holds no pipe: back in the shared pool, or closed.
        assert len(open_fds() - before) == (4 if shared_pool else 2)
        assert pool is None or len(pool.idle) == 1
        relay.close()
        relay.close()
        assert open_fds() == before  # the pool's last user closed: so did its idle pipes
        assert pool is None or (pool.idle, pool.users) == ([], 0)
        await loop.sock_sendall(b, b"the caller's socket still works")
        assert await read_exactly(a, 31) == b"the caller's socket still works"


def test_the_pool_keeps_at_most_keep_empty_pipes() -> None:
    before = open_fds()
    pool = PipePool(size=1 << 16, keep=1)
    pipes = [pool.take() for _ in range(3)]
    assert len(open_fds() - before) == 6
    assert all(capacity >= 1 << 16 for _, _, capacity in pipes)
    pool.give(pipes[0], empty=False)  # it may hold bytes: never reused
    pool.give(pipes[1])
    pool.give(pipes[2])
    assert pool.idle == [pipes[1]]
    assert pool.take() == pipes[1]
    pool.give(pipes[1])
    pool.close()
    assert open_fds() == before


@aio
async def test_a_shared_pool_keeps_pipes_while_a_relay_uses_it() -> None:
    loop = asyncio.get_running_loop()
    pool = PipePool()
    with contextlib.ExitStack() as stack:
        a, b, c, d, e, f, g, h = (stack.enter_context(s) for _ in range(4) for s in tcp_pair())
        before = open_fds()
        dones: list[asyncio.Future[None]] = [loop.create_future(), loop.create_future()]
        relays = [
            SpliceRelay(loop, b, c, counts=[0, 0], last=[0.0], done=dones[0], pipes=pool),
            SpliceRelay(loop, f, g, counts=[0, 0], last=[0.0], done=dones[1], pipes=pool),
        ]
        assert pool.users == 2
        for relay in relays:
            relay.start()
        await loop.sock_sendall(a, b"one")
        assert await read_exactly(d, 3) == b"one"
        relays[0].close()
        assert (pool.users, len(pool.idle)) == (1, 1), "the other relay may reuse the pipe"
        await loop.sock_sendall(e, b"two")
        assert await read_exactly(h, 3) == b"two"
        assert len(open_fds() - before) == 2 + 2  # the second relay's dups and the reused pipe
        dones[1].cancel()
        await asyncio.sleep(0)  # the relay closes itself on the next iteration
        assert (pool.users, pool.idle, open_fds()) == (0, [], before)


@aio
async def test_the_relay_closes_itself_once_done_completes() -> None:
    loop = asyncio.get_running_loop()
    a, b = tcp_pair()
    c, d = tcp_pair()
    with a, b, c, d:
        before = open_fds()
        done: asyncio.Future[None] = loop.create_future()
        SpliceRelay(loop, b, c, counts=[0, 0], last=[0.0], done=done).start()
        done.cancel()  # e.g. the owner's idle timeout
        await asyncio.sleep(0)  # done callbacks run on the next loop iteration
        assert open_fds() == before
        await loop.sock_sendall(a, b"not relayed")
        await asyncio.sleep(0.05)
        assert queued(b) == 11


@pytest.mark.parametrize("free", [1, 3])
def test_running_out_of_descriptors_leaves_nothing_open(free: int) -> None:
    """With 1 free descriptor the second dup fails; with 3 the pipe does, when the first bytes arrive."""
    import resource

    async def main() -> None:
        loop = asyncio.get_running_loop()
        a, b = tcp_pair()
        c, d = tcp_pair()
        with a, b, c, d, contextlib.ExitStack() as fillers:
            await loop.sock_sendall(a, b"x")
            # Fill the holes below the highest descriptor, so that the limit leaves exactly *free* numbers.
            top = max(int(n) for n in open_fds())
            while (fd := os.open(os.devnull, os.O_RDONLY)) <= top:
                fillers.callback(os.close, fd)
            os.close(fd)  # the lowest free number: everything below it is open
            before = open_fds()
            done: asyncio.Future[None] = loop.create_future()
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (fd + free, hard))
            try:
                if free == 1:
                    with pytest.raises(OSError, match="Too many open files"):
                        SpliceRelay(loop, b, c, counts=[0, 0], last=[0.0], done=done)
                else:
                    SpliceRelay(loop, b, c, counts=[0, 0], last=[0.0], done=done).start()
                    with pytest.raises(OSError, match="Too many open files"):
                        await done
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            await asyncio.sleep(0)  # the relay closes itself once done completed
            assert open_fds() == before

    asyncio.run(asyncio.wait_for(main(), BOUND))


# --------------------------------------------------------------- availability


def test_available_only_for_plain_tcp_sockets() -> None:
    files = TLSFiles()
    with contextlib.ExitStack() as stack:
        tcp = stack.enter_context(socket.socket())
        udp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        unix = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        tls = stack.enter_context(
            files.client_context().wrap_socket(socket.socket(), server_hostname="localhost",
                                               do_handshake_on_connect=False)
        )
        assert SpliceRelay.available(tcp)
        assert not SpliceRelay.available(udp)
        assert not SpliceRelay.available(unix)
        assert not SpliceRelay.available(tls)
        assert not SpliceRelay.available(tcp.fileno())
        assert not SpliceRelay.available(None)


@aio
async def test_socket_of_refuses_tls_transports_and_full_write_buffers() -> None:
    files = TLSFiles()
    writers: list[asyncio.StreamWriter] = []

    async def keep(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    plain = await asyncio.start_server(keep, "127.0.0.1", 0)
    tls = await asyncio.start_server(keep, "127.0.0.1", 0, ssl=files.server_context())
    try:
        _, plain_writer = await asyncio.open_connection(*plain.sockets[0].getsockname())
        _, tls_writer = await asyncio.open_connection(*tls.sockets[0].getsockname(), ssl=files.client_context(),
                                                      server_hostname="localhost")
        writers += (plain_writer, tls_writer)
        assert tls_writer.get_extra_info("socket") is not None  # the raw TCP socket: available() alone says yes
        assert SpliceRelay.socket_of(tls_writer.transport) is None
        assert SpliceRelay.socket_of(plain_writer.transport) is plain_writer.get_extra_info("socket")
        for _ in range(256):  # the server never reads: the transport's buffer fills
            plain_writer.write(bytes(MIB))
            if plain_writer.transport.get_write_buffer_size():
                break
        assert SpliceRelay.socket_of(plain_writer.transport) is None
    finally:
        for writer in writers:
            writer.transport.abort()
        plain.close()
        tls.close()
        await plain.wait_closed()
        await tls.wait_closed()


# ------------------------------------------------------------------ with streams


@aio
async def test_taking_over_stream_transports_as_the_server_will() -> None:
    """The ownership story: pause the transports, relay on dups, then close relay and transports."""
    loop = asyncio.get_running_loop()
    before = open_fds()
    up, down = os.urandom(2 * MIB), os.urandom(2 * MIB)
    target_got: asyncio.Future[bytes] = loop.create_future()

    async def target_app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(down)
        writer.write_eof()
        target_got.set_result(await reader.read())
        writer.close()

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readexactly(5)  # the "handshake"
        up_reader, up_writer = await asyncio.open_connection(*target.sockets[0].getsockname())
        try:
            up_writer.write(head)
            await up_writer.drain()
            sockets = SpliceRelay.socket_of(writer.transport), SpliceRelay.socket_of(up_writer.transport)
            assert sockets[0] is not None and sockets[1] is not None
            for transport in (writer.transport, up_writer.transport):
                cast(asyncio.Transport, transport).pause_reading()
            # What the readers hold already goes first (the server's _take_buffered does this).
            early_up, early_down = bytes(reader._buffer), bytes(up_reader._buffer)  # type: ignore[attr-defined]
            done: asyncio.Future[None] = loop.create_future()
            relay = SpliceRelay(loop, sockets[0], sockets[1], counts=[5, 0], last=[0.0], done=done)
            try:
                relay.start(early_up, early_down, client_eof=reader.at_eof())
                await done
            finally:
                relay.close()
        finally:
            up_writer.close()
            writer.close()

    target = await asyncio.start_server(target_app, "127.0.0.1", 0)
    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        writer.write(b"HELLO" + up)
        writer.write_eof()
        assert hashlib.sha256(await reader.read()).digest() == hashlib.sha256(down).digest()
        assert hashlib.sha256(await target_got).digest() == hashlib.sha256(b"HELLO" + up).digest()
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        target.close()
        await server.wait_closed()
        await target.wait_closed()
    await asyncio.sleep(0.05)  # transports close their sockets on the next iterations
    assert open_fds() == before

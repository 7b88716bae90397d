"""Pools of prepared proxy connections (``ProxyPool``) on every backend, over real sockets.

Each scenario is written once against a small async facade (``Pool``) and run
on the three backends: the sync pool's blocking calls run inside ``asyncio.run``
(nothing else runs in that loop), the asyncio and trio pools in their own loops.
A scripted SOCKS5 proxy logs what it receives on which connection, so a test
can tell a hit (only a request on a connection greeted before the call) from
a miss (a new connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import trio

from socks_sansio import (
    ConnectionInfo,
    IdleConnections,
    LocalProtocolError,
    PoolStats,
    ProxyAuthError,
    ProxyConnectionError,
    ProxyURL,
)
from socks_sansio.adapters import asyncio as aio_adapter
from socks_sansio.adapters import sync as sync_adapter
from socks_sansio.adapters import trio as trio_adapter

from ..peer_servers import DANTE_PASSWORD, DANTE_USER, dante_server, microsocks_server
from .servers import SOCKS5_OK, TIMEOUT, ThreadedServer, echo, echo_server, recv_exactly, serve

IO = 5.0
PAYLOAD = b"through the pool\n"

# ----------------------------------------------------------------- the facade


class Pool:
    """What a scenario needs from a pool, the same on every backend."""

    stats: PoolStats

    async def fill(self) -> None:
        raise NotImplementedError

    async def echo(self, address: tuple[str, int]) -> tuple[bytes, ConnectionInfo]:
        """Open a tunnel to *address*, send PAYLOAD, read its echo (or up to EOF); close."""
        raise NotImplementedError

    async def sleep(self, seconds: float) -> None:
        raise NotImplementedError


class SyncPool(Pool):
    def __init__(self, pool: sync_adapter.ProxyPool) -> None:
        self.pool, self.stats = pool, pool.stats

    async def fill(self) -> None:
        self.pool.fill()

    async def echo(self, address: tuple[str, int]) -> tuple[bytes, ConnectionInfo]:
        with self.pool.open_tunnel(*address, timeout=IO) as tunnel:
            tunnel.socket.settimeout(IO)
            tunnel.sendall(PAYLOAD)
            reply = b""
            while len(reply) < len(PAYLOAD) and (chunk := tunnel.recv()):
                reply += chunk
            return reply, tunnel.info

    async def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class AsyncioPool(Pool):
    def __init__(self, pool: aio_adapter.ProxyPool) -> None:
        self.pool, self.stats = pool, pool.stats

    async def fill(self) -> None:
        await self.pool.fill()

    async def echo(self, address: tuple[str, int]) -> tuple[bytes, ConnectionInfo]:
        async with await self.pool.open_tunnel(*address, timeout=IO) as tunnel:
            await tunnel.send_all(PAYLOAD)
            return await asyncio.wait_for(tunnel.reader.readexactly(len(PAYLOAD)), IO), tunnel.info

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class TrioPool(Pool):
    def __init__(self, pool: trio_adapter.ProxyPool) -> None:
        self.pool, self.stats = pool, pool.stats

    async def fill(self) -> None:
        await self.pool.fill()

    async def echo(self, address: tuple[str, int]) -> tuple[bytes, ConnectionInfo]:
        async with await self.pool.open_tunnel(*address, timeout=IO) as tunnel:
            await tunnel.send_all(PAYLOAD)
            reply = b""
            with trio.fail_after(IO):
                while len(reply) < len(PAYLOAD) and (chunk := await tunnel.receive_some()):
                    reply += chunk
            return reply, tunnel.info

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


def run_on(backend: str, scenario: Callable[[Callable[..., Any]], Awaitable[None]]) -> None:
    """Run *scenario(open_pool)* on *backend*; ``open_pool(proxy, **options)`` is an async context manager."""

    @contextlib.asynccontextmanager
    async def open_sync(proxy: Any, **options: Any) -> AsyncIterator[Pool]:
        with sync_adapter.ProxyPool(proxy, **options) as pool:
            yield SyncPool(pool)

    @contextlib.asynccontextmanager
    async def open_asyncio(proxy: Any, **options: Any) -> AsyncIterator[Pool]:
        async with aio_adapter.ProxyPool(proxy, **options) as pool:
            yield AsyncioPool(pool)

    @contextlib.asynccontextmanager
    async def open_trio(proxy: Any, **options: Any) -> AsyncIterator[Pool]:
        async with trio_adapter.ProxyPool(proxy, **options) as pool:
            yield TrioPool(pool)

    if backend == "trio":

        async def bounded() -> None:
            with trio.fail_after(60):
                await scenario(open_trio)

        trio.run(bounded)
    else:
        opener = open_sync if backend == "sync" else open_asyncio
        asyncio.run(asyncio.wait_for(scenario(opener), 60))


BACKENDS = ["sync", "asyncio", "trio"]

# ----------------------------------------------------------- a scripted proxy


class ScriptedSocks5:
    """A SOCKS5 proxy that logs ``(connection number, message)`` and then echoes (it is the target too).

    With *password*, it wants RFC 1929 user ``u``. With *hold_first*, the first
    connection's greeting is answered only once :attr:`release` is set.
    """

    def __init__(self, *, password: str | None = None, hold_first: bool = False) -> None:
        self.password = password
        self.hold_first = hold_first
        self.log: list[tuple[int, str]] = []
        self.waiting: dict[int, socket.socket] = {}  # greeted, no request yet
        self.accepted = threading.Event()
        self.release = threading.Event()
        self._numbers = itertools.count()
        self._lock = threading.Lock()

    def note(self, number: int, what: str) -> None:
        with self._lock:
            self.log.append((number, what))

    def __call__(self, conn: socket.socket) -> None:
        number = next(self._numbers)
        self.accepted.set()
        if self.hold_first and number == 0:
            self.release.wait(TIMEOUT)
        try:
            self._serve(number, conn)
        except (EOFError, OSError):  # closed, or reset (asyncio aborts)
            self.note(number, "closed")
        finally:
            self.waiting.pop(number, None)

    def _serve(self, number: int, conn: socket.socket) -> None:
        version, count = recv_exactly(conn, 2)
        methods = recv_exactly(conn, count)
        assert version == 5
        self.note(number, "greeting")
        if self.password is None:
            self.waiting[number] = conn
            conn.sendall(b"\x05\x00")
        else:
            assert 2 in methods
            conn.sendall(b"\x05\x02")
            head = recv_exactly(conn, 2)
            user = recv_exactly(conn, head[1])
            password = recv_exactly(conn, recv_exactly(conn, 1)[0])
            self.note(number, "auth")
            ok = user == b"u" and password == self.password.encode()
            if ok:
                self.waiting[number] = conn
            conn.sendall(b"\x01\x00" if ok else b"\x01\x01")
            if not ok:
                return
        head = recv_exactly(conn, 4)
        assert head[:3] == b"\x05\x01\x00"
        recv_exactly(conn, {1: 6, 4: 18}.get(head[3]) or recv_exactly(conn, 1)[0] + 2)
        self.note(number, "request")
        self.waiting.pop(number, None)
        conn.sendall(SOCKS5_OK)
        echo(conn)


@contextlib.contextmanager
def scripted(**options: Any) -> Iterator[tuple[ScriptedSocks5, ThreadedServer]]:
    script = ScriptedSocks5(**options)
    with serve(script) as server:
        yield script, server
        script.release.set()


async def until(condition: Callable[[], bool], pool: Pool, what: str) -> None:
    """Wait (bounded) for *condition*."""
    for _ in range(500):
        if condition():
            return
        await pool.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


# ------------------------------------------------------------------ scenarios


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("auth", [False, True])
def test_a_hit_costs_only_the_request(backend: str, auth: bool) -> None:
    with scripted(password="p" if auth else None) as (script, server):
        url = f"socks5h://{'u:p@' if auth else ''}127.0.0.1:{server.port}"

        async def scenario(open_pool: Callable[..., Any]) -> None:
            async with open_pool(url, size=2) as pool:
                await pool.fill()
                greeted = {n for n, what in script.log if what == "greeting"}
                assert len(greeted) >= 2
                before = len(script.log)
                reply, info = await pool.echo(server.address)
                assert reply == PAYLOAD
                new = script.log[before:]
                # The call only sent a request, on a connection prepared before it.
                assert [what for number, what in new if number in greeted] == ["request"], script.log
                assert pool.stats.hits == 1 and pool.stats.misses == 0
                assert info.connect_time == 0.0 and info.proxies == (ProxyURL.parse(url).redacted(),)

        run_on(backend, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_miss_connects_cold(backend: str) -> None:
    with scripted(hold_first=True) as (script, server):
        url = f"socks5h://127.0.0.1:{server.port}"

        async def scenario(open_pool: Callable[..., Any]) -> None:
            async with open_pool(url, size=1) as pool:
                await until(script.accepted.is_set, pool, "the pool's first connection")
                reply, _ = await pool.echo(server.address)  # the only prepared one is still held
                assert reply == PAYLOAD
                assert pool.stats.hits == 0 and pool.stats.misses == 1
                assert (1, "greeting") in script.log and (1, "request") in script.log
                script.release.set()

        run_on(backend, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_connection_the_proxy_closed_is_replaced(backend: str) -> None:
    with scripted() as (script, server):
        url = f"socks5h://127.0.0.1:{server.port}"

        async def scenario(open_pool: Callable[..., Any]) -> None:
            async with open_pool(url, size=1) as pool:
                await pool.fill()
                (number, conn), = script.waiting.items()
                conn.shutdown(socket.SHUT_RDWR)  # the proxy gives up on it
                await until(lambda: (number, "closed") in script.log, pool, "the proxy to close it")
                await pool.sleep(0.05)  # the FIN reaches the client (and its event loop)
                reply, _ = await pool.echo(server.address)
                assert reply == PAYLOAD
                assert pool.stats.discarded >= 1
                assert pool.stats.hits + pool.stats.misses == 1
                assert (number, "request") not in script.log

        run_on(backend, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_idle_connections_expire(backend: str) -> None:
    with scripted() as (script, server):
        url = f"socks5h://127.0.0.1:{server.port}"

        async def scenario(open_pool: Callable[..., Any]) -> None:
            async with open_pool(url, size=2, idle_timeout=0.2) as pool:
                await pool.fill()
                first = {n for n, what in script.log if what == "greeting"}
                await until(lambda: all((n, "closed") in script.log for n in first), pool, "expiry")
                reply, _ = await pool.echo(server.address)
                assert reply == PAYLOAD
                assert pool.stats.discarded >= 2
                assert not any((n, "request") in script.log for n in first)

        run_on(backend, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_refused_credentials_surface_as_auth_errors(backend: str) -> None:
    with scripted(password="p") as (_, server):
        url = f"socks5h://u:wrong@127.0.0.1:{server.port}"

        async def scenario(open_pool: Callable[..., Any]) -> None:
            async with open_pool(url, size=1) as pool:
                with pytest.raises(ProxyAuthError, match="rejected the username and password"):
                    await pool.fill()
                with pytest.raises(ProxyAuthError):
                    await pool.echo(server.address)
                assert pool.stats.failed >= 1 and pool.stats.hits == 0

        run_on(backend, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_connection_becomes_one_tunnel(backend: str) -> None:
    with scripted() as (script, server):
        url = f"socks5h://127.0.0.1:{server.port}"

        async def scenario(open_pool: Callable[..., Any]) -> None:
            async with open_pool(url, size=2) as pool:
                await pool.fill()
                for _ in range(6):
                    reply, _ = await pool.echo(server.address)
                    assert reply == PAYLOAD
                requests = [n for n, what in script.log if what == "request"]
                assert len(requests) == len(set(requests)) == 6
                assert pool.stats.hits + pool.stats.misses == 6

        run_on(backend, scenario)


# ----------------------------------------------------------------- real peers


@pytest.fixture(scope="module")
def echo_target() -> Iterator[ThreadedServer]:
    with echo_server() as server:
        yield server


@pytest.mark.parametrize("backend", BACKENDS)
def test_dante_with_username_auth(backend: str, echo_target: ThreadedServer) -> None:
    with dante_server(auth="username") as peer:
        url = f"socks5h://{DANTE_USER}:{DANTE_PASSWORD}@{peer.url}"

        async def scenario(open_pool: Callable[..., Any]) -> None:
            async with open_pool(url, size=2) as pool:
                await pool.fill()
                for _ in range(3):
                    reply, _ = await pool.echo(echo_target.address)
                    assert reply == PAYLOAD
                assert pool.stats.hits >= 1
            async with open_pool(f"socks5h://{DANTE_USER}:wrong@{peer.url}", size=1) as pool:
                with pytest.raises(ProxyAuthError):
                    await pool.fill()

        run_on(backend, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_microsocks_with_and_without_auth(backend: str, echo_target: ThreadedServer) -> None:
    with microsocks_server() as plain, microsocks_server(username="alice", password="s3cret") as authed:

        async def scenario(open_pool: Callable[..., Any]) -> None:
            for url in (f"socks5h://{plain.url}", f"socks5h://alice:s3cret@{authed.url}"):
                async with open_pool(url, size=2) as pool:
                    await pool.fill()
                    for _ in range(3):
                        reply, _ = await pool.echo(echo_target.address)
                        assert reply == PAYLOAD
                    assert pool.stats.hits >= 1

        run_on(backend, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_chain_is_prepared_up_to_the_last_request(backend: str, echo_target: ThreadedServer) -> None:
    with dante_server() as first, microsocks_server(username="alice", password="s3cret") as last:
        chain = [f"socks5h://{first.url}", f"socks5h://alice:s3cret@{last.url}"]

        async def scenario(open_pool: Callable[..., Any]) -> None:
            async with open_pool(chain, size=1) as pool:
                await pool.fill()
                reply, info = await pool.echo(echo_target.address)
                assert reply == PAYLOAD
                assert pool.stats.hits == 1
                assert len(info.proxies) == 2 and info.connect_time == 0.0

        run_on(backend, scenario)


# ------------------------------------------------------- the pure bookkeeping


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_idle_connections_bookkeeping() -> None:
    clock = Clock()
    idle: IdleConnections[str] = IdleConnections(2, 5.0, clock=clock)
    assert idle.start_refills() == 2 and idle.start_refills() == 0  # under way count
    assert idle.refilled("a")
    assert not idle.refilled(None)
    assert idle.stats == PoolStats(opened=1, failed=1)
    assert idle.start_refills() == 1
    clock.now += 3
    assert idle.refilled("b")
    assert idle.take(lambda c: True) == ("a", [])  # oldest first
    clock.now += 2.5
    assert idle.next_expiry() == pytest.approx(2.5)
    assert idle.start_refills() == 1
    idle.cancel_refills(1)
    assert idle.opening == 0
    clock.now += 3  # "b" is 5.5 s old
    assert idle.take(lambda c: True) == (None, ["b"])
    assert idle.stats == PoolStats(hits=1, misses=1, discarded=1, opened=2, failed=1)
    idle.start_refills()
    idle.refilled("c")
    assert idle.take(lambda c: c != "c") == (None, ["c"])
    idle.lost()
    assert idle.stats.hits == 0 and idle.stats.discarded == 3
    idle.start_refills()
    idle.refilled("d")
    assert idle.close() == ["d"] and idle.closed
    assert idle.start_refills() == 0 and not idle.refilled("e")


@pytest.mark.parametrize(
    ("size", "idle_timeout", "error"),
    [(0, 1.0, ValueError), (1.5, 1.0, TypeError), (True, 1.0, TypeError), (1, 0, ValueError),
     (1, float("inf"), ValueError), (1, float("nan"), ValueError), (1, "5", TypeError)],
)
def test_impossible_pool_settings_are_refused(size: Any, idle_timeout: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"size|idle_timeout"):
        IdleConnections(size, idle_timeout)
    with pytest.raises(error, match=r"size|idle_timeout"):
        sync_adapter.ProxyPool("socks5h://127.0.0.1:1", size=size, idle_timeout=idle_timeout)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_closed_pool_refuses_calls(backend: str) -> None:
    with scripted() as (_, server):
        url = f"socks5h://127.0.0.1:{server.port}"

        async def scenario(open_pool: Callable[..., Any]) -> None:
            async with open_pool(url, size=1) as pool:
                await pool.fill()
                inner = pool.pool
            if backend == "sync":
                with pytest.raises(RuntimeError, match="closed"):
                    inner.connect(*server.address)
            else:
                with pytest.raises(RuntimeError, match="closed"):
                    await inner.open_tunnel(*server.address)

        run_on(backend, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_name_that_does_not_resolve_locally_is_not_retried_cold(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """socks5:// resolves the target here: a lookup failure is the caller's error, not a broken connection."""
    lookups: list[str] = []

    def refuse(host: Any) -> None:
        lookups.append(host.decode() if isinstance(host, bytes) else host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with scripted() as (_, server):
        url = f"socks5://127.0.0.1:{server.port}"

        async def scenario(open_pool: Callable[..., Any]) -> None:
            if backend == "sync":
                monkeypatch.setattr(socket, "getaddrinfo", lambda host, *args, **kwargs: refuse(host))
            elif backend == "asyncio":

                async def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
                    refuse(host)

                monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
            else:

                class Refusing(trio.abc.HostnameResolver):
                    async def getaddrinfo(self, host: Any, *args: Any, **kwargs: Any) -> Any:
                        refuse(host)

                    async def getnameinfo(self, *args: Any) -> Any:
                        raise AssertionError("not used")

                trio.socket.set_custom_hostname_resolver(Refusing())
            async with open_pool(url, size=1) as pool:
                await pool.fill()
                with pytest.raises((OSError, ProxyConnectionError), match="Name or service not known") as caught:
                    await pool.echo(("nowhere.example", 7))
                if not isinstance(caught.value, socket.gaierror):  # asyncio words it as the proxy's
                    assert isinstance(caught.value.__cause__, socket.gaierror)
                assert lookups == ["nowhere.example"]  # no cold connect asked again
                assert pool.stats.misses == 0

        run_on(backend, scenario)


def test_asyncio_pool_closes_right_after_a_call_that_failed_at_once() -> None:
    """aclose() may cancel the background task just as it is woken (a call took a connection).

    On Python 3.10 and 3.11, ``asyncio.wait_for`` drops a cancellation that
    arrives once the awaited event is set: the task must still end.
    """
    with scripted() as (_, server):

        async def scenario() -> None:
            pool = aio_adapter.ProxyPool(f"socks4://127.0.0.1:{server.port}", size=1)
            await pool.fill()
            with pytest.raises(LocalProtocolError, match="IPv6"):
                await pool.open_tunnel("::1", 7)  # no IPv6 through SOCKS4: fails before any I/O
            closer = asyncio.ensure_future(pool.aclose())
            done, _ = await asyncio.wait({closer}, timeout=IO)
            assert closer in done, "aclose() did not return"
            closer.result()

        asyncio.run(scenario())

"""Load: thousands of concurrent tunnels, and authentication under a flood of bad attempts.

The tunnel test opens every tunnel first (so all of them are open in the
server at the same moment), then pushes a random payload through each to an
echo server and compares sha256 digests: not one byte may be lost or altered.
Figures (counts, bytes, durations, descriptors and tasks before and after)
are printed; ``pytest -s`` shows them, and docs/reliability.md records a run.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import time
from collections import Counter
from functools import partial
from typing import Any, Final

import pytest
import trio

from socks_sansio import (
    Address,
    ClientHandshake,
    ProxyAuthError,
    ProxyError,
    ProxyProtocol,
    ProxyRefusedError,
    ProxyURL,
    UserDatabase,
)
from socks_sansio.adapters.server.asyncio import ProxyServer
from socks_sansio.adapters.server.trio import TrioProxyServer

from . import (
    BACKENDS,
    HOST,
    READ,
    Resources,
    TcpUpstream,
    UdpEcho,
    digest,
    exchange,
    fd_count,
    median_ms,
    open_association,
    open_files_limit,
    open_tunnel,
    percentile_ms,
    proxy_url,
    server_config,
    settle,
    trio_task_count,
    tunnel_lines,
)

pytestmark = pytest.mark.load

TUNNELS: Final = int(os.environ.get("LOAD_TUNNELS", "2000"))
CONNECTING: Final = 200  # handshakes in flight at once while the tunnels are being opened
PROTOCOLS: Final = (ProxyProtocol.SOCKS5, ProxyProtocol.HTTP, ProxyProtocol.SOCKS4)
DESCRIPTORS_PER_TUNNEL: Final = 4  # client, proxy's client side, proxy's upstream side, echo server


def payloads(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.randint(16 * 1024, 64 * 1024)) for _ in range(count)]


def test_asyncio_concurrent_tunnels(server_log: pytest.LogCaptureFixture) -> None:
    with open_files_limit(TUNNELS * DESCRIPTORS_PER_TUNNEL + 1000) as limit:
        count = min(TUNNELS, (limit - 500) // DESCRIPTORS_PER_TUNNEL)
        figures = asyncio.run(asyncio.wait_for(_concurrent_tunnels(count), 150))
    print(f"\n[load] asyncio server, {figures['tunnels']} concurrent tunnels:")
    for key, value in figures.items():
        print(f"[load]   {key}: {value}")
    lines = tunnel_lines(server_log.records)
    assert len(lines) == count
    assert all(outcomes == ["ok"] for outcomes in lines.values()), "one 'ok' line per tunnel"


async def _concurrent_tunnels(count: int) -> dict[str, Any]:
    seed = random.randrange(2**32)
    data = payloads(count, seed)
    before = Resources.now()
    async with TcpUpstream() as echo, ProxyServer(server_config()) as server:
        idle = Resources.now()
        gate = asyncio.Semaphore(CONNECTING)

        async def open_one(index: int) -> Any:
            async with gate:
                return await open_tunnel(proxy_url(PROTOCOLS[index % 3], server.addresses[0]), echo.address)

        started = time.perf_counter()
        tunnels = await asyncio.gather(*(open_one(i) for i in range(count)))
        opened = time.perf_counter()
        peak_active, peak = server.stats.active, Resources.now()
        assert peak_active == count, "every tunnel is open in the server at the same moment"

        echoed = await asyncio.gather(*(exchange(t, p) for t, p in zip(tunnels, data, strict=True)))
        finished = time.perf_counter()
        damaged = [i for i, (sent, got) in enumerate(zip(data, echoed, strict=True)) if digest(sent) != digest(got)]
        assert not damaged, f"{len(damaged)} tunnels lost or altered bytes (seed {seed}), e.g. #{damaged[:5]}"

        total = sum(map(len, data))
        stats = server.stats
        assert sum(stats.tunnels.values()) == count
        assert dict(stats.tunnels) == {p.name.lower(): len(range(i, count, 3)) for i, p in enumerate(PROTOCOLS)}
        assert not stats.failures
        assert stats.bytes_up == stats.bytes_down == total
        assert echo.accepted == count
        after = await settle(idle)
        assert (after.fds, after.tasks) == (idle.fds, idle.tasks), "descriptors or tasks leaked"
    closed = await settle(before)
    assert (closed.fds, closed.tasks) == (before.fds, before.tasks)
    handshakes = [t.seconds for t in tunnels]
    return {
        "tunnels": count,
        "by protocol": dict(stats.tunnels),
        "payload seed": seed,
        "bytes each way": f"{total} ({total / 2**20:.1f} MiB), sha256 intact in all {count}",
        "open all (handshakes)": f"{opened - started:.2f} s; per-handshake median {median_ms(handshakes)}, "
        f"p99 {percentile_ms(handshakes, 0.99)}",
        "transfer all": f"{finished - opened:.2f} s ({2 * total / 2**20 / (finished - opened):.1f} MiB/s through "
        "the proxy, both directions)",
        "duration": f"{finished - started:.2f} s",
        "peak": f"active={peak_active} {peak}",
        "before / idle server / after traffic / after close": f"{before} / {idle} / {after} / {closed}",
    }


# -- authentication under a flood --------------------------------------------------------

USERS: Final = 20
FLOOD: Final = 1000
FLOOD_IN_FLIGHT: Final = 100
QUIET_ROUNDS: Final = 5
BAD_KINDS: Final = (
    "socks5 wrong password",
    "socks5 unknown user",
    "socks5 no credentials",
    "http no credentials",
    "http wrong password",
    "socks4 (no password possible)",
)


def test_auth_flood(server_log: pytest.LogCaptureFixture) -> None:
    figures = asyncio.run(asyncio.wait_for(_auth_flood(), 150))
    print("\n[auth] authenticated users while unauthenticated clients flood the server:")
    for key, value in figures.items():
        print(f"[auth]   {key}: {value}")
    outcomes = Counter(o for outs in tunnel_lines(server_log.records).values() for o in outs)
    assert outcomes["ok"] == figures["authenticated tunnels"]
    assert sum(outcomes.values()) - outcomes["ok"] == FLOOD, "one log line per refused attempt"


async def _auth_flood() -> dict[str, Any]:
    users = UserDatabase({f"user{i}": f"password-{i}" for i in range(USERS)})
    before = Resources.now()
    async with TcpUpstream() as echo, TcpUpstream() as canary, ProxyServer(server_config(users=users)) as server:
        idle = Resources.now()
        address = server.addresses[0]
        good = 0

        async def user(index: int, latencies: list[float], until: asyncio.Future[Any] | None) -> None:
            nonlocal good
            protocol = (ProxyProtocol.SOCKS5, ProxyProtocol.HTTP)[index % 2]
            url = proxy_url(protocol, address, f"user{index}", f"password-{index}")
            for round_ in range(1000):
                if (until is None and round_ == QUIET_ROUNDS) or (until is not None and until.done()):
                    return
                tunnel = await open_tunnel(url, echo.address)
                latencies.append(tunnel.seconds)
                payload = os.urandom(4096)
                assert await exchange(tunnel, payload) == payload
                good += 1

        quiet: list[float] = []
        await asyncio.gather(*(user(i, quiet, None) for i in range(USERS)))

        results: Counter[str] = Counter()
        gate = asyncio.Semaphore(FLOOD_IN_FLIGHT)

        async def intruder(index: int) -> None:
            kind = BAD_KINDS[index % len(BAD_KINDS)]
            url = {
                0: proxy_url(ProxyProtocol.SOCKS5, address, f"user{index % USERS}", "wrong"),
                1: proxy_url(ProxyProtocol.SOCKS5, address, f"nobody{index}", "password-0"),
                2: proxy_url(ProxyProtocol.SOCKS5, address),
                3: proxy_url(ProxyProtocol.HTTP, address),
                4: proxy_url(ProxyProtocol.HTTP, address, f"user{index % USERS}", "wrong"),
                5: proxy_url(ProxyProtocol.SOCKS4, address, "user0"),
            }[index % len(BAD_KINDS)]
            async with gate:
                try:
                    tunnel = await open_tunnel(url, canary.address)
                except (ProxyAuthError, ProxyRefusedError) as exc:
                    results[f"{kind}: {type(exc).__name__}"] += 1
                    return
                except ProxyError as exc:  # counted, and fails the test below
                    results[f"{kind}: unexpected {exc!r}"] += 1
                    return
            results[f"{kind}: LET THROUGH"] += 1
            tunnel.writer.close()

        started = time.perf_counter()
        flood = asyncio.gather(*(intruder(i) for i in range(FLOOD)))
        loud: list[float] = []
        await asyncio.gather(*(user(i, loud, flood) for i in range(USERS)))
        await flood
        flood_seconds = time.perf_counter() - started

        assert sum(results.values()) == FLOOD
        assert not [key for key in results if "LET THROUGH" in key or "unexpected" in key], results
        assert canary.accepted == 0, "no unauthenticated client reached the target"
        assert sum(server.stats.tunnels.values()) == good
        assert sum(server.stats.failures.values()) == FLOOD
        after = await settle(idle)
        assert (after.fds, after.tasks) == (idle.fds, idle.tasks), "descriptors or tasks leaked"
    closed = await settle(before)
    assert (closed.fds, closed.tasks) == (before.fds, before.tasks)
    return {
        "authenticated tunnels": good,
        "flood": f"{FLOOD} bad attempts ({FLOOD_IN_FLIGHT} in flight) in {flood_seconds:.2f} s "
        f"({FLOOD / flood_seconds:.0f}/s), none let through",
        "flood outcomes": dict(sorted(results.items())),
        "server failure counters": dict(server.stats.failures),
        "median handshake, no flood": f"{median_ms(quiet)} (p90 {percentile_ms(quiet, 0.9)}, {len(quiet)} handshakes)",
        "median handshake, during flood": f"{median_ms(loud)} (p90 {percentile_ms(loud, 0.9)}, "
        f"{len(loud)} handshakes)",
        "before / idle server / after the flood / after close": f"{before} / {idle} / {after} / {closed}",
    }


HASHED_FLOOD: Final = 16


def test_hashed_password_flood() -> None:
    """A figure, not a check: wrong passwords for a PBKDF2-hashed user while another user connects.

    The server verifies passwords on its event loop, so each wrong password for
    a hashed entry stalls every connection for one PBKDF2 run (reported in
    docs/reliability.md).
    """
    figures = asyncio.run(asyncio.wait_for(_hashed_password_flood(), 120))
    print("\n[auth] PBKDF2-hashed user list:")
    for key, value in figures.items():
        print(f"[auth]   {key}: {value}")


async def _hashed_password_flood() -> dict[str, str]:
    stored = UserDatabase.hash_password("right")
    database = UserDatabase({"hashed": stored, "plain": "plain-password"})
    t0 = time.perf_counter()
    database.check(b"hashed", b"wrong")
    one_check = time.perf_counter() - t0
    async with TcpUpstream() as echo, ProxyServer(server_config(users=database)) as server:
        url = proxy_url(ProxyProtocol.SOCKS5, server.addresses[0], "plain", "plain-password")
        quiet = []
        for _ in range(5):
            tunnel = await open_tunnel(url, echo.address)
            quiet.append(tunnel.seconds)
            tunnel.writer.close()

        async def intruder() -> None:
            bad = proxy_url(ProxyProtocol.SOCKS5, server.addresses[0], "hashed", "wrong")
            with pytest.raises(ProxyAuthError):
                await open_tunnel(bad, echo.address)

        flood = asyncio.gather(*(intruder() for _ in range(HASHED_FLOOD)))
        loud = []
        while not flood.done():
            tunnel = await open_tunnel(url, echo.address)
            loud.append(tunnel.seconds)
            tunnel.writer.close()
        await flood
    return {
        "PBKDF2 check (default iterations), one": f"{one_check * 1000:.0f} ms",
        f"median handshake, {HASHED_FLOOD} wrong passwords for a PBKDF2 user": f"{median_ms(loud)} "
        f"(max {max(loud) * 1000:.0f} ms, {len(loud)} handshakes; quiet: {median_ms(quiet)})",
    }


def test_unknown_users_cost_the_same_work(monkeypatch: pytest.MonkeyPatch) -> None:
    work: list[int] = []
    real = hashlib.pbkdf2_hmac

    def counting(name: str, password: bytes, salt: bytes, iterations: int, dklen: int | None = None) -> bytes:
        work.append(iterations)
        return real(name, password, salt, iterations, dklen)

    database = UserDatabase({"known": UserDatabase.hash_password("secret", iterations=1000)})
    monkeypatch.setattr(hashlib, "pbkdf2_hmac", counting)
    assert not database.check(b"known", b"wrong")
    assert not database.check(b"unknown", b"wrong")
    assert work[0] == work[1], f"iterations for a known vs an unknown user: {work}"


def test_fd_counting_sees_a_new_descriptor() -> None:
    """The leak checks above rest on fd_count(); make sure it moves."""
    first = fd_count()
    with open(os.devnull, "rb"):
        assert fd_count() == first + 1
    assert fd_count() == first


# -- UDP ASSOCIATE under load ---------------------------------------------------------------

ASSOCIATIONS: Final = 100
DATAGRAMS: Final = 5


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_udp_associations(backend: str) -> None:
    figures = asyncio.run(asyncio.wait_for(_udp_associations(backend), 60))
    print(f"\n[udp] {backend} server, {ASSOCIATIONS} concurrent associations: {figures}")


async def _udp_associations(backend: str) -> dict[str, Any]:
    before = Resources.now()
    async with UdpEcho() as udp_echo, BACKENDS[backend](server_config()) as server:
        idle = Resources.now(server.server_tasks)
        url = proxy_url(ProxyProtocol.SOCKS5, server.address)
        lost = 0

        async def associate(index: int) -> int:
            nonlocal lost
            association = await open_association(url)
            try:
                for number in range(DATAGRAMS):
                    payload = f"{index}:{number}:".encode() + os.urandom(1000)
                    assert await association.echo(udp_echo.address, payload, tries=2, wait=1.0) == payload
            finally:
                lost += association.lost
                await association.aclose()
            return DATAGRAMS

        started = time.perf_counter()
        echoed = sum(await asyncio.gather(*(associate(i) for i in range(ASSOCIATIONS))))
        duration = time.perf_counter() - started
        after = await settle(idle, server_tasks=server.server_tasks)
        assert (after.fds, after.tasks) == (idle.fds, idle.tasks), "descriptors or tasks leaked"
        assert server.stats.tunnels["socks5"] == ASSOCIATIONS
    closed = await settle(before)
    assert (closed.fds, closed.tasks) == (before.fds, before.tasks)
    return {
        "datagrams echoed": echoed,
        "lost and resent": lost,
        "duration": f"{duration:.2f} s",
        "before / idle server / after / after close": f"{before} / {idle} / {after} / {closed}",
    }


# -- the trio server ---------------------------------------------------------------------------

TRIO_TUNNELS: Final = int(os.environ.get("LOAD_TRIO_TUNNELS", "300"))


def trio_resources() -> Resources:
    return Resources(fd_count(), trio_task_count())


async def trio_settle(baseline: Resources, *, seconds: float = 10.0) -> Resources:
    """:func:`settle` for trio: descriptors and tasks once back at *baseline*, or at the deadline."""
    with trio.move_on_after(seconds):
        while (current := trio_resources()).fds > baseline.fds or current.tasks > baseline.tasks:
            await trio.sleep(0.05)
    return trio_resources()


async def trio_echo(stream: trio.SocketStream) -> None:
    try:
        while data := await stream.receive_some(READ):
            await stream.send_all(data)
        await stream.send_eof()
    except trio.BrokenResourceError:
        pass
    finally:
        await stream.aclose()


async def trio_tunnel(url: ProxyURL, target: Address) -> tuple[trio.SocketStream, bytes, float]:
    """Connect through the proxy with the core's client driver; (stream, early bytes, handshake seconds)."""
    started = time.perf_counter()
    stream = await trio.open_tcp_stream(url.address.host_str, url.address.port)
    try:
        handshake = ClientHandshake(url, target)
        await stream.send_all(handshake.data_to_send())
        while not handshake.established:
            handshake.receive_data(await stream.receive_some(handshake.read_size_hint))
            out = handshake.data_to_send()
            if out:
                await stream.send_all(out)
    except BaseException:
        stream.socket.close()
        raise
    return stream, handshake.trailing_data[0], time.perf_counter() - started


async def trio_exchange(stream: trio.SocketStream, early: bytes, payload: bytes) -> bytes:
    received = [early]

    async def send() -> None:
        await stream.send_all(payload)
        await stream.send_eof()

    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(send)
        while data := await stream.receive_some(READ):
            received.append(data)
    return b"".join(received)


def test_trio_concurrent_tunnels(server_log: pytest.LogCaptureFixture) -> None:
    with open_files_limit(TRIO_TUNNELS * DESCRIPTORS_PER_TUNNEL + 1000) as limit:
        count = min(TRIO_TUNNELS, (limit - 500) // DESCRIPTORS_PER_TUNNEL)
        figures = trio.run(_trio_concurrent_tunnels, count)
    print(f"\n[load] trio server, {count} concurrent tunnels:")
    for key, value in figures.items():
        print(f"[load]   {key}: {value}")
    lines = tunnel_lines(server_log.records)
    assert len(lines) == count
    assert all(outcomes == ["ok"] for outcomes in lines.values()), "one 'ok' line per tunnel"


async def _trio_concurrent_tunnels(count: int) -> dict[str, Any]:
    seed = random.randrange(2**32)
    data = payloads(count, seed)
    with trio.fail_after(120):
        before = trio_resources()
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, trio_echo, 0, host=HOST, backlog=4096))
            echo = Address(HOST, listeners[0].socket.getsockname()[1])
            server = TrioProxyServer(server_config())
            await nursery.start(server.serve)
            idle = trio_resources()
            tunnels: list[tuple[trio.SocketStream, bytes, float]] = [None] * count  # type: ignore[list-item]
            echoed: list[bytes] = [b""] * count
            gate = trio.Semaphore(CONNECTING)

            async def open_one(index: int) -> None:
                async with gate:
                    url = proxy_url(PROTOCOLS[index % 3], server.addresses[0])
                    tunnels[index] = await trio_tunnel(url, echo)

            async def exchange_one(index: int) -> None:
                stream, early, _ = tunnels[index]
                echoed[index] = await trio_exchange(stream, early, data[index])

            started = time.perf_counter()
            async with trio.open_nursery() as opening:
                for index in range(count):
                    opening.start_soon(open_one, index)
            opened = time.perf_counter()
            peak_active, peak_fds = server.stats.active, fd_count()
            assert peak_active == count, "every tunnel is open in the server at the same moment"
            async with trio.open_nursery() as transferring:
                for index in range(count):
                    transferring.start_soon(exchange_one, index)
            finished = time.perf_counter()
            damaged = [i for i in range(count) if digest(data[i]) != digest(echoed[i])]
            assert not damaged, f"{len(damaged)} tunnels lost or altered bytes (seed {seed}), e.g. #{damaged[:5]}"
            total = sum(map(len, data))
            stats = server.stats
            assert sum(stats.tunnels.values()) == count
            assert not stats.failures
            assert stats.bytes_up == stats.bytes_down == total
            after = await trio_settle(idle)
            assert after == idle, "descriptors or tasks leaked"
            await server.shutdown(grace=1)
            nursery.cancel_scope.cancel()
        closed = await trio_settle(before)
        assert closed == before
    handshakes = [t[2] for t in tunnels]
    return {
        "tunnels": count,
        "by protocol": dict(stats.tunnels),
        "payload seed": seed,
        "bytes each way": f"{total} ({total / 2**20:.1f} MiB), sha256 intact in all {count}",
        "open all (handshakes)": f"{opened - started:.2f} s; per-handshake median {median_ms(handshakes)}",
        "transfer all": f"{finished - opened:.2f} s",
        "duration": f"{finished - started:.2f} s",
        "peak": f"active={peak_active} fds={peak_fds}",
        "before / idle server / after traffic / after close": f"{before} / {idle} / {after} / {closed}",
    }

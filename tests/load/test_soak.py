"""A bounded soak: mixed traffic for SOAK_SECONDS (default 60) against one asyncio server.

Workers loop over six kinds of connection until the time is up: SOCKS5
CONNECT, HTTP CONNECT and SOCKS4 tunnels to an echo server (random payloads,
sha256-checked), SOCKS5 UDP ASSOCIATE with datagrams through the relay,
CONNECT to a closed port (refused), and wrong passwords (refused). Every
outcome must be the expected one; the server's counters and its one log line
per connection must agree with what the clients saw; and descriptors and
asyncio tasks must come back to their baseline. Figures are printed.

Run it short with ``SOAK_SECONDS=5``.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from typing import Any, Final

import pytest

from socks_sansio import ProxyAuthError, ProxyProtocol, ProxyRefusedError, UserDatabase
from socks_sansio.adapters.server.asyncio import ProxyServer

from . import (
    Resources,
    TcpUpstream,
    UdpEcho,
    closed_port,
    digest,
    exchange,
    fd_count,
    open_association,
    open_tunnel,
    proxy_url,
    server_config,
    settle,
    tunnel_lines,
)

pytestmark = pytest.mark.load

SOAK_SECONDS: Final = float(os.environ.get("SOAK_SECONDS", "60"))
WORKERS: Final = 24
KINDS: Final = ("socks5 echo", "http echo", "socks4 echo", "udp associate", "refused", "auth failure")
USER: Final = ("soak", "soak-password")


def test_soak(server_log: pytest.LogCaptureFixture) -> None:
    figures = asyncio.run(asyncio.wait_for(_soak(SOAK_SECONDS), SOAK_SECONDS + 120))
    print(f"\n[soak] {SOAK_SECONDS:g} s of mixed traffic, {WORKERS} workers:")
    for key, value in figures.items():
        if key != "outcomes":
            print(f"[soak]   {key}: {value}")
    # Counted, not matched by client port: over a long run a port is used again.
    logged = Counter(o.split(":")[0] for outcomes in tunnel_lines(server_log.records).values() for o in outcomes)
    assert logged == figures["outcomes"], "one log line per connection, with the outcome the client saw"


async def _soak(seconds: float) -> dict[str, Any]:
    users = UserDatabase({USER[0]: USER[1]})
    config = server_config(users=users, allow_socks4_without_auth=True)
    refused_target = closed_port()
    before = Resources.now()
    async with TcpUpstream() as echo, UdpEcho() as udp_echo, ProxyServer(config) as server:
        idle = Resources.now()
        address = server.addresses[0]
        good = {
            ProxyProtocol.SOCKS5: proxy_url(ProxyProtocol.SOCKS5, address, *USER),
            ProxyProtocol.HTTP: proxy_url(ProxyProtocol.HTTP, address, *USER),
            ProxyProtocol.SOCKS4: proxy_url(ProxyProtocol.SOCKS4, address, "anyone"),
        }
        wrong = (
            proxy_url(ProxyProtocol.SOCKS5, address, USER[0], "wrong"),
            proxy_url(ProxyProtocol.HTTP, address, USER[0], "wrong"),
        )
        done: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        sent = 0
        udp_lost = 0
        rng = random.Random()

        async def echo_through(protocol: ProxyProtocol) -> None:
            nonlocal sent
            payload = rng.randbytes(rng.randint(1, 32 * 1024))
            tunnel = await open_tunnel(good[protocol], echo.address)
            echoed = await exchange(tunnel, payload, chunks=rng.randint(1, 4))
            assert digest(echoed) == digest(payload), "bytes lost or altered"
            sent += len(payload)

        async def udp() -> None:
            nonlocal sent, udp_lost
            association = await open_association(good[ProxyProtocol.SOCKS5])
            try:
                for _ in range(3):
                    payload = rng.randbytes(rng.randint(1, 1024))
                    assert await association.echo(udp_echo.address, payload) == payload
                    sent += len(payload)
            finally:
                udp_lost += association.lost
                await association.aclose()

        async def refused() -> None:
            try:
                await open_tunnel(good[ProxyProtocol.SOCKS5], refused_target)
            except ProxyRefusedError as exc:
                assert exc.code == 5  # connection refused
            else:
                raise AssertionError("a CONNECT to a closed port succeeded")

        async def auth_failure(index: int) -> None:
            try:
                await open_tunnel(wrong[index % 2], echo.address)
            except ProxyAuthError:
                pass
            else:
                raise AssertionError("a wrong password was let through")

        async def worker(number: int, deadline: float) -> None:
            index = number
            while time.monotonic() < deadline:
                kind = KINDS[index % len(KINDS)]
                index += 1
                try:
                    if kind == "udp associate":
                        await udp()
                    elif kind == "refused":
                        await refused()
                    elif kind == "auth failure":
                        await auth_failure(index)
                    else:
                        await echo_through({"socks5": ProxyProtocol.SOCKS5, "http": ProxyProtocol.HTTP,
                                            "socks4": ProxyProtocol.SOCKS4}[kind.split()[0]])
                except Exception as exc:  # counted; the test fails on any
                    errors[f"{kind}: {exc!r}"] += 1
                else:
                    done[kind] += 1

        peak = [fd_count(), 0]

        async def sample(deadline: float) -> None:
            while time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                peak[0] = max(peak[0], fd_count())
                peak[1] = max(peak[1], server.stats.active)

        started = time.monotonic()
        deadline = started + seconds
        await asyncio.gather(sample(deadline), *(worker(n, deadline) for n in range(WORKERS)))
        elapsed = time.monotonic() - started
        stats = server.stats
        after = await settle(idle)

        assert not errors, dict(errors)
        assert all(done[kind] > 0 for kind in KINDS), done
        tunnels = done["socks5 echo"] + done["http echo"] + done["socks4 echo"] + done["udp associate"]
        assert dict(stats.tunnels) == {
            "socks5": done["socks5 echo"] + done["udp associate"],
            "http": done["http echo"],
            "socks4": done["socks4 echo"],
        }
        assert dict(stats.failures) == {"dial failed": done["refused"], "authentication failed": done["auth failure"]}
        assert (after.fds, after.tasks) == (idle.fds, idle.tasks), "descriptors or tasks leaked"
    closed = await settle(before)
    assert (closed.fds, closed.tasks) == (before.fds, before.tasks)
    connections = sum(done.values())
    return {
        "outcomes": Counter(
            {"ok": tunnels, "dial failed": done["refused"], "authentication failed": done["auth failure"]}
        ),
        "connections": connections,
        "by kind": dict(done),
        "tunnels": f"{tunnels} ({tunnels / elapsed:.1f}/s); all connections {connections / elapsed:.1f}/s",
        "payload bytes sent (each echoed back intact)": sent,
        "server bytes up/down": f"{stats.bytes_up}/{stats.bytes_down}",
        "expected refusals": f"{done['refused']} closed port, {done['auth failure']} wrong password",
        "unexpected errors": sum(errors.values()),
        "udp": f"{udp_lost} datagrams lost and resent",
        "peak": f"fds={peak[0]} active={peak[1]}",
        "before / idle server / after / after close": f"{before} / {idle} / {after} / {closed}",
        "elapsed": f"{elapsed:.1f} s",
    }

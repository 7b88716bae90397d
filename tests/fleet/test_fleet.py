"""Two ``socks-sansio serve`` instances behind a real HAProxy (``send-proxy-v2``), sharing limits in a real Redis.

What a fleet needs, checked end to end: each instance sees the real client
(its log line and its ``--deny`` rules), a per-user limit holds across the
instances together, an unreachable Redis fails open or closed as configured
without hanging, and a draining instance answers 503 on ``/healthz`` and gets
no new clients while it still serves the ones it has.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from tests.adapters.servers import ThreadedServer, echo_server, recv_exactly
from tests.server.conftest import TIMEOUT

from .conftest import PROBE_SOURCE, Fleet, Redis, client_socket, healthz, tunnel

USER, PASSWORD = "fleet", "fleet-secret"
LINE = re.compile(r"^\S+ \S+ INFO socks_sansio\.server: (\S+) user=\S+ .* outcome=(.*)$", re.M)


@pytest.fixture
def echo() -> Iterator[ThreadedServer]:
    with echo_server() as server:
        yield server


def outcomes(fleet: Fleet) -> list[list[tuple[str, str]]]:
    """Each instance's logged ``(client, outcome)`` pairs (but the fleet's own probe of HAProxy's port at start)."""
    probe = f"{PROBE_SOURCE}:"
    return [
        [(client, outcome) for client, outcome in LINE.findall(instance.log()) if not client.startswith(probe)]
        for instance in fleet.instances
    ]


def open_and_echo(fleet: Fleet, source: str, echo: ThreadedServer, **auth: str) -> int:
    rep, sock = tunnel(fleet, source, echo.address, **auth)
    with sock:
        if rep == 0:
            sock.sendall(b"ping")
            assert recv_exactly(sock, 4) == b"ping"
    return rep


def test_each_instance_sees_the_real_client(fleet_of: Callable[..., Fleet], echo: ThreadedServer) -> None:
    fleet = fleet_of(2)
    sources = []
    for _ in range(4):  # round robin: two each
        rep, sock = tunnel(fleet, "127.0.0.2", echo.address)
        with sock:
            assert rep == 0
            sources.append(f"127.0.0.2:{sock.getsockname()[1]}")
    fleet.wait_until(lambda: sum(len(o) for o in outcomes(fleet)) == 4, "four log lines")
    logged = outcomes(fleet)
    assert all(len(lines) == 2 for lines in logged), logged
    assert sorted(client for lines in logged for client, _ in lines) == sorted(sources), "the clients, not HAProxy"


def test_a_deny_rule_on_the_client_holds_through_the_balancer(
    fleet_of: Callable[..., Fleet], echo: ThreadedServer
) -> None:
    fleet = fleet_of(2, "--deny", "from=127.0.0.3/32")
    for _ in range(2):  # round robin: both instances allow 127.0.0.2 and close on 127.0.0.3 at once
        assert open_and_echo(fleet, "127.0.0.2", echo) == 0
        with client_socket("127.0.0.3") as sock:
            sock.connect(fleet.address)
            sock.sendall(b"\x05\x01\x00")
            assert closed_without_answer(sock)
    fleet.wait_until(lambda: sum(1 for o in outcomes(fleet) for _, x in o if x == "client not allowed") == 2,
                     "two refusals")  # fmt: skip


def test_a_per_user_limit_holds_across_instances(
    fleet_of: Callable[..., Fleet], redis: Redis, echo: ThreadedServer
) -> None:
    fleet = fleet_of(2, "--auth", f"{USER}:{PASSWORD}", "--rate-tunnels-per-user", "5:5", "--rate-store", redis.url)
    started = time.monotonic()
    reps = [open_and_echo(fleet, "127.0.0.2", echo, user=USER, password=PASSWORD) for _ in range(20)]
    elapsed = time.monotonic() - started
    admitted = reps.count(0)
    assert set(reps) <= {0, 2}, reps
    # One shared bucket: the burst of 5, plus what 5/s refills while the 20 requests ran (each instance alone
    # would allow 5 + 5 t on its own, twice that together).
    assert 5 <= admitted <= 5 + 5 * elapsed + 1, (admitted, elapsed)
    fleet.wait_until(lambda: sum(len(o) for o in outcomes(fleet)) == 20, "twenty log lines")
    served = [sum(1 for _, x in lines if x == "ok") for lines in outcomes(fleet)]
    refused = [sum(1 for _, x in lines if x == "rate limited") for lines in outcomes(fleet)]
    assert sum(served) == admitted and all(n > 0 for n in (sum(refused),)), (served, refused)
    assert all(len(lines) >= 5 for lines in outcomes(fleet)), "both instances took part"


@pytest.mark.parametrize("fail", ["open", "closed"])
def test_redis_going_away_fails_open_or_closed(
    fleet_of: Callable[..., Fleet], redis: Redis, echo: ThreadedServer, fail: str
) -> None:
    fleet = fleet_of(2, "--auth", f"{USER}:{PASSWORD}", "--rate-tunnels-per-user", "100", "--rate-store", redis.url,
                     "--rate-store-fail", fail)  # fmt: skip
    assert open_and_echo(fleet, "127.0.0.2", echo, user=USER, password=PASSWORD) == 0
    redis.stop()
    started = time.monotonic()
    reps = [open_and_echo(fleet, "127.0.0.2", echo, user=USER, password=PASSWORD) for _ in range(4)]
    assert time.monotonic() - started < 4 * TIMEOUT  # bounded: each call has its short time-out, never a hang
    assert set(reps) == ({0} if fail == "open" else {2}), reps
    for instance in fleet.instances:
        assert len(instance.log_lines("rate store unreachable")) == 1, "logged once per outage"
    redis.start()
    fleet.wait_until(lambda: open_and_echo(fleet, "127.0.0.2", echo, user=USER, password=PASSWORD) == 0,
                     "the limits to work again")  # fmt: skip


def test_a_draining_instance_gets_no_new_clients(fleet_of: Callable[..., Fleet], echo: ThreadedServer) -> None:
    fleet = fleet_of(2, "--drain-delay", "5")
    first, second = fleet.instances
    rep, held = tunnel(fleet, "127.0.0.2", echo.address)
    assert rep == 0
    first.send_signal()
    fleet.wait_until(lambda: healthz(fleet.health_ports[0]) == 503, "/healthz to say 503")
    # HAProxy checks every 100 ms and marks a server down at its first failure; it says so on its stderr
    taken_out = "Server instances/s0 is DOWN"
    fleet.wait_until(lambda: taken_out in fleet.haproxy.log_path.read_text(), "HAProxy to take the instance out")
    before = len(outcomes(fleet)[0])
    for _ in range(4):
        assert open_and_echo(fleet, "127.0.0.2", echo) == 0
    second.wait_log("outcome=ok", count=4)
    assert len(outcomes(fleet)[0]) == before, "no new client went to the draining instance"
    with held:  # the draining instance still serves the tunnel it had
        held.sendall(b"still")
        assert recv_exactly(held, 5) == b"still"
    first.wait_exit(TIMEOUT)


def closed_without_answer(sock: socket.socket) -> bool:
    """Whether the peer closed (EOF or reset) without sending anything."""
    try:
        return sock.recv(16) == b""
    except ConnectionResetError:
        return True

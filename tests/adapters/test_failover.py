"""Failover and retry (``failover=``, ``retry=``): the pure planner, then every backend on loopback.

The planner tests use a fake clock (a function returning the seconds left).
The backend tests run against closed ports, microsocks and scripted proxies from
:mod:`tests.adapters.servers`; waits are bounded, and the only timing assertion
is a generous upper bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import trio

from socks_sansio import (
    LocalProtocolError,
    ProxyAuthError,
    ProxyConnectionError,
    ProxyProtocolError,
    ProxyRefusedError,
    ProxyTimeoutError,
    ProxyURL,
)
from socks_sansio._client.failover import (
    Failures,
    RetryPolicy,
    Step,
    candidates_for,
    plan_failover,
    to_candidates,
)
from socks_sansio.adapters import asyncio as aio_adapter
from socks_sansio.adapters import sync as sync_adapter
from socks_sansio.adapters import trio as trio_adapter

from ..peer_servers import PeerServer, microsocks_server
from .servers import ThreadedServer, echo_server, recv_exactly, serve

IO = 5.0
BOUND = 5.0  # generous: a call with timeout=0.3 must end well within this
SECRET = "pw-s3cret-42"


def url(port: int, *, scheme: str = "socks5h", auth: str = "") -> str:
    return f"{scheme}://{auth}127.0.0.1:{port}"


def chains(*ports: int) -> list[tuple[ProxyURL, ...]]:
    return [(ProxyURL.parse(url(port)),) for port in ports]


# ------------------------------------------------------------------ the policy


def test_policy_defaults_retry_unreachable_and_timeouts_only() -> None:
    policy = RetryPolicy()
    assert (policy.attempts, policy.backoff, policy.backoff_factor, policy.max_backoff) == (3, 0.1, 2.0, 2.0)
    assert policy.retries(ProxyConnectionError("down"))
    assert policy.retries(ProxyTimeoutError("slow"))
    assert not policy.retries(ProxyAuthError("no", protocol="socks5", code=1))
    assert not policy.retries(ProxyRefusedError("general failure", protocol="socks5", code=1))
    assert not policy.retries(ProxyProtocolError("garbage"))
    assert not policy.retries(LocalProtocolError("impossible"))
    assert not policy.retries(OSError("direct"))


def test_policy_retry_on_is_configurable() -> None:
    policy = RetryPolicy(retry_on=(ProxyRefusedError,))
    assert policy.retries(ProxyRefusedError("general failure", protocol="socks5", code=1))
    assert not policy.retries(ProxyConnectionError("down"))


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(backoff=0.1, backoff_factor=2.0, max_backoff=0.5)
    assert [policy.delay(i) for i in range(6)] == pytest.approx([0.0, 0.1, 0.2, 0.4, 0.5, 0.5])
    assert policy.delay(5000) == 0.5  # no OverflowError from a huge exponent
    assert RetryPolicy(backoff=0.3, backoff_factor=1.0).delay(4) == pytest.approx(0.3)
    assert RetryPolicy(backoff=0.0).delay(3) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"attempts": 0}, ValueError),
        ({"attempts": -1}, ValueError),
        ({"attempts": True}, TypeError),
        ({"attempts": 2.0}, TypeError),
        ({"backoff": -0.1}, ValueError),
        ({"backoff": math.nan}, ValueError),
        ({"backoff": "1"}, TypeError),
        ({"backoff_factor": 0.5}, ValueError),
        ({"max_backoff": -1}, ValueError),
        ({"retry_on": [ProxyConnectionError]}, TypeError),
        ({"retry_on": (ProxyConnectionError, 3)}, TypeError),
        ({"retry_on": (int,)}, TypeError),
    ],
)
def test_policy_rejects_bad_values(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        RetryPolicy(**kwargs)


def test_policy_is_frozen() -> None:
    policy = RetryPolicy()
    with pytest.raises(AttributeError):
        policy.attempts = 5


# ------------------------------------------------------------------ the planner (pure)


def test_plan_goes_round_after_round_with_backoff_before_each_later_round() -> None:
    candidates = chains(1001, 1002)
    steps = list(plan_failover(candidates, RetryPolicy(attempts=3, backoff=0.1), lambda: None))
    assert [(s.number, s.round, s.candidate, s.delay) for s in steps] == [
        (1, 1, 1, 0.0),
        (2, 1, 2, 0.0),
        (3, 2, 1, 0.1),
        (4, 2, 2, 0.0),
        (5, 3, 1, 0.2),
        (6, 3, 2, 0.0),
    ]
    assert [s.chain for s in steps] == candidates * 3


def test_plan_with_one_attempt_tries_each_candidate_once() -> None:
    steps = list(plan_failover(chains(1, 2, 3), RetryPolicy(attempts=1), lambda: 100.0))
    assert [s.candidate for s in steps] == [1, 2, 3]
    assert all(s.delay == 0 for s in steps)


def test_plan_always_yields_the_first_step_without_asking_the_clock() -> None:
    def clock() -> float:
        raise AssertionError("the first step needs no clock")

    plan = plan_failover(chains(1, 2), RetryPolicy(), clock)
    assert next(plan).number == 1


def test_plan_stops_when_the_deadline_has_passed() -> None:
    left = iter([0.0])
    steps = list(plan_failover(chains(1, 2), RetryPolicy(), lambda: next(left)))
    assert [s.number for s in steps] == [1]


def test_plan_stops_when_a_backoff_would_outlast_the_deadline() -> None:
    steps = list(plan_failover(chains(1, 2), RetryPolicy(attempts=3, backoff=0.5), lambda: 0.4))
    assert [(s.round, s.candidate) for s in steps] == [(1, 1), (1, 2)]


def test_plan_follows_a_shrinking_deadline() -> None:
    clock = iter([10.0, 0.15, 0.05])  # asked before steps 2, 3 and 4
    steps = list(plan_failover(chains(1), RetryPolicy(attempts=5, backoff=0.1), lambda: next(clock)))
    assert [s.delay for s in steps] == pytest.approx([0.0, 0.1])


def test_step_describes_the_chain_without_passwords() -> None:
    chain = (ProxyURL.parse(f"socks5h://u:{SECRET}@a.test:1080"), ProxyURL.parse("http://b.test:3128"))
    step = Step(chain=chain, delay=0.0, number=1, round=1, candidate=1)
    assert SECRET not in step.describe()
    assert "a.test:1080" in step.describe()
    assert " -> " in step.describe()
    assert "direct" in Step(chain=(), delay=0.0, number=1, round=1, candidate=1).describe()


# ------------------------------------------------------------------ candidates


def test_candidates_are_proxies_or_chains() -> None:
    parsed = ProxyURL.parse("http://c.test:3128")
    candidates = to_candidates(["socks5h://a.test:1080", ["socks5h://a.test:1080", "http://b.test:3128"], parsed])
    assert [len(c) for c in candidates] == [1, 2, 1]
    assert candidates[2] == (parsed,)


@pytest.mark.parametrize(
    ("failover", "error"),
    [
        ([], ValueError),
        ([[]], ValueError),
        ("socks5h://a.test:1080", TypeError),
        (ProxyURL.parse("socks5h://a.test:1080"), TypeError),
        ([1080], TypeError),
        ([["socks5h://a.test:1080", None]], TypeError),
        (["not a url"], LocalProtocolError),
    ],
)
def test_bad_candidates(failover: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        to_candidates(failover)


def test_proxy_and_failover_exclude_each_other() -> None:
    with pytest.raises(TypeError, match="exclude each other"):
        candidates_for("socks5h://a.test:1", ["socks5h://b.test:2"], list)
    single = [ProxyURL.parse("socks5h://a.test:1")]
    assert candidates_for("socks5h://a.test:1", None, lambda: single) == [tuple(single)]


# ------------------------------------------------------------------ failures


def test_failures_note_every_attempt_without_passwords() -> None:
    failures = Failures(RetryPolicy())
    steps = list(plan_failover([(ProxyURL.parse(f"socks5h://u:{SECRET}@a.test:1"),)], RetryPolicy(), lambda: None))
    first = ProxyConnectionError("refused", proxy="socks5h://u:***@a.test:1")
    last = ProxyConnectionError("refused again", proxy="socks5h://u:***@a.test:1")
    assert failures.record(steps[0], first)
    assert failures.record(steps[1], last)
    error = failures.final_error()
    assert error is last
    assert len(error.__notes__) == 2
    assert "attempt 1" in error.__notes__[0] and "attempt 2" in error.__notes__[1]
    assert SECRET not in "\n".join(error.__notes__)


def test_failures_stop_at_an_error_the_policy_does_not_retry() -> None:
    failures = Failures(RetryPolicy())
    steps = list(plan_failover(chains(1, 2), RetryPolicy(), lambda: None))
    assert failures.record(steps[0], ProxyConnectionError("down"))
    refusal = ProxyAuthError("bad password", protocol="socks5", code=1)
    assert not failures.record(steps[1], refusal)
    assert len(refusal.__notes__) == 2  # annotated, ready to raise


# ------------------------------------------------------------------ loopback peers


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def stall_handler(conn: socket.socket) -> None:
    """A SOCKS5 proxy that answers the greeting, then never answers the request."""
    _, count = recv_exactly(conn, 2)
    recv_exactly(conn, count)
    conn.sendall(b"\x05\x00")
    with contextlib.suppress(OSError):
        while conn.recv(65536):
            pass


@contextlib.contextmanager
def counting_server() -> Iterator[tuple[ThreadedServer, list[int]]]:
    """A server that counts the connections it gets (and closes them)."""
    seen: list[int] = []
    lock = threading.Lock()

    def handler(conn: socket.socket) -> None:
        with lock:
            seen.append(1)

    with serve(handler) as server:
        yield server, seen


@pytest.fixture(scope="module")
def echo_addr() -> Iterator[tuple[str, int]]:
    with echo_server() as server:
        yield server.address


@pytest.fixture(scope="module")
def microsocks() -> Iterator[PeerServer]:
    with microsocks_server() as peer:
        yield peer


@pytest.fixture(scope="module")
def microsocks_auth() -> Iterator[PeerServer]:
    with microsocks_server(username="alice", password="right") as peer:
        yield peer


# The three backends behind one blocking signature: connect, send, read the echo, close.
Connector = Callable[..., tuple[bytes, tuple[str, ...]]]


def via_sync(host: str, port: int, **kwargs: object) -> tuple[bytes, tuple[str, ...]]:
    with sync_adapter.open_tunnel(host, port, **kwargs) as tunnel:
        tunnel.sendall(b"ping")
        data = b""
        while len(data) < 4:
            chunk = tunnel.recv(4 - len(data))
            assert chunk
            data += chunk
        return data, tunnel.info.proxies


def via_asyncio(host: str, port: int, **kwargs: object) -> tuple[bytes, tuple[str, ...]]:
    async def main() -> tuple[bytes, tuple[str, ...]]:
        tunnel = await aio_adapter.open_tunnel(host, port, **kwargs)
        try:
            tunnel.writer.write(b"ping")
            await tunnel.writer.drain()
            return await tunnel.reader.readexactly(4), tunnel.info.proxies
        finally:
            await tunnel.aclose()

    return asyncio.run(asyncio.wait_for(main(), 20.0))


def via_trio(host: str, port: int, **kwargs: object) -> tuple[bytes, tuple[str, ...]]:
    result: list[tuple[bytes, tuple[str, ...]]] = []

    async def main() -> None:
        with trio.fail_after(20.0):
            tunnel = await trio_adapter.open_tunnel(host, port, **kwargs)
            async with tunnel:
                await tunnel.stream.send_all(b"ping")
                data = b""
                while len(data) < 4:
                    chunk = await tunnel.stream.receive_some(4 - len(data))
                    assert chunk
                    data += chunk
                result.append((data, tunnel.info.proxies))

    trio.run(main)
    return result[0]


BACKENDS = pytest.mark.parametrize("via", [via_sync, via_asyncio, via_trio], ids=["sync", "asyncio", "trio"])


@BACKENDS
def test_failover_past_a_dead_proxy(via: Connector, microsocks: PeerServer, echo_addr: tuple[str, int]) -> None:
    healthy = f"socks5h://{microsocks.url}"
    start = time.monotonic()
    data, proxies = via(*echo_addr, failover=[url(dead_port()), healthy], timeout=IO)
    assert data == b"ping"
    assert proxies == (healthy,)
    assert time.monotonic() - start < BOUND


@BACKENDS
def test_failover_to_a_chain(via: Connector, microsocks: PeerServer, echo_addr: tuple[str, int]) -> None:
    healthy = f"socks5h://{microsocks.url}"
    data, proxies = via(*echo_addr, failover=[[url(dead_port()), healthy], [healthy, healthy]], timeout=IO)
    assert data == b"ping"
    assert proxies == (healthy, healthy)


@BACKENDS
def test_all_dead_raises_the_last_error_with_every_attempt_noted(via: Connector, echo_addr: tuple[str, int]) -> None:
    first, second = dead_port(), dead_port()
    failover = [url(first, auth=f"alice:{SECRET}@"), url(second)]
    with pytest.raises(ProxyConnectionError) as caught:
        via(*echo_addr, failover=failover, retry=RetryPolicy(attempts=2, backoff=0.01), timeout=IO)
    error = caught.value
    assert error.proxy == url(second)
    notes = error.__notes__
    assert len(notes) == 4
    assert [f"attempt {n}" in note for n, note in enumerate(notes, 1)] == [True] * 4
    assert f"127.0.0.1:{first}" in notes[0] and f"127.0.0.1:{second}" in notes[3]
    assert SECRET not in "\n".join(notes) + str(error) + repr(error)


@BACKENDS
def test_auth_refusal_does_not_retry(via: Connector, microsocks_auth: PeerServer, echo_addr: tuple[str, int]) -> None:
    wrong = f"socks5h://alice:{SECRET}@{microsocks_auth.url}"
    with counting_server() as (never, seen), pytest.raises(ProxyAuthError) as caught:
        via(*echo_addr, failover=[wrong, url(never.port)], retry=RetryPolicy(attempts=3), timeout=IO)
    assert seen == []  # the next candidate was never tried
    assert len(caught.value.__notes__) == 1
    assert SECRET not in "\n".join(caught.value.__notes__) + str(caught.value)


@BACKENDS
def test_the_deadline_bounds_the_whole_failover(
    via: Connector, microsocks: PeerServer, echo_addr: tuple[str, int]
) -> None:
    with serve(stall_handler) as stalling:
        start = time.monotonic()
        with pytest.raises(ProxyTimeoutError):
            via(*echo_addr, failover=[url(stalling.port), f"socks5h://{microsocks.url}"], timeout=0.3)
        assert time.monotonic() - start < BOUND


@BACKENDS
def test_proxy_and_failover_together_is_a_type_error(via: Connector, echo_addr: tuple[str, int]) -> None:
    with pytest.raises(TypeError, match="exclude each other"):
        via(*echo_addr, proxy=url(dead_port()), failover=[url(dead_port())], timeout=IO)


@BACKENDS
def test_retry_alone_retries_the_one_proxy(via: Connector, echo_addr: tuple[str, int]) -> None:
    port = dead_port()
    with pytest.raises(ProxyConnectionError) as caught:
        via(*echo_addr, proxy=url(port), retry=RetryPolicy(attempts=3, backoff=0.01), timeout=IO)
    assert len(caught.value.__notes__) == 3


def test_sync_connect_and_logging(
    microsocks: PeerServer, echo_addr: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="socks_sansio")
    dead = url(dead_port(), auth=f"alice:{SECRET}@")
    with sync_adapter.connect(*echo_addr, failover=[dead, f"socks5h://{microsocks.url}"], timeout=IO) as sock:
        sock.sendall(b"x")
        assert sock.recv(1) == b"x"
    assert "failover attempt 1" in caplog.text
    assert "failover attempt 2" in caplog.text
    assert SECRET not in caplog.text


def test_asyncio_open_connection_and_trio_open_tcp_stream(microsocks: PeerServer, echo_addr: tuple[str, int]) -> None:
    failover = [url(dead_port()), f"socks5h://{microsocks.url}"]

    async def with_asyncio() -> bytes:
        reader, writer = await aio_adapter.open_connection(*echo_addr, failover=failover, timeout=IO)
        writer.write(b"a")
        data: bytes = await reader.readexactly(1)
        writer.close()
        await writer.wait_closed()
        return data

    async def with_trio() -> None:
        with trio.fail_after(20.0):
            stream = await trio_adapter.open_tcp_stream(*echo_addr, failover=failover, timeout=IO)
            async with stream:
                await stream.send_all(b"t")
                assert await stream.receive_some(1) == b"t"

    assert asyncio.run(asyncio.wait_for(with_asyncio(), 20.0)) == b"a"
    trio.run(with_trio)

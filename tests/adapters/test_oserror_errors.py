"""ProxyConnectionError is a ConnectionError and ProxyTimeoutError a TimeoutError, on every backend.

Code written for sockets, asyncio or python-socks catches ``OSError``,
``ConnectionError`` or ``TimeoutError`` around a connect; these tests make a
real connect fail (a proxy port nobody listens on, a proxy that closes at once,
one that never answers, with a short deadline) through the sync, asyncio and
trio adapters and catch the error that way. A refusal stays outside OSError.
They also pin the plans' error mapping now that these two are OSErrors: a
proxy error is never wrapped a second time, and a raw OSError is never retried.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio

from socks_sansio import (
    ConnectPlan,
    ProxyConnectionError,
    ProxyError,
    ProxyRefusedError,
    ProxyTimeoutError,
    RetryPolicy,
    Stepper,
)
from socks_sansio import client_operations as ops
from socks_sansio.adapters import asyncio as asyncio_adapter
from socks_sansio.adapters import sync as sync_adapter
from socks_sansio.adapters import trio as trio_adapter
from tests.adapters.servers import HOST, recv_exactly, serve

SHORT = 0.3
"""The deadline against a silent proxy: it passes for sure (the proxy never answers)."""
TARGET = ("192.0.2.1", 80)  # never dialled: every proxy here fails first

# ------------------------------------------------------------------ connecting on each backend


def _sync(proxy: str, timeout: float) -> None:
    sync_adapter.connect(*TARGET, proxy=proxy, timeout=timeout).close()


def _asyncio(proxy: str, timeout: float) -> None:
    async def main() -> None:
        _, writer = await asyncio_adapter.open_connection(*TARGET, proxy=proxy, timeout=timeout)
        writer.close()

    asyncio.run(main())


def _trio(proxy: str, timeout: float) -> None:
    async def main() -> None:
        stream = await trio_adapter.open_tcp_stream(*TARGET, proxy=proxy, timeout=timeout)
        await stream.aclose()

    trio.run(main)


BACKENDS: dict[str, Callable[[str, float], None]] = {"sync": _sync, "asyncio": _asyncio, "trio": _trio}


@pytest.fixture(params=sorted(BACKENDS))
def connect(request: pytest.FixtureRequest) -> Callable[[str, float], None]:
    """``connect(proxy_url, timeout)`` on one backend (each test runs on all three)."""
    return BACKENDS[request.param]


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port bound but never listening: a connect to it is refused."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        yield sock.getsockname()[1]


def _silent(conn: socket.socket) -> None:
    """Reads the greeting and never answers (until the client gives up and closes)."""
    while conn.recv(4096):
        pass


def _hang_up(conn: socket.socket) -> None:
    """Closes the connection as soon as the greeting arrived."""
    conn.recv(4096)


def _refuse(conn: socket.socket) -> None:
    """A SOCKS5 proxy that refuses the CONNECT (REP 5)."""
    recv_exactly(conn, 3)
    conn.sendall(b"\x05\x00")
    recv_exactly(conn, 10)  # CONNECT to an IPv4 address
    conn.sendall(b"\x05\x05\x00\x01\x00\x00\x00\x00\x00\x00")


# ------------------------------------------------------------------ real failures, caught the ecosystem's way


def test_a_dead_proxy_port_is_a_connection_error(connect: Callable[[str, float], None], closed_port: int) -> None:
    proxy = f"socks5h://{HOST}:{closed_port}"
    with pytest.raises(ConnectionError) as caught:
        connect(proxy, 10.0)
    error = caught.value
    assert isinstance(error, ProxyConnectionError) and isinstance(error, OSError)
    assert error.message.startswith("cannot connect to the proxy: "), error.message
    assert error.proxy == proxy and error.errno is None
    assert isinstance(error.__cause__, OSError) and not isinstance(error.__cause__, ProxyError)
    try:
        connect(proxy, 10.0)
    except OSError as exc:  # what code written for plain sockets catches
        assert type(exc) is ProxyConnectionError
    else:
        pytest.fail("no error")


def test_a_proxy_closing_during_the_handshake_is_one_connection_error(
    connect: Callable[[str, float], None]
) -> None:
    """The driver's own error goes out as it is: not wrapped in another "... failed: ..." one."""
    with serve(_hang_up) as proxy, pytest.raises(OSError, match="closed the connection") as caught:
        connect(f"socks5h://{HOST}:{proxy.port}", 10.0)
    error = caught.value
    assert type(error) is ProxyConnectionError
    assert error.message == "the SOCKS5 proxy closed the connection during the handshake", error.message
    assert error.__cause__ is None


def test_a_silent_proxy_is_a_timeout_error(connect: Callable[[str, float], None]) -> None:
    with serve(_silent) as proxy:
        with pytest.raises(TimeoutError) as caught:
            connect(f"socks5h://{HOST}:{proxy.port}", SHORT)
        assert type(caught.value) is ProxyTimeoutError
        assert f"timed out after {SHORT} s during the SOCKS5 handshake" in caught.value.message
        with pytest.raises(OSError, match="timed out"):
            connect(f"socks5h://{HOST}:{proxy.port}", SHORT)
        # Python 3.10's asyncio.TimeoutError is its own class (the pure core cannot import asyncio to
        # derive from it): code for 3.10 catches both, as it must around python-socks too.
        with pytest.raises((TimeoutError, asyncio.TimeoutError)):
            connect(f"socks5h://{HOST}:{proxy.port}", SHORT)
        if sys.version_info >= (3, 11):
            with pytest.raises(asyncio.TimeoutError):
                connect(f"socks5h://{HOST}:{proxy.port}", SHORT)


def test_python_socks_style_code_handles_both(connect: Callable[[str, float], None], closed_port: int) -> None:
    """``except (OSError, TimeoutError)`` around a connect, as written for python-socks, gets both failures."""
    def attempt(proxy: str, timeout: float) -> str:
        try:
            connect(proxy, timeout)
        except (OSError, TimeoutError) as exc:
            return type(exc).__name__
        return "connected"

    assert attempt(f"socks5h://{HOST}:{closed_port}", 10.0) == "ProxyConnectionError"
    with serve(_silent) as proxy:
        assert attempt(f"socks5h://{HOST}:{proxy.port}", SHORT) == "ProxyTimeoutError"


def test_a_refusal_is_not_an_oserror(connect: Callable[[str, float], None]) -> None:
    with serve(_refuse) as proxy:
        try:
            connect(f"socks5://{HOST}:{proxy.port}", 10.0)
        except OSError as exc:  # pragma: no cover - the failure this test is about
            pytest.fail(f"a refusal was caught as an OSError: {exc!r}")
        except ProxyRefusedError as exc:
            assert exc.code == 5
        else:
            pytest.fail("no error")


# ------------------------------------------------------------------ the plans' error mapping


class _Script:
    """Answers a plan's operations: a SOCKS5 method selection, then *then* (an exception or octets)."""

    def __init__(self, then: BaseException | bytes) -> None:
        self.then = then
        self.reads = 0

    def perform(self, operation: object) -> Any:
        if isinstance(operation, ops.Receive):
            self.reads += 1
            if self.reads == 1:
                return b"\x05\x00"
            if isinstance(self.then, BaseException):
                raise self.then
            return self.then
        return None


def _run(plan: ConnectPlan, script: _Script) -> Any:
    return Stepper(plan.run()).run(script.perform)


@pytest.mark.parametrize("io_errors", [(OSError,), (OSError, ConnectionError, TimeoutError)])
def test_the_drivers_connection_error_is_not_wrapped_again(io_errors: tuple[type[BaseException], ...]) -> None:
    plan = ConnectPlan.for_call(*TARGET, proxy="socks5h://127.0.0.1:1080", timeout=5.0, io_errors=io_errors)
    with pytest.raises(ProxyConnectionError) as caught:
        _run(plan, _Script(b""))  # EOF instead of the reply
    assert caught.value.message == "the SOCKS5 proxy closed the connection during the handshake"
    assert caught.value.__cause__ is None


@pytest.mark.parametrize(
    "error",
    [ProxyTimeoutError("timed out after 1 s during a nested plan"), ProxyConnectionError("a nested plan's")],
    ids=["timeout", "connection"],
)
def test_a_proxy_error_thrown_in_comes_out_unchanged(error: ProxyError) -> None:
    """A runner (or a plan inside one) that already raised a proxy error: it is not mapped a second time."""
    plan = ConnectPlan.for_call(*TARGET, proxy="socks5h://127.0.0.1:1080", timeout=5.0)
    with pytest.raises(ProxyError) as caught:
        _run(plan, _Script(error))
    assert caught.value is error


def test_a_raw_timeout_under_the_deadline_still_becomes_the_deadline() -> None:
    plan = ConnectPlan.for_call(*TARGET, proxy="socks5h://127.0.0.1:1080", timeout=5.0)
    with pytest.raises(ProxyTimeoutError, match=r"timed out after 5\.0 s during the SOCKS5 handshake") as caught:
        _run(plan, _Script(TimeoutError("timed out")))
    assert type(caught.value.__cause__) is TimeoutError


def test_the_default_retry_policy_retries_proxy_failures_and_not_raw_oserrors() -> None:
    policy = RetryPolicy()
    assert policy.retries(ProxyConnectionError("unreachable"))
    assert policy.retries(ProxyTimeoutError("late"))
    for raw in (OSError("x"), ConnectionRefusedError(111, "refused"), TimeoutError("late"), ConnectionError("x")):
        assert not policy.retries(raw), raw
    assert not policy.retries(ProxyRefusedError("no", protocol="socks5", code=5))


def test_failover_gives_up_at_once_on_a_raw_oserror() -> None:
    """A failure with no proxy in it (here the target's TLS) is raised as it is, and not retried."""
    dials = []
    proxy_says = bytearray(b"\x05\x00" b"\x05\x00\x00\x01\x7f\x00\x00\x01\x04\x38")  # no auth; CONNECT done

    def perform(operation: object) -> Any:
        if isinstance(operation, ops.Dial):
            dials.append(operation.address)
        if isinstance(operation, ops.Receive):
            data = bytes(proxy_says[: operation.max_bytes])
            del proxy_says[: operation.max_bytes]
            return data
        if isinstance(operation, ops.StartTLS) and not operation.to_proxy:
            raise ConnectionResetError(104, "reset during the target's TLS")
        return None

    plan = ConnectPlan.for_call(
        *TARGET, proxy=None, failover=["socks5h://127.0.0.1:1", "socks5h://127.0.0.1:2"], tls=True
    )
    with pytest.raises(ConnectionResetError):
        Stepper(plan.run()).run(perform)
    assert len(dials) == 1

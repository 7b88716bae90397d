"""The client plans, driven by hand: every operation checked, no socket anywhere.

A plan is a generator of operations; these tests play the runner: they answer
each operation with what a network would (a SOCKS5 proxy's replies, an I/O
error, a time-out) and check what the plan asks for next and what it raises.
The real-socket behaviour is covered by tests/adapters (three runners, real peers).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socks_sansio import (
    Address,
    AssociatePlan,
    ClientHandshake,
    ConnectPlan,
    HandshakePlan,
    LocalProtocolError,
    PoolKeeper,
    ProtocolError,
    ProxyConnectionError,
    ProxyError,
    ProxyRefusedError,
    ProxyTimeoutError,
    ProxyURL,
    RetryPolicy,
    Stepper,
)
from socks_sansio import client_operations as ops

METHOD_NO_AUTH = b"\x05\x00"
REPLY_OK = b"\x05\x00\x00\x01\x7f\x00\x00\x01\x04\x38"  # bound 127.0.0.1:1080
REPLY_REFUSED = b"\x05\x05\x00\x01\x00\x00\x00\x00\x00\x00"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Network:
    """Answers a plan's operations from a script of replies (octets a proxy sends), recording every operation."""

    def __init__(
        self, replies: list[bytes] | None = None, *, fail: Callable[[object], BaseException | None] | None = None
    ) -> None:
        self.replies = list(replies or [])
        self.sent = bytearray()
        self.seen: list[object] = []
        self.fail = fail or (lambda operation: None)
        self.open = False

    def perform(self, operation: object) -> object:
        self.seen.append(operation)
        error = self.fail(operation)
        if error is not None:
            raise error
        if isinstance(operation, ops.Dial):
            self.open = True
        elif isinstance(operation, ops.Close):
            self.open = False
        elif isinstance(operation, ops.Send):
            self.sent += operation.data
        elif isinstance(operation, ops.Receive):
            if not self.replies:
                return b""
            head = self.replies[0]
            data, rest = head[: operation.max_bytes], head[operation.max_bytes :]
            if rest:
                self.replies[0] = rest
            else:
                self.replies.pop(0)
            return data
        elif isinstance(operation, ops.Resolve):
            return Address("192.0.2.7", operation.port)
        elif isinstance(operation, ops.PeerAddress):
            return "198.51.100.1"
        elif isinstance(operation, ops.OpenDatagram):
            return Address("127.0.0.1", 5000)
        return None

    def kinds(self) -> list[str]:
        return [type(op).__name__ for op in self.seen]


def drive(steps: Generator[Any, Any, Any], network: Network) -> Any:
    return Stepper(steps).run(network.perform)


def test_a_socks5_connect_step_by_step() -> None:
    plan = ConnectPlan.for_call("example.com", 443, proxy="socks5h://127.0.0.1:1080")
    network = Network([METHOD_NO_AUTH, REPLY_OK, b"tunnel octets the plan never reads"])
    handshake = drive(plan.run(), network)
    assert isinstance(handshake, ClientHandshake) and handshake.established
    kinds = network.kinds()
    assert kinds[:4] == ["Dial", "Send", "Receive", "Send"] and set(kinds[4:]) == {"Receive"}
    assert network.seen[0].address == Address("127.0.0.1", 1080)  # type: ignore[attr-defined]
    assert network.replies == [b"tunnel octets the plan never reads"], "no read past the reply"
    assert bytes(network.sent).startswith(b"\x05\x01\x00\x05\x01\x00\x03\x0bexample.com\x01\xbb")
    info = plan.info()
    assert info.proxies == ("socks5h://127.0.0.1:1080",) and info.bound == Address("127.0.0.1", 1080)


def test_reads_never_ask_for_more_than_the_reply_needs() -> None:
    plan = ConnectPlan.for_call("example.com", 443, proxy="socks5h://127.0.0.1:1080")
    network = Network([METHOD_NO_AUTH, REPLY_OK])
    drive(plan.run(), network)
    asked = [op.max_bytes for op in network.seen if isinstance(op, ops.Receive)]
    assert asked[0] == 2, "the method selection is two octets"
    assert sum(asked[1:]) <= len(REPLY_OK)


def test_a_whole_socks5_connect_is_six_operations() -> None:
    # Dial, greeting, method selection, request, and the reply in two reads
    # (VER REP RSV ATYP with the address's first octet, then the rest): each
    # operation is a system call or two in every runner.
    plan = ConnectPlan.for_call("127.0.0.1", 443, proxy="socks5://127.0.0.1:1080")
    network = Network([METHOD_NO_AUTH, REPLY_OK])
    stepper = Stepper(plan.run())
    handshake = stepper.run(network.perform)
    assert stepper.done and stepper.value is handshake and handshake.established
    assert network.kinds() == ["Dial", "Send", "Receive", "Send", "Receive", "Receive"]
    assert [op.max_bytes for op in network.seen if isinstance(op, ops.Receive)] == [2, 5, 5]


def test_socks5_scheme_resolves_here_and_socks4_asks_for_ipv4() -> None:
    plan = ConnectPlan.for_call("example.com", 80, proxy="socks4://127.0.0.1:1080")
    network = Network([b"\x00\x5a\x00\x00\x00\x00\x00\x00"])
    drive(plan.run(), network)
    resolves = [op for op in network.seen if isinstance(op, ops.Resolve)]
    assert len(resolves) == 1 and resolves[0].family == 4 and resolves[0].host == "example.com"


def test_an_impossible_request_fails_before_any_io() -> None:
    plan = ConnectPlan.for_call("::1", 80, proxy="socks4://127.0.0.1:1080")
    network = Network()
    with pytest.raises(LocalProtocolError, match=r"IPv6|SOCKS4"):
        drive(plan.run(), network)
    assert network.seen == []


def test_a_chain_asks_each_hop_for_the_next_and_layers_tls() -> None:
    plan = ConnectPlan.for_call(
        "example.com", 443, proxy=["https://a.test:8443", "socks5h://b.test:1080"], tls=True
    )
    network = Network([b"HTTP/1.1 200 OK\r\n\r\n", METHOD_NO_AUTH, REPLY_OK])
    drive(plan.run(), network)
    kinds = network.kinds()
    assert kinds[:2] == ["Dial", "StartTLS"] and kinds[-1] == "StartTLS"
    first, last = network.seen[1], network.seen[-1]
    assert isinstance(first, ops.StartTLS) and first.to_proxy and first.server_hostname == "a.test"
    assert isinstance(last, ops.StartTLS) and not last.to_proxy and last.server_hostname == "example.com"
    assert bytes(network.sent).startswith(b"CONNECT b.test:1080 HTTP/1.1\r\n")


def test_io_errors_with_a_proxy_become_proxy_connection_errors_naming_it() -> None:
    def refuse(operation: object) -> BaseException | None:
        return ConnectionRefusedError(111, "Connection refused") if isinstance(operation, ops.Dial) else None

    plan = ConnectPlan.for_call("example.com", 80, proxy="socks5h://user:secret@127.0.0.1:1080")
    with pytest.raises(ProxyConnectionError, match=r"cannot connect to the proxy") as caught:
        drive(plan.run(), Network(fail=refuse))
    assert "secret" not in str(caught.value)
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


def test_errors_with_the_target_itself_stay_as_they_are() -> None:
    def refuse(operation: object) -> BaseException | None:
        return ConnectionRefusedError(111, "Connection refused") if isinstance(operation, ops.Dial) else None

    with pytest.raises(ConnectionRefusedError):
        drive(ConnectPlan.for_call("example.com", 80, proxy=None).run(), Network(fail=refuse))


def test_a_time_out_under_a_deadline_is_the_deadline() -> None:
    def stall(operation: object) -> BaseException | None:
        return TimeoutError("timed out") if isinstance(operation, ops.Receive) else None

    plan = ConnectPlan.for_call("example.com", 80, proxy="socks5h://127.0.0.1:1080", timeout=1.0)
    with pytest.raises(ProxyTimeoutError, match=r"SOCKS5 handshake asking for CONNECT example\.com:80"):
        drive(plan.run(), Network(fail=stall))


def test_failover_tries_the_next_candidate_and_notes_every_attempt() -> None:
    def first_down(operation: object) -> BaseException | None:
        if isinstance(operation, ops.Dial) and operation.address.port == 1:
            return ConnectionRefusedError(111, "Connection refused")
        return None

    clock = Clock()
    plan = ConnectPlan.for_call(
        "example.com", 80, proxy=None, failover=["socks5h://127.0.0.1:1", "socks5h://127.0.0.1:2"],
        retry=RetryPolicy(attempts=1), clock=clock,
    )  # fmt: skip
    network = Network([METHOD_NO_AUTH, REPLY_OK], fail=first_down)
    drive(plan.run(), network)
    assert network.kinds()[:3] == ["Dial", "Close", "Dial"]
    assert plan.chain[0].address.port == 2


def test_a_refusal_is_not_retried_and_carries_the_notes() -> None:
    plan = ConnectPlan.for_call(
        "example.com", 80, proxy=None, failover=["socks5h://127.0.0.1:1", "socks5h://127.0.0.1:2"]
    )
    network = Network([METHOD_NO_AUTH, REPLY_REFUSED])
    with pytest.raises(ProxyRefusedError) as caught:
        drive(plan.run(), network)
    assert [type(op).__name__ for op in network.seen].count("Dial") == 1
    assert any("failover attempt 1" in note for note in caught.value.__notes__)


def test_the_runners_timeout_error_names_the_step_and_the_attempts() -> None:
    clock = Clock()
    plan = ConnectPlan.for_call("example.com", 80, proxy="socks5h://127.0.0.1:1080", timeout=2.0, clock=clock)
    steps = plan.run()
    assert isinstance(next(steps), ops.Dial)
    clock.now += 3
    assert plan.remaining() == 0.0
    error = plan.timeout_error()
    assert "timed out after 2.0 s during the TCP connect to 127.0.0.1:1080" in str(error)


def test_a_prepared_connection_costs_one_request_and_falls_back_cold_when_broken() -> None:
    prepare = ConnectPlan.preparing([ProxyURL.parse("socks5h://127.0.0.1:1080")])
    network = Network([METHOD_NO_AUTH])
    handshake = drive(prepare.run(), network)
    assert handshake.status.name == "READY"
    # A hit: only the request and its reply.
    hit = ConnectPlan.for_call("example.com", 80, proxy="socks5h://127.0.0.1:1080", prepared=handshake)
    network = Network([REPLY_OK])
    drive(hit.run(), network)
    kinds = network.kinds()
    assert kinds[0] == "Send" and set(kinds[1:]) == {"Receive"}, "no dial, no greeting: the request only"
    assert not hit.prepared_lost
    # Broken: the proxy had closed it; the plan closes it and connects cold.
    again = drive(prepare_fresh(), Network([METHOD_NO_AUTH]))
    miss = ConnectPlan.for_call("example.com", 80, proxy="socks5h://127.0.0.1:1080", prepared=again)
    network = Network([b"", METHOD_NO_AUTH, REPLY_OK])
    network.replies = [b""]  # EOF at once

    def reply_after_close(operation: object) -> BaseException | None:
        if isinstance(operation, ops.Dial):
            network.replies = [METHOD_NO_AUTH, REPLY_OK]
        return None

    network.fail = reply_after_close
    drive(miss.run(), network)
    assert miss.prepared_lost and "Close" in network.kinds() and "Dial" in network.kinds()


def prepare_fresh() -> Generator[Any, Any, Any]:
    return ConnectPlan.preparing([ProxyURL.parse("socks5h://127.0.0.1:1080")]).run()


def test_bind_advertises_the_proxy_address_for_an_unspecified_reply() -> None:
    plan = ConnectPlan.for_bind("socks5://127.0.0.1:1080", Address("0.0.0.0", 0))
    network = Network([METHOD_NO_AUTH, b"\x05\x00\x00\x01\x00\x00\x00\x00\x30\x39"])
    handshake = drive(plan.run(), network)
    assert handshake.status.name == "BIND_LISTENING"
    assert plan.bind_address == Address("198.51.100.1", 12345)
    accept = HandshakePlan(handshake)
    drive(accept.run(), Network([b"\x05\x00\x00\x01\xc0\x00\x02\x09\x00\x50"]))
    assert handshake.established and handshake.bind_peer == Address("192.0.2.9", 80)


def test_bind_needs_a_socks_proxy_last() -> None:
    with pytest.raises(LocalProtocolError, match="HTTP"):
        ConnectPlan.for_bind("http://127.0.0.1:3128", Address("0.0.0.0", 0))


def test_udp_associate_announces_its_socket_and_resolves_nothing_for_an_ip_relay() -> None:
    plan = AssociatePlan("socks5://127.0.0.1:1080")
    network = Network([METHOD_NO_AUTH, b"\x05\x00\x00\x01\x00\x00\x00\x00\x13\x88"])
    drive(plan.run(), network)
    assert plan.local == Address("127.0.0.1", 5000)
    assert plan.relay == Address("198.51.100.1", 5000)
    assert b"\x05\x03\x00\x01\x7f\x00\x00\x01\x13\x88" in bytes(network.sent), "the request names our UDP socket"
    packet = Stepper(plan.datagram(b"hi", ("example.com", 53))).run(network.perform)
    assert packet == b"\x00\x00\x00\x01\xc0\x00\x02\x07\x00\x35hi", "socks5:// resolves the name here"


def test_udp_associate_needs_one_socks5_proxy() -> None:
    with pytest.raises(LocalProtocolError, match="SOCKS5"):
        AssociatePlan(["socks5://a.test:1", "socks5://b.test:2"])


@settings(max_examples=300)
@given(replies=st.lists(st.binary(max_size=40), max_size=5), scheme=st.sampled_from(["socks5h", "socks4a", "http"]))
def test_any_proxy_answer_ends_in_the_librarys_errors_only(replies: list[bytes], scheme: str) -> None:
    plan = ConnectPlan.for_call("example.com", 80, proxy=f"{scheme}://127.0.0.1:1080")
    with contextlib.suppress(ProxyError, ProtocolError):  # anything else fails the test
        drive(plan.run(), Network(replies))


# -- the pool's keeper ---------------------------------------------------------------------


def drive_keeper(steps: Generator[Any, Any, Any], prepare: Callable[[], object], *, waits: int = 1) -> list[str]:
    """Run a keeper generator; ``Wait``/``WaitChanged``/``Pause`` end the run after *waits* of them."""
    seen: list[str] = []
    stepper: Stepper[Any, Any] = Stepper(steps)
    operation = stepper.send(None)
    while operation is not None:
        seen.append(type(operation).__name__)
        if isinstance(operation, ops.Wait | ops.WaitChanged | ops.Pause):
            waits -= 1
            if waits < 0:
                stepper.close()
                break
        if isinstance(operation, ops.Prepare):
            try:
                operation = stepper.send(prepare())
            except Exception as exc:  # the fake preparation's failure, thrown in
                operation = stepper.throw(exc)
            continue
        operation = stepper.send(None)
    return seen


def test_the_keeper_fills_then_waits_for_the_next_expiry() -> None:
    clock = Clock()
    keeper: PoolKeeper[object] = PoolKeeper("socks5://127.0.0.1:1080", size=2, idle_timeout=5.0, clock=clock)
    seen = drive_keeper(keeper.maintain(), object, waits=0)
    assert seen == ["Prepare", "Prepare", "Notify", "Wait"]
    assert len(keeper.idle) == 2 and keeper.idle.stats.opened == 2


def test_the_keeper_backs_off_while_preparing_fails() -> None:
    keeper: PoolKeeper[object] = PoolKeeper("socks5://127.0.0.1:1080", size=3, idle_timeout=1.0)

    def failing() -> object:
        raise ProxyConnectionError("down")

    seen = drive_keeper(keeper.maintain(), failing, waits=0)
    assert seen[:3] == ["Prepare", "Notify", "Pause"], "stops at the first failure, then backs off"
    assert keeper.idle.opening == 0 and keeper.idle.stats.failed >= 1


def test_fill_raises_the_first_error_and_a_stop_midway_cancels_the_refills() -> None:
    keeper: PoolKeeper[object] = PoolKeeper("socks5://127.0.0.1:1080", size=2, idle_timeout=5.0)

    def refused() -> object:
        raise ProxyRefusedError("no", protocol="socks5", code=2)

    with pytest.raises(ProxyRefusedError):
        drive_keeper(keeper.fill(), refused)
    assert keeper.idle.opening == 0
    steps = keeper.fill()
    assert isinstance(next(steps), ops.Prepare)
    assert keeper.idle.opening == 2
    steps.close()  # the runner was cancelled while preparing
    assert keeper.idle.opening == 0


def test_a_pool_needs_a_proxy() -> None:
    with pytest.raises(LocalProtocolError):
        PoolKeeper([], size=1, idle_timeout=1.0)

"""The server session, driven by hand: what it asks for, what it replies, how each connection ends.

These tests play the runner for one :class:`ServerSession`: they feed the
client's octets for each ``Receive``, answer lookups, dials, credential
checks, and throw in time-outs and errors, then check the replies sent, what
is handed over, and the outcome counted. Both real servers (asyncio, trio) run
the same session; tests/server and tests/adapters cover them over sockets.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import Any

import pytest

from socks_sansio import (
    AccessPolicy,
    AccessRule,
    Address,
    Outcome,
    OutcomeKind,
    ProxyRefusedError,
    Rate,
    RateLimitConfig,
    RateLimits,
    ServerConfig,
    ServerSession,
    ServerStats,
    StartRelay,
    StartUdpRelay,
    Stepper,
    UdpDatagram,
    UserDatabase,
    encode_udp_datagram,
    parse_upstream,
)
from socks_sansio import server_operations as sops
from socks_sansio.adapters.server.metrics import NullMetrics

GREETING = b"\x05\x01\x00"
CONNECT_NAME = b"\x05\x01\x00\x03\x0bexample.com\x00\x50"
CONNECT_IP = b"\x05\x01\x00\x01\xc0\x00\x02\x01\x00\x50"
CONNECT_LOOPBACK = b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Runner:
    """Performs a session's operations from a script; records what was sent and asked."""

    def __init__(self, client: list[bytes], answers: dict[type, Callable[[Any], object]] | None = None) -> None:
        self.client = list(client)
        self.sent = bytearray()
        self.asked: list[object] = []
        self.answers = answers or {}

    def perform(self, operation: object) -> object:
        self.asked.append(operation)
        answer = self.answers.get(type(operation))
        if answer is not None:
            return answer(operation)
        if isinstance(operation, sops.Send):
            self.sent += operation.data
            return None
        if isinstance(operation, sops.Receive):
            return self.client.pop(0) if self.client else b""
        if isinstance(operation, sops.Resolve):
            return [ipaddress.ip_address("192.0.2.1")]
        if isinstance(operation, sops.CheckCredentials):
            return operation.password == b"right"
        if isinstance(operation, sops.Dial):
            return ("198.51.100.2", 40000), ("192.0.2.1", 80)
        if isinstance(operation, sops.DialUpstream | sops.Listen | sops.OpenDatagram):
            return ("198.51.100.2", 40000)
        if isinstance(operation, sops.AwaitPeer):
            return ("203.0.113.9", 5555)
        raise AssertionError(operation)


def session_for(config: ServerConfig | None = None, *, stats: ServerStats | None = None, clock: Clock | None = None,
                limiter: RateLimits | None = None) -> ServerSession:  # fmt: skip
    config = config or ServerConfig()
    return ServerSession(
        config, ("127.0.0.1", 50000), stats=stats if stats is not None else ServerStats(),
        limiter=limiter if limiter is not None else config.rate_limiter(),
        metrics=NullMetrics(), clock=clock or Clock(),
    )  # fmt: skip


def run(session: ServerSession, runner: Runner) -> Any:
    return Stepper(session.run()).run(runner.perform)


def test_a_connect_by_name_resolves_dials_then_replies_and_hands_over() -> None:
    session = session_for()
    runner = Runner([GREETING + CONNECT_NAME + b"early octets"])
    handed = run(session, runner)
    assert isinstance(handed, StartRelay) and handed.early == b"early octets" and not handed.client_eof
    kinds = [type(op).__name__ for op in runner.asked]
    assert kinds.index("Resolve") < kinds.index("Dial") < len(kinds) - 1, "the success reply comes after the dial"
    assert bytes(runner.sent) == b"\x05\x00" + b"\x05\x00\x00\x01\xc6\x33\x64\x02\x9c\x40"
    assert session.handshake is None, "the handshake is released for the relay"
    session.finish(Outcome(OutcomeKind.OK))
    assert session.finished


def test_the_ssrf_guard_checks_every_address_a_name_resolves_to() -> None:
    session = session_for(ServerConfig(policy=AccessPolicy(block_private=True)))
    runner = Runner([GREETING + CONNECT_NAME], {sops.Resolve: lambda op: [ipaddress.ip_address("127.0.0.1")]})
    outcome = run(session, runner)
    assert outcome.kind is OutcomeKind.DENIED
    assert runner.sent.endswith(b"\x05\x02\x00\x01\x00\x00\x00\x00\x00\x00"), "REP 2: not allowed"
    assert not any(isinstance(op, sops.Dial) for op in runner.asked)


def test_failures_map_to_the_reply_every_protocol_can_express() -> None:
    def refused(op: object) -> object:
        raise ConnectionRefusedError(111, "refused")

    outcome = run(session_for(), runner := Runner([GREETING + CONNECT_IP], {sops.Dial: refused}))
    assert str(outcome) == "dial failed: connection_refused"
    assert runner.sent[2:4] == b"\x05\x05"  # REP 5

    def slow(op: object) -> object:
        raise TimeoutError

    outcome = run(session_for(), Runner([GREETING + CONNECT_NAME], {sops.Resolve: slow}))
    assert str(outcome) == "resolve failed: TimeoutError"


def test_negotiation_time_out_and_eof() -> None:
    def stall(op: object) -> object:
        raise TimeoutError

    assert run(session_for(), Runner([], {sops.Receive: stall})).kind is OutcomeKind.NEGOTIATION_TIMEOUT
    assert run(session_for(), Runner([b""])).kind is OutcomeKind.CLOSED_DURING_NEGOTIATION


def test_credentials_are_checked_by_the_runner_and_a_wrong_password_counts() -> None:
    config = ServerConfig(users=UserDatabase({"alice": "right"}))
    login = b"\x05\x01\x02" + b"\x01\x05alice\x05wrong"
    stats = ServerStats()
    session = session_for(config, stats=stats)
    outcome = run(session, runner := Runner([login]))
    assert outcome.kind is OutcomeKind.AUTH_FAILED
    assert any(isinstance(op, sops.CheckCredentials) for op in runner.asked)
    session.finish(outcome)
    assert stats.failures == {"authentication failed": 1} and stats.active == 0


def test_a_refusal_by_the_protocol_says_why() -> None:
    config = ServerConfig(users=UserDatabase({"alice": "right"}))
    socks4 = b"\x04\x01\x00\x50\xc0\x00\x02\x01alice\x00"
    runner = Runner([socks4])
    outcome = run(session_for(config), runner)
    assert outcome.kind is OutcomeKind.REFUSED
    assert "SOCKS4 carries no password" in str(outcome) and "allow_socks4_without_auth" in str(outcome)
    assert bytes(runner.sent)[:2] == b"\x00\x5b"  # CD 91: rejected
    outcome = run(session_for(config), Runner([GREETING]))  # offers no auth only
    assert outcome.kind is OutcomeKind.REFUSED
    assert str(outcome) == ("refused: no acceptable authentication method: the client offered 0x00, "
                            "the server takes 0x02 (username/password)")


def test_a_protocol_error_sends_the_prescribed_refusal_quietly() -> None:
    runner = Runner([b"\x05\x01\x00\x05\x01\x00\x09"])  # ATYP 9
    outcome = run(session_for(), runner)
    assert outcome.kind is OutcomeKind.PROTOCOL_ERROR
    quiet = [op for op in runner.asked if isinstance(op, sops.Send) and op.quiet]
    assert quiet and quiet[-1].data.endswith(b"\x05\x08\x00\x01\x00\x00\x00\x00\x00\x00")  # REP 8


def test_the_tunnel_rate_limit_refuses_with_retry_after() -> None:
    limits = RateLimitConfig(tunnels_per_client=Rate(1))
    config = ServerConfig(rate_limits=limits)
    limiter = RateLimits(limits)
    assert isinstance(run(session_for(config, limiter=limiter), Runner([GREETING + CONNECT_IP])), StartRelay)
    request = b"CONNECT 192.0.2.1:80 HTTP/1.1\r\nHost: 192.0.2.1:80\r\n\r\n"
    runner = Runner([request])
    assert run(session_for(config, limiter=limiter), runner).kind is OutcomeKind.RATE_LIMITED
    assert runner.sent.startswith(b"HTTP/1.1 429 ") and b"Retry-After: 1\r\n" in runner.sent


def test_routes_through_an_upstream_check_the_name_as_sent() -> None:
    config = ServerConfig(upstreams=(parse_upstream("socks5h://upstream.test:1080"),),
                          policy=AccessPolicy(rules=(AccessRule.parse("deny", "to=*.blocked"),)))  # fmt: skip
    runner = Runner([GREETING + b"\x05\x01\x00\x03\x09a.blocked\x00\x50"])
    assert run(session_for(config), runner).kind is OutcomeKind.DENIED
    runner = Runner([GREETING + CONNECT_NAME])
    assert isinstance(run(session_for(config), runner), StartRelay)
    upstream = [op for op in runner.asked if isinstance(op, sops.DialUpstream)]
    assert upstream and upstream[0].target == Address("example.com", 80)
    assert not any(isinstance(op, sops.Resolve) for op in runner.asked), "the upstream resolves the name"

    def refused(op: object) -> object:
        raise ProxyRefusedError("refused", protocol="socks5", code=5)

    outcome = run(session_for(config), Runner([GREETING + CONNECT_NAME], {sops.DialUpstream: refused}))
    assert str(outcome) == "upstream failed: connection_refused (ProxyRefusedError)"


def test_bind_replies_twice_and_handles_a_client_that_leaves() -> None:
    bind = b"\x05\x02\x00\x01\x00\x00\x00\x00\x00\x00"
    runner = Runner([GREETING + bind])
    assert isinstance(run(session_for(), runner), StartRelay)
    assert runner.sent.count(b"\x05\x00\x00\x01") == 2
    assert run(session_for(), Runner([GREETING + bind], {sops.AwaitPeer: lambda op: None})).kind is (
        OutcomeKind.BIND_CLIENT_LEFT
    )

    def nobody(op: object) -> object:
        raise TimeoutError

    assert run(session_for(), Runner([GREETING + bind], {sops.AwaitPeer: nobody})).kind is OutcomeKind.BIND_NO_PEER


def test_udp_associate_hands_over_a_policy_that_keeps_strangers_out() -> None:
    stats = ServerStats()
    session = session_for(stats=stats)
    handed = run(session, Runner([GREETING + b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00"]))
    assert isinstance(handed, StartUdpRelay)
    policy = handed.policy
    packet = encode_udp_datagram(UdpDatagram(address=Address("192.0.2.1", 53), data=b"query"))
    datagram = policy.received(packet, ("127.0.0.1", 6000))
    assert isinstance(datagram, UdpDatagram)
    destination = Stepper(policy.destination(datagram, ipv6=False)).run(lambda op: [])
    assert destination == ("192.0.2.1", 53)
    reply = policy.received(b"answer", ("192.0.2.1", 53))
    assert isinstance(reply, tuple) and reply[1] == ("127.0.0.1", 6000)
    assert policy.received(b"spoofed", ("192.0.2.99", 53)) is None
    assert policy.received(b"\x00\x00\x01" + packet[3:], ("127.0.0.1", 6000)) is None  # a fragment
    assert stats.failures["udp dropped"] == 1


def test_udp_associate_is_refused_with_proxy_upstreams() -> None:
    config = ServerConfig(upstreams=(parse_upstream("socks5h://upstream.test:1080"),))
    runner = Runner([GREETING + b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00"])
    assert run(session_for(config), runner).kind is OutcomeKind.UDP_UNSUPPORTED


def test_byte_counts_and_limits_go_through_moved() -> None:
    limits = RateLimitConfig(bytes_per_client=Rate(1000, 1000))
    session = session_for(ServerConfig(rate_limits=limits), limiter=RateLimits(limits))
    assert session.moved(True, 500, 0.0) == 0.0
    assert session.moved(False, 1500, 0.0) > 0, "over the burst: a pause"
    assert (session.up, session.down) == (500, 1500)


def test_busy_and_clients_not_allowed_end_at_once() -> None:
    stats = ServerStats()
    config = ServerConfig(max_clients=1)
    first = session_for(config, stats=stats)
    second = session_for(config, stats=stats)
    assert run(second, Runner([])).kind is OutcomeKind.BUSY
    second.finish(Outcome(OutcomeKind.BUSY))
    first.finish(Outcome(OutcomeKind.CANCELLED))
    assert stats.active == 0 and stats.failures == {"busy": 1, "cancelled": 1}
    closed = ServerConfig(policy=AccessPolicy(rules=(AccessRule.parse("deny", "from=127.0.0.0/8"),)))
    assert run(session_for(closed), Runner([])).kind is OutcomeKind.CLIENT_NOT_ALLOWED


def test_finish_logs_one_line_without_the_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="socks_sansio.server")
    config = ServerConfig(users=UserDatabase({"alice": "right"}))
    session = session_for(config)
    run(session, Runner([b"\x05\x01\x02\x01\x05alice\x05right" + CONNECT_IP]))
    session.finish(Outcome(OutcomeKind.IDLE_TIMEOUT))
    session.finish(Outcome(OutcomeKind.OK))  # once only
    lines = [r.getMessage() for r in caplog.records if "outcome=" in r.getMessage()]
    assert lines == [
        "127.0.0.1:50000 user=alice proto=socks5 cmd=CONNECT target=192.0.2.1:80 up=0 down=0 time=0.000s "
        "outcome=idle timeout"
    ]
    assert "right" not in caplog.text

"""The pure rate limiter: token buckets (all-or-nothing and debt), keyed limits, exemptions, eviction."""

from __future__ import annotations

import ipaddress
import itertools
import math
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from socks_sansio import LocalProtocolError, Rate, RateLimitConfig, RateLimits
from socks_sansio._server.ratelimit import TokenBucket

ALICE, BOB = b"alice", b"bob"
HOME = ipaddress.ip_address("192.0.2.7")
TOLERANCE = 1e-9
SLACK = 1e-6  # waits shorter than this count as none

rates = st.floats(0.01, 1000)
bursts = st.floats(1, 1000)
# (gap since the previous call, size); a gap may be negative: a clock that stepped back adds nothing.
schedules = st.lists(st.tuples(st.floats(-1, 5), st.integers(0, 5000)), max_size=60)


def times(schedule: list[tuple[float, int]]) -> list[float]:
    return list(itertools.accumulate(gap for gap, _n in schedule))


# -- one bucket ------------------------------------------------------------------------


def test_a_bucket_starts_full_and_refills_at_its_rate() -> None:
    bucket = TokenBucket(2, 4, now=100)
    assert bucket.full(100) and bucket.wait(4, 100) == 0
    assert bucket.take(4, 100) == 0
    assert bucket.wait(1, 100) == pytest.approx(0.5)
    assert bucket.tokens(101) == pytest.approx(2)
    assert bucket.tokens(1000) == 4  # never above the burst


def test_debt_is_repaid_before_the_pause_ends() -> None:
    bucket = TokenBucket(100, 100, now=0)
    assert bucket.take(300, 0) == pytest.approx(2)  # 100 held, 200 owed at 100/s
    assert bucket.take(50, 1) == pytest.approx(1.5)  # still 100 owed, plus 50
    assert bucket.tokens(2.5) == pytest.approx(0)


def test_a_clock_going_back_adds_nothing() -> None:
    bucket = TokenBucket(1, 1, now=10)
    bucket.take(1, 10)
    assert bucket.tokens(5) == 0
    assert bucket.tokens(10.5) == pytest.approx(0.5)


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (1, 0), (-1, 1), (math.inf, 1), (1, math.nan), (True, 1)])
def test_a_bucket_needs_finite_positive_numbers(rate: float, burst: float) -> None:
    with pytest.raises(LocalProtocolError, match="finite number > 0"):
        TokenBucket(rate, burst, now=0)


def test_impossible_amounts_are_local_errors() -> None:
    bucket = TokenBucket(1, 2, now=0)
    with pytest.raises(LocalProtocolError, match="bucket of 2"):
        bucket.wait(3, 0)
    assert not bucket.holds(3, 0)  # above the burst: never held, but no error
    for bad in (-1, math.nan):
        with pytest.raises(LocalProtocolError):
            bucket.wait(bad, 0)
        with pytest.raises(LocalProtocolError, match="cannot hold"):
            bucket.holds(bad, 0)
        with pytest.raises(LocalProtocolError, match="cannot take"):
            bucket.take(bad, 0)


@given(rate=rates, burst=bursts, schedule=schedules)
def test_all_or_nothing_never_exceeds_rate_times_window_plus_burst(
    rate: float, burst: float, schedule: list[tuple[float, int]]
) -> None:
    bucket = TokenBucket(rate, burst, now=0)
    admitted: list[tuple[float, int]] = []
    clock = 0.0  # the latest time seen: the bucket's own idea of now
    for now, (_gap, size) in zip(times(schedule), schedule, strict=True):
        clock = max(clock, now)
        n = min(size, math.floor(burst))
        if bucket.wait(n, now) == 0:
            bucket.take(n, now)
            admitted.append((clock, n))
    for i, (start, _n) in enumerate(admitted):
        for j in range(i, len(admitted)):
            window = sum(n for _t, n in admitted[i : j + 1])
            assert window <= rate * (admitted[j][0] - start + SLACK) + burst + TOLERANCE * (1 + window)


@given(rate=rates, burst=bursts, schedule=schedules)
def test_debt_delivers_at_most_rate_times_window_plus_burst(
    rate: float, burst: float, schedule: list[tuple[float, int]]
) -> None:
    """Counting each take as delivered when its pause ends, whatever the caller did meanwhile."""
    bucket = TokenBucket(rate, burst, now=0)
    taken: list[tuple[float, int, float]] = []
    clock = 0.0
    for now, (_gap, n) in zip(times(schedule), schedule, strict=True):
        clock = max(clock, now)
        taken.append((clock, n, clock + bucket.take(n, now)))
    for i in range(len(taken)):
        for j in range(i, len(taken)):
            window = sum(n for _t, n, _d in taken[i : j + 1])
            assert window <= rate * (taken[j][2] - taken[i][0] + SLACK) + burst + TOLERANCE * (1 + window)


@given(rate=rates, burst=bursts, schedule=schedules)
def test_policing_never_exceeds_rate_times_window_plus_burst(
    rate: float, burst: float, schedule: list[tuple[float, int]]
) -> None:
    """Datagrams of any size, each taken only when held: the all-or-nothing bound, no debt."""
    bucket = TokenBucket(rate, burst, now=0)
    admitted: list[tuple[float, int]] = []
    clock = 0.0
    for now, (_gap, n) in zip(times(schedule), schedule, strict=True):
        clock = max(clock, now)
        held = bucket.tokens(now)
        if bucket.holds(n, now):
            assert bucket.take(n, now) == 0
            admitted.append((clock, n))
        else:
            assert n > burst or held < n  # refused only when short
            assert bucket.tokens(now) == held  # and nothing taken
    for i, (start, _n) in enumerate(admitted):
        for j in range(i, len(admitted)):
            window = sum(n for _t, n in admitted[i : j + 1])
            assert window <= rate * (admitted[j][0] - start + SLACK) + burst + TOLERANCE * (1 + window)


@given(rate=rates, burst=bursts, n=st.floats(0, 1), spent=st.floats(0, 2000), at=st.floats(0, 1e6))
def test_waiting_the_advertised_time_is_enough(rate: float, burst: float, n: float, spent: float, at: float) -> None:
    bucket = TokenBucket(rate, burst, now=at)
    bucket.take(spent, at)
    wanted = n * burst
    wait = bucket.wait(wanted, at)
    assert bucket.wait(wanted, at + wait) == 0


# -- parsing a rate ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rate", "burst"),
    [
        ("10", 10, 10),
        ("0.5", 0.5, 1),
        ("2.5:10", 2.5, 10),
        (" 64k ", 65536, 65536),
        ("1M:4M", 1024**2, 4 * 1024**2),
        ("1g", 1024**3, 1024**3),
        (".5:2", 0.5, 2),
        (3, 3, 3),
        (0.25, 0.25, 1),
    ],
)
def test_rates_parse(text: str | float, rate: float, burst: float) -> None:
    assert Rate.parse(text) == Rate(rate, burst)


@pytest.mark.parametrize(
    "text", ["", ":", "0", "-1", "1:2:3", "abc", "1:0", "1x", "inf", "nan", "1e3", "1:", True, None]
)
def test_bad_rates_are_local_errors(text: Any) -> None:
    with pytest.raises(LocalProtocolError, match=r"rate|> 0"):
        Rate.parse(text)


def test_a_rate_built_from_bad_values_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="a rate"):
        Rate("10")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="a burst"):
        Rate(1, -1)


def test_a_tunnel_burst_below_one_is_refused() -> None:
    with pytest.raises(LocalProtocolError, match="tunnel burst must be >= 1"):
        RateLimitConfig(tunnels_per_client=Rate(0.5, 0.5))
    RateLimitConfig(bytes_per_client=Rate(0.5, 0.5))  # bytes may be owed: no such floor
    with pytest.raises(LocalProtocolError, match="max_buckets"):
        RateLimitConfig(max_buckets=0)


# -- keyed limits -------------------------------------------------------------------------


def test_no_limits_admit_everything() -> None:
    limits = RateLimits()
    assert all(limits.admit_tunnel(ALICE, HOME, now=0) is None for _ in range(1000))
    assert limits.take_bytes(ALICE, HOME, 10**9, now=0) == 0
    assert all(limits.admit_bytes(ALICE, HOME, 10**9, now=0) for _ in range(10))
    assert len(limits) == 0


def test_a_burst_is_held_while_an_exempt_user_is_unaffected() -> None:
    """Both users come from the same address; only alice is limited, by user and by address."""
    limits = RateLimits(
        RateLimitConfig(
            tunnels_per_user=Rate(5, 10),
            tunnels_per_client=Rate(20, 20),
            bytes_per_user=Rate(1000, 1000),
            exempt_users=frozenset({BOB}),
        )
    )
    alice_admitted = bob_admitted = 0
    alice_paused = 0.0
    for step in range(1000):  # ten seconds, a request from each every 10 ms
        now = step / 100
        if limits.admit_tunnel(ALICE, HOME, now) is None:
            alice_admitted += 1
        if limits.admit_tunnel(BOB, HOME, now) is None:
            bob_admitted += 1
        alice_paused += limits.take_bytes(ALICE, HOME, 100, now)
        assert limits.take_bytes(BOB, HOME, 10**6, now) == 0
    assert bob_admitted == 1000
    assert 5 * 9.99 + 10 - 1 <= alice_admitted <= 5 * 9.99 + 10  # held at the limit, not below it
    assert alice_paused > 0


def test_a_refusal_says_how_long_to_wait_and_charges_nothing() -> None:
    limits = RateLimits(RateLimitConfig(tunnels_per_user=Rate(10, 10), tunnels_per_client=Rate(1, 1)))
    assert limits.admit_tunnel(ALICE, HOME, now=0) is None
    assert limits.admit_tunnel(ALICE, HOME, now=0) == pytest.approx(1)  # the address is out
    for i in range(9):  # alice's own bucket was charged once only: nine more from other addresses
        assert limits.admit_tunnel(ALICE, client(i), now=0) is None
    assert limits.admit_tunnel(ALICE, client(9), now=0) == pytest.approx(0.1)
    assert limits.admit_tunnel(ALICE, HOME, now=1) is None


def test_per_client_limits_share_an_ipv6_64_and_see_through_ipv4_mapping() -> None:
    limits = RateLimits(RateLimitConfig(tunnels_per_client=Rate(1, 1)))
    assert limits.admit_tunnel(None, ipaddress.ip_address("2001:db8::1"), now=0) is None
    assert limits.admit_tunnel(None, ipaddress.ip_address("2001:db8::ffff:1"), now=0) is not None
    assert limits.admit_tunnel(None, ipaddress.ip_address("2001:db8:0:1::1"), now=0) is None
    assert limits.admit_tunnel(None, ipaddress.ip_address("::ffff:192.0.2.7"), now=0) is None
    assert limits.admit_tunnel(None, HOME, now=0) is not None


def test_anonymous_clients_skip_per_user_limits_only() -> None:
    limits = RateLimits(RateLimitConfig(tunnels_per_user=Rate(1, 1), bytes_per_client=Rate(10, 10)))
    assert all(limits.admit_tunnel(None, HOME, now=0) is None for _ in range(5))
    assert limits.take_bytes(None, HOME, 30, now=0) == pytest.approx(2)


def test_negative_byte_counts_are_local_errors() -> None:
    limits = RateLimits(RateLimitConfig(bytes_per_client=Rate(10, 10)))
    with pytest.raises(LocalProtocolError, match="cannot take"):
        limits.take_bytes(None, HOME, -1, now=0)
    with pytest.raises(LocalProtocolError, match="cannot admit -1 bytes"):
        limits.admit_bytes(None, HOME, -1, now=0)


def test_negative_byte_counts_are_local_errors_without_byte_limits_too() -> None:
    limits = RateLimits(RateLimitConfig(tunnels_per_client=Rate(1, 1)))
    with pytest.raises(LocalProtocolError, match="cannot take -1 bytes"):
        limits.take_bytes(ALICE, HOME, -1, now=0)
    assert len(limits) == 0


# -- datagrams: admitted or dropped ---------------------------------------------------------


def test_datagrams_are_admitted_up_to_the_burst_then_as_the_bucket_refills() -> None:
    limits = RateLimits(RateLimitConfig(bytes_per_user=Rate(1000, 3000)))
    assert [limits.admit_bytes(ALICE, HOME, 1000, now=10) for _ in range(4)] == [True, True, True, False]
    assert not limits.admit_bytes(ALICE, HOME, 1000, now=10.999)  # 999 held
    assert limits.admit_bytes(ALICE, HOME, 1000, now=11)
    assert limits.admit_bytes(ALICE, HOME, 10, now=11.0101)  # small ones fit in what refilled since
    assert not limits.admit_bytes(ALICE, HOME, 10, now=11.0101)
    assert [limits.admit_bytes(ALICE, HOME, 1000, now=100) for _ in range(4)] == [True, True, True, False]
    assert not limits.admit_bytes(ALICE, HOME, 3001, now=1000)  # larger than the burst: never
    assert limits.admit_bytes(ALICE, HOME, 3000, now=1000)


def test_a_datagram_needs_room_in_both_buckets_and_a_refusal_takes_from_neither() -> None:
    limits = RateLimits(RateLimitConfig(bytes_per_user=Rate(1, 1000), bytes_per_client=Rate(1, 1500)))
    other, third = client(1), client(2)
    assert limits.admit_bytes(ALICE, HOME, 900, now=0)  # alice 100 left, HOME 600 left
    assert not limits.admit_bytes(ALICE, other, 200, now=0)  # other has room, alice has not
    assert limits.admit_bytes(None, other, 1500, now=0)  # so other was charged nothing
    assert not limits.admit_bytes(BOB, HOME, 700, now=0)  # bob has room, HOME has not
    assert limits.admit_bytes(BOB, third, 1000, now=0)  # so bob was charged nothing
    assert limits.admit_bytes(ALICE, HOME, 100, now=0)  # nor alice and HOME by the refusals: 100 and 600
    assert limits.admit_bytes(None, HOME, 500, now=0)  # anonymous: the address alone
    assert not limits.admit_bytes(None, HOME, 1, now=0.5)  # half a byte refilled
    assert limits.admit_bytes(None, HOME, 1, now=1)


def test_a_tcp_debt_refuses_datagrams_until_repaid() -> None:
    limits = RateLimits(RateLimitConfig(bytes_per_client=Rate(100, 100)))
    assert limits.take_bytes(None, HOME, 300, now=0) == pytest.approx(2)
    assert not limits.admit_bytes(None, HOME, 1, now=1.5)
    assert limits.admit_bytes(None, HOME, 1, now=2.01)


def test_an_exempt_users_datagrams_are_always_admitted_and_charge_nothing() -> None:
    limits = RateLimits(
        RateLimitConfig(bytes_per_user=Rate(10, 10), bytes_per_client=Rate(10, 10), exempt_users=[BOB])
    )
    assert all(limits.admit_bytes(BOB, HOME, 10**6, now=0) for _ in range(100))
    assert len(limits) == 0
    assert limits.admit_bytes(ALICE, HOME, 10, now=0)  # the address's bucket is untouched by bob
    assert not limits.admit_bytes(ALICE, HOME, 1, now=0)


def test_datagram_limits_per_client_share_an_ipv6_64() -> None:
    limits = RateLimits(RateLimitConfig(bytes_per_client=Rate(1, 100)))
    assert limits.admit_bytes(None, ipaddress.ip_address("2001:db8::1"), 100, now=0)
    assert not limits.admit_bytes(None, ipaddress.ip_address("2001:db8::ffff:1"), 1, now=0)
    assert limits.admit_bytes(None, ipaddress.ip_address("2001:db8:0:1::1"), 100, now=0)
    assert limits.admit_bytes(None, ipaddress.ip_address("::ffff:192.0.2.7"), 100, now=0)
    assert not limits.admit_bytes(None, HOME, 1, now=0)  # the mapped address was HOME


# -- memory -------------------------------------------------------------------------------


def client(i: int) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(0x0A000000 + i)


everything = RateLimitConfig(
    tunnels_per_user=Rate(2, 3), tunnels_per_client=Rate(1, 2), bytes_per_user=Rate(100, 200),
    bytes_per_client=Rate(50, 100),
)
# (gap, user index, client index, n): n >= 0 takes n bytes, -1 is a tunnel, n < -1 a datagram of -n - 2 bytes
calls = st.lists(
    st.tuples(st.floats(0, 3), st.integers(0, 6), st.integers(0, 6), st.integers(-302, 300)), max_size=80
)


def replay(limits: RateLimits, schedule: list[tuple[float, int, int, int]], cap: int | None = None) -> list[object]:
    answers: list[object] = []
    now = 0.0
    for gap, user, address, n in schedule:
        now += gap
        name = None if user == 0 else b"user%d" % user
        if n == -1:
            answers.append(limits.admit_tunnel(name, client(address), now))
        elif n < -1:
            answers.append(None if limits.admit_bytes(name, client(address), -n - 2, now) else 1.0)
        else:
            answers.append(limits.take_bytes(name, client(address), n, now))
        if cap is not None:
            assert len(limits) <= cap
    return answers


@given(schedule=calls)
def test_evicting_only_full_buckets_changes_no_answer(schedule: list[tuple[float, int, int, int]]) -> None:
    """With room for every key only full buckets go, and a full bucket answers like a new one."""
    with pytest.MonkeyPatch.context() as patch:  # the reference: the same limiter, never evicting
        patch.setattr(TokenBucket, "full", lambda _self, _now: False)
        reference = replay(RateLimits(everything), schedule)
    answers = replay(RateLimits(everything), schedule)
    assert [a is None for a in answers] == [r is None for r in reference]
    assert [a or 0 for a in answers] == pytest.approx([r or 0 for r in reference], abs=1e-9)


@given(schedule=calls, cap=st.integers(1, 8))
def test_the_bucket_count_never_exceeds_the_cap(schedule: list[tuple[float, int, int, int]], cap: int) -> None:
    replay(RateLimits(attrs.evolve(everything, max_buckets=cap)), schedule, cap=cap)


def test_idle_buckets_are_dropped_when_a_new_key_arrives() -> None:
    limits = RateLimits(everything)
    replay(limits, [(0.01, user, address, n) for user in range(7) for address in range(7) for n in (-1, 300)])
    assert len(limits) == 6 * 2 + 7 * 2  # six named users, seven addresses, two limits each
    assert limits.admit_tunnel(None, client(99), now=1000) is None  # everyone refilled long ago
    assert len(limits) == 1


def test_eviction_work_is_constant_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each call looks at O(1) buckets (amortised), however many are held: no sweeps."""
    looked = [0]
    full = TokenBucket.full

    def counting(self: TokenBucket, now: float) -> bool:
        looked[0] += 1
        return full(self, now)

    monkeypatch.setattr(TokenBucket, "full", counting)
    limits = RateLimits(everything)
    held = []
    for start in range(0, 4000, 1000):  # a thousand new addresses in 0.1 s, then a quiet spell
        schedule = [(0.0001, 1 + i % 6, start + i, -1 if i % 2 else 100) for i in range(1000)]
        replay(limits, [(5.0, 0, -1, 0), *schedule])
        held.append(len(limits))
    assert min(held) > 1000  # a thousand or more held at once, so a sweep per call would show
    assert looked[0] <= 3 * 2 * 4001  # each call makes at most two buckets; each is looked at ~once


def test_exempt_names_may_be_text_but_not_one_bare_name() -> None:
    assert RateLimitConfig(exempt_users=["zoë", b"bob"]).exempt_users == frozenset({"zoë".encode(), b"bob"})
    with pytest.raises(LocalProtocolError, match="collection of names"):
        RateLimitConfig(exempt_users="alice")
    with pytest.raises(TypeError, match="expected bytes or str, not int"):
        RateLimitConfig(exempt_users=[5])  # type: ignore[list-item]


def test_splice_is_wanted_only_when_asked_for_and_no_byte_limit_is_charged() -> None:
    from socks_sansio import ServerConfig

    assert ServerConfig().splice_wanted
    assert not ServerConfig(splice=False).splice_wanted
    assert not ServerConfig(rate_limits=RateLimitConfig(bytes_per_client=Rate(1000, 1000))).splice_wanted
    assert ServerConfig(rate_limits=RateLimitConfig(tunnels_per_client=Rate(1, 1))).splice_wanted

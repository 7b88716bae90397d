"""Rate limits for a proxy server: token buckets, keyed by user and by client address. Pure.

A :class:`TokenBucket` holds up to ``burst`` tokens and gains ``rate`` tokens a
second. It has no clock: every call takes ``now`` (any monotonic seconds, e.g.
``time.monotonic()``); a ``now`` earlier than the last one adds nothing.

Three ways of spending:

* **All or nothing** (new tunnels): :meth:`TokenBucket.wait` says how long until
  ``n`` tokens are there; take them only when it says 0. Over any window of
  ``t`` seconds at most ``rate * t + burst`` are taken (give or take a
  microsecond's worth: shorter waits count as none, the tokens still owed).
* **Debt** (bytes): :meth:`TokenBucket.take` always takes, because the bytes were
  already read and must be forwarded, and answers how long the caller should
  stop reading until the debt is repaid. If every take of ``n`` bytes counts as
  delivered when its pause ends, at most ``rate * t + burst`` bytes are
  delivered in any window of ``t`` seconds, whatever the caller does.
* **Policing** (datagrams): a datagram cannot wait, only be dropped;
  :meth:`TokenBucket.holds` says whether ``n`` tokens are there, and they are
  taken only then. The same ``rate * t + burst`` bound holds, and nothing is
  owed for a refusal.

:class:`RateLimits` applies four optional limits (new tunnels a second and bytes
a second, each per user and per client address) with lazily created buckets,
so a key costs memory only once it is seen. A bucket that has refilled to the
brim behaves exactly like a fresh one, so those are dropped, oldest first,
whenever a new key arrives; beyond ``max_buckets`` the least recently used
bucket is dropped even if not full (that key then starts afresh: only a flood
of distinct keys can cause it). Every call is O(1) amortised. IPv6 clients are
keyed by their /64, the unit one subscriber usually holds.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import OrderedDict
from collections.abc import Iterable
from typing import Final, Literal, final

import attrs

from .._errors import LocalProtocolError
from .._validators import to_bytes

__all__ = ["Rate", "RateLimitConfig", "RateLimits", "TokenBucket"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_Kind = Literal["tunnels_per_user", "tunnels_per_client", "bytes_per_user", "bytes_per_client"]
_Slot = tuple[_Kind, bytes | int]

# Waits this short count as none: after exactly the advertised wait, float sums of large
# clock readings can land a few ulps short (time.monotonic() after days of uptime).
_SLACK: Final = 1e-6
_SUFFIXES: Final = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_NUMBER: Final = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([kKmMgG]?)\s*")


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise LocalProtocolError(f"{name} must be a finite number > 0, not {value!r}")
    return float(value)


@final
class TokenBucket:
    """A token bucket: ``rate`` tokens a second, at most ``burst`` held; starts full.

    Args:
        rate: tokens gained per second (> 0).
        burst: the most tokens held at once (> 0).
        now: the current time in seconds.

    Raises:
        LocalProtocolError: a rate or burst that is not a finite number > 0.
    """

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self._rate = _positive("rate", rate)
        self._burst = _positive("burst", burst)
        self._tokens = self._burst
        self._stamp = now

    def tokens(self, now: float) -> float:
        """The tokens held at *now*; negative while in debt."""
        if now > self._stamp:
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
        return self._tokens

    def full(self, now: float) -> bool:
        """Whether the bucket is at its brim (then it is indistinguishable from a new one)."""
        return self.tokens(now) >= self._burst

    def wait(self, n: float, now: float) -> float:
        """Seconds until *n* tokens are held (0: they are now). Takes nothing.

        Raises:
            LocalProtocolError: *n* is negative or above the burst (it would never fit).
        """
        if not 0 <= n <= self._burst:
            raise LocalProtocolError(f"cannot wait for {n!r} tokens from a bucket of {self._burst}")
        seconds = (n - self.tokens(now)) / self._rate
        return seconds if seconds > _SLACK else 0.0

    def holds(self, n: float, now: float) -> bool:
        """Whether *n* tokens are held at *now* (give or take a microsecond's refill). Takes nothing.

        Unlike :meth:`wait` an *n* above the burst is no error: it is never held.

        Raises:
            LocalProtocolError: *n* is negative.
        """
        if not n >= 0:
            raise LocalProtocolError(f"cannot hold {n!r} tokens")
        return (n - self.tokens(now)) / self._rate <= _SLACK

    def take(self, n: float, now: float) -> float:
        """Take *n* tokens, going into debt if need be.

        Returns:
            seconds until the debt is repaid: stop spending for that long (0: no debt).

        Raises:
            LocalProtocolError: *n* is negative.
        """
        if not n >= 0:
            raise LocalProtocolError(f"cannot take {n!r} tokens")
        self._tokens = self.tokens(now) - n
        seconds = -self._tokens / self._rate
        return seconds if seconds > _SLACK else 0.0


@final
@attrs.frozen
class Rate:
    """A sustained rate and the burst allowed above it.

    Attributes:
        per_second: the sustained rate (> 0).
        burst: what may be spent at once after a quiet spell (> 0); default: one
            second's worth, at least 1.
    """

    per_second: float
    burst: float = attrs.field()

    @burst.default
    def _one_second(self) -> float:
        return max(1.0, _positive("a rate", self.per_second))

    def __attrs_post_init__(self) -> None:
        _positive("a rate", self.per_second)
        _positive("a burst", self.burst)

    @classmethod
    def parse(cls, text: str | float) -> Rate:
        """``N`` or ``N:BURST``; each may end in K, M or G (x1024, x1024², x1024³); a bare number also works.

        Raises:
            LocalProtocolError: anything else, or a value that is not > 0.
        """
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            return cls(text)
        parts = text.split(":") if isinstance(text, str) else []
        matches = [_NUMBER.fullmatch(part) for part in parts]
        if 1 <= len(matches) <= 2 and all(matches):
            return cls(*(float(m[1]) * _SUFFIXES[m[2].lower()] for m in matches if m is not None))
        raise LocalProtocolError(f"rate {text!r} must be N or N:BURST, e.g. 10, 2.5:10 or 1M:4M")


def _names(names: Iterable[str | bytes]) -> frozenset[bytes]:
    if isinstance(names, (str, bytes)):
        raise LocalProtocolError(f"exempt_users is a collection of names, not one name {names!r}")
    return frozenset(to_bytes(name) for name in names)


@final
@attrs.frozen(kw_only=True)
class RateLimitConfig:
    """Which limits apply; every one is optional (``None``: unlimited).

    Attributes:
        tunnels_per_user: new tunnels a second for each authenticated user.
        tunnels_per_client: new tunnels a second for each client address.
        bytes_per_user: bytes a second, both directions together, for each user.
        bytes_per_client: bytes a second, both directions together, for each client address.
        exempt_users: users no limit applies to (neither per-user nor per-client);
            ``str`` names are taken as UTF-8.
        max_buckets: the most buckets kept at once (>= 1).
    """

    tunnels_per_user: Rate | None = None
    tunnels_per_client: Rate | None = None
    bytes_per_user: Rate | None = None
    bytes_per_client: Rate | None = None
    exempt_users: frozenset[bytes] = attrs.field(default=frozenset(), converter=_names)
    max_buckets: int = 100_000

    def __attrs_post_init__(self) -> None:
        if not (isinstance(self.max_buckets, int) and self.max_buckets >= 1):
            raise LocalProtocolError(f"max_buckets must be an int >= 1, not {self.max_buckets!r}")
        for rate in (self.tunnels_per_user, self.tunnels_per_client):
            if rate is not None and rate.burst < 1:
                raise LocalProtocolError(f"a tunnel burst must be >= 1 (one tunnel), not {rate.burst}")

    @property
    def per_user(self) -> bool:
        """Whether any limit is per user (those need authenticated users)."""
        return self.tunnels_per_user is not None or self.bytes_per_user is not None

    @property
    def enabled(self) -> bool:
        """Whether any limit is set."""
        return self.per_user or self.tunnels_per_client is not None or self.bytes_per_client is not None


def _client_key(client: IPAddress) -> int:
    """IPv4 as its 32-bit number; IPv6 by its /64, above 2**64 (an IPv4-mapped one as the IPv4)."""
    number = int(client)
    if client.version == 4 or number >> 32 == 0xFFFF:
        return number & 0xFFFFFFFF
    return 1 << 64 | number >> 64


@final
class RateLimits:
    """The running limits of one server: buckets by user and by client address.

    Args:
        config: the limits; the default limits nothing.
    """

    __slots__ = ("_buckets", "_grown", "config")

    def __init__(self, config: RateLimitConfig | None = None) -> None:
        self.config = config if config is not None else RateLimitConfig()
        self._buckets: OrderedDict[_Slot, TokenBucket] = OrderedDict()
        self._grown = False  # a bucket was made since the last eviction

    def __len__(self) -> int:
        """How many buckets are held now."""
        return len(self._buckets)

    def admit_tunnel(self, user: bytes | None, client: IPAddress, now: float) -> float | None:
        """Count a new tunnel for *user* (``None``: anonymous) from *client*, if the limits allow it.

        Returns:
            ``None`` when admitted (counted); otherwise the seconds until it would
            be, and nothing is counted. Refuse the request (``Failure.RATE_LIMITED``).
        """
        buckets = self._pick(user, client, now, "tunnels_per_user", "tunnels_per_client")
        wait = max((bucket.wait(1, now) for bucket in buckets), default=0.0)
        if wait == 0:
            for bucket in buckets:
                bucket.take(1, now)
        self._evict(now)
        return wait or None

    def take_bytes(self, user: bytes | None, client: IPAddress, n: int, now: float) -> float:
        """Count *n* bytes relayed for *user* from *client* (either direction); never refuses.

        Returns:
            the seconds to stop reading the direction these bytes came from (0: go on).

        Raises:
            LocalProtocolError: *n* is negative.
        """
        if not n >= 0:
            raise LocalProtocolError(f"cannot take {n!r} bytes")
        pause = 0.0
        for bucket in self._pick(user, client, now, "bytes_per_user", "bytes_per_client"):
            pause = max(pause, bucket.take(n, now))
        self._evict(now)
        return pause

    def admit_bytes(self, user: bytes | None, client: IPAddress, n: int, now: float) -> bool:
        """Count a datagram's *n* payload bytes for *user* from *client* if every byte limit has room.

        A datagram cannot be slowed down, only dropped (a policer): the bytes are
        taken from the user's and the client's buckets only if both hold them,
        so a refusal charges neither. A debt left by :meth:`take_bytes` refuses
        every datagram until it is repaid, and a datagram larger than a burst is
        never admitted. Exempt users, and a limiter without byte limits, admit
        everything without making a bucket.

        Returns:
            ``True`` when admitted (counted): relay it; ``False``: drop it.

        Raises:
            LocalProtocolError: *n* is negative.
        """
        if not n >= 0:
            raise LocalProtocolError(f"cannot admit {n!r} bytes")
        buckets = self._pick(user, client, now, "bytes_per_user", "bytes_per_client")
        admitted = all(bucket.holds(n, now) for bucket in buckets)
        if admitted:
            for bucket in buckets:
                bucket.take(n, now)
        self._evict(now)
        return admitted

    def _pick(
        self, user: bytes | None, client: IPAddress, now: float, per_user: _Kind, per_client: _Kind
    ) -> list[TokenBucket]:
        config = self.config
        user_rate: Rate | None = getattr(config, per_user)
        client_rate: Rate | None = getattr(config, per_client)
        if (user_rate is None and client_rate is None) or (user is not None and user in config.exempt_users):
            return []
        picked = []
        if user_rate is not None and user is not None:
            picked.append(self._bucket((per_user, user), user_rate, now))
        if client_rate is not None:
            picked.append(self._bucket((per_client, _client_key(client)), client_rate, now))
        return picked

    def _bucket(self, slot: _Slot, rate: Rate, now: float) -> TokenBucket:
        bucket = self._buckets.get(slot)
        if bucket is not None:
            self._buckets.move_to_end(slot)
            return bucket
        self._grown = True
        bucket = self._buckets[slot] = TokenBucket(rate.per_second, rate.burst, now)
        return bucket

    def _evict(self, now: float) -> None:
        """After a call that made buckets (and charged them): drop full ones, least recently used first."""
        if not self._grown:
            return
        self._grown = False
        while self._buckets:
            oldest = next(iter(self._buckets.values()))
            if len(self._buckets) <= self.config.max_buckets and not oldest.full(now):
                return
            self._buckets.popitem(last=False)

"""Tunnel rate limits shared by several instances through a store (Redis). Pure.

With ``ServerConfig.rate_store`` set, the tunnel limits (per user, per client
address) are not kept in each instance's memory but in the store, so N
instances behind a balancer allow one quota, not N. Each admission is one call
of :data:`ADMIT_SCRIPT`, a Lua script the store runs atomically: it refills
and checks every bucket the tunnel counts against, and takes one token from
each only when all have one (the same all-or-nothing rule as the local
:class:`~socks_sansio.RateLimits`), on the store's clock, so the instances'
clocks do not matter. Buckets idle long enough to be full expire by themselves.

This module says which buckets (:func:`tunnel_buckets`: the same choice as the
local limits, exempt users and IPv6 /64 grouping included), what the script
is, and what to do when the store cannot be reached (:class:`StoreOutage`):
``open`` admits (the tunnel is not the store's hostage), ``closed`` refuses;
either way the outage is logged once, when it starts, and counted. Byte limits
stay per instance (a store call per relayed chunk would cost more than it
saves).
"""

from __future__ import annotations

import ipaddress
from typing import Final, Literal, final

from .ratelimit import RateLimitConfig

__all__ = ["ADMIT_SCRIPT", "KEY_PREFIX", "StoreOutage", "tunnel_buckets"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

KEY_PREFIX: Final = "socks-sansio:tunnels:"
"""Every key the shared limits use starts with this."""

ADMIT_SCRIPT: Final = """
-- KEYS: the buckets; ARGV: rate and burst of each, in order. Returns the wait in seconds ("0": admitted).
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local wait = 0
local tokens = {}
for i, key in ipairs(KEYS) do
  local rate, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local stored = redis.call('HMGET', key, 'tokens', 'at')
  local level, at = tonumber(stored[1]), tonumber(stored[2])
  if level == nil or at == nil then
    level = burst
  elseif now > at then
    level = math.min(burst, level + (now - at) * rate)
  end
  tokens[i] = level
  if level < 1 then
    wait = math.max(wait, (1 - level) / rate)
  end
end
if wait == 0 then
  for i, key in ipairs(KEYS) do
    local rate, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
    redis.call('HSET', key, 'tokens', tostring(tokens[i] - 1), 'at', tostring(now))
    redis.call('PEXPIRE', key, math.ceil(burst / rate * 1000) + 1000)
  end
end
return tostring(wait)
"""
"""The Lua script of one admission (Redis ``EVALSHA``): atomic on the store, whatever the instances' clocks."""


def tunnel_buckets(config: RateLimitConfig, user: bytes | None, client: IPAddress) -> list[tuple[str, float, float]]:
    """The buckets a new tunnel counts against: ``(key, rate, burst)`` each; empty when none applies.

    The same choice as the local limits: nothing for an exempt user; the user's
    bucket only for a logged-in user; the client's by its address (IPv6 by /64).
    """
    if user is not None and user in config.exempt_users:
        return []
    buckets = []
    if config.tunnels_per_user is not None and user is not None:
        rate = config.tunnels_per_user
        buckets.append((f"{KEY_PREFIX}user:{user.hex()}", rate.per_second, rate.burst))
    if config.tunnels_per_client is not None:
        rate = config.tunnels_per_client
        buckets.append((f"{KEY_PREFIX}client:{_client_key(client)}", rate.per_second, rate.burst))
    return buckets


def _client_key(client: IPAddress) -> str:
    if isinstance(client, ipaddress.IPv6Address):
        mapped = client.ipv4_mapped
        if mapped is not None:
            return str(mapped)
        return str(ipaddress.IPv6Network((client, 64), strict=False))
    return str(client)


@final
class StoreOutage:
    """Whether the store is down, so that an outage is reported once (and its end once).

    Args:
        fail: ``"open"`` admits tunnels while the store cannot be reached,
            ``"closed"`` refuses them.
    """

    __slots__ = ("down", "fail")

    def __init__(self, fail: Literal["open", "closed"] = "open") -> None:
        self.fail = fail
        self.down = False

    def failed(self) -> bool:
        """A call failed; True when this starts an outage (log it now, once)."""
        started = not self.down
        self.down = True
        return started

    def recovered(self) -> bool:
        """A call worked; True when this ends an outage (log it, once)."""
        ended = self.down
        self.down = False
        return ended

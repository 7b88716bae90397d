"""Roles and the two sentinels that ``next_event()`` can return instead of an event.

The sentinels are single-member enums so that type checkers narrow
``event is NEED_DATA`` exactly (a class-based sentinel would not narrow).
"""

from __future__ import annotations

import enum
from typing import Final, TypeVar

__all__ = ["CLIENT", "NEED_DATA", "PAUSED", "SERVER", "NeedData", "Paused", "Role", "remember"]

_K = TypeVar("_K")
_V = TypeVar("_V")


class Role(enum.Enum):
    """Which end of the conversation a connection object plays."""

    # Members are singletons: identity hashing is correct, and much cheaper than Enum's.
    __hash__ = object.__hash__

    CLIENT = "client"
    SERVER = "server"

    @property
    def peer(self) -> Role:
        """The other role."""
        return SERVER if self is CLIENT else CLIENT


CLIENT: Final = Role.CLIENT
SERVER: Final = Role.SERVER


class NeedData(enum.Enum):
    """Type of :data:`NEED_DATA`: the buffered bytes do not hold a whole message yet."""

    NEED_DATA = "NEED_DATA"


class Paused(enum.Enum):
    """Type of :data:`PAUSED`: nothing more will be parsed until you ``send()``, or ever again.

    A connection is paused on our turn (the peer is waiting for us) and in every
    terminal state (tunnel open, refused, closed, error). Never read from the
    network because of ``PAUSED``: that is how adapters deadlock.
    """

    PAUSED = "PAUSED"


NEED_DATA: Final = NeedData.NEED_DATA
PAUSED: Final = Paused.PAUSED


def remember(cache: dict[_K, _V], key: _K, value: _V, limit: int) -> _V:
    """Keep *value* for *key* in *cache*, emptied first when it holds *limit* entries; returns *value*.

    The core's caches of parsed values (immutable, a function of the key alone)
    store through this: bounded, so what a peer sends cannot grow them. Lookups
    stay inline (``cache.get(key)``) on the hot paths.
    """
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value
    return value

"""Failover and retry for client calls: the policy and a pure planner.

Strategy: the ``failover=`` argument is a list of *candidates*, each a proxy or a
chain of proxies. :func:`plan_failover` yields the attempts to make, in order:
every candidate once per round, for up to :attr:`RetryPolicy.attempts` rounds,
with a backoff sleep before each round after the first. It never sleeps nor
connects; :class:`~socks_sansio.ConnectPlan` runs it (sleep ``step.delay``, try
``step.chain``, stop on success or on an error the policy does not retry) and
gives :class:`Failures` every failure, which notes them all on the error finally
raised. The whole loop, sleeps included, runs under the call's one deadline
(``timeout=``); the planner stops early when a backoff would not end before it.

Which errors retry (the default :attr:`RetryPolicy.retry_on`):

* :class:`~socks_sansio.ProxyConnectionError` (the proxy is unreachable or broke
  the connection) and :class:`~socks_sansio.ProxyTimeoutError`: yes, another
  proxy, or the same one a moment later, may well work.
* :class:`~socks_sansio.ProxyAuthError` and :class:`~socks_sansio.ProxyRefusedError`:
  no. The proxy understood us and said no; asking again gets the same answer,
  and retrying bad credentials can lock an account. That includes SOCKS5's REP 1
  "general failure", which proxies also use for "the target is unreachable":
  add ``ProxyRefusedError`` to ``retry_on`` to retry it (and every other refusal,
  since :class:`~socks_sansio.ProxyAuthError` is a subclass).
* :class:`~socks_sansio.ProxyProtocolError`, ``LocalProtocolError`` and plain
  ``OSError`` (no proxy involved, or the target's own TLS): no.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from typing import final

import attrs

from .._errors import ProxyConnectionError, ProxyTimeoutError
from .._proxy_url import ProxyURL
from .hops import ProxySpec, to_proxies

__all__ = ["Failures", "RetryPolicy", "Step", "candidates_for", "plan_failover", "to_candidates"]


def _positive_int(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{attribute.name} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1, not {value}")


def _at_least(minimum: float) -> Callable[[object, attrs.Attribute[float], float], None]:
    def check(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise TypeError(f"{attribute.name} must be a number of seconds, not {type(value).__name__}")
        if not value >= minimum:  # also rejects NaN
            raise ValueError(f"{attribute.name} must be at least {minimum}, not {value}")

    return check


def _exception_types(
    instance: object, attribute: attrs.Attribute[tuple[type[BaseException], ...]], value: object
) -> None:
    if not isinstance(value, tuple) or not all(
        isinstance(kind, type) and issubclass(kind, BaseException) for kind in value
    ):
        raise TypeError(f"retry_on must be a tuple of exception classes, not {value!r}")


@final
@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How many times to go through the candidates, how long to wait, and which errors are worth another try.

    Attributes:
        attempts: rounds over the whole candidate list (1: each candidate once, no retry).
        backoff: seconds to wait before the second round.
        backoff_factor: each later wait is this many times the previous one.
        max_backoff: no wait is longer than this.
        retry_on: the errors that move on to the next attempt; any other error
            is raised at once. The default retries unreachable proxies and time-outs
            only (see the module docstring for why refusals do not retry).
    """

    attempts: int = attrs.field(default=3, validator=_positive_int)
    backoff: float = attrs.field(default=0.1, validator=_at_least(0.0))
    backoff_factor: float = attrs.field(default=2.0, validator=_at_least(1.0))
    max_backoff: float = attrs.field(default=2.0, validator=_at_least(0.0))
    retry_on: tuple[type[BaseException], ...] = attrs.field(
        default=(ProxyConnectionError, ProxyTimeoutError), validator=_exception_types
    )

    def delay(self, round_index: int) -> float:
        """Seconds to wait before round *round_index* (0-based): 0 for the first round."""
        wait = 0.0
        for completed in range(round_index):
            wait = self.backoff if completed == 0 else wait * self.backoff_factor
            wait = min(wait, self.max_backoff)
        return wait

    def retries(self, error: BaseException) -> bool:
        """Whether *error* moves on to the next attempt."""
        return isinstance(error, self.retry_on)


@final
@attrs.frozen(kw_only=True)
class Step:
    """One attempt of a failover: wait *delay* seconds, then connect through *chain*.

    Attributes:
        chain: the proxies, first hop first.
        delay: seconds to sleep before the attempt (the backoff; 0 within a round).
        number: the attempt's number in the whole call, from 1.
        round: the round, from 1.
        candidate: the candidate's position in the list, from 1.
    """

    chain: tuple[ProxyURL, ...]
    delay: float
    number: int
    round: int
    candidate: int

    def describe(self) -> str:
        """The chain without passwords: ``socks5h://a:1080 -> http://b:3128``."""
        return " -> ".join(proxy.redacted() for proxy in self.chain) or "no proxy (direct)"


def to_candidates(failover: Sequence[ProxySpec | Sequence[ProxySpec]]) -> list[tuple[ProxyURL, ...]]:
    """The ``failover=`` argument as candidate chains: each item is a proxy, or a chain of proxies.

    Raises:
        TypeError: *failover* or an item is not a proxy, a chain or a sequence of them.
        ValueError: the list, or one of its chains, is empty.
        LocalProtocolError: a proxy URL does not parse.
    """
    if isinstance(failover, str | ProxyURL) or not isinstance(failover, Sequence):
        raise TypeError(
            f"failover must be a sequence of proxies or chains, not {type(failover).__name__}; "
            "for a single proxy use proxy="
        )
    candidates = []
    for index, item in enumerate(failover):
        if not isinstance(item, str | ProxyURL | Sequence) or (
            not isinstance(item, str | ProxyURL) and not all(isinstance(p, str | ProxyURL) for p in item)
        ):
            raise TypeError(f"failover[{index}] must be a proxy URL, a ProxyURL or a sequence of them")
        chain = tuple(to_proxies(item))
        if not chain:
            raise ValueError(f"failover[{index}] is an empty chain: every candidate needs at least one proxy")
        candidates.append(chain)
    if not candidates:
        raise ValueError("failover is empty: give at least one proxy")
    return candidates


def candidates_for(
    proxy: object,
    failover: Sequence[ProxySpec | Sequence[ProxySpec]] | None,
    proxies: Callable[[], Sequence[ProxyURL]],
) -> list[tuple[ProxyURL, ...]]:
    """The candidates of a call given *proxy* and *failover* (at most one of them).

    Args:
        proxy: the call's ``proxy=`` argument (only checked against *failover*).
        failover: the call's ``failover=`` argument.
        proxies: what ``proxy=`` means for this call (the environment's with
            ``trust_env``), the single candidate when *failover* is ``None``.

    Raises:
        TypeError: both *proxy* and *failover* were given, or *failover* is malformed.
        ValueError: *failover* or one of its chains is empty.
    """
    if failover is None:
        return [tuple(proxies())]
    if proxy is not None:
        raise TypeError("proxy= and failover= exclude each other: put every proxy to try in failover=")
    return to_candidates(failover)


def plan_failover(
    candidates: Sequence[tuple[ProxyURL, ...]],
    policy: RetryPolicy,
    remaining: Callable[[], float | None],
) -> Iterator[Step]:
    """The attempts of one call, in order; pure (no I/O, no sleeping).

    Args:
        candidates: the chains to try, in order (see :func:`to_candidates`).
        policy: rounds and backoff.
        remaining: seconds left before the call's deadline, ``None`` without one;
            asked before each step after the first.

    Yields:
        each :class:`Step`. The first is always yielded (its own attempt reports a
        deadline already passed); the plan ends once the rounds are done, or
        when the deadline has passed or would pass during the step's backoff.
    """
    number = 0
    for round_index in range(policy.attempts):
        for index, chain in enumerate(candidates):
            delay = policy.delay(round_index) if index == 0 else 0.0
            if number:
                left = remaining()
                if left is not None and (left <= 0 or delay >= left):
                    return
            number += 1
            yield Step(chain=chain, delay=delay, number=number, round=round_index + 1, candidate=index + 1)


def _add_note(error: BaseException, note: str) -> None:
    if sys.version_info >= (3, 11):
        error.add_note(note)
    else:  # pragma: no cover - Python 3.10 has no add_note; the attribute is the same
        error.__notes__ = [*getattr(error, "__notes__", ()), note]


@final
class Failures:
    """The failed attempts of one call, and what to raise in the end.

    Every error raised after a failover carries all the attempts of the call in
    its notes (``__notes__``), each naming its chain without passwords
    (:meth:`ProxyURL.redacted`); the errors of this package never hold one either.

    Args:
        policy: decides which errors move on to the next attempt.
    """

    __slots__ = ("_current", "_last", "_notes", "_policy")

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._notes: list[str] = []
        self._last: BaseException | None = None
        self._current: Step | None = None

    def __len__(self) -> int:
        return len(self._notes)

    @property
    def policy(self) -> RetryPolicy:
        """The policy deciding which errors move on to the next attempt."""
        return self._policy

    def begin(self, step: Step) -> None:
        """*step* is the attempt under way (see :meth:`note`)."""
        self._current = step

    def note(self, error: BaseException) -> None:
        """The attempt under way ended with *error* and the call ends with it (the deadline passed)."""
        if self._current is not None:
            self._notes.append(self._describe(self._current, error))
            self._current = None

    @staticmethod
    def _describe(step: Step, error: BaseException) -> str:
        return (
            f"failover attempt {step.number} (round {step.round}, candidate {step.candidate}) "
            f"via {step.describe()}: {type(error).__name__}: {error}"
        )

    def record(self, step: Step, error: BaseException) -> bool:
        """Remember that *step* failed with *error*.

        Returns:
            ``True`` to go on with the next step; ``False`` when the policy does not
            retry *error*: it has been annotated and must be raised now.
        """
        self._notes.append(self._describe(step, error))
        self._current = None
        self._last = error
        if self._policy.retries(error):
            return True
        self.annotate(error)
        return False

    def annotate(self, error: BaseException) -> BaseException:
        """Add every recorded attempt to *error*'s notes and return it."""
        for note in self._notes:
            _add_note(error, note)
        return error

    def final_error(self) -> BaseException:
        """The last failure, annotated with all of them: what to raise when the plan ran out."""
        if self._last is None:
            raise RuntimeError("socks-sansio bug: a failover plan ended without any attempt")
        return self.annotate(self._last)

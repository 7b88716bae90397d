"""Upstream routing for ``socks-sansio serve``: which proxy chain (if any) a tunnel goes through.

Strategy. Each ``--upstream`` flag is one :class:`UpstreamRule`: optional
destination criteria (``to=`` host patterns and networks, ``port=`` ranges,
the same syntax and matching as the access rules of
:class:`~socks_sansio.AccessRule`, which does the matching here too) and
a route: ``via=direct`` or ``via=URL[,URL...]`` (a chain, first hop first). A
flag that is a bare proxy URL is a rule without criteria: the default route.
Rules are tried in order and the first match wins; when none matches, the
tunnel is dialled directly.

Matching uses the target as the client sent it: a name is matched by the host
patterns, an IP literal by the networks. Names are never resolved to pick a
route (the upstream resolves them), so ``to=10.0.0.0/8`` matches only targets
given as IP literals. This module performs no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import final

import attrs

from .._address import Address
from .._errors import LocalProtocolError
from .._proxy_url import ProxyURL
from .policy import AccessRule

__all__ = ["UpstreamRule", "parse_upstream", "pick_route"]

_ANY_CLIENT = ipaddress.IPv4Address("0.0.0.0")


@final
@attrs.frozen(kw_only=True)
class UpstreamRule:
    """One ``--upstream`` rule.

    Attributes:
        match: the destination criteria (an ``allow`` :class:`AccessRule` without ``from=``).
        via: the proxy chain, first hop first; empty means dial directly.
        text: the rule as given, with passwords masked (for logs and errors).
    """

    match: AccessRule
    via: tuple[ProxyURL, ...]
    text: str

    def matches(self, target: Address) -> bool:
        """Whether *target* (as the client sent it) takes this route."""
        return self.match.matches(_ANY_CLIENT, target, None)


def _mask(text: str) -> str:
    """*text* with the password of every ``scheme://user:pass@`` replaced by ``***``."""
    out = []
    for word in text.split():
        key, eq, value = word.rpartition("=") if word.startswith("via=") else ("", "", word)
        urls = []
        for url in value.split(","):
            scheme, sep, rest = url.partition("://")
            userinfo, at, host = rest.rpartition("@")
            masked = sep and at and ":" in userinfo
            urls.append(f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}" if masked else url)
        out.append(key + eq + ",".join(urls))
    return " ".join(out)


def parse_upstream(text: str) -> UpstreamRule:
    """Parse one ``--upstream`` value.

    Forms: ``URL`` (default route), ``[to=PATTERN|NET,...] [port=N|N-M,...] via=direct``
    and ``[to=...] [port=...] via=URL[,URL...]`` (a chain, first hop first).

    Raises:
        LocalProtocolError: no ``via=``, an unknown key, a bad criterion or a bad proxy URL.
    """
    words = text.split()
    if len(words) == 1 and "://" in words[0] and not words[0].startswith("via="):
        words = [f"via={words[0]}"]
    criteria = []
    via: str | None = None
    for word in words:
        if word.startswith("via="):
            if via is not None:
                raise LocalProtocolError(f"upstream rule {_mask(text)!r}: via= given twice")
            via = word[4:]
        elif word.startswith("from="):
            raise LocalProtocolError(f"upstream rule {_mask(text)!r}: from= is not supported (use to= and port=)")
        else:
            criteria.append(word)
    if not via:
        raise LocalProtocolError(
            f"upstream rule {_mask(text)!r}: expected a proxy URL, or criteria with via=direct or via=URL[,URL...]"
        )
    match = AccessRule.parse("allow", " ".join(criteria))
    chain: tuple[ProxyURL, ...] = ()
    if via.lower() != "direct":
        try:
            chain = tuple(ProxyURL.parse(url) for url in via.split(",") if url)
        except LocalProtocolError as exc:
            raise LocalProtocolError(f"upstream rule {_mask(text)!r}: {exc}") from None
        if not chain:
            raise LocalProtocolError(f"upstream rule {_mask(text)!r}: via= names no proxy")
    return UpstreamRule(match=match, via=chain, text=_mask(text))


def pick_route(rules: Sequence[UpstreamRule], target: Address) -> tuple[ProxyURL, ...]:
    """The chain for *target*: the first matching rule's, or ``()`` (direct) when none matches."""
    for rule in rules:
        if rule.matches(target):
            return rule.via
    return ()

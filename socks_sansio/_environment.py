"""Choosing a proxy from environment variables, the way curl does, without touching ``os.environ``.

Strategy: :func:`select_proxy` takes the mapping to read (pass ``os.environ``),
the target's scheme, host and port, and returns a :class:`ProxyURL` or ``None``.
The steps, in curl's order:

1. If the target matches ``no_proxy`` (or ``NO_PROXY`` when the lowercase one is
   unset), there is no proxy.
2. Otherwise ``<scheme>_proxy`` (lowercase first, then uppercase), then
   ``all_proxy`` / ``ALL_PROXY``. Uppercase ``HTTP_PROXY`` is never read: a CGI
   script sees the request header ``Proxy:`` as ``HTTP_PROXY``, so a client
   could choose the proxy (the "httpoxy" problem); curl ignores it too.
3. A value without ``://`` is an ``http://`` proxy, as in curl.

A variable that is unset, empty or only whitespace counts as unset.

``NO_PROXY`` is a list separated by commas and/or whitespace; matching is
case-insensitive. Names that are not ASCII are compared in the form
:class:`~socks_sansio.Address` sends (UTS #46 and IDNA 2008, through the same
helper), so ``bücher.example`` and ``xn--bcher-kva.example`` are the same entry
or target. :class:`NoProxy` holds a parsed list. Entries:

* ``*`` matches every host.
* a name (``example.com``, ``.example.com`` or ``*.example.com``, all the same)
  matches that host and every name under it, but not ``badexample.com``; a
  trailing dot on either side is ignored;
* an IP address (IPv6 with or without brackets) matches that address only;
* a CIDR block (``10.0.0.0/8``, ``fd00::/8``) matches the addresses inside it;
  host bits after the prefix are ignored, as curl ignores them;
* a name or address may end in ``:port``; the entry then matches only that
  port, and never when the caller does not know the port.

As in curl, an IP-address target is compared only with address and CIDR
entries, and a name only with name entries: no DNS is done here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Final, final

import attrs

from ._address import Host
from ._errors import LocalProtocolError
from ._idna import encode_unicode_host
from ._proxy_url import ProxyURL

__all__ = ["NoProxy", "select_proxy"]

_IP = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_SCHEME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789+-.")
_NAME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-._~")


@attrs.frozen
class _Rule:
    """One NO_PROXY entry: exactly one of *name*, *network* is set, or neither for ``*``."""

    name: bytes | None = None
    network: _Network | None = None
    port: int | None = None

    def matches(self, host: bytes | _IP, port: int | None) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.name is None and self.network is None:
            return True
        if isinstance(host, bytes):
            return self.name is not None and (host == self.name or host.endswith(b"." + self.name))
        return self.network is not None and host.version == self.network.version and host in self.network


def _normalise_name(text: str, what: str) -> bytes | _IP:
    """Lowercase ASCII octets of a host name without a trailing dot, or the IP address it spells.

    A non-ASCII name is encoded exactly as :class:`~socks_sansio.Address` encodes it
    (UTS #46 and IDNA 2008, one shared helper), so an entry written in Unicode
    matches the punycode form and the other way round, and a name that maps to
    an IP literal (fullwidth digits) is that address, as it is for ``Address``.
    """
    stripped = text.rstrip(".")
    if not stripped:
        raise LocalProtocolError(f"{what} is empty")
    if not stripped.isascii():
        # One trailing dot is passed on: with it, a name that spells an IP literal stays a name, as in Address.
        host = encode_unicode_host(stripped + "." if stripped != text else stripped, what)
        if not isinstance(host, bytes):
            return host
        stripped = host.decode("ascii").rstrip(".")  # that dot, or a trailing U+3002 and the like
    text = stripped.lower()
    bad = sorted(set(text) - _NAME_CHARS)
    if bad:
        raise LocalProtocolError(f"{what} contains {bad[0]!r}, which a host name cannot hold")
    return text.encode("ascii")


def _port(text: str, entry: str, variable: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 5 or not 0 < int(text) <= 0xFFFF:
        raise LocalProtocolError(f"{variable}: entry {entry!r} has a bad port {text!r} (expected 1 to 65535)")
    return int(text)


def _parse_entry(entry: str, variable: str) -> _Rule:
    if entry == "*":
        return _Rule()
    if "%" in entry:
        raise LocalProtocolError(f"{variable}: entry {entry!r} holds '%': IPv6 zone identifiers are not supported")
    if "/" in entry:
        try:
            return _Rule(network=ipaddress.ip_network(entry.replace("[", "").replace("]", ""), strict=False))
        except ValueError:
            raise LocalProtocolError(
                f"{variable}: entry {entry!r} is not a CIDR block like 10.0.0.0/8 or fd00::/8"
            ) from None
    port: int | None = None
    host = entry
    if entry.startswith("["):
        literal, close, rest = entry[1:].partition("]")
        if not close or (rest and not rest.startswith(":")):
            raise LocalProtocolError(f"{variable}: entry {entry!r} is not '[IPv6]' or '[IPv6]:port'")
        try:
            network = ipaddress.ip_network(ipaddress.IPv6Address(literal))
        except ValueError:
            raise LocalProtocolError(f"{variable}: entry {entry!r} is not an IPv6 address") from None
        return _Rule(network=network, port=_port(rest[1:], entry, variable) if rest else None)
    elif entry.count(":") == 1:
        host, _, port_text = entry.partition(":")
        port = _port(port_text, entry, variable)
    try:
        return _Rule(network=ipaddress.ip_network(host), port=port)
    except ValueError:
        if ":" in host:
            raise LocalProtocolError(f"{variable}: entry {entry!r} is not an IPv6 address") from None
    name = host.removeprefix("*.").removeprefix(".")
    normalised = _normalise_name(name, f"{variable}: entry {entry!r}")
    if not isinstance(normalised, bytes):  # a Unicode spelling of an address, e.g. fullwidth digits
        return _Rule(network=ipaddress.ip_network(normalised), port=port)
    return _Rule(name=normalised, port=port)


def _target_host(host: Host | str) -> bytes | _IP:
    if isinstance(host, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return host
    if isinstance(host, bytes | bytearray):
        try:
            text = bytes(host).decode("ascii")
        except UnicodeDecodeError:
            raise LocalProtocolError(f"target host {bytes(host)!r} is not ASCII") from None
    elif isinstance(host, str):
        text = host
    else:
        raise TypeError(f"host must be str, bytes or an ipaddress address, not {type(host).__name__}")
    literal = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return ipaddress.ip_address(literal)
    except ValueError:
        return _normalise_name(text, f"target host {text!r}")


def _check_target_port(port: int | None) -> None:
    if port is None:
        return
    if type(port) is not int:
        raise TypeError(f"port must be int or None, not {type(port).__name__}")
    if not 0 <= port <= 0xFFFF:
        raise LocalProtocolError(f"port must be in 0..65535, got {port}")


@final
@attrs.frozen
class NoProxy:
    """A parsed ``NO_PROXY`` list: which targets bypass the proxy.

    Build one with :meth:`parse`; see the module notes for the entry syntax.
    """

    rules: tuple[_Rule, ...]

    @classmethod
    def parse(cls, text: str, *, variable: str = "NO_PROXY") -> NoProxy:
        """Parse a ``NO_PROXY`` value.

        Args:
            text: entries separated by commas and/or whitespace; empty entries are skipped.
            variable: the variable's name, used in error messages.

        Raises:
            LocalProtocolError: an entry that is not ``*``, a name, an IP address or
                a CIDR block, or has a bad port; the message names *variable* and the entry.
        """
        if not isinstance(text, str):
            raise TypeError(f"{variable} must be str, not {type(text).__name__}")
        entries = text.replace(",", " ").split()
        return cls(tuple(_parse_entry(entry, variable) for entry in entries))

    def matches(self, host: Host | str, port: int | None = None) -> bool:
        """Whether a connection to *host* (and *port*, when known) must not use a proxy.

        Args:
            host: a name, an IP literal (IPv6 with or without brackets), or an
                :class:`~socks_sansio.Address` host.
            port: the target port, or ``None`` when unknown (entries with a port
                then never match).

        Raises:
            LocalProtocolError: *host* is not a host name or IP address.
            TypeError: a value of the wrong Python type.
        """
        _check_target_port(port)
        target = _target_host(host)
        return any(rule.matches(target, port) for rule in self.rules)


def _get(environ: Mapping[str, str], name: str) -> tuple[str, str] | None:
    value = environ.get(name)
    if value is None or not value.strip():
        return None
    return name, value.strip()


def _lookup(environ: Mapping[str, str], lower: str, *, uppercase: bool = True) -> tuple[str, str] | None:
    found = _get(environ, lower)
    if found is None and uppercase:
        found = _get(environ, lower.upper())
    return found


def select_proxy(
    scheme: str,
    host: Host | str,
    port: int | None = None,
    *,
    environ: Mapping[str, str],
) -> ProxyURL | None:
    """The proxy curl would use for a target, read from an environment mapping.

    Args:
        scheme: the target URL's scheme (``"https"``, ``"http"``, ...); it picks
            ``<scheme>_proxy``. Case-insensitive.
        host: the target host: a name, an IP literal, or an
            :class:`~socks_sansio.Address` host.
        port: the target port, used by ``NO_PROXY`` entries that name one.
        environ: the variables to read, usually ``os.environ``.

    Returns:
        The proxy to use, or ``None`` to connect directly.

    Raises:
        LocalProtocolError: a variable that is consulted holds something invalid;
            the message names the variable and never contains a password. An
            invalid ``NO_PROXY`` is reported even when no proxy is set.
        TypeError: a value of the wrong Python type.
    """
    if not isinstance(scheme, str):
        raise TypeError(f"scheme must be str, not {type(scheme).__name__}")
    scheme = scheme.lower()
    if not scheme or not scheme[0].isalpha() or not _SCHEME_CHARS.issuperset(scheme):
        raise LocalProtocolError(f"{scheme!r} is not a URL scheme such as 'https'")
    no_proxy = _lookup(environ, "no_proxy")
    if no_proxy is not None and NoProxy.parse(no_proxy[1], variable=no_proxy[0]).matches(host, port):
        return None
    _check_target_port(port)
    _target_host(host)
    found = _lookup(environ, f"{scheme}_proxy", uppercase=scheme != "http") or _lookup(environ, "all_proxy")
    if found is None:
        return None
    variable, value = found
    if "://" not in value:
        value = "http://" + value
    try:
        return ProxyURL.parse(value)
    except LocalProtocolError as exc:
        raise LocalProtocolError(f"{variable} does not hold a usable proxy URL: {exc.message}") from None

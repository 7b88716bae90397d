"""``Address``: the host and port that every proxy protocol carries.

A host is an :class:`~ipaddress.IPv4Address`, an :class:`~ipaddress.IPv6Address`
or a domain name. Domain names are stored as the octets that go on the wire
(ASCII, IDNA-encoded when given as a Unicode string), 1 to 255 of them, as
RFC 1928 §5 allows; storing octets means a name received from a peer is kept
exactly, whatever it contains, and never needs decoding to be forwarded.

IDNA means IDNA 2008 with UTS #46 non-transitional mapping, as in curl
(libidn2), browsers and requests: ``straße.de`` is ``xn--strae-oqa.de``, not
IDNA 2003's ``strasse.de``. Only a string holding a non-ASCII character is
converted, and IDNA's rules apply only to its labels that hold a non-ASCII
character: ASCII names and labels are kept as typed (case and ``_`` included).
:mod:`socks_sansio._idna` holds the conversion and the reasons for these choices.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Final, final

import attrs

from ._codes import AddressType
from ._errors import LocalProtocolError
from ._idna import encode_unicode_host
from ._util import remember

__all__ = ["Address", "Host", "checked_domain", "parse_ip_literal", "trusted_address"]

Host = ipaddress.IPv4Address | ipaddress.IPv6Address | bytes
"""What ``Address.host`` holds."""

_MAX_DOMAIN: Final = 255
# Octets refused in a domain name: controls, space, DEL. They have no place in a
# host name, and refusing them up front keeps them out of HTTP heads, SOCKS4a's
# NUL-terminated fields and log lines.
_FORBIDDEN_IN_DOMAIN: Final = frozenset(range(0x21)) | {0x7F}


@functools.lru_cache(maxsize=1024)
def parse_ip_literal(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address *value* spells, or ``None``; cached (both are immutable): clients name the same hosts again."""
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _to_host(value: object) -> Host:
    # Converts and checks in one call (the fields have converters, no validators).
    if isinstance(value, str):
        if ":" in value or value[-1:].isdigit():  # only these can be IP literals: skip two ValueErrors
            literal = parse_ip_literal(value)
            if literal is not None:
                return literal
        if value.isascii():
            return _domain(value.encode("ascii"))
        # UTS #46 + IDNA 2008 (see _idna). Mapping turns e.g. fullwidth digits into
        # ASCII, so the result may be the IP address the name spells.
        host = encode_unicode_host(value, f"host {value!r}")
        return _domain(host) if isinstance(host, bytes) else host
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return _domain(bytes(value))
    raise TypeError(f"host must be str, bytes or an ipaddress address, not {type(value).__name__}")


def _domain(host: bytes) -> bytes:
    if not 1 <= len(host) <= _MAX_DOMAIN:
        raise LocalProtocolError(f"a domain name must be 1 to 255 octets long, got {len(host)}")
    if not _FORBIDDEN_IN_DOMAIN.isdisjoint(host):
        raise LocalProtocolError(f"domain name {host!r} contains a control character or space")
    return host


def _to_port(port: int) -> int:
    if type(port) is not int:
        raise TypeError(f"port must be int, not {type(port).__name__}")
    if not 0 <= port <= 0xFFFF:
        raise LocalProtocolError(f"port must be in 0..65535, got {port}")
    return port


# Text hosts already converted: name or IP literal -> Host. Every value is
# immutable (bytes, ipaddress objects), so sharing one is safe; the conversion
# (IP literal parsing, the domain checks, IDNA) is then paid once per distinct
# text. Bounded: emptied when full, so text a peer sends cannot grow it.
_HOSTS: Final[dict[str, Host]] = {}
_HOSTS_MAX: Final = 1024


def host_of_text(text: str) -> Host:
    """``_to_host(text)`` through the cache of converted text hosts (errors are not cached)."""
    host = _HOSTS.get(text)
    if host is None:
        host = remember(_HOSTS, text, _to_host(text), _HOSTS_MAX)
    return host


# Events a parser builds from wire octets it has already checked skip the
# constructor's conversions: object.__new__ plus the slots, as attrs' own __init__ sets them.
_new = object.__new__
_set = object.__setattr__


@final
@attrs.frozen(init=False)
class Address:
    """A host (IPv4, IPv6 or domain name) and a port.

    Args:
        host: an IP address object, a string (an IP literal becomes an IP address;
            anything else is a domain name, encoded with UTS #46 and IDNA 2008 if it
            is not ASCII; one that maps to an IP literal is that address), or the
            domain name's octets.
        port: 0 to 65535.

    Raises:
        LocalProtocolError: a domain that is empty, longer than 255 octets, holds a
            control character or space, or is not a valid IDNA 2008 host name (a
            non-ASCII label with a code point IDNA 2008 forbids, such as an emoji,
            or over 63 octets once encoded); a port out of range.
        TypeError: a host or port of the wrong Python type.
    """

    host: Host
    port: int

    def __init__(self, host: object, port: int) -> None:
        # Written by hand (attrs writes the rest): a host given as text costs one
        # dict lookup once seen (see host_of_text), and a valid port no call.
        if type(host) is str:
            converted = _HOSTS.get(host)
            host = converted if converted is not None else host_of_text(host)
        else:
            host = _to_host(host)
        if type(port) is not int or not 0 <= port <= 0xFFFF:
            _to_port(port)  # raises the error
        _set(self, "host", host)
        _set(self, "port", port)

    @property
    def atype(self) -> AddressType:
        """The SOCKS5 address type that carries this host."""
        if isinstance(self.host, ipaddress.IPv4Address):
            return AddressType.IPV4
        if isinstance(self.host, ipaddress.IPv6Address):
            return AddressType.IPV6
        return AddressType.DOMAIN

    @property
    def is_domain(self) -> bool:
        """True when the host is a name rather than an IP address."""
        return isinstance(self.host, bytes)

    @property
    def host_str(self) -> str:
        """The host as text: the IP literal, or the domain's octets (ASCII; others escaped)."""
        if isinstance(self.host, bytes):
            return self.host.decode("ascii", "backslashreplace")
        return str(self.host)

    @property
    def authority(self) -> str:
        """``host:port``, with an IPv6 literal bracketed: ``[::1]:443``."""
        host = self.host
        if isinstance(host, bytes):  # host_str, inlined: encoding a request reads this twice
            return f"{host.decode('ascii', 'backslashreplace')}:{self.port}"
        if isinstance(host, ipaddress.IPv6Address):
            return f"[{host}]:{self.port}"
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return self.authority

    @classmethod
    def parse_authority(cls, text: str | bytes, *, default_port: int | None = None) -> Address:
        """Parse ``host:port`` or ``[v6]:port`` (the authority form of RFC 9110 §7.2).

        Args:
            text: the authority. Bytes must be ASCII.
            default_port: the port to use when *text* has none; without it a port is
                required.

        Raises:
            LocalProtocolError: the text is not an authority (missing or bad port,
                unbracketed IPv6, empty host, bad bracket); the message says which.
        """
        if isinstance(text, bytes | bytearray):
            raw = bytes(text)
            try:
                text = raw.decode("ascii")
            except UnicodeDecodeError:
                raise LocalProtocolError(f"authority {raw!r} is not ASCII") from None
        if text.startswith("["):
            close = text.find("]")
            if close < 0:
                raise LocalProtocolError(f"authority {text!r} has '[' without ']'")
            literal, rest = text[1:close], text[close + 1 :]
            try:
                host: Host = ipaddress.IPv6Address(literal)
            except ValueError:
                raise LocalProtocolError(f"{literal!r} inside brackets is not an IPv6 address") from None
            if rest and not rest.startswith(":"):
                raise LocalProtocolError(f"authority {text!r} has text after ']' that is not ':port'")
            port_text: str | None = rest[1:] if rest else None
        else:
            name, colon, after = text.rpartition(":")
            if not colon:
                name, port_text = text, None
            else:
                port_text = after
            if ":" in name:
                raise LocalProtocolError(f"authority {text!r}: an IPv6 address must be written in brackets")
            if not name:
                raise LocalProtocolError(f"authority {text!r} has no host")
            host = host_of_text(name)
        if port_text is None:
            if default_port is None:
                raise LocalProtocolError(f"authority {text!r} has no port")
            port = default_port
        elif not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5:
            raise LocalProtocolError(f"authority {text!r} has a bad port {port_text!r}")
        else:
            port = int(port_text)
        return trusted_address(host, _to_port(port))  # the host was converted and checked above


def trusted_address(host: Host, port: int) -> Address:
    """An :class:`Address` without conversion or checks, for parsers.

    *host* must be an IP address object or :func:`checked_domain` octets, *port* in 0..65535.
    """
    address = _new(Address)
    _set(address, "host", host)
    _set(address, "port", port)
    return address


checked_domain = _domain
"""Check domain-name octets as ``Address`` does; returns them or raises LocalProtocolError."""

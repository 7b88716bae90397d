"""Proxy URLs: ``socks5://``, ``socks5h://``, ``socks4://``, ``socks4a://``, ``http://``, ``https://``.

Strategy: a :class:`ProxyURL` is a validated value (protocol, address, credentials,
who resolves target names, TLS to the proxy); :meth:`ProxyURL.parse` reads the
text form with curl's conventions and :meth:`ProxyURL.to_url` writes it back, so
``ProxyURL.parse(url.to_url(include_password=True)) == url``.

The text is cut by hand rather than with :mod:`urllib.parse`, for three reasons:
every failure must be a :class:`LocalProtocolError` that says what was wrong
(``urlsplit`` raises ``ValueError`` and silently accepts a lot); percent-decoding
must be strict (``%zz`` is an error, not two literal characters); and no error
message may ever contain the password. The last point shapes the parser: the
authority ends at the first ``/``, ``?`` or ``#`` (RFC 3986 §3.2), and if an
``@`` appears after that point the password most likely holds one of those
characters unencoded, so the parser stops with a message that quotes nothing.
Otherwise the only parts ever quoted in messages are the scheme, the host, the
port and the path, none of which can hold the password.

Choices where curl and the RFCs leave room:

* Default ports: 1080 for SOCKS, 8080 for ``http://`` and 443 for ``https://``
  (curl uses 1080 for ``http://`` proxies too; 8080 is what HTTP proxies
  listen on in practice).
* ``user@host`` (no ``:``) gives the password ``b""``; an empty userinfo
  (``socks5://@host``) means no credentials at all, while ``:@`` is an empty
  username with an empty password (how :meth:`ProxyURL.to_url` writes those).
* The port may be empty (``host:``), meaning the default (RFC 3986 §3.2.3);
  port 0 is refused, since nothing can be reached there.
* A trailing ``/`` is allowed; any other path, a query or a fragment is refused.
* Credentials are checked against what the protocol can carry: SOCKS5 needs a
  1-255 octet username and a password of at most 255 octets (RFC 1929 §2);
  SOCKS4 has a user id but no password, and the user id cannot hold a NUL; HTTP
  Basic cannot carry a ``:`` in the username (RFC 7617 §2).
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from types import MappingProxyType
from typing import Final, final

import attrs

from ._address import Address
from ._errors import LocalProtocolError
from ._validators import check_length, to_bytes

__all__ = ["DEFAULT_PORTS", "ProxyProtocol", "ProxyURL"]


class ProxyProtocol(enum.Enum):
    """The protocol spoken to a proxy."""

    SOCKS5 = "socks5"
    """SOCKS version 5 (RFC 1928), with optional RFC 1929 username/password."""
    SOCKS4 = "socks4"
    """SOCKS version 4, or 4a when the proxy resolves names."""
    HTTP = "http"
    """HTTP CONNECT (RFC 9110 §9.3.6)."""


@attrs.frozen
class _Scheme:
    protocol: ProxyProtocol
    remote_dns: bool
    tls: bool
    default_port: int


_SCHEMES: Final = {
    "socks5": _Scheme(ProxyProtocol.SOCKS5, remote_dns=False, tls=False, default_port=1080),
    "socks5h": _Scheme(ProxyProtocol.SOCKS5, remote_dns=True, tls=False, default_port=1080),
    "socks4": _Scheme(ProxyProtocol.SOCKS4, remote_dns=False, tls=False, default_port=1080),
    "socks4a": _Scheme(ProxyProtocol.SOCKS4, remote_dns=True, tls=False, default_port=1080),
    "http": _Scheme(ProxyProtocol.HTTP, remote_dns=True, tls=False, default_port=8080),
    "https": _Scheme(ProxyProtocol.HTTP, remote_dns=True, tls=True, default_port=443),
}
_SCHEME_OF: Final = {(s.protocol, s.remote_dns, s.tls): name for name, s in _SCHEMES.items()}
_KNOWN: Final = ", ".join(f"{name}://" for name in _SCHEMES)

DEFAULT_PORTS: Final = MappingProxyType({name: s.default_port for name, s in _SCHEMES.items()})
"""The port used for each scheme when the URL names none."""

_ALPHA: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_DIGITS: Final = frozenset("0123456789")
# RFC 3986 §3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
_SCHEME_CHARS: Final = _ALPHA | _DIGITS | frozenset("+-.")
# RFC 3986 §2.3 unreserved characters: the only ones written unescaped in userinfo.
_UNRESERVED: Final = _ALPHA | _DIGITS | frozenset("-._~")
_UNRESERVED_OCTETS: Final = frozenset(ord(c) for c in _UNRESERVED)
# Octets a proxy's host name may hold (letters, digits, '-', '.', '_', '~'), after
# IDNA encoding. Anything else is a typo or an injection attempt, and could not be
# written back into a URL that parses to the same value.
_HOST_OCTETS: Final = _UNRESERVED_OCTETS
_HEX: Final = frozenset("0123456789abcdefABCDEF")


def _percent_decode(text: str, what: str) -> bytes:
    """Decode RFC 3986 §2.1 percent-encoding strictly; other characters become UTF-8.

    *what* names the part ("username" or "password"); messages never quote *text*.
    """
    out = bytearray()
    i = 0
    while i < len(text):
        char = text[i]
        if char == "%":
            pair = text[i + 1 : i + 3]
            if len(pair) != 2 or not _HEX.issuperset(pair):
                raise LocalProtocolError(
                    f"the {what} in the proxy URL has a '%' that is not followed by two hex digits"
                )
            out.append(int(pair, 16))
            i += 3
            continue
        try:
            out += char.encode("utf-8")
        except UnicodeEncodeError:
            raise LocalProtocolError(
                f"the {what} in the proxy URL holds a character that cannot be encoded as UTF-8"
            ) from None
        i += 1
    return bytes(out)


def _percent_encode(value: bytes) -> str:
    return "".join(chr(o) if o in _UNRESERVED_OCTETS else f"%{o:02X}" for o in value)


def _parse_host(text: str) -> ipaddress.IPv6Address | str:
    """Return the host part as an IPv6 address or as text for :class:`Address`."""
    if not text:
        raise LocalProtocolError("the proxy URL has no host")
    if text.startswith("["):
        if not text.endswith("]"):
            raise LocalProtocolError(f"the proxy URL's host {text!r} has '[' without a closing ']'")
        literal = text[1:-1]
        if "%" in literal:
            raise LocalProtocolError(f"IPv6 zone identifiers are not supported in a proxy URL: {text!r}")
        try:
            return ipaddress.IPv6Address(literal)
        except ValueError:
            raise LocalProtocolError(f"{literal!r} inside brackets is not an IPv6 address") from None
    return text


def _parse_port(text: str | None, default: int) -> int:
    if text is None or text == "":
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > 5:
        raise LocalProtocolError(f"the proxy URL's port {text!r} is not a number from 1 to 65535")
    port = int(text)
    if not 1 <= port <= 0xFFFF:
        raise LocalProtocolError(f"the proxy URL's port {port} is not in 1..65535")
    return port


def _split_host_port(authority: str) -> tuple[str, str | None]:
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            raise LocalProtocolError(f"the proxy URL's host {authority!r} has '[' without a closing ']'")
        host, rest = authority[: close + 1], authority[close + 1 :]
        if rest and not rest.startswith(":"):
            raise LocalProtocolError(f"the proxy URL has {rest!r} after ']' where ':port' was expected")
        return host, (rest[1:] if rest else None)
    host, colon, port = authority.rpartition(":")
    if not colon:
        return authority, None
    if ":" in host:
        raise LocalProtocolError(
            f"the proxy URL's host {authority!r} looks like an IPv6 address: write it in brackets, "
            "like socks5://[::1]:1080"
        )
    return host, port


def _optional_bytes(value: object) -> bytes | None:
    return None if value is None else to_bytes(value)


def _check_address(_i: object, _a: object, address: Address) -> None:
    if not isinstance(address, Address):
        raise TypeError(f"address must be an Address, not {type(address).__name__}")
    if address.port == 0:
        raise LocalProtocolError("a proxy's port must be in 1..65535, got 0")
    if isinstance(address.host, bytes):
        bad = sorted(set(address.host) - _HOST_OCTETS)
        if bad:
            raise LocalProtocolError(
                f"the proxy's host {address.host_str!r} contains {chr(bad[0])!r}: a host is a name "
                "(letters, digits, '-', '.', '_'), an IPv4 address or a bracketed IPv6 address"
            )


@final
@attrs.frozen(kw_only=True)
class ProxyURL:
    """Where a proxy is, how to talk to it, and with which credentials.

    Build one with :meth:`parse`, or directly.

    Args:
        protocol: the protocol the proxy speaks.
        address: the proxy's host and port (1 to 65535).
        username: the user name (``str`` is encoded as UTF-8), or ``None``.
        password: the password; ``None`` with a username means ``b""``. Never
            shown by ``repr()``, ``str()`` or any error message.
        remote_dns: ``True`` when the proxy resolves target names (``socks5h``,
            ``socks4a``, and always for HTTP); ``False`` when the client resolves
            them and sends an address (``socks5``, ``socks4``).
        tls: ``True`` to speak TLS to the proxy itself (``https://``; HTTP only).

    Raises:
        LocalProtocolError: a password without a username; credentials the protocol
            cannot carry (see the module notes); ``remote_dns=False`` for HTTP;
            ``tls=True`` for SOCKS; port 0.
        TypeError: a value of the wrong Python type.
    """

    protocol: ProxyProtocol = attrs.field(validator=attrs.validators.instance_of(ProxyProtocol))
    address: Address = attrs.field(validator=_check_address)
    username: bytes | None = attrs.field(default=None, converter=_optional_bytes)
    password: bytes | None = attrs.field(default=None, converter=_optional_bytes, repr=False)
    remote_dns: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    tls: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    # redacted(), computed on first use: adapters name the proxy in logs, errors and
    # reports on every connect. Not part of the value (no init, eq, hash or repr).
    _redacted: str | None = attrs.field(default=None, init=False, eq=False, hash=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.username is None:
            if self.password is not None:
                raise LocalProtocolError("a proxy URL cannot have a password without a username")
        elif self.password is None:
            object.__setattr__(self, "password", b"")
        if self.protocol is ProxyProtocol.HTTP and not self.remote_dns:
            raise LocalProtocolError(
                "an HTTP proxy always resolves the CONNECT target itself: remote_dns must be True"
            )
        if self.tls and self.protocol is not ProxyProtocol.HTTP:
            raise LocalProtocolError("TLS to the proxy is only supported for HTTP proxies (https://)")
        self._check_credentials()

    def _check_credentials(self) -> None:
        username, password = self.username, self.password
        if username is None or password is None:
            return
        if self.protocol is ProxyProtocol.SOCKS5:
            check_length("a SOCKS5 username (RFC 1929 §2)", username, 1, 255)
            check_length("a SOCKS5 password (RFC 1929 §2)", password, 0, 255)
        elif self.protocol is ProxyProtocol.SOCKS4:
            if b"\x00" in username:
                raise LocalProtocolError("a SOCKS4 user id cannot contain a NUL octet")
            if password:
                raise LocalProtocolError(
                    "SOCKS4 has a user id but no password: write socks4://user@host, without ':password'"
                )
        elif b":" in username:
            raise LocalProtocolError("an HTTP Basic username cannot contain ':' (RFC 7617 §2)")

    @property
    def scheme(self) -> str:
        """The URL scheme: ``socks5``, ``socks5h``, ``socks4``, ``socks4a``, ``http`` or ``https``."""
        return _SCHEME_OF[self.protocol, self.remote_dns, self.tls]

    @property
    def credentials(self) -> tuple[bytes, bytes] | None:
        """``(username, password)``, or ``None`` when the URL carries no credentials."""
        if self.username is None or self.password is None:
            return None
        return (self.username, self.password)

    @classmethod
    def parse(cls, text: str) -> ProxyURL:
        """Parse a proxy URL such as ``socks5h://user:p%40ss@proxy.example:1080``.

        The scheme is case-insensitive. Userinfo is percent-decoded into octets
        (characters that are not percent-encoded count as UTF-8). A host is a name
        (IDNA-encoded if not ASCII), an IPv4 address or a bracketed IPv6 address.
        Leading and trailing whitespace is ignored.

        Args:
            text: the URL.

        Raises:
            LocalProtocolError: the text is not a proxy URL; the message says what
                is wrong and never contains the password.
            TypeError: *text* is not a ``str``.
        """
        if not isinstance(text, str):
            raise TypeError(f"a proxy URL must be str, not {type(text).__name__}")
        return _parse_cached(text)

    def to_url(self, *, include_password: bool = False) -> str:
        """The URL text, with the port always written.

        Args:
            include_password: write the real password; by default it is written
                as ``***`` (an empty password is simply left out).

        Returns:
            ``scheme://[user[:password]@]host:port``; userinfo is percent-encoded,
            so ``ProxyURL.parse(url.to_url(include_password=True)) == url``.
        """
        userinfo = ""
        if self.username is not None:
            userinfo = _percent_encode(self.username)
            if self.password:
                userinfo += ":" + (_percent_encode(self.password) if include_password else "***")
            elif not userinfo:
                userinfo = ":"  # "@" alone would read back as no credentials at all
            userinfo += "@"
        return f"{self.scheme}://{userinfo}{self.address.authority}"

    def redacted(self) -> str:
        """The URL with the password written as ``***``: safe for logs. Same as ``str()``."""
        text = self._redacted
        if text is None:
            text = self.to_url()
            object.__setattr__(self, "_redacted", text)
        return text

    def __str__(self) -> str:
        return self.redacted()


def _parse(text: str) -> ProxyURL:
    """:meth:`ProxyURL.parse` for a ``str``, uncached."""
    text = text.strip(" \t\r\n")
    scheme_text, sep, rest = text.partition("://")
    if not sep:
        raise LocalProtocolError(f"a proxy URL must start with a scheme: one of {_KNOWN}")
    if not scheme_text or scheme_text[0] not in _ALPHA or not _SCHEME_CHARS.issuperset(scheme_text):
        raise LocalProtocolError(f"a proxy URL must start with a scheme: one of {_KNOWN}")
    scheme = _SCHEMES.get(scheme_text.lower())
    if scheme is None:
        raise LocalProtocolError(f"unknown proxy scheme {scheme_text!r}: expected one of {_KNOWN}")

    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    if "@" in tail:
        raise LocalProtocolError(
            "the proxy URL has '@' after a '/', '?' or '#': if the username or password holds "
            "one of those characters, percent-encode it (%2F, %3F, %23, %40)"
        )
    if tail not in ("", "/"):
        raise LocalProtocolError(
            f"a proxy URL has no path, query or fragment (a trailing '/' is allowed), got {tail!r}"
        )

    userinfo, at, hostport = authority.rpartition("@")
    username = password = None
    if at and userinfo:
        user_text, colon, password_text = userinfo.partition(":")
        username = _percent_decode(user_text, "username")
        password = _percent_decode(password_text, "password") if colon else b""

    host_text, port_text = _split_host_port(hostport)
    host = _parse_host(host_text)
    port = _parse_port(port_text, scheme.default_port)
    return ProxyURL(
        protocol=scheme.protocol,
        address=Address(host, port),
        username=username,
        password=password,
        remote_dns=scheme.remote_dns,
        tls=scheme.tls,
    )


# Parsing is pure and a ProxyURL is immutable, so the same text always gives an
# equal value: adapters parse the proxy= string on every call, so remember the
# last few (errors are not cached: they are raised again each time).
_parse_cached: Final = functools.lru_cache(maxsize=256)(_parse)

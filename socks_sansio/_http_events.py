"""Events of the HTTP CONNECT conversation (RFC 9110 §9.3.6, RFC 9112).

Every event is an immutable, keyword-only value, validated on construction, so
nothing illegal reaches the wire: CR, LF, NUL (and the other controls RFC 9110
§5.5 leaves out of field values) are refused in every field, header names must
be tokens (RFC 9110 §5.1), and the target must fit the authority form.

The event a client passes to ``send()`` is exactly the event the server's
``next_event()`` returns, and the other way round. To keep that true the
constructors normalise once, identically on both sides:

* header names and values accept ``str`` (encoded as UTF-8) or bytes and are
  stored as bytes; names keep their case; values lose surrounding SP/HTAB
  (that whitespace is not part of a field value, RFC 9110 §5.5);
* :class:`ConnectRequest` adds ``Host: <authority>`` (first) when none is
  given, and refuses a ``Host`` that names another authority;
* :class:`ConnectResponse` adds ``Content-Length`` when a body is given, and an
  empty reason becomes the standard phrase of the status (``200 OK``).

Don't subclass these.
"""

from __future__ import annotations

import base64
import binascii
import http
import ipaddress
import re
from collections.abc import Iterable
from typing import Final, final

import attrs

from ._address import Address
from ._errors import LocalProtocolError
from ._socks5_events import ConnectionClosed
from ._util import remember
from ._validators import to_bytes

__all__ = [
    "ConnectRequest",
    "ConnectResponse",
    "Headers",
    "HttpConnectEvent",
    "content_length",
    "field_values",
    "parsed_request",
    "parsed_response",
    "proxy_basic_auth",
]

Headers = tuple[tuple[bytes, bytes], ...]
"""Header fields in order, as ``(name, value)`` octets."""

HeadersInput = Iterable[tuple[str | bytes, str | bytes]]

# token = 1*tchar (RFC 9110 §5.6.2).
TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# field-value characters: field-vchar / SP / HTAB (RFC 9110 §5.5), obs-text included.
# The reason-phrase allows the same set (RFC 9112 §4).
FIELD_TEXT: Final = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
# HTTP-version = HTTP-name "/" DIGIT "." DIGIT (RFC 9112 §2.3); only 1.x is spoken here.
VERSION: Final = re.compile(rb"1\.[0-9]")
# reg-name = *( unreserved / pct-encoded / sub-delims ) (RFC 3986 §3.2.2).
_REG_NAME: Final = re.compile(rb"[A-Za-z0-9\-._~!$&'()*+,;=%]+")
_OWS: Final = b" \t"


def _control_problem(value: bytes) -> str:
    if b"\r" in value or b"\n" in value or b"\0" in value:
        return "contains CR, LF or NUL (refused: that would inject header lines)"
    return "contains a control character other than HTAB (RFC 9110 §5.5)"


# Header pairs given to constructors and already checked: (name, value) as given,
# both exactly str or bytes -> the stored octets. A client sends the same few
# (User-Agent, Proxy-Authorization) every time. Bounded: emptied when full.
_FIELDS: Final[dict[tuple[str | bytes, str | bytes], tuple[bytes, bytes]]] = {}
_FIELDS_MAX: Final = 1024
_TEXT_TYPES: Final = (str, bytes)


def _headers(value: HeadersInput) -> Headers:
    if value == ():
        return ()  # the default
    if type(value) is tuple:
        fields = []
        try:
            for item in value:
                field = _FIELDS.get(item) if type(item) is tuple else None
                if field is None:
                    return _checked_headers(value)  # first seen or invalid: the long way
                fields.append(field)
        except TypeError:  # an unhashable pair, such as one holding a bytearray
            return _checked_headers(value)
        return tuple(fields)
    return _checked_headers(value)


def _checked_headers(value: HeadersInput) -> Headers:
    if isinstance(value, str | bytes | bytearray | memoryview):
        raise TypeError("headers must be a sequence of (name, value) pairs, not a string")
    pairs = []
    for item in value:
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise TypeError(f"each header must be a (name, value) pair, not {item!r}")
        name = to_bytes(item[0])
        if not TOKEN.fullmatch(name):
            raise LocalProtocolError(f"header name {name!r} is not a token (RFC 9110 §5.1)")
        pairs.append((name, to_bytes(item[1])))
    fields = field_values(pairs)
    if type(value) is tuple:
        if len(_FIELDS) + len(fields) > _FIELDS_MAX:
            _FIELDS.clear()
        for item, field in zip(value, fields, strict=True):
            if type(item) is tuple and type(item[0]) in _TEXT_TYPES and type(item[1]) in _TEXT_TYPES:
                _FIELDS[item] = field
    return fields


def field_values(fields: Iterable[tuple[bytes, bytes]]) -> Headers:
    """Check and trim the values of header fields whose names are tokens already, as the constructors do.

    Raises:
        LocalProtocolError: a value holding a control character.
    """
    out = []
    for name, raw in fields:
        value = raw.strip(_OWS)
        if not FIELD_TEXT.fullmatch(value):
            raise LocalProtocolError(f"value of header {name!r} {_control_problem(value)}")
        out.append((name, value))
    return tuple(out)


_KNOWN_VERSIONS: Final = frozenset({b"1.0", b"1.1"})


def _version(value: str | bytes) -> bytes:
    if type(value) is bytes and value in _KNOWN_VERSIONS:
        return value  # the usual values: no regex
    version = to_bytes(value)
    if not VERSION.fullmatch(version):
        raise LocalProtocolError(f"http_version must be b'1.0' or b'1.1' (HTTP/1.x), got {version!r}")
    return version


def _get_all(headers: Headers, name: str | bytes) -> tuple[bytes, ...]:
    wanted = to_bytes(name).lower()
    return tuple([value for key, value in headers if key.lower() == wanted])


def content_length(headers: Headers) -> int | None:
    """The body length the ``Content-Length`` fields declare, or ``None``.

    ``None`` when there is no such field, or when any is not ``1*DIGIT`` or they
    disagree (RFC 9110 §8.6); absurd lengths (over 18 digits) count as invalid.
    """
    values = _get_all(headers, b"content-length")
    if not values:
        return None
    first = values[0]
    if any(v != first for v in values) or not first.isdigit() or len(first) > 18:
        return None
    return int(first)


# Authority texts already read as targets (a client names the same few again and
# again; an Address is immutable, so one is shared). Bounded: emptied when full,
# so the targets a peer sends cannot grow it. Errors are not kept.
_TARGETS: Final[dict[str | bytes, Address]] = {}
_TARGETS_MAX: Final = 1024


def _target(value: Address | str | bytes) -> Address:
    if type(value) is str or type(value) is bytes:  # str and bytes never compare equal: one dict
        target = _TARGETS.get(value)
        if target is None:
            target = remember(_TARGETS, value, _check_target(Address.parse_authority(value)), _TARGETS_MAX)
        return target
    if isinstance(value, str | bytes):
        # parse_authority's result reads back the same: no need to re-read it.
        return _check_target(Address.parse_authority(value))
    if not isinstance(value, Address):
        raise TypeError(f"target must be an Address or an authority string, not {type(value).__name__}")
    # Re-read our own authority so the value is what a server will parse
    # (a domain b"127.0.0.1" becomes the IPv4 address it spells).
    return Address.parse_authority(_check_target(value).authority)


def _check_target(value: Address) -> Address:
    host = value.host
    if isinstance(host, ipaddress.IPv6Address) and host.scope_id:
        raise LocalProtocolError(f"the scoped IPv6 address {host} cannot be a CONNECT target")
    if isinstance(host, bytes) and not _REG_NAME.fullmatch(host):
        raise LocalProtocolError(
            f"domain {host!r} holds octets not allowed in an authority (RFC 3986 §3.2.2 reg-name)"
        )
    if value.port == 0:
        raise LocalProtocolError("the CONNECT target needs a port in 1..65535, got 0 (RFC 9110 §9.3.6)")
    return value


def _same_authority(value: bytes, target: Address) -> bool:
    """Whether a Host value names the CONNECT target: ``host:port``, or ``host`` alone.

    RFC 9112 §3.2 asks clients for the whole authority, port included, and
    ours send that; some (PySocks) send the host alone. The request target is
    what counts for CONNECT (RFC 9112 §3.2.3), so a Host without a port is
    accepted when its host matches, and a Host naming another port or host is not.
    """
    try:
        other = Address.parse_authority(value, default_port=target.port)
    except LocalProtocolError:
        return False
    if isinstance(other.host, bytes) and isinstance(target.host, bytes):
        return other.host.lower() == target.host.lower() and other.port == target.port
    return other == target


@final
@attrs.frozen(kw_only=True)
class ConnectRequest:
    """Client → proxy: open a tunnel to *target* (RFC 9110 §9.3.6).

    Sent as ``CONNECT host:port HTTP/1.1`` (authority form, IPv6 bracketed) with
    the headers. When *headers* hold no ``Host``, ``Host: host:port`` is added as
    the first header (an HTTP/1.0 request received without one gets it too).

    Args:
        target: an :class:`Address` with a port in 1..65535, or an authority string
            such as ``"example.com:443"`` or ``"[::1]:443"``. A domain may only hold
            reg-name characters (RFC 3986 §3.2.2).
        headers: ``(name, value)`` pairs, ``str`` (UTF-8) or bytes; see
            :func:`proxy_basic_auth` for credentials.
        http_version: ``b"1.1"`` (default) or ``b"1.0"``.

    Raises:
        LocalProtocolError: a control character in a field, a name that is not a
            token, port 0, more than one ``Host`` or one naming another authority.
    """

    target: Address = attrs.field(converter=_target)
    headers: Headers = attrs.field(default=(), converter=_headers)
    http_version: bytes = attrs.field(default=b"1.1", converter=_version)

    def __attrs_post_init__(self) -> None:
        hosts = [value for name, value in self.headers if name.lower() == b"host"]
        if len(hosts) > 1:
            raise LocalProtocolError(f"a request carries one Host header, got {len(hosts)} (RFC 9112 §3.2)")
        if not hosts:
            host = (b"Host", self.target.authority.encode("ascii"))
            object.__setattr__(self, "headers", (host, *self.headers))
        elif not _same_authority(hosts[0], self.target):
            raise LocalProtocolError(
                f"Host {hosts[0]!r} does not name the CONNECT target {self.target.authority} "
                "(it must be the same host, and the same port if it has one)"
            )

    def get(self, name: str | bytes) -> bytes | None:
        """The first value of header *name* (any case), or ``None``."""
        values = self.get_all(name)
        return values[0] if values else None

    def get_all(self, name: str | bytes) -> tuple[bytes, ...]:
        """Every value of header *name* (any case), in order."""
        return _get_all(self.headers, name)

    @property
    def basic_credentials(self) -> tuple[bytes, bytes] | None:
        """``(username, password)`` from a Basic ``Proxy-Authorization``, else ``None``.

        ``None`` as well when the header is malformed (not base64, no ``:``).
        """
        value = self.get(b"proxy-authorization")
        if value is None:
            return None
        scheme, _, token = value.partition(b" ")
        if scheme.lower() != b"basic":
            return None
        try:
            decoded = base64.b64decode(token.strip(_OWS), validate=True)
        except binascii.Error:
            return None
        username, colon, password = decoded.partition(b":")
        return (username, password) if colon else None


def _status(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"status_code must be int, not {type(value).__name__}")
    if not 100 <= value <= 599:
        raise LocalProtocolError(f"status_code must be in 100..599 (RFC 9110 §15), got {value}")
    return int(value)


def _reason(value: str | bytes) -> bytes:
    reason = to_bytes(value)
    if not FIELD_TEXT.fullmatch(reason):
        raise LocalProtocolError(f"reason {reason!r} {_control_problem(reason)}")
    return reason


_PHRASES: Final = {int(status): status.phrase.encode("ascii") for status in http.HTTPStatus}
"""The standard reason phrase of each status code (HTTPStatus(code) is an enum call: slow)."""


def _has_no_content(status: int) -> bool:
    """1xx, 204, 304 never have content (RFC 9110 §6.4.1); a 2xx to CONNECT opens the tunnel."""
    return status < 300 or status in (204, 304)


@final
@attrs.frozen(kw_only=True)
class ConnectResponse:
    """Proxy → client: the answer to a :class:`ConnectRequest` (RFC 9110 §9.3.6).

    Any 2xx opens the tunnel. A 1xx is interim: the final response follows. Any
    other status refuses; a 407 carries ``Proxy-Authenticate`` challenges
    (:attr:`challenges`). A refusal's *body* is sent with a ``Content-Length``
    (added when absent). A refusal received with a ``Content-Length`` is read
    whole (up to the connection's ``max_body_size``) into *body*; an unframed or
    larger body is left in ``trailing_data`` and *body* is empty.

    To keep the connection for a retry (for example answering a 407 with
    credentials), a refusal must be framed: give a body, or an explicit
    ``Content-Length: 0``. Without one, the body ends when the connection does
    (RFC 9112 §6.3), so both ends must close.

    Args:
        status_code: 100 to 599. 101 is refused when sent or received (a CONNECT is
            not upgraded).
        reason: the reason phrase; empty means the standard phrase of the code
            (``b"OK"`` for 200), or stays empty for codes without one.
        headers: ``(name, value)`` pairs, ``str`` (UTF-8) or bytes.
        body: the content of a refusal; not allowed on 1xx, 2xx, 204, 304.
        http_version: ``b"1.1"`` (default) or ``b"1.0"``.

    Raises:
        LocalProtocolError: a field out of range or holding control characters, a
            body where none is allowed, a ``Content-Length`` that disagrees with a
            non-empty body, a body with ``Transfer-Encoding``.
    """

    status_code: int = attrs.field(converter=_status)
    reason: bytes = attrs.field(default=b"", converter=_reason)
    headers: Headers = attrs.field(default=(), converter=_headers)
    body: bytes = attrs.field(default=b"", converter=to_bytes, repr=lambda b: f"<{len(b)} octets>")
    http_version: bytes = attrs.field(default=b"1.1", converter=_version)

    def __attrs_post_init__(self) -> None:
        if not self.reason:
            object.__setattr__(self, "reason", _PHRASES.get(self.status_code, b""))
        if not self.body:
            return
        if _has_no_content(self.status_code):
            raise LocalProtocolError(f"a {self.status_code} response has no body (RFC 9110 §6.4.1, §9.3.6)")
        if self.get_all(b"transfer-encoding"):
            raise LocalProtocolError("a body is sent with Content-Length; remove Transfer-Encoding")
        if not self.get_all(b"content-length"):
            object.__setattr__(self, "headers", (*self.headers, (b"Content-Length", b"%d" % len(self.body))))
        elif content_length(self.headers) != len(self.body):
            raise LocalProtocolError(
                f"Content-Length {self.get_all(b'content-length')!r} disagrees with the body of "
                f"{len(self.body)} octets"
            )

    def get(self, name: str | bytes) -> bytes | None:
        """The first value of header *name* (any case), or ``None``."""
        values = self.get_all(name)
        return values[0] if values else None

    def get_all(self, name: str | bytes) -> tuple[bytes, ...]:
        """Every value of header *name* (any case), in order."""
        return _get_all(self.headers, name)

    @property
    def succeeded(self) -> bool:
        """True for a 2xx: the tunnel is open."""
        return 200 <= self.status_code <= 299

    @property
    def is_interim(self) -> bool:
        """True for a 1xx: the final response is still to come."""
        return self.status_code <= 199

    @property
    def challenges(self) -> tuple[bytes, ...]:
        """Every ``Proxy-Authenticate`` value (RFC 9110 §11.7.1), as received.

        One header value may hold several comma-separated challenges; they are not
        split here.
        """
        return self.get_all(b"proxy-authenticate")


HttpConnectEvent = ConnectRequest | ConnectResponse | ConnectionClosed
"""Every event an :class:`HttpConnectConnection` sends or receives."""


# The parser builds events from a head it has checked, so it skips the converters
# (object.__new__ plus the slots, as attrs' own __init__ sets them) but applies
# the same rules: the same event as the constructor would build, for less.
_new = object.__new__
_set = object.__setattr__


def parsed_request(target: bytes, fields: Headers, http_version: bytes) -> ConnectRequest:
    """A ConnectRequest from a request line's *target* and *http_version* (``1.x``) and the head's
    field lines (names are tokens; values as received).

    Raises:
        LocalProtocolError: what the constructor raises for the same values, checked in the same order.
    """
    event = _new(ConnectRequest)
    _set(event, "target", _target(target))
    _set(event, "headers", field_values(fields))
    _set(event, "http_version", http_version)
    event.__attrs_post_init__()  # the Host rules
    return event


def parsed_response(status_code: int, reason: bytes, fields: Headers, http_version: bytes) -> ConnectResponse:
    """A ConnectResponse (without body) from a status line's fields (*http_version* ``1.x``) and the
    head's field lines (names are tokens; values as received).

    Raises:
        LocalProtocolError: what the constructor raises for the same values, checked in the same order.
    """
    # The constructor's converters, inlined on the usual path (an int status in range, a
    # reason that is field text): they call out only to raise the error.
    if not 100 <= status_code <= 599:
        _status(status_code)
    if not reason:
        reason = _PHRASES.get(status_code, b"")
    elif not FIELD_TEXT.fullmatch(reason):
        _reason(reason)
    event = _new(ConnectResponse)
    _set(event, "status_code", status_code)
    _set(event, "reason", reason)
    _set(event, "headers", field_values(fields))
    _set(event, "body", b"")
    _set(event, "http_version", http_version)
    return event


def proxy_basic_auth(username: str | bytes, password: str | bytes) -> tuple[bytes, bytes]:
    """The ``Proxy-Authorization`` header for Basic authentication (RFC 7617, RFC 9110 §11.7.2).

    ``str`` arguments are encoded as UTF-8 (the ``charset="UTF-8"`` of RFC 7617
    §2.1); pass bytes for any other encoding.

    Returns:
        ``(b"Proxy-Authorization", b"Basic " + base64(username ":" password))``,
        ready to put in :class:`ConnectRequest` headers.

    Raises:
        LocalProtocolError: the username holds ``:`` or either holds a control
            character (RFC 7617 §2).
    """
    user, secret = to_bytes(username), to_bytes(password)
    if b":" in user:
        raise LocalProtocolError("a Basic username cannot contain ':' (RFC 7617 §2)")
    for what, value in (("username", user), ("password", secret)):
        if any(octet < 0x20 or octet == 0x7F for octet in value):
            raise LocalProtocolError(f"the Basic {what} holds a control character (RFC 7617 §2)")
    return b"Proxy-Authorization", b"Basic " + base64.b64encode(user + b":" + secret)

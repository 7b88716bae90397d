"""Events of plain-HTTP forward proxying (RFC 9110, RFC 9112 §3.2.2, §6).

A client configured for an ``http://`` proxy sends ``GET http://host/path
HTTP/1.1``: the absolute form of the request-target (RFC 9112 §3.2.2). The
proxy reads that request, forwards it in origin form to ``host``, reads the
answer and relays it. These are the values both halves of that exchange are
made of:

* :class:`ForwardRequest`: a request head, its absolute-form target split into
  ``scheme``, ``target`` (an :class:`Address`, port 80 by default) and ``path``
  (the origin-form path and query to forward);
* :class:`ForwardResponse`: a response head, interim (1xx) or final;
* :class:`ForwardBodyData`: a piece of a body, transfer coding removed;
* :class:`ForwardEndOfMessage`: the end of a body, with the trailer fields of a
  chunked one;
* :class:`ConnectHandOff`: a ``CONNECT`` request arrived; it belongs to
  :class:`HttpConnectConnection`, not to the forward reader.

Every event is frozen, keyword-only and validated on construction
(:class:`LocalProtocolError`), with the header rules of the CONNECT events
(tokens for names; no CR, LF, NUL or other controls in values). The framing
headers are checked as well, so an event that exists can be framed without
ambiguity: ``Content-Length`` must be one number (a list of identical numbers
is accepted, RFC 9110 §8.6), ``Transfer-Encoding`` must be exactly
``chunked``, the two never come together, and an HTTP/1.0 message never
carries ``Transfer-Encoding`` (RFC 9112 §6.1). Those are the request-smuggling
defences of RFC 9112 §6.3 and §11.2, applied where the message is made.

Don't subclass these.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from typing import Final, final

import attrs

from ._address import Address
from ._errors import LocalProtocolError
from ._http_events import (
    _PHRASES,  # private: the standard reason phrases
    _REG_NAME,  # private: reg-name characters (RFC 3986 §3.2.2)
    TOKEN,
    Headers,
    _get_all,  # private: header look-up by name, any case
    _headers,  # private: header normalisation and validation of the CONNECT events
    _reason,  # private: reason-phrase validation (RFC 9112 §4)
    _status,  # private: status-code validation (100..599)
    _version,  # private: HTTP/1.x version validation
)
from ._validators import to_bytes

__all__ = [
    "ConnectHandOff",
    "ForwardBodyData",
    "ForwardEndOfMessage",
    "ForwardRequest",
    "ForwardResponse",
    "Framing",
    "FramingRefused",
    "connection_options",
    "host_authority",
    "request_framing",
    "response_framing",
]

DEFAULT_PORT: Final = 80
"""The port of an ``http`` URI without one (RFC 9110 §4.2.1)."""

# An origin-form target once percent-encoded: visible ASCII (RFC 3986 §2.1), and
# no "#" (a fragment is never part of a request-target, RFC 9112 §3.2).
_ORIGIN_FORM: Final = re.compile(rb"/[\x21\x22\x24-\x7e]*")
_LIST_SPLIT: Final = re.compile(rb"[ \t]*,[ \t]*")
_MAX_LENGTH_DIGITS: Final = 18  # 10**18 octets: anything longer is not a body, it is an attack


class Framing(enum.Enum):
    """How a message body is delimited (RFC 9112 §6.3)."""

    NONE = "none"
    """No body (a request without framing headers; HEAD, 1xx, 204, 304 responses)."""
    CONTENT_LENGTH = "content-length"
    """Exactly ``Content-Length`` octets (RFC 9112 §6.2), possibly 0."""
    CHUNKED = "chunked"
    """``Transfer-Encoding: chunked`` (RFC 9112 §7.1), possibly with trailers."""
    UNTIL_CLOSE = "until-close"
    """A response body that ends when the server closes the connection (RFC 9112 §6.3 item 8)."""


class FramingRefused(LocalProtocolError):
    """The framing headers of a message are ambiguous or not supported.

    Attributes:
        status: the status a server answers such a request with: 400 (malformed,
            RFC 9112 §6.3) or 501 (a transfer coding that is not implemented,
            RFC 9112 §6.1).
    """

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def connection_options(headers: Headers) -> frozenset[bytes]:
    """The connection options of the ``Connection`` fields, lower-cased (RFC 9110 §7.6.1).

    Elements that are not tokens are ignored: they cannot name a field.
    """
    options = set()
    for value in _get_all(headers, b"connection"):
        for item in _LIST_SPLIT.split(value.strip(b" \t")):
            if TOKEN.fullmatch(item):
                options.add(item.lower())
    return frozenset(options)


def _content_length(headers: Headers) -> int | None:
    """The length ``Content-Length`` declares, ``None`` without one.

    Raises:
        FramingRefused: a value that is not a decimal number, or several that differ.
    """
    values = _get_all(headers, b"content-length")
    if not values:
        return None
    items = [item for value in values for item in _LIST_SPLIT.split(value.strip(b" \t"))]
    first = items[0]
    if not first.isdigit():
        raise FramingRefused(f"invalid Content-Length {values[0][:40]!r}: expected a decimal number (RFC 9110 §8.6)")
    if any(item != first for item in items):
        raise FramingRefused(
            f"Content-Length values {b', '.join(values)[:80]!r} differ: the body length is ambiguous "
            "(RFC 9112 §6.3, a request smuggling defence)"
        )
    if len(first.lstrip(b"0")) > _MAX_LENGTH_DIGITS:
        raise FramingRefused(f"Content-Length {first[:40]!r} is absurdly large")
    return int(first.lstrip(b"0") or b"0")


def _codings(headers: Headers) -> list[bytes] | None:
    """The transfer codings in order, lower-cased; ``None`` without ``Transfer-Encoding``."""
    values = _get_all(headers, b"transfer-encoding")
    if not values:
        return None
    return [item.lower() for value in values for item in _LIST_SPLIT.split(value.strip(b" \t")) if item]


def _chunked_only(codings: list[bytes], what: str) -> None:
    if codings == [b"chunked"]:
        return
    shown = b", ".join(codings).decode("ascii", "replace")[:60]
    if not codings or codings[-1] != b"chunked":
        raise FramingRefused(
            f"the {what} has Transfer-Encoding {shown!r}, which does not end in chunked: its length "
            "cannot be determined (RFC 9112 §6.3)"
        )
    if b"chunked" in codings[:-1]:
        raise FramingRefused(f"the {what} applies chunked more than once ({shown!r}, RFC 9112 §7.1)")
    raise FramingRefused(
        f"the {what} has Transfer-Encoding {shown!r}: only chunked alone is implemented (RFC 9112 §6.1)",
        status=501,
    )


def _body_headers(headers: Headers, http_version: bytes, what: str) -> tuple[Framing, int | None] | None:
    """Judge the framing headers of a message; ``None`` when it has neither.

    Raises:
        FramingRefused: Transfer-Encoding with Content-Length, or in HTTP/1.0;
            codings other than chunked alone; a bad Content-Length.
    """
    codings = _codings(headers)
    if codings is not None:
        if http_version == b"1.0":
            raise FramingRefused(
                f"an HTTP/1.0 {what} carries Transfer-Encoding: its framing is faulty (RFC 9112 §6.1)"
            )
        if _get_all(headers, b"content-length"):
            raise FramingRefused(
                f"the {what} has both Transfer-Encoding and Content-Length: refused, as reading either "
                "could let a body be misread (RFC 9112 §6.1, §11.2 request smuggling)"
            )
        _chunked_only(codings, what)
        return Framing.CHUNKED, None
    length = _content_length(headers)
    if length is not None:
        return Framing.CONTENT_LENGTH, length
    return None


def request_framing(headers: Headers, http_version: bytes) -> tuple[Framing, int | None]:
    """How a request's body is delimited (RFC 9112 §6.3 items 3-6): framing and length.

    Raises:
        FramingRefused: see :class:`ForwardRequest`.
    """
    return _body_headers(headers, http_version, "request") or (Framing.NONE, None)


def response_framing(
    status: int, headers: Headers, http_version: bytes, request_method: bytes
) -> tuple[Framing, int | None]:
    """How a response's body is delimited (RFC 9112 §6.3 items 1-7): framing and length.

    The length is that of the body that follows, so 0 with :attr:`Framing.NONE`
    even when a ``Content-Length`` (of a HEAD or 304 response) says otherwise.

    Raises:
        FramingRefused: see :class:`ForwardResponse`.
    """
    framing = _body_headers(headers, http_version, "response")
    if request_method == b"HEAD" or status < 200 or status in (204, 304):
        return Framing.NONE, None
    return framing or (Framing.UNTIL_CLOSE, None)


# -- ForwardRequest ------------------------------------------------------------------------


def _method(value: str | bytes) -> bytes:
    method = to_bytes(value)
    if not TOKEN.fullmatch(method):
        raise LocalProtocolError(f"method {method[:40]!r} is not a token (RFC 9110 §9.1)")
    if method == b"CONNECT":
        raise LocalProtocolError("CONNECT is not forwarded: it opens a tunnel (use HttpConnectConnection)")
    return method


def _checked_host(address: Address) -> Address:
    host = address.host
    if isinstance(host, bytes) and not _REG_NAME.fullmatch(host):
        raise LocalProtocolError(f"host {host[:64]!r} holds octets not allowed in a URI (RFC 3986 §3.2.2)")
    if isinstance(host, ipaddress.IPv6Address) and host.scope_id:
        raise LocalProtocolError(f"the scoped IPv6 address {host} cannot be a target (RFC 9110 §4.2.1)")
    if address.port == 0:
        raise LocalProtocolError("port 0 cannot be a target")
    return address


def host_authority(value: bytes) -> Address:
    """The :class:`Address` an ``http`` URI authority or a ``Host`` value names (port 80 by default).

    An empty port (``host:``) means the default one (RFC 3986 §3.2.3).

    Raises:
        LocalProtocolError: an empty host, userinfo, a bad port or port 0, an
            unbracketed IPv6 address, octets outside reg-name, a scoped IPv6 address.
    """
    if b"@" in value:
        raise LocalProtocolError(
            f"authority {value[:64]!r} has userinfo, which http URIs must not carry (RFC 9110 §4.2.4)"
        )
    if value.endswith(b":"):
        value = value[:-1]
    return _checked_host(Address.parse_authority(value, default_port=DEFAULT_PORT))


def _target(value: Address | str | bytes) -> Address:
    if isinstance(value, str | bytes):
        return host_authority(to_bytes(value))
    if not isinstance(value, Address):
        raise TypeError(f"target must be an Address or an authority, not {type(value).__name__}")
    # Re-read the authority so the value is what a reader of the written request gets.
    return host_authority(value.authority.encode("ascii", "backslashreplace"))


def _path(value: str | bytes) -> bytes:
    path = to_bytes(value)
    if path != b"*" and not _ORIGIN_FORM.fullmatch(path):
        raise LocalProtocolError(
            f"path {path[:64]!r} must start with '/' and hold visible ASCII without '#' (RFC 9112 §3.2.1; "
            "percent-encode anything else)"
        )
    return path


def _scheme(value: str | bytes) -> bytes:
    scheme = to_bytes(value).lower()
    if scheme != b"http":
        raise LocalProtocolError(f"scheme {scheme[:16]!r}: only http is forwarded (https goes through CONNECT)")
    return scheme


def _host_value(address: Address) -> bytes:
    host = address.host
    if isinstance(host, bytes):
        text = host
    elif isinstance(host, ipaddress.IPv6Address):
        text = b"[%s]" % str(host).encode("ascii")
    else:
        text = str(host).encode("ascii")
    return text if address.port == DEFAULT_PORT else b"%s:%d" % (text, address.port)


@final
@attrs.frozen(kw_only=True)
class ForwardRequest:
    """A request to forward: ``METHOD http://host[:port]/path?query HTTP/1.x`` (RFC 9112 §3.2.2).

    Args:
        method: a token, case-sensitive; not ``CONNECT``.
        target: the target's host and port (an :class:`Address`, or an authority
            such as ``"example.com"``, ``"[::1]:8080"``; port 80 when omitted).
        path: the origin-form target to forward (RFC 9112 §3.2.1): ``/path?query``,
            visible ASCII without ``#``; or ``*`` for an ``OPTIONS`` to the server
            itself (an absolute-form target with an empty path, RFC 9112 §3.2.4).
        headers: ``(name, value)`` pairs, ``str`` (UTF-8) or bytes. Without a
            ``Host`` one is added first, naming *target*; a received ``Host`` is
            kept here but replaced when forwarding (RFC 9112 §3.2.2).
        http_version: ``b"1.1"`` (default) or ``b"1.0"``.
        scheme: ``b"http"``: the only one forwarded.

    Raises:
        LocalProtocolError: an invalid field (see the module docstring), more than
            one ``Host`` or an invalid one, ``*`` with another method than OPTIONS.
        FramingRefused: ambiguous or unsupported framing headers (its ``status``
            says 400 or 501).
    """

    method: bytes = attrs.field(converter=_method)
    target: Address = attrs.field(converter=_target)
    path: bytes = attrs.field(default=b"/", converter=_path)
    headers: Headers = attrs.field(default=(), converter=_headers)
    http_version: bytes = attrs.field(default=b"1.1", converter=_version)
    scheme: bytes = attrs.field(default=b"http", converter=_scheme)

    def __attrs_post_init__(self) -> None:
        if self.path == b"*" and self.method != b"OPTIONS":
            raise LocalProtocolError("the asterisk form '*' is only for OPTIONS (RFC 9112 §3.2.4)")
        hosts = self.get_all(b"host")
        if len(hosts) > 1:
            raise LocalProtocolError(f"a request carries one Host header, got {len(hosts)} (RFC 9112 §3.2)")
        if hosts:
            host_authority(hosts[0])  # must be valid, even though forwarding replaces it
        else:
            object.__setattr__(self, "headers", ((b"Host", self.host_header), *self.headers))
        request_framing(self.headers, self.http_version)

    def get(self, name: str | bytes) -> bytes | None:
        """The first value of header *name* (any case), or ``None``."""
        values = _get_all(self.headers, name)
        return values[0] if values else None

    def get_all(self, name: str | bytes) -> tuple[bytes, ...]:
        """Every value of header *name* (any case), in order."""
        return _get_all(self.headers, name)

    @property
    def host_header(self) -> bytes:
        """The ``Host`` value naming the target: ``host`` or ``host:port`` (port omitted when 80)."""
        return _host_value(self.target)

    @property
    def absolute_target(self) -> bytes:
        """The request-target in absolute form, as a client sends it to a proxy."""
        return b"http://" + self.host_header + (b"" if self.path == b"*" else self.path)

    @property
    def framing(self) -> Framing:
        """How the body that follows is delimited (RFC 9112 §6.3)."""
        return request_framing(self.headers, self.http_version)[0]

    @property
    def content_length(self) -> int | None:
        """The ``Content-Length`` of the body, when it is framed by one."""
        return request_framing(self.headers, self.http_version)[1]

    @property
    def connection_options(self) -> frozenset[bytes]:
        """The ``Connection`` options, lower-cased."""
        return connection_options(self.headers)

    @property
    def keep_alive(self) -> bool:
        """Whether the client may send another request on the connection (RFC 9112 §9.3).

        True for HTTP/1.1 without ``Connection: close``. An HTTP/1.0 request is
        not persistent here, even with ``Connection: keep-alive``: a proxy must not
        honour that option on a request (RFC 9112 §9.3, it may have been forwarded
        blindly by an older proxy).
        """
        return self.http_version != b"1.0" and b"close" not in connection_options(self.headers)

    @property
    def expects_continue(self) -> bool:
        """True when the client waits for ``100 Continue`` before sending the body (RFC 9110 §10.1.1).

        An HTTP/1.0 request's expectation is ignored, as RFC 9110 §10.1.1 requires.
        Forward the request (``Expect`` is end to end) and relay the origin's
        ``100``, or answer ``100 Continue`` yourself: either way the body follows.
        """
        if self.http_version == b"1.0":
            return False
        return any(
            item.lower() == b"100-continue"
            for value in _get_all(self.headers, b"expect")
            for item in _LIST_SPLIT.split(value.strip(b" \t"))
        )

    @property
    def answer_locally(self) -> bool:
        """True for an OPTIONS or TRACE with ``Max-Forwards: 0``: answer it, do not forward it (RFC 9110 §7.6.2)."""
        return self.method in (b"OPTIONS", b"TRACE") and self.max_forwards == 0

    @property
    def max_forwards(self) -> int | None:
        """The hops left that ``Max-Forwards`` allows (RFC 9110 §7.6.2), or ``None``.

        The first ``Max-Forwards`` field counts (a list is not allowed there); it
        must be ``1*DIGIT``, else it is ignored (``None``). Values of more than
        18 digits count as 10**18.
        """
        value = self.get(b"max-forwards")
        if value is None or not value.isdigit():
            return None
        digits = value.lstrip(b"0")
        return int(digits or b"0") if len(digits) <= _MAX_LENGTH_DIGITS else 10**_MAX_LENGTH_DIGITS


# -- ForwardResponse -----------------------------------------------------------------------


@final
@attrs.frozen(kw_only=True)
class ForwardResponse:
    """A response head from an origin server (RFC 9112 §4): interim (1xx) or final.

    Args:
        status_code: 100 to 599, but not 101 (Upgrade is hop-by-hop, so it is never
            forwarded and an origin has nothing to switch to).
        reason: the reason phrase; empty means the standard phrase of the code.
        headers: ``(name, value)`` pairs, ``str`` (UTF-8) or bytes.
        http_version: ``b"1.1"`` (default) or ``b"1.0"``.

    Raises:
        LocalProtocolError: an invalid field, status 101.
        FramingRefused: ambiguous or unsupported framing headers.
    """

    status_code: int = attrs.field(converter=_status)
    reason: bytes = attrs.field(default=b"", converter=_reason)
    headers: Headers = attrs.field(default=(), converter=_headers)
    http_version: bytes = attrs.field(default=b"1.1", converter=_version)

    def __attrs_post_init__(self) -> None:
        if self.status_code == 101:
            raise LocalProtocolError(
                "101 Switching Protocols cannot be forwarded: Upgrade is hop-by-hop (RFC 9110 §7.8)"
            )
        if not self.reason:
            object.__setattr__(self, "reason", _PHRASES.get(self.status_code, b""))
        _body_headers(self.headers, self.http_version, "response")

    def get(self, name: str | bytes) -> bytes | None:
        """The first value of header *name* (any case), or ``None``."""
        values = _get_all(self.headers, name)
        return values[0] if values else None

    def get_all(self, name: str | bytes) -> tuple[bytes, ...]:
        """Every value of header *name* (any case), in order."""
        return _get_all(self.headers, name)

    @property
    def is_interim(self) -> bool:
        """True for a 1xx: the final response follows (RFC 9110 §15.2)."""
        return self.status_code < 200

    @property
    def connection_options(self) -> frozenset[bytes]:
        """The ``Connection`` options, lower-cased."""
        return connection_options(self.headers)

    @property
    def keep_alive(self) -> bool:
        """Whether the server announced it keeps the connection (RFC 9112 §9.3).

        HTTP/1.1 without ``Connection: close``, or HTTP/1.0 with ``Connection:
        keep-alive``. A body delimited by the close ends it anyway: see the
        reader's ``keep_alive``.
        """
        options = connection_options(self.headers)
        if b"close" in options:
            return False
        return self.http_version != b"1.0" or b"keep-alive" in options

    def framing(self, request_method: str | bytes = b"GET") -> Framing:
        """How the body is delimited when this answers a *request_method* request (RFC 9112 §6.3)."""
        return response_framing(self.status_code, self.headers, self.http_version, to_bytes(request_method))[0]


# -- body events ---------------------------------------------------------------------------


@final
@attrs.frozen(kw_only=True)
class ForwardBodyData:
    """Octets of a body, with the chunked transfer coding removed (content codings stay)."""

    data: bytes = attrs.field(converter=to_bytes, repr=lambda b: f"<{len(b)} octets>")


@final
@attrs.frozen(kw_only=True)
class ForwardEndOfMessage:
    """The body is complete. *trailers*: the trailer fields of a chunked body (RFC 9112 §7.1.2)."""

    trailers: Headers = attrs.field(default=(), converter=_headers)


@final
@attrs.frozen
class ConnectHandOff:
    """A ``CONNECT`` request starts here: hand the reader's ``trailing_data`` to an HttpConnectConnection."""

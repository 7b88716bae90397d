"""Plain-HTTP forward proxying: rewriting heads and writing bodies (RFC 9110 §7.6, RFC 9112).

Pure functions over the events of :mod:`._http_forward_events`; the readers
are in :mod:`._http_forward_reader`.

What forwarding a head does (:func:`forward_request`, :func:`forward_response`):

* the request line becomes origin form, ``GET /path?q HTTP/1.1``: an
  intermediary sends its own version (RFC 9110 §6.2), and ``Host`` is set
  from the absolute-form authority, first, whatever the client sent (RFC 9112
  §3.2.2); the status line is ``HTTP/1.1 <status> <reason>``;
* hop-by-hop fields are removed (RFC 9110 §7.6.1): ``Connection``,
  ``Proxy-Connection``, ``Keep-Alive``, ``TE``, ``Transfer-Encoding``,
  ``Upgrade``, ``Proxy-Authorization``, ``Proxy-Authenticate``, every field
  named in ``Connection``; and ``Trailer`` unless the trailers it announces are
  forwarded (a chunked body relayed as chunked);
* ``Via: <received version> <pseudonym>`` is appended (RFC 9110 §7.6.3);
* the framing is written again, consistent with how the body will go out:
  ``Content-Length`` as received, ``chunked`` as chunked; a response body that
  ends at the origin's close is re-chunked for an HTTP/1.1 client (so its
  connection can persist), and a chunked one is sent until-close to an
  HTTP/1.0 client (which cannot read chunked, RFC 9112 §7.1);
* ``Connection: keep-alive`` or ``Connection: close`` says what was decided;
* ``Max-Forwards`` of an OPTIONS or TRACE is decremented (RFC 9110 §7.6.2).

The result is a :class:`ForwardedHead`: the octets, the framing the body must
be written with and a :class:`BodyEncoder` for it.
"""

from __future__ import annotations

import enum
import re
from typing import Final, final

import attrs

from ._address import Address
from ._errors import LocalProtocolError
from ._http_events import ConnectRequest, Headers
from ._http_forward_events import (
    ForwardBodyData,
    ForwardEndOfMessage,
    ForwardRequest,
    ForwardResponse,
    Framing,
    connection_options,
    request_framing,
    response_framing,
)
from ._validators import to_bytes

__all__ = [
    "HOP_BY_HOP",
    "BodyEncoder",
    "ForwardedHead",
    "RequestKind",
    "encode_forward_request",
    "encode_forward_response",
    "forward_request",
    "forward_request_head",
    "forward_response",
    "forward_response_head",
    "hop_by_hop_fields",
    "proxy_credentials",
    "request_kind",
]

HOP_BY_HOP: Final = frozenset({
    b"connection",
    b"proxy-connection",
    b"keep-alive",
    b"te",
    b"transfer-encoding",
    b"upgrade",
    b"proxy-authorization",
    b"proxy-authenticate",
    b"trailer",
})
"""Fields never forwarded as received (RFC 9110 §7.6.1), lower-cased; ``Trailer`` is kept when the
trailers are."""

# Written again by the proxy itself.
_REWRITTEN: Final = frozenset({b"host", b"content-length", b"via"})
# Fields a proxy never forwards in a trailer section (RFC 9110 §6.5.1: framing, routing).
_NOT_IN_TRAILERS: Final = HOP_BY_HOP | {b"content-length", b"host"}
# received-by = pseudonym [ ":" port ] (RFC 9110 §7.6.3), or a bracketed IPv6 address.
_RECEIVED_BY: Final = re.compile(rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_CONNECT: Final = b"CONNECT "


class RequestKind(enum.Enum):
    """What the first request on an HTTP connection to the proxy is."""

    CONNECT = "connect"
    """``CONNECT host:port``: a tunnel, for :class:`HttpConnectConnection`."""
    FORWARD = "forward"
    """Anything else: for :class:`ForwardRequestReader` (which refuses what is not HTTP)."""


def request_kind(data: bytes | bytearray) -> RequestKind | None:
    """Which machine reads the request that starts *data* (at most 8 octets are looked at).

    ``None`` while *data* is a proper prefix of ``CONNECT `` (read more). Leading
    empty lines are not skipped here; a :class:`ForwardRequestReader` skips them
    and returns :class:`ConnectHandOff` when a ``CONNECT`` follows, so starting
    with the forward reader is always right too.
    """
    have = min(len(data), len(_CONNECT))
    if bytes(data[:have]) != _CONNECT[:have]:
        return RequestKind.FORWARD
    return RequestKind.CONNECT if have == len(_CONNECT) else None


def hop_by_hop_fields(headers: Headers) -> frozenset[bytes]:
    """The lower-cased names of the fields a proxy removes: :data:`HOP_BY_HOP` and those named in ``Connection``."""
    return HOP_BY_HOP | connection_options(headers)


_DUMMY: Final = Address(b"proxy.invalid", 1)


def proxy_credentials(request: ForwardRequest) -> tuple[bytes, bytes] | None:
    """``(username, password)`` from a Basic ``Proxy-Authorization`` (RFC 7617, RFC 9110 §11.7.2).

    ``None`` without one, for another scheme, or when it is malformed (not
    base64, no ``:``). The parsing is :attr:`ConnectRequest.basic_credentials`'.
    """
    value = request.get(b"proxy-authorization")
    if value is None:
        return None
    return ConnectRequest(target=_DUMMY, headers=((b"Proxy-Authorization", value),)).basic_credentials


def _received_by(via: str | bytes) -> bytes:
    value = to_bytes(via)
    if not _RECEIVED_BY.fullmatch(value):
        raise LocalProtocolError(f"via {value[:64]!r} must be a token or host[:port] (RFC 9110 §7.6.3)")
    return value


def _kept(headers: Headers, *, keep_trailer: bool) -> list[tuple[bytes, bytes]]:
    drop = hop_by_hop_fields(headers) | _REWRITTEN
    if keep_trailer:
        drop -= {b"trailer"}
    return [(name, value) for name, value in headers if name.lower() not in drop]


def _vias(headers: Headers, received: bytes, by: bytes) -> list[tuple[bytes, bytes]]:
    """The received ``Via`` fields (unless named in Connection), then ours."""
    if b"via" in connection_options(headers):
        kept: list[tuple[bytes, bytes]] = []
    else:
        kept = [(name, value) for name, value in headers if name.lower() == b"via"]
    return [*kept, (b"Via", received + b" " + by)]


def _lines(fields: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join([name + b": " + value + b"\r\n" for name, value in fields])


@final
@attrs.frozen(kw_only=True)
class ForwardedHead:
    """A head rewritten for the next hop, and how its body must follow.

    Attributes:
        data: the head's octets, CRLF CRLF included (``b""`` for a 1xx that an
            HTTP/1.0 client must not receive, RFC 9110 §15.2).
        framing: how the body is written (:meth:`body_encoder` does it).
        content_length: the length, with :attr:`Framing.CONTENT_LENGTH`.
        keep_alive: whether the head announced that the connection persists
            (``Connection: keep-alive``); when False, close after the body.
    """

    data: bytes = attrs.field(repr=lambda b: f"<{len(b)} octets>")
    framing: Framing
    content_length: int | None = None
    keep_alive: bool = True

    def body_encoder(self) -> BodyEncoder:
        """A fresh :class:`BodyEncoder` for this head's body."""
        return BodyEncoder(self.framing, content_length=self.content_length)


def _max_forwards(request: ForwardRequest, fields: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Decrement ``Max-Forwards`` of an OPTIONS or TRACE: one field, as :attr:`ForwardRequest.max_forwards` reads it."""
    hops = request.max_forwards
    if request.method not in (b"OPTIONS", b"TRACE") or hops is None:
        return fields
    if hops == 0:
        raise LocalProtocolError(
            f"{request.method.decode()} with Max-Forwards: 0 must be answered by the proxy, not "
            "forwarded (RFC 9110 §7.6.2; see ForwardRequest.answer_locally)"
        )
    out = []
    for name, value in fields:
        if name.lower() != b"max-forwards":
            out.append((name, value))
        elif hops is not None:
            out.append((name, b"%d" % (hops - 1)))
            hops = None  # the others go
    return out


def forward_request(request: ForwardRequest, *, via: str | bytes, keep_alive: bool = True) -> ForwardedHead:
    """The head to send to the origin for *request* (see the module docstring).

    Args:
        request: the request as received from the client.
        via: this proxy's pseudonym (or host[:port]) for the ``Via`` field.
        keep_alive: ask the origin to keep the connection (``Connection:
            keep-alive``) or not (``Connection: close``).

    Returns:
        The head; its body (as read by the request reader) goes out with the same
        framing as it came: ``Content-Length`` or chunked (trailers included).

    Raises:
        LocalProtocolError: a *via* that is not a token or host[:port]; an
            OPTIONS or TRACE with ``Max-Forwards: 0`` (answer it yourself).
    """
    by = _received_by(via)
    framing, length = request_framing(request.headers, request.http_version)
    fields = [(b"Host", request.host_header)]
    fields += _max_forwards(request, _kept(request.headers, keep_trailer=framing is Framing.CHUNKED))
    fields += _vias(request.headers, request.http_version, by)
    if framing is Framing.CONTENT_LENGTH:
        fields.append((b"Content-Length", b"%d" % (length or 0)))
    elif framing is Framing.CHUNKED:
        fields.append((b"Transfer-Encoding", b"chunked"))
    fields.append((b"Connection", b"keep-alive" if keep_alive else b"close"))
    head = request.method + b" " + request.path + b" HTTP/1.1\r\n" + _lines(fields) + b"\r\n"
    return ForwardedHead(data=head, framing=framing, content_length=length, keep_alive=keep_alive)


def forward_request_head(request: ForwardRequest, *, via: str | bytes, keep_alive: bool = True) -> bytes:
    """:func:`forward_request`'s octets alone."""
    return forward_request(request, via=via, keep_alive=keep_alive).data


def forward_response(
    response: ForwardResponse, *, request: ForwardRequest, via: str | bytes, keep_alive: bool = True
) -> ForwardedHead:
    """The head to send to the client for *response*, the answer to *request* (see the module docstring).

    Args:
        response: the response as received from the origin, interim or final.
        request: the client's request it answers (its method decides whether a
            body follows, its version how it can be framed and whether 1xx go out).
        via: this proxy's pseudonym (or host[:port]) for the ``Via`` field.
        keep_alive: whether the proxy wants to keep the client's connection. The
            head says ``keep-alive`` only when the client allows it too
            (:attr:`ForwardRequest.keep_alive`) and the body is not delimited by
            the close; :attr:`ForwardedHead.keep_alive` gives the outcome.

    Raises:
        LocalProtocolError: a *via* that is not a token or host[:port].
    """
    by = _received_by(via)
    if response.is_interim:
        if request.http_version == b"1.0":  # RFC 9110 §15.2: never a 1xx to an HTTP/1.0 client
            return ForwardedHead(data=b"", framing=Framing.NONE)
        fields = [*_kept(response.headers, keep_trailer=False), *_vias(response.headers, response.http_version, by)]
        return ForwardedHead(data=_status_line(response) + _lines(fields) + b"\r\n", framing=Framing.NONE)
    received, length = response_framing(
        response.status_code, response.headers, response.http_version, request.method
    )
    framing = received
    if received is Framing.CHUNKED and request.http_version == b"1.0":
        framing, length = Framing.UNTIL_CLOSE, None
    elif received is Framing.UNTIL_CLOSE and request.http_version != b"1.0":
        framing = Framing.CHUNKED
    persist = keep_alive and request.keep_alive and framing is not Framing.UNTIL_CLOSE
    fields = _kept(response.headers, keep_trailer=received is Framing.CHUNKED and framing is Framing.CHUNKED)
    if framing is Framing.NONE and response.status_code != 204:
        # A HEAD or 304 response keeps the length of the body it stands for (RFC 9110 §8.6).
        fields += [(name, value) for name, value in response.headers if name.lower() == b"content-length"][:1]
    fields += _vias(response.headers, response.http_version, by)
    if framing is Framing.CONTENT_LENGTH:
        fields.append((b"Content-Length", b"%d" % (length or 0)))
    elif framing is Framing.CHUNKED:
        fields.append((b"Transfer-Encoding", b"chunked"))
    fields.append((b"Connection", b"keep-alive" if persist else b"close"))
    return ForwardedHead(
        data=_status_line(response) + _lines(fields) + b"\r\n", framing=framing, content_length=length,
        keep_alive=persist,
    )


def forward_response_head(
    response: ForwardResponse, *, request: ForwardRequest, via: str | bytes, keep_alive: bool = True
) -> bytes:
    """:func:`forward_response`'s octets alone."""
    return forward_response(response, request=request, via=via, keep_alive=keep_alive).data


def _status_line(response: ForwardResponse) -> bytes:
    return b"HTTP/1.1 %d " % response.status_code + response.reason + b"\r\n"


def encode_forward_request(request: ForwardRequest) -> bytes:
    """The head of *request* as a client sends it to a proxy: absolute form, headers as they are.

    A :class:`ForwardRequestReader` reads these octets back as *request*.
    """
    return (
        request.method + b" " + request.absolute_target + b" HTTP/" + request.http_version + b"\r\n"
        + _lines(list(request.headers)) + b"\r\n"
    )


def encode_forward_response(response: ForwardResponse) -> bytes:
    """The head of *response* as its headers are; a :class:`ForwardResponseReader` reads it back."""
    return (
        b"HTTP/" + response.http_version + b" %d " % response.status_code + response.reason + b"\r\n"
        + _lines(list(response.headers)) + b"\r\n"
    )


@final
class BodyEncoder:
    """Writes a body with a given framing: feed it :class:`ForwardBodyData`, then :class:`ForwardEndOfMessage`.

    * ``CONTENT_LENGTH``: the data as is, exactly *content_length* octets in all;
      trailers cannot be sent and are dropped.
    * ``CHUNKED``: one chunk per non-empty :class:`ForwardBodyData`; the last chunk then
      the trailers, less the fields that cannot be trailers (framing, ``Host``,
      hop-by-hop, RFC 9110 §6.5.1).
    * ``UNTIL_CLOSE``: the data as is; after :class:`ForwardEndOfMessage`, close the connection.
    * ``NONE``: no data at all.

    Raises:
        TypeError: a *framing* that is not a :class:`Framing`.
        ValueError: *content_length* missing or negative with ``CONTENT_LENGTH``.
    """

    __slots__ = ("_done", "_framing", "_left")

    def __init__(self, framing: Framing, *, content_length: int | None = None) -> None:
        if not isinstance(framing, Framing):
            raise TypeError(f"framing must be a Framing, not {type(framing).__name__}")
        if framing is Framing.CONTENT_LENGTH and (
            isinstance(content_length, bool) or not isinstance(content_length, int) or content_length < 0
        ):
            raise ValueError(f"CONTENT_LENGTH framing needs a content_length >= 0, got {content_length!r}")
        self._framing = framing
        self._left = content_length or 0
        self._done = False

    @property
    def finished(self) -> bool:
        """True once :class:`ForwardEndOfMessage` was sent."""
        return self._done

    def send(self, event: ForwardBodyData | ForwardEndOfMessage) -> bytes:
        """The octets that carry *event*.

        Raises:
            LocalProtocolError: data after the end, more or fewer octets than the
                ``Content-Length``, data on a body-less message.
            TypeError: another event.
        """
        if self._done:
            raise LocalProtocolError("the body was already ended")
        framing = self._framing
        if isinstance(event, ForwardBodyData):
            data = event.data
            if framing is Framing.CHUNKED:
                return b"%x\r\n" % len(data) + data + b"\r\n" if data else b""
            if framing is Framing.CONTENT_LENGTH:
                if len(data) > self._left:
                    raise LocalProtocolError(
                        f"{len(data)} octets of data, but only {self._left} are left of the Content-Length"
                    )
                self._left -= len(data)
            elif framing is Framing.NONE and data:
                raise LocalProtocolError("this message has no body")
            return data
        if not isinstance(event, ForwardEndOfMessage):
            raise TypeError(f"expected ForwardBodyData or ForwardEndOfMessage, not {type(event).__name__}")
        if framing is Framing.CONTENT_LENGTH and self._left:
            raise LocalProtocolError(f"the body ended {self._left} octets short of its Content-Length")
        self._done = True
        if framing is not Framing.CHUNKED:
            return b""
        trailers = [(name, value) for name, value in event.trailers if name.lower() not in _NOT_IN_TRAILERS]
        return b"0\r\n" + _lines(trailers) + b"\r\n"

"""Which proxy protocol a client is speaking, from the first bytes it sent.

Strategy: one port can serve SOCKS5, SOCKS4 and HTTP CONNECT because their
first octets never overlap, so one octet decides (:data:`MIN_DETECT_BYTES`):

* ``0x05``: SOCKS5, the VER field of the greeting (RFC 1928 §3);
* ``0x04``: SOCKS4, the VN field of the request (SOCKS4 protocol; 4a alike);
* ``A``-``Z``: HTTP, the first letter of a request method token (RFC 9110 §9:
  methods are case-sensitive and every registered one is uppercase).

Everything else is refused with a message that helps whoever misconfigured
the client: a TLS handshake record (``0x16``, RFC 8446 §5.1) means TLS was
sent to a plain proxy port, and the HTTP/2 connection preface
(RFC 9113 §3.4) is named when enough of it has arrived to tell it from a
method such as ``POST``. With a single ``P`` the answer is HTTP, and the
HTTP/1.1 parser then refuses the ``PRI`` method itself.

The function only looks; it consumes nothing. Hand every byte to the
connection class of the protocol it names.
"""

from __future__ import annotations

from typing import Final

from ._errors import RemoteProtocolError
from ._proxy_url import ProxyProtocol

__all__ = ["MIN_DETECT_BYTES", "detect_protocol"]

MIN_DETECT_BYTES: Final = 1
"""How many octets :func:`detect_protocol` needs to give an answer."""

_SOCKS5_VERSION: Final = 0x05
_SOCKS4_VERSION: Final = 0x04
_TLS_HANDSHAKE: Final = 0x16
_HTTP2_PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# "PRI " is enough to tell the preface from every other method starting with P.
_HTTP2_DECISIVE: Final = len(b"PRI ")
_SHOWN: Final = 16


def detect_protocol(data: bytes | bytearray | memoryview) -> ProxyProtocol | None:
    """Name the protocol a client opened with, or refuse the bytes.

    Args:
        data: the first bytes received on the connection (any amount, from 0).

    Returns:
        The protocol, or ``None`` when *data* is empty (read more first).

    Raises:
        RemoteProtocolError: the bytes start no supported proxy protocol; the
            message says what they look like. ``reply_hint`` is ``None``: with
            no protocol agreed there is no reply to send, so close the connection.
        TypeError: *data* is not bytes-like.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"data must be bytes-like, not {type(data).__name__}")
    head = bytes(data[: len(_HTTP2_PREFACE)])
    if not head:
        return None
    first = head[0]
    if first == _SOCKS5_VERSION:
        return ProxyProtocol.SOCKS5
    if first == _SOCKS4_VERSION:
        return ProxyProtocol.SOCKS4
    if ord("A") <= first <= ord("Z"):
        if len(head) >= _HTTP2_DECISIVE and _HTTP2_PREFACE.startswith(head):
            raise RemoteProtocolError(
                "the client sent the HTTP/2 connection preface (PRI * HTTP/2.0): HTTP/2 CONNECT is "
                "not supported; use HTTP/1.1 to talk to this proxy"
            )
        return ProxyProtocol.HTTP
    shown = bytes(data[:_SHOWN]).hex(" ")
    if first == _TLS_HANDSHAKE:
        raise RemoteProtocolError(
            "the connection looks like a TLS ClientHello: is the client using https:// or TLS to "
            f"a plain proxy port? (first bytes: {shown})"
        )
    if ord("a") <= first <= ord("z"):
        raise RemoteProtocolError(
            f"the first bytes ({shown}) start with a lowercase letter: HTTP methods are "
            "case-sensitive and uppercase (RFC 9110 §9.1), so send CONNECT"
        )
    raise RemoteProtocolError(
        f"the first bytes ({shown}) start no supported proxy protocol: expected 0x05 (SOCKS5), "
        "0x04 (SOCKS4) or an uppercase HTTP method such as CONNECT"
    )

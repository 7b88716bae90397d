"""The library's exceptions.

Two families, neither derived from :class:`OSError` (frameworks swallow those):

* :class:`ProtocolError`, raised by the sans-I/O machines. :class:`LocalProtocolError`
  means *you* misused the protocol (raised by event constructors and ``send()``);
  :class:`RemoteProtocolError` means the *peer* sent bytes that break it (raised
  only by ``next_event()`` and the stateless ``parse_*`` functions).
* :class:`ProxyError`, raised when a proxy refuses or fails a request that was
  itself well formed (reply codes, HTTP statuses, time-outs).

Any other exception escaping a parser is a bug in socks-sansio.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
]


class ProtocolError(Exception):
    """Abstract base of :class:`LocalProtocolError` and :class:`RemoteProtocolError`.

    Do not raise it directly; catch it to handle both.
    """

    def __init__(self, message: str) -> None:
        if type(self) is ProtocolError:
            raise TypeError("ProtocolError is abstract; raise LocalProtocolError or RemoteProtocolError")
        super().__init__(message)

    @property
    def message(self) -> str:
        """The human-readable explanation."""
        return str(self.args[0])


class LocalProtocolError(ProtocolError):
    """You asked for something the protocol does not allow.

    Raised by event constructors (an illegal value never reaches the wire) and by
    ``send()`` (an event that is illegal in the current state). When ``send()``
    raises it, the connection's state becomes ``ERROR``.
    """


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that violate the protocol.

    Raised by ``next_event()`` (after which the connection's state is ``ERROR``)
    and by the stateless ``parse_*`` functions.

    Attributes:
        reply_hint: the event a server should send back before closing, when the
            protocol has one (for example a SOCKS5 ``CommandReply`` with REP 0x08
            for an unknown address type, or an HTTP 400 ``ConnectResponse``);
            ``None`` when there is nothing useful to say. ``send()`` accepts it
            even though the connection is in ``ERROR``.
    """

    def __init__(self, message: str, *, reply_hint: Any = None) -> None:
        super().__init__(message)
        self.reply_hint = reply_hint

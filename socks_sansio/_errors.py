"""The library's exceptions.

Two families:

* :class:`ProtocolError`, raised by the sans-I/O machines. :class:`LocalProtocolError`
  means *you* misused the protocol (raised by event constructors and ``send()``);
  :class:`RemoteProtocolError` means the *peer* sent bytes that break it (raised
  only by ``next_event()`` and the stateless ``parse_*`` functions).
* :class:`ProxyError`, raised when a proxy refuses or fails a request that was
  itself well formed (reply codes, HTTP statuses, time-outs).

Exactly two of them also derive from :class:`OSError`, because they really are
a failed connection and a time-out: :class:`ProxyConnectionError` is a
:class:`ConnectionError` and :class:`ProxyTimeoutError` a :class:`TimeoutError`.
Code written for python-socks, asyncio or a plain socket catches ``OSError``,
``ConnectionError`` or ``TimeoutError`` around a connect, and keeps working with
a proxy in between. Everything else stays outside ``OSError`` on purpose: a
protocol error, a refusal or refused credentials is an answer, not a network
failure, and must not be retried or swallowed by code that handles flaky
networks (``except OSError: retry``).

Any other exception escaping a parser is a bug in socks-sansio.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "LocalProtocolError",
    "ProtocolError",
    "ProxyAuthError",
    "ProxyConnectionError",
    "ProxyError",
    "ProxyProtocolError",
    "ProxyRefusedError",
    "ProxyTimeoutError",
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


class ProxyError(Exception):
    """A proxy did not give us the tunnel we asked for.

    The base of every error a handshake driver or adapter raises about the
    proxy (not about our own misuse, which stays :class:`LocalProtocolError`).
    Not an :class:`OSError` itself (only :class:`ProxyConnectionError` and
    :class:`ProxyTimeoutError` are, see the module docstring).

    Attributes:
        proxy: the proxy, as a URL without its password, when known.
    """

    def __init__(self, message: str, *, proxy: str | None = None) -> None:
        super().__init__(message)
        self.proxy = proxy

    @property
    def message(self) -> str:
        """The human-readable explanation."""
        return str(self.args[0])

    def __str__(self) -> str:
        return f"{self.message} (proxy {self.proxy})" if self.proxy else self.message


class ProxyRefusedError(ProxyError):
    """The proxy understood the request and refused it.

    Attributes:
        protocol: ``"socks5"``, ``"socks4"`` or ``"http"``.
        code: the SOCKS5 REP, the SOCKS4 CD or the HTTP status code.
    """

    def __init__(self, message: str, *, protocol: str, code: int, proxy: str | None = None) -> None:
        super().__init__(message, proxy=proxy)
        self.protocol = protocol
        self.code = code


class ProxyAuthError(ProxyRefusedError):
    """The proxy wants credentials we did not give, or refused the ones we gave.

    Attributes:
        challenges: an HTTP proxy's ``Proxy-Authenticate`` values (empty for SOCKS).
    """

    def __init__(
        self,
        message: str,
        *,
        protocol: str,
        code: int,
        challenges: tuple[bytes, ...] = (),
        proxy: str | None = None,
    ) -> None:
        super().__init__(message, protocol=protocol, code=code, proxy=proxy)
        self.challenges = challenges


class ProxyProtocolError(ProxyError):
    """The proxy broke the protocol (its :class:`RemoteProtocolError` is the ``__cause__``)."""


class ProxyConnectionError(ProxyError, ConnectionError):
    """The proxy could not be reached, or closed the connection during the handshake.

    Also a :class:`ConnectionError` (so an :class:`OSError`), as a failed direct
    connect would be. ``str()``, ``args``, :attr:`message` and :attr:`proxy` are
    as for every :class:`ProxyError`; ``errno`` and ``strerror`` are ``None``
    (the :class:`OSError` that caused it, if any, is the ``__cause__``).
    """


class ProxyTimeoutError(ProxyError, TimeoutError):
    """The deadline passed before the tunnel was ready (connect, handshake and TLS included).

    Also the builtin :class:`TimeoutError` (so an :class:`OSError`; on Python
    3.11+ that is ``asyncio.TimeoutError`` too, but not on 3.10, where asyncio
    has its own class and the pure core cannot import asyncio). ``errno`` is ``None``.
    """

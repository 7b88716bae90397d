"""What the three httpcore network backends share: how their failures become httpcore's exceptions.

httpcore (the engine under httpx) knows what to do with its own exceptions: it
retries a connection on ``ConnectError`` / ``ConnectTimeout`` (``retries=``),
and the transports of :mod:`socks_sansio.adapters.httpx` turn each into the
httpx exception of the same name. So a backend raises them, with the original
error as ``__cause__``:

* opening a tunnel: :class:`~socks_sansio.ProxyTimeoutError` (or any time-out)
  becomes ``ConnectTimeout`` and :class:`~socks_sansio.ProxyConnectionError`
  (or any ``OSError``) ``ConnectError``: both may be retried. A proxy's refusal
  (:class:`~socks_sansio.ProxyRefusedError`, :class:`~socks_sansio.ProxyAuthError`,
  :class:`~socks_sansio.ProxyProtocolError`) is raised as it is: retrying would
  not change the answer, and the transport makes it an ``httpx.ProxyError``;
* TLS to the target: ``ConnectTimeout`` / ``ConnectError``;
* reading and writing: ``ReadTimeout`` / ``ReadError``, ``WriteTimeout`` / ``WriteError``.

The order of the checks makes the outcome the same whether or not a library
error also derives from ``OSError`` or ``TimeoutError``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpcore

from socks_sansio import ProxyConnectionError, ProxyError, ProxyTimeoutError

__all__ = ["TunnelConnectError", "TunnelConnectTimeout", "connect_errors", "io_errors"]


class TunnelConnectError(httpcore.ConnectError):
    """httpcore's ``ConnectError`` for a proxy that could not be reached; ``error`` is the library's.

    The error rides on an attribute, not only as ``__cause__``: httpcore's pool
    re-raises with ``from None``.
    """

    def __init__(self, error: ProxyConnectionError) -> None:
        super().__init__(str(error))
        self.error = error


class TunnelConnectTimeout(httpcore.ConnectTimeout):
    """httpcore's ``ConnectTimeout`` for a tunnel not ready in time; ``error`` is the library's."""

    def __init__(self, error: ProxyTimeoutError) -> None:
        super().__init__(str(error))
        self.error = error


def _describe(exc: BaseException) -> str:
    """A message for *exc*, or for what caused it (trio's ``BrokenResourceError`` has none of its own)."""
    return str(exc) or (str(exc.__cause__) if exc.__cause__ is not None else "") or type(exc).__name__


@contextlib.contextmanager
def connect_errors(
    timeouts: tuple[type[BaseException], ...] = (TimeoutError,),
    errors: tuple[type[BaseException], ...] = (OSError,),
) -> Iterator[None]:
    """Opening a tunnel (or TLS over it): time-outs and unreachable proxies as httpcore's (retryable) connect errors.

    Args:
        timeouts: the backend's own time-out exceptions (besides the library's).
        errors: the backend's own connection failures (besides the library's).
    """
    try:
        yield
    except ProxyError as exc:
        if isinstance(exc, ProxyTimeoutError):
            raise TunnelConnectTimeout(exc) from exc
        if isinstance(exc, ProxyConnectionError):
            raise TunnelConnectError(exc) from exc
        raise  # a refusal: the transport maps it, never retried
    except timeouts as exc:
        raise httpcore.ConnectTimeout(str(exc) or "timed out while connecting") from exc
    except errors as exc:
        raise httpcore.ConnectError(_describe(exc)) from exc


@contextlib.contextmanager
def io_errors(
    timeout: type[httpcore.TimeoutException],
    error: type[httpcore.NetworkError],
    timeouts: tuple[type[BaseException], ...],
    errors: tuple[type[BaseException], ...],
) -> Iterator[None]:
    """One operation on an open stream: the backend's *timeouts* as *timeout*, its *errors* as *error*."""
    try:
        yield
    except timeouts as exc:
        raise timeout(str(exc) or "timed out") from exc
    except errors as exc:
        raise error(_describe(exc)) from exc

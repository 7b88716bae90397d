"""httpx through any proxy or chain of proxies: :class:`SyncProxyTransport` and :class:`AsyncProxyTransport`.

::

    transport = SyncProxyTransport.from_url("socks5h://user:pass@127.0.0.1:1080")
    with httpx.Client(transport=transport) as client:
        client.get("https://example.org/")

A proxy is a URL (``socks5://``, ``socks5h://``, ``socks4://``, ``socks4a://``,
``http://``, ``https://`` for TLS to the proxy) or a list of them: a chain,
first hop first. Each transport is a real httpx transport over an httpcore
connection pool (HTTP/1.1, HTTP/2 with ``http2=True``, keep-alive, ``limits``,
``retries``), whose network backend opens every TCP connection as a tunnel with
this library's adapters: :func:`socks_sansio.adapters.sync.connect`, and for
the async transport :func:`socks_sansio.adapters.asyncio.open_tunnel` or
:func:`socks_sansio.adapters.trio.open_tcp_stream`, whichever library runs
(sniffio tells). Octets a proxy sends with its last reply are never lost, and
TLS to the origin runs end to end (inside the proxy's TLS through ``https://``).

Time-outs are the client's (``httpx.Client(timeout=...)``): the *connect*
time-out is one deadline for the whole tunnel (every hop's TCP connect,
handshake and TLS), and again for TLS with the origin.

Errors. A proxy's failure is raised as an exception that is both an httpx
exception and the library's own (its type derives from both; the original is
also its ``__cause__``), so either ``except`` clause catches it:

============================================  ========================
the library's error                           is also
============================================  ========================
:class:`~socks_sansio.ProxyTimeoutError`      ``httpx.ConnectTimeout``
:class:`~socks_sansio.ProxyConnectionError`   ``httpx.ConnectError``
:class:`~socks_sansio.ProxyRefusedError`,     ``httpx.ProxyError``
:class:`~socks_sansio.ProxyAuthError`,
:class:`~socks_sansio.ProxyProtocolError`
============================================  ========================

A time-out or an unreachable proxy is retried under ``retries=`` (as httpx
retries connect errors); a refusal is not. A target the chain cannot carry (an
IPv6 literal through SOCKS4) is ``httpx.UnsupportedProtocol`` with the
library's :class:`~socks_sansio.LocalProtocolError` as its ``__cause__``.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, Generic, TypeVar

import httpcore
import httpx

from socks_sansio import (
    LocalProtocolError,
    ProxyConnectionError,
    ProxyError,
    ProxySpec,
    ProxyTimeoutError,
    ProxyURL,
    select_proxy,
    to_proxies,
)

from .client._httpx_common import TunnelConnectError, TunnelConnectTimeout
from .client.sync_httpx import ProxyBackend as SyncProxyBackend

__all__ = [
    "DEFAULT_LIMITS",
    "AsyncProxyBackend",
    "AsyncProxyTransport",
    "Proxy",
    "SyncProxyBackend",
    "SyncProxyTransport",
    "as_httpx_error",
]

Proxy = ProxySpec | Sequence[ProxySpec]
"""A proxy URL (or :class:`~socks_sansio.ProxyURL`), or a chain of them, first hop first."""

_Route = tuple[ProxyURL, ...]  # () = directly
_P = TypeVar("_P")
_S = TypeVar("_S", bound="SyncProxyTransport")
_A = TypeVar("_A", bound="AsyncProxyTransport")

DEFAULT_LIMITS: Final = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)
"""httpx's own default limits."""


# ---------------------------------------------------------------------------- errors

_CORE_TO_HTTPX: Final[tuple[tuple[type[Exception], type[httpx.TransportError]], ...]] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)
"""httpcore's exceptions and httpx's of the same name, the more specific first."""

_DUAL_CLASSES: dict[tuple[type[httpx.TransportError], type[ProxyError]], type[httpx.TransportError]] = {}


def _dual_class(base: type[httpx.TransportError], kind: type[ProxyError]) -> type[httpx.TransportError]:
    """The class deriving from the httpx exception *base* and the library's *kind* (one per pair)."""
    cls = _DUAL_CLASSES.get((base, kind))
    if cls is None:
        doc = f"A {kind.__name__} of socks_sansio that is also an httpx.{base.__name__}."
        cls = type(f"Httpx{kind.__name__}", (base, kind), {"__module__": __name__, "__doc__": doc})
        _DUAL_CLASSES[(base, kind)] = cls
    return cls


def as_httpx_error(error: ProxyError) -> httpx.TransportError:
    """*error* as an exception of both families: ``httpx.ConnectTimeout``, ``ConnectError`` or ``ProxyError``.

    Its type derives from the httpx exception and from ``type(error)``, so an
    ``except ProxyAuthError`` clause and an ``except httpx.ProxyError`` clause
    both catch it; it carries the same message, attributes (``proxy``,
    ``code``...) and ``__notes__``. Raise it ``from error``.
    """
    if isinstance(error, ProxyTimeoutError):
        base: type[httpx.TransportError] = httpx.ConnectTimeout
    elif isinstance(error, ProxyConnectionError):
        base = httpx.ConnectError
    else:
        base = httpx.ProxyError
    cls = _dual_class(base, type(error))
    dual: httpx.TransportError = cls.__new__(cls, *error.args)
    dual.args = error.args
    vars(dual).update(vars(error))  # proxy, protocol, code, challenges, __notes__...
    dual._request = None  # what httpx's __init__ (not run) sets; the client fills it in
    if isinstance(error, OSError) and isinstance(dual, OSError):
        dual.errno, dual.strerror, dual.filename = error.errno, error.strerror, error.filename
    return dual


def _translate(exc: Exception) -> tuple[Exception, BaseException] | None:
    """The exception to raise instead of *exc*, and its cause; ``None`` to let *exc* through."""
    if isinstance(exc, ProxyError):
        return as_httpx_error(exc), exc
    if isinstance(exc, TunnelConnectError | TunnelConnectTimeout):
        return as_httpx_error(exc.error), exc.error  # made retryable by the backend, and retried in vain
    if isinstance(exc, LocalProtocolError):
        return httpx.UnsupportedProtocol(f"the proxy chain cannot carry this request: {exc}"), exc
    for core, ours in _CORE_TO_HTTPX:
        if isinstance(exc, core):
            return ours(str(exc)), exc
    return None


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    """Raise httpx's exceptions (and the dual ones for proxy failures) for what httpcore and the backends raise."""
    try:
        yield
    except Exception as exc:
        translated = _translate(exc)
        if translated is None:
            raise
        raise translated[0] from translated[1]


# ---------------------------------------------------------------------------- routing


class _Routes(Generic[_P]):
    """Which proxy chain a request goes through, and one connection pool per chain."""

    def __init__(self, proxy: Proxy | None, make_pool: Callable[[_Route], _P]) -> None:
        self.fixed: _Route = tuple(to_proxies(proxy))
        self.environ: Mapping[str, str] | None = None
        self._make_pool = make_pool
        self._pools: dict[_Route, _P] = {}
        self._lock = threading.Lock()

    def use_environment(self, environ: Mapping[str, str]) -> None:
        """Choose the chain per request from *environ* (checked now: a bad variable raises here)."""
        for scheme in ("http", "https"):
            select_proxy(scheme, "socks-sansio.invalid", environ=environ)
        self.environ = environ

    def pool(self, url: httpx.URL) -> _P:
        route = self.fixed
        if self.environ is not None:
            port = url.port or (443 if url.scheme in ("https", "wss") else 80)
            chosen = select_proxy(url.scheme, url.raw_host.decode("ascii"), port, environ=self.environ)
            route = () if chosen is None else (chosen,)
        with self._lock:
            pool = self._pools.get(route)
            if pool is None:
                pool = self._pools[route] = self._make_pool(route)
            return pool

    def take_all(self) -> list[_P]:
        with self._lock:
            pools = list(self._pools.values())
            self._pools.clear()
        return pools


def _environment(environ: Mapping[str, str] | None) -> dict[str, str]:
    return dict(os.environ if environ is None else environ)


def _core_request(request: httpx.Request) -> httpcore.Request:
    return httpcore.Request(
        method=request.method,
        url=httpcore.URL(
            scheme=request.url.raw_scheme, host=request.url.raw_host, port=request.url.port, target=request.url.raw_path
        ),
        headers=request.headers.raw,
        content=request.stream,
        extensions=request.extensions,
    )


def _ssl_context(verify: ssl.SSLContext | bool) -> ssl.SSLContext:
    """The origins' TLS context: *verify* itself, httpx's default (certifi), or one that checks nothing."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    return httpx.create_ssl_context(verify=verify, trust_env=False)


class _Options:
    """The pool options both transports take (see :class:`SyncProxyTransport`)."""

    def __init__(
        self,
        verify: ssl.SSLContext | bool,
        proxy_ssl: ssl.SSLContext | None,
        http1: bool,
        http2: bool,
        limits: httpx.Limits,
        retries: int,
        pipelined: bool,
    ) -> None:
        self.pool: dict[str, Any] = {
            "ssl_context": _ssl_context(verify),
            "max_connections": limits.max_connections,
            "max_keepalive_connections": limits.max_keepalive_connections,
            "keepalive_expiry": limits.keepalive_expiry,
            "http1": http1,
            "http2": http2,
            "retries": retries,
        }
        self.backend: dict[str, Any] = {"proxy_ssl": proxy_ssl, "pipelined": pipelined}


# ---------------------------------------------------------------------------- sync


class _SyncResponseStream(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _httpx_errors():
            yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            with _httpx_errors():
                close()


class SyncProxyTransport(httpx.BaseTransport):
    """An httpx transport whose every connection goes through a proxy or a chain of proxies.

    ``httpx.Client(transport=SyncProxyTransport(proxy))``; requests to the same
    origin reuse a kept-alive tunnel (one TCP connection to the first proxy).

    Args:
        proxy: a proxy URL (``"socks5h://user:pass@host:1080"``), a
            :class:`~socks_sansio.ProxyURL`, or a list of them: a chain, first hop
            first. ``None`` (or ``[]``) connects directly.
        verify: the origins' TLS: an :class:`ssl.SSLContext`, ``True`` (httpx's
            default trust store) or ``False`` (no verification).
        proxy_ssl: the context for ``https://`` proxies (default: the system's trust store).
        http1, http2: the HTTP versions to offer (``http2`` needs the ``h2`` package:
            the ``http2`` extra).
        limits: an :class:`httpx.Limits` (pool size, keep-alive count and expiry).
        retries: how many times to retry a connection that could not be opened
            (a time-out, an unreachable proxy); a refusal is never retried.
        pipelined: SOCKS5 hops send greeting, credentials and request in one write.

    Raises:
        LocalProtocolError: a proxy URL does not parse.

    The environment is never read here: see :meth:`from_env`. A proxy's failure
    is raised as an exception of both families (see the module's docstring):
    ``except ProxyAuthError`` and ``except httpx.ProxyError`` both catch a refused
    password.
    """

    def __init__(
        self,
        proxy: Proxy | None,
        *,
        verify: ssl.SSLContext | bool = True,
        proxy_ssl: ssl.SSLContext | None = None,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits = DEFAULT_LIMITS,
        retries: int = 0,
        pipelined: bool = False,
    ) -> None:
        options = _Options(verify, proxy_ssl, http1, http2, limits, retries, pipelined)

        def make_pool(route: _Route) -> httpcore.ConnectionPool:
            backend = SyncProxyBackend(route, **options.backend)
            return httpcore.ConnectionPool(network_backend=backend, **options.pool)

        self._routes: _Routes[httpcore.ConnectionPool] = _Routes(proxy, make_pool)

    @classmethod
    def from_url(cls: type[_S], url: Proxy, **options: Any) -> _S:
        """A transport through *url* (a proxy URL, or a list of them for a chain); *options* as for the constructor."""
        return cls(url, **options)

    @classmethod
    def from_env(cls: type[_S], environ: Mapping[str, str] | None = None, **options: Any) -> _S:
        """A transport that picks each request's proxy from the environment, as curl does.

        ``ALL_PROXY``, ``HTTPS_PROXY`` (for ``https://`` URLs), ``HTTP_PROXY`` (for
        ``http://``, lower case only, as curl) and ``NO_PROXY`` are read from *environ*
        (default: a copy of :data:`os.environ` taken now); a target with no proxy, or
        one ``NO_PROXY`` matches, is fetched directly. One pool per proxy.

        Raises:
            LocalProtocolError: a variable holds something invalid (the message names it).
        """
        transport = cls(None, **options)
        transport._routes.use_environment(_environment(environ))
        return transport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send *request* through the proxies (httpx's transport API)."""
        assert isinstance(request.stream, httpx.SyncByteStream)
        pool = self._routes.pool(request.url)
        with _httpx_errors():
            response = pool.handle_request(_core_request(request))
        assert isinstance(response.stream, Iterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_SyncResponseStream(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        """Close every pooled connection."""
        for pool in self._routes.take_all():
            pool.close()


# ---------------------------------------------------------------------------- async


def _running_library() -> str:
    """``"asyncio"`` or ``"trio"`` (or another name), as sniffio tells."""
    try:
        import sniffio
    except ImportError:  # pragma: no cover - trio requires sniffio: without it, this is asyncio
        return "asyncio"
    return sniffio.current_async_library()


class AsyncProxyBackend(httpcore.AsyncNetworkBackend):
    """httpcore's async network backend through proxies, on asyncio or trio (whichever runs, says sniffio).

    Args:
        proxy: a proxy, or a chain; ``None``: directly.
        proxy_ssl: the context for ``https://`` proxies.
        pipelined: SOCKS5 hops send greeting, credentials and request in one write.
    """

    def __init__(
        self, proxy: Proxy | None, *, proxy_ssl: ssl.SSLContext | None = None, pipelined: bool = False
    ) -> None:
        self._proxy = tuple(to_proxies(proxy))
        self._proxy_ssl = proxy_ssl
        self._pipelined = pipelined

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """A tunnel to *host*:*port*; *timeout* is one deadline for every hop (errors as :class:`SyncProxyBackend`).

        Raises:
            RuntimeError: neither asyncio nor trio runs this task.
        """
        if local_address is not None:
            raise httpcore.UnsupportedProtocol("local_address cannot be chosen for a connection through proxies")
        proxy, proxy_ssl, pipelined = self._proxy, self._proxy_ssl, self._pipelined
        library = _running_library()
        if library == "trio":
            from .client import trio_httpx

            return await trio_httpx.connect(
                host, port, proxy=proxy, timeout=timeout, proxy_ssl=proxy_ssl, pipelined=pipelined
            )
        if library == "asyncio":
            from .client import asyncio_httpx

            return await asyncio_httpx.connect(
                host, port, proxy=proxy, timeout=timeout, proxy_ssl=proxy_ssl, pipelined=pipelined
            )
        raise RuntimeError(f"AsyncProxyBackend runs on asyncio or trio, not on {library}")

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        """Not through a proxy.

        Raises:
            httpcore.UnsupportedProtocol: always.
        """
        raise httpcore.UnsupportedProtocol("a Unix socket cannot be reached through a proxy")

    async def sleep(self, seconds: float) -> None:
        """Sleep on the running library (between connection retries)."""
        if _running_library() == "trio":
            from .client import trio_httpx

            await trio_httpx.sleep(seconds)
        else:
            from .client import asyncio_httpx

            await asyncio_httpx.sleep(seconds)


class _AsyncResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        aclose = getattr(self._stream, "aclose", None)
        if aclose is not None:
            with _httpx_errors():
                await aclose()


class AsyncProxyTransport(httpx.AsyncBaseTransport):
    """The async :class:`SyncProxyTransport`, for ``httpx.AsyncClient``, on asyncio and on trio.

    Same arguments, :meth:`from_url`, :meth:`from_env` and errors as :class:`SyncProxyTransport`.
    """

    def __init__(
        self,
        proxy: Proxy | None,
        *,
        verify: ssl.SSLContext | bool = True,
        proxy_ssl: ssl.SSLContext | None = None,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits = DEFAULT_LIMITS,
        retries: int = 0,
        pipelined: bool = False,
    ) -> None:
        options = _Options(verify, proxy_ssl, http1, http2, limits, retries, pipelined)

        def make_pool(route: _Route) -> httpcore.AsyncConnectionPool:
            backend = AsyncProxyBackend(route, **options.backend)
            return httpcore.AsyncConnectionPool(network_backend=backend, **options.pool)

        self._routes: _Routes[httpcore.AsyncConnectionPool] = _Routes(proxy, make_pool)

    @classmethod
    def from_url(cls: type[_A], url: Proxy, **options: Any) -> _A:
        """A transport through *url* (a proxy URL, or a list of them for a chain); *options* as for the constructor."""
        return cls(url, **options)

    @classmethod
    def from_env(cls: type[_A], environ: Mapping[str, str] | None = None, **options: Any) -> _A:
        """A transport that picks each request's proxy from the environment (see :meth:`SyncProxyTransport.from_env`).

        Raises:
            LocalProtocolError: a variable holds something invalid (the message names it).
        """
        transport = cls(None, **options)
        transport._routes.use_environment(_environment(environ))
        return transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send *request* through the proxies (httpx's async transport API)."""
        assert isinstance(request.stream, httpx.AsyncByteStream)
        pool = self._routes.pool(request.url)
        with _httpx_errors():
            response = await pool.handle_async_request(_core_request(request))
        assert isinstance(response.stream, AsyncIterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_AsyncResponseStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        """Close every pooled connection."""
        for pool in self._routes.take_all():
            await pool.aclose()

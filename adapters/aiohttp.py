"""aiohttp through any proxy or chain of proxies: :class:`ProxyConnector`.

::

    connector = ProxyConnector.from_url("socks5h://user:pass@127.0.0.1:1080")
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get("https://example.org/") as response:
            print(await response.text())

A proxy is a URL (``socks5://``, ``socks5h://``, ``socks4://``, ``socks4a://``,
``http://``, ``https://`` for TLS to the proxy) or a list of them: a chain,
first hop first. :class:`ProxyConnector` is an :class:`aiohttp.TCPConnector`:
it only replaces the step that opens a new connection, which becomes
:func:`socks_sansio.adapters.asyncio.create_connection` through the chain
(octets the last proxy sent with its reply reach aiohttp's protocol first).
Everything else is aiohttp's: the pool and keep-alive (``limit``,
``keepalive_timeout``...), and TLS with the origin (``ssl=``, fingerprints,
its certificate errors), layered by aiohttp's own ``start_tls`` over the tunnel.

The deadline for opening a tunnel (every hop's TCP connect, handshake and TLS)
is the request's ``ClientTimeout.sock_connect`` (else ``connect``, else ``total``).

Supported: aiohttp 3.9 up to (not including) 4; the two connector methods this
relies on (``_create_connection`` and ``_start_tls_connection``) are unchanged
over that range. Tested with the version the ``aiohttp`` extra installs.

Errors. A proxy's failure is raised as an exception whose type derives from an
aiohttp exception *and* from the library's error, with the same message and
attributes (the original is also its ``__cause__``):

* :class:`~socks_sansio.ProxyConnectionError`, :class:`~socks_sansio.ProxyRefusedError`,
  :class:`~socks_sansio.ProxyAuthError`, :class:`~socks_sansio.ProxyProtocolError`:
  also ``aiohttp.ClientProxyConnectionError`` (a ``ClientConnectorError``): it
  leaves ``session.get()`` as it is, so ``except ProxyAuthError`` and ``except
  aiohttp.ClientProxyConnectionError`` both catch it;
* :class:`~socks_sansio.ProxyTimeoutError`: also ``aiohttp.ConnectionTimeoutError``.
  ``ClientSession`` turns every time-out while connecting into its own
  ``ConnectionTimeoutError("Connection timeout to host ...")``, so from a session
  it arrives as that, with the library's error as its ``__cause__``.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

import aiohttp
from aiohttp.client_proto import ResponseHandler

from socks_sansio import (
    LocalProtocolError,
    ProxyError,
    ProxySpec,
    ProxyTimeoutError,
    ProxyURL,
    select_proxy,
    to_proxies,
)

from .client.asyncio import create_connection

if TYPE_CHECKING:
    from aiohttp.client_reqrep import ConnectionKey
    from aiohttp.tracing import Trace

__all__ = ["Proxy", "ProxyConnector", "as_aiohttp_error"]

Proxy = ProxySpec | Sequence[ProxySpec]
"""A proxy URL (or :class:`~socks_sansio.ProxyURL`), or a chain of them, first hop first."""

_C = TypeVar("_C", bound="ProxyConnector")

_TIMEOUT_ERROR: Final[type[aiohttp.ServerTimeoutError]] = getattr(
    aiohttp,
    "ConnectionTimeoutError",
    aiohttp.ServerTimeoutError,  # ConnectionTimeoutError: aiohttp 3.10+
)

_DUAL_CLASSES: dict[tuple[type[aiohttp.ClientError], type[ProxyError]], type[aiohttp.ClientError]] = {}


def _dual_class(base: type[aiohttp.ClientError], kind: type[ProxyError]) -> type[aiohttp.ClientError]:
    """The class deriving from the aiohttp exception *base* and the library's *kind* (one per pair)."""
    cls = _DUAL_CLASSES.get((base, kind))
    if cls is None:
        doc = f"A {kind.__name__} of socks_sansio that is also an aiohttp.{base.__name__}."
        # The library's message, not aiohttp's "Cannot connect to host ..." built from an OSError.
        namespace = {"__module__": __name__, "__doc__": doc, "__str__": kind.__str__}
        cls = type(f"Aiohttp{kind.__name__}", (base, kind), namespace)
        _DUAL_CLASSES[(base, kind)] = cls
    return cls


def as_aiohttp_error(error: ProxyError, connection_key: ConnectionKey) -> aiohttp.ClientError:
    """*error* as an exception of both families (``ClientProxyConnectionError`` or ``ConnectionTimeoutError``).

    Its type derives from the aiohttp exception and from ``type(error)``; it
    carries the same message, attributes (``proxy``, ``code``...) and
    ``__notes__``, and, as a ``ClientConnectorError``, the request's
    *connection_key* (``host``, ``port``, ``ssl``) and an ``os_error``. Raise it
    ``from error``.
    """
    base: type[aiohttp.ClientError]
    base = _TIMEOUT_ERROR if isinstance(error, ProxyTimeoutError) else aiohttp.ClientProxyConnectionError
    cls = _dual_class(base, type(error))
    dual: aiohttp.ClientError = cls.__new__(cls, *error.args)
    dual.args = error.args
    vars(dual).update(vars(error))  # proxy, protocol, code, challenges, __notes__...
    if isinstance(dual, aiohttp.ClientConnectorError):  # what its __init__ (not run) sets
        os_error = error if isinstance(error, OSError) else error.__cause__
        if not isinstance(os_error, OSError):
            os_error = OSError(None, str(error))
        dual._conn_key, dual._os_error = connection_key, os_error
        dual.errno, dual.strerror = os_error.errno, os_error.strerror or str(error)
    return dual


def _deadline(timeout: aiohttp.ClientTimeout) -> float | None:
    for value in (timeout.sock_connect, timeout.connect, timeout.total):
        if value:
            return float(value)
    return None


class ProxyConnector(aiohttp.TCPConnector):
    """An :class:`aiohttp.TCPConnector` whose every connection goes through a proxy or a chain of proxies.

    ``aiohttp.ClientSession(connector=ProxyConnector(proxy))``; requests to the
    same origin reuse a kept-alive tunnel, as with any TCPConnector.

    Args:
        proxy: a proxy URL (``"socks5h://user:pass@host:1080"``), a
            :class:`~socks_sansio.ProxyURL`, or a list of them: a chain, first hop
            first. ``None`` (or ``[]``) connects directly.
        proxy_ssl: the context for ``https://`` proxies (default: the system's trust store).
        pipelined: SOCKS5 hops send greeting, credentials and request in one write.
        **kwargs: for :class:`aiohttp.TCPConnector` (``ssl``, ``limit``,
            ``limit_per_host``, ``keepalive_timeout``, ``force_close``...). Its
            resolver only serves direct connections: through a proxy, a name is
            resolved by the proxy (``socks5h``, ``socks4a``, ``http(s)``) or by this
            library (``socks5``, ``socks4``).

    Raises:
        LocalProtocolError: a proxy URL does not parse.

    The environment is never read here: see :meth:`from_env`. A request's own
    ``proxy=`` (or one aiohttp takes from the environment with
    ``ClientSession(trust_env=True)``) is refused with ``ValueError``: the
    connector decides the route.
    """

    def __init__(
        self,
        proxy: Proxy | None = None,
        *,
        proxy_ssl: ssl.SSLContext | None = None,
        pipelined: bool = False,
        **kwargs: Any,
    ) -> None:
        route = tuple(to_proxies(proxy))  # before the connector exists: a bad URL leaves nothing to close
        super().__init__(**kwargs)
        self._proxy_route: tuple[ProxyURL, ...] = route
        self._proxy_environ: Mapping[str, str] | None = None
        self._proxy_ssl = proxy_ssl
        self._pipelined = pipelined

    @classmethod
    def from_url(cls: type[_C], url: Proxy, **kwargs: Any) -> _C:
        """A connector through *url* (a proxy URL, or a list of them for a chain); *kwargs* as for the constructor."""
        return cls(url, **kwargs)

    @classmethod
    def from_env(cls: type[_C], environ: Mapping[str, str] | None = None, **kwargs: Any) -> _C:
        """A connector that picks each request's proxy from the environment, as curl does.

        ``ALL_PROXY``, ``HTTPS_PROXY`` (for ``https://`` URLs), ``HTTP_PROXY`` (for
        ``http://``, lower case only, as curl) and ``NO_PROXY`` are read from *environ*
        (default: a copy of :data:`os.environ` taken now); a target with no proxy, or
        one ``NO_PROXY`` matches, is connected to directly.

        Raises:
            LocalProtocolError: a variable holds something invalid (the message names it).
        """
        environ = dict(os.environ if environ is None else environ)
        for scheme in ("http", "https"):
            select_proxy(scheme, "socks-sansio.invalid", environ=environ)
        connector = cls(None, **kwargs)
        connector._proxy_environ = environ
        return connector

    def _route(self, req: aiohttp.ClientRequest) -> tuple[ProxyURL, ...]:
        if self._proxy_environ is None:
            return self._proxy_route
        scheme = "https" if req.is_ssl() else "http"
        chosen = select_proxy(scheme, req.host, req.port, environ=self._proxy_environ)
        return () if chosen is None else (chosen,)

    async def _create_connection(
        self, req: aiohttp.ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> ResponseHandler:
        """A new connection for *req*: a tunnel through the chain, then aiohttp's TLS if the origin is https."""
        if req.proxy is not None:
            raise ValueError(
                f"a request through a ProxyConnector cannot name its own proxy ({req.proxy.scheme}://...): "
                "put it in the connector's chain (and do not combine trust_env=True with it)"
            )
        route = self._route(req)
        if not route:
            return await super()._create_connection(req, traces, timeout)
        host = req.url.raw_host
        assert host is not None
        port = req.port
        assert port is not None
        tls = req.is_ssl()
        if sys.version_info < (3, 11):  # pragma: no cover - asyncio's start_tls over TLS came with 3.11
            if tls and any(hop.tls for hop in route):
                raise aiohttp.ClientConnectionError(
                    "TLS inside TLS (an https:// origin through an https:// proxy) needs Python 3.11 on asyncio"
                )
        options: dict[str, Any] = {
            "proxy": list(route), "timeout": _deadline(timeout), "proxy_ssl": self._proxy_ssl,
            "pipelined": self._pipelined,
        }  # fmt: skip
        try:
            if not tls:
                _, handler = await create_connection(self._factory, host, port, **options)
                return handler
            # Before TLS the origin says nothing (a TLS server waits for the ClientHello), so a bare
            # protocol holds the tunnel until aiohttp's own start_tls takes it over.
            transport, _ = await create_connection(asyncio.Protocol, host, port, **options)
        except ProxyError as exc:
            raise as_aiohttp_error(exc, req.connection_key) from exc
        except LocalProtocolError as exc:
            raise aiohttp.ClientConnectionError(f"the proxy chain cannot carry this request: {exc}") from exc
        except OSError as exc:  # a name that did not resolve here (socks5://, socks4://)
            raise aiohttp.ClientConnectorError(req.connection_key, exc) from exc
        _, handler = await self._start_tls_connection(transport, req=req, timeout=timeout)
        return handler

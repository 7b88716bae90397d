"""A small HTTP endpoint for balancers and scrapers: ``GET /healthz`` (and ``/metrics`` when metrics are on).

``/healthz`` answers ``200 ok`` while the server accepts clients and ``503
draining`` once it was told to stop, so a balancer (HAProxy's ``option
httpchk GET /healthz``) takes the instance out before it closes its listeners.
``/metrics`` is the Prometheus registry, when one is given. It runs on a thread
of its own with the stdlib's WSGI server (one request at a time is plenty for
checks and scrapes); the state it reports is read through a function, so the
server's event loop is never touched from that thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any, final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

__all__ = ["StatusEndpoint"]

_Start = Callable[[str, list[tuple[str, str]]], Any]
_App = Callable[[dict[str, Any], _Start], Iterable[bytes]]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # every check would otherwise be a line on stderr


@final
class StatusEndpoint:
    """``/healthz`` (and ``/metrics``) on *host*:*port* (port 0: any free one), until :meth:`close`.

    Args:
        host, port: where to listen.
        ready: whether the server accepts clients now (called from the endpoint's thread).
        metrics_app: the WSGI app of ``/metrics`` (``prometheus_client.make_wsgi_app``), if any.

    Raises:
        OSError: the address cannot be bound.
    """

    def __init__(self, host: str, port: int, *, ready: Callable[[], bool], metrics_app: _App | None = None) -> None:
        self._ready = ready
        self._metrics_app = metrics_app
        self._server = make_server(host, port, self._app, server_class=_Server, handler_class=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="socks-sansio status endpoint", daemon=True)  # fmt: skip
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def _app(self, environ: dict[str, Any], start_response: _Start) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            ok = self._ready()
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"ok\n" if ok else b"draining\n"]
        if path == "/metrics" and self._metrics_app is not None:
            return self._metrics_app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /healthz" + (b" or /metrics" if self._metrics_app else b"") + b"\n"]

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

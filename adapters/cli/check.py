"""``socks-sansio check``: is each of these proxies healthy, and if not, why not?

Strategy: for every proxy URL, open one tunnel to the user's target with
:func:`socks_sansio.adapters.sync.open_tunnel` (one deadline for TCP connect and handshake),
read the timings and bound address from its :class:`ConnectionInfo`, then
optionally measure the first-byte latency:

* ``--send BYTES``: send a small payload (backslash escapes such as ``\\r\\n``
  are decoded) and time the first octet that comes back (an echo target, or
  ``--send 'HEAD / HTTP/1.0\\r\\n\\r\\n'`` for a web server);
* ``--banner``: send nothing and time the target's greeting (SSH, SMTP, FTP);
* neither: the check ends after the handshake and first-byte latency is not
  measured.

A failure becomes a *kind* and a one-line diagnosis. The exception classes do
most of the work (auth refused, target refused with its code, timeout, wrong
protocol); two cases get more help: a refused TCP connection is a dead port,
and a SOCKS handshake that times out is followed by one short HTTP probe of the
same port, because an HTTP proxy waits silently for a request line when sent a
SOCKS greeting. Output never contains a password: proxies are shown with
:meth:`ProxyURL.redacted`, and the adapters' error messages already use it.

Exit status: 0 when every proxy is healthy, 1 when any failed, 2 on usage
errors (bad URL, bad target, bad option).
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO, final

import attrs

from socks_sansio import (
    LocalProtocolError,
    ProxyAuthError,
    ProxyConnectionError,
    ProxyError,
    ProxyProtocolError,
    ProxyRefusedError,
    ProxyTimeoutError,
    ProxyURL,
    listen_address,
)

from ..client.sync import open_tunnel

__all__ = ["CheckResult", "check_proxy", "parse_payload", "run_checks"]

_PROBE = b"HEAD / HTTP/1.0\r\n\r\n"
_PROBE_TIMEOUT = 2.0
# What a web server answers to CONNECT (nginx 400, Apache 405, Python's http.server 501): a proxy that
# cannot reach a target says 502, 503 or 504, and one that forbids it 403.
_NOT_CONNECT = frozenset({400, 405, 501})


@final
@attrs.frozen(kw_only=True)
class CheckResult:
    """The outcome of checking one proxy.

    Attributes:
        proxy: the proxy URL without its password.
        protocol: the URL's scheme (``socks5``, ``socks5h``, ``http``...).
        ok: whether the tunnel opened (and the first byte came, when asked for).
        auth: ``"none"`` (no credentials given and none wanted), ``"accepted"``,
            ``"refused"``, or ``"unknown"`` (the check failed before that point).
        connect_ms: milliseconds to open TCP to the proxy (``None`` on failure).
        handshake_ms: milliseconds spent in the proxy handshake.
        first_byte_ms: milliseconds from sending the payload (or from the end of
            the handshake with ``--banner``) to the target's first octet.
        bound: the proxy's reply address as ``host:port`` (``None`` for HTTP
            CONNECT, which has none; ``-`` in text).
        error: the failure kind: ``dead-port``, ``unreachable``, ``wrong-protocol``,
            ``not-a-proxy`` (a web server answered CONNECT), ``auth-refused``,
            ``target-refused``, ``timeout``, ``no-first-byte`` or ``error``;
            ``None`` when healthy.
        code: the reply code of a refusal (SOCKS5 REP, SOCKS4 CD, HTTP status).
        diagnosis: one human sentence about the failure.
    """

    proxy: str
    protocol: str
    ok: bool
    auth: str
    connect_ms: float | None = None
    handshake_ms: float | None = None
    first_byte_ms: float | None = None
    bound: str | None = None
    error: str | None = None
    code: int | None = None
    diagnosis: str | None = None

    def as_json(self) -> str:
        """One JSON object on one line."""
        return json.dumps(attrs.asdict(self), sort_keys=False)

    def as_text(self) -> str:
        """One human line: ``OK`` or ``FAIL``, the proxy, then details."""
        if self.ok:
            parts = [f"OK   {self.proxy}", f"protocol={self.protocol}", f"auth={self.auth}",
                     f"connect={self.connect_ms:.1f}ms", f"handshake={self.handshake_ms:.1f}ms"]
            if self.first_byte_ms is not None:
                parts.append(f"first-byte={self.first_byte_ms:.1f}ms")
            parts.append(f"bound={self.bound or '-'}")
            return " ".join(parts)
        code = f" code={self.code}" if self.code is not None else ""
        return (f"FAIL {self.proxy} protocol={self.protocol} auth={self.auth} "
                f"error={self.error}{code}: {self.diagnosis}")


def parse_payload(text: str) -> bytes:
    """``--send`` text to octets: backslash escapes (``\\r``, ``\\n``, ``\\x00``) are decoded.

    Raises:
        ValueError: a malformed escape.
    """
    try:
        return text.encode("utf-8").decode("unicode_escape").encode("latin-1")
    except UnicodeError as exc:
        raise ValueError(f"--send: bad escape in {text!r}: {exc}") from exc


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def _probe_http(proxy: ProxyURL, timeout: float) -> bytes | None:
    """Send an HTTP request to the proxy's port; return the first line if the answer is HTTP."""
    try:
        with socket.create_connection((proxy.address.host_str, proxy.address.port), timeout=timeout) as sock:
            sock.sendall(_PROBE)
            answer = sock.recv(256)
    except OSError:
        return None
    if answer.startswith(b"HTTP/"):
        return answer.split(b"\r\n", 1)[0]
    return None


def _diagnose(exc: Exception, proxy: ProxyURL, timeout: float) -> tuple[str, str, int | None]:
    """``(kind, diagnosis, code)`` for a failed tunnel."""
    scheme = proxy.scheme
    if isinstance(exc, ProxyAuthError):
        if proxy.credentials is None:
            return "auth-refused", f"the proxy wants credentials and none were given: {exc}", exc.code
        return "auth-refused", f"the proxy refused the credentials: {exc}", exc.code
    if isinstance(exc, ProxyRefusedError) and scheme in ("http", "https") and exc.code in _NOT_CONNECT:
        return ("not-a-proxy",
                f"the port answered CONNECT with HTTP {exc.code}, as a web server does: it is not an HTTP proxy, "
                f"or one that does not serve CONNECT", exc.code)
    if isinstance(exc, ProxyRefusedError):
        return "target-refused", f"the proxy could not reach the target (code {exc.code}): {exc}", exc.code
    if isinstance(exc, ProxyProtocolError):
        return "wrong-protocol", f"the port does not speak {scheme}: {exc}", None
    if isinstance(exc, ProxyTimeoutError):
        if "handshake" in exc.message and scheme.startswith("socks"):
            line = _probe_http(proxy, min(timeout, _PROBE_TIMEOUT))
            if line is not None:
                shown = line.decode("ascii", "replace")
                return ("wrong-protocol",
                        f"no answer to the {scheme} greeting, and the port answers HTTP ({shown!r}): "
                        "this looks like an HTTP proxy (try http://)", None)
        return "timeout", str(exc), None
    if isinstance(exc, ProxyConnectionError):
        if isinstance(exc.__cause__, ConnectionRefusedError):
            return "dead-port", f"nothing listens there (connection refused): {exc}", None
        if "handshake" in exc.message:
            return ("wrong-protocol",
                    f"the proxy closed the connection during the handshake (is it a {scheme} proxy?): {exc}", None)
        return "unreachable", str(exc), None
    return "error", str(exc), None


def _first_byte(sock: Any, payload: bytes | None, timeout: float) -> tuple[float | None, str | None]:
    """``(seconds, None)`` to the first octet, or ``(None, why not)``."""
    sock.settimeout(max(timeout, 0.001))
    start = time.monotonic()
    try:
        if payload:
            sock.sendall(payload)
        data = sock.recv(1)
    except TimeoutError:
        return None, f"the target sent nothing within {timeout:.1f} s"
    except OSError as exc:
        return None, f"the tunnel failed after the handshake: {exc}"
    if not data:
        return None, "the target closed the connection without sending anything"
    return time.monotonic() - start, None


def check_proxy(
    proxy: ProxyURL,
    host: str,
    port: int,
    *,
    timeout: float,
    payload: bytes | None = None,
    banner: bool = False,
) -> CheckResult:
    """Open a tunnel to *host*:*port* through *proxy* and report on it.

    Args:
        proxy: the proxy to check.
        host: the target's name or IP literal.
        port: the target's port.
        timeout: seconds for the TCP connect and handshake, and again for the
            first byte.
        payload: octets to send once connected; the first octet back is timed.
        banner: time the target's first octet without sending anything.

    Returns:
        a :class:`CheckResult`; this function raises nothing for proxy failures.
    """
    base = CheckResult(proxy=proxy.redacted(), protocol=proxy.scheme, ok=False, auth="unknown")
    try:
        tunnel = open_tunnel(host, port, proxy=proxy, timeout=timeout)
    except (ProxyError, LocalProtocolError, OSError) as exc:
        kind, diagnosis, code = _diagnose(exc, proxy, timeout)
        auth = base.auth
        if kind == "auth-refused":
            auth = "refused"
        elif kind == "target-refused":  # the refusal came after any authentication
            auth = "none" if proxy.credentials is None else "accepted"
        return attrs.evolve(base, auth=auth, error=kind, code=code, diagnosis=diagnosis)
    with tunnel:
        info = tunnel.info
        found = attrs.evolve(
            base,
            ok=True,
            auth="none" if proxy.credentials is None else "accepted",
            connect_ms=_ms(info.connect_time),
            handshake_ms=_ms(info.handshake_time),
            bound=None if info.bound is None else str(info.bound),
        )
        if payload is None and not banner:
            return found
        seconds, problem = _first_byte(tunnel.socket, payload, timeout)
    if seconds is None:
        return attrs.evolve(found, ok=False, error="no-first-byte", diagnosis=problem)
    return attrs.evolve(found, first_byte_ms=_ms(seconds))


def run_checks(
    urls: Sequence[str],
    target: str,
    *,
    timeout: float = 10.0,
    as_json: bool = False,
    send: str | None = None,
    banner: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Check every URL in order, print one line each; return the exit status (0, 1 or 2).

    Args:
        urls: proxy URLs.
        target: ``host:port`` or ``[v6]:port`` to tunnel to.
        timeout: seconds per proxy for connect + handshake (and for the first byte).
        as_json: print one JSON object per line instead of text.
        send: ``--send`` text (see :func:`parse_payload`).
        banner: wait for the target to speak first.
        out: where results go (default stdout).
        err: where usage errors go (default stderr).
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        if not urls:
            raise ValueError("give at least one proxy URL")
        if not timeout > 0:
            raise ValueError(f"--timeout must be > 0, not {timeout}")
        if send is not None and banner:
            raise ValueError("use either --send or --banner, not both")
        payload = None if send is None else parse_payload(send)
        host, port = listen_address(target)
        proxies = [ProxyURL.parse(url) for url in urls]
    except (ValueError, LocalProtocolError) as exc:  # neither message can hold a password
        print(f"socks-sansio check: {exc}", file=err)
        return 2
    status = 0
    for proxy in proxies:
        result = check_proxy(proxy, host, port, timeout=timeout, payload=payload, banner=banner)
        print(result.as_json() if as_json else result.as_text(), file=out, flush=True)
        if not result.ok:
            status = 1
    return status

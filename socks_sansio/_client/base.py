"""What every client plan shares: the deadline, the step under way, the timings, the shared steps.

The plans (:mod:`.plan`, :mod:`.associate`) are generators of operations; the
steps every one of them takes are here, written once: dial the first hop,
layer TLS, resolve a name for a scheme that resolves locally, run a hop's
handshake until its status moves on, and what an I/O error means at each.
"""


from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any, Final

from .._address import Address
from .._client_driver import ClientHandshake, HandshakeStatus, needs_local_resolution
from .._codes import Command
from .._errors import ProxyConnectionError, ProxyError, ProxyTimeoutError
from .._proxy_url import ProxyProtocol, ProxyURL
from .failover import Failures
from .hops import ConnectionInfo, Deadline, Hop, client_logger
from .operations import Dial, Operation, Receive, Resolve, Send, StartTLS

__all__ = ["ANY_ADDRESS", "Plan", "Steps"]

Steps = Generator[Operation, Any, Any]
"""What a plan's ``run()`` returns: a generator of operations (see the module docstring)."""

ANY_ADDRESS: Final = Address("0.0.0.0", 0)
"""The target a prepared connection is planned with (its last hop never asks for it)."""

_IN_PROGRESS: Final = HandshakeStatus.IN_PROGRESS
_BIND_LISTENING: Final = HandshakeStatus.BIND_LISTENING
_CONNECT: Final = Command.CONNECT
_SOCKS4: Final = ProxyProtocol.SOCKS4
_SOCKS5: Final = ProxyProtocol.SOCKS5

# What the plan is doing, for the time-out message.
_START, _DIAL, _TLS_PROXY, _TLS_TARGET, _HANDSHAKE, _RESOLVE, _PAUSE, _DATAGRAM = range(8)


def _detail(exc: BaseException) -> str:
    """An I/O error in words: its message, or its cause's (trio wraps socket errors), or its name."""
    text = str(exc)
    if not text and exc.__cause__ is not None:
        text = str(exc.__cause__)
    return text or type(exc).__name__


class Plan:
    """What every plan shares: the deadline, the step under way, the timings, the error mapping."""

    _exact_reads = True  # the runner's reads never exceed Receive.max_bytes: no tunnel octet is ever read

    __slots__ = (
        "_clock",
        "_debug",
        "_doing",
        "_failures",
        "_hop",
        "_io_errors",
        "_started",
        "_subject",
        "connect_time",
        "deadline",
        "handshake_time",
        "tls_time",
    )

    def __init__(
        self, timeout: float | None, io_errors: tuple[type[BaseException], ...], clock: Callable[[], float]
    ) -> None:
        self._clock = clock
        self._started = clock()
        self.deadline = Deadline(timeout, clock)
        self._io_errors = io_errors
        self._debug = client_logger.isEnabledFor(10)  # DEBUG: what to log is built only when it is logged
        self._doing = _START
        self._hop: Hop | None = None  # the proxy being talked to (None: the target, or nobody yet)
        self._subject: object = None  # what the step is about (an address, a name, a handshake)
        self._failures: Failures | None = None
        self.connect_time = self.handshake_time = self.tls_time = 0.0

    # -- for the runner ------------------------------------------------------------------

    def remaining(self) -> float | None:
        """Seconds left before the deadline (never negative); ``None`` without one."""
        return self.deadline.remaining()

    def timeout_error(self) -> ProxyTimeoutError:
        """What to raise when the deadline passed: the step under way, and every failover attempt in its notes."""
        error = self.deadline.expired_error(self._describe(), None if self._hop is None else self._hop.describe())
        failures = self._failures
        if failures is not None:
            failures.note(error)
            failures.annotate(error)
        return error

    # -- shared steps --------------------------------------------------------------------

    def _failure(self, exc: BaseException, what: str) -> BaseException:
        """What an I/O error during the step under way means.

        A time-out while a deadline is set is the deadline passing (the blocking
        runner sets each socket's time-out to what is left of it); an error with a
        proxy is the proxy's (:class:`~socks_sansio.ProxyConnectionError`, *what*
        and the error in words); one with the target itself (a direct dial, the
        target's TLS) is raised as it is. A new error has *exc* as its cause.
        A :class:`~socks_sansio.ProxyError` is already a verdict (the driver's,
        or a nested plan's: both proxy errors that are OSErrors reach here) and
        is returned unchanged.
        """
        if isinstance(exc, ProxyError):
            return exc
        hop = self._hop
        proxy = None if hop is None else hop.describe()
        error: BaseException
        if isinstance(exc, TimeoutError) and self.deadline.at is not None:
            error = self.deadline.expired_error(self._describe(), proxy)
        elif proxy is None:
            return exc
        else:
            error = ProxyConnectionError(f"{what}: {_detail(exc)}", proxy=proxy)
        error.__cause__ = exc
        return error

    def _describe(self) -> str:
        doing, subject = self._doing, self._subject
        if doing == _DIAL:
            return f"the TCP connect to {subject}"
        if doing == _TLS_PROXY:
            return "the TLS handshake with the proxy"
        if doing == _TLS_TARGET:
            return f"the TLS handshake with {subject}"
        if doing == _HANDSHAKE and isinstance(subject, ClientHandshake):
            name = subject.proxy.protocol.name
            if subject.status is _BIND_LISTENING:
                return f"the wait for the BIND peer ({name})"
            if subject.target is None:
                return f"the {name} handshake (preparing a connection)"
            return f"the {name} handshake asking for {subject.command.name} {subject.target}"
        if doing == _RESOLVE:
            return f"resolving {subject}"
        if doing == _PAUSE:
            return "the pause between failover attempts"
        if doing == _DATAGRAM:
            return "binding the UDP socket"
        return "the call"

    def _dial(self, address: Address, hop: Hop | None) -> Steps:
        """TCP to the first proxy (or the target): a failure to reach a proxy is the proxy's."""
        self._doing, self._subject, self._hop = _DIAL, address, hop
        if self._debug:
            client_logger.debug("%s: TCP connect to %s", hop.describe() if hop else "direct", address)
        started = self._clock()
        try:
            yield Dial(address)
        except self._io_errors as exc:
            raise self._failure(exc, "cannot connect to the proxy")  # noqa: B904 - its cause is set
        self.connect_time += self._clock() - started

    def _tls(self, server_hostname: str, hop: Hop | None) -> Steps:
        """TLS to an ``https://`` proxy (*hop*) or to the target (``None``)."""
        self._doing = _TLS_PROXY if hop is not None else _TLS_TARGET
        self._subject, self._hop = server_hostname, hop
        if self._debug:
            client_logger.debug("TLS handshake with %s", hop.describe() if hop else server_hostname)
        started = self._clock()
        try:
            yield StartTLS(server_hostname, to_proxy=hop is not None)
        except self._io_errors as exc:
            raise self._failure(exc, "the TLS handshake with the proxy failed")  # noqa: B904 - its cause is set
        self.tls_time += self._clock() - started

    def _resolve(self, proxy: ProxyURL, target: Address) -> Generator[Operation, Any, Address]:
        """*target* as *proxy* must see it: resolved here for ``socks5://`` and ``socks4://`` (IPv4 only)."""
        if not needs_local_resolution(proxy, target):
            return target
        self._doing, self._subject = _RESOLVE, target.host_str
        resolved: Address = yield Resolve(target.host_str, target.port, family=4 if proxy.protocol is _SOCKS4 else 0)
        if self._debug:
            client_logger.debug("%s resolves locally: %s is %s", proxy.redacted(), target.host_str, resolved.host_str)
        return resolved

    def _exchange(self, handshake: ClientHandshake, hop: Hop) -> Steps:
        """The driver's loop, until its status moves on: the reply, BIND's first (then second) reply, READY."""
        self._doing, self._subject, self._hop = _HANDSHAKE, handshake, hop
        debug = self._debug
        if debug:
            client_logger.debug("%s: %s", hop.describe(), self._describe())
        started = self._clock()
        start = handshake.status
        try:
            data = handshake.data_to_send()
            if data:
                yield Send(data)
            while handshake.status is start and (start is _IN_PROGRESS or start is _BIND_LISTENING):
                received = yield Receive(handshake.read_size_hint)
                handshake.receive_data(received)
                data = handshake.data_to_send()
                if data:
                    yield Send(data)
        except self._io_errors as exc:
            raise self._failure(exc, f"{self._describe()} failed")  # noqa: B904 - its cause is set
        self.handshake_time += self._clock() - started
        if self._exact_reads and handshake.trailing_data[0]:  # cannot happen: no read exceeded read_size_hint
            raise RuntimeError("socks-sansio bug: a handshake read tunnel octets despite read_size_hint")
        if debug:
            client_logger.debug("%s: %s (bound %s)", hop.describe(), handshake.status.name, handshake.bound)

    def _info(self, proxies: Sequence[ProxyURL], target: Address, handshake: ClientHandshake | None, tls: bool) -> (
        ConnectionInfo
    ):
        return ConnectionInfo(
            proxies=tuple(p.redacted() for p in proxies),
            target=target,
            protocol=proxies[-1].protocol if proxies else None,
            bound=handshake.bound if handshake is not None else None,
            tls=tls,
            connect_time=self.connect_time,
            handshake_time=self.handshake_time,
            tls_time=self.tls_time,
            total_time=self._clock() - self._started,
        )



"""The client plans: a connection through proxies, step by step, with no I/O.

Strategy. Each plan's :meth:`run` is a generator of the operations of
:mod:`.operations`. A runner (``socks_sansio.adapters``: blocking sockets,
asyncio, trio) sends the result of each operation back in, or throws in the
exception it raised, and does nothing else::

    steps = plan.run()
    result = error = None
    while True:
        try:
            operation = steps.send(result) if error is None else steps.throw(error)
        except StopIteration:
            break                                  # done: the connection is ready
        result, error = perform(operation), None   # or: error = the exception it raised

The plan holds every decision, so each is written once:

* **which proxies**: the candidates of a failover (:mod:`.failover`), in rounds
  with backoff pauses (:class:`Sleep`), every failed attempt noted on the error
  finally raised; a failed attempt's connection is closed (:class:`Close`);
* **each hop** of a chain: TLS first for an ``https://`` proxy, then its
  :class:`~socks_sansio.ClientHandshake`, which asks for the next hop (or the
  target); a name is resolved here first when the scheme says so
  (``socks5://``, ``socks4://``; SOCKS4 carries IPv4 only), and every request
  that can be checked before any I/O is (an IPv6 target through SOCKS4 costs
  no TCP connect);
* **the handshake loop**: send what the driver has, read at most
  ``read_size_hint`` octets (so the first tunnel octets stay unread), until
  the reply; then TLS to the target when asked;
* **what an error means**: an I/O error (``io_errors``, the runner's exception
  classes) while talking to a proxy becomes
  :class:`~socks_sansio.ProxyConnectionError` naming the proxy without its
  password and the step; an error with the target itself (a direct dial, its
  TLS, a name that does not resolve) is raised as it is;
* **one deadline** (:class:`~.hops.Deadline` on the runner's clock) for the
  whole call: the runner enforces it its own way (a socket time-out before each
  operation, one cancel scope around the call) and, when it passes, raises
  :meth:`timeout_error`, which names the step under way and every earlier
  failover attempt;
* **the report**: timings per part and :meth:`info`.

The runner owns the connection: it opens it on :class:`Dial`, layers TLS on
:class:`StartTLS`, closes it on :class:`Close` and whenever the plan raises.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any, final

from .._address import Address
from .._client_driver import ClientHandshake, needs_local_resolution
from .._codes import Command
from .._errors import LocalProtocolError, ProxyConnectionError
from .._proxy_url import ProxyProtocol, ProxyURL
from .base import _BIND_LISTENING, _CONNECT, _PAUSE, ANY_ADDRESS, Plan
from .failover import Failures, RetryPolicy, candidates_for, plan_failover
from .hops import ConnectionInfo, Hop, ProxySpec, advertised, client_logger, plan_hops, to_proxies
from .hops import proxies_from_environment as _from_environment
from .operations import CLOSE, PEER_ADDRESS, Operation, Sleep

__all__ = ["ConnectPlan", "HandshakePlan"]


@final
class ConnectPlan(Plan):
    """Connect to a target through a proxy, a chain, or one of several (failover); or prepare a pooled connection.

    Build it with :meth:`for_call` from a call's arguments. :meth:`run` returns
    the last hop's :class:`~socks_sansio.ClientHandshake` (``None`` when
    connected directly); afterwards :attr:`chain` is the chain that worked and
    :meth:`info` the report.

    Args:
        target: where the tunnel leads (BIND: the peer expected to connect).
        candidates: the chains to try, in order (``[()]``: directly).
        retry: the failover policy; ``None`` tries the one candidate once and
            raises its error as it is.
        command: what the last hop asks for: CONNECT or BIND.
        timeout: one deadline, in seconds, for the whole call.
        tls_hostname: run TLS to the target over the tunnel, checking this name
            (``None``: no TLS to the target).
        pipelined: SOCKS5 hops send greeting, credentials and request in one write.
        io_errors: the exception classes the runner's I/O raises.
        clock: the runner's monotonic clock.
        prepare: stop the last hop before its request (status ``READY``): a
            connection for a pool; *target* is unused.
        prepared: a pooled connection's last-hop handshake, in status ``READY``
            on a connection the runner already holds: ask it for *target*, and
            if that connection turns out broken (:attr:`prepared_lost`), close
            it and connect cold through the first candidate.
    """

    __slots__ = (
        "_candidates",
        "_command",
        "_pipelined",
        "_prepare",
        "_prepared",
        "_retry",
        "_tls_hostname",
        "bind_address",
        "chain",
        "handshake",
        "prepared_lost",
        "target",
    )

    def __init__(
        self,
        target: Address,
        candidates: Sequence[tuple[ProxyURL, ...]],
        *,
        retry: RetryPolicy | None = None,
        command: Command = Command.CONNECT,
        timeout: float | None = None,
        tls_hostname: str | None = None,
        pipelined: bool = False,
        io_errors: tuple[type[BaseException], ...] = (OSError,),
        clock: Callable[[], float] = time.monotonic,
        prepare: bool = False,
        prepared: ClientHandshake | None = None,
    ) -> None:
        super().__init__(timeout, io_errors, clock)
        if not candidates:
            raise ValueError("a ConnectPlan needs at least one candidate chain")
        if command is not _CONNECT and command is not Command.BIND:
            raise LocalProtocolError(f"a ConnectPlan does CONNECT or BIND, not {command.name}")
        self.target = target
        self._candidates = candidates
        self._retry = retry
        self._failures = None if retry is None else Failures(retry)
        self._command = command
        self._tls_hostname = tls_hostname
        self._pipelined = pipelined
        self._prepare = prepare
        self._prepared = prepared
        self.chain: tuple[ProxyURL, ...] = candidates[0]
        self.handshake: ClientHandshake | None = None
        self.bind_address: Address | None = None
        """BIND: where the proxy listens, an unspecified reply address replaced by the proxy's (set by :meth:`run`)."""
        self.prepared_lost = False

    @classmethod
    def for_call(
        cls,
        host: str | bytes,
        port: int,
        *,
        proxy: ProxySpec | Sequence[ProxySpec] | None,
        failover: Sequence[ProxySpec | Sequence[ProxySpec]] | None = None,
        retry: RetryPolicy | None = None,
        trust_env: bool = False,
        environ: Mapping[str, str] | None = None,
        tls: bool = False,
        server_hostname: str | None = None,
        command: Command = Command.CONNECT,
        timeout: float | None = None,
        pipelined: bool = False,
        io_errors: tuple[type[BaseException], ...] = (OSError,),
        clock: Callable[[], float] = time.monotonic,
        prepared: ClientHandshake | None = None,
    ) -> ConnectPlan:
        """The plan of one ``connect(host, port, ...)`` call, from the arguments every backend takes.

        Args:
            host, port: the target (a name, or an IPv4 / IPv6 literal).
            proxy: a proxy, or a chain; ``None``: directly (or *environ*'s, with *trust_env*).
            failover, retry: the candidates to try instead of *proxy*, and the policy
                (``retry`` alone retries the one *proxy*).
            trust_env, environ: with no *proxy*, take the one *environ* names
                (``ALL_PROXY``, ``HTTPS_PROXY`` with *tls*, ``HTTP_PROXY``, ``NO_PROXY``).
            tls, server_hostname: TLS to the target, checking *server_hostname* (default *host*).
            command, timeout, pipelined, io_errors, clock, prepared: as for the constructor.

        Raises:
            TypeError: both *proxy* and *failover*, or a malformed *failover*.
            ValueError: an empty *failover* or chain, a negative *timeout*.
            LocalProtocolError: a bad proxy URL or target, or *server_hostname* without *tls*.
        """
        if server_hostname is not None and not tls:
            raise LocalProtocolError("server_hostname is only meaningful with TLS to the target (ssl=)")
        name = host.decode("ascii", "backslashreplace") if isinstance(host, bytes) else host
        target = Address(name, port)

        def proxies() -> list[ProxyURL]:
            if proxy is None and trust_env and environ is not None:
                return _from_environment("https" if tls else "http", name, port, environ)
            return to_proxies(proxy)

        if failover is None and retry is None:
            candidates: Sequence[tuple[ProxyURL, ...]] = (tuple(proxies()),)
        else:
            candidates = candidates_for(proxy, failover, proxies)
            retry = retry or RetryPolicy()
        return cls(
            target, candidates, retry=retry, command=command, timeout=timeout,
            tls_hostname=(server_hostname or name) if tls else None, pipelined=pipelined, io_errors=io_errors,
            clock=clock, prepared=prepared,
        )  # fmt: skip

    @classmethod
    def for_bind(
        cls,
        proxy: ProxySpec | Sequence[ProxySpec],
        expected_peer: Address,
        *,
        timeout: float | None = None,
        pipelined: bool = False,
        io_errors: tuple[type[BaseException], ...] = (OSError,),
        clock: Callable[[], float] = time.monotonic,
    ) -> ConnectPlan:
        """The plan of an ``open_bind()`` call: up to BIND's first reply, through *proxy* (or a chain).

        Raises:
            LocalProtocolError: no proxy, or an HTTP proxy last (HTTP has no BIND).
        """
        proxies = to_proxies(proxy)
        if not proxies or proxies[-1].protocol is ProxyProtocol.HTTP:
            raise LocalProtocolError("BIND needs a SOCKS5 or SOCKS4 proxy as the last hop (HTTP proxies cannot BIND)")
        return cls(
            expected_peer, (tuple(proxies),), command=Command.BIND, timeout=timeout, pipelined=pipelined,
            io_errors=io_errors, clock=clock,
        )  # fmt: skip

    @classmethod
    def preparing(
        cls,
        chain: Sequence[ProxyURL],
        *,
        timeout: float | None = None,
        io_errors: tuple[type[BaseException], ...] = (OSError,),
        clock: Callable[[], float] = time.monotonic,
    ) -> ConnectPlan:
        """The plan of a pooled connection: through *chain* up to the last hop's request (status ``READY``)."""
        return cls(ANY_ADDRESS, (tuple(chain),), timeout=timeout, io_errors=io_errors, clock=clock, prepare=True)

    def run(self) -> Generator[Operation, Any, ClientHandshake | None]:
        """The operations of the call (see the module docstring); returns the last hop's handshake.

        Raises:
            ProxyError: a proxy refused, broke its protocol or could not be reached.
            LocalProtocolError: an impossible request (an IPv6 target through SOCKS4...).
            Exception: what the runner threw in about the target itself (a direct
                dial, its TLS, a local name lookup), as it was.
        """
        if self._prepared is None and self._failures is None:
            return self._attempt(self._candidates[0])  # one chain, once: no frame between the runner and the steps
        return self._run()

    def _run(self) -> Generator[Operation, Any, ClientHandshake | None]:
        """:meth:`run` with a prepared connection to ask first, or failover."""
        prepared = self._prepared
        if prepared is not None:
            done = yield from self._ask_prepared(prepared)
            if done:
                return prepared
        failures = self._failures
        if failures is None:
            return (yield from self._attempt(self._candidates[0]))
        assert self._retry is not None
        for step in plan_failover(self._candidates, self._retry, self.deadline.remaining):
            if step.delay:
                self._doing, self._hop = _PAUSE, None
                if self._debug:
                    client_logger.debug("failover: waiting %.3f s before round %d", step.delay, step.round)
                yield Sleep(step.delay)
            if self._debug:
                client_logger.debug("failover attempt %d (round %d) via %s", step.number, step.round, step.describe())
            self.connect_time = self.handshake_time = self.tls_time = 0.0  # the report covers the last attempt
            failures.begin(step)
            try:
                return (yield from self._attempt(step.chain))
            except Exception as exc:
                if self._debug:
                    client_logger.debug("failover attempt %d failed: %s: %s", step.number, type(exc).__name__, exc)
                if not failures.record(step, exc):
                    raise
            yield CLOSE
        raise failures.final_error()

    def _attempt(self, chain: tuple[ProxyURL, ...]) -> Generator[Operation, Any, ClientHandshake | None]:
        """One connection through *chain* (direct when empty), up to the tunnel (and TLS to the target)."""
        self.chain = chain
        hops = plan_hops(chain, self.target)
        last = len(hops) - 1
        command, pipelined, prepare = self._command, self._pipelined, self._prepare
        # An impossible request fails before any I/O: every handshake whose target
        # needs no local lookup is built now (and used as it is, below).
        built = [
            None
            if (prepare and i == last) or needs_local_resolution(hop.proxy, hop.target)
            else ClientHandshake(hop.proxy, hop.target, command=command if i == last else _CONNECT, pipelined=pipelined)
            for i, hop in enumerate(hops)
        ]
        yield from self._dial(hops[0].proxy.address if hops else self.target, hops[0] if hops else None)
        handshake: ClientHandshake | None = None
        for i, hop in enumerate(hops):
            if hop.proxy.tls:
                yield from self._tls(hop.proxy.address.host_str, hop)
            handshake = built[i]
            if handshake is None:
                if prepare and i == last:
                    handshake = ClientHandshake(hop.proxy, None)
                else:
                    asked = yield from self._resolve(hop.proxy, hop.target)
                    handshake = ClientHandshake(
                        hop.proxy, asked, command=command if i == last else _CONNECT, pipelined=pipelined
                    )
            yield from self._exchange(handshake, hop)
        self.handshake = handshake
        if handshake is not None and handshake.status is _BIND_LISTENING:
            # One proxy: the IP we are connected to; a chain: the last proxy's address as given.
            proxy_host = (yield PEER_ADDRESS) if len(chain) == 1 else chain[-1].address.host
            assert handshake.bound is not None
            self.bind_address = advertised(handshake.bound, proxy_host)
        if not prepare and self._tls_hostname is not None:
            yield from self._tls(self._tls_hostname, None)
        if self._debug:
            client_logger.debug("connected to %s via %d proxies", self.target, len(chain))
        return handshake

    def _ask_prepared(self, handshake: ClientHandshake) -> Generator[Operation, Any, bool]:
        """Ask a prepared connection for the target: False when it turned out broken (then closed)."""
        hop = Hop(handshake.proxy, self.target)
        self._hop = hop
        asked = yield from self._resolve(handshake.proxy, self.target)  # a name that does not resolve: raised
        handshake.request(asked, command=self._command)
        try:
            yield from self._exchange(handshake, hop)
        except ProxyConnectionError as exc:
            client_logger.debug("pool: the prepared connection broke (%s); connecting cold", exc)
            self.prepared_lost = True
            yield CLOSE
            self.connect_time = self.handshake_time = self.tls_time = 0.0
            return False
        self.handshake = handshake
        if self._tls_hostname is not None:
            yield from self._tls(self._tls_hostname, None)
        return True

    def info(self, *, tls: bool | None = None) -> ConnectionInfo:
        """What the call went through: the chain that worked, the bound address, the timings so far."""
        with_tls = self._tls_hostname is not None if tls is None else tls
        return self._info(self.chain, self.target, self.handshake, with_tls)


@final
class HandshakePlan(Plan):
    """One hop's handshake over a connection the runner already has, until its status moves on.

    That is the tunnel, or BIND's first reply (``BIND_LISTENING``; run a new
    plan with the same handshake to wait for the second reply, the peer), or
    ``READY`` for a prepared handshake. BIND's listeners use it for ``accept()``;
    it also serves a connection the application opened itself.

    Args:
        handshake: the hop's driver, fresh or where an earlier plan left it.
        timeout, io_errors, clock: as for :class:`ConnectPlan`.
    """

    __slots__ = ("_handshake",)

    _exact_reads = False  # an application's stream may read ahead: its octets are the handshake's trailing_data

    def __init__(
        self,
        handshake: ClientHandshake,
        *,
        timeout: float | None = None,
        io_errors: tuple[type[BaseException], ...] = (OSError,),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(timeout, io_errors, clock)
        self._handshake = handshake

    def run(self) -> Generator[Operation, Any, ClientHandshake]:
        """Send and read until the handshake's status changes (see the class docstring); returns it.

        Raises:
            ProxyRefusedError: the reply is a failure (for BIND, either reply).
            ProxyConnectionError: the connection broke or closed first.
        """
        handshake = self._handshake
        yield from self._exchange(handshake, Hop(handshake.proxy, handshake.target or ANY_ADDRESS))
        return handshake



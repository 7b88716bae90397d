"""One client of the proxy server, from its first octet to the relay: every decision, no I/O.

Strategy. :meth:`ServerSession.run` is a generator of the operations of
:mod:`.operations`, driven by a runner (``socks_sansio.adapters.server``: the
asyncio server from protocol callbacks, the trio server from a task) exactly
as a client plan is: the runner performs each operation and sends the result
back in, or throws in the exception it raised (a ``TimeoutError`` when the
operation's time bound passed). The generator returns what happens next:

* an :class:`Outcome`: the connection ends now (a refusal was sent if one is due);
* a :class:`StartRelay`: the tunnel is up (the success reply was sent after the dial
  succeeded, never before); relay it, delivering ``early`` first;
* a :class:`StartUdpRelay`: UDP ASSOCIATE is up; relay datagrams with its
  :class:`~.udp.UdpRelayPolicy` while the client's connection stays open.

In order, for each connection: the client address against the access rules;
the handshake of whichever protocol the first octets speak (the core's
:class:`~socks_sansio.ServerHandshake`), within ``negotiation_timeout``, with
credentials checked off the event loop; the tunnel rate limit; then the
request: an upstream route (the rules checked on the target as sent), or
a lookup (the rules checked on the name and on every address it resolves to:
the SSRF guard) and a dial, or BIND's listener and peer, or UDP's socket; each
failure mapped to the reply every protocol can express (:class:`Failure`).

Whatever ends a connection, the runner calls :meth:`ServerSession.finish`
once with its outcome: the counters, the metrics and the one log line are
written there. Byte counts come from :meth:`ServerSession.moved`, which also
charges the byte rate limits and says how long a relay direction must pause.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Callable, Generator
from typing import Any, Final, final

from .._address import Address
from .._codes import Command
from .._errors import LocalProtocolError, ProxyError, RemoteProtocolError
from .._server_driver import ClientClosed, CredentialsReceived, Failure, ServerHandshake, TunnelRequested
from .._util import NEED_DATA, PAUSED
from .config import ServerConfig
from .operations import (
    AwaitPeer,
    CheckCredentials,
    Dial,
    DialUpstream,
    IPAddress,
    Listen,
    OpenDatagram,
    Receive,
    Resolve,
    Send,
    ServerOperation,
    SockAddr,
)
from .outcome import MetricsSink, Outcome, OutcomeKind, ServerStats, failure_for, format_tunnel, upstream_failure
from .ratelimit import RateLimits
from .udp import UdpRelayPolicy

__all__ = ["ServerSession", "StartRelay", "StartUdpRelay", "server_logger"]

server_logger: Final = logging.getLogger("socks_sansio.server")
"""The one line per connection is logged here at INFO level (never a password)."""

_CONNECT: Final = Command.CONNECT
_BIND: Final = Command.BIND
_DENIED: Final = OutcomeKind.DENIED


@final
class StartRelay:
    """The tunnel is up: relay it, sending ``early`` to the target first and passing ``client_eof`` on.

    Attributes:
        early: what the client sent after its request, read with the handshake.
        client_eof: whether the client's EOF was read with them.
    """

    __slots__ = ("client_eof", "early")

    def __init__(self, early: bytes, client_eof: bool) -> None:
        self.early = early
        self.client_eof = client_eof


@final
class StartUdpRelay:
    """UDP ASSOCIATE is up: relay datagrams as ``policy`` decides until the client's connection ends."""

    __slots__ = ("policy",)

    def __init__(self, policy: UdpRelayPolicy) -> None:
        self.policy = policy


Steps = Generator[ServerOperation, Any, "Outcome | StartRelay | StartUdpRelay"]


def _ip(host: str) -> IPAddress:
    return ipaddress.ip_address(host.partition("%")[0])


@final
class ServerSession:
    """Everything the server decides about one accepted client connection.

    Args:
        config: the server's settings.
        client: the client's address, ``(host, port)`` as the accept call gave it.
        stats: the server's counters (``active`` counts this session until :meth:`finish`).
        limiter: the server's rate limits (one for the whole server: it holds the buckets).
        metrics: where the metrics go.
        clock: the runner's monotonic clock (deadlines are on it).
    """

    __slots__ = (
        "_clock",
        "_limiter",
        "_metrics",
        "_stats",
        "client",
        "client_ip",
        "config",
        "down",
        "finished",
        "handshake",
        "opened",
        "protocol",
        "request",
        "started",
        "up",
        "user",
        "username",
    )

    def __init__(
        self,
        config: ServerConfig,
        client: SockAddr,
        *,
        stats: ServerStats,
        limiter: RateLimits,
        metrics: MetricsSink,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.client = client
        self.client_ip: IPAddress = _ip(client[0])
        self._stats = stats
        self._limiter = limiter
        self._metrics = metrics
        self._clock = clock
        self.started = clock()
        stats.active += 1
        self.handshake: ServerHandshake | None = config.handshake()
        self.request: TunnelRequested | None = None
        self.protocol = None if self.handshake is None else self.handshake.protocol
        self.username: bytes | None = None
        self.user: bytes | None = None  # whom the rate limits count this connection against
        self.up = self.down = 0
        self.opened = False  # counted as an active tunnel in the metrics, until finish()
        self.finished = False

    @property
    def negotiation_deadline(self) -> float:
        """When the handshake (TLS included) must be done, on the session's clock."""
        return self.started + self.config.negotiation_timeout

    # -- the decisions ------------------------------------------------------------------

    def run(self) -> Steps:
        """The operations for this client (see the module docstring); returns what happens next."""
        if self._stats.active > self.config.max_clients:
            return Outcome(OutcomeKind.BUSY)
        if not self.config.policy.client_allowed(self.client_ip):
            return Outcome(OutcomeKind.CLIENT_NOT_ALLOWED)
        request = yield from self._negotiate()
        if isinstance(request, Outcome):
            return request
        self.request = request
        now = self._clock()
        self._metrics.handshake_done(now - self.started)
        handshake = self.handshake
        assert handshake is not None
        self.protocol, self.username = handshake.protocol, handshake.username
        self.user = self.config.rate_limited_user(handshake)
        wait = self._limiter.admit_tunnel(self.user, self.client_ip, now)
        if wait is not None:
            self._metrics.rate_limited("tunnels")
            return (yield from self._refuse(Failure.RATE_LIMITED, Outcome(OutcomeKind.RATE_LIMITED), math.ceil(wait)))
        if request.command is _CONNECT:
            return (yield from self._connect(request.target))
        if request.command is _BIND:
            return (yield from self._bind(request.target))
        return (yield from self._associate(request.target))

    def _negotiate(self) -> Generator[ServerOperation, Any, TunnelRequested | Outcome]:
        handshake = self.handshake
        assert handshake is not None
        deadline = self.negotiation_deadline
        receive = Receive(deadline)
        while True:
            try:
                event = handshake.next_event()
            except RemoteProtocolError as exc:
                out = handshake.data_to_send()  # the refusal the protocol prescribes, if any
                if out:
                    yield Send(out, quiet=True)
                return Outcome(OutcomeKind.PROTOCOL_ERROR, exc.message)
            out = handshake.data_to_send()
            if out:
                yield Send(out)
            if event is NEED_DATA or event is PAUSED:
                if handshake.must_close:
                    return Outcome(OutcomeKind.REFUSED)
                try:
                    handshake.receive_data((yield receive))
                except TimeoutError:
                    return Outcome(OutcomeKind.NEGOTIATION_TIMEOUT)
                continue
            kind = type(event)
            if kind is TunnelRequested:
                assert isinstance(event, TunnelRequested)
                return event
            if kind is CredentialsReceived:
                assert isinstance(event, CredentialsReceived)
                ok = True
                if self.config.users is not None:
                    try:
                        ok = yield CheckCredentials(event.username, event.password, deadline)
                    except TimeoutError:
                        return Outcome(OutcomeKind.NEGOTIATION_TIMEOUT)
                handshake.accept_credentials(ok)
                yield Send(handshake.data_to_send())
                if not ok:
                    self._metrics.auth_failed()
                if handshake.must_close:
                    return Outcome(OutcomeKind.AUTH_FAILED)
                continue
            assert kind is ClientClosed
            return Outcome(OutcomeKind.CLOSED_DURING_NEGOTIATION)

    def _refuse(
        self, failure: Failure, outcome: Outcome, retry_after: float | None = None
    ) -> Generator[ServerOperation, Any, Outcome]:
        """Send the refusal for *failure*; the connection ends with *outcome*."""
        handshake = self.handshake
        assert handshake is not None
        handshake.reject(failure, retry_after=retry_after)
        yield Send(handshake.data_to_send(), quiet=True)
        return outcome

    def _reply(self, address: SockAddr, *, bind_peer: bool = False) -> Generator[ServerOperation, Any, None]:
        """The success reply naming *address*; BIND's second one with *bind_peer*."""
        handshake = self.handshake
        assert handshake is not None
        bound = Address(address[0], address[1])
        if bind_peer:
            handshake.bind_connected(bound)
        else:
            handshake.accept(bound)
        yield Send(handshake.data_to_send())

    def addresses(self, target: Address) -> Generator[Resolve, Any, tuple[tuple[IPAddress, int], ...] | Outcome]:
        """Every address *target* may be dialled at (resolving a name), or why not.

        The rules are checked on the target as sent, then on every address a name
        resolves to (the SSRF guard: a name for 127.0.0.1 is refused like the IP).
        Used for TCP dials and for UDP datagrams alike.
        """
        policy, client_ip = self.config.policy, self.client_ip
        denied = policy.check(client_ip, target)
        if denied:
            return Outcome(_DENIED, denied)
        host = target.host
        if isinstance(host, bytes):
            try:
                found: list[IPAddress] = yield Resolve(target.host_str, target.port, self.config.connect_timeout)
            except (OSError, UnicodeError, TimeoutError) as exc:  # UnicodeError: a name the IDNA codec refuses
                return Outcome(OutcomeKind.RESOLVE_FAILED, type(exc).__name__)
        else:
            found = [host]
        allowed = []
        for address in dict.fromkeys(found):
            denied = policy.check(client_ip, target, address)
            if denied:
                return Outcome(_DENIED, denied)
            allowed.append((address, target.port))
        return tuple(allowed)

    def _connect(self, target: Address) -> Steps:
        config = self.config
        timeout = config.connect_timeout
        chain = config.route(target)
        if chain:
            denied = config.policy.check(self.client_ip, target)  # the name as sent: the upstream resolves it
            if denied:
                return (yield from self._refuse(Failure.NOT_ALLOWED, Outcome(_DENIED, denied)))
            try:
                local = yield DialUpstream(target, chain, timeout)
            except ProxyError as exc:
                failure = upstream_failure(exc)
                detail = f"{failure.name.lower()} ({type(exc).__name__})"
                return (yield from self._refuse(failure, Outcome(OutcomeKind.UPSTREAM_FAILED, detail)))
            except (LocalProtocolError, OSError) as exc:  # e.g. an IPv6 target through a SOCKS4 upstream
                outcome = Outcome(OutcomeKind.UPSTREAM_FAILED, type(exc).__name__)
                return (yield from self._refuse(Failure.GENERAL_FAILURE, outcome))
        else:
            addresses = yield from self.addresses(target)
            if isinstance(addresses, Outcome):
                failure = Failure.NOT_ALLOWED if addresses.kind is _DENIED else Failure.HOST_UNREACHABLE
                return (yield from self._refuse(failure, addresses))
            try:
                local = yield Dial(addresses, timeout)
            except (OSError, TimeoutError) as exc:
                failure = failure_for(exc)
                return (yield from self._refuse(failure, Outcome(OutcomeKind.DIAL_FAILED, failure.name.lower())))
        yield from self._reply(local)
        return self._relay()

    def _bind(self, peer: Address) -> Steps:
        config = self.config
        denied = config.policy.check(self.client_ip, peer)
        if denied:
            return (yield from self._refuse(Failure.NOT_ALLOWED, Outcome(_DENIED, denied)))
        if config.route(peer):
            return (yield from self._refuse(Failure.COMMAND_NOT_SUPPORTED, Outcome(OutcomeKind.BIND_UNSUPPORTED)))
        try:
            bound = yield Listen()
        except OSError as exc:
            outcome = Outcome(OutcomeKind.BIND_FAILED, type(exc).__name__)
            return (yield from self._refuse(Failure.GENERAL_FAILURE, outcome))
        yield from self._reply(bound)
        try:
            arrived = yield AwaitPeer(config.bind_timeout)
        except TimeoutError:
            return (yield from self._refuse(Failure.TIMED_OUT, Outcome(OutcomeKind.BIND_NO_PEER)))
        if arrived is None:
            return Outcome(OutcomeKind.BIND_CLIENT_LEFT)
        yield from self._reply(arrived, bind_peer=True)
        return self._relay()

    def _associate(self, source: Address) -> Steps:
        if not self.config.udp_allowed:
            return (yield from self._refuse(Failure.COMMAND_NOT_SUPPORTED, Outcome(OutcomeKind.UDP_UNSUPPORTED)))
        try:
            bound = yield OpenDatagram()
        except OSError as exc:
            outcome = Outcome(OutcomeKind.UDP_FAILED, type(exc).__name__)
            return (yield from self._refuse(Failure.GENERAL_FAILURE, outcome))
        yield from self._reply(bound)
        self._open()
        self.handshake = None  # a control connection's octets mean nothing from now on
        return StartUdpRelay(UdpRelayPolicy(self, source.port))

    def _relay(self) -> StartRelay:
        handshake = self.handshake
        assert handshake is not None
        early, eof = handshake.trailing_data
        self.handshake = None  # an idle tunnel holds no handshake and no buffer
        self._open()
        return StartRelay(early, eof)

    def _open(self) -> None:
        self.opened = True
        self._metrics.tunnel_opened(self.protocol)

    # -- what the runner reports ---------------------------------------------------------

    def moved(self, upward: bool, nbytes: int, now: float) -> float:
        """*nbytes* went through the tunnel (*upward*: client to target): count them, charge the byte limits.

        Returns:
            seconds this direction must stop reading (a byte rate limit's pause), 0 when none.
        """
        if upward:
            self.up += nbytes
        else:
            self.down += nbytes
        if not self.config.byte_limits:
            return 0.0
        pause = self._limiter.take_bytes(self.user, self.client_ip, nbytes, now)
        if pause > 0:
            self._metrics.rate_limited("bytes")
        return pause

    def admit_datagram(self, nbytes: int) -> bool:
        """Whether the byte limits let a datagram of *nbytes* payload octets through (a refusal is counted)."""
        if not self.config.byte_limits or self._limiter.admit_bytes(self.user, self.client_ip, nbytes, self._clock()):
            return True
        self._stats.failures["udp rate limited"] += 1
        self._metrics.rate_limited("bytes")
        return False

    def count(self, what: str) -> None:
        """Count one event of the relay that is not an outcome (``udp dropped``, ``udp malformed``...)."""
        self._stats.failures[what] += 1

    def finish(self, outcome: Outcome) -> None:
        """The connection ended with *outcome*: count it, report it, log its one line. Idempotent."""
        if self.finished:
            return
        self.finished = True
        stats, metrics = self._stats, self._metrics
        stats.active -= 1
        request = self.request
        handshake = self.handshake
        if handshake is not None and request is None:
            self.protocol, self.username = handshake.protocol, handshake.username
        protocol = self.protocol
        if outcome.kind is OutcomeKind.OK and protocol is not None:
            stats.tunnels[protocol.name.lower()] += 1
        else:
            stats.failures[outcome.kind.label] += 1
        stats.bytes_up += self.up
        stats.bytes_down += self.down
        if outcome.kind is _DENIED:
            metrics.denied()
        if self.opened:
            self.opened = False
            metrics.tunnel_closed(protocol)
        metrics.connection_closed(protocol, outcome, up=self.up, down=self.down)
        self.handshake = None
        if server_logger.isEnabledFor(logging.INFO):
            server_logger.info(
                format_tunnel(
                    client=f"{self.client[0]}:{self.client[1]}",
                    user=self.username,
                    protocol=protocol,
                    command=request.command.name if request else "-",
                    target=request.target if request else None,
                    up=self.up,
                    down=self.down,
                    duration=self._clock() - self.started,
                    outcome=outcome,
                )
            )


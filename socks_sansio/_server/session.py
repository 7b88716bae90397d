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

import logging
import math
import time
from collections.abc import Callable, Generator
from typing import Any, Final, final

from .._address import Address
from .._codes import Command
from .._errors import LocalProtocolError, ProxyError, RemoteProtocolError
from .._http_forward_reader import ForwardRequestReader
from .._proxy_url import ProxyProtocol
from .._server_driver import ClientClosed, CredentialsReceived, Failure, ServerHandshake, TunnelRequested
from .._util import NEED_DATA, PAUSED
from .balancer import looks_like_proxy_header, outgoing_header, read_proxy_header
from .config import ServerConfig
from .forward import ForwardProxy
from .operations import (
    AdmitShared,
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
    SendUpstream,
    ServerOperation,
    SockAddr,
)
from .outcome import (
    MetricsSink,
    Outcome,
    OutcomeKind,
    ServerStats,
    StartRelay,
    StartUdpRelay,
    failure_for,
    format_tunnel,
    upstream_failure,
)
from .policy import ip_literal
from .ratelimit import RateLimits
from .shared_limits import StoreOutage, tunnel_buckets
from .udp import UdpRelayPolicy

__all__ = ["ServerSession", "server_logger"]

server_logger: Final = logging.getLogger("socks_sansio.server")
"""The one line per connection is logged here at INFO level (never a password)."""

_CONNECT: Final = Command.CONNECT
_BIND: Final = Command.BIND
_DENIED: Final = OutcomeKind.DENIED
_HTTP: Final = ProxyProtocol.HTTP


def _speaks_http(first: bytes) -> bool:
    """Whether a client's first octet starts an HTTP method (RFC 9110 §9: uppercase tokens), as detection says."""
    return ord("A") <= first[0] <= ord("Z")


Steps = Generator[ServerOperation, Any, "Outcome | StartRelay | StartUdpRelay"]


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
        outage: the server's view of its shared rate store (with ``rate_store`` set).
    """

    __slots__ = (
        "_clock",
        "_command",
        "_forwarded",
        "_limiter",
        "_metrics",
        "_outage",
        "_pending_log",
        "_request_started",
        "_stats",
        "_target",
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
        outage: StoreOutage | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.client_ip: IPAddress = ip_literal(client[0].partition("%")[0])
        self._stats = stats
        self._limiter = limiter
        self._metrics = metrics
        self._clock = clock
        self._outage = outage if outage is not None else StoreOutage(config.rate_store_fail)
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
        self._pending_log = True  # finish() logs a line (False between forwarded requests)
        self._forwarded = 0  # HTTP requests forwarded so far (each logs its own line)
        self._command = "-"  # what a forwarded request's line names
        self._target: Address | None = None
        self._request_started = self.started

    @property
    def negotiation_deadline(self) -> float:
        """When the handshake (TLS included) must be done, on the session's clock."""
        return self.started + self.config.negotiation_timeout

    # -- the decisions ------------------------------------------------------------------

    def run(self) -> Steps:
        """The operations for this client (see the module docstring); returns what happens next."""
        config = self.config
        if self._stats.active > config.max_clients:
            return Outcome(OutcomeKind.BUSY)
        balancer = bool(config.proxy_protocol_from) and any(self.client_ip in n for n in config.proxy_protocol_from)
        first = b""
        if balancer:  # the balancer's header first: its source is the client from now on
            header = yield from read_proxy_header(self)
            if isinstance(header, Outcome):
                return header
            first = header
        if not config.policy.client_allowed(self.client_ip):
            return Outcome(OutcomeKind.CLIENT_NOT_ALLOWED)
        if not first:
            received = yield from self._first_octets()
            if isinstance(received, Outcome):
                return received
            first = received
        if not balancer and looks_like_proxy_header(first):
            return Outcome(
                OutcomeKind.PROTOCOL_ERROR, f"a PROXY header from {self.client[0]}, not a configured balancer"
            )
        if config.http_forward and _HTTP in config.protocols and _speaks_http(first):
            reader = ForwardRequestReader()  # a forward request, or a CONNECT (the reader hands it over)
            reader.receive_data(first)
            self.protocol = _HTTP
            return (yield from ForwardProxy(self, reader).run())
        assert self.handshake is not None
        self.handshake.receive_data(first)
        return (yield from self._tunnel(self.negotiation_deadline))

    def _first_octets(self) -> Generator[ServerOperation, Any, bytes | Outcome]:
        """The client's first octets: they tell a forward request or a PROXY header from the tunnel protocols."""
        try:
            first = yield Receive(self.negotiation_deadline)
        except TimeoutError:
            return Outcome(OutcomeKind.NEGOTIATION_TIMEOUT)
        if not first:
            return Outcome(OutcomeKind.CLOSED_DURING_NEGOTIATION)
        return bytes(first)

    def tunnel_after(self, data: bytes, eof: bool) -> Steps:
        """A CONNECT after forwarded requests: *data* (from the CONNECT on) goes to a fresh handshake."""
        self.handshake = handshake = self.config.handshake()
        handshake.receive_data(data)
        if eof:
            handshake.receive_data(b"")
        self._pending_log = True
        deadline = self._clock() + self.config.negotiation_timeout if self._forwarded else self.negotiation_deadline
        return (yield from self._tunnel(deadline))

    def _tunnel(self, deadline: float) -> Steps:
        """A tunnel protocol's handshake, then its request carried out."""
        request = yield from self._negotiate(deadline)
        if isinstance(request, Outcome):
            return request
        self.request = request
        now = self._clock()
        self._metrics.handshake_done(now - self.started)
        handshake = self.handshake
        assert handshake is not None
        self.protocol, self.username = handshake.protocol, handshake.username
        self.user = self.config.rate_limited_user(handshake)
        wait = yield from self.admitted()
        if isinstance(wait, Outcome):
            return (yield from self._refuse(Failure.RATE_LIMITED, wait))
        if wait is not None:
            return (yield from self._refuse(Failure.RATE_LIMITED, Outcome(OutcomeKind.RATE_LIMITED), math.ceil(wait)))
        if request.command is _CONNECT:
            return (yield from self._connect(request.target))
        if request.command is _BIND:
            return (yield from self._bind(request.target))
        return (yield from self._associate(request.target))

    def admitted(self) -> Generator[ServerOperation, Any, float | Outcome | None]:
        """Ask the tunnel rate limits for one more tunnel (or forwarded request).

        Returns ``None`` (admitted), the seconds to wait, or the Outcome of a
        refusal because the shared store is down and fails closed.
        """
        config = self.config
        if config.rate_store is None:
            limits = config.rate_limits
            if limits.tunnels_per_user is None and limits.tunnels_per_client is None:
                return None  # what the limiter would answer, without asking it
            wait = self._limiter.admit_tunnel(self.user, self.client_ip, self._clock())
        else:
            buckets = tunnel_buckets(config.rate_limits, self.user, self.client_ip)
            if not buckets:
                return None
            try:
                shared: float = yield AdmitShared(tuple(buckets), config.rate_store_timeout)
            except OSError as exc:
                return self._store_failed(exc)
            if self._outage.recovered():
                server_logger.warning("rate store: answering again; tunnel limits are shared again")
            wait = shared or None
        if wait is not None:
            self._metrics.rate_limited("tunnels")
        return wait

    def _store_failed(self, exc: OSError) -> Outcome | None:
        outage, fail = self._outage, self.config.rate_store_fail
        self._metrics.rate_store_failed()
        if outage.failed():
            what = "admitted without limits" if fail == "open" else "refused"
            server_logger.warning("rate store unreachable (%s): tunnels are %s until it answers", exc, what)
        return None if fail == "open" else Outcome(OutcomeKind.RATE_LIMITED, "rate store unavailable")

    def _negotiate(self, deadline: float) -> Generator[ServerOperation, Any, TunnelRequested | Outcome]:
        handshake = self.handshake
        assert handshake is not None
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
                    return Outcome(OutcomeKind.REFUSED, handshake.refusal or "")
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
        try:
            host: IPAddress | str = ip_literal(address[0])  # a socket's address: an IP literal
        except ValueError:
            host = address[0]
        bound = Address(host, address[1])
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
        else:  # an IP literal is its only address, and the check above was the check with it
            return ((host, target.port),)
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
                local, remote = yield Dial(addresses, timeout)
            except (OSError, TimeoutError) as exc:
                failure = failure_for(exc)
                return (yield from self._refuse(failure, Outcome(OutcomeKind.DIAL_FAILED, failure.name.lower())))
            if config.upstream_proxy_protocol:  # the target learns who the client is (another instance...)
                yield SendUpstream(outgoing_header(self.client, remote))
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

    # -- HTTP forwarding: one log line per request ---------------------------------------

    def clock(self) -> float:
        """The session's clock (the runner's)."""
        return self._clock()

    @property
    def metrics(self) -> MetricsSink:
        """Where the metrics go."""
        return self._metrics

    def request_began(self, method: str, target: Address) -> None:
        """A forwarded request's head was read: it is what the next log line is about."""
        if self._forwarded == 0:
            self._metrics.handshake_done(self._clock() - self.started)
        self._forwarded += 1
        self._pending_log = True
        self._command, self._target = method, target
        self._request_started = self._clock()

    def request_ended(self, outcome: Outcome) -> None:
        """A forwarded request ended with *outcome*: count it and log its line; the counters start afresh."""
        self._account(outcome)
        self._pending_log = False
        self.up = self.down = 0

    def client_left(self) -> Outcome:
        """How the connection ends when the client closes it while the session waits for something else."""
        if self._forwarded and not self._pending_log:
            return Outcome(OutcomeKind.OK)  # between forwarded requests: nothing was lost
        if self._forwarded:
            return Outcome(OutcomeKind.CONNECTION_ERROR, "the client closed during the request")
        return Outcome(OutcomeKind.CLOSED_DURING_NEGOTIATION)

    def opened_tunnel(self) -> None:
        """HTTP forwarding opened a connection to an origin (an active tunnel in the metrics)."""
        if not self.opened:
            self._open()

    def closed_tunnel(self) -> None:
        """HTTP forwarding closed its connection to the origin."""
        if self.opened:
            self.opened = False
            self._metrics.tunnel_closed(self.protocol)

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
        """The connection ended with *outcome*: count it, report it, log its one line. Idempotent.

        After forwarded requests, each already counted and logged, a connection
        that ends between two of them adds no line of its own.
        """
        if self.finished:
            return
        self.finished = True
        self._stats.active -= 1
        handshake = self.handshake
        if handshake is not None and self.request is None and handshake.protocol is not None:
            self.protocol, self.username = handshake.protocol, handshake.username
        if self._pending_log:
            self._account(outcome)
        if self.opened:
            self.opened = False
            self._metrics.tunnel_closed(self.protocol)
        self.handshake = None

    def _account(self, outcome: Outcome) -> None:
        """Count *outcome* (a connection's, or a forwarded request's) and log its line."""
        stats, metrics, protocol = self._stats, self._metrics, self.protocol
        if outcome.kind is OutcomeKind.OK and protocol is not None:
            stats.tunnels[protocol.name.lower()] += 1
        else:
            stats.failures[outcome.kind.label] += 1
        stats.bytes_up += self.up
        stats.bytes_down += self.down
        if outcome.kind is _DENIED:
            metrics.denied()
        metrics.connection_closed(protocol, outcome, up=self.up, down=self.down)
        if server_logger.isEnabledFor(logging.INFO):
            request = self.request
            command: str
            target: Address | None
            if request is not None:
                command, target = request.command.name, request.target
            else:
                command, target = self._command, self._target
            server_logger.info(
                format_tunnel(
                    client=f"{self.client[0]}:{self.client[1]}",
                    user=self.username,
                    protocol=protocol,
                    command=command,
                    target=target,
                    up=self.up,
                    down=self.down,
                    duration=self._clock() - (self._request_started if self._forwarded else self.started),
                    outcome=outcome,
                )
            )

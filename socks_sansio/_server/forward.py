"""Plain-HTTP forward proxying for a server session: request after request on one client connection.

A client that sends ``GET http://host/path HTTP/1.1`` to an ``http://`` proxy
(curl without ``-p``, httpx, requests, browsers) wants the proxy to forward the
request, not a tunnel. :class:`ForwardProxy` does that with the same decisions
as a tunnel, written once in the session: the credentials (HTTP Basic, checked
off the event loop, remembered for the connection once good), the tunnel rate
limit (each request counts as one), the access rules and the SSRF guard on the
name and every address it resolves to, the upstream route (a tunnel through
the chain to the origin), and one log line per request.

For each request: the head goes to the origin in origin form with hop-by-hop
fields removed and ``Via`` added (:func:`~socks_sansio.forward_request`); a
client waiting for ``100 Continue`` gets it from the proxy at once, and the
expectation is not forwarded (the body follows anyway, so the origin reads a
plain request); the body is streamed as it arrives, re-framed as announced;
then the response (interim ones included) is streamed back, re-framed for the
client's version (:func:`~socks_sansio.forward_response`). The connection to
the origin is kept for the next request to the same origin when both sides
allow it. A ``CONNECT`` request, even after forwarded ones, is handed to the
session's tunnel path with every octet that followed it.

Operations on the origin connection: :class:`~.operations.SendUpstream`,
:class:`~.operations.ReceiveUpstream` and :class:`~.operations.CloseUpstream`;
byte rate limits pause with :class:`~.operations.Pause`.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Final, final

import attrs

from .._address import Address
from .._errors import LocalProtocolError, ProxyError, RemoteProtocolError
from .._http_events import ConnectResponse
from .._http_forward import forward_request, forward_response, proxy_credentials
from .._http_forward_events import ConnectHandOff, ForwardBodyData, ForwardEndOfMessage, ForwardRequest
from .._http_forward_reader import ForwardRequestReader
from .._http_forward_response import ForwardResponseReader
from .._http_wire import encode_event
from .._proxy_url import ProxyURL
from .._server_driver import Failure
from .._socks5_events import ConnectionClosed
from .._util import NEED_DATA, PAUSED
from .operations import (
    CheckCredentials,
    CloseUpstream,
    Dial,
    DialUpstream,
    Pause,
    Receive,
    ReceiveUpstream,
    Send,
    SendUpstream,
    ServerOperation,
)
from .outcome import Outcome, OutcomeKind, failure_for, upstream_failure

if TYPE_CHECKING:
    from .outcome import StartRelay, StartUdpRelay
    from .session import ServerSession

__all__ = ["VIA", "ForwardProxy"]

VIA: Final = b"socks-sansio"
"""This proxy's pseudonym in ``Via`` (RFC 9110 §7.6.3)."""

_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_OK: Final = Outcome(OutcomeKind.OK)
_SECRET_FIELDS: Final = frozenset({b"proxy-authorization", b"authorization", b"cookie"})
_Ops = Generator[ServerOperation, Any, Any]


def refusal(status: int, text: str, *, headers: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """A complete refusal that closes the connection: *status*, a short text body, framed."""
    body = text.encode("utf-8") + b"\n"
    fields = (
        (b"Connection", b"close"),
        (b"Content-Type", b"text/plain; charset=utf-8"),
        (b"Content-Length", b"%d" % len(body)),
        *headers,
    )
    return encode_event(ConnectResponse(status_code=status, headers=fields, body=body))


@final
class ForwardProxy:
    """Forward the plain-HTTP requests of one client connection (see the module docstring).

    Args:
        session: the client's session (its settings, rules, limits, counters, log).
        reader: the request reader, holding the octets received so far.
    """

    __slots__ = ("_good", "_origin", "reader", "session")

    def __init__(self, session: ServerSession, reader: ForwardRequestReader) -> None:
        self.session = session
        self.reader = reader
        self._origin: tuple[Address, tuple[ProxyURL, ...]] | None = None  # the open upstream connection
        self._good: tuple[bytes, bytes] | None = None  # credentials already accepted on this connection

    def run(self) -> Generator[ServerOperation, Any, Outcome | StartRelay | StartUdpRelay]:
        """Every request of the connection; returns how it ends (or the tunnel a CONNECT asked for)."""
        session = self.session
        deadline = session.negotiation_deadline
        while True:
            event = yield from self._next(deadline)
            if isinstance(event, Outcome):
                yield from self._close_origin()
                return event
            if isinstance(event, ConnectHandOff):
                yield from self._close_origin()
                data, eof = self.reader.trailing_data
                return (yield from session.tunnel_after(data, eof))
            if isinstance(event, ConnectionClosed):
                yield from self._close_origin()
                return _OK  # between requests: every one was accounted for already
            assert isinstance(event, ForwardRequest)
            session.request_began(event.method.decode("ascii"), event.target)
            outcome, persist = yield from self._exchange(event)
            session.request_ended(outcome)
            if not outcome.ok or not persist:
                yield from self._close_origin()
                return _OK
            self.reader.start_next_cycle()
            deadline = session.clock() + session.config.idle_timeout

    def _next(self, deadline: float) -> Generator[ServerOperation, Any, object]:
        """The reader's next event, reading the client as needed; an Outcome when it failed (refusal sent)."""
        reader = self.reader
        while True:
            try:
                event = reader.next_event()
            except RemoteProtocolError as exc:
                if isinstance(exc.reply_hint, ConnectResponse):
                    yield Send(encode_event(exc.reply_hint), quiet=True)
                return Outcome(OutcomeKind.PROTOCOL_ERROR, exc.message)
            if event is not NEED_DATA:
                return event
            try:
                reader.receive_data((yield Receive(deadline)))
            except TimeoutError:
                pending = reader.request is not None or bool(reader.trailing_data[0])
                kind = OutcomeKind.NEGOTIATION_TIMEOUT if pending else OutcomeKind.IDLE_TIMEOUT
                return Outcome(kind)

    def _refuse(
        self, failure: Failure, outcome: Outcome, text: str, retry_after: float | None = None
    ) -> Generator[ServerOperation, Any, tuple[Outcome, bool]]:
        headers: tuple[tuple[bytes, bytes], ...] = ()
        if retry_after is not None:
            headers = ((b"Retry-After", b"%d" % math.ceil(retry_after)),)
        yield Send(refusal(failure.http_status, text, headers=headers), quiet=True)
        return outcome, False

    def _exchange(self, request: ForwardRequest) -> Generator[ServerOperation, Any, tuple[Outcome, bool]]:
        """One request and its response; ``(outcome, whether the client connection goes on)``."""
        session = self.session
        config = session.config
        if config.users is not None:
            refused = yield from self._authenticate(request)
            if refused is not None:
                return refused, False
        wait = yield from session.admitted()
        if isinstance(wait, Outcome):
            return (yield from self._refuse(Failure.RATE_LIMITED, wait, "the rate store is unavailable"))
        if wait is not None:
            outcome = Outcome(OutcomeKind.RATE_LIMITED)
            return (yield from self._refuse(Failure.RATE_LIMITED, outcome, "too many requests", wait))
        if request.answer_locally:  # OPTIONS or TRACE with Max-Forwards: 0 (RFC 9110 §7.6.2)
            yield Send(refusal(200, "socks-sansio") if request.method == b"OPTIONS" else _trace(request))
            return _OK, False
        failed = yield from self._connect(request.target)
        if failed is not None:
            return failed, False
        if request.expects_continue:  # answered here; the origin gets a plain request (the body follows)
            request = attrs.evolve(request, headers=[h for h in request.headers if h[0].lower() != b"expect"])
            yield Send(_CONTINUE)
        head = forward_request(request, via=VIA, keep_alive=True)
        yield SendUpstream(head.data)
        encoder = head.body_encoder()
        while True:  # the request body, as it arrives
            event = yield from self._next(session.clock() + config.idle_timeout)
            if isinstance(event, Outcome):
                return event, False
            if isinstance(event, ForwardBodyData | ForwardEndOfMessage):
                yield SendUpstream(encoder.send(event))
                if isinstance(event, ForwardEndOfMessage):
                    break
                yield from self._moved(True, len(event.data))
        return (yield from self._respond(request))

    def _authenticate(self, request: ForwardRequest) -> Generator[ServerOperation, Any, Outcome | None]:
        session = self.session
        credentials = proxy_credentials(request)
        challenge = ((b"Proxy-Authenticate", b'Basic realm="%s"' % session.config.realm.encode("ascii")),)
        if credentials is None:
            yield Send(refusal(407, "proxy authentication required", headers=challenge), quiet=True)
            return Outcome(OutcomeKind.REFUSED, "no credentials")
        if credentials != self._good:
            deadline = session.clock() + session.config.negotiation_timeout
            try:
                ok = yield CheckCredentials(credentials[0], credentials[1], deadline)
            except TimeoutError:
                return Outcome(OutcomeKind.NEGOTIATION_TIMEOUT)
            if not ok:
                session.metrics.auth_failed()
                yield Send(refusal(407, "wrong credentials", headers=challenge), quiet=True)
                return Outcome(OutcomeKind.AUTH_FAILED)
            self._good = credentials
        session.username = session.user = credentials[0]
        return None

    def _connect(self, target: Address) -> Generator[ServerOperation, Any, Outcome | None]:
        """An open connection to *target*'s origin: the one kept from the last request, or a new one."""
        session = self.session
        config = session.config
        chain = config.route(target)
        if self._origin == (target, chain):
            return None
        yield from self._close_origin()
        timeout = config.connect_timeout
        if chain:
            denied = config.policy.check(session.client_ip, target)
            if denied:
                return (yield from self._refused(Failure.NOT_ALLOWED, Outcome(OutcomeKind.DENIED, denied)))
            try:
                yield DialUpstream(target, chain, timeout)
            except ProxyError as exc:
                failure = upstream_failure(exc)
                outcome = Outcome(OutcomeKind.UPSTREAM_FAILED, f"{failure.name.lower()} ({type(exc).__name__})")
                return (yield from self._refused(failure, outcome))
            except (LocalProtocolError, OSError) as exc:
                outcome = Outcome(OutcomeKind.UPSTREAM_FAILED, type(exc).__name__)
                return (yield from self._refused(Failure.GENERAL_FAILURE, outcome))
        else:
            addresses = yield from session.addresses(target)
            if isinstance(addresses, Outcome):
                failure = Failure.NOT_ALLOWED if addresses.kind is OutcomeKind.DENIED else Failure.HOST_UNREACHABLE
                return (yield from self._refused(failure, addresses))
            try:
                yield Dial(addresses, timeout)
            except OSError as exc:
                failure = failure_for(exc)
                return (yield from self._refused(failure, Outcome(OutcomeKind.DIAL_FAILED, failure.name.lower())))
        self._origin = (target, chain)
        session.opened_tunnel()
        return None

    def _refused(self, failure: Failure, outcome: Outcome) -> Generator[ServerOperation, Any, Outcome]:
        yield Send(refusal(failure.http_status, str(outcome)), quiet=True)
        return outcome

    def _respond(self, request: ForwardRequest) -> Generator[ServerOperation, Any, tuple[Outcome, bool]]:
        """Stream the origin's response to the client; whether both connections can go on."""
        session = self.session
        responses = ForwardResponseReader(request_method=request.method)
        encoder = None
        persist = False
        while True:
            try:
                event = responses.next_event()
            except RemoteProtocolError as exc:
                if encoder is None:
                    yield Send(refusal(502, f"the origin broke HTTP/1.1: {exc.message}"), quiet=True)
                return Outcome(OutcomeKind.RELAY_ERROR, "origin broke HTTP/1.1"), False
            if event is NEED_DATA:
                deadline = session.clock() + session.config.idle_timeout
                try:
                    responses.receive_data((yield ReceiveUpstream(deadline)))
                except TimeoutError:
                    if encoder is None:
                        yield Send(refusal(504, "the origin did not answer in time"), quiet=True)
                    return Outcome(OutcomeKind.IDLE_TIMEOUT), False
                except OSError as exc:
                    if encoder is None:
                        yield Send(refusal(502, "the connection to the origin broke"), quiet=True)
                    return Outcome(OutcomeKind.RELAY_ERROR, type(exc).__name__), False
                continue
            if isinstance(event, ForwardBodyData | ForwardEndOfMessage):
                assert encoder is not None
                data = encoder.send(event)
                if data:
                    yield Send(data)
                if isinstance(event, ForwardEndOfMessage):
                    break
                yield from self._moved(False, len(event.data))
                continue
            if event is PAUSED:  # cannot happen: the loop ends at the response's end
                break
            if isinstance(event, ConnectionClosed):  # closed before any response head
                yield Send(refusal(502, "the origin closed the connection without answering"), quiet=True)
                return Outcome(OutcomeKind.RELAY_ERROR, "origin closed"), False
            head = forward_response(event, request=request, via=VIA, keep_alive=self.reader.keep_alive)
            if head.data:
                yield Send(head.data)
            if not event.is_interim:
                encoder, persist = head.body_encoder(), head.keep_alive
        if not responses.keep_alive:
            yield from self._close_origin()
        return _OK, persist

    def _moved(self, upward: bool, nbytes: int) -> _Ops:
        pause = self.session.moved(upward, nbytes, self.session.clock())
        if pause > 0:
            yield Pause(pause)

    def _close_origin(self) -> _Ops:
        if self._origin is not None:
            self._origin = None
            self.session.closed_tunnel()
            yield CloseUpstream()


def _trace(request: ForwardRequest) -> bytes:
    """A TRACE answered here (Max-Forwards: 0): the request as received, as ``message/http`` (RFC 9110 §9.3.8)."""
    echoed = request.method + b" " + request.absolute_target + b" HTTP/" + request.http_version + b"\r\n"
    shown = [(n, v) for n, v in request.headers if n.lower() not in _SECRET_FIELDS]  # RFC 9110 §9.3.8
    echoed += b"".join(name + b": " + value + b"\r\n" for name, value in shown) + b"\r\n"
    head = (
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: message/http\r\n"
        b"Content-Length: %d\r\nVia: 1.1 socks-sansio\r\n\r\n" % len(echoed)
    )
    return head + echoed


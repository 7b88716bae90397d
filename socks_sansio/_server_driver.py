"""The server handshake driver: one port, three protocols, decisions left to the application.

:class:`ServerHandshake` reads a client's first bytes, picks the machine
(SOCKS5, SOCKS4/4a or HTTP CONNECT), applies the authentication policy it was
given, and asks the application, through events, for the two decisions only
it can make:

* :class:`CredentialsReceived`: are these credentials good? Answer with
  :meth:`ServerHandshake.accept_credentials`.
* :class:`TunnelRequested`: dial (or bind, or associate) and report the
  outcome with :meth:`ServerHandshake.accept` (the bound address) or
  :meth:`ServerHandshake.reject` (a :class:`Failure`, mapped to the right SOCKS5
  REP, SOCKS4 CD or HTTP status). BIND reports its peer with
  :meth:`ServerHandshake.bind_connected`.

No success reply is ever produced before the application calls ``accept``.
Output is buffered: write :meth:`ServerHandshake.data_to_send` after every call,
including after ``next_event`` raised (the refusal the protocol prescribes is
queued before the error is raised), then close if :attr:`ServerHandshake.must_close`.
"""

from __future__ import annotations

import enum
import ipaddress
import math
from typing import Final, final

import attrs

from ._address import Address
from ._codes import AuthMethod, Command, ReplyCode, Socks4ReplyCode
from ._detect import detect_protocol
from ._errors import LocalProtocolError, RemoteProtocolError
from ._http_connection import HttpConnectConnection, HttpConnectState
from ._http_events import ConnectRequest, ConnectResponse
from ._proxy_url import ProxyProtocol
from ._rfc1929 import UsernamePasswordReply, UsernamePasswordRequest
from ._socks4 import Socks4Connection, Socks4State
from ._socks4_events import Socks4Reply, Socks4Request
from ._socks5_connection import Socks5Connection
from ._socks5_events import (
    UNSPECIFIED_ADDRESS,
    CommandReply,
    CommandRequest,
    ConnectionClosed,
    Greeting,
    MethodSelection,
)
from ._socks5_state import Socks5State
from ._util import NEED_DATA, PAUSED, SERVER, NeedData, Paused

__all__ = ["ClientClosed", "CredentialsReceived", "Failure", "ServerHandshake", "ServerStatus", "TunnelRequested"]


class Failure(enum.Enum):
    """Why a request failed, in words every protocol can express.

    ``value`` is ``(SOCKS5 REP, HTTP status)``; SOCKS4 has one failure code, 91.
    SOCKS has no code for "too many requests", so :attr:`RATE_LIMITED` is REP 2
    there, like :attr:`NOT_ALLOWED`; HTTP tells them apart (429 vs 403).
    """

    GENERAL_FAILURE = (ReplyCode.GENERAL_FAILURE, 502)
    NOT_ALLOWED = (ReplyCode.CONNECTION_NOT_ALLOWED, 403)
    NETWORK_UNREACHABLE = (ReplyCode.NETWORK_UNREACHABLE, 502)
    HOST_UNREACHABLE = (ReplyCode.HOST_UNREACHABLE, 502)
    CONNECTION_REFUSED = (ReplyCode.CONNECTION_REFUSED, 502)
    TIMED_OUT = (ReplyCode.TTL_EXPIRED, 504)
    COMMAND_NOT_SUPPORTED = (ReplyCode.COMMAND_NOT_SUPPORTED, 405)
    ADDRESS_TYPE_NOT_SUPPORTED = (ReplyCode.ADDRESS_TYPE_NOT_SUPPORTED, 400)
    RATE_LIMITED = (ReplyCode.CONNECTION_NOT_ALLOWED, 429)
    """Over a rate limit: SOCKS5 REP 2 (not allowed by ruleset), HTTP 429 Too Many Requests."""

    @property
    def socks5_code(self) -> ReplyCode:
        """The SOCKS5 REP for this failure (RFC 1928 §6)."""
        return self.value[0]

    @property
    def http_status(self) -> int:
        """The HTTP status for this failure."""
        return self.value[1]




@final
@attrs.frozen(kw_only=True)
class CredentialsReceived:
    """The client authenticated (RFC 1929, or HTTP Basic): answer with ``accept_credentials``."""

    protocol: ProxyProtocol
    username: bytes
    password: bytes = attrs.field(repr=False)


@final
@attrs.frozen(kw_only=True)
class TunnelRequested:
    """The client asks for a tunnel: dial, then call ``accept`` or ``reject``.

    Attributes:
        protocol: which protocol the client speaks.
        command: CONNECT, BIND or UDP ASSOCIATE (SOCKS4 and HTTP: CONNECT, or BIND for SOCKS4).
        target: the destination (for BIND: the peer the client expects; for UDP
            ASSOCIATE: where the client will send from, often ``0.0.0.0:0``).
        username: the authenticated user, if any; for SOCKS4 the unauthenticated USERID.
    """

    protocol: ProxyProtocol
    command: Command
    target: Address
    username: bytes | None = None


@final
@attrs.frozen
class ClientClosed:
    """The client closed the connection before the handshake finished."""


ServerEvent = CredentialsReceived | TunnelRequested | ClientClosed
"""What :meth:`ServerHandshake.next_event` returns besides ``NEED_DATA`` and ``PAUSED``."""


class ServerStatus(enum.Enum):
    """Where a :class:`ServerHandshake` stands."""

    NEGOTIATING = "NEGOTIATING"
    """Reading the client; call ``next_event``."""
    AWAITING_CREDENTIALS_DECISION = "AWAITING_CREDENTIALS_DECISION"
    """Call ``accept_credentials``."""
    AWAITING_DIAL = "AWAITING_DIAL"
    """Call ``accept`` or ``reject``."""
    AWAITING_BIND_PEER = "AWAITING_BIND_PEER"
    """BIND: call ``bind_connected`` or ``reject`` when a peer connects or it fails."""
    ESTABLISHED = "ESTABLISHED"
    """The tunnel or association is up: relay, starting with ``trailing_data``."""
    CLOSED = "CLOSED"
    """Refused or closed: write ``data_to_send()`` and close the connection."""


_HTTP_ENDS: Final = {HttpConnectState.TUNNEL}


@final
class ServerHandshake:
    """The server side of a proxy handshake on a port that speaks several protocols.

    Args:
        protocols: the protocols accepted on this port.
        auth_required: demand credentials (RFC 1929 for SOCKS5, Basic for HTTP).
            SOCKS4 carries no password, so it is refused unless
            *allow_socks4_without_auth* is set.
        allow_socks4_without_auth: accept SOCKS4 even when auth is required.
        realm: the Basic realm announced in a 407 challenge.
        max_head_size: the cap on an HTTP request head.
    """

    __slots__ = (
        "_allow_socks4",
        "_auth_required",
        "_closed_reported",
        "_conn",
        "_deferred",
        "_eof_pending",
        "_max_head_size",
        "_out",
        "_pending",
        "_protocol",
        "_protocols",
        "_realm",
        "_refusal",
        "_status",
        "_username",
    )

    def __init__(
        self,
        *,
        protocols: frozenset[ProxyProtocol] = frozenset(ProxyProtocol),
        auth_required: bool = False,
        allow_socks4_without_auth: bool = False,
        realm: str = "socks-sansio",
        max_head_size: int = 16 * 1024,
    ) -> None:
        if not protocols:
            raise LocalProtocolError("at least one protocol must be accepted")
        if '"' in realm or not realm.isprintable():
            raise LocalProtocolError(f"realm {realm!r} must be printable and hold no quote")
        self._protocols = protocols
        self._auth_required = auth_required
        self._allow_socks4 = allow_socks4_without_auth
        self._realm = realm
        self._max_head_size = max_head_size
        self._conn: Socks5Connection | Socks4Connection | HttpConnectConnection | None = None
        self._protocol: ProxyProtocol | None = None
        self._status = ServerStatus.NEGOTIATING
        self._out = b""
        self._pending = bytearray()  # bytes received before the protocol is known
        self._username: bytes | None = None
        # HTTP: the request whose credentials the application is checking.
        self._deferred: TunnelRequested | None = None
        self._eof_pending = False  # EOF that came before the protocol was known
        self._closed_reported = False
        self._refusal: str | None = None  # why the handshake refused the client by itself, for the log

    @property
    def protocol(self) -> ProxyProtocol | None:
        """The protocol the client speaks, once its first byte arrived."""
        return self._protocol

    @property
    def status(self) -> ServerStatus:
        """Where the handshake stands."""
        return self._status

    @property
    def must_close(self) -> bool:
        """True when the connection must be closed after ``data_to_send()`` is written."""
        return self._status is ServerStatus.CLOSED

    @property
    def refusal(self) -> str | None:
        """Why the handshake refused the client by itself (no acceptable method, SOCKS4 under auth), if it did."""
        return self._refusal

    @property
    def username(self) -> bytes | None:
        """The user whose credentials the application accepted, if any."""
        return self._username

    def data_to_send(self) -> bytes:
        """The octets to write to the client now; drains the buffer."""
        out, self._out = self._out, b""
        return out

    @property
    def trailing_data(self) -> tuple[bytes, bool]:
        """``(bytes, eof)`` after the handshake: the client's early tunnel data."""
        if self._conn is None:
            return bytes(self._pending), False
        return self._conn.trailing_data

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer octets from the client (``b""`` = EOF); then call :meth:`next_event`."""
        if self._conn is None:
            if not data:
                self._eof_pending = True
                if not self._pending:
                    self._status = ServerStatus.CLOSED
                return
            self._pending += data
            return
        self._conn.receive_data(data)

    def next_event(self) -> ServerEvent | NeedData | Paused:
        """Advance the handshake as far as the client's bytes and the policy allow.

        Returns:
            an event for the application to decide on; ``NEED_DATA`` (read more);
            ``PAUSED`` (waiting for a decision, or finished: see :attr:`status`).

        Raises:
            RemoteProtocolError: the client broke its protocol, or spoke one this
                port does not accept. The prescribed refusal, if any, is already
                in :meth:`data_to_send`; then close.
        """
        if self._deferred is not None and self._status is ServerStatus.NEGOTIATING:
            deferred, self._deferred = self._deferred, None
            return self._requested(deferred.command, deferred.target)
        if self._status is not ServerStatus.NEGOTIATING:
            if self._status is ServerStatus.CLOSED and self._conn is None and not self._closed_reported:
                self._closed_reported = True  # reported once, then PAUSED like every terminal state
                return ClientClosed()
            return PAUSED
        if self._conn is None and not self._start():
            return NEED_DATA
        conn = self._conn
        assert conn is not None
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                self._status = ServerStatus.CLOSED
                if exc.reply_hint is not None:
                    self._out += conn.send(exc.reply_hint)
                raise
            if event is NEED_DATA or event is PAUSED:
                return event
            if isinstance(event, ConnectionClosed):
                self._status = ServerStatus.CLOSED
                return ClientClosed()
            answer = self._react(event)
            if answer is not None:
                return answer
            if self.status is not ServerStatus.NEGOTIATING:  # the reaction may have ended it
                return PAUSED

    def _start(self) -> bool:
        try:
            protocol = detect_protocol(self._pending)
        except RemoteProtocolError:
            self._status = ServerStatus.CLOSED
            raise
        if protocol is None:
            return False
        if protocol not in self._protocols:
            self._status = ServerStatus.CLOSED
            accepted = ", ".join(sorted(p.name for p in self._protocols))
            raise RemoteProtocolError(
                f"the client speaks {protocol.name}, which this port does not accept (only {accepted})"
            )
        self._protocol = protocol
        if protocol is ProxyProtocol.SOCKS5:
            self._conn = Socks5Connection(SERVER)
        elif protocol is ProxyProtocol.SOCKS4:
            self._conn = Socks4Connection(SERVER)
        else:
            self._conn = HttpConnectConnection(SERVER, max_head_size=self._max_head_size)
        self._conn.receive_data(bytes(self._pending))
        self._pending.clear()
        if self._eof_pending:
            self._conn.receive_data(b"")
        return True

    # -- reacting to the client ----------------------------------------------------------

    def _react(self, event: object) -> ServerEvent | None:
        conn = self._conn
        if isinstance(event, Greeting):
            assert isinstance(conn, Socks5Connection)
            self._out += conn.send(MethodSelection(method=self._choose_method(event.methods)))
            if conn.state is Socks5State.MUST_CLOSE:
                self._status = ServerStatus.CLOSED
                offered = ", ".join(f"0x{method:02x}" for method in event.methods) or "none"
                wanted = "0x02 (username/password)" if self._auth_required else "0x00 (none) or 0x02"
                self._refusal = (f"no acceptable authentication method: the client offered {offered}, "
                                 f"the server takes {wanted}")
            return None
        if isinstance(event, UsernamePasswordRequest):
            self._status = ServerStatus.AWAITING_CREDENTIALS_DECISION
            self._username = event.username
            return CredentialsReceived(protocol=ProxyProtocol.SOCKS5, username=event.username, password=event.password)
        if isinstance(event, CommandRequest):
            return self._requested(event.command, event.address)
        if isinstance(event, Socks4Request):
            if self._auth_required and not self._allow_socks4:
                self._finish_refusal(Failure.NOT_ALLOWED)
                self._refusal = ("SOCKS4 carries no password and the server requires authentication "
                                 "(allow_socks4_without_auth is off)")
                return None
            self._username = event.user_id or None
            return self._requested(event.command, event.address)
        assert isinstance(event, ConnectRequest)
        return self._http_request(event)

    def _choose_method(self, offered: tuple[int, ...]) -> int:
        if self._auth_required:
            return AuthMethod.USERNAME_PASSWORD if AuthMethod.USERNAME_PASSWORD in offered else AuthMethod.NO_ACCEPTABLE
        for method in (AuthMethod.NO_AUTH, AuthMethod.USERNAME_PASSWORD):
            if method in offered:
                return method
        return AuthMethod.NO_ACCEPTABLE

    def _requested(self, command: Command, target: Address) -> TunnelRequested:
        self._status = ServerStatus.AWAITING_DIAL
        assert self._protocol is not None
        return TunnelRequested(protocol=self._protocol, command=command, target=target, username=self._username)

    def _http_request(self, event: ConnectRequest) -> ServerEvent | None:
        if not self._auth_required:
            return self._requested(Command.CONNECT, event.target)
        credentials = event.basic_credentials
        if credentials is None:
            self._send_http(407, keep_alive=True)
            return None
        self._username = credentials[0]
        self._status = ServerStatus.AWAITING_CREDENTIALS_DECISION
        self._deferred = TunnelRequested(protocol=ProxyProtocol.HTTP, command=Command.CONNECT, target=event.target)
        return CredentialsReceived(protocol=ProxyProtocol.HTTP, username=credentials[0], password=credentials[1])

    def _send_http(self, status: int, *, keep_alive: bool = False, retry_after: float | None = None) -> None:
        conn = self._conn
        assert isinstance(conn, HttpConnectConnection)
        headers: list[tuple[bytes, bytes]] = []
        if retry_after is not None:
            headers.append((b"Retry-After", str(math.ceil(retry_after)).encode()))
        if status == 407:
            headers.append((b"Proxy-Authenticate", f'Basic realm="{self._realm}", charset="UTF-8"'.encode()))
        if status == 405:
            headers.append((b"Allow", b"CONNECT"))
        if not keep_alive:
            headers.append((b"Connection", b"close"))
        headers.append((b"Content-Length", b"0"))
        self._out += conn.send(ConnectResponse(status_code=status, headers=tuple(headers)))
        if conn.state is not HttpConnectState.AWAIT_REQUEST:
            self._status = ServerStatus.CLOSED

    # -- the application's answers --------------------------------------------------------

    def accept_credentials(self, ok: bool) -> None:
        """Answer a :class:`CredentialsReceived` event.

        Raises:
            LocalProtocolError: no credentials decision is pending.
        """
        self._expect(ServerStatus.AWAITING_CREDENTIALS_DECISION, "accept_credentials")
        conn = self._conn
        if isinstance(conn, Socks5Connection):
            self._out += conn.send(UsernamePasswordReply(success=ok))
            self._status = ServerStatus.NEGOTIATING if ok else ServerStatus.CLOSED
            if not ok:
                self._username = None
            return
        self._status = ServerStatus.NEGOTIATING  # next_event() yields the deferred request
        if not ok:
            self._username = None
            self._deferred = None
            self._send_http(407)

    def accept(self, bound: Address = UNSPECIFIED_ADDRESS) -> None:
        """Report that the dial (or bind, or association) succeeded; queue the success reply.

        Args:
            bound: our end of the upstream connection (CONNECT), the listening address
                (BIND's first reply), or the UDP relay address (UDP ASSOCIATE).
        """
        self._expect(ServerStatus.AWAITING_DIAL, "accept")
        conn = self._conn
        if isinstance(conn, Socks5Connection):
            self._out += conn.send(CommandReply(code=ReplyCode.SUCCEEDED, bound=bound))
            done = conn.state in (Socks5State.TUNNEL, Socks5State.ASSOCIATED)
        elif isinstance(conn, Socks4Connection):
            self._out += conn.send(Socks4Reply(code=Socks4ReplyCode.GRANTED, bound=_socks4_bound(bound)))
            done = conn.state is Socks4State.TUNNEL
        else:
            assert conn is not None
            self._out += conn.send(ConnectResponse(status_code=200, reason=b"Connection established"))
            done = True
        self._status = ServerStatus.ESTABLISHED if done else ServerStatus.AWAITING_BIND_PEER

    def bind_connected(self, peer: Address) -> None:
        """BIND: a peer connected to the listening socket; queue the second reply."""
        self._expect(ServerStatus.AWAITING_BIND_PEER, "bind_connected")
        conn = self._conn
        if isinstance(conn, Socks5Connection):
            self._out += conn.send(CommandReply(code=ReplyCode.SUCCEEDED, bound=peer))
        else:
            assert isinstance(conn, Socks4Connection)
            self._out += conn.send(Socks4Reply(code=Socks4ReplyCode.GRANTED, bound=_socks4_bound(peer)))
        self._status = ServerStatus.ESTABLISHED

    def reject(self, failure: Failure, *, retry_after: float | None = None) -> None:
        """Report that the request failed; queue the matching refusal. Then close.

        Args:
            failure: why; picks the SOCKS5 REP, SOCKS4 CD or HTTP status.
            retry_after: seconds after which a retry may succeed (e.g. the wait a
                rate limit reported); HTTP sends it as ``Retry-After``, rounded
                up to whole seconds. SOCKS has no field for it.

        Raises:
            LocalProtocolError: no request is pending, or *retry_after* is not a
                finite number >= 0.
        """
        if self._status not in (ServerStatus.AWAITING_DIAL, ServerStatus.AWAITING_BIND_PEER):
            raise LocalProtocolError(f"reject() needs a pending request; status is {self._status.name}")
        if retry_after is not None and not (
            isinstance(retry_after, (int, float)) and math.isfinite(retry_after) and retry_after >= 0
        ):
            raise LocalProtocolError(f"retry_after must be a finite number of seconds >= 0, not {retry_after!r}")
        self._finish_refusal(failure, retry_after)

    def _finish_refusal(self, failure: Failure, retry_after: float | None = None) -> None:
        conn = self._conn
        if isinstance(conn, Socks5Connection):
            self._out += conn.send(CommandReply(code=failure.socks5_code))
        elif isinstance(conn, Socks4Connection):
            self._out += conn.send(Socks4Reply(code=Socks4ReplyCode.REJECTED))
        else:
            self._send_http(failure.http_status, retry_after=retry_after)
        self._status = ServerStatus.CLOSED

    def _expect(self, status: ServerStatus, what: str) -> None:
        if self._status is not status:
            raise LocalProtocolError(f"{what}() is not expected now; status is {self._status.name}")


def _socks4_bound(address: Address) -> Address:
    """SOCKS4 replies carry IPv4 only; anything else is reported as 0.0.0.0:port."""
    if isinstance(address.host, ipaddress.IPv4Address):
        return address
    return Address("0.0.0.0", address.port)

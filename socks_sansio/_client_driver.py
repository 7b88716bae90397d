"""The client handshake driver: the policy an adapter would otherwise repeat.

Given a proxy and a target, :class:`ClientHandshake` knows what to send first,
what to answer to each event, when the tunnel is up, and which error the
handshake ended in. An adapter only moves bytes:

    handshake = ClientHandshake(proxy, target)
    send(handshake.data_to_send())
    while not handshake.established:
        handshake.receive_data(recv(handshake.read_size_hint))
        send(handshake.data_to_send())
    tunnel_bytes = handshake.trailing_data   # deliver these first

Receiving can cause output (a SOCKS5 method selection is answered with
credentials, a 407 with a retried request), so output is buffered and drained
with :meth:`ClientHandshake.data_to_send` (the sans-I/O rule for protocols
that answer without asking the application).

A chain of proxies is one handshake per hop over the same byte stream: hop
*i*'s target is hop *i+1*'s address, and the last hop's target is the real one.

A handshake can also be *prepared* before its target is known (``target=None``,
for a pool of ready connections): it runs what comes before the request (the
SOCKS5 greeting and RFC 1929 authentication; nothing for SOCKS4 and HTTP,
whose first message is the request) and stops at ``HandshakeStatus.READY``.
:meth:`ClientHandshake.request` then sends the request and the handshake goes
on exactly as one built with the target would: the octets on the wire are the
same, so a new tunnel costs one round trip.
"""

from __future__ import annotations

import enum
import functools
from typing import Final, final

from ._address import Address
from ._codes import AuthMethod, Command, describe_socks4_reply
from ._errors import (
    LocalProtocolError,
    ProxyAuthError,
    ProxyConnectionError,
    ProxyError,
    ProxyProtocolError,
    ProxyRefusedError,
    RemoteProtocolError,
)
from ._http_connection import HttpConnectConnection, HttpConnectState
from ._http_events import ConnectRequest, ConnectResponse, proxy_basic_auth
from ._proxy_url import ProxyProtocol, ProxyURL
from ._rfc1929 import UsernamePasswordReply, UsernamePasswordRequest
from ._socks4 import Socks4Connection, Socks4State
from ._socks4_events import Socks4Reply, Socks4Request
from ._socks5_connection import Socks5Connection
from ._socks5_events import CommandReply, CommandRequest, ConnectionClosed, Greeting, MethodSelection
from ._socks5_state import Socks5State
from ._socks5_wire import describe_failed_reply
from ._util import CLIENT, NEED_DATA, PAUSED

__all__ = ["ClientHandshake", "HandshakeStatus", "needs_local_resolution"]


class HandshakeStatus(enum.Enum):
    """How far a :class:`ClientHandshake` has come."""

    #: Still negotiating.
    IN_PROGRESS = "IN_PROGRESS"
    #: Prepared (built with ``target=None``): everything before the request is done;
    #: waiting for :meth:`ClientHandshake.request`. The proxy must stay silent now.
    READY = "READY"
    #: BIND: the proxy listens at ``bound``; the tunnel opens when a peer connects (second reply).
    BIND_LISTENING = "BIND_LISTENING"
    #: Done: the tunnel (CONNECT, BIND) or the UDP association is up.
    ESTABLISHED = "ESTABLISHED"


def needs_local_resolution(proxy: ProxyURL, target: Address) -> bool:
    """Whether *target*'s name must be resolved by us before the handshake.

    ``socks5://`` and ``socks4://`` resolve locally (as curl does); ``socks5h://``,
    ``socks4a://`` and HTTP proxies let the proxy resolve.
    """
    return target.is_domain and not proxy.remote_dns


def _check_request(proxy: ProxyURL, target: Address, command: Command) -> None:
    """Raise LocalProtocolError for a request *proxy* can never carry."""
    if needs_local_resolution(proxy, target):
        raise LocalProtocolError(
            f"{proxy.scheme}:// proxies resolve names locally: resolve {target.host_str} first, "
            f"or use {proxy.scheme}{'h' if proxy.scheme == 'socks5' else 'a'}:// to let the proxy resolve it"
        )
    protocol = proxy.protocol
    if protocol is _SOCKS5:
        return
    if protocol is _SOCKS4 and command is not _CONNECT and command is not _BIND:
        raise LocalProtocolError(f"SOCKS4 has no {command.name}; only CONNECT and BIND")
    if protocol is _HTTP and command is not _CONNECT:
        raise LocalProtocolError(f"an HTTP proxy can only CONNECT, not {command.name}")


_SOCKS5_ENDS: Final = {Socks5State.TUNNEL, Socks5State.ASSOCIATED}
_SOCKS4_ENDS: Final = {Socks4State.TUNNEL}

# Speed: a handshake is a handful of calls, so what each call pays is the cost.
# Enum members are slow to look up on their class: read them once. Greetings are
# immutable events, built once. Events are dispatched on their exact type (the
# event classes are final).
_IN_PROGRESS: Final = HandshakeStatus.IN_PROGRESS
_READY: Final = HandshakeStatus.READY
_BIND_LISTENING: Final = HandshakeStatus.BIND_LISTENING
_ESTABLISHED: Final = HandshakeStatus.ESTABLISHED
_SOCKS5: Final = ProxyProtocol.SOCKS5
_SOCKS4: Final = ProxyProtocol.SOCKS4
_HTTP: Final = ProxyProtocol.HTTP
_CONNECT: Final = Command.CONNECT
_BIND: Final = Command.BIND
_NO_AUTH: Final = AuthMethod.NO_AUTH
_USERNAME_PASSWORD: Final = AuthMethod.USERNAME_PASSWORD
_NO_ACCEPTABLE: Final = AuthMethod.NO_ACCEPTABLE
_AWAIT_AUTH_REQUEST: Final = Socks5State.AWAIT_AUTH_REQUEST
_AWAIT_COMMAND: Final = Socks5State.AWAIT_COMMAND
_GREETING_NO_AUTH: Final = Greeting(methods=(AuthMethod.NO_AUTH,))
_GREETING_USERNAME_PASSWORD: Final = Greeting(methods=(AuthMethod.USERNAME_PASSWORD,))
_GREETING_BOTH: Final = Greeting(methods=(AuthMethod.NO_AUTH, AuthMethod.USERNAME_PASSWORD))
_PROTOCOL_NAMES: Final = {ProxyProtocol.SOCKS5: "SOCKS5", ProxyProtocol.SOCKS4: "SOCKS4", ProxyProtocol.HTTP: "HTTP"}
_SOCKS5_REPLIES: Final = frozenset({MethodSelection, UsernamePasswordReply, CommandReply})


@functools.lru_cache(maxsize=64)
def _credentials(username: bytes, password: bytes) -> UsernamePasswordRequest:
    """The RFC 1929 request for these credentials (an immutable event: built once per pair)."""
    return UsernamePasswordRequest(username=username, password=password)


@final
class ClientHandshake:
    """Drive one proxy hop's client handshake, SOCKS5, SOCKS4/4a or HTTP CONNECT.

    Args:
        proxy: the proxy (its protocol, credentials and DNS choice).
        target: where the tunnel should lead. For UDP ASSOCIATE, the address we
            will send datagrams from (``0.0.0.0:0`` when not known). ``None``
            prepares the connection: the handshake stops at
            ``HandshakeStatus.READY`` before the request (at once for SOCKS4 and
            HTTP, after the greeting and authentication for SOCKS5), and
            :meth:`request` names the target later.
        command: CONNECT (every protocol), BIND (SOCKS), UDP ASSOCIATE (SOCKS5);
            ignored with ``target=None`` (:meth:`request` takes it).
        pipelined: SOCKS5 only; send greeting, credentials and request in one
            write (one round trip instead of up to three). The greeting then
            offers a single method, so a server that refuses it still gets a
            clean refusal.
        preemptive_auth: HTTP only; send ``Proxy-Authorization`` with the first
            request (the default, as curl does). When false, credentials are sent
            only in answer to a 407, on the same connection if the proxy keeps it.
        lenient_auth_version: SOCKS5 only; accept an RFC 1929 reply with version 0x05.

    Raises:
        LocalProtocolError: an impossible combination (BIND through HTTP, an IPv6
            target through SOCKS4, a domain target for a proxy URL that resolves
            locally: see :func:`needs_local_resolution`, *pipelined* without a target).
    """

    __slots__ = (
        "_auth_sent",
        "_bind_peer",
        "_bound",
        "_command",
        "_conn",
        "_out",
        "_preemptive_auth",
        "_proxy",
        "_status",
        "_target",
    )

    def __init__(
        self,
        proxy: ProxyURL,
        target: Address | None,
        *,
        command: Command = Command.CONNECT,
        pipelined: bool = False,
        preemptive_auth: bool = True,
        lenient_auth_version: bool = False,
    ) -> None:
        if target is None:
            if pipelined:
                raise LocalProtocolError("a prepared handshake (target=None) cannot be pipelined: no request yet")
        else:
            _check_request(proxy, target, command)
        self._proxy = proxy
        self._target = target
        self._command = command
        self._preemptive_auth = preemptive_auth
        self._status = _IN_PROGRESS
        self._bound: Address | None = None
        self._bind_peer: Address | None = None
        self._auth_sent = False
        self._out = b""
        self._conn: Socks5Connection | Socks4Connection | HttpConnectConnection
        protocol = proxy.protocol
        if protocol is _SOCKS5:
            self._conn = Socks5Connection(CLIENT, lenient_auth_version=lenient_auth_version, pipelining=pipelined)
            self._out = self._socks5_start(pipelined)
            return
        if protocol is _SOCKS4:
            self._conn = Socks4Connection(CLIENT)
        else:
            self._conn = HttpConnectConnection(CLIENT)
        if target is None:
            self._status = _READY  # the request is the first message
        else:
            self._out = self._first_request()

    # -- what the adapter uses ----------------------------------------------------

    @property
    def proxy(self) -> ProxyURL:
        """The proxy this hop talks to."""
        return self._proxy

    @property
    def target(self) -> Address | None:
        """The target of this hop's request (``None`` until :meth:`request` for a prepared handshake)."""
        return self._target

    @property
    def command(self) -> Command:
        """The command of this hop's request."""
        return self._command

    @property
    def status(self) -> HandshakeStatus:
        """How far the handshake has come."""
        return self._status

    @property
    def established(self) -> bool:
        """True once the tunnel or association is up."""
        return self._status is _ESTABLISHED

    @property
    def bound(self) -> Address | None:
        """The proxy's reply address: CONNECT's outgoing address, BIND's listening
        address (advertise it to the peer), UDP ASSOCIATE's relay address."""
        return self._bound

    @property
    def bind_peer(self) -> Address | None:
        """BIND: the peer that connected to the proxy (from the second reply)."""
        return self._bind_peer

    def request(self, target: Address, *, command: Command = Command.CONNECT) -> None:
        """Send the request of a prepared handshake (status ``READY``); it goes on as usual.

        The request's octets are then in :meth:`data_to_send`, and the status is
        ``IN_PROGRESS`` again. On error nothing changes (still ``READY``).

        Raises:
            LocalProtocolError: the handshake is not ``READY``, or the request is
                impossible through this proxy (as for the constructor).
        """
        if self._status is not _READY:
            raise LocalProtocolError(
                f"request() needs a prepared handshake in status READY, not {self._status.name}"
            )
        _check_request(self._proxy, target, command)
        self._target, self._command = target, command
        try:
            out = self._socks5_request() if isinstance(self._conn, Socks5Connection) else self._first_request()
        except LocalProtocolError:
            self._target, self._command = None, Command.CONNECT
            raise
        self._out += out
        self._status = _IN_PROGRESS

    def data_to_send(self) -> bytes:
        """The octets to write to the proxy now (possibly none); drains the buffer."""
        out, self._out = self._out, b""
        return out

    @property
    def read_size_hint(self) -> int:
        """How many octets may be read now without reading past the handshake.

        Never 0 while the handshake is in progress (at least 1), so it can be
        passed to ``recv()`` directly; 0 once established.
        """
        if self._status is _ESTABLISHED:
            return 0
        return self._conn.read_size_hint or 1

    @property
    def trailing_data(self) -> tuple[bytes, bool]:
        """``(bytes, eof)`` received after the final reply: the first tunnel bytes."""
        return self._conn.trailing_data

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Take octets from the proxy (``b""`` = it closed) and react to them.

        Raises:
            ProxyRefusedError: the proxy refused (reply code or HTTP status inside).
            ProxyAuthError: credentials missing or refused.
            ProxyProtocolError: the proxy broke the protocol.
            ProxyConnectionError: the proxy closed the connection mid-handshake.

        In status ``READY`` the proxy must be silent: any octet is a
        ``ProxyProtocolError`` (also one that came in the same segment as the
        answer that made the handshake ``READY``), and ``b""`` a
        ``ProxyConnectionError``.
        """
        status = self._status
        if status is _READY:
            raise self._not_silent(len(data))
        conn = self._conn
        conn.receive_data(data)
        buffer = conn._buffer  # read only: is anything left to parse?
        while status is _IN_PROGRESS or status is _BIND_LISTENING:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                raise ProxyProtocolError(
                    f"the {self._name} proxy broke the protocol: {exc.message}", proxy=self._proxy.redacted()
                ) from exc
            if event is NEED_DATA or event is PAUSED:
                return
            kind = type(event)
            if kind in _SOCKS5_REPLIES:
                self._socks5_react(event)
            elif kind is ConnectionClosed:
                raise ProxyConnectionError(
                    f"the {self._name} proxy closed the connection during the handshake",
                    proxy=self._proxy.redacted(),
                )
            elif kind is ConnectResponse:
                self._http_react(event)  # type: ignore[arg-type]
            elif kind is Socks4Reply:
                self._socks4_react(event)  # type: ignore[arg-type]
            else:
                self._socks5_react(event)
            if not buffer.data and not buffer.eof:
                return  # nothing left to parse: next_event() could only say NEED_DATA or PAUSED
            status = self._status
        if status is _READY:
            # Prepared, and the octets that made it READY came with more: the proxy spoke
            # before our request, just as if they had come in a later segment.
            raise self._not_silent(len(buffer.data))

    def _not_silent(self, octets: int) -> ProxyError:
        """The error for a proxy that sent *octets* (0: closed) while the handshake was READY."""
        if octets:
            return ProxyProtocolError(
                f"the {self._name} proxy sent {octets} octets on a prepared connection, before our request",
                proxy=self._proxy.redacted(),
            )
        return ProxyConnectionError(
            f"the {self._name} proxy closed the prepared connection before our request",
            proxy=self._proxy.redacted(),
        )

    # -- SOCKS5 -------------------------------------------------------------------------

    @property
    def _name(self) -> str:
        return _PROTOCOL_NAMES[self._proxy.protocol]

    def _socks5_start(self, pipelined: bool) -> bytes:
        conn = self._conn
        assert isinstance(conn, Socks5Connection)
        credentials = self._proxy.username is not None
        if pipelined:
            out = conn.send(_GREETING_USERNAME_PASSWORD if credentials else _GREETING_NO_AUTH)
            if credentials:
                out += conn.send(self._credentials())
            return out + self._socks5_request()
        return conn.send(_GREETING_BOTH if credentials else _GREETING_NO_AUTH)

    def _socks5_request(self) -> bytes:
        conn = self._conn
        assert isinstance(conn, Socks5Connection)
        assert self._target is not None
        return conn.send(CommandRequest(command=self._command, address=self._target))

    def _socks5_after_auth(self) -> None:
        """Method and credentials settled: send the request, or stop here when prepared."""
        if self._target is None:
            self._status = _READY
        else:
            self._out += self._socks5_request()

    def _credentials(self) -> UsernamePasswordRequest:
        return _credentials(self._proxy.username or b"", self._proxy.password or b"")

    def _socks5_react(self, event: object) -> None:
        conn = self._conn
        assert isinstance(conn, Socks5Connection)
        kind = type(event)
        if kind is MethodSelection:
            assert isinstance(event, MethodSelection)
            if event.method == _NO_ACCEPTABLE:
                wanted = "credentials" if self._proxy.username is None else "a method we did not offer"
                raise ProxyAuthError(
                    f"the SOCKS5 proxy accepts none of the offered methods (it probably wants {wanted})",
                    protocol="socks5", code=AuthMethod.NO_ACCEPTABLE, proxy=self._proxy.redacted(),
                )
            state = conn.state
            if state is _AWAIT_AUTH_REQUEST:
                self._out += conn.send(self._credentials())
            elif state is _AWAIT_COMMAND:
                self._socks5_after_auth()
        elif kind is UsernamePasswordReply:
            assert isinstance(event, UsernamePasswordReply)
            if not event.success:
                raise ProxyAuthError(
                    "the SOCKS5 proxy rejected the username and password",
                    protocol="socks5", code=1, proxy=self._proxy.redacted(),
                )
            if conn.state is _AWAIT_COMMAND:
                self._socks5_after_auth()
        elif kind is CommandReply:
            assert isinstance(event, CommandReply)
            if not event.succeeded:
                raise ProxyRefusedError(
                    f"the SOCKS5 proxy refused {self._command.name} {self._target}: {describe_failed_reply(event)}",
                    protocol="socks5", code=event.code, proxy=self._proxy.redacted(),
                )
            self._record(event.bound, conn.state in _SOCKS5_ENDS)

    def _record(self, bound: Address, done: bool) -> None:
        if self._status is _BIND_LISTENING:
            self._bind_peer = bound
        else:
            self._bound = bound
        self._status = _ESTABLISHED if done else _BIND_LISTENING

    # -- SOCKS4 and HTTP: the request is the first message -------------------------------

    def _first_request(self) -> bytes:
        if isinstance(self._conn, Socks4Connection):
            assert self._target is not None
            return self._conn.send(
                Socks4Request(command=self._command, address=self._target, user_id=self._proxy.username or b"")
            )
        return self._http_request(with_auth=self._preemptive_auth)

    # -- SOCKS4 -------------------------------------------------------------------------

    def _socks4_react(self, event: Socks4Reply) -> None:
        if not event.granted:
            raise ProxyRefusedError(
                f"the SOCKS4 proxy refused {self._command.name} {self._target}: "
                f"{describe_socks4_reply(event.code)} (CD {event.code})",
                protocol="socks4", code=event.code, proxy=self._proxy.redacted(),
            )
        self._record(event.bound, self._conn.state in _SOCKS4_ENDS)

    # -- HTTP CONNECT -------------------------------------------------------------------

    def _http_request(self, *, with_auth: bool) -> bytes:
        headers = []
        if with_auth and self._proxy.username is not None:
            headers.append(proxy_basic_auth(self._proxy.username, self._proxy.password or b""))
            self._auth_sent = True
        return self._conn.send(ConnectRequest(target=self._target, headers=tuple(headers)))  # type: ignore[arg-type]

    def _http_react(self, event: ConnectResponse) -> None:
        if event.is_interim:
            return  # 1xx: the final response is still to come
        if event.succeeded:
            self._status = _ESTABLISHED
            return
        if event.status_code == 401 and self._auth_sent:
            # Some proxies (tinyproxy) answer wrong proxy credentials with 401, not 407.
            raise ProxyAuthError(
                f"the HTTP proxy rejected the credentials (401 {event.reason.decode('latin-1')})",
                protocol="http", code=401, challenges=event.get_all("WWW-Authenticate"), proxy=self._proxy.redacted(),
            )
        if event.status_code == 407:
            reusable = self._conn.state is HttpConnectState.AWAIT_REQUEST
            if self._proxy.username is not None and not self._auth_sent and reusable:
                self._out += self._http_request(with_auth=True)
                return
            why = "rejected the credentials" if self._auth_sent else "requires credentials"
            raise ProxyAuthError(
                f"the HTTP proxy {why} (407 {event.reason.decode('latin-1')})",
                protocol="http", code=407, challenges=event.challenges, proxy=self._proxy.redacted(),
            )
        raise ProxyRefusedError(
            f"the HTTP proxy refused CONNECT {self._target}: {event.status_code} {event.reason.decode('latin-1')}",
            protocol="http", code=event.status_code, proxy=self._proxy.redacted(),
        )



"""Fuzz targets: one pure ``target(data: bytes) -> None`` per parser and role.

Strategy. Every target checks the library's central promise (DESIGN.md,
"Errors"): whatever the peer sends, a parser either parses it or raises one
of the library's own errors. Any other exception, or a failed assertion, is a
finding. Each target also checks two stronger properties:

* **chunking invariance**: the bytes fed whole and fed in chunks give the same
  outcome (the same events, consumed at the same offsets, the same replies
  sent, the same trailing data, the same error type and reply hint);
* **canonical re-encoding**: where the wire format is canonical (SOCKS5
  messages, UDP datagrams, frames) the event re-encodes to exactly the octets
  it was read from; elsewhere (SOCKS4, HTTP heads) the re-encoded event must at
  least parse back to the same event.

Input layout, shared by every stream target, so that a fuzzer controls the
whole run from one byte string::

    data[0]   chunking: bits 0-6 seed the chunk sizes (0 = one byte at a time),
              bit 7 = the peer closes (EOF) after the last byte
    data[1:3] decisions: 16 bits, read in order, choosing what *we* send
              (methods offered, command, replies, accept/reject, ...)
    data[3:]  the peer's bytes

Each stream target is also available as ``check_<name>(payload, sizes, eof,
decisions)`` for property tests that pick the chunking themselves.

The targets import only the library (public names, plus a few private
readers for the re-encoding checks) and the stdlib, so ``atheris`` can
instrument them and the Hypothesis tests can call them directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from fuzz.common import (
    COMMANDS,
    EXAMPLE_DOMAIN,
    EXAMPLE_TARGETS,
    HEADER_SIZE,
    Check,
    Decisions,
    Finding,
    make_input,
    pieces_of,
    same,
    split_input,
)
from fuzz.targets_drivers import check_client_driver, check_server_driver
from fuzz.targets_http_forward import (
    check_http_forward_client,
    check_http_forward_server,
    target_http_forward_client,
    target_http_forward_server,
)
from fuzz.targets_http_response import check_http_response
from fuzz.targets_proxy_protocol import check_proxy_protocol, target_proxy_protocol
from socks_sansio import (
    NEED_DATA,
    PAUSED,
    UNSPECIFIED_ADDRESS,
    Address,
    AuthMethod,
    Command,
    CommandReply,
    CommandRequest,
    ConnectionClosed,
    ConnectRequest,
    ConnectResponse,
    Frame,
    FrameDecoder,
    Greeting,
    HttpConnectConnection,
    LocalProtocolError,
    MethodSelection,
    ProxyProtocol,
    ProxyURL,
    RemoteProtocolError,
    Role,
    Socks4Connection,
    Socks4Reply,
    Socks4Request,
    Socks5Connection,
    UdpDatagram,
    UsernamePasswordReply,
    UsernamePasswordRequest,
    detect_protocol,
    encode_frame,
    encode_udp_datagram,
    parse_udp_datagram,
    proxy_basic_auth,
)
from socks_sansio._http_connection import SENDER as HTTP_SENDER
from socks_sansio._socks4 import SENDER as SOCKS4_SENDER
from socks_sansio._socks5_state import SENDER as SOCKS5_SENDER
from socks_sansio._socks5_wire import encode_event as socks5_encode

__all__ = ["CHECKS", "HEADER_SIZE", "TARGETS", "Decisions", "Finding", "make_input", "split_input"]

_MAX_SENDS: Final = 16
"""A bound on how many events one run sends (1xx responses could otherwise loop)."""


# -- the generic engine for the connection classes ----------------------------------

Responder = Callable[[Any, Decisions], Any]
"""Given the connection (on our turn) and the decisions, the event to send, or None."""


def _drive(
    conn: Any,
    payload: bytes,
    sizes: Sequence[int] | None,
    eof: bool,
    respond: Responder,
    decisions: Decisions,
    senders: dict[Any, Role],
) -> tuple[list[tuple[Any, ...]], Any, tuple[bytes, bool] | None]:
    """Run one conversation: our sends come from *respond*, the peer's bytes from *payload*.

    Returns ``(log, final state, trailing data or None after an error)``. The log
    holds ``("got", event, start, end)`` (offsets into *payload*), ``("sent",
    event, octets)`` and ``("error", type, reply hint)``.
    """
    log: list[tuple[Any, ...]] = []
    role = conn.our_role
    sends = 0

    def our_turn() -> bool:
        return senders.get(conn.state) is role

    def send_all() -> None:
        nonlocal sends
        while our_turn() and sends < _MAX_SENDS:
            event = respond(conn, decisions)
            if event is None:
                return
            sends += 1
            try:
                log.append(("sent", event, conn.send(event)))
            except LocalProtocolError as exc:
                raise Finding(f"send({event!r}) in state {conn.state} raised {exc!r}") from exc

    pieces = pieces_of(payload, [len(payload)] if sizes is None else sizes)
    send_all()
    fed = 0
    for index, piece in enumerate(pieces or [b""]):
        if piece:
            conn.receive_data(piece)
            fed += len(piece)
        if (eof and index == len(pieces) - 1) or (not pieces and eof):
            conn.receive_data(b"")
        while True:
            start = fed - len(conn.trailing_data[0])
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                log.append(("error", RemoteProtocolError, exc.reply_hint))
                if exc.reply_hint is not None and role is Role.SERVER:
                    try:
                        log.append(("sent", exc.reply_hint, conn.send(exc.reply_hint)))
                    except LocalProtocolError as exc2:
                        raise Finding(f"the reply_hint {exc.reply_hint!r} could not be sent: {exc2!r}") from exc2
                return log, conn.state, None
            if event is NEED_DATA:
                hint = conn.read_size_hint
                if hint <= 0:
                    raise Finding(f"NEED_DATA in state {conn.state} but read_size_hint is {hint}")
                break
            if event is PAUSED:
                if not our_turn() or sends >= _MAX_SENDS:
                    break
                before = sends
                send_all()
                if sends == before:
                    break
                continue
            log.append(("got", event, start, fed - len(conn.trailing_data[0])))
    return log, conn.state, conn.trailing_data


def _run_machine(
    make: Callable[[], Any],
    payload: bytes,
    sizes: Sequence[int],
    eof: bool,
    decisions: int,
    respond: Responder,
    senders: dict[Any, Role],
    reencode: Callable[[Any, bytes], None],
) -> None:
    whole = _drive(make(), payload, None, eof, respond, Decisions(decisions), senders)
    chunked = _drive(make(), payload, sizes, eof, respond, Decisions(decisions), senders)
    same(type(make()).__name__, whole, chunked)
    for entry in whole[0]:
        if entry[0] == "got":
            reencode(entry[1], payload[entry[2] : entry[3]])


# -- SOCKS5 ---------------------------------------------------------------------------

_OFFERS: Final = (
    (AuthMethod.NO_AUTH,),
    (AuthMethod.USERNAME_PASSWORD,),
    (AuthMethod.NO_AUTH, AuthMethod.USERNAME_PASSWORD),
    (AuthMethod.GSSAPI, AuthMethod.USERNAME_PASSWORD, 0x80, AuthMethod.NO_AUTH),
)


def _socks5_reencode(event: Any, consumed: bytes) -> None:
    """SOCKS5 is canonical, except the documented leniencies on failure and auth replies."""
    if isinstance(event, ConnectionClosed):
        if consumed:
            raise Finding(f"ConnectionClosed consumed {consumed!r}")
        return
    encoded = socks5_encode(event)
    if encoded == consumed:
        return
    if (
        isinstance(event, UsernamePasswordReply)
        and len(consumed) == 2
        and consumed[0] in (1, 5)
        and (consumed[1] == 0) == event.success
    ):
        return
    if isinstance(event, CommandReply) and not event.succeeded and consumed[:2] == encoded[:2]:
        if event.bound == UNSPECIFIED_ADDRESS:
            return  # a failure reply truncated or malformed after VER REP, reported by its code
        if consumed[3:] == encoded[3:]:
            return  # a failure reply's RSV is not checked (only its REP matters)
    raise Finding(f"{event!r} re-encodes to {encoded!r}, but was read from {consumed!r}")


def check_socks5_client(payload: bytes, sizes: Sequence[int], eof: bool, decisions: int) -> None:
    """A SOCKS5 client that offers, asks and authenticates as *decisions* say; *payload* is the server.

    With the pipelining bit and a one-method offer, greeting, credentials and
    request all leave before the first answer.
    """
    config = Decisions(decisions)
    offer = _OFFERS[config.take(2)]
    command = COMMANDS[config.take(2)]
    target = EXAMPLE_TARGETS[config.take(2)]
    credentials = UsernamePasswordRequest(username=b"user", password=b"" if config.flag() else b"pass")
    pipelining = config.flag() and len(offer) == 1
    lenient = config.flag()
    request = CommandRequest(command=command, address=target)

    def respond(conn: Socks5Connection, _d: Decisions) -> Any:
        state = conn.state.name
        if state == "AWAIT_GREETING":
            return Greeting(methods=offer)
        if state == "AWAIT_AUTH_REQUEST":
            return credentials
        if state == "AWAIT_COMMAND":
            return request
        return None

    def make() -> Socks5Connection:
        conn = Socks5Connection(Role.CLIENT, lenient_auth_version=lenient, pipelining=pipelining)
        if pipelining:
            conn.send(Greeting(methods=offer))
            if offer == (AuthMethod.USERNAME_PASSWORD,):
                conn.send(credentials)
            conn.send(request)
        return conn

    _run_machine(make, payload, sizes, eof, decisions >> 11, respond, SOCKS5_SENDER, _socks5_reencode)


def _socks5_server_respond(conn: Socks5Connection, d: Decisions) -> Any:
    state = conn.state.name
    if state == "AWAIT_METHOD":
        offered = conn._offered
        choice = d.take(2)
        if choice == 3:
            return MethodSelection(method=AuthMethod.NO_ACCEPTABLE)
        for method in ((AuthMethod.NO_AUTH, AuthMethod.USERNAME_PASSWORD) if choice != 1 else
                       (AuthMethod.USERNAME_PASSWORD, AuthMethod.NO_AUTH)):
            if method in offered:
                return MethodSelection(method=method)
        return MethodSelection(method=AuthMethod.NO_ACCEPTABLE)
    if state == "AWAIT_AUTH_REPLY":
        return UsernamePasswordReply(success=not d.flag())
    if state in ("AWAIT_REPLY", "AWAIT_BIND_PEER"):
        if d.flag():
            return CommandReply(code=1 + d.take(3))
        return CommandReply(code=0, bound=EXAMPLE_TARGETS[d.take(2)])
    return None


def check_socks5_server(payload: bytes, sizes: Sequence[int], eof: bool, decisions: int) -> None:
    """A SOCKS5 server answering as *decisions* say; *payload* is the client (pipelined or not)."""
    _run_machine(lambda: Socks5Connection(Role.SERVER), payload, sizes, eof, decisions, _socks5_server_respond,
                 SOCKS5_SENDER, _socks5_reencode)


# -- SOCKS4 ---------------------------------------------------------------------------


def _socks4_reencode(event: Any, consumed: bytes) -> None:
    """SOCKS4 is not canonical (DSTIP 0.0.0.x, IP-literal host names); re-parse instead."""
    if isinstance(event, ConnectionClosed):
        if consumed:
            raise Finding(f"ConnectionClosed consumed {consumed!r}")
        return
    server = Socks4Connection(Role.SERVER)
    if isinstance(event, Socks4Request):
        server.receive_data(_socks4_encode(event))
        got = server.next_event()
        if got != event:
            raise Finding(f"{event!r} re-encoded and re-parsed as {got!r}")
        return
    assert isinstance(event, Socks4Reply)
    if len(consumed) == 8 and consumed[0] == 0 and _socks4_encode(event) != consumed:
        raise Finding(f"{event!r} re-encodes to {_socks4_encode(event)!r}, but was read from {consumed!r}")
    if len(consumed) < 8 and (event.granted or event.bound != UNSPECIFIED_ADDRESS):
        raise Finding(f"a truncated reply {consumed!r} was read as {event!r}")


def _socks4_encode(event: Any) -> bytes:
    from socks_sansio._socks4 import encode_event

    return encode_event(event)


def check_socks4_client(payload: bytes, sizes: Sequence[int], eof: bool, decisions: int) -> None:
    """A SOCKS4/4a client sending CONNECT or BIND; *payload* is the server's replies."""
    config = Decisions(decisions)
    command = (Command.CONNECT, Command.BIND)[config.take(1)]
    target = (EXAMPLE_DOMAIN, Address("192.0.2.7", 80))[config.take(1)]
    user_id = (b"", b"fuzz")[config.take(1)]
    lenient = config.flag()

    def respond(conn: Socks4Connection, _d: Decisions) -> Any:
        if conn.state.name == "AWAIT_REQUEST":
            return Socks4Request(command=command, address=target, user_id=user_id)
        return None

    _run_machine(lambda: Socks4Connection(Role.CLIENT, lenient_reply_version=lenient), payload, sizes, eof,
                 decisions, respond, SOCKS4_SENDER, _socks4_reencode)


def check_socks4_server(payload: bytes, sizes: Sequence[int], eof: bool, decisions: int) -> None:
    """A SOCKS4 server (field cap from *decisions*) answering grant or reject; *payload* is the client."""
    cap = (1024, 1, 8, 255)[decisions & 3]

    def respond(conn: Socks4Connection, d: Decisions) -> Any:
        if conn.state.name in ("AWAIT_REPLY", "AWAIT_BIND_PEER"):
            if d.flag():
                return Socks4Reply(code=91 + d.take(2) % 3)
            return Socks4Reply(code=90, bound=Address("198.51.100.1", d.take(8)))
        return None

    decisions_after_cap = decisions >> 2
    _run_machine(lambda: Socks4Connection(Role.SERVER, max_field_size=cap), payload, sizes, eof,
                 decisions_after_cap, respond, SOCKS4_SENDER, _socks4_reencode)


# -- HTTP CONNECT ---------------------------------------------------------------------


def _http_reencode(event: Any, consumed: bytes) -> None:
    """HTTP heads are not canonical (case, whitespace); re-parse the re-encoded event instead."""
    from socks_sansio._http_wire import encode_event

    if isinstance(event, ConnectionClosed):
        return
    if isinstance(event, ConnectRequest):
        server = HttpConnectConnection(Role.SERVER)
        server.receive_data(encode_event(event))
        got = server.next_event()
    else:
        client = HttpConnectConnection(Role.CLIENT)
        client.send(ConnectRequest(target=EXAMPLE_DOMAIN))
        client.receive_data(encode_event(event))
        client.receive_data(b"")  # a Content-Length body left unread (cap, EOF) is not in the event
        got = client.next_event()
    if got != event:
        raise Finding(f"{event!r} re-encoded and re-parsed as {got!r}")


def check_http_client(payload: bytes, sizes: Sequence[int], eof: bool, decisions: int) -> None:
    """An HTTP CONNECT client (retrying after keep-alive refusals); *payload* is the proxy."""
    config = Decisions(decisions)
    target = (EXAMPLE_DOMAIN, Address("192.0.2.7", 80), Address("2001:db8::1", 8080), EXAMPLE_DOMAIN)[config.take(2)]
    version = (b"1.1", b"1.0")[config.take(1)]
    max_body = (64 * 1024, 0, 4, 100)[config.take(2)]
    auth = config.flag()

    def respond(conn: HttpConnectConnection, _d: Decisions) -> Any:
        if conn.state.name != "AWAIT_REQUEST":
            return None
        headers = (proxy_basic_auth("user", "pass"),) if auth else ()
        return ConnectRequest(target=target, headers=headers, http_version=version)

    _run_machine(lambda: HttpConnectConnection(Role.CLIENT, max_body_size=max_body), payload, sizes, eof,
                 decisions, respond, HTTP_SENDER, _http_reencode)


_HTTP_ANSWERS: Final = (
    ConnectResponse(status_code=200),
    ConnectResponse(status_code=407, headers=((b"Proxy-Authenticate", b'Basic realm="x"'), (b"Content-Length", b"0"))),
    ConnectResponse(status_code=403, headers=((b"Connection", b"close"),)),
    ConnectResponse(status_code=100),
    ConnectResponse(status_code=204),
    ConnectResponse(status_code=502, body=b"upstream down"),
    ConnectResponse(status_code=299, reason=b"Fine"),
    ConnectResponse(status_code=407, body=b"who are you?", http_version=b"1.0"),
)


def check_http_server(payload: bytes, sizes: Sequence[int], eof: bool, decisions: int) -> None:
    """An HTTP CONNECT proxy (head cap from *decisions*) answering as they say; *payload* is the client."""
    max_head = (16 * 1024, 64, 200, 48)[decisions & 3]

    def respond(conn: HttpConnectConnection, d: Decisions) -> Any:
        if conn.state.name != "AWAIT_RESPONSE":
            return None
        return _HTTP_ANSWERS[d.take(3)]

    _run_machine(lambda: HttpConnectConnection(Role.SERVER, max_head_size=max_head), payload, sizes, eof,
                 decisions >> 2, respond, HTTP_SENDER, _http_reencode)


# -- stateless codecs ----------------------------------------------------------------


def target_udp(data: bytes) -> None:
    """``parse_udp_datagram`` on the whole input: one datagram."""
    outcomes: list[object] = []
    for packet in (data, bytearray(data), memoryview(data)):
        try:
            outcomes.append(parse_udp_datagram(packet))
        except RemoteProtocolError as exc:
            outcomes.append((RemoteProtocolError, exc.reply_hint))
    if outcomes[0] != outcomes[1] or outcomes[0] != outcomes[2]:
        raise Finding(f"bytes, bytearray and memoryview parse differently: {outcomes!r}")
    datagram = outcomes[0]
    if isinstance(datagram, UdpDatagram):
        encoded = encode_udp_datagram(datagram)
        if encoded != data:
            raise Finding(f"{datagram!r} re-encodes to {encoded!r}, not the datagram {data!r}")


def check_frames(payload: bytes, sizes: Sequence[int], eof: bool, decisions: int) -> None:
    """``FrameDecoder`` with a cap from *decisions* (small caps to reach the limit)."""
    cap = decisions & 0xFF if decisions & 0x100 else (1 << 32) - 1 if decisions & 0x200 else 10 * 1024 * 1024

    def run(chunks: Sequence[int] | None) -> tuple[tuple[tuple[object, ...], ...], bytes | None]:
        decoder = FrameDecoder(max_size=cap)
        log: list[tuple[object, ...]] = []
        pieces = pieces_of(payload, [len(payload)] if chunks is None else chunks)
        fed = 0
        for index, piece in enumerate(pieces or [b""]):
            if piece:
                decoder.receive_data(piece)
                fed += len(piece)
            if eof and index == max(0, len(pieces) - 1):
                decoder.receive_data(b"")
            for _ in range(len(payload) + 2):
                hint = decoder.read_size_hint
                start = fed - len(decoder._buffer.data)
                try:
                    event = decoder.next_event()
                except RemoteProtocolError:
                    log.append(("error", RemoteProtocolError))
                    return tuple(log), None
                if event is NEED_DATA:
                    if hint <= 0:
                        raise Finding(f"NEED_DATA but read_size_hint is {hint}")
                    break
                if isinstance(event, ConnectionClosed):
                    log.append(("closed",))
                    break
                if hint != 0:
                    raise Finding(f"a whole frame was buffered but read_size_hint was {hint}")
                log.append(("frame", event, start, fed - len(decoder._buffer.data)))
            else:
                raise Finding("next_event never stopped returning frames")
        return tuple(log), bytes(decoder._buffer.data)

    whole = run(None)
    same("FrameDecoder", whole, run(sizes))
    for entry in whole[0]:
        if entry[0] == "frame":
            frame = entry[1]
            assert isinstance(entry[2], int)
            assert isinstance(entry[3], int)
            assert isinstance(frame, Frame)
            consumed = payload[entry[2] : entry[3]]
            if encode_frame(frame.payload, max_size=cap) != consumed:
                raise Finding(f"{frame!r} re-encodes differently from {consumed!r}")


def target_proxy_url(data: bytes) -> None:
    """``ProxyURL.parse`` on the input decoded as UTF-8 (surrogateescape) and as Latin-1."""
    for text in {data.decode("utf-8", "surrogateescape"), data.decode("latin-1")}:
        try:
            url = ProxyURL.parse(text)
        except LocalProtocolError:
            continue
        again = ProxyURL.parse(url.to_url(include_password=True))
        if again != url:
            raise Finding(f"{text!r} parsed as {url!r}, whose URL {url.to_url()!r} parses as {again!r}")
        shown = url.redacted().partition("://")[2].rpartition("@")[0].encode("utf-8", "surrogateescape")
        password = url.password or b""
        if len(password) >= 4 and password in shown and password not in (url.username or b"") + b":***":
            raise Finding(f"redacted URL {url.redacted()!r} shows the password")


def target_detect(data: bytes) -> None:
    """``detect_protocol``: consistent across input types and with every longer input."""
    outcomes: list[object] = []
    for view in (data, bytearray(data), memoryview(data)):
        try:
            outcomes.append(detect_protocol(view))
        except RemoteProtocolError as exc:
            outcomes.append((RemoteProtocolError, exc.reply_hint))
    if len(set(map(repr, outcomes))) != 1:
        raise Finding(f"bytes, bytearray and memoryview detect differently: {outcomes!r}")
    result = outcomes[0]
    if data and result is None:
        raise Finding("no answer although data arrived")
    if not data and result is not None:
        raise Finding("an answer from no data")
    if isinstance(result, ProxyProtocol):
        # An answer from a prefix must not change with more data (except the HTTP/2 refusal).
        for size in range(1, len(data)):
            try:
                early = detect_protocol(data[:size])
            except RemoteProtocolError:
                if data.startswith(b"PRI "):
                    continue  # documented: "PRI " already names the HTTP/2 preface, refused at once
                raise Finding(f"{data[:size]!r} is refused but {data!r} is {result}") from None
            if early is not result:
                raise Finding(f"{data[:size]!r} is {early} but {data!r} is {result}")


# -- registry -------------------------------------------------------------------------

CHECKS: Final[dict[str, Check]] = {
    "socks5_client": check_socks5_client,
    "socks5_server": check_socks5_server,
    "socks4_client": check_socks4_client,
    "socks4_server": check_socks4_server,
    "http_client": check_http_client,
    "http_server": check_http_server,
    "http_response": check_http_response,
    "frames": check_frames,
    "client_driver": check_client_driver,
    "server_driver": check_server_driver,
    "proxy_protocol": check_proxy_protocol,
    "http_forward_server": check_http_forward_server,
    "http_forward_client": check_http_forward_client,
}
"""The stream targets, callable with an explicit chunking (for property tests)."""


def _from_check(check: Check) -> Callable[[bytes], None]:
    def target(data: bytes) -> None:
        payload, sizes, eof, decisions = split_input(data)
        check(payload, sizes, eof, decisions)

    target.__name__ = f"target_{check.__name__.removeprefix('check_')}"
    target.__doc__ = check.__doc__
    return target


TARGETS: Final[dict[str, Callable[[bytes], None]]] = {
    **{name: _from_check(check) for name, check in CHECKS.items()},
    "udp": target_udp,
    "proxy_url": target_proxy_url,
    "detect": target_detect,
    "proxy_protocol": target_proxy_protocol,  # the same as _from_check(check_proxy_protocol), by name
    "http_forward_server": target_http_forward_server,  # the same as _from_check(check_...), by name
    "http_forward_client": target_http_forward_client,
}
"""Every fuzz target by name: ``target(data: bytes) -> None``."""

"""Fuzz targets for the drivers: ``ClientHandshake`` (the client's whole handshake over any proxy URL) and
``ServerHandshake`` (one port, every protocol, credentials and dials decided by the decision bits).

``check_client_driver`` also runs prepared handshakes (built with ``target=None``,
``request()`` once ``READY``), which must send the same octets and end the same way
as a normal one. ``check_server_driver`` checks that the protocol the driver speaks
is the one :func:`detect_protocol` names. Input layout: :mod:`fuzz.common`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from fuzz.common import COMMANDS, EXAMPLE_DOMAIN, EXAMPLE_TARGETS, Decisions, Finding, pieces_of, same
from socks_sansio import (
    NEED_DATA,
    PAUSED,
    Address,
    ClientClosed,
    ClientHandshake,
    Command,
    CredentialsReceived,
    Failure,
    HandshakeStatus,
    ProxyError,
    ProxyProtocol,
    ProxyRefusedError,
    ProxyURL,
    RemoteProtocolError,
    ServerHandshake,
    ServerStatus,
    TunnelRequested,
    detect_protocol,
)

__all__ = ["check_client_driver", "check_server_driver"]

_CLIENT_PROXIES: Final = (
    "socks5h://proxy.example:1080",
    "socks5h://user:pass@proxy.example:1080",
    "socks4a://proxy.example:1080",
    "socks4a://fuzz@proxy.example:1080",
    "http://proxy.example:3128",
    "http://user:pass@proxy.example:3128",
    "socks5h://u:@proxy.example",
    "https://user:pass@proxy.example",
)


def check_client_driver(payload: bytes, sizes: Sequence[int], eof: bool, decisions: int) -> None:
    """``ClientHandshake`` for socks5h/socks4a/http proxies; *payload* is the proxy's answers."""
    config = Decisions(decisions)
    proxy = ProxyURL.parse(_CLIENT_PROXIES[config.take(3)])
    target = EXAMPLE_TARGETS[config.take(2)]
    command = COMMANDS[config.take(2)]
    pipelined = config.flag()
    preemptive = config.flag()
    lenient = config.flag()
    prepared = config.flag() and not pipelined
    if proxy.protocol is ProxyProtocol.SOCKS4 and (command is Command.UDP_ASSOCIATE or target.atype == 4):
        command, target = Command.CONNECT, EXAMPLE_DOMAIN
    if proxy.protocol is ProxyProtocol.HTTP:
        command = Command.CONNECT
        if target.port == 0:
            target = EXAMPLE_DOMAIN

    def run(chunks: Sequence[int] | None, prepare: bool = False) -> tuple[object, ...]:
        # prepare: built with target=None (a pool's connection); request() as soon as it is READY.
        handshake = ClientHandshake(proxy, None if prepare else target, command=command, pipelined=pipelined,
                                    preemptive_auth=preemptive, lenient_auth_version=lenient)

        def request_when_ready() -> None:
            if prepare and handshake.status is HandshakeStatus.READY:
                handshake.request(target, command=command)

        request_when_ready()
        sent = handshake.data_to_send()  # everything sent, however the answers were cut
        pieces = pieces_of(payload, [len(payload)] if chunks is None else chunks)
        if eof:
            pieces.append(b"")
        for piece in pieces:
            if handshake.read_size_hint < (0 if handshake.established else 1):
                raise Finding(f"read_size_hint {handshake.read_size_hint} in status {handshake.status}")
            try:
                handshake.receive_data(piece)
            except ProxyError as exc:
                _check_refusal(exc)
                sent += handshake.data_to_send()
                return sent, ("error", type(exc), getattr(exc, "code", None)), handshake.status
            request_when_ready()
            sent += handshake.data_to_send()
        trailing = handshake.trailing_data if handshake.established else None
        return sent, handshake.status, handshake.bound, handshake.bind_peer, trailing

    whole = run(None)
    chunked = run(sizes)
    same("ClientHandshake", whole, chunked)
    # The driver must reach ESTABLISHED only through the protocol's success reply.
    if HandshakeStatus.ESTABLISHED in whole and not payload:
        raise Finding("established without any answer from the proxy")
    if prepared:
        # A prepared handshake whose proxy stayed silent while it was READY (here: READY was
        # reached at the end of a piece) sends the same octets and ends the same way as a
        # normal one; a proxy that spoke while it was READY is an error, raised in READY.
        for chunks, normal in ((None, whole), (sizes, chunked)):
            outcome = run(chunks, prepare=True)
            if outcome[-1] is HandshakeStatus.READY and isinstance(outcome[1], tuple):
                continue
            same("ClientHandshake", normal, outcome, ("normal", "prepared"))


def _check_refusal(exc: ProxyError) -> None:
    """A refusal must carry a code that refuses: never SOCKS5 REP 0, SOCKS4 CD 90, or an HTTP 2xx."""
    if not isinstance(exc, ProxyRefusedError):
        return
    success = {"socks5": 0, "socks4": 90}.get(exc.protocol)
    if exc.code == success or (exc.protocol == "http" and 200 <= exc.code <= 299):
        raise Finding(f"{type(exc).__name__} for a success code: {exc}")
    if exc.protocol == "http" and exc.code < 200:
        raise Finding(f"an interim {exc.code} response was taken as a refusal: {exc}")


def check_server_driver(payload: bytes, sizes: Sequence[int], eof: bool, decisions: int) -> None:
    """``ServerHandshake`` on one port; credentials and dials decided by *decisions*; *payload* is the client."""
    config = Decisions(decisions)
    auth_required = config.flag()
    allow_socks4 = config.flag()
    protocols = (frozenset(ProxyProtocol), frozenset({ProxyProtocol.SOCKS5}),
                 frozenset({ProxyProtocol.HTTP, ProxyProtocol.SOCKS4}), frozenset(ProxyProtocol))[config.take(2)]
    answers = config.take(12)

    def run(chunks: Sequence[int] | None) -> tuple[object, ...]:
        server = ServerHandshake(protocols=protocols, auth_required=auth_required,
                                 allow_socks4_without_auth=allow_socks4)
        d = Decisions(answers, 12)
        log: list[object] = []
        pieces = pieces_of(payload, [len(payload)] if chunks is None else chunks)
        # EOF is delivered after the last piece was drained; EOF arriving together with
        # undrained bytes has its own regression test (tests/test_fuzz_regressions.py).
        for piece in [*pieces, b""] if eof else pieces:
            server.receive_data(piece)
            for _ in range(64):
                try:
                    event = server.next_event()
                except RemoteProtocolError as exc:
                    log.append(("error", type(exc), server.data_to_send(), server.status))
                    return tuple(log), server.status, server.protocol, None
                if event is NEED_DATA or event is PAUSED:
                    break
                log.append(event)
                if isinstance(event, ClientClosed):
                    return tuple(log), server.status, server.protocol, None
                if isinstance(event, CredentialsReceived):
                    server.accept_credentials(not d.flag())
                elif isinstance(event, TunnelRequested):
                    _decide(server, d)
                else:
                    raise Finding(f"unexpected event {event!r}")
                log.append(server.data_to_send())
            else:
                raise Finding("next_event never stopped returning events")
        return tuple(log), server.status, server.protocol, server.trailing_data

    whole = run(None)
    same("ServerHandshake", whole, run(sizes))
    if payload:
        try:
            detected = detect_protocol(payload)
        except RemoteProtocolError:
            detected = None
        if whole[2] is not None and whole[2] is not detected:
            raise Finding(f"the server driver speaks {whole[2]} but detect_protocol says {detected}")


def _decide(server: ServerHandshake, d: Decisions) -> None:
    choice = d.take(2)
    if choice == 1:
        server.reject(list(Failure)[d.take(3)])
        return
    if choice == 3:  # e.g. over a rate limit: the wait rounds up to whole seconds (HTTP Retry-After)
        server.reject(Failure.RATE_LIMITED if d.flag() else Failure.NOT_ALLOWED, retry_after=d.take(2) * 0.75)
        return
    server.accept(EXAMPLE_TARGETS[d.take(2)])
    if server.status is ServerStatus.AWAITING_BIND_PEER:
        if d.flag():
            server.reject(Failure.CONNECTION_REFUSED)
        else:
            server.bind_connected(Address("203.0.113.9", 4444))

"""The pure drivers: a client handshake against a server handshake, for every protocol."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
    LocalProtocolError,
    ProxyAuthError,
    ProxyConnectionError,
    ProxyError,
    ProxyProtocol,
    ProxyProtocolError,
    ProxyRefusedError,
    ProxyURL,
    RemoteProtocolError,
    ServerHandshake,
    ServerStatus,
    TunnelRequested,
    needs_local_resolution,
)

from .helpers import chunked

USERS = {b"alice": b"s3cret"}
BOUND = Address("192.0.2.1", 40000)


def run(
    client: ClientHandshake,
    server: ServerHandshake,
    *,
    decide: Callable[[TunnelRequested], Failure | None] = lambda _r: None,
    split: Callable[[bytes], list[bytes]] = lambda b: [b],
    early: bytes = b"",
    late: bytes = b"",
) -> list[object]:
    """Drive both handshakes against each other; return the server's events."""
    events: list[object] = []
    to_server = client.data_to_send()
    to_client = b""
    for _ in range(50):
        for piece in split(to_server):
            server.receive_data(piece)
        to_server = b""
        while True:
            event = server.next_event()
            if event is NEED_DATA or event is PAUSED:
                break
            events.append(event)
            if isinstance(event, CredentialsReceived):
                server.accept_credentials(USERS.get(event.username) == event.password)
            elif isinstance(event, TunnelRequested):
                server.receive_data(early)  # the client's early data, sent before our reply
                failure = decide(event)
                if failure is not None:
                    server.reject(failure)
                else:
                    server.accept(BOUND)
                    if event.command is Command.BIND:
                        server.bind_connected(Address("198.51.100.9", 20))
        to_client += server.data_to_send()
        if server.status is ServerStatus.ESTABLISHED:
            to_client += late
        for piece in split(to_client):
            client.receive_data(piece)
            to_server += client.data_to_send()
        to_client = b""
        if client.established or server.must_close:
            if server.must_close and not client.established:
                client.receive_data(b"")
            return events
    raise AssertionError("the handshake did not finish")


def url(scheme: str, auth: bool) -> ProxyURL:
    return ProxyURL.parse(f"{scheme}://{'alice:s3cret@' if auth else ''}proxy.test:1080")


TARGETS = [Address("example.com", 443), Address("203.0.113.5", 80), Address("2001:db8::1", 8443)]
SCHEMES = ["socks5h", "socks4a", "http"]


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("auth", [False, True])
@pytest.mark.parametrize("target", TARGETS, ids=str)
@pytest.mark.parametrize("bytewise", [False, True])
def test_client_and_server_drivers_agree(scheme: str, auth: bool, target: Address, bytewise: bool) -> None:
    if scheme == "socks4a" and isinstance(target.host, ipaddress.IPv6Address):
        with pytest.raises(LocalProtocolError, match="IPv6"):
            ClientHandshake(url(scheme, False), target)
        return
    if scheme == "socks4a" and auth:
        auth = False  # SOCKS4 has no password; its user id is tested below
    client = ClientHandshake(url(scheme, auth), target)
    server = ServerHandshake(auth_required=auth)
    split = (lambda b: chunked(b, [1])) if bytewise else (lambda b: [b])
    events = run(client, server, split=split, early=b"early client bytes", late=b"early server bytes")
    assert client.established and server.status is ServerStatus.ESTABLISHED
    requests = [e for e in events if isinstance(e, TunnelRequested)]
    assert [(r.command, r.target) for r in requests] == [(Command.CONNECT, target)]
    assert requests[0].username == (b"alice" if auth else None)
    assert server.protocol is {"socks5h": ProxyProtocol.SOCKS5, "socks4a": ProxyProtocol.SOCKS4,
                               "http": ProxyProtocol.HTTP}[scheme]
    assert server.trailing_data == (b"early client bytes", False)
    assert client.trailing_data == (b"early server bytes", False)
    if scheme != "http":
        assert client.bound == BOUND


@pytest.mark.parametrize("scheme", ["socks5h", "http"])
def test_wrong_password_is_refused(scheme: str) -> None:
    proxy = ProxyURL.parse(f"{scheme}://alice:wrong@proxy.test:1080")
    client, server = ClientHandshake(proxy, TARGETS[0]), ServerHandshake(auth_required=True)
    with pytest.raises(ProxyAuthError, match="rejected") as info:
        run(client, server)
    assert server.must_close
    assert "wrong" not in str(info.value)
    if scheme == "http":
        assert info.value.code == 407
        assert info.value.challenges == (b'Basic realm="socks-sansio", charset="UTF-8"',)


@pytest.mark.parametrize("scheme", ["socks5h", "http"])
def test_missing_credentials_are_refused(scheme: str) -> None:
    client, server = ClientHandshake(url(scheme, False), TARGETS[0]), ServerHandshake(auth_required=True)
    with pytest.raises(ProxyAuthError, match="credentials"):
        run(client, server)


def test_socks4_is_refused_when_auth_is_required() -> None:
    client, server = ClientHandshake(url("socks4a", False), TARGETS[0]), ServerHandshake(auth_required=True)
    with pytest.raises(ProxyRefusedError, match="CD 91"):
        run(client, server)
    allowed = ServerHandshake(auth_required=True, allow_socks4_without_auth=True)
    run(ClientHandshake(ProxyURL.parse("socks4a://bob@proxy.test"), TARGETS[0]), allowed)
    assert allowed.status is ServerStatus.ESTABLISHED and allowed.username == b"bob"


def test_http_407_is_retried_with_credentials_on_the_same_connection() -> None:
    client = ClientHandshake(url("http", True), TARGETS[0], preemptive_auth=False)
    server = ServerHandshake(auth_required=True)
    events = run(client, server)
    assert client.established
    assert [type(e) for e in events] == [CredentialsReceived, TunnelRequested]


@pytest.mark.parametrize("auth", [False, True])
@pytest.mark.parametrize("bytewise", [False, True])
def test_pipelined_socks5_costs_one_round_trip(auth: bool, bytewise: bool) -> None:
    client = ClientHandshake(url("socks5h", auth), TARGETS[0], pipelined=True)
    first_flight = client.data_to_send()
    server = ServerHandshake(auth_required=auth)
    server.receive_data(first_flight)
    events = []
    while (event := server.next_event()) not in (NEED_DATA, PAUSED):
        events.append(event)
        if isinstance(event, CredentialsReceived):
            server.accept_credentials(True)
        elif isinstance(event, TunnelRequested):
            server.accept(BOUND)
    assert server.status is ServerStatus.ESTABLISHED  # everything arrived in the first flight
    answer = server.data_to_send() + b"tunnel"
    for piece in chunked(answer, [1]) if bytewise else [answer]:
        client.receive_data(piece)
        assert client.data_to_send() == b""  # nothing more to send: one round trip
    assert client.established and client.trailing_data == (b"tunnel", False)


def test_pipelined_socks5_handles_a_refused_method() -> None:
    client = ClientHandshake(url("socks5h", False), TARGETS[0], pipelined=True)
    server = ServerHandshake(auth_required=True)
    with pytest.raises(ProxyAuthError, match="none of the offered methods"):
        run(client, server)


@pytest.mark.parametrize("failure", list(Failure))
@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_failure_reaches_the_client_with_its_code(failure: Failure, scheme: str) -> None:
    client, server = ClientHandshake(url(scheme, False), TARGETS[0]), ServerHandshake()
    with pytest.raises(ProxyRefusedError) as info:
        run(client, server, decide=lambda _r: failure)
    expected = {"socks5h": failure.socks5_code, "socks4a": 91, "http": failure.http_status}[scheme]
    assert info.value.code == expected
    assert info.value.protocol == {"socks5h": "socks5", "socks4a": "socks4", "http": "http"}[scheme]
    assert server.must_close


@pytest.mark.parametrize("scheme", ["socks5h", "socks4a"])
def test_bind_has_two_stages(scheme: str) -> None:
    client = ClientHandshake(url(scheme, False), Address("203.0.113.5", 0), command=Command.BIND)
    server = ServerHandshake()
    for _ in range(5):  # negotiate up to the request
        server.receive_data(client.data_to_send())
        request = server.next_event()
        if isinstance(request, TunnelRequested):
            break
        client.receive_data(server.data_to_send())
    assert isinstance(request, TunnelRequested) and request.command is Command.BIND
    server.accept(BOUND)
    assert server.status is ServerStatus.AWAITING_BIND_PEER
    client.receive_data(server.data_to_send())
    assert client.status is HandshakeStatus.BIND_LISTENING and client.bound == BOUND
    server.bind_connected(Address("198.51.100.9", 20))
    client.receive_data(server.data_to_send())
    assert client.established and client.bind_peer == Address("198.51.100.9", 20)


def test_udp_associate_through_socks5() -> None:
    client = ClientHandshake(url("socks5h", True), Address("0.0.0.0", 0), command=Command.UDP_ASSOCIATE)
    server = ServerHandshake(auth_required=True)
    events = run(client, server)
    assert client.established and client.bound == BOUND
    assert [e.command for e in events if isinstance(e, TunnelRequested)] == [Command.UDP_ASSOCIATE]


@pytest.mark.parametrize(
    ("scheme", "command"), [("http", Command.BIND), ("socks4a", Command.UDP_ASSOCIATE)]
)
def test_impossible_commands_are_local_errors(scheme: str, command: Command) -> None:
    with pytest.raises(LocalProtocolError, match="only"):
        ClientHandshake(url(scheme, False), TARGETS[0], command=command)


def test_local_resolution_is_required_for_socks5_without_h() -> None:
    proxy = ProxyURL.parse("socks5://proxy.test")
    assert needs_local_resolution(proxy, Address("example.com", 80))
    assert not needs_local_resolution(proxy, Address("127.0.0.1", 80))
    with pytest.raises(LocalProtocolError, match=r"socks5h://"):
        ClientHandshake(proxy, Address("example.com", 80))


def test_server_refuses_disabled_protocols() -> None:
    server = ServerHandshake(protocols=frozenset({ProxyProtocol.SOCKS5}))
    server.receive_data(b"CONNECT a:1 HTTP/1.1\r\n\r\n")
    with pytest.raises(RemoteProtocolError, match="does not accept"):
        server.next_event()
    assert server.must_close


def test_server_answers_plain_get_with_405() -> None:
    server = ServerHandshake()
    server.receive_data(b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
    with pytest.raises(RemoteProtocolError):
        server.next_event()
    assert server.data_to_send().startswith(b"HTTP/1.1 405 ")
    assert server.must_close


def test_server_sends_the_hinted_refusal_on_garbage() -> None:
    server = ServerHandshake()
    server.receive_data(b"\x05\x01\x00\x05\x07\x00\x01")
    with pytest.raises(RemoteProtocolError, match="unknown command"):
        server.next_event()
    assert server.data_to_send() == b"\x05\x00" + b"\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00"


def test_client_closing_early_is_reported() -> None:
    server = ServerHandshake()
    server.receive_data(b"")
    assert server.next_event() == ClientClosed()
    server = ServerHandshake()
    server.receive_data(b"\x05\x01\x00")
    server.next_event()
    server.receive_data(b"")
    assert server.next_event() == ClientClosed()


def test_proxy_closing_mid_handshake_is_a_connection_error() -> None:
    client = ClientHandshake(url("socks5h", False), TARGETS[0])
    with pytest.raises(ProxyConnectionError, match="closed the connection during the handshake"):
        client.receive_data(b"")


def test_app_answers_out_of_turn_are_local_errors() -> None:
    server = ServerHandshake()
    with pytest.raises(LocalProtocolError):
        server.accept(BOUND)
    with pytest.raises(LocalProtocolError):
        server.accept_credentials(True)
    with pytest.raises(LocalProtocolError):
        server.reject(Failure.GENERAL_FAILURE)
    with pytest.raises(LocalProtocolError):
        server.bind_connected(BOUND)


@given(garbage=st.binary(max_size=300), sizes=st.lists(st.integers(1, 50), min_size=1, max_size=5))
def test_server_driver_raises_only_library_errors(garbage: bytes, sizes: list[int]) -> None:
    server = ServerHandshake(auth_required=True, max_head_size=256)
    try:
        for piece in chunked(garbage, sizes):
            server.receive_data(piece)
            for _ in range(10):
                event = server.next_event()
                if isinstance(event, CredentialsReceived):
                    server.accept_credentials(False)
                elif isinstance(event, TunnelRequested):
                    server.reject(Failure.NOT_ALLOWED)
                elif event is NEED_DATA or event is PAUSED or isinstance(event, ClientClosed):
                    break
            server.data_to_send()
            if server.must_close:
                return
    except RemoteProtocolError:
        assert server.must_close


@given(
    scheme=st.sampled_from(["socks5h", "socks4a", "http"]),
    garbage=st.binary(max_size=300),
    sizes=st.lists(st.integers(1, 50), min_size=1, max_size=5),
)
def test_client_driver_raises_only_proxy_errors(scheme: str, garbage: bytes, sizes: list[int]) -> None:
    client = ClientHandshake(url(scheme, scheme != "socks4a"), TARGETS[0])
    client.data_to_send()
    try:
        for piece in [*chunked(garbage, sizes), b""]:
            client.receive_data(piece)
            client.data_to_send()
            if client.established:
                return
    except ProxyError:
        pass


def test_http_401_after_credentials_is_an_auth_error() -> None:
    client = ClientHandshake(url("http", True), TARGETS[0])
    client.data_to_send()
    with pytest.raises(ProxyAuthError, match="401") as info:
        client.receive_data(
            b'HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm="t"\r\nContent-Length: 0\r\n\r\n'
        )
    assert info.value.challenges == (b'Basic realm="t"',)


# -- prepared handshakes (target=None, then request()) ------------------------------------------


def converse(
    client: ClientHandshake,
    server: ServerHandshake,
    *,
    target: Address | None = None,
    command: Command = Command.CONNECT,
    split: Callable[[bytes], list[bytes]] = lambda b: [b],
) -> tuple[bytes, bytes, list[HandshakeStatus]]:
    """Drive *client* against *server*; a prepared client gets request(*target*) once READY.

    Returns every octet the client sent, every octet the server sent, and the
    client's status after each step, to compare transcripts byte for byte.
    """
    sent, answered, statuses = b"", b"", []
    for _ in range(50):
        if client.status is HandshakeStatus.READY:
            assert target is not None
            client.request(target, command=command)
        to_server = client.data_to_send()
        sent += to_server
        server.receive_data(to_server)
        while (event := server.next_event()) not in (NEED_DATA, PAUSED):
            if isinstance(event, CredentialsReceived):
                server.accept_credentials(USERS.get(event.username) == event.password)
            elif isinstance(event, TunnelRequested):
                server.accept(BOUND)
                if event.command is Command.BIND:
                    server.bind_connected(Address("198.51.100.9", 20))
        to_client = server.data_to_send()
        answered += to_client
        for piece in split(to_client):
            client.receive_data(piece)
        statuses.append(client.status)
        if client.established:
            sent += client.data_to_send()
            return sent, answered, statuses
    raise AssertionError("the handshake did not finish")


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("auth", [False, True])
@pytest.mark.parametrize("target", TARGETS[:2], ids=str)
@pytest.mark.parametrize("bytewise", [False, True])
def test_prepared_then_request_sends_the_normal_transcript(
    scheme: str, auth: bool, target: Address, bytewise: bool
) -> None:
    proxy = url(scheme, auth and scheme != "socks4a")
    split = (lambda b: chunked(b, [1])) if bytewise else (lambda b: [b])
    normal = converse(ClientHandshake(proxy, target), ServerHandshake(auth_required=auth and scheme != "socks4a"),
                      split=split)  # fmt: skip
    prepared_client = ClientHandshake(proxy, None)
    assert prepared_client.target is None
    prepared = converse(prepared_client, ServerHandshake(auth_required=auth and scheme != "socks4a"),
                        target=target, split=split)  # fmt: skip
    assert prepared[:2] == normal[:2]  # the same octets both ways
    assert prepared_client.established and prepared_client.bound == (BOUND if scheme != "http" else None)
    assert prepared_client.target == target and prepared_client.command is Command.CONNECT


@pytest.mark.parametrize("auth", [False, True])
@pytest.mark.parametrize("bytewise", [False, True])
def test_prepared_socks5_stops_before_the_request(auth: bool, bytewise: bool) -> None:
    client, server = ClientHandshake(url("socks5h", auth), None), ServerHandshake(auth_required=auth)
    rounds = 0
    while client.status is HandshakeStatus.IN_PROGRESS:
        rounds += 1
        server.receive_data(client.data_to_send())
        while (event := server.next_event()) not in (NEED_DATA, PAUSED):
            assert isinstance(event, CredentialsReceived), event  # never a request
            server.accept_credentials(True)
        answer = server.data_to_send()
        for piece in chunked(answer, [1]) if bytewise else [answer]:
            client.receive_data(piece)
    assert client.status is HandshakeStatus.READY and rounds == (2 if auth else 1)
    assert client.data_to_send() == b"" and not client.established
    assert client.read_size_hint >= 1
    # From READY, the request costs exactly one round trip.
    client.request(TARGETS[0])
    server.receive_data(client.data_to_send())
    request = server.next_event()
    assert isinstance(request, TunnelRequested) and request.target == TARGETS[0]
    server.accept(BOUND)
    client.receive_data(server.data_to_send() + b"first")
    assert client.established and client.data_to_send() == b""
    assert client.trailing_data == (b"first", False)


@pytest.mark.parametrize("scheme", ["socks4a", "http", "https"])
def test_prepared_socks4_and_http_are_ready_at_once(scheme: str) -> None:
    client = ClientHandshake(url(scheme, False), None)
    assert client.status is HandshakeStatus.READY
    assert client.data_to_send() == b""
    client.request(TARGETS[0])
    assert client.status is HandshakeStatus.IN_PROGRESS
    assert client.data_to_send()


@pytest.mark.parametrize("command", [Command.BIND, Command.UDP_ASSOCIATE])
def test_prepared_socks5_takes_any_command(command: Command) -> None:
    target = Address("0.0.0.0", 0)
    normal = converse(ClientHandshake(url("socks5h", True), target, command=command),
                      ServerHandshake(auth_required=True))  # fmt: skip
    client = ClientHandshake(url("socks5h", True), None)
    prepared = converse(client, ServerHandshake(auth_required=True), target=target, command=command)
    assert prepared[0] == normal[0]
    assert client.command is command


def test_prepared_handshake_refuses_pipelining_and_early_requests() -> None:
    with pytest.raises(LocalProtocolError, match="cannot be pipelined"):
        ClientHandshake(url("socks5h", True), None, pipelined=True)
    client = ClientHandshake(url("socks5h", False), None)
    with pytest.raises(LocalProtocolError, match="status READY, not IN_PROGRESS"):
        client.request(TARGETS[0])  # the greeting is not answered yet
    with pytest.raises(LocalProtocolError, match="status READY, not IN_PROGRESS"):
        ClientHandshake(url("socks5h", False), TARGETS[0]).request(TARGETS[0])


@pytest.mark.parametrize(
    ("scheme", "target", "command", "match"),
    [
        ("socks4a", Address("2001:db8::1", 80), Command.CONNECT, "IPv6"),
        ("socks4a", TARGETS[0], Command.UDP_ASSOCIATE, "only CONNECT and BIND"),
        ("http", TARGETS[0], Command.BIND, "can only CONNECT"),
        ("socks5", TARGETS[0], Command.CONNECT, "resolve names locally"),
    ],
)
def test_an_impossible_request_leaves_the_prepared_handshake_ready(
    scheme: str, target: Address, command: Command, match: str
) -> None:
    client = ClientHandshake(url(scheme, False), None)
    if scheme == "socks5":
        client.receive_data(b"\x05\x00")
        client.data_to_send()
    assert client.status is HandshakeStatus.READY
    with pytest.raises(LocalProtocolError, match=match):
        client.request(target, command=command)
    assert client.status is HandshakeStatus.READY and client.target is None
    assert client.data_to_send() == b""
    client.request(Address("203.0.113.5", 80))  # a possible one still works
    assert client.status is HandshakeStatus.IN_PROGRESS and client.data_to_send()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_prepared_connection_must_stay_silent(scheme: str) -> None:
    def ready() -> ClientHandshake:
        client = ClientHandshake(url(scheme, False), None)
        if scheme == "socks5h":
            client.data_to_send()
            client.receive_data(b"\x05\x00")
        assert client.status is HandshakeStatus.READY
        return client

    with pytest.raises(ProxyProtocolError, match="sent 3 octets on a prepared connection"):
        ready().receive_data(b"xyz")
    with pytest.raises(ProxyConnectionError, match="closed the prepared connection"):
        ready().receive_data(b"")


@pytest.mark.parametrize(
    ("proxy", "answers"),
    [
        ("socks5h://proxy.test:1080", b"\x05\x00"),
        ("socks5h://alice:secret@proxy.test:1080", b"\x05\x02\x01\x00"),
    ],
)
def test_octets_after_the_answer_that_made_it_ready_are_not_kept(proxy: str, answers: bytes) -> None:
    # Fuzz finding (client_driver, prepared mode): octets in the same segment as the
    # answer that made the handshake READY were kept in the buffer and later read as
    # the reply to a request not yet sent; in a later segment they were an error.
    reply = b"\x05\x00\x00\x01\xc0\x00\x02\x07\x00\x50"
    client = ClientHandshake(ProxyURL.parse(proxy), None)
    client.data_to_send()
    with pytest.raises(ProxyProtocolError, match="sent 10 octets on a prepared connection"):
        client.receive_data(answers + reply)
    assert client.status is HandshakeStatus.READY


def test_prepared_auth_refusal_is_an_auth_error() -> None:
    client = ClientHandshake(ProxyURL.parse("socks5h://alice:wrong@proxy.test:1080"), None)
    with pytest.raises(ProxyAuthError, match="rejected the username and password"):
        converse(client, ServerHandshake(auth_required=True), target=TARGETS[0])
    assert client.status is HandshakeStatus.IN_PROGRESS


@given(
    scheme=st.sampled_from(SCHEMES),
    auth=st.booleans(),
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=6),
    target=st.sampled_from(TARGETS[:2]),
)
def test_prepared_transcript_matches_under_any_segmentation(
    scheme: str, auth: bool, sizes: list[int], target: Address
) -> None:
    auth = auth and scheme != "socks4a"
    normal = converse(ClientHandshake(url(scheme, auth), target), ServerHandshake(auth_required=auth))
    prepared = converse(ClientHandshake(url(scheme, auth), None), ServerHandshake(auth_required=auth),
                        target=target, split=lambda b: chunked(b, sizes))  # fmt: skip
    assert prepared[:2] == normal[:2]


class TestRateLimited:
    """``Failure.RATE_LIMITED``: REP 2, SOCKS4 91, HTTP 429 with ``Retry-After`` when a wait is known."""

    @staticmethod
    def pending(scheme: str) -> tuple[ClientHandshake, ServerHandshake]:
        client, server = ClientHandshake(url(scheme, False), TARGETS[0]), ServerHandshake()
        for _ in range(5):
            server.receive_data(client.data_to_send())
            if isinstance(server.next_event(), TunnelRequested):
                return client, server
            client.receive_data(server.data_to_send())
        raise AssertionError("no request reached the server")

    @pytest.mark.parametrize(("scheme", "code"), [("socks5h", 2), ("socks4a", 91), ("http", 429)])
    def test_each_protocol_refuses_with_its_code(self, scheme: str, code: int) -> None:
        client, server = self.pending(scheme)
        server.reject(Failure.RATE_LIMITED, retry_after=0.2)
        assert server.must_close
        with pytest.raises(ProxyRefusedError) as info:
            client.receive_data(server.data_to_send())
        assert info.value.code == code

    def test_http_says_when_to_retry_in_whole_seconds(self) -> None:
        _client, server = self.pending("http")
        server.reject(Failure.RATE_LIMITED, retry_after=2.01)
        head = server.data_to_send()
        assert head.startswith(b"HTTP/1.1 429 Too Many Requests\r\n")
        assert b"\r\nRetry-After: 3\r\n" in head

    def test_no_retry_after_without_a_wait(self) -> None:
        _client, server = self.pending("http")
        server.reject(Failure.RATE_LIMITED)
        head = server.data_to_send()
        assert head.startswith(b"HTTP/1.1 429 ") and b"Retry-After" not in head

    @pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "3"])
    def test_a_bad_wait_is_a_local_error_and_changes_nothing(self, bad: object) -> None:
        _client, server = self.pending("http")
        with pytest.raises(LocalProtocolError, match="retry_after"):
            server.reject(Failure.RATE_LIMITED, retry_after=bad)  # type: ignore[arg-type]
        assert server.status is ServerStatus.AWAITING_DIAL and server.data_to_send() == b""
        server.reject(Failure.RATE_LIMITED, retry_after=0)
        assert b"\r\nRetry-After: 0\r\n" in server.data_to_send()

    def test_an_upstream_rep_2_still_maps_to_not_allowed(self) -> None:
        assert next(f for f in Failure if f.socks5_code == 2) is Failure.NOT_ALLOWED
        assert Failure.RATE_LIMITED.socks5_code == 2 and Failure.RATE_LIMITED.http_status == 429

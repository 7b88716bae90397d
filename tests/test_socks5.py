"""SOCKS5 (RFC 1928) with RFC 1929: events, wire format, state machine, both roles."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socks_sansio import (
    CLIENT,
    NEED_DATA,
    PAUSED,
    SERVER,
    Address,
    AuthMethod,
    Command,
    CommandReply,
    CommandRequest,
    ConnectionClosed,
    Greeting,
    LocalProtocolError,
    MethodSelection,
    RemoteProtocolError,
    ReplyCode,
    Socks5Connection,
    Socks5State,
    UsernamePasswordReply,
    UsernamePasswordRequest,
)

from . import strategies as strat
from .helpers import SPLITS, chunked, events_of, exchange, feed

S = Socks5State


def server_at(state: Socks5State, *, auth: bool = False, command: Command = Command.CONNECT) -> Socks5Connection:
    """A server whose conversation has reached *state* by the normal route."""
    return _pair_at(state, auth=auth, command=command)[1]


def client_at(state: Socks5State, *, auth: bool = False, command: Command = Command.CONNECT) -> Socks5Connection:
    return _pair_at(state, auth=auth, command=command)[0]


def _pair_at(
    state: Socks5State, *, auth: bool, command: Command
) -> tuple[Socks5Connection, Socks5Connection]:
    client, server = Socks5Connection(CLIENT), Socks5Connection(SERVER)
    method = AuthMethod.USERNAME_PASSWORD if auth else AuthMethod.NO_AUTH
    route = [
        (client, Greeting(methods=(method,))),
        (server, MethodSelection(method=method)),
    ]
    if auth:
        route += [
            (client, UsernamePasswordRequest(username=b"user", password=b"pass")),
            (server, UsernamePasswordReply(success=True)),
        ]
    route += [
        (client, CommandRequest(command=command, address=Address("example.com", 80))),
        (server, CommandReply(code=0, bound=Address("10.0.0.1", 1000))),
        (server, CommandReply(code=0, bound=Address("10.0.0.2", 2000))),
    ]
    for sender, event in route:
        if client.state is state:
            break
        receiver = server if sender is client else client
        exchange(sender, receiver, event)
    assert client.state is state and server.state is state
    return client, server


# -- events ------------------------------------------------------------------


def test_unknown_method_codes_are_kept_as_ints() -> None:
    greeting = Greeting(methods=(0x00, 0x80, 0xFE))
    assert greeting.methods == (AuthMethod.NO_AUTH, 0x80, 0xFE)
    assert isinstance(greeting.methods[0], AuthMethod)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Greeting(methods=()), "1 to 255 methods"),
        (lambda: Greeting(methods=tuple(range(256))), "1 to 255 methods"),
        (lambda: Greeting(methods=(256,)), "0..255"),
        (lambda: MethodSelection(method=-1), "0..255"),
        (lambda: UsernamePasswordRequest(username=b"", password=b"x"), "username must be 1 to 255"),
        (lambda: UsernamePasswordRequest(username=b"u" * 256, password=b"x"), "username must be 1 to 255"),
        (lambda: UsernamePasswordRequest(username=b"u", password=b"p" * 256), "password must be 0 to 255"),
        (lambda: CommandRequest(command=9, address=Address("a", 1)), "unknown SOCKS5 command"),
        (lambda: CommandReply(code=300), "0..255"),
        (lambda: Address(b"", 1), "1 to 255 octets"),
        (lambda: Address(b"a" * 256, 1), "1 to 255 octets"),
        (lambda: Address("a b", 1), "control character or space"),
        (lambda: Address("a", 65536), "0..65535"),
    ],
)
def test_constructors_refuse_illegal_values(make: object, message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        make()  # type: ignore[operator]


@pytest.mark.parametrize(
    "make",
    [
        lambda: Greeting(methods=1),
        lambda: Greeting(methods=("a",)),
        lambda: MethodSelection(method=True),
        lambda: CommandRequest(command=Command.CONNECT, address="example.com:80"),
        lambda: UsernamePasswordRequest(username=1, password=b""),
        lambda: UsernamePasswordReply(success=1),
        lambda: Address(1.5, 1),
        lambda: Address("a", "80"),
    ],
)
def test_constructors_refuse_wrong_types(make: object) -> None:
    with pytest.raises(TypeError):
        make()  # type: ignore[operator]


def test_password_is_hidden_from_repr() -> None:
    assert "hunter2" not in repr(UsernamePasswordRequest(username="u", password="hunter2"))


def test_str_credentials_are_utf8() -> None:
    assert UsernamePasswordRequest(username="ü", password="ß").username == "ü".encode()


# -- wire format ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "wire"),
    [
        (Address("1.2.3.4", 80), b"\x01\x01\x02\x03\x04\x00\x50"),
        (Address("::1", 443), b"\x04" + b"\x00" * 15 + b"\x01\x01\xbb"),
        (Address("example.com", 65535), b"\x03\x0bexample.com\xff\xff"),
        (Address("bücher.de", 1), b"\x03\x10xn--bcher-kva.de\x00\x01"),
    ],
)
def test_request_wire_format(address: Address, wire: bytes) -> None:
    client = client_at(S.AWAIT_COMMAND)
    assert client.send(CommandRequest(command=Command.CONNECT, address=address)) == b"\x05\x01\x00" + wire


def test_greeting_and_auth_wire_format() -> None:
    client = Socks5Connection(CLIENT)
    assert client.send(Greeting(methods=(0, 2))) == b"\x05\x02\x00\x02"
    client.receive_data(b"\x05\x02")
    assert events_of(client) == [MethodSelection(method=2)]
    assert client.send(UsernamePasswordRequest(username=b"ab", password=b"c")) == b"\x01\x02ab\x01c"


TRANSCRIPT_REQUEST = (
    b"\x05\x02\x00\x02"  # greeting
    b"\x01\x04user\x04pass"  # RFC 1929 request
    b"\x05\x01\x00\x03\x0bexample.com\x01\xbb"  # CONNECT example.com:443
)


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("extra", [b"", b"GET / HTTP/1.1\r\n\r\n"])
def test_server_reads_a_pipelined_client_in_any_chunking(split: str, extra: bytes) -> None:
    server = Socks5Connection(SERVER)
    got = feed(server, SPLITS[split](TRANSCRIPT_REQUEST + extra))
    assert got == [Greeting(methods=(0, 2))]
    assert server.send(MethodSelection(method=2)) == b"\x05\x02"
    assert events_of(server) == [UsernamePasswordRequest(username=b"user", password=b"pass")]
    assert server.send(UsernamePasswordReply(success=True)) == b"\x01\x00"
    assert events_of(server) == [CommandRequest(command=Command.CONNECT, address=Address("example.com", 443))]
    server.send(CommandReply(code=0, bound=Address("0.0.0.0", 0)))
    assert server.state is S.TUNNEL
    assert server.next_event() is PAUSED
    assert server.trailing_data == (extra, False)


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize(
    ("reply", "event"),
    [
        (b"\x05\x00\x00\x01\x7f\x00\x00\x01\x04\x38", CommandReply(code=0, bound=Address("127.0.0.1", 1080))),
        (b"\x05\x00\x00\x03\x04abcd\x00\x01", CommandReply(code=0, bound=Address("abcd", 1))),
        (b"\x05\x00\x00\x04" + bytes(16) + b"\x00\x02", CommandReply(code=0, bound=Address("::", 2))),
    ],
)
def test_client_reads_every_reply_address_type_and_keeps_tunnel_bytes(
    split: str, reply: bytes, event: CommandReply
) -> None:
    client = client_at(S.AWAIT_REPLY)
    tunnel = b"\x05\x00first tunnel bytes"  # looks like SOCKS on purpose: must not be parsed
    assert feed(client, SPLITS[split](reply + tunnel)) == [event]
    assert client.state is S.TUNNEL
    assert client.trailing_data == (tunnel, False)
    assert client.next_event() is PAUSED


def test_domain_bound_address_is_read_after_its_length_octet() -> None:
    client = client_at(S.AWAIT_REPLY)
    client.receive_data(b"\x05\x00\x00\x03\x09proxy.lan\x1f\x90")
    (reply,) = events_of(client)
    assert reply.bound == Address(b"proxy.lan", 8080)


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (b"\x05\x05\x00\x01\x00\x00\x00\x00\x00\x00", ReplyCode.CONNECTION_REFUSED),
        (b"\x05\x04\x00\x00", ReplyCode.HOST_UNREACHABLE),  # ATYP 0
        (b"\x05\x02\x00\x07junk", ReplyCode.CONNECTION_NOT_ALLOWED),  # unknown ATYP
        (b"\x05\x03\x01\x09", ReplyCode.NETWORK_UNREACHABLE),  # junk RSV and ATYP
        (b"\x05\xaa\x00\x00", 0xAA),  # unassigned code
    ],
)
def test_failure_reply_code_survives_a_malformed_rest(wire: bytes, code: int) -> None:
    client = client_at(S.AWAIT_REPLY)
    client.receive_data(wire)
    (reply,) = events_of(client)
    assert reply.code == code
    assert not reply.succeeded
    assert client.state is S.MUST_CLOSE


@pytest.mark.parametrize("wire", [b"\x05\x01", b"\x05\x01\x00", b"\x05\x01\x00\x01\x7f\x00"])
def test_truncated_failure_reply_is_surfaced_at_eof(wire: bytes) -> None:
    client = client_at(S.AWAIT_REPLY)
    client.receive_data(wire)
    assert client.next_event() is NEED_DATA
    client.receive_data(b"")
    assert events_of(client) == [CommandReply(code=ReplyCode.GENERAL_FAILURE)]


def test_truncated_success_reply_at_eof_is_an_error() -> None:
    client = client_at(S.AWAIT_REPLY)
    client.receive_data(b"\x05\x00\x00\x01\x7f")
    assert client.next_event() is NEED_DATA
    client.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="closed the connection in the middle of the reply"):
        client.next_event()
    assert client.state is S.ERROR


# -- BIND and UDP ASSOCIATE ------------------------------------------------------


@pytest.mark.parametrize("auth", [False, True])
def test_bind_has_two_replies(auth: bool) -> None:
    client, server = _pair_at(S.AWAIT_REPLY, auth=auth, command=Command.BIND)
    exchange(server, client, CommandReply(code=0, bound=Address("192.0.2.1", 4000)))
    assert client.state is server.state is S.AWAIT_BIND_PEER
    assert client.next_event() is NEED_DATA
    exchange(server, client, CommandReply(code=0, bound=Address("198.51.100.7", 20)))
    assert client.state is server.state is S.TUNNEL


def test_bind_second_reply_can_fail() -> None:
    client, server = _pair_at(S.AWAIT_BIND_PEER, auth=False, command=Command.BIND)
    exchange(server, client, CommandReply(code=ReplyCode.TTL_EXPIRED))
    assert client.state is server.state is S.MUST_CLOSE


def test_udp_associate_keeps_the_control_connection() -> None:
    client, server = _pair_at(S.AWAIT_REPLY, auth=False, command=Command.UDP_ASSOCIATE)
    exchange(server, client, CommandReply(code=0, bound=Address("127.0.0.1", 5353)))
    assert client.state is server.state is S.ASSOCIATED
    client.receive_data(b"")
    assert client.next_event() is PAUSED
    assert client.trailing_data == (b"", True)


# -- method negotiation -----------------------------------------------------------


def test_no_acceptable_method_ends_the_conversation() -> None:
    client, server = _pair_at(S.AWAIT_METHOD, auth=False, command=Command.CONNECT)
    exchange(server, client, MethodSelection(method=AuthMethod.NO_ACCEPTABLE))
    assert client.state is server.state is S.MUST_CLOSE


def test_server_may_not_select_a_method_not_offered() -> None:
    server = Socks5Connection(SERVER)
    server.receive_data(b"\x05\x01\x00")
    events_of(server)
    with pytest.raises(LocalProtocolError, match="offered only NO_AUTH"):
        server.send(MethodSelection(method=AuthMethod.USERNAME_PASSWORD))
    assert server.state is S.ERROR


def test_client_rejects_a_method_it_did_not_offer() -> None:
    client = Socks5Connection(CLIENT)
    client.send(Greeting(methods=(0,)))
    client.receive_data(b"\x05\x02")
    with pytest.raises(RemoteProtocolError, match="offered only NO_AUTH"):
        client.next_event()


def test_gssapi_selected_is_a_clear_error_not_a_hang() -> None:
    client = Socks5Connection(CLIENT)
    client.send(Greeting(methods=(AuthMethod.GSSAPI, AuthMethod.NO_AUTH)))
    client.receive_data(b"\x05\x01")
    with pytest.raises(RemoteProtocolError, match=r"GSSAPI .* does not implement"):
        client.next_event()
    server = Socks5Connection(SERVER)
    server.receive_data(b"\x05\x01\x01")
    assert events_of(server) == [Greeting(methods=(AuthMethod.GSSAPI,))]
    with pytest.raises(LocalProtocolError, match="does not implement"):
        server.send(MethodSelection(method=AuthMethod.GSSAPI))


# -- RFC 1929 -----------------------------------------------------------------------


def test_auth_failure_means_close() -> None:
    client, server = _pair_at(S.AWAIT_AUTH_REPLY, auth=True, command=Command.CONNECT)
    wire = exchange(server, client, UsernamePasswordReply(success=False))
    assert wire == b"\x01\x01"
    assert client.state is server.state is S.MUST_CLOSE


@pytest.mark.parametrize("status", [0x01, 0x02, 0xFF])
def test_any_nonzero_auth_status_is_failure(status: int) -> None:
    client = client_at(S.AWAIT_AUTH_REPLY, auth=True)
    client.receive_data(bytes((1, status)))
    assert events_of(client) == [UsernamePasswordReply(success=False)]


def test_auth_reply_version_5_needs_opt_in() -> None:
    client = client_at(S.AWAIT_AUTH_REPLY, auth=True)
    client.receive_data(b"\x05\x00")
    with pytest.raises(RemoteProtocolError, match="lenient_auth_version=True"):
        client.next_event()
    lenient = Socks5Connection(CLIENT, lenient_auth_version=True)
    lenient.send(Greeting(methods=(2,)))
    lenient.receive_data(b"\x05\x02")
    events_of(lenient)
    lenient.send(UsernamePasswordRequest(username=b"u", password=b"p"))
    lenient.receive_data(b"\x05\x00")
    assert events_of(lenient) == [UsernamePasswordReply(success=True)]


def test_empty_password_is_accepted_on_receive() -> None:
    server = server_at(S.AWAIT_AUTH_REQUEST, auth=True)
    server.receive_data(b"\x01\x04user\x00")
    assert events_of(server) == [UsernamePasswordRequest(username=b"user", password=b"")]


# -- peer errors and their reply hints ----------------------------------------------


@pytest.mark.parametrize(
    ("state", "wire", "message", "hint"),
    [
        (S.AWAIT_GREETING, b"\x04\x01", "looks like SOCKS4", None),
        (S.AWAIT_GREETING, b"\x16\x03", "looks like a TLS", None),
        (S.AWAIT_GREETING, b"GET", "looks like HTTP", None),
        (S.AWAIT_GREETING, b"\x05\x00", "no methods", MethodSelection(method=0xFF)),
        (S.AWAIT_AUTH_REQUEST, b"\x05", "must be 0x01", UsernamePasswordReply(success=False)),
        (S.AWAIT_AUTH_REQUEST, b"\x01\x00\x01p", "username must be 1 to 255", None),
        (S.AWAIT_COMMAND, b"\x05\x09", "unknown command 0x09", CommandReply(code=7)),
        (S.AWAIT_COMMAND, b"\x05\x01\x01", "reserved octet", CommandReply(code=1)),
        (S.AWAIT_COMMAND, b"\x05\x01\x00\x02", "unknown address type 0x02", CommandReply(code=8)),
        (S.AWAIT_COMMAND, b"\x05\x01\x00\x03\x00", "length 0", CommandReply(code=1)),
        (S.AWAIT_COMMAND, b"\x05\x01\x00\x03\x03a\nb\x00\x01", "control character", CommandReply(code=1)),
    ],
)
def test_server_errors_carry_the_reply_to_send(
    state: Socks5State, wire: bytes, message: str, hint: object
) -> None:
    server = server_at(state, auth=state is S.AWAIT_AUTH_REQUEST)
    server.receive_data(wire)
    with pytest.raises(RemoteProtocolError, match=message) as info:
        server.next_event()
    assert info.value.reply_hint == hint
    assert server.state is S.ERROR
    with pytest.raises(RemoteProtocolError, match="ERROR"):
        server.next_event()
    if hint is not None:
        assert server.send(hint)  # the refusal may still go out, once
        with pytest.raises(LocalProtocolError, match="ERROR"):
            server.send(hint)


def test_success_cannot_be_sent_after_a_peer_error() -> None:
    server = server_at(S.AWAIT_COMMAND)
    server.receive_data(b"\x05\x09")
    with pytest.raises(RemoteProtocolError):
        server.next_event()
    with pytest.raises(LocalProtocolError):
        server.send(CommandReply(code=0))


def test_eof_at_a_message_boundary_is_connection_closed() -> None:
    server = Socks5Connection(SERVER)
    server.receive_data(b"")
    assert server.next_event() == ConnectionClosed()
    assert server.state is S.CLOSED
    assert server.next_event() is PAUSED


def test_eof_on_our_turn_is_reported() -> None:
    server = Socks5Connection(SERVER)
    server.receive_data(b"\x05\x01\x00")
    assert events_of(server) == [Greeting(methods=(0,))]
    server.receive_data(b"")
    assert server.next_event() == ConnectionClosed()


def test_eof_mid_greeting_is_an_error() -> None:
    server = Socks5Connection(SERVER)
    server.receive_data(b"\x05\x02\x00")
    server.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="middle of the greeting"):
        server.next_event()


def test_data_after_eof_is_a_caller_bug() -> None:
    conn = Socks5Connection(SERVER)
    conn.receive_data(b"")
    with pytest.raises(RuntimeError):
        conn.receive_data(b"x")


# -- our own mistakes -----------------------------------------------------------------


def test_sending_out_of_turn_is_local_error() -> None:
    server = Socks5Connection(SERVER)
    with pytest.raises(LocalProtocolError, match="not its turn"):
        server.send(MethodSelection(method=0))
    assert server.state is S.ERROR


def test_sending_out_of_order_is_local_error() -> None:
    client = Socks5Connection(CLIENT)
    with pytest.raises(LocalProtocolError, match="CommandRequest from the client is not legal in state AWAIT_GREETING"):
        client.send(CommandRequest(command=Command.CONNECT, address=Address("a", 1)))
    assert client.state is S.ERROR


def test_send_failed_moves_to_error() -> None:
    client = Socks5Connection(CLIENT)
    client.send(Greeting(methods=(0,)))
    client.send_failed()
    assert client.state is S.ERROR


def test_connection_closed_can_be_sent_any_time() -> None:
    client = Socks5Connection(CLIENT)
    assert client.send(ConnectionClosed()) == b""
    assert client.state is S.CLOSED


def test_role_is_checked() -> None:
    with pytest.raises(TypeError):
        Socks5Connection("client")  # type: ignore[arg-type]
    assert Socks5Connection(CLIENT).their_role is SERVER


# -- read-size hint -----------------------------------------------------------------------


def test_read_size_hint_never_reads_past_the_reply() -> None:
    reply = b"\x05\x00\x00\x03\x0bexample.com\x00\x50"
    client = client_at(S.AWAIT_REPLY)
    stream = reply + b"TUNNEL"
    at = 0
    while client.state is S.AWAIT_REPLY:
        hint = client.read_size_hint
        assert hint > 0
        client.receive_data(stream[at : at + hint])
        at += hint
        events_of(client)
    assert at == len(reply)
    assert client.read_size_hint == 0


@pytest.mark.parametrize(
    ("reply", "reads"),
    [
        (b"\x05\x00\x00\x01\x7f\x00\x00\x01\x1f\x90", [5, 5]),
        (b"\x05\x00\x00\x04" + bytes(15) + b"\x01\x1f\x90", [5, 17]),
        (b"\x05\x00\x00\x03\x01a\x00\x50", [5, 3]),
        (b"\x05\x04\x00\x01\x00\x00\x00\x00\x00\x00", [5, 5]),
    ],
)
def test_a_whole_reply_takes_two_reads(reply: bytes, reads: list[int]) -> None:
    # The first read takes VER REP RSV ATYP and the address's first octet
    # (fewer than the shortest whole reply), which give the exact rest.
    client = client_at(S.AWAIT_REPLY)
    hints = []
    while client.state is S.AWAIT_REPLY:
        hints.append(client.read_size_hint)
        client.receive_data(reply[sum(hints[:-1]) : sum(hints)])
        events_of(client)
    assert hints == reads
    assert client.trailing_data == (b"", False)


def test_read_size_hint_is_zero_on_our_turn() -> None:
    assert Socks5Connection(CLIENT).read_size_hint == 0
    assert Socks5Connection(SERVER).read_size_hint == 2


# -- properties ---------------------------------------------------------------------------


def _conversation(
    methods: list[int], use_auth: bool, command: Command, target: Address, bound: Address, bound2: Address
) -> list[tuple[str, object]]:
    method = AuthMethod.USERNAME_PASSWORD if use_auth else AuthMethod.NO_AUTH
    steps: list[tuple[str, object]] = [
        ("c", Greeting(methods=(*methods, method))),
        ("s", MethodSelection(method=method)),
    ]
    if use_auth:
        steps += [
            ("c", UsernamePasswordRequest(username=b"alice", password=b"secret")),
            ("s", UsernamePasswordReply(success=True)),
        ]
    steps += [("c", CommandRequest(command=command, address=target)), ("s", CommandReply(code=0, bound=bound))]
    if command is Command.BIND:
        steps.append(("s", CommandReply(code=0, bound=bound2)))
    return steps


@given(
    methods=st.lists(strat.octets, max_size=5),
    use_auth=st.booleans(),
    command=st.sampled_from(Command),
    target=strat.addresses,
    bound=strat.addresses,
    bound2=strat.addresses,
    tunnel=st.binary(max_size=20),
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=10),
)
def test_any_chunking_of_a_whole_conversation_gives_the_same_events(
    methods: list[int],
    use_auth: bool,
    command: Command,
    target: Address,
    bound: Address,
    bound2: Address,
    tunnel: bytes,
    sizes: list[int],
) -> None:
    steps = _conversation(methods, use_auth, command, target, bound, bound2)
    # Both sides send through real machines; each side's wire is then re-read in pieces.
    client, server = Socks5Connection(CLIENT), Socks5Connection(SERVER)
    to_server, to_client = b"", b""
    for side, event in steps:
        if side == "c":
            to_server += exchange(client, server, event)
        else:
            to_client += exchange(server, client, event)
    final = S.ASSOCIATED if command is Command.UDP_ASSOCIATE else S.TUNNEL
    assert client.state is server.state is final

    fresh_server = Socks5Connection(SERVER)
    got = feed(fresh_server, chunked(to_server + tunnel, sizes))
    expected_client_events = [e for side, e in steps if side == "c"]
    server_events = [e for side, e in steps if side == "s"]
    for reply in server_events:  # answer as the scripted server did
        fresh_server.send(reply)
        got += events_of(fresh_server)
    assert got == expected_client_events
    assert fresh_server.trailing_data == (tunnel, False)

    # A pipelining client: everything sent up front, then the server's bytes in pieces.
    got = []
    fresh_client = Socks5Connection(CLIENT)
    pending = list(steps)
    pieces = chunked(to_client + tunnel, sizes)
    while pending and pending[0][0] == "c":
        fresh_client.send(pending.pop(0)[1])
    for piece in pieces:
        fresh_client.receive_data(piece)
        while True:
            new = events_of(fresh_client)
            got += new
            for _ in new:
                pending.pop(0)
            if not (pending and pending[0][0] == "c"):
                break
            fresh_client.send(pending.pop(0)[1])
    assert got == server_events
    assert fresh_client.state is final
    assert fresh_client.trailing_data == (tunnel, False)


@given(event=st.one_of(strat.greetings, strat.auth_requests, strat.requests))
def test_client_events_round_trip(event: object) -> None:
    state = {Greeting: S.AWAIT_GREETING, UsernamePasswordRequest: S.AWAIT_AUTH_REQUEST}.get(
        type(event), S.AWAIT_COMMAND
    )
    client, server = _pair_at(state, auth=state is S.AWAIT_AUTH_REQUEST, command=Command.CONNECT)
    exchange(client, server, event)


@given(event=st.one_of(strat.auth_replies, strat.replies))
def test_server_events_round_trip(event: object) -> None:
    state = S.AWAIT_AUTH_REPLY if isinstance(event, UsernamePasswordReply) else S.AWAIT_REPLY
    client, server = _pair_at(state, auth=state is S.AWAIT_AUTH_REPLY, command=Command.CONNECT)
    exchange(server, client, event)


@given(selected=strat.octets, offered=st.lists(strat.octets, min_size=1, max_size=4))
def test_any_method_selection_is_either_legal_or_a_clear_error(selected: int, offered: list[int]) -> None:
    client = Socks5Connection(CLIENT)
    client.send(Greeting(methods=tuple(offered)))
    client.receive_data(bytes((5, selected)))
    try:
        assert events_of(client) == [MethodSelection(method=selected)]
    except RemoteProtocolError:
        assert client.state is S.ERROR
    else:
        assert selected in (*offered, 0xFF)


LIVE_STATES = [s for s in S if s not in (S.TUNNEL, S.ASSOCIATED, S.MUST_CLOSE, S.CLOSED, S.ERROR)]


@given(
    state=st.sampled_from(LIVE_STATES),
    auth=st.booleans(),
    command=st.sampled_from(Command),
    garbage=st.binary(max_size=600),
    eof=st.booleans(),
    role=st.sampled_from([CLIENT, SERVER]),
)
def test_arbitrary_bytes_raise_only_remote_protocol_error(
    state: Socks5State, auth: bool, command: Command, garbage: bytes, eof: bool, role: object
) -> None:
    if state in (S.AWAIT_AUTH_REQUEST, S.AWAIT_AUTH_REPLY):
        auth = True
    if state is S.AWAIT_BIND_PEER:
        command = Command.BIND
    client, server = _pair_at(state, auth=auth, command=command)
    conn = client if role is CLIENT else server
    conn.receive_data(garbage)
    if eof:
        conn.receive_data(b"")
    try:
        for _ in range(10):
            event = conn.next_event()
            if event is NEED_DATA or event is PAUSED:
                break
            hint = conn.read_size_hint
            assert hint >= 0
    except RemoteProtocolError as exc:
        assert conn.state is S.ERROR
        assert exc.message


EVENTS = [
    Greeting(methods=(0,)),
    Greeting(methods=(2,)),
    MethodSelection(method=0),
    MethodSelection(method=2),
    MethodSelection(method=0xFF),
    MethodSelection(method=1),
    UsernamePasswordRequest(username=b"u", password=b"p"),
    UsernamePasswordReply(success=True),
    UsernamePasswordReply(success=False),
    CommandRequest(command=Command.CONNECT, address=Address("a", 1)),
    CommandReply(code=0),
    CommandReply(code=5),
    ConnectionClosed(),
]


@given(
    state=st.sampled_from(LIVE_STATES),
    auth=st.booleans(),
    command=st.sampled_from(Command),
    event=st.sampled_from(EVENTS),
    role=st.sampled_from([CLIENT, SERVER]),
)
def test_every_state_event_pair_transitions_or_raises_local_error(
    state: Socks5State, auth: bool, command: Command, event: object, role: object
) -> None:
    if state in (S.AWAIT_AUTH_REQUEST, S.AWAIT_AUTH_REPLY):
        auth = True
    if state is S.AWAIT_BIND_PEER:
        command = Command.BIND
    client, server = _pair_at(state, auth=auth, command=command)
    conn = client if role is CLIENT else server
    try:
        wire = conn.send(event)  # type: ignore[arg-type]
    except LocalProtocolError:
        assert conn.state is S.ERROR
        return
    assert conn.state is not state or isinstance(event, ConnectionClosed) is False
    other = server if conn is client else client
    other.receive_data(wire)
    if isinstance(event, ConnectionClosed):
        assert conn.state is S.CLOSED
        return
    assert events_of(other) == [event]
    assert other.state is conn.state


def test_ipv6_scope_is_dropped_on_the_wire() -> None:
    address = Address(ipaddress.IPv6Address("fe80::1"), 1)
    client = client_at(S.AWAIT_COMMAND)
    wire = client.send(CommandRequest(command=Command.CONNECT, address=address))
    assert wire == b"\x05\x01\x00\x04" + address.host.packed + b"\x00\x01"  # type: ignore[union-attr]


# -- pipelining ----------------------------------------------------------------------------


@pytest.mark.parametrize("auth", [False, True])
@pytest.mark.parametrize("split", SPLITS)
def test_pipelined_client_needs_one_round_trip(auth: bool, split: str) -> None:
    client, server = Socks5Connection(CLIENT, pipelining=True), Socks5Connection(SERVER)
    method = AuthMethod.USERNAME_PASSWORD if auth else AuthMethod.NO_AUTH
    out = client.send(Greeting(methods=(method,)))
    if auth:
        out += client.send(UsernamePasswordRequest(username=b"u", password=b"p"))
    request = CommandRequest(command=Command.CONNECT, address=Address("example.com", 443))
    out += client.send(request)
    server.receive_data(out + b"early")
    back = b""
    events_of(server)
    back += server.send(MethodSelection(method=method))
    if auth:
        events_of(server)
        back += server.send(UsernamePasswordReply(success=True))
    assert events_of(server) == [request]
    back += server.send(CommandReply(code=0, bound=Address("1.2.3.4", 5)))
    got = feed(client, SPLITS[split](back + b"tunnel"))
    assert got[-1] == CommandReply(code=0, bound=Address("1.2.3.4", 5))
    assert client.state is S.TUNNEL
    assert client.trailing_data == (b"tunnel", False)
    assert server.trailing_data == (b"early", False)


@pytest.mark.parametrize("refusal", [b"\x05\xff", b"\x05\x02\x01\x01"])
def test_pipelined_client_handles_a_refusal(refusal: bytes) -> None:
    client = Socks5Connection(CLIENT, pipelining=True)
    client.send(Greeting(methods=(AuthMethod.USERNAME_PASSWORD,)))
    client.send(UsernamePasswordRequest(username=b"u", password=b"p"))
    client.send(CommandRequest(command=Command.CONNECT, address=Address("a", 1)))
    client.receive_data(refusal)
    events = events_of(client)
    assert client.state is S.MUST_CLOSE
    assert events[-1] in (MethodSelection(method=0xFF), UsernamePasswordReply(success=False))


def test_pipelining_needs_a_single_method() -> None:
    client = Socks5Connection(CLIENT, pipelining=True)
    client.send(Greeting(methods=(0, 2)))
    with pytest.raises(LocalProtocolError, match="exactly one method"):
        client.send(CommandRequest(command=Command.CONNECT, address=Address("a", 1)))


def test_pipelining_refuses_an_event_out_of_order() -> None:
    client = Socks5Connection(CLIENT, pipelining=True)
    client.send(Greeting(methods=(2,)))
    with pytest.raises(LocalProtocolError, match="cannot be pipelined"):
        client.send(CommandRequest(command=Command.CONNECT, address=Address("a", 1)))


def test_without_pipelining_early_sending_is_refused() -> None:
    client = Socks5Connection(CLIENT)
    client.send(Greeting(methods=(0,)))
    with pytest.raises(LocalProtocolError, match="not its turn"):
        client.send(CommandRequest(command=Command.CONNECT, address=Address("a", 1)))


def test_reply_with_bad_reserved_octet_is_an_error() -> None:
    client = client_at(S.AWAIT_REPLY)
    client.receive_data(b"\x05\x00\x01")
    with pytest.raises(RemoteProtocolError, match="reserved octet of the reply"):
        client.next_event()


def test_sending_a_non_event_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not a SOCKS5 event"):
        Socks5Connection(CLIENT).send("hello")  # type: ignore[arg-type]


def test_pipelining_the_request_while_awaiting_the_auth_reply() -> None:
    client = Socks5Connection(CLIENT, pipelining=True)
    client.send(Greeting(methods=(0, 2)))  # two methods: must wait for the selection
    client.receive_data(b"\x05\x02")
    assert events_of(client) == [MethodSelection(method=2)]
    assert client.method == AuthMethod.USERNAME_PASSWORD
    client.send(UsernamePasswordRequest(username=b"u", password=b"p"))
    client.send(CommandRequest(command=Command.BIND, address=Address("a", 1)))  # before the auth reply
    assert client.command is Command.BIND
    client.receive_data(b"\x01\x00\x05\x00\x00\x01\x01\x02\x03\x04\x00\x05")
    assert events_of(client) == [
        UsernamePasswordReply(success=True),
        CommandReply(code=0, bound=Address("1.2.3.4", 5)),
    ]
    assert client.state is S.AWAIT_BIND_PEER

"""SOCKS4 / SOCKS4a: events, wire format, state table and ``Socks4Connection`` in both roles."""

from __future__ import annotations

import ipaddress
from typing import Any

import attrs
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from socks_sansio import (
    CLIENT,
    NEED_DATA,
    PAUSED,
    SERVER,
    UNSPECIFIED_ADDRESS,
    Address,
    Command,
    CommandRequest,
    ConnectionClosed,
    LocalProtocolError,
    RemoteProtocolError,
    Role,
    Socks4ReplyCode,
)
from socks_sansio._socks4 import (
    RequestProgress,
    Socks4Connection,
    Socks4State,
    classify,
    encode_event,
    parse_request,
)
from socks_sansio._socks4_events import Socks4Event, Socks4Reply, Socks4Request

from .helpers import SPLITS, chunked, events_of, exchange, feed

St = Socks4State
V4 = ipaddress.IPv4Address


def request(host: Any = "127.0.0.1", port: int = 80, command: Command = Command.CONNECT,
            user_id: bytes = b"") -> Socks4Request:
    return Socks4Request(command=command, address=Address(host, port), user_id=user_id)


def pair(**server_options: Any) -> tuple[Socks4Connection, Socks4Connection]:
    return Socks4Connection(CLIENT), Socks4Connection(SERVER, **server_options)


# -- events --------------------------------------------------------------------


def test_request_commands() -> None:
    assert request(command=Command.BIND).command is Command.BIND
    assert Socks4Request(command=1, address=Address("1.2.3.4", 1)).command is Command.CONNECT
    with pytest.raises(LocalProtocolError, match="UDP ASSOCIATE needs SOCKS5"):
        request(command=Command.UDP_ASSOCIATE)
    with pytest.raises(LocalProtocolError, match="CD is 1"):
        Socks4Request(command=7, address=Address("1.2.3.4", 1))
    with pytest.raises(TypeError):
        Socks4Request(command=True, address=Address("1.2.3.4", 1))
    with pytest.raises(TypeError):
        Socks4Request(command="CONNECT", address=Address("1.2.3.4", 1))
    with pytest.raises(TypeError, match="Address"):
        Socks4Request(command=Command.CONNECT, address=("1.2.3.4", 1))


@pytest.mark.parametrize("host", ["::1", b"::1", b"fe80::1", ipaddress.IPv6Address("2001:db8::1")])
def test_request_refuses_ipv6(host: Any) -> None:
    with pytest.raises(LocalProtocolError, match="SOCKS4 cannot carry IPv6"):
        request(host)


def test_request_normalises_ipv4_literal_names() -> None:
    from_name = request(b"10.0.0.1", 8080)
    assert from_name.address == Address(V4("10.0.0.1"), 8080)
    assert from_name == request("10.0.0.1", 8080) == request(V4("10.0.0.1"), 8080)
    assert not from_name.is_socks4a
    assert request(b"example.com").is_socks4a
    # Not dotted-quad literals, so names (a 4a server resolves them as it likes).
    assert request(b"010.0.0.1").address.host == b"010.0.0.1"
    assert request(b"10.1").address.host == b"10.1"


@pytest.mark.parametrize("host", ["0.0.0.1", "0.0.0.255", b"0.0.0.7"])
def test_request_refuses_the_socks4a_marker_as_destination(host: Any) -> None:
    with pytest.raises(LocalProtocolError, match=r"reserves 0\.0\.0\.x"):
        request(host)


def test_request_allows_zero_address() -> None:
    assert encode_event(request("0.0.0.0", 0))[4:8] == b"\0\0\0\0"


def test_user_id() -> None:
    assert request(user_id=b"").user_id == b""
    assert Socks4Request(command=1, address=Address("1.2.3.4", 1), user_id="jos\u00e9").user_id == b"jos\xc3\xa9"
    with pytest.raises(LocalProtocolError, match="NUL"):
        request(user_id=b"a\0b")
    with pytest.raises(TypeError):
        request(user_id=5)  # type: ignore[arg-type]


def test_reply_values() -> None:
    assert Socks4Reply(code=90).code is Socks4ReplyCode.GRANTED
    assert Socks4Reply(code=90).granted
    assert Socks4Reply(code=90).bound == UNSPECIFIED_ADDRESS
    assert not Socks4Reply(code=91).granted
    unknown = Socks4Reply(code=0x42)
    assert type(unknown.code) is int
    assert not unknown.granted
    assert unknown.description == "unknown SOCKS4 reply code 66 (CD 66)"
    assert Socks4Reply(code=92).description == (
        "request rejected: the server cannot reach identd on the client (CD 92)"
    )
    with pytest.raises(LocalProtocolError, match=r"0\.\.255"):
        Socks4Reply(code=256)
    with pytest.raises(TypeError):
        Socks4Reply(code=True)
    with pytest.raises(LocalProtocolError, match="IPv4 address only"):
        Socks4Reply(code=90, bound=Address("example.com", 1))
    with pytest.raises(LocalProtocolError, match="IPv4 address only"):
        Socks4Reply(code=90, bound=Address("::1", 1))
    with pytest.raises(TypeError):
        Socks4Reply(code=90, bound="1.2.3.4:5")  # type: ignore[arg-type]


def test_events_are_frozen_and_keyword_only() -> None:
    event = request()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.user_id = b"x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Socks4Reply(90)  # type: ignore[call-arg]


# -- wire format ------------------------------------------------------------------

WIRE: list[tuple[Any, bytes]] = [
    # The SOCKS4 document's layout, field by field.
    (request("127.0.0.1", 80, user_id=b"bob"), b"\x04\x01\x00\x50\x7f\x00\x00\x01bob\x00"),
    (request("192.0.2.7", 0x1F90, Command.BIND), b"\x04\x02\x1f\x90\xc0\x00\x02\x07\x00"),
    (request("example.com", 443, user_id=b"u"), b"\x04\x01\x01\xbb\x00\x00\x00\x01u\x00example.com\x00"),
    (request(b"xn--bcher-kva.example", 1), b"\x04\x01\x00\x01\x00\x00\x00\x01\x00xn--bcher-kva.example\x00"),
    (request(b"10.0.0.1", 1), b"\x04\x01\x00\x01\x0a\x00\x00\x01\x00"),  # IPv4 literal: plain SOCKS4
]
REPLY_WIRE: list[tuple[Any, bytes]] = [
    (Socks4Reply(code=90), b"\x00\x5a\x00\x00\x00\x00\x00\x00"),
    (Socks4Reply(code=91, bound=Address("1.2.3.4", 258)), b"\x00\x5b\x01\x02\x01\x02\x03\x04"),
    (Socks4Reply(code=0xFF), b"\x00\xff\x00\x00\x00\x00\x00\x00"),
]
EXTRA = [b"", b"\x00", b"tunnel \x00 bytes \x04\x01"]


@pytest.mark.parametrize(("event", "wire"), WIRE + REPLY_WIRE)
def test_encode(event: Any, wire: bytes) -> None:
    assert encode_event(event) == wire


def test_encode_closed_and_foreign() -> None:
    assert encode_event(ConnectionClosed()) == b""
    with pytest.raises(TypeError, match="not a SOCKS4 event"):
        encode_event(CommandRequest(command=1, address=Address("1.2.3.4", 1)))  # type: ignore[arg-type]


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("extra", EXTRA)
@pytest.mark.parametrize(("event", "wire"), WIRE)
def test_server_reads_request(event: Socks4Request, wire: bytes, extra: bytes, split: str) -> None:
    server = Socks4Connection(SERVER)
    assert feed(server, SPLITS[split](wire + extra)) == [event]
    assert server.state is St.AWAIT_REPLY
    assert server.command is event.command
    assert server.trailing_data == (extra, False)
    assert server.next_event() is PAUSED
    server.send(Socks4Reply(code=90))
    assert server.trailing_data == (extra, False)


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("extra", EXTRA)
@pytest.mark.parametrize(("event", "wire"), REPLY_WIRE)
def test_client_reads_reply(event: Socks4Reply, wire: bytes, extra: bytes, split: str) -> None:
    client = Socks4Connection(CLIENT)
    client.send(request())
    assert feed(client, SPLITS[split](wire + extra)) == [event]
    assert client.state is (St.TUNNEL if event.granted else St.MUST_CLOSE)
    assert client.trailing_data == (extra, False)
    assert client.next_event() is PAUSED


def test_tunnel_bytes_are_never_parsed() -> None:
    client, server = pair()
    server.receive_data(client.send(request()) + b"\x04\x01early")
    assert events_of(server) == [request()]
    client.receive_data(server.send(Socks4Reply(code=90)) + b"\x00\x5a" * 10)
    assert events_of(client) == [Socks4Reply(code=90)]
    client.receive_data(b"more")
    client.receive_data(b"")
    assert client.next_event() is PAUSED
    assert client.trailing_data == (b"\x00\x5a" * 10 + b"more", True)


# -- round trips -----------------------------------------------------------------------

_NAME_OCTETS = [b for b in range(0x21, 0x100) if b != 0x7F]
ipv4s = st.ip_addresses(v=4).filter(lambda ip: not (ip.packed[:3] == b"\0\0\0" and ip.packed[3]))
names = st.lists(st.sampled_from(_NAME_OCTETS), min_size=1, max_size=255).map(bytes)
dotted = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)).encode())
ports = st.integers(0, 0xFFFF)
user_ids = st.binary(max_size=300).map(lambda b: b.replace(b"\0", b"u"))
commands = st.sampled_from([Command.CONNECT, Command.BIND])


@st.composite
def requests(draw: st.DrawFn, hosts: st.SearchStrategy[Any] | None = None) -> Socks4Request:
    host = draw(hosts if hosts is not None else st.one_of(ipv4s, names, dotted))
    try:
        return Socks4Request(command=draw(commands), address=Address(host, draw(ports)),
                             user_id=draw(user_ids))
    except LocalProtocolError:
        assume(False)  # an IPv6 literal, or 0.0.0.x spelled as a name
        raise


replies = st.builds(lambda code, ip, port: Socks4Reply(code=code, bound=Address(ip, port)),
                    st.integers(0, 255), st.ip_addresses(v=4), ports)


@given(requests(ipv4s), replies, st.sampled_from(sorted(SPLITS)))
def test_round_trip_ipv4(event: Socks4Request, reply: Socks4Reply, split: str) -> None:
    _round_trip(event, reply, split)


@given(requests(names), replies, st.sampled_from(sorted(SPLITS)))
def test_round_trip_socks4a(event: Socks4Request, reply: Socks4Reply, split: str) -> None:
    _round_trip(event, reply, split)


@given(requests(dotted), replies, st.sampled_from(sorted(SPLITS)))
def test_round_trip_ipv4_literal_names(event: Socks4Request, reply: Socks4Reply, split: str) -> None:
    assert isinstance(event.address.host, V4)
    wire = _round_trip(event, reply, split)
    assert len(wire) == 8 + len(event.user_id) + 1  # no HOSTNAME on the wire


def _round_trip(event: Socks4Request, reply: Socks4Reply, split: str) -> bytes:
    client, server = pair()
    wire = client.send(event)
    assert feed(server, SPLITS[split](wire)) == [event]
    assert feed(client, SPLITS[split](server.send(reply))) == [reply]
    assert client.state is server.state
    return wire


# -- chunking invariance -------------------------------------------------------------------

chunk_sizes = st.lists(st.integers(1, 40), min_size=1, max_size=20)


@given(requests(), st.binary(max_size=50), chunk_sizes)
def test_request_transcript_chunking(event: Socks4Request, early: bytes, sizes: list[int]) -> None:
    wire = encode_event(event) + early
    reference = Socks4Connection(SERVER)
    expected = feed(reference, [wire])
    server = Socks4Connection(SERVER)
    assert feed(server, chunked(wire, sizes)) == expected == [event]
    assert server.trailing_data == reference.trailing_data == (early, False)


@given(commands, replies, replies, st.binary(max_size=50), chunk_sizes)
def test_reply_transcript_chunking(
    command: Command, first: Socks4Reply, second: Socks4Reply, tunnel: bytes, sizes: list[int]
) -> None:
    wire = encode_event(first) + encode_event(second) + tunnel
    results = []
    for pieces in ([wire], chunked(wire, sizes)):
        client = Socks4Connection(CLIENT)
        client.send(request(command=command))
        results.append((feed(client, pieces), client.state, client.trailing_data))
    assert results[0] == results[1]
    expected = [first, second] if command is Command.BIND and first.granted else [first]
    assert results[0][0] == expected


# -- BIND ---------------------------------------------------------------------------------


def test_bind_two_replies() -> None:
    client, server = pair()
    exchange(client, server, request("198.51.100.9", 0, Command.BIND, b"ftp"))
    listening = Socks4Reply(code=90, bound=Address("203.0.113.1", 40000))
    exchange(server, client, listening)
    assert client.state is server.state is St.AWAIT_BIND_PEER
    assert client.next_event() is NEED_DATA
    assert client.read_size_hint == 8
    peer = Socks4Reply(code=90, bound=Address("198.51.100.9", 20))
    wire = server.send(peer)
    client.receive_data(wire + b"data")
    assert events_of(client) == [peer]
    assert (client.state, server.state) == (St.TUNNEL, St.TUNNEL)
    assert client.trailing_data == (b"data", False)


def test_bind_second_reply_fails() -> None:
    client, server = pair()
    exchange(client, server, request(command=Command.BIND))
    exchange(server, client, Socks4Reply(code=90))
    exchange(server, client, Socks4Reply(code=91))
    assert client.state is server.state is St.MUST_CLOSE


def test_bind_refused_at_first_reply() -> None:
    client, server = pair()
    exchange(client, server, request(command=Command.BIND))
    exchange(server, client, Socks4Reply(code=93))
    assert client.state is server.state is St.MUST_CLOSE


@pytest.mark.parametrize("code", range(256))
def test_every_reply_code(code: int) -> None:
    client = Socks4Connection(CLIENT)
    client.send(request())
    client.receive_data(bytes((0, code, 0, 0, 0, 0, 0, 0)))
    [reply] = events_of(client)
    assert reply.code == code
    assert reply.granted is (code == 90)
    assert client.state is (St.TUNNEL if code == 90 else St.MUST_CLOSE)
    if 90 <= code <= 93:
        assert reply.code is Socks4ReplyCode(code)
        assert "unknown" not in reply.description
    else:
        assert type(reply.code) is int
        assert reply.description == f"unknown SOCKS4 reply code {code} (CD {code})"


# -- states: every (state, event) pair ---------------------------------------------------

SCENARIOS: dict[str, tuple[list[tuple[str, Any]], Socks4State]] = {
    # name: (steps sent by (role, event) from the start, the state reached)
    "start": ([], St.AWAIT_REQUEST),
    "await_reply_connect": ([("client", request())], St.AWAIT_REPLY),
    "await_reply_bind": ([("client", request(command=Command.BIND))], St.AWAIT_REPLY),
    "await_bind_peer": ([("client", request(command=Command.BIND)), ("server", Socks4Reply(code=90))],
                        St.AWAIT_BIND_PEER),
    "tunnel": ([("client", request()), ("server", Socks4Reply(code=90))], St.TUNNEL),
    "must_close": ([("client", request()), ("server", Socks4Reply(code=91))], St.MUST_CLOSE),
    "closed": ([("client", ConnectionClosed())], St.CLOSED),
    "error": ([("client", None)], St.ERROR),
}
EVENTS: dict[str, Socks4Event] = {
    "connect": request(),
    "bind": request(command=Command.BIND),
    "socks4a": request("example.org", user_id=b"id"),
    "granted": Socks4Reply(code=90),
    "rejected": Socks4Reply(code=91),
    "unknown_code": Socks4Reply(code=7),
    "closed": ConnectionClosed(),
}
# The expected outcome, written out independently of the module's table.
LEGAL: dict[tuple[str, str, str], Socks4State] = {}
for _ev in ("connect", "bind", "socks4a"):
    LEGAL["start", "client", _ev] = St.AWAIT_REPLY
LEGAL["await_reply_connect", "server", "granted"] = St.TUNNEL
LEGAL["await_reply_bind", "server", "granted"] = St.AWAIT_BIND_PEER
LEGAL["await_bind_peer", "server", "granted"] = St.TUNNEL
for _scenario in ("await_reply_connect", "await_reply_bind", "await_bind_peer"):
    for _ev in ("rejected", "unknown_code"):
        LEGAL[_scenario, "server", _ev] = St.MUST_CLOSE


def reach(role: Role, scenario: str) -> Socks4Connection:
    """A connection playing *role* after the scenario's steps, each sent or received as its role says."""
    conn = Socks4Connection(role)
    steps, expected = SCENARIOS[scenario]
    for sender, event in steps:
        if event is None:
            conn.send_failed()
        elif sender == role.value or isinstance(event, ConnectionClosed):
            conn.send(event)
        else:
            conn.receive_data(encode_event(event))
            assert events_of(conn) == [event]
    assert conn.state is expected
    return conn


@pytest.mark.parametrize("event_name", EVENTS)
@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("role", [CLIENT, SERVER])
def test_every_state_event_pair(role: Role, scenario: str, event_name: str) -> None:
    conn = reach(role, scenario)
    event = EVENTS[event_name]
    if isinstance(event, ConnectionClosed) and scenario != "error":
        assert conn.send(event) == b""
        assert conn.state is St.CLOSED
        return
    expected = LEGAL.get((scenario, role.value, event_name))
    if expected is None:
        with pytest.raises(LocalProtocolError):
            conn.send(event)
        assert conn.state is St.ERROR
    else:
        assert conn.send(event) == encode_event(event)
        assert conn.state is expected


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("role", [CLIENT, SERVER])
def test_foreign_event_is_a_type_error(role: Role, scenario: str) -> None:
    conn = reach(role, scenario)
    foreign = CommandRequest(command=Command.CONNECT, address=Address("1.2.3.4", 1))
    with pytest.raises((TypeError, LocalProtocolError)):
        conn.send(foreign)  # type: ignore[arg-type]


def test_classify_closed() -> None:
    assert classify(ConnectionClosed(), None) is None


def test_foreign_event_on_our_turn_leaves_state() -> None:
    conn = Socks4Connection(CLIENT)
    with pytest.raises(TypeError, match="not a SOCKS4 event"):
        conn.send(CommandRequest(command=Command.CONNECT, address=Address("1.2.3.4", 1)))  # type: ignore[arg-type]
    assert conn.state is St.AWAIT_REQUEST


@pytest.mark.parametrize("scenario", ["tunnel", "must_close", "closed"])
@pytest.mark.parametrize("role", [CLIENT, SERVER])
def test_terminal_states_pause(role: Role, scenario: str) -> None:
    conn = reach(role, scenario)
    conn.receive_data(b"\x04\x01anything")
    assert conn.next_event() is PAUSED
    assert conn.read_size_hint == 0


def test_error_state_refuses_events() -> None:
    conn = reach(SERVER, "error")
    with pytest.raises(RemoteProtocolError, match="ERROR"):
        conn.next_event()


# -- garbage: only RemoteProtocolError, in every state of both roles ---------------------

PREFIXES = [b"", b"\x04", b"\x04\x01", b"\x04\x02\x00\x50", b"\x04\x01\x00\x50\x00\x00\x00\x01",
            b"\x04\x01\x00\x50\x01\x02\x03\x04", b"\x00", b"\x00\x5a", b"\x00\x5b\x00", b"\x04\x5a"]


@given(role=st.sampled_from([CLIENT, SERVER]), scenario=st.sampled_from(sorted(SCENARIOS)),
       prefix=st.sampled_from(PREFIXES), data=st.binary(max_size=80), bytewise=st.booleans(),
       eof=st.booleans(), small_cap=st.booleans())
def test_garbage_raises_only_remote_protocol_error(
    role: Role, scenario: str, prefix: bytes, data: bytes, bytewise: bool, eof: bool, small_cap: bool
) -> None:
    conn = reach(role, scenario)
    if small_cap:
        conn = _with_cap(conn, role, scenario, 3)
    blob = prefix + data
    pieces = [blob[i : i + 1] for i in range(len(blob))] if bytewise else [blob]
    if eof:
        pieces.append(b"")
    try:
        for piece in pieces:
            if piece or eof:
                conn.receive_data(piece)
            assert conn.read_size_hint >= 0
            events_of(conn)
    except RemoteProtocolError as exc:
        assert conn.state is St.ERROR
        assert exc.reply_hint is None or isinstance(exc.reply_hint, Socks4Reply)


def _with_cap(conn: Socks4Connection, role: Role, scenario: str, cap: int) -> Socks4Connection:
    if scenario != "start":
        return conn
    return Socks4Connection(role, max_field_size=cap)


@given(st.binary(max_size=120), st.booleans())
def test_server_garbage_lenient_and_strict_client(data: bytes, lenient: bool) -> None:
    client = Socks4Connection(CLIENT, lenient_reply_version=lenient)
    client.send(request(command=Command.BIND))
    try:
        feed(client, [data[i : i + 3] for i in range(0, len(data), 3)] + [b""])
    except RemoteProtocolError:
        assert client.state is St.ERROR


# -- server errors -------------------------------------------------------------------------


@pytest.mark.parametrize(("first", "looks"), [(b"\x05\x01\x00", "SOCKS5"), (b"\x16\x03\x01", "TLS"),
                                              (b"CONNECT ", "HTTP"), (b"GET / ", "HTTP"), (b"\x00", "")])
def test_server_refuses_wrong_version_on_first_byte(first: bytes, looks: str) -> None:
    server = Socks4Connection(SERVER)
    server.receive_data(first[:1])
    with pytest.raises(RemoteProtocolError, match="expected SOCKS version 0x04") as info:
        server.next_event()
    assert looks in info.value.message
    assert info.value.reply_hint is None
    assert server.state is St.ERROR
    with pytest.raises(LocalProtocolError):
        server.send(Socks4Reply(code=91))


@pytest.mark.parametrize("command", [0, 3, 4, 0x5A, 0xFF])
def test_server_refuses_unknown_command_on_second_byte(command: int) -> None:
    server = Socks4Connection(SERVER)
    server.receive_data(bytes((4, command)))
    with pytest.raises(RemoteProtocolError, match=f"unknown SOCKS4 command {command}") as info:
        server.next_event()
    assert info.value.reply_hint == Socks4Reply(code=91)
    # After the peer's error, the hinted refusal may still be sent, once.
    assert server.send(info.value.reply_hint) == b"\x00\x5b\x00\x00\x00\x00\x00\x00"
    with pytest.raises(LocalProtocolError):
        server.send(Socks4Reply(code=91))


def _stream_until_error(server: Socks4Connection, data: bytes) -> int:
    """Feed *data* one byte at a time; return how many octets were fed when the error came."""
    for i in range(len(data)):
        server.receive_data(data[i : i + 1])
        try:
            assert server.next_event() is NEED_DATA
        except RemoteProtocolError:
            return i + 1
    raise AssertionError("no error")


@pytest.mark.parametrize("cap", [1, 5, 1024])
def test_user_id_cap(cap: int) -> None:
    head = b"\x04\x01\x00\x50\x01\x02\x03\x04"
    ok = Socks4Connection(SERVER, max_field_size=cap)
    assert feed(ok, [head + b"u" * cap + b"\0"]) == [request("1.2.3.4", user_id=b"u" * cap)]
    server = Socks4Connection(SERVER, max_field_size=cap)
    # Raised as soon as the (cap + 1)-th octet of USERID arrives without a NUL: no waiting for one.
    assert _stream_until_error(server, head + b"u" * (cap + 10)) == len(head) + cap + 1
    with pytest.raises(RemoteProtocolError, match="ERROR"):
        server.next_event()
    server = Socks4Connection(SERVER, max_field_size=cap)
    server.receive_data(head + b"u" * (cap + 1))
    with pytest.raises(RemoteProtocolError, match=f"USERID is longer than the {cap} octets") as info:
        server.next_event()
    assert info.value.reply_hint == Socks4Reply(code=91)


@pytest.mark.parametrize(("cap", "limit"), [(3, 3), (100, 100), (1024, 255), (255, 255)])
def test_hostname_cap(cap: int, limit: int) -> None:
    head = b"\x04\x01\x00\x50\x00\x00\x00\x01id\x00"
    ok = Socks4Connection(SERVER, max_field_size=cap)
    assert feed(ok, [head + b"h" * limit + b"\0"]) == [request(b"h" * limit, user_id=b"id")]
    server = Socks4Connection(SERVER, max_field_size=cap)
    assert _stream_until_error(server, head + b"h" * (limit + 10)) == len(head) + limit + 1
    server = Socks4Connection(SERVER, max_field_size=cap)
    server.receive_data(head + b"h" * (limit + 1))
    with pytest.raises(RemoteProtocolError, match=f"HOSTNAME is longer than the {limit} octets") as info:
        server.next_event()
    assert info.value.reply_hint == Socks4Reply(code=91)


def test_empty_hostname() -> None:
    server = Socks4Connection(SERVER)
    server.receive_data(b"\x04\x01\x00\x50\x00\x00\x00\x09\x00\x00")
    with pytest.raises(RemoteProtocolError, match="empty HOSTNAME") as info:
        server.next_event()
    assert info.value.reply_hint == Socks4Reply(code=91)


@pytest.mark.parametrize(("hostname", "message"), [
    (b"::1", "SOCKS4 cannot carry IPv6"),
    (b"0.0.0.3", "reserves 0.0.0.x"),
    (b"bad\x01name", "control character"),
    (b"with space", "control character"),
])
def test_invalid_hostname(hostname: bytes, message: str) -> None:
    server = Socks4Connection(SERVER)
    server.receive_data(b"\x04\x01\x00\x50\x00\x00\x00\x01\x00" + hostname + b"\x00")
    with pytest.raises(RemoteProtocolError, match=message) as info:
        server.next_event()
    assert info.value.reply_hint == Socks4Reply(code=91)


@pytest.mark.parametrize("marker", [1, 2, 0xFF])
def test_server_accepts_ipv4_literal_hostname_as_ipv4(marker: int) -> None:
    # A client that breaks the rule and sends "10.0.0.1" as a 4a HOSTNAME gets the
    # same event as one that sends DSTIP 10.0.0.1: the event cannot tell them apart.
    server = Socks4Connection(SERVER)
    server.receive_data(bytes((4, 1, 0, 80, 0, 0, 0, marker)) + b"me\x0010.0.0.1\x00")
    [event] = events_of(server)
    assert event == request(b"10.0.0.1", 80, user_id=b"me") == request(V4("10.0.0.1"), 80, user_id=b"me")
    assert isinstance(event.address.host, V4)


def test_plain_socks4_zero_address_is_not_4a() -> None:
    server = Socks4Connection(SERVER)
    server.receive_data(b"\x04\x02\x00\x00\x00\x00\x00\x00\x00")
    assert events_of(server) == [request("0.0.0.0", 0, Command.BIND)]


def test_eof_in_the_middle_of_the_request() -> None:
    server = Socks4Connection(SERVER)
    server.receive_data(b"\x04\x01\x00\x50\x00\x00\x00\x01user")
    assert server.next_event() is NEED_DATA
    server.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="closed the connection in the middle of the request"):
        server.next_event()


def test_eof_before_the_request() -> None:
    server = Socks4Connection(SERVER)
    server.receive_data(b"")
    assert server.next_event() == ConnectionClosed()
    assert server.state is St.CLOSED
    with pytest.raises(RuntimeError):
        server.receive_data(b"late")


# -- client errors ------------------------------------------------------------------------------


def test_reply_version_four_needs_opt_in() -> None:
    client = Socks4Connection(CLIENT)
    client.send(request())
    client.receive_data(b"\x04")
    with pytest.raises(RemoteProtocolError, match="lenient_reply_version=True"):
        client.next_event()
    lenient = Socks4Connection(CLIENT, lenient_reply_version=True)
    lenient.send(request())
    lenient.receive_data(b"\x04\x5a\x00\x00\x00\x00\x00\x00")
    assert events_of(lenient) == [Socks4Reply(code=90)]
    assert lenient.state is St.TUNNEL


@pytest.mark.parametrize("lenient", [False, True])
@pytest.mark.parametrize(("first", "looks"), [(0x05, "SOCKS5"), (0x48, "HTTP"), (0x16, "TLS"), (0x01, "")])
def test_reply_wrong_version(first: int, looks: str, lenient: bool) -> None:
    client = Socks4Connection(CLIENT, lenient_reply_version=lenient)
    client.send(request())
    client.receive_data(bytes((first,)))
    with pytest.raises(RemoteProtocolError, match="expected SOCKS4 reply version 0x00") as info:
        client.next_event()
    assert looks in info.value.message
    assert client.state is St.ERROR


def test_truncated_failure_reply_at_eof_keeps_its_code() -> None:
    client = Socks4Connection(CLIENT)
    client.send(request())
    client.receive_data(b"\x00\x5c\x00")
    assert client.next_event() is NEED_DATA
    client.receive_data(b"")
    assert events_of(client) == [Socks4Reply(code=92)]
    assert client.state is St.MUST_CLOSE
    assert client.trailing_data == (b"", True)


@pytest.mark.parametrize("data", [b"\x00", b"\x00\x5a", b"\x00\x5a\x00\x00\x00"])
def test_truncated_reply_at_eof(data: bytes) -> None:
    client = Socks4Connection(CLIENT)
    client.send(request())
    client.receive_data(data)
    client.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="in the middle of the reply"):
        client.next_event()


def test_eof_instead_of_reply() -> None:
    client = Socks4Connection(CLIENT)
    client.send(request())
    client.receive_data(b"")
    assert client.next_event() == ConnectionClosed()
    assert client.state is St.CLOSED


# -- read-size hint and linear NUL search --------------------------------------------------------


def test_read_size_hint_request() -> None:
    server = Socks4Connection(SERVER)
    wire = encode_event(request("example.com", user_id=b"ab"))
    hints = []
    for i in range(len(wire)):
        hints.append(server.read_size_hint)
        server.receive_data(wire[i : i + 1])
    assert server.read_size_hint == 0
    # Header (8) plus the USERID NUL; then one more while searching; after USERID's NUL
    # at least one HOSTNAME octet and its NUL; then one more while searching.
    assert hints == [9, 8, 7, 6, 5, 4, 3, 2, 1, 1, 1, 2] + [1] * 11
    # Reading exactly the hinted octets never reads past the request.
    server = Socks4Connection(SERVER)
    stream = wire + b"TUNNEL"
    at = 0
    while (hint := server.read_size_hint) > 0:
        server.receive_data(stream[at : at + hint])
        at += hint
    assert at == len(wire)
    assert events_of(server) == [request("example.com", user_id=b"ab")]


def test_read_size_hint_reply_and_our_turn() -> None:
    client = Socks4Connection(CLIENT)
    assert client.read_size_hint == 0  # our turn
    client.send(request())
    assert client.read_size_hint == 8
    client.receive_data(b"\x00\x5a\x00")
    assert client.read_size_hint == 5
    client.receive_data(b"\x00\x00\x00\x00\x00")
    assert client.read_size_hint == 0
    server = Socks4Connection(SERVER)
    server.receive_data(b"\x05")
    assert server.read_size_hint == 1  # the error is next_event()'s to report
    assert server.state is St.AWAIT_REQUEST


class CountingBuffer(bytearray):
    """A bytearray that counts the octets ``find`` examines."""

    scanned = 0

    def find(self, sub: Any, start: Any = None, end: Any = None) -> int:
        self.scanned += max(0, min(end, len(self)) - start)
        return super().find(sub, start, end)


@pytest.mark.parametrize("host", ["1.2.3.4", "example.com"])
def test_nul_search_is_linear(host: str) -> None:
    cap = 100_000
    wire = encode_event(request(host, user_id=b"x" * 50_000))
    buf = CountingBuffer()
    progress = RequestProgress()
    results = []
    for octet in wire:
        buf.append(octet)
        results.append(parse_request(buf, progress, max_field_size=cap))
        parse_request(buf, progress, max_field_size=cap)  # asking twice (read_size_hint) costs nothing more
    assert results[-1] == (request(host, user_id=b"x" * 50_000), len(wire))
    assert all(isinstance(r, int) for r in results[:-1])
    assert buf.scanned <= len(wire) + 2  # each octet examined once (plus the final NULs seen again)


# -- construction -----------------------------------------------------------------------------


def test_constructor_arguments() -> None:
    with pytest.raises(TypeError):
        Socks4Connection("client")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="max_field_size"):
        Socks4Connection(SERVER, max_field_size="10")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="at least 1"):
        Socks4Connection(SERVER, max_field_size=0)
    conn = Socks4Connection(SERVER)
    assert conn.our_role is SERVER
    assert conn.their_role is CLIENT
    assert conn.state is St.AWAIT_REQUEST
    assert conn.command is None


def test_send_failed() -> None:
    client = Socks4Connection(CLIENT)
    client.send(request())
    client.send_failed()
    assert client.state is St.ERROR
    with pytest.raises(LocalProtocolError):
        client.send(request())


"""Fuzz targets for the plain-HTTP forward-proxy codec (registered in fuzz/targets.py).

``http_forward_server`` drives a :class:`ForwardRequestReader` (what a client
sends to the proxy), ``http_forward_client`` a :class:`ForwardResponseReader`
(what an origin sends back). Each checks, besides "only the library's errors
escape":

* **chunking invariance**: fed whole and in chunks, the same events (runs of
  ``ForwardBodyData`` joined: how data is cut is not an outcome), consumed at the same
  offsets, the same error and reply hint, the same state and trailing data;
* **re-encoding**: every head re-encodes to octets that read back as the same event;
* **forwarding**: every head read can be forwarded (``forward_request`` /
  ``forward_response`` accept it), the forwarded head carries no hop-by-hop
  field but the framing and ``Connection`` the proxy writes, exactly one
  ``Host`` (requests), reads back as the same status (responses), and the body
  events read go through the forwarded head's :class:`BodyEncoder` without error;
* **read-size hints**: positive whenever ``next_event()`` says ``NEED_DATA``.

The input layout is :mod:`fuzz.common`'s (``data[0]`` chunking and EOF,
``data[1:3]`` decisions, then the peer's octets).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from fuzz.common import Decisions, Finding, make_input, pieces_of, same, split_input
from socks_sansio import NEED_DATA, PAUSED, LocalProtocolError, RemoteProtocolError
from socks_sansio._http_forward import (
    BodyEncoder,
    encode_forward_request,
    encode_forward_response,
    forward_request,
    forward_response,
    hop_by_hop_fields,
)
from socks_sansio._http_forward_events import (
    ForwardBodyData,
    ForwardEndOfMessage,
    ForwardRequest,
    ForwardResponse,
    Framing,
)
from socks_sansio._http_forward_reader import ForwardRequestReader, ForwardState
from socks_sansio._http_forward_response import ForwardResponseReader

__all__ = [
    "check_http_forward_client",
    "check_http_forward_server",
    "seed_inputs",
    "target_http_forward_client",
    "target_http_forward_server",
]

_CAPS: Final = (16 * 1024, 64, 200, 1024)
_METHODS: Final = (b"GET", b"HEAD", b"POST", b"OPTIONS")
_MAX_CYCLES: Final = 32


# -- the shared engine ------------------------------------------------------------------------


class _Run:
    """One conversation: the log of what the reader produced, and the per-event checks."""

    def __init__(self, reader: Any, bits: Decisions, role: str, version: bytes) -> None:
        self.reader = reader
        self.bits = bits
        self.role = role
        self.version = version  # the client's version, for forward_response
        self.log: list[Any] = []
        self.encoder: BodyEncoder | None = None
        self.request: ForwardRequest | None = None
        self.method = b"GET"
        self.stopped = False
        self.cycles = 0

    def event(self, event: Any, offset: int) -> None:
        if isinstance(event, ForwardBodyData):
            if not event.data:
                raise Finding("an empty ForwardBodyData")
            if self.log and self.log[-1][0] == "data":
                self.log[-1] = ("data", self.log[-1][1] + event.data)
            else:
                self.log.append(("data", event.data))
        else:
            self.log.append(("got", event, offset))
        if isinstance(event, ForwardRequest):
            self._request(event)
        elif isinstance(event, ForwardResponse):
            self._response(event)
        elif isinstance(event, ForwardBodyData | ForwardEndOfMessage):
            if self.encoder is None:
                raise Finding(f"{event!r} without a head before it")
            try:
                self.encoder.send(event)
            except LocalProtocolError as exc:
                raise Finding(f"the forwarded head's encoder refused {event!r}: {exc}") from exc
            if isinstance(event, ForwardEndOfMessage):
                self.encoder = None

    def _request(self, request: ForwardRequest) -> None:
        reader = ForwardRequestReader()
        reader.receive_data(encode_forward_request(request))
        again = reader.next_event()
        if again != request:
            raise Finding(f"{request!r} re-encoded and re-read as {again!r}")
        if request.answer_locally:
            self.encoder = BodyEncoder(request.framing, content_length=request.content_length)
            return
        try:
            forwarded = forward_request(request, via="fuzz", keep_alive=bool(self.bits.take(1)))
        except LocalProtocolError as exc:
            raise Finding(f"forward_request({request!r}) raised {exc!r}") from exc
        start, *lines = forwarded.data[:-4].split(b"\r\n")
        if start != request.method + b" " + request.path + b" HTTP/1.1":
            raise Finding(f"forwarded request line {start!r} for {request!r}")
        names = [line.partition(b":")[0].lower() for line in lines]
        allowed = {b"connection"}
        if forwarded.framing is Framing.CHUNKED:
            allowed |= {b"transfer-encoding", b"trailer"}
        leaked = (set(names) & hop_by_hop_fields(request.headers)) - allowed
        if leaked or names.count(b"host") != 1 or names.count(b"connection") != 1:
            raise Finding(f"forwarded head {forwarded.data!r} of {request!r}")
        if forwarded.framing is not request.framing:
            raise Finding(f"framing {forwarded.framing} forwarded for {request.framing}")
        self.request = request
        self.encoder = forwarded.body_encoder()

    def _response(self, response: ForwardResponse) -> None:
        reader = ForwardResponseReader(request_method=b"GET")
        reader.receive_data(encode_forward_response(response))
        again = reader.next_event()
        if again != response:
            raise Finding(f"{response!r} re-encoded and re-read as {again!r}")
        request = ForwardRequest(method=self.method, target="origin.example", http_version=self.version)
        try:
            forwarded = forward_response(response, request=request, via="fuzz")
        except LocalProtocolError as exc:
            raise Finding(f"forward_response({response!r}) raised {exc!r}") from exc
        if forwarded.data:
            back = ForwardResponseReader(request_method=self.method)
            back.receive_data(forwarded.data)
            got = back.next_event()
            if not isinstance(got, ForwardResponse) or got.status_code != response.status_code:
                raise Finding(f"forwarded {response!r} as {forwarded.data!r}, read back as {got!r}")
            if back.trailing_data[0]:
                raise Finding(f"the forwarded head {forwarded.data!r} is not one head")
        elif not (response.is_interim and self.version == b"1.0"):
            raise Finding(f"{response!r} forwarded as nothing")
        if not response.is_interim:
            self.encoder = forwarded.body_encoder()

    def paused(self) -> bool:
        """At a PAUSED: start the next cycle if the bits say so; True when parsing goes on."""
        reader = self.reader
        if self.stopped or reader.state is not ForwardState.DONE or self.cycles >= _MAX_CYCLES:
            return False
        if self.bits.take(1):
            self.stopped = True
            return False
        self.cycles += 1
        if self.role == "client":
            self.method = _METHODS[self.bits.take(2)]
            reader.start_next_cycle(request_method=self.method)
        else:
            reader.start_next_cycle()
        return True


def _drive(run: _Run, payload: bytes, sizes: Sequence[int] | None, eof: bool) -> list[Any]:
    reader = run.reader
    pieces = pieces_of(payload, [len(payload)] if sizes is None else sizes)
    fed = 0
    for index, piece in enumerate(pieces or [b""]):
        if piece:
            reader.receive_data(piece)
            fed += len(piece)
        if eof and index == len(pieces or [b""]) - 1:
            reader.receive_data(b"")
        while True:
            try:
                event = reader.next_event()
            except RemoteProtocolError as exc:
                hint = exc.reply_hint
                run.log.append(("error", None if hint is None else hint.status_code))
                return [run.log, reader.state]
            if event is NEED_DATA:
                if reader.read_size_hint <= 0:
                    raise Finding(f"NEED_DATA in state {reader.state} but read_size_hint is {reader.read_size_hint}")
                break
            if event is PAUSED:
                if run.paused():
                    continue
                break
            run.event(event, fed - len(reader.trailing_data[0]))
    return [run.log, reader.state, reader.trailing_data]


# -- the targets --------------------------------------------------------------------------------


def check_http_forward_server(payload: bytes, sizes: Sequence[int], eof: bool, decisions: int) -> None:
    """A forward proxy reading requests (head cap and cycles from *decisions*); *payload* is the client."""
    cap = _CAPS[decisions & 3]

    def run(chunking: Sequence[int] | None) -> list[Any]:
        return _drive(_Run(ForwardRequestReader(max_head_size=cap), Decisions(decisions >> 2), "server", b"1.1"),
                      payload, chunking, eof)

    same("ForwardRequestReader", run(None), run(sizes))


def check_http_forward_client(payload: bytes, sizes: Sequence[int], eof: bool, decisions: int) -> None:
    """A forward proxy reading an origin's responses (cap, method, client version, cycles from *decisions*)."""
    cap = _CAPS[decisions & 3]
    method = _METHODS[decisions >> 2 & 3]
    version = (b"1.1", b"1.0")[decisions >> 4 & 1]

    def run(chunking: Sequence[int] | None) -> list[Any]:
        state = _Run(ForwardResponseReader(request_method=method, max_head_size=cap), Decisions(decisions >> 5),
                     "client", version)
        state.method = method
        return _drive(state, payload, chunking, eof)

    same("ForwardResponseReader", run(None), run(sizes))


def target_http_forward_server(data: bytes) -> None:
    """:func:`check_http_forward_server` on a fuzzer's input (layout of :mod:`fuzz.common`)."""
    check_http_forward_server(*split_input(data))


def target_http_forward_client(data: bytes) -> None:
    """:func:`check_http_forward_client` on a fuzzer's input (layout of :mod:`fuzz.common`)."""
    check_http_forward_client(*split_input(data))


# -- seeds -------------------------------------------------------------------------------------------


def seed_inputs() -> dict[str, dict[str, bytes]]:
    """The seed corpus of both targets (written by ``fuzz/run_atheris.py --write-corpus``)."""
    m = make_input
    get = b"GET http://example.com/index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n"
    post_cl = b"POST http://h:8080/up HTTP/1.1\r\nHost: h:8080\r\nContent-Length: 5\r\n\r\nhello"
    post_chunked = (b"POST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
                    b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n")
    hop = (b"GET http://h/ HTTP/1.1\r\nHost: h\r\nConnection: X-Secret, keep-alive\r\nX-Secret: 1\r\n"
           b"Proxy-Authorization: Basic dXNlcjpwYXNz\r\nKeep-Alive: 5\r\nTE: trailers\r\nUpgrade: h2c\r\n\r\n")
    server = {
        "get": m(get),
        "get_bytewise": m(get, seed=0),
        "post_content_length": m(post_cl, seed=5),
        "post_chunked_trailers": m(post_chunked, seed=13),
        "pipelined_three": m(get + post_cl + post_chunked, seed=3),
        "pipelined_stop_after_first": m(get + get, decisions=1 << 2),
        "hop_by_hop": m(hop),
        "expect_continue": m(b"PUT http://h/f HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n"
                             b"\r\nabc"),
        "http10_last": m(b"GET http://old.example/ HTTP/1.0\r\n\r\n" + get),
        "options_asterisk": m(b"OPTIONS http://h:81 HTTP/1.1\r\nHost: h:81\r\nMax-Forwards: 2\r\n\r\n"),
        "trace_max_forwards_0": m(b"TRACE http://h/ HTTP/1.1\r\nHost: h\r\nMax-Forwards: 0\r\n\r\n"),
        "trace_two_max_forwards": m(b"TRACE http://h/ HTTP/1.1\r\nHost: h\r\nMax-Forwards: : h\r\n"
                                    b"Max-Forwards: 0\r\n\r\n0\r\n\r\n"),
        "ipv6": m(b"GET http://[2001:db8::1]:8080/x HTTP/1.1\r\nHost: [2001:db8::1]:8080\r\n\r\n"),
        "leading_crlf": m(b"\r\n\r\n" + get, seed=1),
        "connect_after_get": m(get + b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03"),
        "eof_between": m(get, eof=True),
        "cl_and_te": m(b"POST http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n"
                       b"\r\n0\r\n\r\n"),
        "double_cl": m(b"POST http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello"),
        "te_gzip_chunked": m(b"POST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
        "bad_chunk_size": m(b"POST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
                            b"zz\r\n", seed=2),
        "obs_fold": m(b"GET http://h/ HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n"),
        "bare_lf": m(b"GET http://h/ HTTP/1.1\nHost: h\n\n"),
        "nul_in_value": m(b"GET http://h/ HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n"),
        "origin_form": m(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"),
        "https_target": m(b"GET https://h/ HTTP/1.1\r\nHost: h\r\n\r\n"),
        "head_too_large": m(b"GET http://h/ HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 100 + b"\r\n\r\n", decisions=1),
        "eof_mid_body": m(post_cl[:-2], eof=True),
        "tls_hello": m(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
    }
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
               b"6\r\nhello \r\n5;e=1\r\nworld\r\n0\r\nX-Sum: 1\r\n\r\n")
    head = 1 << 2
    client = {
        "content_length": m(ok),
        "content_length_bytewise": m(ok, seed=0),
        "chunked_trailers": m(chunked, seed=9),
        "chunked_to_http10_client": m(chunked, decisions=1 << 4),
        "until_close": m(b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nbody until the end", eof=True, seed=4),
        "until_close_to_http10": m(b"HTTP/1.0 200 OK\r\n\r\nold body", eof=True, decisions=1 << 4),
        "continue_then_201": m(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
                               decisions=2 << 2),
        "early_hints_http10_client": m(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + ok, decisions=1 << 4),
        "head_with_length": m(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n" + ok, decisions=head),
        "204_then_304": m(b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n"),
        "keep_alive_three": m(ok + chunked + ok, seed=6),
        "connection_close": m(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx"),
        "hop_by_hop": m(b"HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: t=5\r\nContent-Length: 0"
                        b"\r\n\r\n"),
        "cl_and_te": m(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        "te_gzip": m(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
        "switching_protocols": m(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"),
        "eof_mid_chunk": m(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", eof=True),
        "eof_after_interim": m(b"HTTP/1.1 100 Continue\r\n\r\n", eof=True),
        "closed_before_response": m(b"", eof=True),
        "bare_lf": m(b"HTTP/1.1 200 OK\nContent-Length: 0\n\n"),
        "head_too_large": m(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 100 + b"\r\n\r\n", decisions=1),
    }
    return {"http_forward_server": server, "http_forward_client": client}

"""Minimal reproducers of bugs the fuzz targets (fuzz/targets.py) found in the core.

Each test reproduces a bug the fuzz campaign found (fuzz/RESULTS.md), now fixed,
so that it stays fixed.
"""

from __future__ import annotations

import ipaddress

from socks_sansio import Address, Command, ProxyProtocol, ServerHandshake, ServerStatus, TunnelRequested

# A pipelined SOCKS5 client: greeting (NO_AUTH) then CONNECT 192.0.2.7:80.
_SOCKS5_CONNECT = b"\x05\x01\x00" + b"\x05\x01\x00\x01\xc0\x00\x02\x07\x00\x50"


def test_server_handshake_reads_bytes_received_before_eof() -> None:
    # A client that writes its whole request and half-closes (printf ... | nc -N) before the
    # server called next_event(): the request must still be read.
    server = ServerHandshake()
    server.receive_data(_SOCKS5_CONNECT)
    server.receive_data(b"")
    event = server.next_event()
    assert event == TunnelRequested(
        protocol=ProxyProtocol.SOCKS5,
        command=Command.CONNECT,
        target=Address(ipaddress.IPv4Address("192.0.2.7"), 80),
    )
    assert server.status is ServerStatus.AWAITING_DIAL
    assert server.trailing_data == (b"", True)


def test_socks5_failure_reply_with_atyp_0_consumes_the_same_octets_however_segmented() -> None:
    from socks_sansio import (
        CLIENT,
        AuthMethod,
        CommandRequest,
        Greeting,
        MethodSelection,
        Socks5Connection,
        Socks5State,
    )

    answers = b"\x05\x00" + b"\x05\x01\x00\x00" + b"\x00\x00\x00\x00\x00\x00extra"

    def run(pieces: list[bytes]) -> tuple[bytes, bool]:
        conn = Socks5Connection(CLIENT)
        conn.send(Greeting(methods=(AuthMethod.NO_AUTH,)))
        conn.receive_data(pieces[0])
        assert conn.next_event() == MethodSelection(method=AuthMethod.NO_AUTH)
        conn.send(CommandRequest(command=Command.CONNECT, address=Address("example.com", 443)))
        for piece in pieces[1:]:
            conn.receive_data(piece)
            conn.next_event()
        assert conn.state is Socks5State.MUST_CLOSE
        return conn.trailing_data

    whole = run([answers[:2], answers[2:]])
    split = run([answers[:2], answers[2:6], answers[6:]])
    assert whole == split


def test_client_handshake_skips_interim_http_responses() -> None:
    from socks_sansio import ClientHandshake, HandshakeStatus, ProxyURL

    handshake = ClientHandshake(ProxyURL.parse("http://proxy.example:3128"), Address("example.com", 443))
    handshake.data_to_send()
    handshake.receive_data(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 Connection established\r\n\r\ntunnel")
    assert handshake.status is HandshakeStatus.ESTABLISHED
    assert handshake.trailing_data == (b"tunnel", False)


def test_host_that_idna_maps_to_an_ip_literal_is_that_ip() -> None:
    from socks_sansio import ProxyURL

    address = Address("\uff11.2.3.4", 80)  # FULLWIDTH DIGIT ONE
    url = ProxyURL.parse("socks4://fuzz@12.0.\u00b2.7")  # SUPERSCRIPT TWO
    assert not address.is_domain
    assert ProxyURL.parse(url.to_url(include_password=True)) == url

"""Behind a load balancer: the PROXY protocol header on the way in, and on the way out. Pure.

A balancer (HAProxy with ``send-proxy-v2``, a cloud NLB) connects to the proxy
itself, so the TCP peer is the balancer, not the client. It says who the client
is with a PROXY protocol header before the client's own octets. That header is
a claim, so it is trusted only from the sources configured as balancers
(``ServerConfig.proxy_protocol_from``):

* a connection from such a source must start with a header (v1 or v2); its
  source address then stands for the client everywhere: the access rules, the
  rate limits, the log line, the metrics, the UDP association's client check.
  A ``LOCAL`` header (the balancer's own health check) keeps the balancer's
  address, as the specification says; so does an ``UNKNOWN`` family;
* a connection from anyone else that starts with a header is refused: a client
  must not choose the address it is logged and limited as.

On the way out, ``ServerConfig.upstream_proxy_protocol`` sends a version 2
header to a directly dialled target (another instance behind a balancer, or
any service that reads the header), naming the client and the target.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Final

from .._address import Address
from .._errors import RemoteProtocolError
from .._proxy_protocol import ProxyHeader, ProxyHeaderReader, encode_proxy_header
from .._proxy_protocol_wire import PROXY_V2_SIGNATURE, ProxyCommand, ProxyFamily
from .._util import NEED_DATA
from .operations import Receive, ServerOperation
from .outcome import Outcome, OutcomeKind

if TYPE_CHECKING:
    from .session import ServerSession

__all__ = ["looks_like_proxy_header", "outgoing_header", "read_proxy_header"]

_V1_START: Final = b"PROXY "


def looks_like_proxy_header(first: bytes) -> bool:
    """Whether a client's first octets start a PROXY protocol header (v1 text or the v2 signature)."""
    if first.startswith(_V1_START):
        return True
    return first[:1] == PROXY_V2_SIGNATURE[:1] and first[: len(PROXY_V2_SIGNATURE)] == PROXY_V2_SIGNATURE[: len(first)]


def read_proxy_header(session: ServerSession) -> Generator[ServerOperation, Any, bytes | Outcome]:
    """Read the balancer's header; the client's first octets after it, or why the connection ends.

    Sets the session's client to the header's source (a ``PROXY`` command with
    an IP source), within the negotiation deadline.
    """
    reader = ProxyHeaderReader()
    receive = Receive(session.negotiation_deadline)
    while True:
        try:
            event = reader.next_event()
        except RemoteProtocolError as exc:
            return Outcome(OutcomeKind.PROTOCOL_ERROR, f"PROXY header: {exc.message}")
        if event is not NEED_DATA:
            break
        try:
            reader.receive_data((yield receive))
        except TimeoutError:
            return Outcome(OutcomeKind.NEGOTIATION_TIMEOUT)
    header = reader.header
    assert header is not None
    source = header.source
    if header.command is ProxyCommand.PROXY and source is not None and not source.is_domain:
        session.client = (source.host_str, source.port)
        session.client_ip = ipaddress.ip_address(source.host_str)
    data, eof = reader.trailing_data
    if not data and eof:
        return Outcome(OutcomeKind.CLOSED_DURING_NEGOTIATION)
    return data


def outgoing_header(client: tuple[str, int], target: tuple[str, int]) -> bytes:
    """A version 2 header for a directly dialled target: the client as source, *target* as destination.

    When the client's address family differs from the target's (an IPv6 client,
    an IPv4 target) no TCP4 or TCP6 header can carry both: the header is then
    ``LOCAL`` (the target uses the connection's own addresses).
    """
    source, destination = Address(client[0], client[1]), Address(target[0], target[1])
    family = ProxyFamily.TCP6 if ":" in destination.host_str else ProxyFamily.TCP4
    if (":" in source.host_str) != (family is ProxyFamily.TCP6):
        return encode_proxy_header(ProxyHeader(version=2, family=ProxyFamily.UNSPEC, command=ProxyCommand.LOCAL))
    return encode_proxy_header(ProxyHeader(version=2, family=family, source=source, destination=destination))

"""What the three backends share. Imports no I/O backend (asyncio, trio, socket, ssl).

Everything protocol-related lives in the pure core (the :class:`ClientHandshake`
driver); this module only holds what is about *connecting* and is the same on
every backend: turning the ``proxy=`` argument into hops, the deadline, the
connection report, and the logger.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Final, final

import attrs

from socks_sansio import (
    Address,
    ClientHandshake,
    Command,
    Host,
    ProxyProtocol,
    ProxyTimeoutError,
    ProxyURL,
    RemoteProtocolError,
    parse_udp_datagram,
    select_proxy,
)

__all__ = [
    "DEFAULT_RECV_SIZE",
    "ConnectionInfo",
    "Deadline",
    "Hop",
    "ProxySpec",
    "SockAddr",
    "advertised",
    "describe_target",
    "literal_sockaddr",
    "logger",
    "plan_hops",
    "proxies_from_environment",
    "to_proxies",
    "unwrap_relay_datagram",
]

logger: Final = logging.getLogger("socks_sansio.adapters")
"""Every handshake step is logged here at DEBUG level, never with a password."""

DEFAULT_RECV_SIZE: Final = 65536

ProxySpec = str | ProxyURL
"""A proxy as a URL string (``socks5h://user:pass@host:1080``) or a parsed :class:`ProxyURL`."""


def to_proxies(proxy: ProxySpec | Sequence[ProxySpec] | None) -> list[ProxyURL]:
    """The ``proxy=`` argument as a list of hops, first hop first (empty: connect directly)."""
    if proxy is None:
        return []
    if isinstance(proxy, str | ProxyURL):
        proxy = [proxy]
    return [p if isinstance(p, ProxyURL) else ProxyURL.parse(p) for p in proxy]


def proxies_from_environment(scheme: str, host: str, port: int, environ: Mapping[str, str]) -> list[ProxyURL]:
    """The proxy the environment names for this target (``ALL_PROXY``, ``HTTPS_PROXY``, ``NO_PROXY``…), if any."""
    selected = select_proxy(scheme, host, port, environ=environ)
    return [] if selected is None else [selected]


@final
@attrs.frozen
class Hop:
    """One proxy of a chain and the target its handshake asks for (the next hop, or the real target)."""

    proxy: ProxyURL
    target: Address

    def handshake(
        self, *, command: Command = Command.CONNECT, pipelined: bool = False, target: Address | None = None
    ) -> ClientHandshake:
        """A fresh client driver for this hop; *target* overrides it (e.g. after local resolution)."""
        return ClientHandshake(self.proxy, target or self.target, command=command, pipelined=pipelined)

    @property
    def needs_tls(self) -> bool:
        """Whether this proxy is spoken to over TLS (``https://``)."""
        return self.proxy.tls

    def describe(self) -> str:
        """``socks5h://host:1080`` (no password), for logs and errors."""
        return self.proxy.redacted()


def plan_hops(proxies: Sequence[ProxyURL], target: Address) -> list[Hop]:
    """Pair each proxy with what it must connect to: hop *i* leads to proxy *i+1*, the last to *target*."""
    hops = []
    for i, proxy in enumerate(proxies):
        hop_target = proxies[i + 1].address if i + 1 < len(proxies) else target
        hops.append(Hop(proxy, hop_target))
    return hops


@final
class Deadline:
    """One deadline for a whole call: TCP connect, every handshake step, and TLS.

    Args:
        timeout: seconds from now, or ``None`` for no deadline.
    """

    __slots__ = ("_at", "timeout")

    def __init__(self, timeout: float | None) -> None:
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be >= 0 or None, not {timeout}")
        self.timeout = timeout
        self._at = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        """Seconds left (never negative), or ``None`` without a deadline."""
        if self._at is None:
            return None
        return max(0.0, self._at - time.monotonic())

    def expired_error(self, what: str, proxy: str | None = None) -> ProxyTimeoutError:
        """The error to raise when the deadline passed during *what*."""
        return ProxyTimeoutError(f"timed out after {self.timeout} s during {what}", proxy=proxy)


@final
@attrs.frozen(kw_only=True)
class ConnectionInfo:
    """What a connection through proxies went through, for logs and diagnostics.

    Attributes:
        proxies: each hop as a URL without its password, first hop first.
        target: the final destination.
        protocol: the protocol of the last hop (``None`` when connected directly).
        bound: the last proxy's reply address (its outgoing address for CONNECT).
        tls: whether TLS runs end to end with the target.
        connect_time: seconds to open the TCP connection to the first hop.
        handshake_time: seconds spent in proxy handshakes (all hops).
        tls_time: seconds spent in TLS handshakes (proxies and target).
        total_time: seconds from the call to the usable connection.
    """

    proxies: tuple[str, ...]
    target: Address
    protocol: ProxyProtocol | None
    bound: Address | None
    tls: bool
    connect_time: float
    handshake_time: float
    tls_time: float
    total_time: float


def describe_target(host: str | bytes, port: int) -> Address:
    """The target as an :class:`Address` (IP literals become addresses)."""
    return Address(host, port)




def _same_endpoint(source: tuple[object, ...], relay: tuple[object, ...]) -> bool:
    try:
        source_ip = ipaddress.ip_address(str(source[0]).partition("%")[0])
        relay_ip = ipaddress.ip_address(str(relay[0]).partition("%")[0])
    except ValueError:
        return False
    if isinstance(source_ip, ipaddress.IPv6Address) and source_ip.ipv4_mapped is not None:
        source_ip = source_ip.ipv4_mapped
    return source_ip == relay_ip and source[1] == relay[1]


def unwrap_relay_datagram(
    packet: bytes, source: tuple[object, ...], relay: tuple[object, ...]
) -> tuple[bytes, Address] | None:
    """The payload and original sender of a datagram from the SOCKS5 UDP relay.

    ``None`` (logged at DEBUG) for what a client must drop: a datagram not from
    the relay, a malformed header, or a fragment (FRAG != 0: no reassembly,
    RFC 1928 §7).
    """
    if not _same_endpoint(source, relay):
        logger.debug("UDP: dropped a datagram from %s, not from the relay %s", source[:2], relay[:2])
        return None
    try:
        datagram = parse_udp_datagram(packet)
    except RemoteProtocolError as exc:
        logger.debug("UDP: dropped a malformed datagram: %s", exc.message)
        return None
    if datagram.is_fragment:
        logger.debug("UDP: dropped a fragment (FRAG %d): no reassembly", datagram.fragment)
        return None
    return datagram.data, datagram.address


def advertised(bound: Address, proxy_host: Host | str) -> Address:
    """A BIND or UDP ASSOCIATE reply address; an unspecified host (0.0.0.0, ::) means the proxy's own."""
    if isinstance(bound.host, ipaddress.IPv4Address | ipaddress.IPv6Address) and bound.host.is_unspecified:
        return Address(proxy_host, bound.port)
    return bound


SockAddr = tuple[str, int] | tuple[str, int, int, int]


def literal_sockaddr(address: Address) -> tuple[socket.AddressFamily, SockAddr] | None:
    """The family and socket address of an IP literal, as ``getaddrinfo`` gives them; ``None`` for a name.

    An IPv6 address with a zone (``fe80::1%eth0``) is left to ``getaddrinfo``, which knows the zone's index.
    """
    host = address.host
    if type(host) is ipaddress.IPv4Address:
        return socket.AF_INET, (str(host), address.port)
    if type(host) is ipaddress.IPv6Address and host.scope_id is None:
        return socket.AF_INET6, (str(host), address.port, 0, 0)
    return None

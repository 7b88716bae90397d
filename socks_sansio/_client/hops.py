"""What a client call is made of: its hops, its deadline and its report. Pure.

* The ``proxy=`` argument (a URL, a :class:`ProxyURL`, or a sequence of them)
  becomes a list of proxies (:func:`to_proxies`), or comes from the environment
  (:func:`proxies_from_environment`, given the mapping to read).
* A chain of proxies is a list of :class:`Hop`: hop *i* asks for proxy *i+1*'s
  address and the last hop for the real target (:func:`plan_hops`).
* One :class:`Deadline` covers a whole call; its clock is the runner's.
* :class:`ConnectionInfo` is what the call went through, for logs and diagnostics.
* The SOCKS5 reply addresses (BIND, UDP ASSOCIATE) and the UDP relay's datagrams
  are checked here too (:func:`advertised`, :func:`unwrap_relay_datagram`).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Final, final

import attrs

from .._address import Address, Host
from .._client_driver import ClientHandshake
from .._codes import Command
from .._environment import select_proxy
from .._errors import ProxyTimeoutError, RemoteProtocolError
from .._proxy_url import ProxyProtocol, ProxyURL
from .._udp import parse_udp_datagram

__all__ = [
    "ConnectionInfo",
    "Deadline",
    "Hop",
    "ProxySpec",
    "advertised",
    "client_logger",
    "plan_hops",
    "proxies_from_environment",
    "to_proxies",
    "unwrap_relay_datagram",
]

client_logger: Final = logging.getLogger("socks_sansio.client")
"""Every step of a client plan is logged here at DEBUG level, never with a password."""

ProxySpec = str | ProxyURL
"""A proxy as a URL string (``socks5h://user:pass@host:1080``) or a parsed :class:`ProxyURL`."""


def to_proxies(proxy: ProxySpec | Sequence[ProxySpec] | None) -> list[ProxyURL]:
    """The ``proxy=`` argument as a list of hops, first hop first (empty: connect directly).

    Raises:
        LocalProtocolError: a URL does not parse.
    """
    if proxy is None:
        return []
    if isinstance(proxy, str | ProxyURL):
        proxy = [proxy]
    return [p if isinstance(p, ProxyURL) else ProxyURL.parse(p) for p in proxy]


def proxies_from_environment(scheme: str, host: str, port: int, environ: Mapping[str, str]) -> list[ProxyURL]:
    """The proxy *environ* names for this target (``ALL_PROXY``, ``HTTPS_PROXY``, ``NO_PROXY``...), if any."""
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
    last = len(proxies) - 1
    return [Hop(proxy, proxies[i + 1].address if i < last else target) for i, proxy in enumerate(proxies)]


@final
class Deadline:
    """One deadline for a whole call: TCP connect, every handshake step, TLS, failover pauses.

    Args:
        timeout: seconds from now, or ``None`` for no deadline.
        clock: the runner's monotonic clock, in seconds.

    Raises:
        ValueError: a negative *timeout*.
    """

    __slots__ = ("_clock", "at", "timeout")

    def __init__(self, timeout: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        if timeout is not None and not timeout >= 0:  # also refuses NaN
            raise ValueError(f"timeout must be >= 0 or None, not {timeout}")
        self.timeout = timeout
        self._clock = clock
        self.at = None if timeout is None else clock() + timeout
        """When it passes, on the clock it was given (``None``: never)."""

    def remaining(self) -> float | None:
        """Seconds left (never negative), or ``None`` without a deadline."""
        at = self.at
        if at is None:
            return None
        left = at - self._clock()
        return left if left > 0.0 else 0.0

    def expired_error(self, what: str, proxy: str | None = None) -> ProxyTimeoutError:
        """The error to raise when the deadline passed during *what*."""
        return ProxyTimeoutError(f"timed out after {self.timeout} s during {what}", proxy=proxy)


@final
@attrs.frozen(kw_only=True)
class ConnectionInfo:
    """What a connection through proxies went through, for logs and diagnostics.

    Attributes:
        proxies: each hop as a URL without its password, first hop first.
        target: the final destination (for UDP ASSOCIATE: the address we announced).
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


def advertised(bound: Address, proxy_host: Host | str) -> Address:
    """A BIND or UDP ASSOCIATE reply address; an unspecified host (0.0.0.0, ::) means the proxy's own."""
    if isinstance(bound.host, ipaddress.IPv4Address | ipaddress.IPv6Address) and bound.host.is_unspecified:
        return Address(proxy_host, bound.port)
    return bound


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
        client_logger.debug("UDP: dropped a datagram from %s, not from the relay %s", source[:2], relay[:2])
        return None
    try:
        datagram = parse_udp_datagram(packet)
    except RemoteProtocolError as exc:
        client_logger.debug("UDP: dropped a malformed datagram: %s", exc.message)
        return None
    if datagram.is_fragment:
        client_logger.debug("UDP: dropped a fragment (FRAG %d): no reassembly", datagram.fragment)
        return None
    return datagram.data, datagram.address

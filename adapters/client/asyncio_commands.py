"""asyncio: BIND (:class:`BindListener`) and UDP ASSOCIATE (:class:`UdpAssociation`) through proxies.

The plans are the core's (:class:`~socks_sansio.ConnectPlan` for BIND's first
reply, :class:`~socks_sansio.HandshakePlan` for its second,
:class:`~socks_sansio.AssociatePlan`); :class:`~.asyncio_link.Link` performs them.
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
from collections.abc import Sequence
from types import TracebackType
from typing import final

from socks_sansio import (
    Address,
    AssociatePlan,
    ConnectPlan,
    HandshakePlan,
    LocalProtocolError,
    ProxyConnectionError,
    ProxySpec,
    Stepper,
)

from ._common import DEFAULT_RECV_SIZE, logger
from .asyncio_link import Link, resolve

__all__ = ["BindListener", "UdpAssociation", "open_bind", "open_udp_association"]


# --------------------------------------------------------------------------- BIND


@final
class BindListener:
    """A SOCKS BIND in progress: the proxy listens for one connection from a peer.

    Attributes:
        address: where the proxy listens (its first reply): tell the peer to
            connect here. An unspecified host in the reply is replaced by the
            proxy's address.
        info: the connection to the proxy (``bound`` is the raw first reply).
        peer: the peer that connected (the second reply), once :meth:`accept` returned.
    """

    __slots__ = ("_link", "_plan", "_writer", "address", "info", "peer")

    def __init__(self, plan: ConnectPlan, link: Link) -> None:
        assert plan.bind_address is not None
        self._plan = plan
        self._link = link
        self._writer: asyncio.StreamWriter | None = None
        self.info = plan.info()
        self.address = plan.bind_address
        self.peer: Address | None = None

    async def __aenter__(self) -> BindListener:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def accept(self, timeout: float | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Wait for the proxy's second reply: a peer connected.

        Args:
            timeout: seconds to wait, or ``None``.

        Returns:
            ``(reader, writer)`` to the peer; the connection now belongs to the
            caller (closing this listener no longer closes it). Bytes the peer
            sent with the second reply are the reader's first.

        Raises:
            ProxyRefusedError: the proxy reported a failure in the second reply.
            ProxyTimeoutError: no peer within *timeout* (the connection is closed).
            ProxyConnectionError: the proxy closed the connection.
            LocalProtocolError: called a second time.
        """
        link = self._link
        if self._writer is not None or link.transport.is_closing():
            raise LocalProtocolError("a BIND accepts one connection, once; this listener is used or closed")
        handshake = self._plan.handshake
        assert handshake is not None
        assert link.reader is not None
        plan = HandshakePlan(handshake, timeout=timeout)
        link.plan = plan
        self.peer = await link.run(plan.run())
        logger.debug("asyncio: BIND: peer %s connected", self.peer)
        self._writer = link.writer()
        return link.reader, self._writer

    async def aclose(self) -> None:
        """Close the connection to the proxy, unless :meth:`accept` handed it over."""
        if self._writer is None:
            self._link.transport.close()
            self._link.raw.close()


async def open_bind(
    proxy: ProxySpec | Sequence[ProxySpec],
    *,
    expected_peer: Address = Address("0.0.0.0", 0),  # noqa: B008 - an immutable value
    timeout: float | None = None,
    proxy_ssl: _ssl.SSLContext | None = None,
    pipelined: bool = False,
    nodelay: bool = True,
    keepalive: bool = True,
) -> BindListener:
    """Ask the (last) proxy to accept one incoming connection for us: SOCKS BIND (SOCKS5 and SOCKS4).

    Args:
        proxy: the proxy, or a chain whose last hop does the BIND.
        expected_peer: the peer we expect (proxies may use it to filter);
            ``0.0.0.0:0`` when unknown.
        timeout: one deadline for connecting and the first reply.
        proxy_ssl, pipelined, nodelay, keepalive: as in :func:`open_tunnel`.

    Returns:
        a :class:`BindListener`: advertise its ``address`` to the peer, then ``await accept()``.

    Raises:
        LocalProtocolError: no proxy, or an HTTP proxy last (HTTP has no BIND).
        ProxyError: as :func:`open_tunnel`.
    """
    plan = ConnectPlan.for_bind(proxy, expected_peer, timeout=timeout, pipelined=pipelined)
    link = Link(plan, proxy_ssl=proxy_ssl, nodelay=nodelay, keepalive=keepalive)
    await link.run(plan.run())
    listener = BindListener(plan, link)
    logger.debug("asyncio: BIND: the proxy listens at %s", listener.address)
    return listener


# ---------------------------------------------------------------- UDP ASSOCIATE


@final
class UdpAssociation:
    """A SOCKS5 UDP association (RFC 1928 §7): datagrams relayed by the proxy.

    The TCP control connection stays open; the association lasts as long as it
    does. :meth:`aclose` (or leaving ``async with``) ends both; when the proxy
    closes it, :meth:`recvfrom` raises.

    Attributes:
        relay: the relay's address (an unspecified host in the reply is replaced
            by the proxy's IP).
        info: the control connection; ``target`` is the address we announced
            (our UDP socket), ``bound`` the raw reply address.
    """

    __slots__ = ("_closed", "_link", "_plan", "_receiver", "_transport", "_watcher", "info", "relay")

    def __init__(self, plan: AssociatePlan, link: Link) -> None:
        assert link.udp is not None
        assert link.datagrams is not None
        self._plan = plan
        self._link = link
        self._transport = link.udp
        self._receiver = link.datagrams
        self._receiver.relay = (plan.relay.host_str, plan.relay.port)
        self._closed = False
        self.relay = plan.relay
        self.info = plan.info()
        self._watcher = asyncio.get_running_loop().create_task(self._watch_control())

    async def _watch_control(self) -> None:
        error: BaseException
        reader = self._link.reader
        assert reader is not None
        try:
            while await reader.read(DEFAULT_RECV_SIZE):
                pass  # nothing is expected on the control connection
            error = ProxyConnectionError("the proxy closed the UDP association", proxy=self._plan.proxy.redacted())
        except OSError as exc:
            error = ProxyConnectionError(f"the UDP association's control connection broke: {exc}")
        self._receiver.fail(error)

    async def __aenter__(self) -> UdpAssociation:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def sendto(self, data: bytes | bytearray | memoryview, address: tuple[str, int] | Address) -> None:
        """Send one datagram to *address* through the relay.

        A name is resolved here for ``socks5://`` and by the proxy for ``socks5h://``.

        Raises:
            ProxyConnectionError: the association is closed.
        """
        if self._closed:
            raise ProxyConnectionError("the UDP association is closed", proxy=self._plan.proxy.redacted())
        packet = await Stepper(self._plan.datagram(data, address)).arun(resolve)
        self._transport.sendto(packet, self._receiver.relay)

    async def recvfrom(self) -> tuple[bytes, Address]:
        """The next datagram from the relay: ``(payload, where it came from)``.

        Datagrams not from the relay, malformed ones and fragments (FRAG != 0:
        no reassembly, RFC 1928 §7) are dropped and logged at DEBUG.

        Raises:
            ProxyConnectionError: the association ended (the control connection closed).
        """
        item = await self._receiver.queue.get()
        if isinstance(item, BaseException):
            self._receiver.fail(item)  # later calls raise too
            raise item
        return item

    async def aclose(self) -> None:
        """End the association: close the UDP socket and the control connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._watcher.cancel()
        self._transport.close()
        self._link.transport.close()
        self._receiver.fail(ProxyConnectionError("the UDP association is closed", proxy=self._plan.proxy.redacted()))


async def open_udp_association(
    proxy: ProxySpec,
    *,
    timeout: float | None = None,
    nodelay: bool = True,
    keepalive: bool = True,
) -> UdpAssociation:
    """Open a SOCKS5 UDP association through one ``socks5://`` or ``socks5h://`` proxy.

    A UDP socket is bound to the local IP of the control connection; its address
    goes in the request (RFC 1928 §4: the address we will send from), and
    datagrams go to the relay the reply names.

    Args:
        proxy: the SOCKS5 proxy.
        timeout: one deadline for connecting, the handshake and the UDP setup.
        nodelay, keepalive: socket options of the control connection.

    Raises:
        LocalProtocolError: not exactly one SOCKS5 proxy.
        ProxyError: as :func:`open_tunnel`.
    """
    plan = AssociatePlan(proxy, timeout=timeout)
    link = Link(plan, nodelay=nodelay, keepalive=keepalive)
    await link.run(plan.run())
    logger.debug("asyncio: UDP ASSOCIATE: relay %s, local %s", plan.relay, plan.local)
    return UdpAssociation(plan, link)


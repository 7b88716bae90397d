"""A user's script, type-checked by CI from outside the checkout against the installed package.

It uses the public API the way the README does; ``mypy --strict`` must see every
name with its type (none may be ``Any``), which proves an installed
``socks-sansio`` (editable or not) is visible to type checkers.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import trio

from socks_sansio import Address, ConnectPlan, ProxyError, ServerConfig, Stepper, client_operations
from socks_sansio.adapters.asyncio import open_connection
from socks_sansio.adapters.server.asyncio import ProxyServer
from socks_sansio.adapters.sync import SocketLike, connect
from socks_sansio.adapters.trio import open_tcp_stream


def blocking(port: int) -> bytes:
    sock: SocketLike = connect("example.com", 80, proxy=f"socks5h://127.0.0.1:{port}", timeout=5)
    with sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        return sock.recv(100)


async def with_asyncio(port: int) -> bytes:
    reader, writer = await open_connection("example.com", 80, proxy=f"socks5h://127.0.0.1:{port}")
    writer.close()
    return await reader.read(100)


async def with_trio(port: int) -> bytes:
    stream: trio.abc.Stream = await open_tcp_stream("example.com", 80, proxy=f"socks5h://127.0.0.1:{port}")
    async with stream:
        return bytes(await stream.receive_some(100))


def a_plan_by_hand() -> list[str]:
    plan = ConnectPlan.for_call("example.com", 80, proxy="socks5h://127.0.0.1:1080")
    seen: list[str] = []

    def perform(operation: client_operations.Operation) -> object:
        seen.append(type(operation).__name__)
        if isinstance(operation, client_operations.Dial):
            raise ConnectionRefusedError("nobody there")
        return None

    with contextlib.suppress(ProxyError):
        Stepper(plan.run()).run(perform)
    return seen


async def a_server() -> tuple[str, int]:
    async with ProxyServer(ServerConfig(listen=(("127.0.0.1", 0),))) as server:
        return server.addresses[0]


if __name__ == "__main__":
    assert a_plan_by_hand() == ["Dial"]
    print(asyncio.run(a_server()), Address("example.com", 80), socket.AF_INET)

"""Every ``python`` code block in README.md runs, in order, in one namespace per block."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from .adapters.servers import echo_server
from .peer_servers import dante_server

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index: int) -> None:
    namespace: dict[str, object] = {"__name__": f"readme_{index}"}
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), namespace)


def defined(name: str) -> Any:
    """The object *name* that a README block defines."""
    for index, block in enumerate(BLOCKS):
        if f"def {name}(" in block:
            namespace: dict[str, Any] = {}
            exec(compile(block, f"README.md block {index}", "exec"), namespace)
            return namespace[name]
    raise AssertionError(f"README.md defines no {name}()")


def test_readme_adapter_examples_through_a_real_proxy() -> None:
    with dante_server() as proxy, echo_server() as target:  # dante passes half-close through
        url = f"socks5h://{proxy.host}:{proxy.port}"
        host, port = target.address
        assert defined("sync_echo")(url, host, port) == b"hello\n"
        assert asyncio.run(defined("asyncio_echo")(url, host, port)) == b"hello\n"
        assert trio.run(defined("trio_echo"), url, host, port) == b"hello\n"
        assert defined("pooled_echoes")(url, host, port, 3) == [b"hello\n"] * 3


def test_readme_socks5_client_against_a_scripted_proxy() -> None:
    socks5_connect = defined("socks5_connect")

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    seen: list[bytes] = []

    def proxy() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            seen.append(conn.recv(3))
            conn.sendall(b"\x05\x00")
            seen.append(conn.recv(100))
            # The reply and the first tunnel bytes in one segment: neither may be lost.
            conn.sendall(b"\x05\x00\x00\x01\x7f\x00\x00\x01\x10\x00" + b"hello from the target")

    thread = threading.Thread(target=proxy)
    thread.start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=10) as sock:
            early = socks5_connect(sock, "example.com", 80)  # type: ignore[operator]
            rest = b""
            while len(early) + len(rest) < len(b"hello from the target"):
                chunk = sock.recv(100)
                if not chunk:
                    break
                rest += chunk
    finally:
        thread.join(10)
        listener.close()
    assert early + rest == b"hello from the target"
    assert early == b""  # read_size_hint left the tunnel bytes in the socket
    assert seen == [b"\x05\x01\x00", b"\x05\x01\x00\x03\x0bexample.com\x00\x50"]

"""Every ``python`` code block in README.md runs, in order, in one namespace per block."""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index: int) -> None:
    namespace: dict[str, object] = {"__name__": f"readme_{index}"}
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), namespace)


def test_readme_socks5_client_against_a_scripted_proxy() -> None:
    namespace: dict[str, object] = {}
    exec(compile(BLOCKS[0], "README.md block 0", "exec"), namespace)
    socks5_connect = namespace["socks5_connect"]

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

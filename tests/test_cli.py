"""The command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from socks_sansio.adapters.cli import main


def test_demo_prints_a_whole_handshake(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--user", "alice", "--password", "pw", "[2001:db8::1]:443"]) == 0
    out = capsys.readouterr().out
    assert "01 05 61 6c 69 63 65 02 70 77" in out  # RFC 1929: VER ULEN alice PLEN pw
    assert "05 01 00 04 20 01 0d b8" in out  # CONNECT to an IPv6 address
    assert out.rstrip().endswith("state: client TUNNEL, server TUNNEL")


def test_module_entry_point_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "socks_sansio", "demo"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "Greeting" in out

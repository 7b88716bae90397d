"""``socks-sansio check``: healthy proxies and each diagnosed failure, on loopback, text and JSON.

Peers: microsocks (SOCKS5, optionally with a password), tinyproxy (HTTP
CONNECT) and ``socks-sansio serve`` in a subprocess; the target is a threaded
echo server. Every run is bounded by short ``--timeout`` values.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from socks_sansio import ProxyURL
from socks_sansio.adapters.cli import main
from socks_sansio.adapters.cli.check import check_proxy, parse_payload, run_checks
from tests.adapters.servers import echo_server
from tests.peer_servers import HOST, PeerServer, free_port, microsocks_server, tinyproxy_server, wait_for_port
from tests.server.conftest import closed_port

SECRET = "s3cr3t-pw"
WRONG = "wr0ng-pw"


@pytest.fixture(scope="module")
def echo() -> Iterator[str]:
    with echo_server() as server:
        yield f"{HOST}:{server.port}"


@pytest.fixture(scope="module")
def microsocks() -> Iterator[PeerServer]:
    with microsocks_server() as peer:
        yield peer


@pytest.fixture(scope="module")
def microsocks_auth() -> Iterator[PeerServer]:
    with microsocks_server(username="alice", password=SECRET) as peer:
        yield peer


@pytest.fixture(scope="module")
def tinyproxy() -> Iterator[PeerServer]:
    with tinyproxy_server() as peer:
        yield peer


@contextlib.contextmanager
def serve_process(*flags: str) -> Iterator[str]:
    """``socks-sansio serve`` in a subprocess; yields ``host:port``."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "socks_sansio", "serve", "--listen", f"{HOST}:{port}", "--log-level", "warning",
         *flags],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert wait_for_port(HOST, port, 20.0, alive=lambda: proc.poll() is None), "serve did not start"
        yield f"{HOST}:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def serve_auth() -> Iterator[str]:
    with serve_process("--auth", f"bob:{SECRET}") as address:
        yield address


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["check", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict[str, Any]]]:
    status, out, _ = run(capsys, "--json", *argv)
    return status, [json.loads(line) for line in out.splitlines()]


# ------------------------------------------------------------------ healthy


def test_healthy_microsocks_text(capsys: pytest.CaptureFixture[str], microsocks: PeerServer, echo: str) -> None:
    status, out, _ = run(capsys, "--target", echo, "--timeout", "5", f"socks5://{microsocks.url}")
    assert status == 0
    assert out.startswith(f"OK   socks5://{microsocks.url} protocol=socks5 auth=none connect=")
    assert "handshake=" in out and "bound=0.0.0.0:0" in out  # what microsocks replies
    assert "first-byte" not in out  # not measured without --send / --banner
    assert len(out.splitlines()) == 1


def test_healthy_microsocks_with_password_json_and_first_byte(
    capsys: pytest.CaptureFixture[str], microsocks_auth: PeerServer, echo: str
) -> None:
    url = f"socks5h://alice:{SECRET}@{microsocks_auth.url}"
    status, results = run_json(capsys, "--target", echo, "--timeout", "5", "--send", "ping\\r\\n", url)
    assert status == 0
    [result] = results
    assert result["ok"] is True and result["error"] is None and result["diagnosis"] is None
    assert result["proxy"] == f"socks5h://alice:***@{microsocks_auth.url}"
    assert result["protocol"] == "socks5h"
    assert result["auth"] == "accepted"
    assert result["handshake_ms"] >= 0 and result["connect_ms"] >= 0
    assert result["first_byte_ms"] > 0
    assert result["bound"] == "0.0.0.0:0"  # what microsocks replies
    assert SECRET not in json.dumps(results)


def test_healthy_serve_subprocess_both_protocols(
    capsys: pytest.CaptureFixture[str], serve_auth: str, echo: str
) -> None:
    urls = [f"socks5://bob:{SECRET}@{serve_auth}", f"http://bob:{SECRET}@{serve_auth}"]
    status, out, err = run(capsys, "--target", echo, "--timeout", "5", "--send", "x", *urls)
    assert status == 0, out
    lines = out.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["OK", f"socks5://bob:***@{serve_auth}"],
        ["OK", f"http://bob:***@{serve_auth}"],
    ]
    assert all("auth=accepted" in line and "first-byte=" in line for line in lines)
    assert f"bound={HOST}:" in lines[0]  # our SOCKS5 server reports its outgoing address
    assert SECRET not in out + err


def test_banner_is_timed_without_sending(microsocks: PeerServer) -> None:
    def greet(conn: socket.socket) -> None:
        conn.sendall(b"220 hello\r\n")

    from tests.adapters.servers import serve

    with serve(greet) as server:
        result = check_proxy(ProxyURL.parse(f"socks5://{microsocks.url}"), HOST, server.port, timeout=5, banner=True)
    assert result.ok and result.first_byte_ms is not None


def test_silent_target_fails_first_byte(microsocks: PeerServer) -> None:
    def silent(conn: socket.socket) -> None:
        conn.recv(1)  # wait until the client gives up

    from tests.adapters.servers import serve

    with serve(silent) as server:
        result = check_proxy(ProxyURL.parse(f"socks5://{microsocks.url}"), HOST, server.port, timeout=0.5, banner=True)
    assert not result.ok
    assert result.error == "no-first-byte"
    assert result.diagnosis == "the target sent nothing within 0.5 s"
    assert result.handshake_ms is not None  # the handshake itself worked


# ------------------------------------------------------------------ failures


def test_dead_port(capsys: pytest.CaptureFixture[str], echo: str) -> None:
    url = f"socks5://carol:{SECRET}@{HOST}:{closed_port()}"
    status, out, err = run(capsys, "--target", echo, "--timeout", "3", url)
    assert status == 1
    port = closed_port()
    assert out.startswith(f"FAIL socks5://carol:***@{HOST}:{port} protocol=socks5 auth=unknown error=dead-port")
    assert "connection refused" in out
    assert SECRET not in out + err
    status, [result] = run_json(capsys, "--target", echo, "--timeout", "3", url)
    assert status == 1 and result["error"] == "dead-port" and result["ok"] is False


def test_socks5_url_at_an_http_proxy(capsys: pytest.CaptureFixture[str], tinyproxy: PeerServer, echo: str) -> None:
    # tinyproxy waits silently for a request line: the SOCKS5 greeting times out, then an HTTP probe explains why.
    url = f"socks5://dave:{SECRET}@{tinyproxy.url}"
    status, [result] = run_json(capsys, "--target", echo, "--timeout", "1", url)
    assert status == 1
    assert result["error"] == "wrong-protocol"
    assert "looks like an HTTP proxy" in result["diagnosis"]
    assert "HTTP/1." in result["diagnosis"]
    assert SECRET not in json.dumps(result)


def test_http_url_at_a_web_server(capsys: pytest.CaptureFixture[str], echo: str) -> None:
    # A plain web server (Python's http.server) answers CONNECT with 501: not a proxy, not a refused target.
    server = http.server.ThreadingHTTPServer((HOST, 0), http.server.SimpleHTTPRequestHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        url = f"http://{HOST}:{server.server_address[1]}"
        status, [result] = run_json(capsys, "--target", echo, "--timeout", "3", url)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert status == 1
    assert result["error"] == "not-a-proxy" and result["code"] == 501
    assert "not an HTTP proxy" in result["diagnosis"]


def test_http_url_at_a_socks5_proxy(capsys: pytest.CaptureFixture[str], microsocks: PeerServer, echo: str) -> None:
    url = f"http://eve:{SECRET}@{microsocks.url}"
    status, out, err = run(capsys, "--target", echo, "--timeout", "3", url)
    assert status == 1
    assert "error=wrong-protocol" in out
    assert "looks like SOCKS5" in out
    assert SECRET not in out + err


def test_wrong_password(capsys: pytest.CaptureFixture[str], microsocks_auth: PeerServer, echo: str) -> None:
    url = f"socks5://alice:{WRONG}@{microsocks_auth.url}"
    status, out, err = run(capsys, "--target", echo, "--timeout", "3", url)
    assert status == 1
    assert "auth=refused error=auth-refused code=1: the proxy refused the credentials" in out
    assert WRONG not in out + err and SECRET not in out + err
    status, [result] = run_json(capsys, "--target", echo, "--timeout", "3", url)
    assert (status, result["auth"], result["error"], result["code"]) == (1, "refused", "auth-refused", 1)


def test_missing_credentials(capsys: pytest.CaptureFixture[str], microsocks_auth: PeerServer, echo: str) -> None:
    status, [result] = run_json(capsys, "--target", echo, "--timeout", "3", f"socks5://{microsocks_auth.url}")
    assert status == 1
    assert result["auth"] == "refused"
    assert result["diagnosis"].startswith("the proxy wants credentials and none were given")


def test_wrong_password_serve(capsys: pytest.CaptureFixture[str], serve_auth: str, echo: str) -> None:
    urls = [f"socks5://bob:{WRONG}@{serve_auth}", f"http://bob:{WRONG}@{serve_auth}"]
    status, results = run_json(capsys, "--target", echo, "--timeout", "3", *urls)
    assert status == 1
    assert [(r["auth"], r["error"]) for r in results] == [("refused", "auth-refused")] * 2
    assert results[1]["code"] == 407
    assert WRONG not in json.dumps(results)


def test_target_refused(capsys: pytest.CaptureFixture[str], microsocks: PeerServer, tinyproxy: PeerServer) -> None:
    target = f"{HOST}:{closed_port()}"
    urls = [f"socks5://{microsocks.url}", f"http://{tinyproxy.url}"]
    status, results = run_json(capsys, "--target", target, "--timeout", "5", *urls)
    assert status == 1
    assert [(r["error"], r["code"], r["auth"]) for r in results] == [
        ("target-refused", 5, "none"),  # SOCKS5 REP 0x05: connection refused
        ("target-refused", 500, "none"),  # tinyproxy: 500 Unable to connect
    ]
    status, out, _ = run(capsys, "--target", target, "--timeout", "5", urls[0])
    assert status == 1 and "error=target-refused code=5: the proxy could not reach the target (code 5)" in out


def test_timeout(capsys: pytest.CaptureFixture[str], echo: str) -> None:
    # A listener that accepts (the kernel does, thanks to the backlog) but never answers.
    with socket.socket() as silent:
        silent.bind((HOST, 0))
        silent.listen(4)
        url = f"http://{HOST}:{silent.getsockname()[1]}"
        status, [result] = run_json(capsys, "--target", echo, "--timeout", "0.5", url)
    assert status == 1
    assert result["error"] == "timeout"
    assert "timed out after 0.5 s" in result["diagnosis"]


def test_one_failure_among_healthy_proxies_exits_1(
    capsys: pytest.CaptureFixture[str], microsocks: PeerServer, echo: str
) -> None:
    urls = [f"socks5://{microsocks.url}", f"socks5://{HOST}:{closed_port()}", f"socks5h://{microsocks.url}"]
    status, results = run_json(capsys, "--target", echo, "--timeout", "3", *urls)
    assert status == 1
    assert [r["ok"] for r in results] == [True, False, True]


# ------------------------------------------------------------------ usage


@pytest.mark.parametrize(
    "argv",
    [
        ["--target", "127.0.0.1:80", f"ftp://u:{SECRET}@host:21"],  # unknown scheme
        ["--target", "127.0.0.1:80", f"socks4://u:{SECRET}@host"],  # SOCKS4 has no password
        ["--target", "no-port", "socks5://127.0.0.1:1080"],
        ["--target", "127.0.0.1:80", "--timeout", "0", "socks5://127.0.0.1:1080"],
        ["--target", "127.0.0.1:80", "--send", "x", "--banner", "socks5://127.0.0.1:1080"],
        ["--target", "127.0.0.1:80", "--send", "\\x4", "socks5://127.0.0.1:1080"],
    ],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    status, out, err = run(capsys, *argv)
    assert status == 2
    assert out == ""
    assert err.startswith("socks-sansio check: ")
    assert SECRET not in err


def test_argparse_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as missing_target:
        main(["check", "socks5://127.0.0.1:1080"])
    with pytest.raises(SystemExit) as missing_url:
        main(["check", "--target", "127.0.0.1:80"])
    assert missing_target.value.code == missing_url.value.code == 2
    capsys.readouterr()


def test_run_checks_with_no_urls_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_checks([], "127.0.0.1:80") == 2
    assert "at least one proxy URL" in capsys.readouterr().err


def test_parse_payload() -> None:
    assert parse_payload("HEAD / HTTP/1.0\\r\\n\\r\\n") == b"HEAD / HTTP/1.0\r\n\r\n"
    assert parse_payload("\\x00\\xff") == b"\x00\xff"
    assert parse_payload("caf\u00e9") == "caf\u00e9".encode()


def test_console_script_exit_status(microsocks: PeerServer, echo: str) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "socks_sansio", "check", "--target", echo, "--timeout", "5",
         f"socks5://{microsocks.url}"],
        check=False, capture_output=True, text=True, timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    failed = subprocess.run(
        [sys.executable, "-m", "socks_sansio", "check", "--target", echo, "--timeout", "3", "--json",
         f"socks5://u:{SECRET}@{HOST}:{closed_port()}"],
        check=False, capture_output=True, text=True, timeout=60,
    )
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["error"] == "dead-port"
    assert SECRET not in failed.stdout + failed.stderr

"""The ``socks-sansio`` command line around the server: refusals at start-up, ``--auth-file``, ``--config``,
and ``socks-sansio connect`` piping stdin through a running server (alone and as a chain across backends).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from socks_sansio import UserDatabase
from tests.adapters.servers import ThreadedServer, recv_exactly

from .conftest import (
    HOST,
    LISTENING_LINE,
    PASSWORD,
    TIMEOUT,
    USER,
    ProxyFactory,
    ProxyProcess,
    closed_by_peer,
    closed_port,
    connect,
    http_connect_request,
    http_status,
    read_http_head,
    read_socks4_reply,
    read_until_eof,
    rfc1929_request,
    run_curl,
    socks4_request,
    socks5_greeting,
    socks5_open,
)

CONNECT = 1


def run_serve(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """``socks-sansio serve ARGS`` expected to exit by itself (a refused configuration)."""
    return subprocess.run(
        [sys.executable, "-m", "socks_sansio", "serve", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def run_connect(proxies: list[str], port: int, data: bytes, *flags: str,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """``socks-sansio connect --proxy P... [FLAGS] 127.0.0.1 PORT`` with *data* on stdin (then closed)."""
    proxy_args = [arg for url in proxies for arg in ("--proxy", url)]
    return subprocess.run(
        [sys.executable, "-m", "socks_sansio", "connect", "--timeout", str(TIMEOUT), *proxy_args, *flags, HOST,
         str(port)],
        input=data,
        capture_output=True,
        timeout=30,
        check=False,
        env=env,
    )


def _environment(**variables: str) -> dict[str, str]:
    """This process's environment without any proxy variable, plus *variables*."""
    names = {"all_proxy", "http_proxy", "https_proxy", "no_proxy"}
    env = {name: value for name, value in os.environ.items() if name.lower() not in names}
    return {**env, **variables}


# ------------------------------------------------------------------ refused at start-up


def test_open_relay_is_refused(backend: str) -> None:
    """Beyond loopback without auth: exit 2 and a message saying why (nothing is bound: the config is refused)."""
    result = run_serve("--listen", "0.0.0.0:0", "--backend", backend)
    assert result.returncode == 2, result
    assert "0.0.0.0:0 without authentication would make an open proxy" in result.stderr
    assert "--auth" in result.stderr
    assert "--allow-open-relay" in result.stderr
    assert not LISTENING_LINE.search(result.stderr), "it never bound"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--allow", "bogus=1"], "unknown key 'bogus'"),
        (["--deny", "to=10.0.0.0/8 port=99999"], "port range 99999-99999 is not within 0-65535"),
        (["--auth", "nocolon"], "--auth takes USER:PASSWORD"),
        (["--protocols", "socks5,gopher"], "--protocols takes a comma-separated subset"),
        (["--negotiation-timeout", "0"], "negotiation_timeout must be > 0"),
        (["--max-clients", "0"], "max_clients and backlog must be >= 1"),
        (["--auth-file", "/nonexistent/users.txt"], "No such file"),
        (["--workers", "2"], "--workers needs fixed ports"),
    ],
    ids=["rule-key", "rule-port", "auth", "protocols", "timeout", "max-clients", "auth-file", "workers"],
)
def test_bad_configuration_exits_2(flags: list[str], message: str) -> None:
    result = run_serve("--listen", f"{HOST}:0", *flags)
    assert result.returncode == 2, result
    assert result.stderr.startswith("socks-sansio serve: "), result.stderr
    assert message in result.stderr, result.stderr


# ------------------------------------------------------------------ --auth-file


def _login(server: ProxyProcess, user: str, password: str) -> bool:
    """Whether RFC 1929 login with these credentials succeeds (status 0)."""
    with connect(server.address) as sock:
        sock.sendall(socks5_greeting(auth=True) + rfc1929_request(user, password))
        assert recv_exactly(sock, 2) == b"\x05\x02"
        return recv_exactly(sock, 2) == b"\x01\x00"


def test_auth_file_with_hashed_and_plain_passwords(
    start_proxy: ProxyFactory, tmp_path: Path, echo: ThreadedServer, origin: tuple[str, int]
) -> None:
    users = tmp_path / "users.txt"
    users.write_text(
        "# comment lines and blank lines are skipped\n\n"
        f"{USER}:{UserDatabase.hash_password(PASSWORD, iterations=1000)}\n"
        "bob:plain text:with colons\n",
        "utf-8",
    )
    server = start_proxy("--auth-file", str(users))
    assert _login(server, USER, PASSWORD)
    assert _login(server, USER, PASSWORD), "a second login (the verified-hash cache) works too"
    assert not _login(server, USER, "wrong")
    assert _login(server, "bob", "plain text:with colons")
    assert not _login(server, "mallory", PASSWORD)
    with connect(server.address) as sock:
        assert socks5_open(sock, CONNECT, HOST, echo.port, user=USER, password=PASSWORD)[0] == 0
        sock.sendall(b"hashed")
        assert recv_exactly(sock, 6) == b"hashed"
    result = run_curl("-p", "-x", f"http://{server.authority}", "--proxy-user", f"{USER}:{PASSWORD}",
                      f"http://{HOST}:{origin[1]}/hashed")
    assert result.returncode == 0, result.stderr
    assert "hello from the origin" in result.stdout
    server.wait_log("outcome=authentication failed", count=2)
    assert "pbkdf2" not in server.log()


# ------------------------------------------------------------------ --config


def test_config_file(start_proxy: ProxyFactory, tmp_path: Path, echo: ThreadedServer) -> None:
    """Every key of the TOML file applies: listen, auth, protocols, rules, timeouts (dashes or underscores)."""
    refused = closed_port()
    config = tmp_path / "serve.toml"
    config.write_text(
        f'listen = ["{HOST}:0"]\n'
        'auth = ["carol:pw"]\n'
        'protocols = "socks5,http"\n'
        f'deny = ["to=127.0.0.1/32 port={refused}"]\n'
        "negotiation-timeout = 5\n"
        "shutdown_grace = 3\n"
        'log-level = "info"\n',
        "utf-8",
    )
    server = start_proxy("--config", str(config), listen=False)
    with connect(server.address) as sock:
        assert socks5_open(sock, CONNECT, HOST, echo.port, user="carol", password="pw")[0] == 0
        sock.sendall(b"toml")
        assert recv_exactly(sock, 4) == b"toml"
    with connect(server.address) as sock:
        assert socks5_open(sock, CONNECT, HOST, refused, user="carol", password="pw")[0] == 2, "denied, not refused"
    with connect(server.address) as sock:
        sock.sendall(socks4_request(CONNECT, HOST, echo.port))
        assert closed_by_peer(sock), "SOCKS4 is not among the configured protocols"
    with connect(server.address) as sock:
        sock.sendall(http_connect_request(f"{HOST}:{echo.port}"))
        assert http_status(read_http_head(sock)) == 407


def test_flags_override_the_config_file(start_proxy: ProxyFactory, tmp_path: Path, echo: ThreadedServer) -> None:
    config = tmp_path / "serve.toml"
    config.write_text('protocols = "http"\nnegotiation_timeout = -1\n', "utf-8")
    alone = run_serve("--config", str(config), "--listen", f"{HOST}:0")
    assert alone.returncode == 2
    assert "negotiation_timeout must be > 0" in alone.stderr
    server = start_proxy("--config", str(config), "--negotiation-timeout", "5", "--protocols", "socks4")
    with connect(server.address) as sock:
        sock.sendall(socks4_request(CONNECT, HOST, echo.port))
        assert read_socks4_reply(sock)[0] == 90
        sock.sendall(b"flag")
        assert recv_exactly(sock, 4) == b"flag"
    with connect(server.address) as sock:
        sock.sendall(http_connect_request(f"{HOST}:{echo.port}"))
        assert read_until_eof(sock) == b"", "HTTP, the file's protocol, was replaced by the flag's"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("idle-timout = 5\n", "unknown key 'idle-timout' (did you mean 'idle-timeout'?)"),
        ('listen = ["127.0.0.1:0", 1080]\n', "'listen' must be a list of strings (or one string): item 2"),
        ('max-clients = "10"\n', "'max-clients' must be an integer, not a string"),
        ('listen = ["127.0.0.1:0"\nmax-clients = 1\n', "not valid TOML: "),
    ],
    ids=["unknown-key", "list-item", "wrong-type", "syntax"],
)
def test_a_bad_config_file_exits_2_with_one_line(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "serve.toml"
    config.write_text(text, "utf-8")
    result = run_serve("--config", str(config))
    assert result.returncode == 2, result
    assert result.stderr.startswith(f"socks-sansio serve: {config}: "), result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not LISTENING_LINE.search(result.stderr)


def test_one_string_for_a_list_in_the_config_file(start_proxy: ProxyFactory, tmp_path: Path,
                                                  echo: ThreadedServer) -> None:
    """``listen = "HOST:PORT"`` is one address (it used to be read as a list of characters)."""
    config = tmp_path / "serve.toml"
    config.write_text(f'listen = "{HOST}:0"\nauth = "frank:pw"\n', "utf-8")
    server = start_proxy("--config", str(config), listen=False)
    assert len(server.addresses) == 1
    with connect(server.address) as sock:
        assert socks5_open(sock, CONNECT, HOST, echo.port, user="frank", password="pw")[0] == 0
        sock.sendall(b"one")
        assert recv_exactly(sock, 3) == b"one"


# ------------------------------------------------------------------ socks-sansio hash-password


def run_hash_password(*args: str, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    """``socks-sansio hash-password ARGS`` with *stdin* piped (not a terminal: one line is read)."""
    return subprocess.run(
        [sys.executable, "-m", "socks_sansio", "hash-password", *args],
        input=stdin, capture_output=True, timeout=60, check=False,
    )


def test_hash_password_makes_an_auth_file_line_the_server_accepts(start_proxy: ProxyFactory, tmp_path: Path) -> None:
    password = "pw with spaces:and a colon ü"
    result = run_hash_password("--iterations", "1000", "--user", "erin", stdin=password.encode() + b"\r\n")
    assert result.returncode == 0, result.stderr
    line = result.stdout.decode().strip()
    assert line.startswith("erin:pbkdf2_sha256$1000$") and password not in line
    assert UserDatabase.from_lines([line]).check(b"erin", password.encode())
    bare = run_hash_password(stdin=b"other\n")
    assert bare.returncode == 0 and bare.stdout.decode().startswith(f"pbkdf2_sha256${UserDatabase.DEFAULT_ITERATIONS}$")
    users = tmp_path / "users.txt"
    users.write_text(line + "\n", "utf-8")
    server = start_proxy("--auth-file", str(users))
    assert _login(server, "erin", password)
    assert not _login(server, "erin", "pw with spaces")


@pytest.mark.parametrize("stdin", [b"\n", b""], ids=["empty-line", "no-line"])
def test_hash_password_refuses_an_empty_password(stdin: bytes) -> None:
    result = run_hash_password("--iterations", "1000", stdin=stdin)
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr.startswith(b"socks-sansio hash-password: ")
    assert b"Traceback" not in result.stderr


# ------------------------------------------------------------------ socks-sansio connect


@pytest.mark.parametrize("scheme", ["socks5h", "http"])
def test_connect_pipes_stdin_through_the_server(proxy: ProxyProcess, echo: ThreadedServer, scheme: str) -> None:
    data = os.urandom(300_000)
    result = run_connect([proxy.url(scheme)], echo.port, data)
    assert result.returncode == 0, result.stderr
    assert result.stdout == data


def test_connect_with_credentials(auth_proxy: ProxyProcess, echo: ThreadedServer) -> None:
    data = b"line one\nline two\n"
    result = run_connect([auth_proxy.url("socks5h", USER, PASSWORD)], echo.port, data)
    assert result.returncode == 0, result.stderr
    assert result.stdout == data
    refused = run_connect([auth_proxy.url("socks5h", USER, "wrong")], echo.port, data)
    assert refused.returncode != 0
    assert refused.stdout == b""


def test_connect_reports_a_refusal_in_one_line(proxy: ProxyProcess) -> None:
    result = run_connect([proxy.url("socks5h")], closed_port(), b"unused")
    assert result.returncode == 1
    assert result.stdout == b""
    assert b"Traceback" not in result.stderr, result.stderr.decode()
    assert result.stderr.startswith(b"socks-sansio connect: ")
    assert b"connection refused (REP 0x05)" in result.stderr


def test_connect_chain_across_backends(any_proxies: ProxyFactory, echo: ThreadedServer) -> None:
    """A chain asyncio server -> trio server -> echo, and back the other way, through ``connect``."""
    first = any_proxies(backend="asyncio", wait=False)
    second = any_proxies(backend="trio", wait=False)  # both start at once
    first.wait_ready()
    second.wait_ready()
    data = os.urandom(50_000)
    for chain in ([first.url("socks5h"), second.url("http")], [second.url("socks4a"), first.url("socks5")]):
        result = run_connect(chain, echo.port, data)
        assert result.returncode == 0, (chain, result.stderr)
        assert result.stdout == data


def _eof_reporter(wait: float) -> ThreadedServer:
    """A target that reads b"ping\\n", then says whether an EOF follows within *wait* s ("EOF"/"OPEN"), and closes."""
    def handler(conn: socket.socket) -> None:
        assert recv_exactly(conn, 5) == b"ping\n"
        conn.settimeout(wait)
        try:
            saw_eof = conn.recv(1) == b""
        except TimeoutError:
            saw_eof = False
        conn.sendall(b"EOF\n" if saw_eof else b"OPEN\n")

    return ThreadedServer(handler)


@pytest.mark.parametrize(
    ("flags", "wait", "seen"),
    # With half-close the EOF follows the data at once: the target may wait long for it. With
    # --no-shutdown it never comes: an absence can only be seen by waiting, briefly.
    [((), TIMEOUT, b"EOF\n"), (("--no-shutdown",), 1.0, b"OPEN\n")],
    ids=["half-close", "no-shutdown"],
)
def test_connect_half_closes_at_the_end_of_stdin_unless_no_shutdown(
    proxy: ProxyProcess, flags: tuple[str, ...], wait: float, seen: bytes
) -> None:
    target = _eof_reporter(wait)
    try:
        result = run_connect([proxy.url("socks5h")], target.port, b"ping\n", *flags)
    finally:
        target.close()
    assert result.returncode == 0, result.stderr
    assert result.stdout == seen, "the target saw an EOF" if seen == b"OPEN\n" else "the target saw no EOF"


def test_connect_takes_the_proxy_from_all_proxy(proxy: ProxyProcess, echo: ThreadedServer) -> None:
    data = b"through ALL_PROXY\n"
    result = run_connect([], echo.port, data, env=_environment(ALL_PROXY=proxy.url("socks5h")))
    assert result.returncode == 0, result.stderr
    assert result.stdout == data
    # NO_PROXY names the target: connected directly, so the dead proxy is never tried.
    dead = f"socks5h://{HOST}:{closed_port()}"
    result = run_connect([], echo.port, data, env=_environment(all_proxy=dead, NO_PROXY=HOST))
    assert result.returncode == 0, result.stderr
    assert result.stdout == data
    result = run_connect([], echo.port, data, env=_environment())
    assert result.returncode == 2
    assert result.stderr == b"socks-sansio connect: no proxy: give --proxy URL or set ALL_PROXY\n"
    result = run_connect([], echo.port, data, env=_environment(ALL_PROXY="socks9://x:1"))
    assert result.returncode == 2 and b"ALL_PROXY" in result.stderr and b"Traceback" not in result.stderr


def test_connect_stops_quietly_when_its_reader_goes_away(proxy: ProxyProcess, echo: ThreadedServer) -> None:
    """``socks-sansio connect ... | head -c 10``: the reader closes the pipe early; no BrokenPipeError traceback."""
    command = [sys.executable, "-m", "socks_sansio", "connect", "--timeout", str(TIMEOUT), "--proxy",
               proxy.url("socks5h"), HOST, str(echo.port)]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write(b"x" * 4096)  # echoed back: more than the reader takes
        proc.stdin.flush()
        assert proc.stdout.read(10) == b"x" * 10
        proc.stdout.close()  # as head does once it has its ten octets
        proc.stdin.write(b"y" * 65536)  # the echo now writes into a closed pipe
        proc.stdin.close()
        try:
            status = proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        errors = proc.stderr.read()
    assert b"Traceback" not in errors and b"BrokenPipe" not in errors, errors.decode()
    assert status == 0

"""The asyncio server on uvloop: ``socks-sansio serve --loop uvloop`` end to end, and the ``--loop`` choice.

Strategy. The rest of tests/server pins the subprocess servers to asyncio's
own loop (``--loop asyncio``, conftest :data:`BACKEND_FLAGS`) and runs every
in-process server test (``in_process_proxy``: the splice relay, TLS
listeners, ``https://`` upstreams and chains) on both loops. This module runs
the paths that need the real command on uvloop: curl through SOCKS5, SOCKS4a
and HTTP CONNECT with and without a password, BIND, UDP ASSOCIATE, a tunnel
past the splice threshold, an upstream route to it and
``--workers``; the servers start together, once per module. Then the
choice itself: the start-up log names the loop, ``--loop`` from a TOML file,
and the refusals (trio with a ``--loop``, uvloop not installed) as usage
errors, checked in process where the command exits before serving.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from socks_sansio import ServerConfig, parse_upstream
from socks_sansio.adapters.cli import main
from socks_sansio.adapters.cli.config_file import ConfigFileError
from socks_sansio.adapters.cli.serve import config_from_argv
from socks_sansio.adapters.server.asyncio import event_loop_factory, event_loop_name
from tests.adapters.servers import ThreadedServer, recv_exactly
from tests.peer_servers import free_port

from .conftest import (
    HOST,
    PASSWORD,
    TIMEOUT,
    UDP_TIMEOUT,
    USER,
    InProcessProxy,
    ProxyProcess,
    connect,
    parse_udp,
    read_socks5_reply,
    read_until_eof,
    run_curl,
    socks5_open,
    stop_all,
    udp_header,
)

if importlib.util.find_spec("uvloop") is None and not os.environ.get("CI"):
    pytest.skip("uvloop is not installed (the 'uvloop' extra)", allow_module_level=True)

CONNECT, BIND, UDP_ASSOCIATE = 1, 2, 3
MIB = 1 << 20
SERVERS = {
    "plain": ("--shutdown-grace", "3"),
    "auth": ("--shutdown-grace", "3", "--auth", f"{USER}:{PASSWORD}"),
}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ProxyProcess]]:
    """``socks-sansio serve --loop uvloop`` processes, started at once: :data:`SERVERS` and two ``--workers``."""
    workdir = tmp_path_factory.mktemp("uvloop-servers")
    running = {name: ProxyProcess("uvloop", args, workdir) for name, args in SERVERS.items()}
    running["workers"] = ProxyProcess(
        "uvloop", ("--workers", "2", "--listen", f"{HOST}:{free_port()}"), workdir, listen=False
    )
    try:
        for process in running.values():
            process.wait_ready()
        yield running
    finally:
        stop_all(list(running.values()))


def curl_page(server: ProxyProcess, mode: str, origin: tuple[str, int], credentials: str | None = None) -> str:
    """The origin's page fetched by curl through *server* in *mode*; fails with curl's error and the log."""
    flags = {"socks5h": ["--socks5-hostname", server.authority], "socks4a": ["--socks4a", server.authority],
             "http": ["-p", "-x", f"http://{server.authority}"]}[mode]  # fmt: skip
    user = ["--proxy-user", credentials] if credentials else []
    result = run_curl(*flags, *user, f"http://localhost:{origin[1]}/{mode}")
    assert result.returncode == 0, f"curl failed: {result.stderr}\n{server.describe()}"
    return result.stdout


# ------------------------------------------------------------------ end to end, on the real command


def test_the_start_up_log_names_uvloop(servers: dict[str, ProxyProcess]) -> None:
    import uvloop

    server = servers["plain"]
    line = f"listening on {server.authority} (event loop: uvloop {uvloop.__version__})"
    assert line in server.wait_log(line), server.describe()


@pytest.mark.parametrize("mode", ["socks5h", "socks4a", "http"])
def test_curl_through_each_protocol(servers: dict[str, ProxyProcess], origin: tuple[str, int], mode: str) -> None:
    assert curl_page(servers["plain"], mode, origin) == f"hello from the origin, path /{mode}\n"


@pytest.mark.parametrize("mode", ["socks5h", "http"])
def test_curl_with_a_password(servers: dict[str, ProxyProcess], origin: tuple[str, int], mode: str) -> None:
    server = servers["auth"]
    assert curl_page(server, mode, origin, f"{USER}:{PASSWORD}") == f"hello from the origin, path /{mode}\n"
    refused = run_curl("--socks5-hostname", server.authority, "--proxy-user", f"{USER}:wrong",
                       f"http://localhost:{origin[1]}/")  # fmt: skip
    assert refused.returncode != 0 and not refused.stdout


def test_a_tunnel_past_the_splice_threshold_both_ways(servers: dict[str, ProxyProcess], echo: ThreadedServer) -> None:
    """3 MiB through an echo: the server moves the tunnel to splice() after 256 KiB, then passes the half-close."""
    payload = os.urandom(3 * MIB)
    with connect(servers["plain"].address) as sock:
        assert socks5_open(sock, CONNECT, HOST, echo.port)[0] == 0

        def send() -> None:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        received = read_until_eof(sock)
        sender.join(TIMEOUT)
    assert received == payload
    servers["plain"].wait_log(f"up={len(payload)} down={len(payload)} ")


def test_bind(servers: dict[str, ProxyProcess]) -> None:
    with connect(servers["plain"].address) as control:
        rep, bound = socks5_open(control, BIND, HOST, 0)
        assert rep == 0 and bound[0] == HOST
        with socket.create_connection(bound, timeout=TIMEOUT) as peer:
            rep, announced = read_socks5_reply(control)
            assert rep == 0 and announced == peer.getsockname()
            control.sendall(b"to the peer")
            assert recv_exactly(peer, 11) == b"to the peer"
            peer.sendall(b"to the client")
            assert recv_exactly(control, 13) == b"to the client"


def test_udp_associate(servers: dict[str, ProxyProcess], udp_echo: tuple[str, int]) -> None:
    with connect(servers["plain"].address) as control, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind((HOST, 0))
        udp.settimeout(UDP_TIMEOUT)
        rep, relay = socks5_open(control, UDP_ASSOCIATE, *udp.getsockname())
        assert rep == 0
        for payload in (b"one", os.urandom(1200)):
            udp.sendto(udp_header(*udp_echo) + payload, relay)
            data, source = udp.recvfrom(65535)
            assert source == relay and parse_udp(data) == (udp_echo, payload)


def test_an_upstream_route_to_a_uvloop_server(
    servers: dict[str, ProxyProcess], in_process_proxy: Callable[..., InProcessProxy], origin: tuple[str, int]
) -> None:
    """A first hop (in process, on each loop) forwards to the uvloop server through our SOCKS5 client."""
    remote = servers["auth"]
    local = in_process_proxy(upstreams=(parse_upstream(f"socks5h://{USER}:{PASSWORD}@{remote.authority}"),))
    result = run_curl("--socks5-hostname", f"{HOST}:{local.address[1]}", f"http://localhost:{origin[1]}/hop")
    assert result.returncode == 0, f"{result.stderr}\n{remote.describe()}"
    assert result.stdout == "hello from the origin, path /hop\n"
    remote.wait_log(f"user={USER} proto=socks5 cmd=CONNECT target=localhost:{origin[1]} ")


def test_workers_run_on_uvloop(servers: dict[str, ProxyProcess], echo: ThreadedServer) -> None:
    server = servers["workers"]
    server.wait_log("(event loop: uvloop ", count=2)  # one start-up line per worker process
    for _ in range(4):
        with connect(server.address) as sock:
            assert socks5_open(sock, CONNECT, HOST, echo.port)[0] == 0
            sock.sendall(b"w")
            assert recv_exactly(sock, 1) == b"w"


# ------------------------------------------------------------------ the choice


def test_in_process_servers_log_their_loop(
    in_process_proxy: Callable[..., InProcessProxy], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="socks_sansio.server"):
        server = in_process_proxy()
    expected = event_loop_name(server.loop)
    assert expected.split()[0] == server.server.config.event_loop  # "asyncio", or "uvloop 0.23.0"
    assert f"listening on {HOST}:{server.address[1]} (event loop: {expected})" in caplog.text


def test_event_loop_factory() -> None:
    import uvloop

    assert event_loop_factory("asyncio") is None
    assert event_loop_factory("uvloop") is uvloop.new_event_loop
    assert event_loop_factory("auto") is uvloop.new_event_loop


def test_without_uvloop_auto_is_asyncio_and_uvloop_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if not installed: imports fail, find_spec says None
    assert event_loop_factory("auto") is None
    with pytest.raises(RuntimeError, match="uvloop"):
        event_loop_factory("uvloop")
    with pytest.raises(ValueError, match=r"pip install 'socks-sansio\[uvloop\]'"):
        ServerConfig(event_loop="uvloop")
    assert main(["serve", "--listen", f"{HOST}:0", "--loop", "uvloop"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("socks-sansio serve: --loop uvloop needs the 'uvloop' extra"), err
    assert ServerConfig(event_loop="auto").event_loop == "auto"


@pytest.mark.parametrize("choice", ["uvloop", "asyncio"])
def test_trio_with_a_loop_is_a_usage_error(capsys: pytest.CaptureFixture[str], choice: str) -> None:
    assert main(["serve", "--listen", f"{HOST}:0", "--backend", "trio", "--loop", choice]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"socks-sansio serve: --loop {choice} applies to the asyncio backend"), err


def test_an_unknown_loop_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--loop", "libuv"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'libuv'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--loop takes auto, asyncio or uvloop, not 'libuv'"):
        ServerConfig(event_loop="libuv")  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "expected"), [('loop = "uvloop"', "uvloop"), ('loop = "asyncio"', "asyncio"),
                                                ("", "auto")])  # fmt: skip
def test_the_loop_from_the_config_file(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "serve.toml"
    path.write_text(f'listen = ["{HOST}:0"]\n{text}\n', "utf-8")
    assert config_from_argv(["--config", str(path)]).event_loop == expected
    assert config_from_argv(["--config", str(path), "--loop", "asyncio"]).event_loop == "asyncio"  # flags win


@pytest.mark.parametrize("value", ['"libuv"', "true"])
def test_a_bad_loop_in_the_config_file(tmp_path: Path, value: str) -> None:
    path = tmp_path / "serve.toml"
    path.write_text(f"loop = {value}\n", "utf-8")
    with pytest.raises(ConfigFileError, match="loop") as error:
        config_from_argv(["--config", str(path)])
    assert "'auto', 'asyncio', 'uvloop'" in str(error.value)


def test_trio_and_a_loop_in_the_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "serve.toml"
    path.write_text(f'listen = ["{HOST}:0"]\nbackend = "trio"\nloop = "uvloop"\n', "utf-8")
    assert main(["serve", "--config", str(path)]) == 2
    assert "--loop uvloop applies to the asyncio backend" in capsys.readouterr().err

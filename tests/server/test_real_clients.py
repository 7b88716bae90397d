"""Real clients against ``socks-sansio serve``: curl, python-socks (sync, asyncio, trio) and PySocks (TCP and UDP).

Every test runs against both backends (the ``backend`` fixture parametrizes the
shared ``proxy`` / ``auth_proxy`` servers). Successful tunnels are also checked
in the server's log: the one line per connection names the protocol, the
target exactly as the client sent it (a name for socks5h/socks4a/HTTP, an
address otherwise), the user, and ``outcome=ok``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
from collections.abc import Iterator

import pytest
import socks  # type: ignore[import-untyped]
import trio
from python_socks import ProxyError
from python_socks.async_.asyncio import Proxy as AsyncioProxy
from python_socks.async_.trio import Proxy as TrioProxy
from python_socks.sync import Proxy as SyncProxy

from tests.adapters.servers import ThreadedServer

from .conftest import (
    HOST,
    PASSWORD,
    TIMEOUT,
    UDP_TIMEOUT,
    USER,
    ProxyFactory,
    ProxyProcess,
    read_until_eof,
    run_curl,
)

# curl mode -> (curl flags before the proxy, destination host in the URL, protocol in the server log)
CURL_MODES = {
    "socks5": (("--socks5",), "127.0.0.1", "socks5"),
    "socks5h": (("--socks5-hostname",), "localhost", "socks5"),
    "socks4": (("--socks4",), "127.0.0.1", "socks4"),
    "socks4a": (("--socks4a",), "localhost", "socks4"),
    "http": (("-p", "-x"), "localhost", "http"),
}
PASSWORD_MODES = ("socks5", "socks5h", "http")  # the protocols that carry a password
SOCKS4_MODES = ("socks4", "socks4a")


def curl_through(
    server: ProxyProcess, mode: str, origin: tuple[str, int], credentials: str | None = None
) -> tuple[str, subprocess.CompletedProcess[str]]:
    """Run curl through *server* in *mode*; return the log needle for this tunnel and curl's result."""
    flags, host, protocol = CURL_MODES[mode]
    proxy_arg = f"http://{server.authority}" if mode == "http" else server.authority
    user_args = ["--proxy-user", credentials] if credentials is not None else []
    result = run_curl(*flags, proxy_arg, *user_args, f"http://{host}:{origin[1]}/{mode}")
    return f"proto={protocol} cmd=CONNECT target={host}:{origin[1]} ", result


def tunnel_line(server: ProxyProcess, needle: str) -> str:
    """The log line of the tunnel *needle* identifies (waits for it: it is written when the tunnel ends)."""
    server.wait_log(needle)
    (line,) = server.log_lines(needle)
    return line


def expect_page(result: subprocess.CompletedProcess[str], mode: str, server: ProxyProcess) -> None:
    assert result.returncode == 0, f"curl failed: {result.stderr}\n{server.describe()}"
    assert result.stdout == f"hello from the origin, path /{mode}\n"


# ------------------------------------------------------------------ curl


@pytest.mark.parametrize("with_credentials", [False, True], ids=["no-proxy-user", "proxy-user"])
@pytest.mark.parametrize("mode", CURL_MODES)
def test_curl_no_auth_server(proxy: ProxyProcess, origin: tuple[str, int], mode: str, with_credentials: bool) -> None:
    """A server without auth serves every protocol, whether or not the client offers credentials."""
    needle, result = curl_through(proxy, mode, origin, f"{USER}:{PASSWORD}" if with_credentials else None)
    expect_page(result, mode, proxy)
    line = tunnel_line(proxy, needle)
    assert line.endswith("outcome=ok"), line
    if mode in PASSWORD_MODES:
        assert " user=- " in line, "no authentication was negotiated, so no user: " + line


@pytest.mark.parametrize("mode", CURL_MODES)
def test_curl_auth_server_with_credentials(auth_proxy: ProxyProcess, origin: tuple[str, int], mode: str) -> None:
    """Correct credentials open the tunnel; the log names the user (for SOCKS4, the USERID)."""
    needle, result = curl_through(auth_proxy, mode, origin, f"{USER}:{PASSWORD}")
    expect_page(result, mode, auth_proxy)
    line = tunnel_line(auth_proxy, needle)
    assert line.endswith("outcome=ok"), line
    assert f" user={USER} " in line, line
    assert PASSWORD not in auth_proxy.log(), "the log must never show a password"


@pytest.mark.parametrize("mode", PASSWORD_MODES)
def test_curl_auth_server_without_credentials(auth_proxy: ProxyProcess, origin: tuple[str, int], mode: str) -> None:
    """No credentials: curl fails (SOCKS5: no acceptable method; HTTP: 407)."""
    _, result = curl_through(auth_proxy, mode, origin)
    assert result.returncode != 0, result.stdout
    assert "hello from the origin" not in result.stdout
    if mode == "http":
        assert "407" in result.stderr, result.stderr


@pytest.mark.parametrize("mode", SOCKS4_MODES)
def test_curl_socks4_allowed_without_auth(auth_proxy: ProxyProcess, origin: tuple[str, int], mode: str) -> None:
    """``--allow-socks4-without-auth``: SOCKS4 has no password and is served anyway."""
    needle, result = curl_through(auth_proxy, mode, origin)
    expect_page(result, mode, auth_proxy)
    assert tunnel_line(auth_proxy, needle).endswith("outcome=ok")


@pytest.mark.parametrize("mode", PASSWORD_MODES)
def test_curl_wrong_password(auth_proxy: ProxyProcess, origin: tuple[str, int], mode: str) -> None:
    """A wrong password is refused (non-zero curl exit) and the server logs the failure."""
    before = auth_proxy.log().count("outcome=authentication failed")
    _, result = curl_through(auth_proxy, mode, origin, f"{USER}:wrong-{PASSWORD}")
    assert result.returncode != 0, result.stdout
    assert "hello from the origin" not in result.stdout
    auth_proxy.wait_log("outcome=authentication failed", count=before + 1)
    assert f"wrong-{PASSWORD}" not in auth_proxy.log()


def test_curl_socks4_refused_when_auth_required(start_proxy: ProxyFactory, origin: tuple[str, int]) -> None:
    """With auth and without ``--allow-socks4-without-auth``, SOCKS4/4a are refused; SOCKS5 with a password works."""
    server = start_proxy("--auth", f"{USER}:{PASSWORD}")
    for mode in SOCKS4_MODES:
        _, result = curl_through(server, mode, origin, f"{USER}:{PASSWORD}")
        assert result.returncode != 0, (mode, result.stdout)
    server.wait_log("proto=socks4 ", count=2)
    assert all("outcome=ok" not in line for line in server.log_lines("proto=socks4 ")), server.log()
    needle, result = curl_through(server, "socks5h", origin, f"{USER}:{PASSWORD}")
    expect_page(result, "socks5h", server)
    assert tunnel_line(server, needle).endswith("outcome=ok")


# ------------------------------------------------------------------ python-socks

# (scheme, rdns): rdns sends the name to the proxy (socks5h, socks4a); HTTP always does.
PYTHON_SOCKS_CASES = [("socks5", False), ("socks5", True), ("socks4", False), ("socks4", True), ("http", None)]
PYTHON_SOCKS_IDS = ["socks5", "socks5h", "socks4", "socks4a", "http"]


def _server_and_url(request: pytest.FixtureRequest, scheme: str, auth: bool) -> tuple[ProxyProcess, str]:
    server: ProxyProcess = request.getfixturevalue("auth_proxy" if auth else "proxy")
    return server, server.url(scheme, USER if auth else None, PASSWORD if auth else None)


def _destination(rdns: bool | None) -> str:
    return "127.0.0.1" if rdns is False else "localhost"


PAYLOAD = os.urandom(100_000)


@pytest.mark.parametrize("auth", [False, True], ids=["no-auth", "auth"])
@pytest.mark.parametrize(("scheme", "rdns"), PYTHON_SOCKS_CASES, ids=PYTHON_SOCKS_IDS)
@pytest.mark.usefixtures("backend")  # parametrizes the servers fetched with getfixturevalue
def test_python_socks_sync(
    request: pytest.FixtureRequest, echo: ThreadedServer, scheme: str, rdns: bool | None, auth: bool
) -> None:
    server, url = _server_and_url(request, scheme, auth)
    sock = SyncProxy.from_url(url, rdns=rdns).connect(_destination(rdns), echo.port, timeout=TIMEOUT)
    with sock:
        sock.settimeout(TIMEOUT)
        sock.sendall(PAYLOAD)
        sock.shutdown(socket.SHUT_WR)
        assert read_until_eof(sock) == PAYLOAD
    line = tunnel_line(server, f"cmd=CONNECT target={_destination(rdns)}:{echo.port} ")
    assert line.endswith("outcome=ok"), line


@pytest.mark.parametrize("auth", [False, True], ids=["no-auth", "auth"])
@pytest.mark.parametrize(("scheme", "rdns"), PYTHON_SOCKS_CASES, ids=PYTHON_SOCKS_IDS)
@pytest.mark.usefixtures("backend")  # parametrizes the servers fetched with getfixturevalue
def test_python_socks_asyncio(
    request: pytest.FixtureRequest, echo: ThreadedServer, scheme: str, rdns: bool | None, auth: bool
) -> None:
    _, url = _server_and_url(request, scheme, auth)

    async def exchange() -> bytes:
        sock = await AsyncioProxy.from_url(url, rdns=rdns).connect(_destination(rdns), echo.port, timeout=TIMEOUT)
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            writer.write(PAYLOAD)
            await writer.drain()
            writer.write_eof()
            return await asyncio.wait_for(reader.read(), TIMEOUT)
        finally:
            writer.close()
            await writer.wait_closed()

    assert asyncio.run(exchange()) == PAYLOAD


@pytest.mark.parametrize("auth", [False, True], ids=["no-auth", "auth"])
@pytest.mark.parametrize(("scheme", "rdns"), PYTHON_SOCKS_CASES, ids=PYTHON_SOCKS_IDS)
@pytest.mark.usefixtures("backend")  # parametrizes the servers fetched with getfixturevalue
def test_python_socks_trio(
    request: pytest.FixtureRequest, echo: ThreadedServer, scheme: str, rdns: bool | None, auth: bool
) -> None:
    _, url = _server_and_url(request, scheme, auth)

    async def exchange() -> bytes:
        with trio.fail_after(TIMEOUT):
            sock = await TrioProxy.from_url(url, rdns=rdns).connect(_destination(rdns), echo.port, timeout=TIMEOUT)
            async with trio.SocketStream(sock) as stream:
                await stream.send_all(PAYLOAD)
                await stream.send_eof()
                data = bytearray()
                while chunk := await stream.receive_some(65536):
                    data += chunk
                return bytes(data)

    assert trio.run(exchange) == PAYLOAD


@pytest.mark.parametrize("scheme", ["socks5", "http"])
def test_python_socks_wrong_password(auth_proxy: ProxyProcess, echo: ThreadedServer, scheme: str) -> None:
    before = auth_proxy.log().count("outcome=authentication failed")
    proxy = SyncProxy.from_url(auth_proxy.url(scheme, USER, "nope"))
    with pytest.raises(ProxyError):
        proxy.connect(HOST, echo.port, timeout=TIMEOUT).close()
    auth_proxy.wait_log("outcome=authentication failed", count=before + 1)


# ------------------------------------------------------------------ PySocks

PYSOCKS_TYPES = {"socks5": socks.SOCKS5, "socks4": socks.SOCKS4, "http": socks.HTTP}
PYSOCKS_CASES = [("socks5", False), ("socks5", True), ("socks4", False), ("socks4", True), ("http", True)]


@contextlib.contextmanager
def default_timeout(seconds: float) -> Iterator[None]:
    """PySocks opens its UDP control connection with the default time-out: bound it."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


@pytest.mark.parametrize("auth", [False, True], ids=["no-auth", "auth"])
@pytest.mark.parametrize(("scheme", "rdns"), PYSOCKS_CASES, ids=PYTHON_SOCKS_IDS)
@pytest.mark.usefixtures("backend")  # parametrizes the servers fetched with getfixturevalue
def test_pysocks_tcp(request: pytest.FixtureRequest, echo: ThreadedServer, scheme: str, rdns: bool, auth: bool) -> None:
    server, _ = _server_and_url(request, scheme, auth)
    destination = "localhost" if rdns else "127.0.0.1"
    with socks.socksocket() as sock:
        sock.settimeout(TIMEOUT)
        sock.set_proxy(
            PYSOCKS_TYPES[scheme],
            HOST,
            server.port,
            rdns=rdns,
            username=USER if auth else None,
            password=PASSWORD if auth else None,
        )
        sock.connect((destination, echo.port))
        sock.sendall(PAYLOAD)
        sock.shutdown(socket.SHUT_WR)
        assert read_until_eof(sock) == PAYLOAD
    line = tunnel_line(server, f"cmd=CONNECT target={destination}:{echo.port} ")
    assert line.endswith("outcome=ok"), line


@pytest.mark.parametrize("rdns", [False, True], ids=["address", "name"])
@pytest.mark.parametrize("auth", [False, True], ids=["no-auth", "auth"])
def test_pysocks_udp(
    request: pytest.FixtureRequest, backend: str, udp_echo: tuple[str, int], auth: bool, rdns: bool
) -> None:
    """PySocks UDP: SOCKS5 UDP ASSOCIATE, then datagrams to a UDP echo server and back."""
    server, _ = _server_and_url(request, "socks5", auth)
    udp_timeout = UDP_TIMEOUT
    destination = ("localhost" if rdns else HOST, udp_echo[1])
    with default_timeout(TIMEOUT), socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(udp_timeout)
        sock.set_proxy(
            socks.SOCKS5,
            HOST,
            server.port,
            rdns=rdns,
            username=USER if auth else None,
            password=PASSWORD if auth else None,
        )
        sock.bind((HOST, 0))  # performs UDP ASSOCIATE; bound on loopback only
        for index in range(3):
            payload = f"datagram {index}".encode() * (index + 1)
            sock.sendto(payload, destination)
            data, source = sock.recvfrom(65535)
            assert data == payload
            assert source == udp_echo

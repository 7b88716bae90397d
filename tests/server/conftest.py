"""Fixtures and raw-protocol helpers for the end-to-end tests of ``socks-sansio serve``.

Strategy. The server under test is the real command, ``python -m socks_sansio
serve``, run as a subprocess on 127.0.0.1 port 0 with ``--backend asyncio`` or
``--backend trio``; the "backends" of these fixtures are ``asyncio`` (pinned to
asyncio's own loop, ``--loop asyncio``, whether uvloop is installed or not),
``uvloop`` (``--backend asyncio --loop uvloop``, see tests/server/test_uvloop.py)
and ``trio`` (:data:`BACKEND_FLAGS`). ``SOCKS_SANSIO_TEST_LOOP=uvloop`` in the
environment runs the ``asyncio`` ones on uvloop too, to try the whole suite
there. Its stderr (the "listening on HOST:PORT" line and the log)
goes to a file, which is polled (bounded) for the bound port and, by tests, for
the per-connection log lines. On teardown the process gets SIGTERM and must
exit with status 0 within :data:`STOP_TIMEOUT`, with no traceback in its log;
otherwise its process group is killed and the test errors with the log.

A missing backend is never skipped: the subprocess then exits before it
listens and the fixture fails with the server's own error message.

``proxy`` and ``auth_proxy`` are shared per backend for the whole session (most
tests only need "a server without auth" or "a server with alice:s3cret");
``start_proxy(*flags)`` gives a test its own server. Starting an interpreter is
the slow part, so when a backend's first test runs, :class:`ServerPool` starts
the shared servers and one of each flag set in :data:`PRESTARTED` all at once;
``start_proxy`` hands out a pre-started server whose flags match exactly (each to
one test only) and starts any other. :class:`InProcessProxy` runs the asyncio
:class:`ProxyServer` in a thread for tests that read its counters.

Targets live in this process: :func:`tests.adapters.servers.echo_server` (TCP),
:func:`udp_echo_server` and :func:`http_origin` (``http.server`` in a thread).

Raw clients are a few hand-written encoders and readers below, independent of
the library under test: RFC 1928 (SOCKS5), RFC 1929, SOCKS4/4a, HTTP CONNECT.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import importlib.util
import ipaddress
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest

from socks_sansio import ServerConfig
from socks_sansio.adapters.server.asyncio import ProxyServer, event_loop_factory
from tests.adapters.servers import ThreadedServer, echo_server, recv_exactly
from tests.peer_servers import require_binary

HOST = "127.0.0.1"
TIMEOUT = 10.0
"""Socket time-out for every client socket: a hung server fails a test, it never hangs the suite."""
UDP_TIMEOUT = 2.0
"""Wait for a relayed datagram (loopback relays take milliseconds; a lost one fails the test sooner)."""
START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
BACKENDS = ("asyncio", "trio")
BACKEND_FLAGS = {
    "asyncio": ("--backend", "asyncio", "--loop", os.environ.get("SOCKS_SANSIO_TEST_LOOP") or "asyncio"),
    "uvloop": ("--backend", "asyncio", "--loop", "uvloop"),
    "trio": ("--backend", "trio"),
}
"""The flags each fixture backend name stands for."""
USER = "alice"
PASSWORD = "s3cret"

LISTENING_LINE = re.compile(r"^socks-sansio \d\S* listening on (.+)$", re.MULTILINE)
"""The line the server prints once bound (the version starts with a digit)."""
_RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
_LOG_PROBLEMS = ("Traceback", "exception was never retrieved", "Exception in callback", "Unhandled exception")

T = TypeVar("T")


# ------------------------------------------------------------------ the server process


class ProxyProcess:
    """One ``socks-sansio serve`` subprocess; its combined stdout/stderr go to :attr:`log_path`."""

    _count = 0

    def __init__(self, backend: str, args: Sequence[str], workdir: Path, *, listen: bool = True) -> None:
        ProxyProcess._count += 1
        self.backend = backend
        self.args = tuple(args)
        self.signalled = False
        listen_args = ["--listen", f"{HOST}:0"] if listen else []
        self.argv = [sys.executable, "-m", "socks_sansio", "serve", *listen_args, *BACKEND_FLAGS[backend], *args]
        self.log_path = workdir / f"serve-{backend}-{ProxyProcess._count}.log"
        self.port = 0
        self.addresses: list[tuple[str, int]] = []
        self.returncode: int | None = None
        self.tolerated: list[str] = []
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                start_new_session=True,  # a Ctrl-C of pytest does not reach it; killpg reaches only it
            )

    def __repr__(self) -> str:
        return f"<serve --backend {self.backend} pid={self.proc.pid} port={self.port}>"

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    @property
    def authority(self) -> str:
        return f"{HOST}:{self.port}"

    def url(self, scheme: str, user: str | None = None, password: str | None = None) -> str:
        """A proxy URL such as ``socks5h://alice:s3cret@127.0.0.1:PORT``."""
        credentials = f"{user}:{password}@" if user is not None else ""
        return f"{scheme}://{credentials}{self.authority}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def describe(self) -> str:
        """Command line, status and log, for assertion messages."""
        status = self.proc.poll()
        return f"{' '.join(self.argv)}\n(exit status {status})\n--- server log ---\n{self.log()}--- end of log ---"

    def wait_ready(self, timeout: float = START_TIMEOUT) -> ProxyProcess:
        """Wait (bounded) for the "listening on" line and parse the bound addresses (once)."""
        if self.port:
            return self
        deadline = time.monotonic() + timeout
        while True:
            match = LISTENING_LINE.search(self.log())
            if match:
                for item in match.group(1).split(", "):
                    host, _, port = item.strip().rpartition(":")
                    self.addresses.append((host.strip("[]"), int(port)))
                self.port = self.addresses[0][1]
                return self
            if self.proc.poll() is not None:
                pytest.fail(f"the server exited before listening:\n{self.describe()}", pytrace=False)
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"no 'listening on' line after {timeout} s:\n{self.describe()}", pytrace=False)
            time.sleep(0.02)

    def wait_log(self, needle: str, *, count: int = 1, timeout: float = TIMEOUT) -> str:
        """Wait (bounded) until *needle* occurs *count* times in the log; return the log."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log()
            if text.count(needle) >= count:
                return text
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"{needle!r} did not appear {count} time(s) in the log:\n{self.describe()}")
            time.sleep(0.02)

    def log_lines(self, *needles: str) -> list[str]:
        """The log lines that contain every one of *needles*."""
        return [line for line in self.log().splitlines() if all(n in line for n in needles)]

    def send_signal(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.signalled = True

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int:
        """Wait (bounded) for the process to exit; kill it and fail if it does not."""
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the server did not exit within {timeout} s:\n{self.describe()}") from None
        return self.returncode

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Send *sig* (if still running) and wait (bounded) for the exit status."""
        self.send_signal(sig)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)

    def tolerate(self, text: str) -> None:
        """Do not count log records whose first line holds *text* as problems (a known, xfailed bug)."""
        self.tolerated.append(text)

    def problems(self) -> list[str]:
        """Log lines that reveal a server bug (tracebacks, unretrieved task exceptions).

        A record starts with a timestamp; the lines after it (a traceback) belong
        to it, and a tolerated record is skipped whole.
        """
        found = []
        skipping = False
        for line in self.log().splitlines():
            if _RECORD_START.match(line):
                skipping = any(text in line for text in self.tolerated)
            if not skipping and any(p in line for p in _LOG_PROBLEMS):
                found.append(line)
        return found

    def check_clean_exit(self) -> None:
        """SIGTERM (unless signalled already), then require exit status 0 and a log free of tracebacks."""
        if not self.signalled:
            self.send_signal()
        status = self.wait_exit()
        problems = self.problems()
        if status != 0 or problems:
            raise AssertionError(f"unclean exit (status {status}, problems {problems}):\n{self.describe()}")


def stop_all(processes: Sequence[ProxyProcess]) -> None:
    """SIGTERM every process at once, then require each to exit cleanly; fail with all the evidence."""
    for process in processes:
        if not process.signalled:
            process.send_signal()
    errors = []
    for process in processes:
        try:
            process.check_clean_exit()
        except AssertionError as exc:
            errors.append(str(exc))
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


# Dedicated servers that tests ask for with exactly these flags: started together when a backend's
# first test runs (starting an interpreter is the slow part), each handed to one test only.
PRESTARTED: tuple[tuple[str, ...], ...] = (
    ("--auth", f"{USER}:{PASSWORD}"),
    ("--deny", "to=127.0.0.0/8"),
    ("--block-private",),
    ("--negotiation-timeout", "1"),
    ("--max-clients", "2"),
    ("--shutdown-grace", "30"),
    ("--shutdown-grace", "1"),
    ("--bind-timeout", "60", "--shutdown-grace", "1"),
    ("--idle-timeout", "1"),
    ("--stats-interval", "0.2"),
    ("--listen", "[::1]:0"),
    (),
    (),
)
SHARED = {
    "proxy": ("--shutdown-grace", "3"),
    "auth_proxy": ("--shutdown-grace", "3", "--auth", f"{USER}:{PASSWORD}", "--allow-socks4-without-auth"),
}


class ServerPool:
    """One backend's servers: the shared ones and the pre-started dedicated ones."""

    def __init__(self, backend: str, workdir: Path) -> None:
        self.backend = backend
        self.shared = {name: ProxyProcess(backend, args, workdir) for name, args in SHARED.items()}
        self.spare = [ProxyProcess(backend, args, workdir) for args in PRESTARTED]

    def take(self, args: Sequence[str]) -> ProxyProcess | None:
        """A pre-started server with exactly *args*, now the caller's to stop; None if there is none left."""
        for process in self.spare:
            if process.args == tuple(args):
                self.spare.remove(process)
                return process
        return None

    def close(self) -> None:
        processes = [*self.shared.values(), *self.spare]
        try:
            for process in processes:  # one still starting (a loaded machine) would die of SIGTERM unhandled
                process.wait_ready()
        finally:
            stop_all(processes)


class ProxyFactory:
    """Starts (or takes from the pool) servers and, on :meth:`close`, stops every one, requiring a clean exit."""

    def __init__(self, workdir: Path, backend: str = "asyncio", pool: ServerPool | None = None) -> None:
        self.workdir = workdir
        self.backend = backend
        self.pool = pool
        self.started: list[ProxyProcess] = []

    def __call__(
        self, *args: str, backend: str | None = None, listen: bool = True, wait: bool = True
    ) -> ProxyProcess:
        backend = backend or self.backend
        process = None
        if listen and self.pool is not None and self.pool.backend == backend:
            process = self.pool.take(args)
        if process is None:
            process = ProxyProcess(backend, args, self.workdir, listen=listen)
        self.started.append(process)
        return process.wait_ready() if wait else process

    def close(self) -> None:
        stop_all(self.started)


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The I/O backend of the server under test."""
    return str(request.param)


@pytest.fixture(scope="session")
def server_pool(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPool]:
    pool = ServerPool(backend, tmp_path_factory.mktemp(f"servers-{backend}"))
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def start_proxy(backend: str, server_pool: ServerPool, tmp_path: Path) -> Iterator[ProxyFactory]:
    """``start_proxy(*flags)``: a dedicated server on the parametrized backend, stopped cleanly afterwards."""
    factory = ProxyFactory(tmp_path, backend, server_pool)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def any_proxies(tmp_path: Path) -> Iterator[ProxyFactory]:
    """Like ``start_proxy`` but not parametrized: pass ``backend=`` to each call."""
    factory = ProxyFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="session")
def proxy(server_pool: ServerPool) -> ProxyProcess:
    """A shared server without authentication (all protocols)."""
    return server_pool.shared["proxy"].wait_ready()


@pytest.fixture(scope="session")
def auth_proxy(server_pool: ServerPool) -> ProxyProcess:
    """A shared server requiring ``alice:s3cret`` (SOCKS4 still accepted, it has no password)."""
    return server_pool.shared["auth_proxy"].wait_ready()




# ------------------------------------------------------------------ in-process asyncio server


class InProcessProxy:
    """The asyncio :class:`ProxyServer` on its own event loop in a thread (to read its counters).

    The loop is the one ``config.event_loop`` names (``"asyncio"`` or
    ``"uvloop"``), as ``socks-sansio serve`` would run it; ``"auto"`` here is
    asyncio's own (``SOCKS_SANSIO_TEST_LOOP`` in the environment may say otherwise).
    """

    def __init__(self, config: ServerConfig) -> None:
        choice = config.event_loop
        if choice == "auto":
            choice = os.environ.get("SOCKS_SANSIO_TEST_LOOP") or "asyncio"
        self.loop = (event_loop_factory(choice) or asyncio.new_event_loop)()
        self.thread = threading.Thread(target=self.loop.run_forever, name="in-process-proxy", daemon=True)
        self.thread.start()
        self.server = ProxyServer(config)
        self.call(self.server.start())

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.addresses[0]
        return str(host), int(port)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = TIMEOUT) -> T:
        """Run *coro* on the server's loop and return its result (bounded)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters, taken on the server's loop."""

        async def snapshot() -> dict[str, Any]:
            return dict(self.server.stats.snapshot())

        return self.call(snapshot())

    def wait_stats(self, check: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT) -> dict[str, Any]:
        """Poll (bounded) until *check(stats)* holds."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if check(stats):
                return stats
            if time.monotonic() > deadline:
                raise AssertionError(f"counters never matched: {stats}")
            time.sleep(0.02)

    def close(self) -> None:
        try:
            self.call(self.server.aclose(grace=2.0), timeout=STOP_TIMEOUT)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(TIMEOUT)
            self.loop.close()


_NO_UVLOOP = importlib.util.find_spec("uvloop") is None and not os.environ.get("CI")
LOOPS = (
    "asyncio",
    pytest.param("uvloop", marks=pytest.mark.skipif(_NO_UVLOOP, reason="uvloop is not installed (the 'uvloop' extra)")),
)
"""The event loops the in-process asyncio server runs on (under ``CI`` a missing uvloop fails, it is not skipped)."""
ALL_BACKENDS = (*BACKENDS, LOOPS[1])
"""``backend`` values for a test that should also run the subprocess server on uvloop (parametrize with it)."""


@contextlib.contextmanager
def in_process_servers(loop: str) -> Iterator[Callable[..., InProcessProxy]]:
    """``start(**ServerConfig fields)`` for asyncio servers in threads on *loop* (``event_loop=`` overrides it),
    every one closed when the block ends."""
    running: list[InProcessProxy] = []

    def start(**fields: Any) -> InProcessProxy:
        fields.setdefault("listen", ((HOST, 0),))
        fields.setdefault("event_loop", loop)
        server = InProcessProxy(ServerConfig(**fields))
        running.append(server)
        return server

    try:
        yield start
    finally:
        for server in running:
            server.close()


@pytest.fixture(params=LOOPS)
def in_process_proxy(request: pytest.FixtureRequest) -> Iterator[Callable[..., InProcessProxy]]:
    """``in_process_proxy(**ServerConfig fields)``: an asyncio server in a thread, closed afterwards.

    Parametrized over the event loops (:data:`LOOPS`): each test runs on asyncio's own loop and on uvloop's
    (in process, so the second run costs no interpreter start). ``event_loop=`` picks one loop instead.
    """
    with in_process_servers(str(request.param)) as start:
        yield start


# ------------------------------------------------------------------ targets


@pytest.fixture
def echo() -> Iterator[ThreadedServer]:
    """A TCP echo server on 127.0.0.1 (half-close aware)."""
    with echo_server() as server:
        server.listener.settimeout(0.02)  # its accept loop notices close() sooner: tests end faster
        yield server


@contextlib.contextmanager
def counting_udp_echo() -> Iterator[tuple[tuple[str, int], collections.Counter[tuple[str, int]]]]:
    """A UDP echo server on 127.0.0.1, in a thread; yields its address and how many datagrams came from where."""
    received: collections.Counter[tuple[str, int]] = collections.Counter()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.settimeout(0.05)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            received[peer[:2]] += 1
            sock.sendto(data, peer)

    thread = threading.Thread(target=loop, name="udp-echo", daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[:2], received
    finally:
        stop.set()
        thread.join(TIMEOUT)
        sock.close()


@contextlib.contextmanager
def udp_echo_server() -> Iterator[tuple[str, int]]:
    """A UDP echo server on 127.0.0.1, in a thread; yields its address."""
    with counting_udp_echo() as (address, _):
        yield address


@pytest.fixture
def udp_echo() -> Iterator[tuple[str, int]]:
    with udp_echo_server() as address:
        yield address


class _OriginHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from the origin, path {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def http_origin() -> Iterator[tuple[str, int]]:
    """An HTTP/1.0 origin on 127.0.0.1 (``http.server`` in a thread) answering every GET with 200."""
    server = ThreadingHTTPServer((HOST, 0), _OriginHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield (HOST, server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


@pytest.fixture
def origin() -> Iterator[tuple[str, int]]:
    with http_origin() as address:
        yield address


def closed_port() -> int:
    """A loopback TCP port nobody listens on: bound, never listened, kept bound while in use."""
    return _CLOSED.getsockname()[1]  # type: ignore[no-any-return]


# A socket bound but never listening: connecting to its port is refused, and no
# other test can take the port while this process lives.
# Closed at exit: this module is also imported as a plain module by suites that run without tests/server
# (so without its fixtures).
_CLOSED = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
_CLOSED.bind((HOST, 0))
atexit.register(_CLOSED.close)


# ------------------------------------------------------------------ curl


def run_curl(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run curl (no ~/.curlrc, no proxy variables from the environment); never raises on its exit status."""
    curl = require_binary("curl")
    env = {key: value for key, value in os.environ.items() if not key.lower().endswith("_proxy")}
    return subprocess.run(
        [curl, "-q", "--silent", "--show-error", "--max-time", "10", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


# ------------------------------------------------------------------ raw clients


def connect(address: tuple[str, int]) -> socket.socket:
    """A TCP connection with the standard time-out."""
    return socket.create_connection(address, timeout=TIMEOUT)


def read_until_eof(sock: socket.socket, limit: int = 1 << 24) -> bytes:
    """Everything until the peer closes (a reset counts as the end); bounded by the socket time-out."""
    data = bytearray()
    while len(data) < limit:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the peer closes (EOF or reset) without sending anything (bounded by the socket time-out)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def socks5_address(host: str, port: int) -> bytes:
    """ATYP + address + port (RFC 1928 §4/§5)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        name = host.encode("idna")
        return b"\x03" + bytes([len(name)]) + name + port.to_bytes(2, "big")
    return (b"\x01" if ip.version == 4 else b"\x04") + ip.packed + port.to_bytes(2, "big")


def parse_socks5_address(data: bytes) -> tuple[tuple[str, int], int]:
    """``((host, port), consumed)`` from ATYP onwards."""
    atyp = data[0]
    if atyp == 1:
        return (str(ipaddress.IPv4Address(data[1:5])), int.from_bytes(data[5:7], "big")), 7
    if atyp == 4:
        return (str(ipaddress.IPv6Address(data[1:17])), int.from_bytes(data[17:19], "big")), 19
    length = data[1]
    end = 2 + length
    return (data[2:end].decode("ascii"), int.from_bytes(data[end : end + 2], "big")), end + 2


def socks5_greeting(*, auth: bool = False) -> bytes:
    return b"\x05\x01" + (b"\x02" if auth else b"\x00")


def rfc1929_request(user: str, password: str) -> bytes:
    name, secret = user.encode(), password.encode()
    return b"\x01" + bytes([len(name)]) + name + bytes([len(secret)]) + secret


def socks5_request(command: int, host: str, port: int) -> bytes:
    """VER CMD RSV + address (1 CONNECT, 2 BIND, 3 UDP ASSOCIATE)."""
    return b"\x05" + bytes([command, 0]) + socks5_address(host, port)


def read_socks5_reply(sock: socket.socket) -> tuple[int, tuple[str, int]]:
    """``(REP, (BND.ADDR, BND.PORT))``."""
    head = recv_exactly(sock, 5)
    assert head[0] == 5, f"not a SOCKS5 reply: {head!r}"
    atyp, first = head[3], head[4]
    rest = {1: 4 - 1 + 2, 4: 16 - 1 + 2}.get(atyp, first + 2)
    address, _ = parse_socks5_address(head[3:] + recv_exactly(sock, rest))
    return head[1], address


def socks5_open(
    sock: socket.socket,
    command: int,
    host: str,
    port: int,
    *,
    user: str | None = None,
    password: str | None = None,
) -> tuple[int, tuple[str, int]]:
    """Greet (with RFC 1929 if *user*), send a request, return the first reply."""
    sock.sendall(socks5_greeting(auth=user is not None))
    selected = recv_exactly(sock, 2)
    assert selected == (b"\x05\x02" if user is not None else b"\x05\x00"), f"method selection {selected!r}"
    if user is not None:
        sock.sendall(rfc1929_request(user, password or ""))
        status = recv_exactly(sock, 2)
        assert status == b"\x01\x00", f"RFC 1929 status {status!r}"
    sock.sendall(socks5_request(command, host, port))
    return read_socks5_reply(sock)


def socks4_request(command: int, host: str, port: int, user_id: bytes = b"") -> bytes:
    """SOCKS4 (IPv4 literal) or SOCKS4a (a name: DSTIP 0.0.0.1 and the name after USERID)."""
    try:
        ip = ipaddress.IPv4Address(host).packed
        name = b""
    except ValueError:
        ip = b"\x00\x00\x00\x01"
        name = host.encode("ascii") + b"\x00"
    return b"\x04" + bytes([command]) + port.to_bytes(2, "big") + ip + user_id + b"\x00" + name


def read_socks4_reply(sock: socket.socket) -> tuple[int, tuple[str, int]]:
    """``(CD, (DSTIP, DSTPORT))`` of an 8-octet SOCKS4 reply."""
    reply = recv_exactly(sock, 8)
    assert reply[0] == 0, f"SOCKS4 reply VN must be 0: {reply!r}"
    return reply[1], (str(ipaddress.IPv4Address(reply[4:8])), int.from_bytes(reply[2:4], "big"))


def http_connect_request(authority: str, *, basic: str | None = None) -> bytes:
    """A CONNECT request head, optionally with ``Proxy-Authorization: Basic`` (*basic* is the base64 token)."""
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if basic is not None:
        lines.append(f"Proxy-Authorization: Basic {basic}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_http_head(sock: socket.socket, limit: int = 65536) -> bytes:
    """The response head up to and including the blank line (octet by octet: nothing after it is consumed)."""
    head = bytearray()
    while not head.endswith(b"\r\n\r\n"):
        if len(head) > limit:
            raise AssertionError(f"no end of head in {bytes(head)!r}")
        chunk = sock.recv(1)
        if not chunk:
            raise EOFError(f"closed after {bytes(head)!r}")
        head += chunk
    return bytes(head)


def http_status(head: bytes) -> int:
    return int(head.split(b" ", 2)[1])


def udp_header(host: str, port: int) -> bytes:
    """RSV RSV FRAG=0 + address (RFC 1928 §7)."""
    return b"\x00\x00\x00" + socks5_address(host, port)


def parse_udp(datagram: bytes) -> tuple[tuple[str, int], bytes]:
    """``((source host, port), payload)`` of a relayed datagram."""
    assert datagram[:3] == b"\x00\x00\x00", f"bad UDP header {datagram[:3]!r}"
    address, consumed = parse_socks5_address(datagram[3:])
    return address, datagram[3 + consumed :]


def poll(check: Callable[[], T | None], what: str, timeout: float = TIMEOUT, interval: float = 0.05) -> T:
    """Call *check* until it returns something other than None (bounded); return that."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)

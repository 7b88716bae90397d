"""A tested deployment: real HAProxy (``send-proxy-v2``) in front of ``socks-sansio serve`` instances, real Redis.

Everything listens on 127.0.0.1; clients connect to HAProxy from other
loopback addresses (127.0.0.2, 127.0.0.3) so that the client an instance logs
and limits can be told from the balancer (127.0.0.1). HAProxy checks each
instance's ``/healthz`` on its health port (``option httpchk``) every 100 ms,
so a draining instance is taken out within a fraction of a second. Every
process runs in its own process group and is stopped at the end; the binaries
come from Debian (``.ci/install-peers.sh``) and are required under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.peer_servers import free_port, require_binary, wait_for_port
from tests.server.conftest import HOST, TIMEOUT, ProxyProcess, socks5_open, stop_all

START = 20.0
#: Where the fleet's own readiness probe of HAProxy's port comes from: HAProxy passes it on to an instance, whose
#: log line for it (its outcome depends on timing) the tests tell from their clients' by this address.
PROBE_SOURCE = "127.0.0.9"


class Redis:
    """A redis-server on 127.0.0.1 (no persistence), which a test may stop and start again on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.binary = require_binary("redis-server")
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        log = (self.workdir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
             "--protected-mode", "yes", "--dir", str(self.workdir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()
        assert wait_for_port(HOST, self.port, START, alive=lambda: self.proc is not None and self.proc.poll() is None)

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait(TIMEOUT)
            self.proc = None


class HAProxy:
    """HAProxy in the foreground, TCP mode, round robin with ``send-proxy-v2`` over the given instances."""

    def __init__(self, workdir: Path, instances: Sequence[tuple[int, int]]) -> None:
        binary = require_binary("haproxy")
        self.port = free_port()
        servers = "\n".join(
            f"    server s{i} {HOST}:{port} send-proxy-v2 check port {health} inter 100ms fall 1 rise 1"
            for i, (port, health) in enumerate(instances)
        )
        config = workdir / "haproxy.cfg"
        config.write_text(
            "global\n    maxconn 256\n"
            "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n"
            "    timeout check 1s\n"
            f"frontend socks\n    bind {HOST}:{self.port}\n    default_backend instances\n"
            "backend instances\n    balance roundrobin\n    option httpchk GET /healthz\n"
            f"    http-check expect status 200\n{servers}\n"
        )
        self.log_path = workdir / "haproxy.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [binary, "-db", "-f", str(config)], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        assert wait_for_port(HOST, self.port, START, alive=lambda: self.proc.poll() is None, source=PROBE_SOURCE), (
            self.log_path.read_text()
        )

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(TIMEOUT)


class Fleet:
    """Instances of ``socks-sansio serve`` behind one HAProxy."""

    def __init__(self, workdir: Path, count: int, flags: Sequence[str], backend: str = "asyncio") -> None:
        self.health_ports = [free_port() for _ in range(count)]
        self.instances = [
            ProxyProcess(backend, ["--proxy-protocol-from", f"{HOST}/32", "--health-listen", f"{HOST}:{health}",
                                   "--shutdown-grace", "1", *flags], workdir)
            for health in self.health_ports
        ]
        for instance in self.instances:
            instance.wait_ready()
        self.haproxy = HAProxy(workdir, [(p.port, h) for p, h in zip(self.instances, self.health_ports, strict=True)])
        self.wait_until(lambda: all(healthz(port) == 200 for port in self.health_ports), "every instance healthy")
        time.sleep(0.3)  # HAProxy's first checks (every 100 ms) have marked them up

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.haproxy.port)

    def wait_until(self, check: object, what: str, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not check():  # type: ignore[operator]
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}")
            time.sleep(0.05)

    def close(self) -> None:
        self.haproxy.stop()
        stop_all([instance for instance in self.instances if instance.returncode is None])


def healthz(port: int) -> int:
    """The status of ``GET /healthz`` on 127.0.0.1:*port* (0: nothing answered)."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def client_socket(source: str) -> socket.socket:
    """A TCP socket bound to the loopback address *source* (127.0.0.2...), so the client is not the balancer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    sock.bind((source, 0))
    return sock


def tunnel(fleet: Fleet, source: str, target: tuple[str, int], **auth: str) -> tuple[int, socket.socket]:
    """A SOCKS5 CONNECT through the balancer from *source*: ``(REP, the socket)`` (close it)."""
    sock = client_socket(source)
    try:
        sock.connect(fleet.address)
        rep, _ = socks5_open(sock, 1, target[0], target[1], **auth)
    except BaseException:
        sock.close()
        raise
    return rep, sock


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Redis]:
    server = Redis(tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fleet_of(tmp_path: Path) -> Iterator[object]:
    """``fleet_of(count, *flags)``: instances behind HAProxy, all stopped afterwards."""
    fleets: list[Fleet] = []

    def start(count: int, *flags: str, backend: str = "asyncio") -> Fleet:
        fleet = Fleet(tmp_path, count, flags, backend)
        fleets.append(fleet)
        return fleet

    try:
        yield start
    finally:
        for fleet in fleets:
            fleet.close()

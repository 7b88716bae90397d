"""Processes and raw sockets for bench/server.py: proxies, a loopback target, a fast client.

Strategy: everything that is measured runs in its own process, so the bench
process (and its GIL) never shares time with the server being measured.

* :func:`proxy_process` starts one proxy as a subprocess in its own session
  (ours via ``python -m socks_sansio serve``, pproxy, microsocks), waits
  (bounded) until it accepts, yields a :class:`Proxy` with its pid and address,
  and on exit kills its process group.
* :func:`target_process` starts the loopback target (``python -m
  bench._server_util target``): a single-threaded ``selectors`` loop that
  accepts every connection and keeps it until EOF. A client that sends
  something starts with an 8-octet length N; the target reads N more octets
  into one preallocated buffer and then answers one byte (not every proxy
  passes a half-close through, so EOF cannot be the signal). It serves as the
  idle target (a tunnel that sends nothing stays open) and as the sink of the
  relay benchmark.
* ``python -m bench._server_util send ...`` is the relay client: a SOCKS5
  CONNECT (or a direct connection), then ``sendall`` of one 1 MiB buffer until
  N bytes went out, and a wait for the target's answer; it
  prints the elapsed seconds.
* :func:`socks5_connect` / :func:`async_socks5_connect` are hand-written SOCKS5
  CONNECT clients on raw sockets (precomputed bytes, nothing parsed beyond the
  reply length), so the client costs as little as possible.
* :func:`delay_process` starts ``python -m bench._server_util delay UPSTREAM
  SECONDS`` (:func:`run_delay`): a loopback TCP forwarder that writes every
  chunk, in each direction, SECONDS after it read it (an emulated network
  round trip of twice that, for the pool benchmark in bench/clients.py).

Processes started here are always stopped (SIGTERM, then SIGKILL to the group).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

HOST = "127.0.0.1"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
CHUNK = 1 << 20

# What each proxy is started with; "{port}" is a free port chosen by us, and
# None means the proxy picks its port and prints "listening on HOST:PORT".
OURS_ARGV = (sys.executable, "-m", "socks_sansio", "serve", "--listen", f"{HOST}:0", "--max-clients", "10000",
             "--log-level", "warning", "--idle-timeout", "600", "--shutdown-grace", "0.5", "--backend")

# Our server as each benchmark name runs it: the backend and, for asyncio, the event loop.
OURS_LOOPS: dict[str, tuple[str, ...]] = {
    "ours-asyncio": ("asyncio", "--loop", "asyncio"),
    "ours-uvloop": ("asyncio", "--loop", "uvloop"),
    "ours-trio": ("trio",),
}

# Extra proxies by name: (argv, announces_port). A runner script may add prototypes here.
CUSTOM: dict[str, tuple[list[str], bool]] = {}


def proxy_argv(name: str) -> tuple[list[str], bool]:
    """(argv, announces_port) for proxy *name*; argv may contain ``{port}``."""
    if name in CUSTOM:
        return CUSTOM[name]
    if name in OURS_LOOPS:
        return [*OURS_ARGV, *OURS_LOOPS[name]], True
    if name in ("pproxy-uvloop", "pproxy-asyncio"):
        # pproxy calls uvloop.install() whenever it can import uvloop, then asyncio.get_event_loop(), which
        # uvloop 0.21+ refuses without a current loop: so pproxy-uvloop gets its loop set first (and the
        # install it asks for is already done); for pproxy-asyncio, None in sys.modules makes the import fail.
        if name == "pproxy-asyncio":
            block = "import sys; sys.modules['uvloop'] = None; "
        else:
            block = ("import asyncio, uvloop; asyncio.set_event_loop_policy(uvloop.EventLoopPolicy()); "
                     "asyncio.set_event_loop(uvloop.new_event_loop()); uvloop.install = lambda: None; ")
        run = f"{block}import sys, pproxy.server; sys.argv = ['pproxy', '-l', 'socks5://{HOST}:{{port}}']; " \
            "pproxy.server.main()"
        return [sys.executable, "-c", run], False
    if name == "microsocks":
        binary = shutil.which("microsocks") or "microsocks"
        return [binary, "-i", HOST, "-p", "{port}", "-b", HOST], False
    raise ValueError(f"unknown proxy {name!r}")


def proxy_available(name: str) -> str | None:
    """None if proxy *name* can be started here, else why not."""
    if name in CUSTOM:
        return None
    if name == "microsocks" and shutil.which("microsocks") is None:
        return "microsocks is not installed (Debian package 'microsocks')"
    if name.startswith("pproxy-"):
        import importlib.util

        if importlib.util.find_spec("pproxy") is None:
            return "pproxy is not installed"
    if name.endswith("-uvloop"):
        import importlib.util

        if importlib.util.find_spec("uvloop") is None:
            return "uvloop is not installed"
    if name == "ours-trio":
        import importlib.util

        if importlib.util.find_spec("trio") is None:
            return "trio is not installed"
    return None


@dataclass(frozen=True)
class Proxy:
    """A running proxy (or a plain target, for ``direct``)."""

    name: str
    pid: int
    host: str
    port: int

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _raise_nofile() -> None:
    """Allow as many descriptors as the hard limit permits (idle tunnels need many)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def raise_own_nofile() -> None:
    """The same for the bench process (it holds one socket per idle tunnel)."""
    _raise_nofile()


def _accepts(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=0.5):
            return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_TIMEOUT)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_TIMEOUT)


@contextlib.contextmanager
def _spawn(argv: Sequence[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    _raise_nofile()  # inherited by the child: idle tunnels need many descriptors
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        _stop(proc)


_LISTENING = re.compile(rb"listening on \[?([0-9a-fA-F.:]+?)\]?:(\d+)")


@contextlib.contextmanager
def proxy_process(name: str, argv: Sequence[str] | None = None, announces: bool | None = None) -> Iterator[Proxy]:
    """Start proxy *name* (or *argv*, see :func:`proxy_argv`) on loopback; yield it once it accepts."""
    if argv is None:
        argv, announces = proxy_argv(name)
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as workdir:
        log = Path(workdir) / "output.log"
        port = 0 if announces else free_port()
        with _spawn([a.replace("{port}", str(port)) for a in argv], log) as proc:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}: {log.read_text(errors='replace')}")
                if announces:
                    found = _LISTENING.search(log.read_bytes())
                    if found:
                        port = int(found.group(2))
                        break
                elif _accepts((HOST, port)):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start in {START_TIMEOUT}s: {log.read_text(errors='replace')}")
                time.sleep(0.02)
            yield Proxy(name, proc.pid, HOST, port)


@contextlib.contextmanager
def target_process() -> Iterator[Proxy]:
    """Start the loopback target (see the module docstring); yield its address."""
    with tempfile.TemporaryDirectory(prefix="bench-target-") as workdir:
        log = Path(workdir) / "output.log"
        with _spawn([sys.executable, "-m", "bench._server_util", "target"], log) as proc:
            deadline = time.monotonic() + START_TIMEOUT
            while not (found := re.search(rb"port (\d+)\n", log.read_bytes())):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"target did not start: {log.read_text(errors='replace')}")
                time.sleep(0.01)
            yield Proxy("target", proc.pid, HOST, int(found.group(1)))


# --------------------------------------------------------------------- SOCKS5


def socks5_request(target: tuple[str, int]) -> bytes:
    """The CONNECT request octets for an IPv4 *target*."""
    return b"\x05\x01\x00\x01" + ipaddress.IPv4Address(target[0]).packed + struct.pack("!H", target[1])


def _reply_rest(head: bytes) -> int:
    """Octets still to read after the first 5 of a SOCKS5 reply (RFC 1928 §6)."""
    if head[0] != 5 or head[1] != 0:
        raise ConnectionError(f"SOCKS5 CONNECT refused: {head.hex()}")
    atyp = head[3]
    if atyp == 1:
        return 4 + 2 - 1
    if atyp == 4:
        return 16 + 2 - 1
    return head[4] + 2


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("proxy closed during the handshake")
        data += chunk
    return data


def socks5_connect(proxy: tuple[str, int], request: bytes, timeout: float = 10.0) -> socket.socket:
    """A blocking SOCKS5 CONNECT (no auth) through *proxy*; returns the tunnel socket."""
    sock = socket.create_connection(proxy, timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"\x05\x01\x00")
        if _recv_exactly(sock, 2) != b"\x05\x00":
            raise ConnectionError("proxy refused the no-auth method")
        sock.sendall(request)
        _recv_exactly(sock, _reply_rest(_recv_exactly(sock, 5)))
    except BaseException:
        sock.close()
        raise
    return sock


async def _arecv_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await loop.sock_recv(sock, n - len(data))
        if not chunk:
            raise ConnectionError("proxy closed during the handshake")
        data += chunk
    return data


async def async_socks5_connect(proxy: tuple[str, int], request: bytes) -> socket.socket:
    """:func:`socks5_connect` on the running asyncio loop (raw non-blocking socket)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, proxy)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await loop.sock_sendall(sock, b"\x05\x01\x00")
        if await _arecv_exactly(loop, sock, 2) != b"\x05\x00":
            raise ConnectionError("proxy refused the no-auth method")
        await loop.sock_sendall(sock, request)
        await _arecv_exactly(loop, sock, _reply_rest(await _arecv_exactly(loop, sock, 5)))
    except BaseException:
        sock.close()
        raise
    return sock


# --------------------------------------------------------------- relay client


def run_sender(proxy: tuple[str, int] | None, target: tuple[str, int], nbytes: int) -> float:
    """Send *nbytes* to the target (through *proxy* unless None); seconds until the target acknowledged."""
    request = socks5_request(target)
    sock = socks5_connect(proxy, request) if proxy else socket.create_connection(target, timeout=10)
    with sock:
        sock.settimeout(120)
        buffer = memoryview(bytearray(CHUNK))
        start = time.perf_counter()
        # The length goes first: some proxies (pproxy) do not pass a half-close through.
        sock.sendall(struct.pack("!Q", nbytes))
        left = nbytes
        while left >= CHUNK:
            sock.sendall(buffer)
            left -= CHUNK
        if left:
            sock.sendall(buffer[:left])
        if sock.recv(1) != b"k":
            raise ConnectionError("the target did not acknowledge")
        return time.perf_counter() - start


def sender_process(proxy: tuple[str, int] | None, target: tuple[str, int], nbytes: int) -> subprocess.Popen[str]:
    """Start the relay client in its own process; its stdout will be the elapsed seconds."""
    where = f"{proxy[0]}:{proxy[1]}" if proxy else "-"
    return subprocess.Popen(
        [sys.executable, "-m", "bench._server_util", "send", where, f"{target[0]}:{target[1]}", str(nbytes)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )


# --------------------------------------------------------------------- target


def run_target() -> None:
    """Accept everything; read a length and that many octets, then answer b"k"; close on EOF."""
    _raise_nofile()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, 0))
    listener.listen(4096)
    listener.setblocking(False)
    print(f"port {listener.getsockname()[1]}", flush=True)
    buffer = bytearray(CHUNK)
    headers: dict[socket.socket, bytes] = {}
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        for key, _ in selector.select():
            if key.data is None:
                for _ in range(64):
                    try:
                        conn, _ = listener.accept()
                    except BlockingIOError:
                        break
                    conn.setblocking(False)
                    selector.register(conn, selectors.EVENT_READ, True)
                continue
            conn = cast(socket.socket, key.fileobj)
            state = key.data
            try:
                if state is True:  # the 8-octet length has not fully arrived
                    header = conn.recv(8 - len(headers.get(conn, b"")))
                    n = len(header)
                    headers[conn] = headers.get(conn, b"") + header
                    if len(headers[conn]) == 8:
                        selector.modify(conn, selectors.EVENT_READ, [struct.unpack("!Q", headers.pop(conn))[0]])
                else:
                    n = conn.recv_into(buffer)
                    state[0] -= n
                    if n and state[0] == 0:
                        conn.send(b"k")
            except BlockingIOError:
                continue
            except OSError:
                n = 0
            if n == 0:
                selector.unregister(conn)
                headers.pop(conn, None)
                conn.close()


# ------------------------------------------------------------ delay forwarder


async def _delayed_pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, one_way: float) -> None:
    """Copy *src* to *dst*, each chunk (and the EOF) written *one_way* seconds after it was read, in order."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if not data:
                if dst.can_write_eof():
                    dst.write_eof()
                return
            dst.write(data)
            await dst.drain()

    delivering = asyncio.ensure_future(deliver())
    try:
        while not delivering.done() and (data := await src.read(65536)):
            queue.put_nowait((loop.time() + one_way, data))
        queue.put_nowait((loop.time() + one_way, b""))
        await delivering  # raises what broke the writing side
    finally:
        delivering.cancel()


async def _delayed_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: tuple[str, int], one_way: float
) -> None:
    """One client of the delay forwarder: connect to *upstream*, pipe both ways, close both when done or broken."""
    writers = [writer]
    try:
        up_reader, up_writer = await asyncio.open_connection(*upstream)
        writers.append(up_writer)
        for each in writers:
            each.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pipes = {
            asyncio.ensure_future(_delayed_pipe(reader, up_writer, one_way)),
            asyncio.ensure_future(_delayed_pipe(up_reader, writer, one_way)),
        }
        try:
            done, _ = await asyncio.wait(pipes, return_when=asyncio.FIRST_EXCEPTION)
            failures = [exc for task in done if (exc := task.exception()) is not None]
            if failures:
                raise failures[0]
        finally:
            for task in pipes:
                task.cancel()
    except OSError:
        pass  # a peer reset or refused: close both sides
    finally:
        for each in writers:
            each.close()


async def _delay_forever(upstream: tuple[str, int], one_way: float) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    server = await asyncio.start_server(
        lambda r, w: _delayed_connection(r, w, upstream, one_way), HOST, 0, backlog=512
    )
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await stop.wait()


def run_delay(upstream: tuple[str, int], one_way: float) -> None:
    """Forward every connection on loopback to *upstream*, delaying each chunk by *one_way* s in each direction.

    This emulates a network round trip of 2 x *one_way* between the clients and
    *upstream*: a chunk read from one side is written to the other *one_way*
    seconds later, in the order read, and an EOF (half-close) is passed on the
    same way. Only the data is delayed: the TCP handshake with the forwarder is
    local. Prints ``port N`` once it listens; stops on SIGTERM.
    """
    if one_way < 0:
        raise ValueError(f"the one-way delay must be >= 0 seconds, got {one_way}")
    asyncio.run(_delay_forever(upstream, one_way))


@contextlib.contextmanager
def delay_process(upstream: tuple[str, int], one_way: float) -> Iterator[Proxy]:
    """Start the delay forwarder (:func:`run_delay`) in front of *upstream*; yield its address."""
    argv = [sys.executable, "-m", "bench._server_util", "delay", f"{upstream[0]}:{upstream[1]}", repr(one_way)]
    with tempfile.TemporaryDirectory(prefix="bench-delay-") as workdir:
        log = Path(workdir) / "output.log"
        with _spawn(argv, log) as proc:
            deadline = time.monotonic() + START_TIMEOUT
            while not (found := re.search(rb"port (\d+)\n", log.read_bytes())):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the delay forwarder did not start: {log.read_text(errors='replace')}")
                time.sleep(0.01)
            yield Proxy("delay", proc.pid, HOST, int(found.group(1)))


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: Sequence[str]) -> None:
    if argv[:1] == ["target"]:
        run_target()
    elif argv[:1] == ["send"] and len(argv) == 4:
        proxy = None if argv[1] == "-" else _address(argv[1])
        print(f"{run_sender(proxy, _address(argv[2]), int(argv[3])):.6f}", flush=True)
    elif argv[:1] == ["delay"] and len(argv) == 3:
        run_delay(_address(argv[1]), float(argv[2]))
    else:
        raise SystemExit(
            "usage: python -m bench._server_util target | send PROXY|- TARGET NBYTES | delay UPSTREAM ONE_WAY_SECONDS"
        )


if __name__ == "__main__":
    main(sys.argv[1:])

"""Client adapter benchmarks: connects per second through one local SOCKS5 proxy.

One connect = open a tunnel to a local echo server through the proxy (TCP
connect to the proxy + SOCKS5 NO_AUTH handshake), one 4-octet echo round trip,
close. Connects are sequential, so the figure is the inverse of the latency
of the whole client path; the proxy and the echo server are the same for every
client, each in its own process, so the client process measures only itself.

Clients, grouped by I/O model (one result each, so ratios compare like with like):

* sync: ``socks_sansio.adapters.sync.connect`` vs python-socks
  (``python_socks.sync.Proxy.connect``) and PySocks (``socks.socksocket``);
* asyncio: ``socks_sansio.adapters.asyncio.open_connection`` vs python-socks
  (``python_socks.async_.asyncio.Proxy.connect`` + ``asyncio.open_connection(sock=...)``);
* trio: ``socks_sansio.adapters.trio.open_tcp_stream`` vs python-socks
  (``python_socks.async_.trio.Proxy.connect`` + ``trio.SocketStream``).

Proxies: our server (``python -m socks_sansio serve``, asyncio backend), once
without authentication (``clients_<kind>``) and once with RFC 1929
username/password (``clients_<kind>_auth``: one round trip more, and the
credentials every client sends), and, when installed and not ``--quick``,
microsocks without authentication (``clients_<kind>_via_microsocks``). A slower
proxy adds the same latency to every client and so pulls every ratio towards 1.

``pool``: the same sequential connects (connect + 4-octet echo + close),
through a ``ProxyPool`` of prepared connections ("pooled") and with the
module's cold connect ("cold"), on each backend, through our server with
RFC 1929 auth and without. Reported: connects/s, and the p50 and p99 latency
of the connect call alone; the ratio pooled/cold (oriented so > 1 means the
pool is better) is the result. ``pool_rtt_*``: the same through a forwarder in
front of the proxy that delays every chunk by half an emulated round trip in
each direction (``bench._server_util.delay_process``; 10 ms RTT, 4 ms with
``--quick``), where the round trips a prepared connection saves dominate.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from bench._server_util import delay_process
from bench.common import BenchSkipped, Result, median, register

HOST = "127.0.0.1"
MESSAGE = b"ping"
START_TIMEOUT = 15.0

# A tiny asyncio echo server; prints its port on stdout.
ECHO_SERVER = r"""
import asyncio, sys
async def handle(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=512)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""


# ----------------------------------------------------------------- processes


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    port: int


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def _read_line_matching(proc: subprocess.Popen[bytes], stream_name: str, pattern: str, timeout: float) -> re.Match[str]:
    """Read *stream_name* of *proc* (bounded) until a line matches *pattern*."""
    stream = getattr(proc, stream_name)
    deadline = time.monotonic() + timeout
    seen = []
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        buf = b""
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            chunk = os.read(stream.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                text = line.decode(errors="replace")
                seen.append(text)
                match = re.search(pattern, text)
                if match:
                    return match
    raise RuntimeError(f"process did not print {pattern!r} within {timeout} s; output: {seen[-10:]!r}")


@contextlib.contextmanager
def echo_server() -> Iterator[Proc]:
    proc = subprocess.Popen(
        [sys.executable, "-c", ECHO_SERVER], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        match = _read_line_matching(proc, "stdout", r"^(\d+)$", START_TIMEOUT)
        yield Proc("echo", proc, int(match[1]))
    finally:
        _stop(proc)


@contextlib.contextmanager
def our_proxy(*extra: str) -> Iterator[Proc]:
    argv = [sys.executable, "-m", "socks_sansio", "serve", "--listen", f"{HOST}:0", "--log-level", "warning", *extra]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        match = _read_line_matching(proc, "stderr", r"listening on [^ ]*?:(\d+)", START_TIMEOUT)
        # Keep draining stderr is unnecessary at log level warning; close our end only at exit.
        yield Proc("socks_sansio serve", proc, int(match[1]))
    finally:
        _stop(proc)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


@contextlib.contextmanager
def microsocks_proxy() -> Iterator[Proc]:
    binary = next((p for p in ("/usr/bin/microsocks", "/usr/local/bin/microsocks") if os.access(p, os.X_OK)), None)
    if binary is None:
        raise BenchSkipped("microsocks is not installed")
    for _ in range(3):
        port = _free_port()
        proc = subprocess.Popen(
            [binary, "-i", HOST, "-p", str(port), "-b", HOST],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        if _wait_port(port, proc, START_TIMEOUT):
            try:
                yield Proc("microsocks", proc, port)
            finally:
                _stop(proc)
            return
        _stop(proc)
    raise BenchSkipped("microsocks did not start")


# ------------------------------------------------------------------- clients

SyncClient = Callable[[str, int, int], None]  # (proxy_url, echo_port, count)
AsyncClient = Callable[[str, int, int], Awaitable[None]]


def ours_sync(proxy: str, port: int, count: int) -> None:
    from socks_sansio.adapters.sync import connect

    def one() -> None:
        sock = connect(HOST, port, proxy=proxy, timeout=10)
        try:
            sock.sendall(MESSAGE)
            _recv_exactly(sock, len(MESSAGE))
        finally:
            sock.close()

    for _ in range(count):
        _retry("ours_sync", one)


def python_socks_sync(proxy: str, port: int, count: int) -> None:
    from python_socks.sync import Proxy

    def one() -> None:
        sock = Proxy.from_url(proxy).connect(HOST, port, timeout=10)
        try:
            sock.sendall(MESSAGE)
            _recv_exactly(sock, len(MESSAGE))
        finally:
            sock.close()

    for _ in range(count):
        _retry("python_socks_sync", one)


def pysocks_sync(proxy: str, port: int, count: int) -> None:
    import socks  # type: ignore[import-untyped]  # PySocks

    userinfo, _, hostport = proxy.rpartition("/")[2].rpartition("@")
    host, _, proxy_port = hostport.rpartition(":")
    username, _, password = userinfo.partition(":")

    def one() -> None:
        sock = socks.socksocket()
        try:
            sock.set_proxy(
                socks.SOCKS5, host, int(proxy_port), rdns=True, username=username or None, password=password or None
            )
            sock.settimeout(10)
            sock.connect((HOST, port))
            sock.sendall(MESSAGE)
            _recv_exactly(sock, len(MESSAGE))
        finally:
            sock.close()

    for _ in range(count):
        _retry("pysocks_sync", one)


MAX_RETRIES = 3
ERRORS: dict[str, int] = {}


def _retry(name: str, one: Callable[[], None]) -> None:
    """Run one connect; retry a transient failure (counted in ERRORS, reported in the notes)."""
    for attempt in range(MAX_RETRIES + 1):
        try:
            one()
            return
        except Exception:
            if attempt == MAX_RETRIES:
                raise
            ERRORS[name] = ERRORS.get(name, 0) + 1


async def _aretry(name: str, one: Callable[[], Awaitable[None]]) -> None:
    for attempt in range(MAX_RETRIES + 1):
        try:
            await one()
            return
        except Exception:
            if attempt == MAX_RETRIES:
                raise
            ERRORS[name] = ERRORS.get(name, 0) + 1


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("echo server closed early")
        data += chunk
    return data


async def ours_asyncio(proxy: str, port: int, count: int) -> None:
    from socks_sansio.adapters.asyncio import open_connection

    async def one() -> None:
        reader, writer = await open_connection(HOST, port, proxy=proxy, timeout=10)
        try:
            writer.write(MESSAGE)
            await reader.readexactly(len(MESSAGE))
        finally:
            writer.close()
            await writer.wait_closed()

    for _ in range(count):
        await _aretry("ours_asyncio", one)


async def python_socks_asyncio(proxy: str, port: int, count: int) -> None:
    from python_socks.async_.asyncio import Proxy

    async def one() -> None:
        sock = await Proxy.from_url(proxy).connect(HOST, port, timeout=10)
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            writer.write(MESSAGE)
            await reader.readexactly(len(MESSAGE))
        finally:
            writer.close()
            await writer.wait_closed()

    for _ in range(count):
        await _aretry("python_socks_asyncio", one)


async def ours_trio(proxy: str, port: int, count: int) -> None:
    from socks_sansio.adapters.trio import open_tcp_stream

    async def one() -> None:
        stream = await open_tcp_stream(HOST, port, proxy=proxy, timeout=10)
        try:
            await stream.send_all(MESSAGE)
            await _trio_receive_exactly(stream, len(MESSAGE))
        finally:
            await stream.aclose()

    for _ in range(count):
        await _aretry("ours_trio", one)


async def python_socks_trio(proxy: str, port: int, count: int) -> None:
    import trio
    from python_socks.async_.trio import Proxy

    async def one() -> None:
        sock = await Proxy.from_url(proxy).connect(HOST, port, timeout=10)
        stream = trio.SocketStream(sock)
        try:
            await stream.send_all(MESSAGE)
            await _trio_receive_exactly(stream, len(MESSAGE))
        finally:
            await stream.aclose()

    for _ in range(count):
        await _aretry("python_socks_trio", one)


async def _trio_receive_exactly(stream: object, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await stream.receive_some(n - len(data))  # type: ignore[attr-defined]
        if not chunk:
            raise ConnectionError("echo server closed early")
        data += chunk
    return data


def _run_async(fn: AsyncClient, kind: str, proxy: str, port: int, count: int) -> float:
    """Seconds taken by *count* connects, measured inside the event loop."""

    async def timed() -> float:
        start = time.perf_counter()
        await fn(proxy, port, count)
        return time.perf_counter() - start

    if kind == "asyncio":
        return asyncio.run(timed())
    import trio

    return trio.run(timed)


def _run_sync(fn: SyncClient, proxy: str, port: int, count: int) -> float:
    start = time.perf_counter()
    fn(proxy, port, count)
    return time.perf_counter() - start


GROUPS: dict[str, tuple[dict[str, SyncClient | AsyncClient], dict[str, SyncClient | AsyncClient]]] = {
    "sync": ({"sync.connect": ours_sync}, {"python_socks.sync": python_socks_sync, "PySocks": pysocks_sync}),
    "asyncio": ({"asyncio.open_connection": ours_asyncio}, {"python_socks.asyncio": python_socks_asyncio}),
    "trio": ({"trio.open_tcp_stream": ours_trio}, {"python_socks.trio": python_socks_trio}),
}


def _measure_group(
    kind: str, proxy_url: str, echo_port: int, count: int, repeat: int
) -> tuple[dict[str, float], dict[str, float]]:
    ours_fns, peer_fns = GROUPS[kind]
    everything = {**{("ours", k): v for k, v in ours_fns.items()}, **{("peer", k): v for k, v in peer_fns.items()}}
    times: dict[tuple[str, str], list[float]] = {key: [] for key in everything}

    def once(fn: SyncClient | AsyncClient, n: int) -> float:
        if kind == "sync":
            return _run_sync(fn, proxy_url, echo_port, n)  # type: ignore[arg-type]
        return _run_async(fn, kind, proxy_url, echo_port, n)  # type: ignore[arg-type]

    for fn in everything.values():  # warm-up: imports, first connections
        once(fn, 3)
    # Interleave the repeats so a burst of load on a shared machine hits everyone.
    for _ in range(repeat):
        for key, fn in everything.items():
            times[key].append(once(fn, count))
    ours = {k: count / median(times[("ours", k)]) for k in ours_fns}
    peers = {k: count / median(times[("peer", k)]) for k in peer_fns}
    return ours, peers


def _our_proxy_with_auth() -> contextlib.AbstractContextManager[Proc]:
    return our_proxy("--auth", f"{USER}:{PASSWORD}")


def client_results(quick: bool) -> list[Result]:
    count, repeat = (40, 3) if quick else (200, 5)
    # (how to start the proxy, userinfo for the URL, suffix of the result names)
    setups: list[tuple[Callable[[], contextlib.AbstractContextManager[Proc]], str, str]] = [
        (our_proxy, "", ""),
        (_our_proxy_with_auth, f"{USER}:{PASSWORD}@", "_auth"),
    ]
    if not quick:
        setups.append((microsocks_proxy, "", "_via_microsocks"))
    results = []
    with echo_server() as echo:
        for start_proxy, userinfo, suffix in setups:
            try:
                with start_proxy() as proxy:
                    # The target is an IP literal: no name resolution for any client.
                    url = f"socks5://{userinfo}{HOST}:{proxy.port}"
                    auth = "RFC 1929 auth" if userinfo else "no auth"
                    for kind in GROUPS:
                        ERRORS.clear()
                        ours, peers = _measure_group(kind, url, echo.port, count, repeat)
                        retried = f"; retried failed connects: {dict(ERRORS)}" if ERRORS else ""
                        results.append(
                            Result(
                                name=f"clients_{kind}{suffix}",
                                unit="connects/s",
                                ours=ours,
                                peers=peers,
                                targets={p: 1.2 for p in peers if p.startswith("python_socks")},
                                notes=f"sequential connect + 4-octet echo + close through {proxy.name} ({auth}), "
                                f"{count} connects x {repeat} repeats{retried}",
                            )
                        )
            except BenchSkipped as exc:
                print(f"   (proxy skipped: {exc})", flush=True)
    if not results:
        raise BenchSkipped("no proxy could be started")
    return results


# ------------------------------------------------------------------- pool

POOL_SIZE = 4
USER, PASSWORD = "bench", "bench-pass"
KINDS = ("sync", "asyncio", "trio")
# The pool_rtt_* results: the emulated round trip (seconds; full, quick) and the pool size there.
RTT_FULL, RTT_QUICK = 0.010, 0.004
RTT_POOL_SIZE = 16


@dataclass
class PoolRun:
    """One timed run of sequential connects, pooled (a pool's hits and misses) or cold (both 0)."""

    latencies: list[float]  # of each connect call alone
    elapsed: float  # all the connects, echo and close included
    hits: int = 0
    misses: int = 0


def _pool_sync(proxy: str, port: int, count: int, size: int | None) -> PoolRun:
    """*count* connects through a filled ProxyPool of *size*, or cold connects when *size* is None."""
    from socks_sansio.adapters.sync import ProxyPool, connect

    latencies = []
    with contextlib.ExitStack() as stack:
        pool = None if size is None else stack.enter_context(ProxyPool(proxy, size=size))
        if pool is not None:
            pool.fill()
        start = time.perf_counter()
        for _ in range(count):
            began = time.perf_counter()
            if pool is None:
                sock = connect(HOST, port, proxy=proxy, timeout=10)
            else:
                sock = pool.connect(HOST, port, timeout=10)
            latencies.append(time.perf_counter() - began)
            try:
                sock.sendall(MESSAGE)
                _recv_exactly(sock, len(MESSAGE))
            finally:
                sock.close()
        elapsed = time.perf_counter() - start
        if pool is None:
            return PoolRun(latencies, elapsed)
        return PoolRun(latencies, elapsed, pool.stats.hits, pool.stats.misses)


async def _pool_asyncio(proxy: str, port: int, count: int, size: int | None) -> PoolRun:
    from socks_sansio.adapters.asyncio import ProxyPool, open_connection

    latencies = []
    async with contextlib.AsyncExitStack() as stack:
        pool = None if size is None else await stack.enter_async_context(ProxyPool(proxy, size=size))
        if pool is not None:
            await pool.fill()
        start = time.perf_counter()
        for _ in range(count):
            began = time.perf_counter()
            if pool is None:
                reader, writer = await open_connection(HOST, port, proxy=proxy, timeout=10)
            else:
                reader, writer = await pool.open_connection(HOST, port, timeout=10)
            latencies.append(time.perf_counter() - began)
            try:
                writer.write(MESSAGE)
                await reader.readexactly(len(MESSAGE))
            finally:
                writer.close()
                await writer.wait_closed()
        elapsed = time.perf_counter() - start
        if pool is None:
            return PoolRun(latencies, elapsed)
        return PoolRun(latencies, elapsed, pool.stats.hits, pool.stats.misses)


async def _pool_trio(proxy: str, port: int, count: int, size: int | None) -> PoolRun:
    from socks_sansio.adapters.trio import ProxyPool, open_tcp_stream

    latencies = []
    async with contextlib.AsyncExitStack() as stack:
        pool = None if size is None else await stack.enter_async_context(ProxyPool(proxy, size=size))
        if pool is not None:
            await pool.fill()
        start = time.perf_counter()
        for _ in range(count):
            began = time.perf_counter()
            if pool is None:
                stream = await open_tcp_stream(HOST, port, proxy=proxy, timeout=10)
            else:
                stream = await pool.open_tcp_stream(HOST, port, timeout=10)
            latencies.append(time.perf_counter() - began)
            try:
                await stream.send_all(MESSAGE)
                await _trio_receive_exactly(stream, len(MESSAGE))
            finally:
                await stream.aclose()
        elapsed = time.perf_counter() - start
        if pool is None:
            return PoolRun(latencies, elapsed)
        return PoolRun(latencies, elapsed, pool.stats.hits, pool.stats.misses)


def _pool_once(kind: str, proxy: str, port: int, count: int, size: int | None) -> PoolRun:
    if kind == "sync":
        return _pool_sync(proxy, port, count, size)
    if kind == "asyncio":
        return asyncio.run(_pool_asyncio(proxy, port, count, size))
    import trio

    return trio.run(_pool_trio, proxy, port, count, size)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass
class PoolMeasurement:
    """Pooled and cold runs of one backend through one proxy, all repeats together."""

    latencies: dict[str, list[float]]  # "pooled"/"cold" -> every connect call's latency
    rates: dict[str, list[float]]  # "pooled"/"cold" -> connects/s of each repeat
    hits: int
    misses: int


def _measure_pool(
    kind: str, url: str, echo_port: int, count: int, repeat: int, size: int, warmup: int
) -> PoolMeasurement:
    sizes: dict[str, int | None] = {"pooled": size, "cold": None}
    got = PoolMeasurement({v: [] for v in sizes}, {v: [] for v in sizes}, 0, 0)
    for variant_size in sizes.values():  # warm-up: imports, first connections
        _pool_once(kind, url, echo_port, warmup, variant_size)
    for _ in range(repeat):  # interleaved, so a burst of load hits both
        for variant, variant_size in sizes.items():
            run = _pool_once(kind, url, echo_port, count, variant_size)
            got.latencies[variant] += run.latencies
            got.rates[variant].append(count / run.elapsed)
            got.hits += run.hits
            got.misses += run.misses
    return got


def _pool_result_set(name: str, got: PoolMeasurement, notes: str) -> list[Result]:
    """connects/s (*name*) and the p50/p99 connect latency (*name*_p50, *name*_p99), pooled vs cold."""
    results = [Result(name=name, unit="connects/s", ours={"pooled": median(got.rates["pooled"])},
                      peers={"cold": median(got.rates["cold"])}, notes=notes)]  # fmt: skip
    for tag, fraction in (("p50", 0.5), ("p99", 0.99)):
        results.append(Result(
            name=f"{name}_{tag}", unit=f"µs, {tag} of the connect call", higher_is_better=False,
            ours={"pooled": 1e6 * _percentile(got.latencies["pooled"], fraction)},
            peers={"cold": 1e6 * _percentile(got.latencies["cold"], fraction)}, notes=notes,
        ))  # fmt: skip
    return results


def _greeting_round_trip(address: tuple[str, int], samples: int = 5) -> float:
    """Median seconds from sending a SOCKS5 greeting to *address* to its 2-octet answer (TCP connect excluded)."""
    times = []
    for _ in range(samples):
        with socket.create_connection(address, timeout=10) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            began = time.perf_counter()
            sock.sendall(b"\x05\x02\x00\x02")  # NO_AUTH or USERNAME/PASSWORD: every setup answers
            _recv_exactly(sock, 2)
            times.append(time.perf_counter() - began)
    return median(times)


def pool_results(quick: bool) -> list[Result]:
    count, repeat = (40, 3) if quick else (300, 5)
    rtt = RTT_QUICK if quick else RTT_FULL
    rtt_count, rtt_repeat = (16, 2) if quick else (40, 3)
    loopback: list[Result] = []
    emulated: list[Result] = []
    with echo_server() as echo:
        setups = (("", (), ""), ("_auth", ("--auth", f"{USER}:{PASSWORD}"), f"{USER}:{PASSWORD}@"))
        for label, extra, userinfo in setups:
            auth = "RFC 1929 auth" if label else "no auth"
            with our_proxy(*extra) as proxy:
                url = f"socks5://{userinfo}{HOST}:{proxy.port}"
                for kind in KINDS:
                    got = _measure_pool(kind, url, echo.port, count, repeat, POOL_SIZE, warmup=3)
                    notes = (f"sequential connect + 4-octet echo + close through socks_sansio serve ({auth}), "
                             f"pool size {POOL_SIZE} filled before timing, {count} connects x {repeat} repeats, "
                             f"pool hits {got.hits}/{count * repeat}, misses {got.misses}")  # fmt: skip
                    loopback += _pool_result_set(f"pool_{kind}{label}", got, notes)
                # The same through an emulated network: a forwarder in front of the proxy delays every chunk.
                with delay_process((HOST, proxy.port), rtt / 2) as forwarder:
                    measured = _greeting_round_trip(forwarder.address)
                    url = f"socks5://{userinfo}{HOST}:{forwarder.port}"
                    cold_trips = 3 if label else 2
                    for kind in KINDS:
                        got = _measure_pool(kind, url, echo.port, rtt_count, rtt_repeat, RTT_POOL_SIZE, warmup=1)
                        notes = (f"emulated RTT {1e3 * rtt:g} ms (a loopback forwarder in front of socks_sansio "
                                 f"serve ({auth}) delays every chunk {1e3 * rtt / 2:g} ms each way; measured "
                                 f"greeting round trip {1e3 * measured:.1f} ms; the TCP handshake with the "
                                 f"forwarder is local, not delayed): a cold connect costs {cold_trips} round trips, "
                                 f"a pooled one 1, the echo 1 more; sequential connect + 4-octet echo + close, "
                                 f"pool size {RTT_POOL_SIZE} filled before timing, {rtt_count} connects x "
                                 f"{rtt_repeat} repeats, pool hits {got.hits}/{rtt_count * rtt_repeat}, "
                                 f"misses {got.misses}")  # fmt: skip
                        emulated += _pool_result_set(f"pool_rtt_{kind}{label}", got, notes)
    return loopback + emulated


register("clients", lambda: client_results(True), lambda: client_results(False),
         "client adapters (sync/asyncio/trio) connects/s vs python-socks and PySocks through one local proxy")
register("pool", lambda: pool_results(True), lambda: pool_results(False),
         "ProxyPool (prepared connections) vs cold connect: connects/s, p50/p99 connect latency, auth and not, "
         "on loopback and over an emulated round trip")

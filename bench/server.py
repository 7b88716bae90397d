"""Proxy server benchmarks: connect rate, relay throughput, idle memory.

Strategy: each proxy runs as its own subprocess on loopback and is measured
from outside, in the same run as its peers:

* ``server-connect``: SOCKS5 CONNECTs through the proxy, one after the other
  (sequential) and from many concurrent clients (each doing several connects
  in a row), with the p50/p99 latency of one connect (TCP connect to the reply)
  and the proxy's CPU seconds per connect (``bench.common.cpu_seconds``
  before/after).
* ``server-relay``: a separate client process pushes N bytes (1 MiB
  ``sendall``) through the tunnel into a sink that reads with ``recv_into`` a
  preallocated buffer; MB/s, and the proxy's CPU seconds per GiB. A direct
  loopback connection is the physical reference. On Linux ``ours-asyncio``
  moves a tunnel to splice() after its first 256 KiB (its default);
  ``server-relay-splice`` below puts it next to the same server with ``--no-splice``.
* ``server-memory``: RSS growth of the proxy per 1,000 idle tunnels (opened to
  an idle target, measured after a warm-up).

The proxies: ``ours-asyncio``, ``ours-uvloop`` and ``ours-trio`` (``python -m
socks_sansio serve --backend asyncio --loop asyncio``, ``--loop uvloop``,
``--backend trio``), ``pproxy-asyncio`` and ``pproxy-uvloop`` (pproxy takes
uvloop whenever it can import it; the first is run with that import blocked)
and ``microsocks``. A proxy that cannot be
started here is left out of the table (and named in the notes).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from bench import _server_util as util
from bench.common import BenchSkipped, Result, cpu_seconds, median, register, rss_bytes

OURS = ("ours-asyncio", "ours-uvloop", "ours-trio")
PEERS = ("pproxy-asyncio", "pproxy-uvloop", "microsocks")
GIB = 1 << 30
# Connects that failed (refused, reset, timed out), by proxy name: reported, not fatal.
FAILURES: dict[str, int] = {}


@dataclass(frozen=True)
class Sizes:
    """How much work one run does."""

    repeats: int
    sequential: int
    clients: int
    per_client: int
    relay_bytes: int
    relay_repeats: int
    idle_tunnels: int


QUICK = Sizes(repeats=3, sequential=60, clients=40, per_client=4, relay_bytes=64 << 20, relay_repeats=2,
              idle_tunnels=200)
FULL = Sizes(repeats=5, sequential=400, clients=200, per_client=10, relay_bytes=GIB, relay_repeats=3,
             idle_tunnels=1000)


def _available(names: Sequence[str]) -> tuple[list[str], list[str]]:
    usable: list[str] = []
    missing: list[str] = []
    for name in names:
        reason = util.proxy_available(name)
        (missing if reason else usable).append(name if not reason else f"{name} ({reason})")
    if not any(name in usable for name in OURS) and not any(name in util.CUSTOM for name in usable):
        raise BenchSkipped("none of our servers can be started")
    return usable, missing


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _split(values: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """Our variants (ours-* and prototypes) and the peers, from one dict keyed by proxy name."""
    ours = {k: v for k, v in values.items() if k not in PEERS and k != "direct"}
    peers = {k: v for k, v in values.items() if k in PEERS or k == "direct"}
    return ours, peers


# --------------------------------------------------------------------- connect


def _sequential(proxy: util.Proxy, request: bytes, n: int) -> tuple[float, list[float], float]:
    """(connects/s, latencies, server CPU s per connect) for *n* connects in a row."""
    latencies = []
    perf = time.perf_counter
    cpu0 = cpu_seconds(proxy.pid)
    start = perf()
    for _ in range(n):
        t0 = perf()
        try:
            sock = util.socks5_connect(proxy.address, request)
        except OSError:
            FAILURES[proxy.name] = FAILURES.get(proxy.name, 0) + 1
            continue
        latencies.append(perf() - t0)
        sock.close()
    elapsed = perf() - start
    return len(latencies) / elapsed, latencies, (cpu_seconds(proxy.pid) - cpu0) / n


def _concurrent(proxy: util.Proxy, request: bytes, clients: int, per_client: int) -> tuple[float, list[float], float]:
    """The same with *clients* concurrent clients doing *per_client* connects each."""
    latencies: list[float] = []
    perf = time.perf_counter

    async def client() -> None:
        for _ in range(per_client):
            t0 = perf()
            try:
                sock = await util.async_socks5_connect(proxy.address, request)
            except OSError:  # ConnectionError included: counted, reported in the notes
                FAILURES[proxy.name] = FAILURES.get(proxy.name, 0) + 1
                continue
            latencies.append(perf() - t0)
            sock.close()

    async def all_clients() -> None:
        await asyncio.gather(*(client() for _ in range(clients)))

    cpu0 = cpu_seconds(proxy.pid)
    start = perf()
    asyncio.run(all_clients())
    elapsed = perf() - start
    n = clients * per_client
    return len(latencies) / elapsed, latencies, (cpu_seconds(proxy.pid) - cpu0) / n


def _connect_runs(names: Sequence[str], sizes: Sizes) -> list[Result]:
    usable, missing = _available(names)
    FAILURES.clear()
    # metric -> proxy -> value
    table: dict[str, dict[str, float]] = {}
    with util.target_process() as target:
        request = util.socks5_request(target.address)
        for name in usable:
            with util.proxy_process(name) as proxy:
                util.socks5_connect(proxy.address, request).close()  # warm-up
                runs: tuple[tuple[str, Callable[[], tuple[float, list[float], float]]], ...] = (
                    ("sequential", lambda: _sequential(proxy, request, sizes.sequential)),
                    (f"{sizes.clients} concurrent clients",
                     lambda: _concurrent(proxy, request, sizes.clients, sizes.per_client)),
                )
                for mode, run in runs:
                    rates, p50s, p99s, cpus = [], [], [], []
                    for _ in range(sizes.repeats):
                        per_second, latencies, cpu = run()
                        rates.append(per_second)
                        p50s.append(_percentile(latencies, 0.50))
                        p99s.append(_percentile(latencies, 0.99))
                        cpus.append(cpu)
                    table.setdefault(f"{mode}|rate", {})[name] = median(rates)
                    table.setdefault(f"{mode}|p50", {})[name] = median(p50s) * 1e3
                    table.setdefault(f"{mode}|p99", {})[name] = median(p99s) * 1e3
                    table.setdefault(f"{mode}|cpu", {})[name] = median(cpus) * 1e6
    notes = f"not measured: {', '.join(missing)}" if missing else ""
    if FAILURES:
        failed = ", ".join(f"{k} {v}" for k, v in FAILURES.items())
        notes = f"{notes}; failed connects (left out): {failed}" if notes else f"failed connects (left out): {failed}"
    # Issue 15: 1.5x pproxy on the same loop; 1.2x pproxy-on-uvloop with the default install (asyncio's loop).
    targets = {"ours-asyncio/pproxy-asyncio": 1.5, "ours-uvloop/pproxy-uvloop": 1.5, "ours-asyncio/pproxy-uvloop": 1.2,
               "ours-asyncio/microsocks": 1.0, "ours-uvloop/microsocks": 1.0}
    results = []
    for key, values in table.items():
        mode, metric = key.split("|")
        ours, peers = _split(values)
        if metric == "rate":
            results.append(Result(f"server connect rate, {mode}", "connects/s", ours, peers, targets=targets,
                                  notes=notes))
        elif metric == "cpu":
            results.append(Result(f"server CPU per connect, {mode}", "us", ours, peers, higher_is_better=False,
                                  notes=notes))
        else:
            results.append(Result(f"server connect latency {metric}, {mode}", "ms", ours, peers,
                                  higher_is_better=False, notes=notes))
    return results


# ----------------------------------------------------------------------- relay


def _relay_once(proxy: util.Proxy | None, target: util.Proxy, nbytes: int) -> tuple[float, float]:
    """(seconds for *nbytes*, proxy CPU seconds) for one transfer through *proxy* (None: direct)."""
    cpu0 = cpu_seconds(proxy.pid) if proxy else 0.0
    sender = util.sender_process(proxy.address if proxy else None, target.address, nbytes)
    try:
        out, _ = sender.communicate(timeout=600)
    finally:
        if sender.poll() is None:
            sender.kill()
            sender.wait()
    if sender.returncode != 0:
        raise RuntimeError(f"relay client failed through {proxy.name if proxy else 'direct'}")
    cpu = cpu_seconds(proxy.pid) - cpu0 if proxy else 0.0
    return float(out), cpu


def _relay_runs(names: Sequence[str], sizes: Sizes) -> list[Result]:
    usable, missing = _available(names)
    speed: dict[str, float] = {}
    cpu_per_gib: dict[str, float] = {}
    nbytes = sizes.relay_bytes
    with util.target_process() as target:
        for name in ["direct", *usable]:
            with contextlib.ExitStack() as stack:
                proxy = None if name == "direct" else stack.enter_context(util.proxy_process(name))
                _relay_once(proxy, target, min(nbytes, 8 << 20))  # warm-up
                runs = [_relay_once(proxy, target, nbytes) for _ in range(sizes.relay_repeats)]
                speed[name] = median(nbytes / s / 1e6 for s, _ in runs)
                if proxy is not None:
                    cpu_per_gib[name] = median(c / (nbytes / GIB) for _, c in runs)
    notes = f"{nbytes >> 20} MiB per run, client -> target"
    if missing:
        notes += f"; not measured: {', '.join(missing)}"
    ours, peers = _split(speed)
    results = [
        Result("server relay throughput", "MB/s", ours, peers,
               targets={"ours-asyncio/pproxy-uvloop": 4.0, "ours-uvloop/pproxy-uvloop": 4.0, "ours-asyncio/direct": 0.8,
                        "ours-asyncio/microsocks": 3.0}, notes=notes +
               "; ratio to 'direct' is the fraction of plain loopback speed (moonshot: splice >= 0.5)"),
    ]
    if "ours-trio" in speed and "ours-asyncio" in speed:
        results.append(Result("server relay throughput, trio vs asyncio", "MB/s", {"ours-trio": speed["ours-trio"]},
                              {"ours-asyncio": speed["ours-asyncio"]}, targets={"ours-asyncio": 0.75}))
    ours, peers = _split(cpu_per_gib)
    results.append(Result("server CPU per GiB relayed", "s/GiB", ours, peers, higher_is_better=False,
                          notes="target for ours-asyncio: <= 0.3 s/GiB (absolute)"))
    return results


# ---------------------------------------------------------------------- memory


@contextlib.contextmanager
def _tunnels(proxy: util.Proxy, request: bytes, n: int) -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            socks.append(util.socks5_connect(proxy.address, request))
        yield socks
    finally:
        for sock in socks:
            sock.close()


def _settle(pid: int, seconds: float = 0.3) -> int:
    time.sleep(seconds)
    return rss_bytes(pid)


def _memory_runs(names: Sequence[str], sizes: Sizes) -> list[Result]:
    usable, missing = _available(names)
    util.raise_own_nofile()
    per_thousand: dict[str, float] = {}
    n = sizes.idle_tunnels
    with util.target_process() as target:
        request = util.socks5_request(target.address)
        for name in usable:
            with util.proxy_process(name) as proxy:
                with _tunnels(proxy, request, max(20, n // 10)):  # warm-up: allocator pools, code paths
                    _settle(proxy.pid)
                base = _settle(proxy.pid)
                with _tunnels(proxy, request, n):
                    grown = _settle(proxy.pid, 0.5)
                per_thousand[name] = (grown - base) * 1000 / n / (1 << 20)
    notes = (f"{n} idle tunnels, RSS delta after warm-up; targets (absolute): ours-asyncio <= 4, "
             "ours-trio <= 6 MiB per 1,000")
    if missing:
        notes += f"; not measured: {', '.join(missing)}"
    ours, peers = _split(per_thousand)
    return [Result("server memory per 1,000 idle tunnels", "MiB", ours, peers, higher_is_better=False, notes=notes)]


# -------------------------------------------------------------------- registry

ALL = (*OURS, *PEERS)


def connect_quick() -> list[Result]:
    return _connect_runs(ALL, QUICK)


def connect_full() -> list[Result]:
    return _connect_runs(ALL, FULL)


def relay_quick() -> list[Result]:
    return _relay_runs(ALL, QUICK)


def relay_full() -> list[Result]:
    return _relay_runs(ALL, FULL)


def memory_quick() -> list[Result]:
    return _memory_runs(ALL, QUICK)


def memory_full() -> list[Result]:
    return _memory_runs(ALL, FULL)


register("server-connect", connect_quick, connect_full,
         "SOCKS5 CONNECTs/s, p50/p99 latency, CPU per connect: ours (3 ways) vs pproxy (2 loops), microsocks")
register("server-relay", relay_quick, relay_full,
         "relay MB/s and CPU s/GiB: ours vs pproxy (both loops), microsocks, direct loopback")
register("server-memory", memory_quick, memory_full,
         "RSS per 1,000 idle tunnels: ours vs pproxy (both loops), microsocks")


# ---------------------------------------------------------------- splice relay
#
# ``server-relay-splice``: the real server's two relays side by side. ``ours-asyncio``
# relays plain-TCP CONNECT tunnels with splice() (adapters/server/splice.SpliceRelay, the
# default on Linux); ``ours-asyncio-copy`` is the same server with ``--no-splice``
# (the copying relay); ``direct`` is plain loopback. Interleaved repeats.

COPY = "ours-asyncio-copy"


def _splice_runs(sizes: Sizes) -> list[Result]:
    from socks_sansio.adapters.server.splice import SpliceRelay

    if not SpliceRelay.supported():
        raise BenchSkipped("os.splice is Linux-only")
    util.CUSTOM[COPY] = ([*util.OURS_ARGV, "asyncio", "--loop", "asyncio", "--no-splice"], True)
    nbytes = max(sizes.relay_bytes, 128 << 20)  # enough work to measure a cheap relay's CPU
    names = ["direct", "ours-asyncio", COPY]
    seconds: dict[str, list[float]] = {name: [] for name in names}
    cpus: dict[str, list[float]] = {name: [] for name in names}
    with util.target_process() as target, contextlib.ExitStack() as stack:
        proxies = {name: stack.enter_context(util.proxy_process(name)) for name in names[1:]}
        for name in names:
            _relay_once(proxies.get(name), target, 8 << 20)  # warm-up
        for _ in range(sizes.relay_repeats):
            for name in names:
                elapsed, cpu = _relay_once(proxies.get(name), target, nbytes)
                seconds[name].append(elapsed)
                cpus[name].append(cpu / (nbytes / GIB))
    speed = {name: median(nbytes / s / 1e6 for s in seconds[name]) for name in names}
    notes = f"{nbytes >> 20} MiB per run, client -> target, {sizes.relay_repeats} interleaved runs"
    return [
        Result("splice relay throughput", "MB/s", {"ours-asyncio": speed["ours-asyncio"], COPY: speed[COPY]},
               {"direct": speed["direct"]}, targets={"ours-asyncio/direct": 0.5},
               notes=notes + "; ours-asyncio splices, ours-asyncio-copy is --no-splice; ratio to 'direct' is "
               "the fraction of plain loopback speed"),
        Result("splice relay CPU per GiB", "s/GiB", {"ours-asyncio": median(cpus["ours-asyncio"])},
               {COPY: median(cpus[COPY])}, higher_is_better=False,
               notes="target for ours-asyncio (spliced): <= 0.3 s/GiB (absolute)"),
    ]


def splice_quick() -> list[Result]:
    return _splice_runs(QUICK)


def splice_full() -> list[Result]:
    return _splice_runs(FULL)


register("server-relay-splice", splice_quick, splice_full,
         "the server's splice() relay (default on Linux) MB/s and CPU s/GiB vs its copying relay (--no-splice) "
         "and direct loopback")

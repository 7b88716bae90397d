"""Shared benchmark infrastructure: timing, results, tables, JSON, process stats, registry.

Strategy: every benchmark measures *our* code and one or more *peers* in the
same process run, takes the median over several repeats, and reports the
ratio ours/peer (oriented so that a ratio above 1 always means "we are
better").  Absolute numbers on a shared machine are noise; ratios are the
result.

Stable API (used by bench/codec.py, bench/clients.py and bench/server.py):

``median(values) -> float``
    Median of a non-empty sequence.
``timeit(fn, *, repeat, number) -> list[float]``
    Call ``fn()`` ``number`` times per repeat, ``repeat`` times; return the
    seconds *per call* of each repeat (one warm-up call first).
``rate(fn, *, repeat, number) -> float``
    Median calls per second (``1 / median(timeit(...))``).
``time_for(seconds, fn) -> int``
    Calibrate: how many calls of ``fn`` fit in roughly ``seconds``.
``Result(name, unit, ours, peers, higher_is_better=True, targets={}, notes="")``
    One benchmark line.  ``ours``/``peers`` map a variant name to a number in
    ``unit``.  ``result.ratios()`` gives ``{"<our>/<peer>": ratio}`` for every
    pair, oriented so that > 1 means we are better.  ``targets`` maps a peer
    name (or ``"<our>/<peer>"``) to the ratio the issue asks for, reported but
    never asserted.  ``result.to_dict()`` is the JSON form.
``print_table(results, file=sys.stdout)``
    Human-readable table of values and ratios.
``write_json(results, path, *, meta=None)``
    Write ``{"meta": {...}, "results": [...]}`` to ``path``.
``cpu_seconds(pid) -> float``
    user+system CPU time of a process (from ``/proc/<pid>/stat``).
``rss_bytes(pid) -> int``
    Resident set size of a process (``VmRSS`` from ``/proc/<pid>/status``).
``Bench`` / ``REGISTRY`` / ``register(name, quick_fn, full_fn)``
    Registry of benchmarks by name.  ``quick_fn()`` and ``full_fn()`` each
    return a list of :class:`Result`; ``quick_fn`` must be fast (the whole
    ``--quick`` run stays under a minute).  ``bench/__main__.py`` imports the
    benchmark modules, which register themselves at import time.
``BenchSkipped(reason)``
    Raise from a benchmark function when a peer/tool is missing; the runner
    records the reason instead of failing.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

__all__ = [
    "REGISTRY",
    "Bench",
    "BenchSkipped",
    "Result",
    "cpu_seconds",
    "median",
    "print_table",
    "rate",
    "register",
    "rss_bytes",
    "time_for",
    "timeit",
    "write_json",
]


# ---------------------------------------------------------------------- timing


def median(values: Iterable[float]) -> float:
    """Median of a non-empty iterable of numbers."""
    data = list(values)
    if not data:
        raise ValueError("median() of no values")
    return float(statistics.median(data))


def timeit(fn: Callable[[], object], *, repeat: int, number: int) -> list[float]:
    """Seconds per call of ``fn()``, one figure per repeat (after one warm-up call)."""
    if repeat < 1 or number < 1:
        raise ValueError("repeat and number must be >= 1")
    fn()
    out = []
    perf = time.perf_counter
    rng = range(number)
    for _ in range(repeat):
        start = perf()
        for _ in rng:
            fn()
        out.append((perf() - start) / number)
    return out


def rate(fn: Callable[[], object], *, repeat: int, number: int) -> float:
    """Median calls per second of ``fn()``."""
    per_call = median(timeit(fn, repeat=repeat, number=number))
    return 1.0 / per_call if per_call > 0 else math.inf


def time_for(seconds: float, fn: Callable[[], object], *, minimum: int = 1) -> int:
    """How many calls of ``fn()`` take roughly ``seconds`` (calibration for ``number``)."""
    n = 1
    perf = time.perf_counter
    while True:
        start = perf()
        for _ in range(n):
            fn()
        elapsed = perf() - start
        if elapsed >= 0.02 or n >= 1 << 24:
            break
        n *= 4
    per_call = elapsed / n
    return max(minimum, int(seconds / per_call) if per_call > 0 else n)


# --------------------------------------------------------------------- results


@dataclass
class Result:
    """One benchmark line: our variants and the peers, in the same unit."""

    name: str
    unit: str
    ours: dict[str, float]
    peers: dict[str, float]
    higher_is_better: bool = True
    targets: dict[str, float] = field(default_factory=dict)
    notes: str = ""

    def ratios(self) -> dict[str, float]:
        """``{"<our>/<peer>": r}`` for every pair; ``r > 1`` means ours is better."""
        out: dict[str, float] = {}
        for our_name, our_value in self.ours.items():
            for peer_name, peer_value in self.peers.items():
                out[f"{our_name}/{peer_name}"] = _ratio(our_value, peer_value, self.higher_is_better)
        return out

    def target_for(self, pair: str) -> float | None:
        """The target ratio for ``"<our>/<peer>"`` (exact pair first, then peer name)."""
        if pair in self.targets:
            return self.targets[pair]
        peer = pair.split("/", 1)[1]
        return self.targets.get(peer)

    def to_dict(self) -> dict[str, Any]:
        ratios = self.ratios()
        return {
            "name": self.name,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "ours": dict(self.ours),
            "peers": dict(self.peers),
            "ratios": ratios,
            "targets": {pair: self.target_for(pair) for pair in ratios if self.target_for(pair) is not None},
            "notes": self.notes,
        }


def _ratio(ours: float, peer: float, higher_is_better: bool) -> float:
    if higher_is_better:
        return ours / peer if peer else math.inf
    return peer / ours if ours else math.inf


def _fmt(value: float) -> str:
    if value == 0 or not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 1e6:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:,.1f}"
    if magnitude >= 1:
        return f"{value:.3f}"
    return f"{value:.4g}"


def print_table(results: Sequence[Result], file: TextIO | None = None) -> None:
    """Print values (``ours`` then ``peers``) and ratios with their targets."""
    out = file if file is not None else sys.stdout
    for res in results:
        better = "higher" if res.higher_is_better else "lower"
        print(f"\n== {res.name}  [{res.unit}, {better} is better]", file=out)
        rows = [(f"ours  {k}", v) for k, v in res.ours.items()] + [(f"peer  {k}", v) for k, v in res.peers.items()]
        width = max((len(label) for label, _ in rows), default=10)
        for label, value in rows:
            print(f"   {label:<{width}}  {_fmt(value):>16}", file=out)
        ratios = res.ratios()
        if ratios:
            pwidth = max(len(p) for p in ratios)
            for pair, r in ratios.items():
                target = res.target_for(pair)
                tail = ""
                if target is not None:
                    tail = f"   target >= {target:g}  {'met' if r >= target else 'NOT met'}"
                print(f"   ratio {pair:<{pwidth}}  {r:8.2f}x{tail}", file=out)
        if res.notes:
            print(f"   note: {res.notes}", file=out)
    out.flush()


def environment() -> dict[str, Any]:
    """Machine/interpreter facts recorded with every JSON file."""
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def results_document(results: Sequence[Result], *, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"meta": ..., "results": [...]}``, as :func:`write_json` writes it (non-finite numbers become None)."""
    doc = _finite({"meta": {**environment(), **(meta or {})}, "results": [r.to_dict() for r in results]})
    assert isinstance(doc, dict)
    return doc


def write_json(results: Sequence[Result], path: str | os.PathLike[str], *, meta: dict[str, Any] | None = None) -> None:
    """Write ``{"meta": ..., "results": [...]}`` (non-finite numbers become null)."""
    doc = results_document(results, meta=meta)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2, sort_keys=False)
        fh.write("\n")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


# ------------------------------------------------------------- process stats

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int | None = None) -> float:
    """user+system CPU seconds consumed so far by process ``pid`` (default: this one).

    Another process is read twice, and the larger figure is returned:
    ``/proc/<pid>/stat`` counts every thread that ever ran, but in whole clock
    ticks (10 ms: too coarse for a few quick connects), and
    ``/proc/<pid>/task/*/schedstat`` counts nanoseconds, but only for the
    threads alive now (a server with a thread per connection, such as
    microsocks, loses each connection's time when its thread exits).
    """
    if pid is None or pid == os.getpid():
        t = os.times()
        return t.user + t.system
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        data = fh.read()
    # Field 2 (comm) may contain spaces; it is parenthesised, so split after ')'.
    fields = data[data.rindex(")") + 2 :].split()
    ticks = (int(fields[11]) + int(fields[12])) / _CLK_TCK
    try:
        live = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as fh:
                live += int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return ticks
    return max(ticks, live / 1e9)


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of ``pid`` (default: this process) in bytes, from /proc."""
    with open(f"/proc/{pid if pid is not None else 'self'}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def time_wait_sockets() -> int | None:
    """TCP sockets in TIME_WAIT on this machine (Linux ``/proc/net/sockstat``), or None elsewhere."""
    try:
        with open("/proc/net/sockstat", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("TCP:"):
                    fields = line.split()
                    return int(fields[fields.index("tw") + 1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def settle_time_wait(*, limit: int = 4000, timeout: float = 75.0) -> float:
    """Wait (at most *timeout* s) until fewer than *limit* TCP sockets are in TIME_WAIT; returns the wait.

    Every loopback connect leaves a socket in TIME_WAIT for 60 s, holding its
    port. The client benchmarks make tens of thousands of connects, which can
    leave too few ephemeral ports for the next benchmark's connects (and even
    for binding its listeners to port 0). Waiting between benchmarks keeps one
    benchmark's leftovers out of the next one's figures.
    """
    start = time.monotonic()
    while (count := time_wait_sockets()) is not None and count >= limit and time.monotonic() - start < timeout:
        time.sleep(1.0)
    return time.monotonic() - start


# -------------------------------------------------------------------- registry


class BenchSkipped(Exception):
    """Raised by a benchmark when something it needs is missing (recorded, not a failure)."""


BenchFn = Callable[[], list[Result]]


@dataclass
class Bench:
    """A named benchmark with a quick and a full variant."""

    name: str
    quick: BenchFn
    full: BenchFn
    description: str = ""

    def run(self, quick: bool) -> list[Result]:
        return (self.quick if quick else self.full)()


REGISTRY: dict[str, Bench] = {}


def register(name: str, quick_fn: BenchFn, full_fn: BenchFn | None = None, description: str = "") -> Bench:
    """Register benchmark ``name`` (``full_fn`` defaults to ``quick_fn``); returns it."""
    if name in REGISTRY:
        raise ValueError(f"benchmark {name!r} registered twice")
    bench = Bench(name, quick_fn, full_fn or quick_fn, description)
    REGISTRY[name] = bench
    return bench

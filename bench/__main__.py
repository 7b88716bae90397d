"""Command line runner: ``python -m bench [--quick] [--json FILE] [--plot DIR] [--only NAME[,NAME]] [--list]``.

Imports every benchmark module (each registers itself in
:data:`bench.common.REGISTRY`), runs the selected benchmarks in registration
order, prints one table per result and optionally writes all results as JSON
and draws them as SVG plots (:mod:`bench.plots`, needs matplotlib).
A benchmark that raises :class:`bench.common.BenchSkipped` is reported as
skipped; any other exception is reported and makes the exit status 1.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import time
import traceback

from bench.common import REGISTRY, BenchSkipped, Result, print_table, results_document, settle_time_wait, write_json

# Benchmark modules, imported in this order; a missing optional module is skipped.
MODULES = ("bench.codec", "bench.clients", "bench.server")


def load_modules() -> list[str]:
    """Import the benchmark modules that exist; return their names."""
    loaded = []
    for name in MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        importlib.import_module(name)
        loaded.append(name)
    return loaded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (whole suite under a minute)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    parser.add_argument("--plot", metavar="DIR", help="also draw SVG plots of the results into DIR (needs matplotlib)")
    parser.add_argument("--only", metavar="NAME[,NAME]", help="run only these benchmarks (see --list)")
    parser.add_argument("--list", action="store_true", help="list benchmark names and exit")
    args = parser.parse_args(argv)

    if args.plot and importlib.util.find_spec("matplotlib") is None:
        parser.error("--plot needs matplotlib: pip install -e '.[bench]'")
    load_modules()
    if args.list:
        for bench in REGISTRY.values():
            print(f"{bench.name:<24} {bench.description}")
        return 0

    names = list(REGISTRY)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in REGISTRY]
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(REGISTRY)}")
        names = wanted

    results: list[Result] = []
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    timings: dict[str, float] = {}
    produced: dict[str, list[str]] = {}
    mode = "quick" if args.quick else "full"
    print(f"socks-sansio benchmarks ({mode}): {', '.join(names)}", flush=True)
    for name in names:
        waited = 0.0 if args.quick else settle_time_wait()  # quick runs make too few connects to matter
        start = time.perf_counter()
        print(f"\n### {name}", flush=True)
        if waited >= 1:
            print(f"   (waited {waited:.0f} s for TIME_WAIT sockets to expire)", flush=True)
        try:
            got = REGISTRY[name].run(args.quick)
        except BenchSkipped as exc:
            skipped[name] = str(exc)
            print(f"   skipped: {exc}", flush=True)
        except Exception as exc:
            failed[name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        else:
            results.extend(got)
            produced[name] = [r.name for r in got]
            print_table(got)
        timings[name] = round(time.perf_counter() - start, 3)
        print(f"   ({name}: {timings[name]:.1f} s)", flush=True)

    meta = {
        "mode": mode,
        "benchmarks": names,
        "results_by_benchmark": produced,
        "skipped": skipped,
        "failed": failed,
        "seconds": timings,
    }
    if args.json:
        write_json(results, args.json, meta=meta)
    if args.plot:
        from bench.plots import make_plots

        for plot in make_plots(results_document(results, meta=meta), args.plot):
            print(f"plot: {plot.path}")
    if failed:
        print(f"\nFAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

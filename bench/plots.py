"""Plots of a benchmark run: ``python -m bench.plots RESULTS.json OUTDIR``.

Reads the file ``python -m bench --json RESULTS.json`` wrote and draws SVG
files into OUTDIR (created if missing), printing each path:

* ``targets.svg``: every ratio that has a target, across all benchmarks;
* ``ratios-<benchmark>.svg``: every ratio of one benchmark (``meta``'s
  ``results_by_benchmark`` says which results each benchmark produced).

Each row is one ``ours/peer`` pair of one result, on a logarithmic axis: a
line from parity (1, the dashed rule) to the ratio, which is oriented as in the
tables so that right of 1 means ours is better (bench/README.md, "Reading the
table"). A target is a black bar across its row; the ratio's dot is green when
it reaches the target, red when it does not, grey without a target. Nothing is
measured here, and the output depends only on the input file (SVG with text
kept as text, no date, fixed ids).

Needs matplotlib (the ``bench`` and ``docs`` extras).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Plot", "Row", "load", "main", "make_plots", "rows_of"]

MET, NOT_MET, NO_TARGET, TARGET = "#2e7d32", "#c62828", "#8a8a8a", "#111111"


@dataclass(frozen=True)
class Row:
    """One ratio: ``result``'s ``pair`` (``"<ours>/<peer>"``), and its target if it has one."""

    result: str
    pair: str
    ratio: float
    target: float | None

    @property
    def label(self) -> str:
        return f"{self.result}: {self.pair}"

    @property
    def colour(self) -> str:
        if self.target is None:
            return NO_TARGET
        return MET if self.ratio >= self.target else NOT_MET


@dataclass(frozen=True)
class Plot:
    """One SVG written: where, and what it shows."""

    path: Path
    title: str
    caption: str


def load(path: str | Path) -> dict[str, Any]:
    """The JSON document ``python -m bench --json`` wrote."""
    with open(path, encoding="utf-8") as file:
        doc = json.load(file)
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        raise ValueError(f"{path}: not a benchmark results file (no 'results' list)")
    return doc


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def rows_of(results: Iterable[Mapping[str, Any]]) -> list[Row]:
    """Every finite ratio of *results*, in their order (a ratio the JSON holds as null is left out)."""
    rows = []
    for result in results:
        targets = result.get("targets") or {}
        for pair, ratio in (result.get("ratios") or {}).items():
            if _finite(ratio):
                target = targets.get(pair)
                rows.append(Row(result["name"], pair, float(ratio), float(target) if _finite(target) else None))
    return rows


def _groups(doc: Mapping[str, Any]) -> list[tuple[str, list[Mapping[str, Any]]]]:
    """``(benchmark, its results)`` in run order; results no benchmark claims go under "other"."""
    by_name = {result["name"]: result for result in doc["results"]}
    produced = (doc.get("meta") or {}).get("results_by_benchmark") or {}
    groups: list[tuple[str, list[Mapping[str, Any]]]] = []
    claimed: set[str] = set()
    for bench, names in produced.items():
        results = [by_name[name] for name in names if name in by_name]
        claimed.update(names)
        if results:
            groups.append((bench, results))
    rest = [result for result in doc["results"] if result["name"] not in claimed]
    if rest:
        groups.append(("other" if groups else "results", rest))
    return groups


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "results"


def _describe(meta: Mapping[str, Any]) -> str:
    parts = [f"{meta['mode']} run" if meta.get("mode") else "run"]
    if meta.get("time"):
        parts.append(f"of {meta['time']}")
    machine = ", ".join(str(x) for x in (meta.get("implementation"), meta.get("python")) if x)
    if meta.get("cpus"):
        machine += f", {meta['cpus']} CPUs"
    if machine:
        parts.append(f"({machine})")
    return " ".join(parts)


def _draw(rows: Sequence[Row], title: str, path: Path) -> None:
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, NullLocator

    values = [row.ratio for row in rows] + [row.target for row in rows if row.target is not None] + [1.0]
    low, high = min(values) / 1.6, max(values) * 1.6
    with matplotlib.rc_context({"svg.hashsalt": "socks-sansio-bench", "svg.fonttype": "none", "font.size": 9}):
        figure = Figure(figsize=(9.0, 1.3 + 0.3 * len(rows)), layout="constrained")
        axes = figure.subplots()
        ys = list(range(len(rows)))[::-1]  # first row at the top
        for y, row in zip(ys, rows, strict=True):
            axes.hlines(y, 1.0, row.ratio, colors=row.colour, linewidth=3)
            axes.plot([row.ratio], [y], "o", color=row.colour, markersize=6)
            axes.annotate(
                f"{row.ratio:.2f}x",
                (row.ratio, y),
                xytext=(6 if row.ratio >= 1 else -6, 0),
                textcoords="offset points",
                ha="left" if row.ratio >= 1 else "right",
                va="center",
                fontsize=8,
            )
            if row.target is not None:
                axes.plot([row.target], [y], "|", color=TARGET, markersize=15, markeredgewidth=2.2)
        axes.axvline(1.0, color="#555555", linestyle="--", linewidth=1)
        axes.set_xscale("log", base=2)
        axes.set_xlim(low, high)
        ticks = [2.0**k for k in range(math.floor(math.log2(low)), math.ceil(math.log2(high)) + 1)]
        axes.xaxis.set_major_locator(FixedLocator(ticks))
        axes.xaxis.set_minor_locator(NullLocator())
        axes.set_xticklabels([f"{t:g}x" for t in ticks])
        axes.set_yticks(ys, [row.label for row in rows], fontsize=8)
        axes.set_ylim(-0.7, len(rows) - 0.3)
        axes.set_xlabel("ratio ours/peer (right of 1: ours is better; log scale)")
        axes.set_title(title, loc="left", fontsize=10)
        axes.grid(axis="x", color="#dddddd", linewidth=0.6)
        axes.set_axisbelow(True)
        legend = [
            Line2D([], [], color=MET, marker="o", linewidth=3, label="target met"),
            Line2D([], [], color=NOT_MET, marker="o", linewidth=3, label="target not met"),
            Line2D([], [], color=NO_TARGET, marker="o", linewidth=3, label="no target"),
            Line2D([], [], color=TARGET, marker="|", linestyle="none", markersize=12, markeredgewidth=2.2,
                   label="target"),
        ]
        figure.legend(handles=legend, loc="outside lower center", ncol=4, frameon=False, fontsize=8)
        figure.savefig(path, format="svg", metadata={"Date": None})


def make_plots(doc: Mapping[str, Any], outdir: str | Path) -> list[Plot]:
    """Draw every plot of *doc* (a loaded results file) into *outdir*; return what was written, in order."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    meta = doc.get("meta") or {}
    run = _describe(meta)
    plots = []
    targeted = [row for row in rows_of(doc["results"]) if row.target is not None]
    if targeted:
        met = sum(row.ratio >= row.target for row in targeted)  # type: ignore[operator]
        path = out / "targets.svg"
        _draw(targeted, f"Against the targets: {met} of {len(targeted)} met", path)
        plots.append(Plot(path, "Against the targets", f"Every ratio that has a target ({run})."))
    for bench, results in _groups(doc):
        rows = rows_of(results)
        if not rows:
            continue
        path = out / f"ratios-{_slug(bench)}.svg"
        _draw(rows, f"{bench}: ratios against the peers", path)
        plots.append(Plot(path, bench, f"Benchmark {bench}: every ratio ({run})."))
    return plots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plots", description=__doc__.splitlines()[0])
    parser.add_argument("results", metavar="RESULTS.json", help="what python -m bench --json wrote")
    parser.add_argument("outdir", metavar="OUTDIR", help="directory for the SVG files (created if missing)")
    args = parser.parse_args(argv)
    try:
        doc = load(args.results)
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    for plot in make_plots(doc, args.outdir):
        print(plot.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

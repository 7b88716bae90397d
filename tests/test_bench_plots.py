"""bench/plots.py turns ``python -m bench --json`` output into SVG plots of the ratios and targets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("CI"):
    import matplotlib  # the docs extra: CI installs it, so a missing one is a failure there
else:
    matplotlib = pytest.importorskip("matplotlib")

from bench import plots

ROOT = Path(__file__).resolve().parent.parent
SVG = "{http://www.w3.org/2000/svg}"


def _result(name: str, ratios: dict[str, float | None], targets: dict[str, float], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "unit": "things/s",
        "higher_is_better": True,
        "ours": {"ours": 1.0},
        "peers": {"peer": 1.0},
        "ratios": ratios,
        "targets": targets,
        "notes": "",
        **extra,
    }


RESULTS: dict[str, Any] = {
    "meta": {
        "python": "3.11.7",
        "implementation": "CPython",
        "cpus": 2,
        "time": "2026-12-01T00:00:00+0000",
        "mode": "quick",
        "results_by_benchmark": {
            "codec_socks5": ["socks5_handshake", "socks5_handshake_auth"],
            "server-relay": ["relay throughput"],
        },
    },
    "results": [
        _result("socks5_handshake", {"ours/socksio": 1.5, "ours/python_socks": 2.0}, {"ours/socksio": 3.0}),
        _result("socks5_handshake_auth", {"ours/socksio": 3.5}, {"ours/socksio": 3.0}),
        _result("relay throughput", {"ours/pproxy": 4.5, "ours/direct": None}, {"ours/pproxy": 4.0}),
        _result("latency p50", {"ours/peer": 0.8}, {}, higher_is_better=False),  # claimed by no benchmark
    ],
}


@pytest.fixture
def results_file(tmp_path: Path) -> Path:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(RESULTS), encoding="utf-8")
    return path


def _texts(path: Path) -> list[str]:
    root = ET.parse(path).getroot()  # well-formed SVG
    assert root.tag == f"{SVG}svg"
    return ["".join(element.itertext()) for element in root.iter(f"{SVG}text")]


def test_rows_keep_every_finite_ratio_and_its_target() -> None:
    rows = plots.rows_of(RESULTS["results"])
    assert [(row.result, row.pair, row.ratio, row.target) for row in rows] == [
        ("socks5_handshake", "ours/socksio", 1.5, 3.0),
        ("socks5_handshake", "ours/python_socks", 2.0, None),
        ("socks5_handshake_auth", "ours/socksio", 3.5, 3.0),
        ("relay throughput", "ours/pproxy", 4.5, 4.0),  # the null ratio is left out
        ("latency p50", "ours/peer", 0.8, None),  # the JSON's ratio is already oriented
    ]
    assert [row.colour for row in rows] == [plots.NOT_MET, plots.NO_TARGET, plots.MET, plots.MET, plots.NO_TARGET]


def test_make_plots_draws_the_targets_and_one_plot_per_benchmark(tmp_path: Path) -> None:
    drawn = plots.make_plots(RESULTS, tmp_path / "out")
    assert [plot.path.name for plot in drawn] == [
        "targets.svg",
        "ratios-codec-socks5.svg",
        "ratios-server-relay.svg",
        "ratios-other.svg",
    ]
    for plot in drawn:
        assert plot.path.is_file()
        assert "quick run of 2026-12-01T00:00:00+0000 (CPython, 3.11.7, 2 CPUs)" in plot.caption
    targets = _texts(drawn[0].path)
    assert "Against the targets: 2 of 3 met" in targets
    assert "socks5_handshake: ours/socksio" in targets
    assert "socks5_handshake: ours/python_socks" not in targets  # no target: not on the targets plot
    codec = _texts(drawn[1].path)
    assert {"socks5_handshake: ours/socksio", "socks5_handshake: ours/python_socks", "1.50x", "3.50x"} <= set(codec)
    assert "relay throughput: ours/pproxy" not in codec
    assert "latency p50: ours/peer" in _texts(drawn[3].path)


def test_the_output_depends_only_on_the_input(tmp_path: Path) -> None:
    first = plots.make_plots(RESULTS, tmp_path / "a")
    second = plots.make_plots(RESULTS, tmp_path / "b")
    for one, two in zip(first, second, strict=True):
        assert one.path.read_bytes() == two.path.read_bytes()


def test_a_file_without_benchmark_names_is_one_group(tmp_path: Path) -> None:
    drawn = plots.make_plots({"results": RESULTS["results"][:1]}, tmp_path)
    assert [plot.path.name for plot in drawn] == ["targets.svg", "ratios-results.svg"]


def test_command_line(results_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "plots"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.plots", str(results_file), str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.split()) == 4
    assert {p.name for p in out.iterdir()} == {Path(line).name for line in proc.stdout.split()}


def test_command_line_refuses_a_file_that_is_not_results(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"meta": {}}', encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "bench.plots", str(bad), str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "not a benchmark results file" in proc.stderr


def test_the_committed_results_file_plots() -> None:
    doc = plots.load(ROOT / "docs" / "_static" / "bench-full.json")
    assert plots.rows_of(doc["results"]), "the docs' results file has ratios to plot"

"""The benchmark suite runs and reports every benchmark with numbers.

No performance threshold is asserted anywhere: absolute and even relative
figures on a shared CI machine are noise. This only checks that
``python -m bench --quick --json FILE`` works end to end.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 180


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def _numbers(values: dict[str, object]) -> bool:
    return bool(values) and all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in values.values()
    )


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict]:
    folder = tmp_path_factory.mktemp("bench")
    out = folder / "results.json"
    proc = _run("--quick", "--json", str(out), "--plot", str(folder / "plots"))
    tail = f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, f"exit {proc.returncode}\n{tail}"
    return proc, json.loads(out.read_text())


def test_list_names_benchmarks() -> None:
    proc = _run("--list")
    assert proc.returncode == 0, proc.stderr
    names = [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]
    for expected in ("codec_socks5", "codec_http", "codec_bytewise", "clients", "pool", "server-relay-splice"):
        assert expected in names


def test_unknown_benchmark_is_a_usage_error() -> None:
    proc = _run("--only", "no_such_benchmark")
    assert proc.returncode == 2
    assert "unknown benchmark" in proc.stderr


def test_quick_run_reports_every_benchmark(quick_run: tuple[subprocess.CompletedProcess[str], dict]) -> None:
    proc, doc = quick_run
    meta = doc["meta"]
    listed = [line.split()[0] for line in _run("--list").stdout.splitlines() if line.strip()]
    assert meta["mode"] == "quick"
    assert meta["benchmarks"] == listed
    assert meta["failed"] == {}
    by_name = {r["name"]: r for r in doc["results"]}
    for bench in listed:
        if bench in meta["skipped"]:
            continue
        produced = meta["results_by_benchmark"][bench]
        assert produced, f"benchmark {bench} produced no results"
        for name in produced:
            result = by_name[name]
            assert _numbers(result["ours"]), result
            assert _numbers(result["peers"]), result
            assert _numbers(result["ratios"]), result
            assert name in proc.stdout  # the table was printed


def test_quick_run_has_the_codec_and_client_results(quick_run: tuple[subprocess.CompletedProcess[str], dict]) -> None:
    _, doc = quick_run
    names = {r["name"] for r in doc["results"]}
    expected = {
        "socks5_handshake",
        "socks5_handshake_auth",
        "http_connect_exchange",
        "http_head_bytewise_16KiB",
        "http_head_bytewise_64KiB",
        "http_head_bytewise_growth",
        "clients_sync",
        "clients_asyncio",
        "clients_trio",
    }
    assert expected <= names


def test_quick_run_draws_the_plots(quick_run: tuple[subprocess.CompletedProcess[str], dict]) -> None:
    proc, doc = quick_run
    drawn = [Path(line.removeprefix("plot: ")) for line in proc.stdout.splitlines() if line.startswith("plot: ")]
    assert any(path.name == "targets.svg" for path in drawn), proc.stdout[-2000:]
    by_name = {r["name"]: r for r in doc["results"]}
    for bench, produced in doc["meta"]["results_by_benchmark"].items():
        if any(by_name[name]["ratios"] for name in produced):
            slug = re.sub(r"[^a-z0-9]+", "-", bench.lower()).strip("-")
            assert any(path.name == f"ratios-{slug}.svg" for path in drawn), bench
    for path in drawn:
        assert path.read_text(encoding="utf-8").lstrip().startswith("<?xml"), path

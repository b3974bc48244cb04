"""The benchmark scripts run end to end with tiny sizes and print their tables.

They measure nothing here (no timed assertions): this only keeps them from rotting.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.e2e


def _run(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=55,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _rows(out: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip("|").split("|")]
        for line in out.splitlines()
        if line.startswith("|") and not line.startswith("|-")
    ]


def test_bench_poll_prints_its_table() -> None:
    """bench_poll runs a 1k-item cycle per k and prints one row each."""
    out = _run("bench_poll.py", "--max-n", "1000", "--quick")
    assert "| N " in out and "cycle/floor" in out
    assert out.count("| 1,000 |") == 2


def test_bench_delivery_prints_its_tables() -> None:
    """bench_delivery delivers every queued event and reports the latency run."""
    out = _run("bench_delivery.py", "--events", "200", "--seconds", "1", "--quick")
    assert "webhooks/s" in out and "p99 ms" in out
    rows = _rows(out)
    throughput = rows[rows.index(next(r for r in rows if r[0] == "listeners")) + 1]
    assert throughput[:3] == ["1", "200", "0"]  # listeners, webhooks arrived, left pending


def test_bench_sources_prints_its_table() -> None:
    """bench_sources polls a few sources busy and idle and reports the daemon's CPU."""
    out = _run(
        "bench_sources.py",
        "--sources",
        "5",
        "--every",
        "1",
        "--seconds",
        "2",
        "--idle-seconds",
        "1",
    )
    assert "CPU % of a core" in out
    assert "5 idle (cron not due)" in out


def test_bench_detail_prints_its_table() -> None:
    """bench_detail polls a small list+detail source: every detail, then 1%, then none."""
    out = _run("bench_detail.py", "--ns", "100")
    rows = {r[1]: r for r in _rows(out)[1:]}
    assert rows["baseline"][3] == "100"
    assert rows["1 changed"][3] == "1"
    assert rows["unchanged"][3] == "0"


def test_bench_incremental_prints_its_table() -> None:
    """bench_incremental polls a small source in full and incrementally, side by side."""
    out = _run("bench_incremental.py", "--items", "2000", "--changes", "10", "--rounds", "1")
    rows = {r[0]: r for r in _rows(out)}
    assert rows["full list (snapshot)"][-1] == rows["incremental window"][-1] == "10"
    assert rows["incremental window"][1] == "1"  # one request for the window
    assert "full / incremental" in rows


def test_bench_cli_poll_prints_its_table() -> None:
    """bench_cli_poll times a small dry run beside the bare fetch+parse processes."""
    out = _run("bench_cli_poll.py", "--n", "2000", "--k", "3", "--pairs", "1")
    rows = {r[0]: r for r in _rows(out)[1:]}
    assert set(rows) == {"1", "median"}
    assert float(rows["median"][-2]) > 0  # the wall ratio

"""Benchmark: a dry-run ``pollbridge poll`` of a large source against a bare fetch+parse process.

    python benchmarks/bench_cli_poll.py              # 200,000 items, k = 10, 5 rounds
    python benchmarks/bench_cli_poll.py --n 50000 --pairs 3

A local API on 127.0.0.1 (in this script's process) serves N items of ~200 B as one JSON array
(the shape of ``bench_poll.py``). ``pollbridge poll --commit`` takes the baseline into a fresh
SQLite state file; then the API changes k items and the script times, in turn, pairs of whole
processes as a user would start them:

- ``pollbridge poll NAME`` (a dry run: prints the k changes as JSON lines, records nothing);
- the floor: ``python -c`` that GETs the same body with ``urllib.request`` and parses it with
  ``orjson.loads``, Python's GC as it comes (as a plain script runs);
- the same with ``gc.disable()`` first: the no-GC floor (in ``bench_poll.py``'s sense).

Each process is timed from fork to exit: wall time, CPU (user + system of the process and its
children, i.e. the analysis worker too) and peak RSS. The table prints each triple and the
medians; *wall ratio* is pollbridge's wall time over the floor's in the same triple, *no-GC
ratio* over the no-GC floor's.
Run it with bytecode caches (no ``PYTHONDONTWRITEBYTECODE``), or every run recompiles.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common  # noqa: F401 - puts the checkout first on sys.path
import orjson
from _common import ROOT, machine_line, print_table
from bench_poll import make_items, start_api

BARE = (
    "import sys, urllib.request, orjson\n"
    "body = urllib.request.urlopen(sys.argv[1], timeout=600).read()\n"
    "items = orjson.loads(body)\n"
    "print(len(items))\n"
)
"""The floor: the leanest Python process that fetches and parses the body (the standard
library's client, orjson, Python's GC as it comes, as in any plain script)."""

BARE_NO_GC = "import gc; gc.disable()\n" + BARE
"""The same with the garbage collector off (a parse of many objects then takes half the time)."""


class _Current:
    """What the API of ``bench_poll.start_api`` serves here: one body, swapped between phases."""

    body = b"[]"

    def get(self, n: int, k: int, version: int) -> bytes:
        return self.body


def _run(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float, bytes]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} exited {proc.returncode}:\n{err.decode()}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=200_000, help="items in the list")
    parser.add_argument("--k", type=int, default=10, help="items changed after the baseline")
    parser.add_argument("--pairs", type=int, default=5, help="rounds of the three processes")
    args = parser.parse_args()
    print(f"# bench_cli_poll: {machine_line()}", flush=True)
    api = _Current()
    api.body = orjson.dumps(make_items(args.n, 0, 0))
    _, port = start_api(api)  # type: ignore[arg-type]  # it only calls get()
    url = f"http://127.0.0.1:{port}/items/{args.n}"
    changed = orjson.dumps(make_items(args.n, args.k, 1))
    pollbridge = str(Path(sys.executable).with_name("pollbridge"))
    if not Path(pollbridge).exists():
        raise SystemExit(f"no pollbridge command beside {sys.executable}: install the checkout")
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("POLLBRIDGE_CONFIG", None)
    with tempfile.TemporaryDirectory(prefix="pollbridge-bench-") as tmp:
        config = Path(tmp) / "pollbridge.toml"
        config.write_text(
            f"""
[bridge]
state = "{Path(tmp) / "state.db"}"
log_level = "warning"

[[sources]]
name = "bench"
url = "{url}"
every = "1h"
timeout = "600s"
max_bytes = "4GiB"

[[listeners]]
name = "sink"
url = "http://127.0.0.1:9/hook"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
"""
        )
        poll = [pollbridge, "poll", "bench", "--config", str(config)]
        bare = [sys.executable, "-c", BARE, url]
        bare_no_gc = [sys.executable, "-c", BARE_NO_GC, url]
        t = time.perf_counter()
        _run([*poll, "--commit"], env)
        print(
            f"# N={args.n:,} ({len(api.body) / 1e6:.0f} MB): baseline committed in "
            f"{time.perf_counter() - t:.1f}s; k = {args.k}",
            flush=True,
        )
        api.body = changed
        _run(bare, env)  # warm the page cache and bytecode of both before the clock
        lines = _run(poll, env)[3].count(b"\n")
        if lines != args.k:
            raise SystemExit(f"the dry run printed {lines} changes, expected {args.k}")
        rows: list[list[Any]] = []
        for i in range(args.pairs):
            p = _run(poll, env)
            b = _run(bare, env)
            g = _run(bare_no_gc, env)
            rows.append([i + 1, p[0], p[1], p[2], b[0], b[1], g[0], p[0] / b[0], p[0] / g[0]])
        med = [statistics.median(r[c] for r in rows) for c in range(1, 9)]
        rows.append(["median", *med])
        print_table(
            [
                "run",
                "poll: wall s",
                "CPU s",
                "peak MiB",
                "floor: wall s",
                "CPU s",
                "no-GC floor: wall s",
                "wall ratio",
                "no-GC ratio",
            ],
            rows,
        )
        load = " ".join(f"{v:.1f}" for v in os.getloadavg())
        print(f"# load average at the end: {load}; root {ROOT}")


if __name__ == "__main__":
    main()

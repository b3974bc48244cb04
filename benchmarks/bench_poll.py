"""Benchmark 1: one full poll cycle (fetch, parse, extract, hash, diff, persist) against the floor.

    python benchmarks/bench_poll.py                 # N = 1k, 10k, 100k, 1M (the 1M rows take minutes)
    python benchmarks/bench_poll.py --max-n 100000  # skip 1M
    python benchmarks/bench_poll.py --max-n 1000 --quick

For each N a local API on 127.0.0.1 serves N items of ~200 B as one JSON array. A first process
takes the baseline into a fresh SQLite state file; then each (N, k) case runs in its own fresh
process (so peak RSS belongs to that case) holding the snapshot's hashes in memory, as a running
daemon does after its previous poll, and polls once while the API has changed k items.

Each case process builds the daemon's services (bridge/runtime.py), so a response of
``[bridge] analysis_worker_min_bytes`` or more is analysed in a worker process (``--workers 0``:
all in process, as before); the worker is started before the clock, as a daemon's would be.

Columns: where the response was analysed; wall and CPU time of the cycle (the daemon's process)
and the worker's CPU for it; the daemon's RSS before the cycle (with the snapshot's hashes) and
its peak during it (sampled every 10 ms), beside the target 2 x idle + body; the worker's peak
RSS and its ratio to the body; the floor (best of 3 plain ``orjson.loads`` of the same body,
Python's GC as it comes) and cycle/floor; the same floor with the GC disabled and the ratio to
it; the event loop's longest stall during the cycle (a 1 ms ticker task); the bytes the cycle
wrote to the SQLite WAL (writes should follow k, not N).

For N >= 100k one more cycle (k = 10) runs while ``--flow`` webhooks of another source are
being delivered to a receiver in this script: their rate during the 2 s before the cycle and
during the cycle is the second table.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import _common  # noqa: F401 - puts the checkout first on sys.path
import orjson
from _common import machine_line, print_table

NS = (1_000, 10_000, 100_000, 1_000_000)


# -- the API ---------------------------------------------------------------------------------


def make_items(n: int, k: int, version: int) -> list[dict[str, Any]]:
    """N items of ~200 B; version 1 changes k of them, spread evenly."""
    items = [
        {
            "id": f"item-{i:07d}",
            "name": f"Product number {i}",
            "sku": f"SKU-{i * 7919 % 1_000_003:07d}",
            "price": round((i * 37 % 100_000) / 100, 2),
            "currency": "EUR",
            "stock": i % 500,
            "tags": ["alpha", "beta"] if i % 2 else ["gamma"],
            "active": i % 3 != 0,
            "updated_at": "2026-11-23T12:00:00Z",
        }
        for i in range(n)
    ]
    if version == 1 and k:
        step = n // k
        for j in range(k):
            item = items[j * step]
            item["stock"] += 1
            item["updated_at"] = "2026-11-23T12:05:00Z"
    return items


class _Bodies:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cache: dict[tuple[int, int, int], bytes] = {}

    def get(self, n: int, k: int, version: int) -> bytes:
        key = (n, k if version else 0, version)
        with self.lock:
            body = self.cache.get(key)
            if body is None:
                if len(self.cache) > 4:
                    self.cache.clear()
                body = orjson.dumps(make_items(n, k, version))
                self.cache[key] = body
            return body


def start_api(bodies: _Bodies) -> tuple[ThreadingHTTPServer, int]:

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # the webhook receiver of the flow case
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            n = int(self.path.rsplit("/", 1)[1])
            k = int(self.headers.get("x-bench-k") or 0)
            version = int(self.headers.get("x-bench-version") or 0)
            body = bodies.get(n, k, version)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


# -- one case, in a child process ------------------------------------------------------------


def _write_config(
    path: Path, db: Path, port: int, n: int, k: int, version: int, workers: int, flow: int
) -> None:
    sink = f"http://127.0.0.1:{port}/hook" if flow else "http://127.0.0.1:9/hook"
    other = (
        f"""
[[sources]]
name = "other"
url = "http://127.0.0.1:{port}/items/{flow}"
every = "1h"
baseline = "emit"
"""
        if flow
        else ""
    )
    path.write_text(
        f"""
[bridge]
state = "{db}"
log_level = "warning"
analysis_workers = {workers}

[[sources]]
name = "bench"
url = "http://127.0.0.1:{port}/items/{n}"
every = "1h"
timeout = "600s"
max_bytes = "4GiB"
headers = {{ x-bench-version = "{version}", x-bench-k = "{k}" }}
{other}
[[listeners]]
name = "sink"
url = "{sink}"
max_in_flight = 16
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
"""
    )


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def _child(args: argparse.Namespace) -> dict[str, Any]:
    from bridge.config import load_config
    from bridge.runtime import Hooks, Services, utcnow
    from bridge.store import create_store

    db = Path(args.db)
    cfg_path = db.with_suffix(f".{args.k}.toml")
    version = 0 if args.mode == "prep" else 1
    _write_config(cfg_path, db, args.port, args.n, args.k, version, args.workers, args.flow)
    config = load_config(cfg_path, os.environ)
    source = config.source("bench")
    store = create_store(config.state_location)
    await store.open()
    delivered: list[float] = []
    hooks = Hooks(on_delivery=lambda *_: delivered.append(time.monotonic()))
    # the daemon's services: its poll client (aiohttp transport), pipeline and analysis pool
    services = Services(config, store, clock=utcnow, hooks=hooks, deliver=bool(args.flow))
    pipeline = services.pipeline
    client = services.poll_clients.get()
    result: dict[str, Any] = {}
    try:
        if args.mode == "prep":
            outcome = await pipeline.poll(source)
            assert outcome.result == "baseline", outcome
            return {"items": outcome.item_count}
        # A running daemon holds the hashes from its previous poll, its client has made
        # requests before, and its analysis worker has started; so does this process.
        await client.get(f"http://127.0.0.1:{args.port}/items/0")
        await services.analysis.warm()
        t = time.perf_counter()
        await pipeline.recorder.snapshot(source.name)
        load_s = time.perf_counter() - t
        if args.workers and not args.cold_worker:
            # and its worker analysed the previous poll, so it holds the previous hashes: a
            # dry run of the unchanged body (uncounted) leaves this one's worker the same way
            before_path = db.with_suffix(f".{args.k}.before.toml")
            _write_config(before_path, db, args.port, args.n, 0, 0, args.workers, args.flow)
            before = load_config(before_path, os.environ).source("bench")
            warm = await pipeline.poll(before, commit=False)
            assert warm.ok and warm.result == "unchanged", warm
        wal = Path(f"{db}-wal")
        dispatch = None
        if args.flow:
            # another source's webhooks, queued before the cycle and flowing during it
            queued = await pipeline.poll(config.source("other"))
            assert queued.result == "baseline" and queued.events, queued
            assert services.dispatcher is not None
            dispatch = asyncio.create_task(services.dispatcher.run())
            await asyncio.sleep(1.0)  # warmed up
        wal_before = wal.stat().st_size if wal.exists() else 0
        gc.collect()

        loop = asyncio.get_running_loop()
        stall = 0.0
        peak_rss = idle_rss = _rss_mb()
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal stall, peak_rss
            ticks = 0
            while not stop.is_set():
                before = loop.time()
                await asyncio.sleep(0.001)
                stall = max(stall, loop.time() - before - 0.001)
                ticks += 1
                if ticks % 10 == 0:
                    peak_rss = max(peak_rss, _rss_mb())

        tick = asyncio.create_task(ticker())
        if args.flow:
            mark = time.monotonic()
            await asyncio.sleep(2.0)
            result["flow_before_per_s"] = sum(1 for d in delivered if d >= mark) / (
                time.monotonic() - mark
            )
        await asyncio.sleep(0.01)
        stall = 0.0
        idle_rss = peak_rss = _rss_mb()
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        m0 = time.monotonic()
        outcome = await pipeline.poll(source)
        m1 = time.monotonic()
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        stop.set()
        await tick
        if dispatch is not None:
            during = sum(1 for d in delivered if m0 <= d <= m1)
            result["flow_during_per_s"] = during / (m1 - m0)
            result["flow_left"] = len(queued.events) - len(delivered)
            assert services.dispatcher is not None
            await services.dispatcher.stop(1.0)
            await dispatch
        expected = "unchanged" if args.k == 0 else "ok"
        assert outcome.result == expected and len(outcome.changes) == args.k, outcome
        wal_after = wal.stat().st_size if wal.exists() else 0
        apart = bool(services.analysis.last_run)
        worker_cpu = services.analysis.last_run.get("cpu_s", 0.0)
        worker_peak = services.analysis.last_run.get("peak_rss_kib", 0.0) / 1024

        response = await client.get(
            str(source.url), headers=dict(source.headers), timeout=source.timeout.total_seconds()
        )
        body = response.content
        floors = []
        for _ in range(3):
            gc.collect()
            f0 = time.perf_counter()
            orjson.loads(body)
            floors.append(time.perf_counter() - f0)
        bare = []
        gc.disable()
        for _ in range(3):
            gc.collect()
            f0 = time.perf_counter()
            orjson.loads(body)
            bare.append(time.perf_counter() - f0)
        gc.enable()
        result.update(
            {
                "wall_s": wall,
                "cpu_s": (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime),
                "apart": apart,
                "worker_cpu_s": worker_cpu,
                "worker_peak_mb": worker_peak,
                "idle_mb": idle_rss,
                "cycle_peak_mb": peak_rss,
                "body_mb": len(body) / 2**20,
                "floor_s": min(floors),
                "floor_nogc_s": min(bare),
                "stall_ms": stall * 1000,
                "wal_kb": max(0, wal_after - wal_before) / 1024,
                "load_hashes_s": load_s,
            }
        )
        return result
    finally:
        await services.aclose()
        await store.close()


def _run_child(
    mode: str,
    n: int,
    k: int,
    port: int,
    db: Path,
    workers: int,
    flow: int = 0,
    *,
    cold_worker: bool = False,
) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", mode, "--n", str(n), "--k", str(k)]
    cmd += ["--port", str(port), "--db", str(db), "--workers", str(workers)]
    cmd += ["--flow", str(flow)]
    if cold_worker:
        cmd.append("--cold-worker")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"case {mode} N={n} k={k} failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _ks(n: int, quick: bool) -> list[int]:
    ks = [0, 10, max(1, n // 100)]
    if n == 100_000 and not quick:
        ks.insert(2, 100)  # the target case
    return sorted(set(ks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--max-n", type=int, default=NS[-1], help="largest N to run")
    parser.add_argument("--quick", action="store_true", help="k = 0 and 1%% only")
    parser.add_argument("--only-n", type=int, action="append", help="run only this N (repeatable)")
    parser.add_argument(
        "--workers", type=int, default=1, help="[bridge] analysis_workers (0: all in process)"
    )
    parser.add_argument(
        "--flow",
        type=int,
        default=20_000,
        help="for N >= 100k, one more k = 10 cycle while this many webhooks of another source "
        "are being delivered (0: skip)",
    )
    parser.add_argument(
        "--cold-worker",
        action="store_true",
        help="the worker holds no previous hashes (as after a restart): all are sent to it",
    )
    parser.add_argument("--child", choices=["prep", "cycle"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--k", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.mode = args.child
        print(json.dumps(asyncio.run(_child(args))))
        return

    worker = "cold (holds no previous hashes)" if args.cold_worker else "warm"
    print(
        f"# bench_poll: {machine_line()}, analysis_workers = {args.workers}, worker {worker}",
        flush=True,
    )
    bodies = _Bodies()
    server, port = start_api(bodies)
    rows = []
    flows = []
    headers = ["N", "k", "analysed", "body MB", "wall s", "CPU s", "worker CPU s"]
    headers += ["idle RSS MB", "peak RSS MB", "2 idle + body MB", "worker peak MB", "worker/body"]
    headers += ["floor s", "cycle/floor", "no-GC floor s", "cycle/no-GC floor"]
    headers += ["max stall ms", "WAL KB"]
    with tempfile.TemporaryDirectory(prefix="pollbridge-bench-") as tmp:
        for n in args.only_n or [n for n in NS if n <= args.max_n]:
            base = Path(tmp) / f"base-{n}.db"
            t = time.perf_counter()
            _run_child("prep", n, 0, port, base, args.workers)
            print(f"# N={n}: baseline taken in {time.perf_counter() - t:.1f}s", flush=True)
            ks = [k for k in _ks(n, args.quick) if not args.quick or k in (0, max(1, n // 100))]
            cases = [(k, 0) for k in ks]
            if args.flow and n >= 100_000:
                cases.append((10, args.flow))
            for k, flow in cases:
                db = Path(tmp) / f"case-{n}-{k}.db"
                shutil.copyfile(base, db)
                bodies.get(n, k, 1)  # encoded before the clock starts
                if flow:
                    bodies.get(flow, 0, 0)
                r = _run_child(
                    "cycle", n, k, port, db, args.workers, flow, cold_worker=args.cold_worker
                )
                label = "worker" if r["apart"] else "in process"
                if flow:
                    flows.append(
                        [
                            f"{n:,}",
                            k,
                            label,
                            r["wall_s"],
                            r["flow_before_per_s"],
                            r["flow_during_per_s"],
                            r["flow_during_per_s"] / r["flow_before_per_s"],
                            r["stall_ms"],
                            r["cycle_peak_mb"],
                        ]
                    )
                else:
                    worker_peak = r["worker_peak_mb"]
                    rows.append(
                        [
                            f"{n:,}",
                            k,
                            label,
                            r["body_mb"],
                            r["wall_s"],
                            r["cpu_s"],
                            r["worker_cpu_s"] if r["apart"] else "-",
                            r["idle_mb"],
                            r["cycle_peak_mb"],
                            2 * r["idle_mb"] + r["body_mb"],
                            worker_peak if r["apart"] else "-",
                            worker_peak / r["body_mb"] if r["apart"] else "-",
                            r["floor_s"],
                            r["wall_s"] / r["floor_s"],
                            r["floor_nogc_s"],
                            r["wall_s"] / r["floor_nogc_s"],
                            r["stall_ms"],
                            r["wal_kb"],
                        ]
                    )
                print(
                    f"# N={n} k={k}{' with webhooks flowing' if flow else ''}: "
                    f"{r['wall_s']:.3f}s (hashes loaded in {r['load_hashes_s']:.3f}s before)",
                    flush=True,
                )
                db.unlink()
            base.unlink()
    server.shutdown()
    print()
    print_table(headers, rows)
    if flows:
        print()
        print_table(
            [
                "N",
                "k",
                "analysed",
                "cycle s",
                "webhooks/s before",
                "webhooks/s during the cycle",
                "during/before",
                "max stall ms",
                "peak RSS MB",
            ],
            flows,
        )


if __name__ == "__main__":
    main()

"""Benchmark 6: detail fetch. What a list+detail source costs per poll as its list grows.

    python benchmarks/bench_detail.py                 # N = 1,000 and 10,000 entries
    python benchmarks/bench_detail.py --ns 200          # a quick look

A local API in its own process serves ``/orders`` (N summaries ``{id, updated_at}``) and
``/orders/<id>`` (a ~1 KB detail). The real pipeline (SQLite state, the daemon's HTTP stack,
``detail.concurrency = 8``, ``per_host_concurrency = 8``) polls it in this process:

- baseline: the first poll, which fetches every detail (what every poll would cost if the
  list entries' hashes were not remembered beside the items);
- k changed: 1% of the entries changed (their ``updated_at`` and detail);
- unchanged: nothing changed.

Columns: requests made (list + detail), bytes the API sent, wall time and this process's CPU
time (the API's own CPU is not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import _common  # noqa: F401 - puts the checkout first on sys.path
import orjson
from _common import machine_line, print_table, serve_raw, wait_for_port_file

# -- the API (child process) -------------------------------------------------------------------


async def _api(port_file: Path, n: int) -> None:
    versions = [0] * n
    stats = {"list": 0, "detail": 0, "bytes": 0}

    def reply(payload: bytes) -> bytes:
        return (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(payload)).encode()
            + b"\r\n\r\n"
            + payload
        )

    def respond(request_line: bytes, headers: bytes, body: bytes) -> bytes:
        path = request_line.split(b" ")[1].decode()
        if path.startswith("/change"):
            k = int(path.split("=", 1)[1])
            for i in range(0, n, max(1, n // k))[:k]:
                versions[i] += 1
            return reply(b"{}")
        if path == "/stats":
            return reply(orjson.dumps(stats))
        if path == "/orders":
            summaries = [
                {"id": i, "updated_at": f"2026-12-01T00:00:{v:02d}Z"}
                for i, v in enumerate(versions)
            ]
            out = reply(orjson.dumps({"orders": summaries}))
            stats["list"] += 1
        else:
            i = int(path.rsplit("/", 1)[1])
            detail = {
                "id": i,
                "version": versions[i],
                "customer": {"name": f"Customer {i}", "email": f"c{i}@example.com"},
                "lines": [{"sku": f"SKU-{i}-{j}", "qty": j + 1, "price": 9.5} for j in range(8)],
                "note": "x" * 300,
            }
            out = reply(orjson.dumps({"order": detail}))
            stats["detail"] += 1
        stats["bytes"] += len(out)
        return out

    server = await serve_raw(respond)
    port_file.write_text(str(server.sockets[0].getsockname()[1]))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=60) as r:  # noqa: S310 - 127.0.0.1
        return json.loads(r.read())


# -- the polling side (this process) -----------------------------------------------------------


async def _bench(n: int, tmp: Path) -> list[list[Any]]:
    import httpx

    from bridge.config import load_config
    from bridge.http.poller import HostLimiter, Poller
    from bridge.pipeline import Pipeline
    from bridge.store.sqlite import SQLiteStore

    port_file = tmp / f"api-{n}.port"
    proc = subprocess.Popen([sys.executable, __file__, "--api", str(port_file), str(n)])
    try:
        base = f"http://127.0.0.1:{wait_for_port_file(port_file)}"
        path = tmp / f"bench-{n}.toml"
        path.write_text(
            f'[bridge]\nstate = "{tmp}/state-{n}.db"\nlog_level = "warning"\n'
            "per_host_concurrency = 8\n"
            f'[[sources]]\nname = "orders"\nurl = "{base}/orders"\nevery = "1m"\n'
            'items = "$.orders[*]"\nmax_bytes = "256MiB"\ntimeout = "60s"\n'
            f'[sources.detail]\nurl = "{base}/orders/{{id}}"\nitems = "$.order"\n'
            "concurrency = 8\n"
        )
        config = load_config(path, {})
        store = SQLiteStore(config.state_location)
        await store.open()
        rows: list[list[Any]] = []
        try:
            async with httpx.AsyncClient() as client:
                poller = Poller(client, HostLimiter(8))
                pipeline = Pipeline(config, store, poller, clock=lambda: _now())
                k = max(1, n // 100)
                for label, change in (("baseline", 0), (f"{k} changed", k), ("unchanged", 0)):
                    if change:
                        _get(f"{base}/change?k={change}")
                    before = _get(f"{base}/stats")
                    r0 = resource.getrusage(resource.RUSAGE_SELF)
                    t0 = time.perf_counter()
                    outcome = await pipeline.poll(config.sources[0])
                    wall = time.perf_counter() - t0
                    r1 = resource.getrusage(resource.RUSAGE_SELF)
                    after = _get(f"{base}/stats")
                    if not outcome.ok:
                        raise SystemExit(outcome.error)
                    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
                    rows.append(
                        [
                            n,
                            label,
                            after["list"] - before["list"],
                            after["detail"] - before["detail"],
                            f"{(after['bytes'] - before['bytes']) / 1e6:.2f} MB",
                            len(outcome.changes),
                            wall,
                            cpu,
                        ]
                    )
                    print(f"# {n} {label}: {outcome.detail_fetches} details", flush=True)
        finally:
            await store.close()
    finally:
        proc.terminate()
        proc.wait(10)
    return rows


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


async def _main(args: argparse.Namespace) -> None:
    print(f"# bench_detail: {machine_line()}", flush=True)
    rows: list[list[Any]] = []
    with tempfile.TemporaryDirectory(prefix="pollbridge-bench-") as name:
        for n in args.ns:
            rows += await _bench(n, Path(name))
    print_table(
        [
            "N entries",
            "poll",
            "list requests",
            "detail requests",
            "received",
            "changes",
            "wall s",
            "CPU s",
        ],
        rows,
    )


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--api":
        asyncio.run(_api(Path(sys.argv[2]), int(sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--ns", type=int, nargs="+", default=[1_000, 10_000])
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()

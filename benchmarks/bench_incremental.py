"""Benchmark: an incremental poll against a full-list poll of the same large source.

    python benchmarks/bench_incremental.py                     # 1,000,000 items, 100 changes
    python benchmarks/bench_incremental.py --items 2000 --changes 10 --rounds 1   # quick

A local API in its own process (so its CPU is not counted) serves N items of ~200 B, 10,000
a page (``next_url`` pagination), and answers ``?updated_since=`` with only the items whose
``updated_at`` is at or after it. Each interval it changes K items (spread over the list).

One bridge process holds two sources over that API, as a running daemon would: ``full``
(``mode = "snapshot"``: every page, diffed against the snapshot) and ``incr`` (``mode =
"incremental"``: the window since its cursor). Both take their baseline first (not measured:
each reads the complete list once). Then for each round the API changes K items and each
source is polled once, measured: requests and response bytes (counted by the API), the bridge
process's CPU (user + system, every thread), and wall time. Both must report the same K
changes.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import _common  # noqa: F401 - puts the checkout first on sys.path
import orjson
from _common import machine_line, print_table, serve_raw, wait_for_port_file

BASE = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PER_PAGE = 10_000


# -- the API (a child process) -------------------------------------------------------------------


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class _API:
    def __init__(self, n: int, k: int) -> None:
        self.k = k
        self.generation = 0
        self.items = [
            {
                "id": f"item-{i:07d}",
                "name": f"Product number {i}",
                "sku": f"SKU-{i * 7919 % 1_000_003:07d}",
                "price": round((i * 37 % 100_000) / 100, 2),
                "currency": "EUR",
                "stock": i % 500,
                "tags": ["alpha", "beta"] if i % 2 else ["gamma"],
                "active": i % 3 != 0,
                # item i last changed n - i seconds before BASE: one item per second
                "updated_at": _stamp(BASE - timedelta(seconds=n - i)),
            }
            for i in range(n)
        ]
        self.changed: dict[int, str] = {}
        """Index -> updated_at of every item changed since the start."""
        self.requests = 0
        self.bytes = 0

    def advance(self) -> None:
        """One interval: K items change, their updated_at one minute later than the last."""
        self.generation += 1
        stamp = _stamp(BASE + timedelta(minutes=self.generation))
        step = max(1, len(self.items) // self.k)
        offset = self.generation % step
        for j in range(self.k):
            index = (j * step + offset) % len(self.items)
            item = self.items[index]
            item["stock"] += 1
            item["updated_at"] = stamp
            self.changed[index] = stamp

    def listing(self, query: dict[str, list[str]], base: str) -> bytes:
        page = int(query.get("page", ["1"])[0])
        since = query.get("updated_since", [None])[0]
        if since is None:
            rows: list[Any] = self.items
        else:
            # ISO 8601 texts of one shape sort as their times do; the unchanged items with an
            # updated_at at or after ``since`` are a tail of the list
            bound = datetime.fromisoformat(since)
            first = len(self.items) - int((BASE - bound).total_seconds())
            tail = range(max(0, first), len(self.items))
            hits = [(self.items[i]["updated_at"], i) for i in tail if i not in self.changed]
            hits += [(t, i) for i, t in self.changed.items() if t >= since]
            rows = [self.items[i] for _, i in sorted(hits)]
        chunk = rows[(page - 1) * PER_PAGE : page * PER_PAGE]
        more = page * PER_PAGE < len(rows)
        nxt = None
        if more:
            nxt = f"{base}?page={page + 1}" + (f"&updated_since={since}" if since else "")
        return orjson.dumps({"items": chunk, "next": nxt})

    def respond(self, request_line: bytes, headers: bytes, body: bytes) -> bytes:
        method, target, _ = request_line.decode().split(" ", 2)
        parts = urlsplit(target)
        if method == "POST" and parts.path == "/advance":
            self.advance()
            payload = b"{}"
        elif parts.path == "/stats":
            payload = orjson.dumps({"requests": self.requests, "bytes": self.bytes})
        else:
            port = os.environ.get("BENCH_PORT", "0")
            payload = self.listing(parse_qs(parts.query), f"http://127.0.0.1:{port}/items")
            self.requests += 1
            self.bytes += len(payload)
        head = (
            f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\n\r\n"
        ).encode()
        return head + payload


async def _serve(port_file: Path, n: int, k: int) -> None:
    api = _API(n, k)
    server = await serve_raw(api.respond)
    port = server.sockets[0].getsockname()[1]
    os.environ["BENCH_PORT"] = str(port)
    port_file.write_text(str(port))
    await asyncio.Event().wait()


# -- the bridge ----------------------------------------------------------------------------------


def _config(path: Path, port: int, n: int) -> None:
    url = f"http://127.0.0.1:{port}/items"
    pages = n // PER_PAGE + 2
    common = f"""every = "1m"
items = "$.items[*]"
max_bytes = "1GiB"
timeout = "120s"
paginate = {{ kind = "next_url", next = "$.next", max_pages = {pages} }}
"""
    path.write_text(
        f"""[bridge]
state = "{path.parent / "state.db"}"

[[sources]]
name = "full"
url = "{url}"
{common}
[[sources]]
name = "incr"
url = "{url}"
mode = "incremental"
{common}
[sources.incremental]
cursor = "$.updated_at"
param = "updated_since"
lookback = "0s"
"""
    )


async def _stats(client: Any, port: int) -> dict[str, int]:
    response = await client.get(f"http://127.0.0.1:{port}/stats")
    stats: dict[str, int] = response.json()
    return stats


async def _bridge(port: int, n: int, k: int, rounds: int, workdir: Path) -> list[dict[str, Any]]:
    import httpx

    from bridge.config import load_config
    from bridge.daemon import utcnow
    from bridge.http.connections import ClientPool
    from bridge.http.poller import Poller
    from bridge.pipeline import Pipeline
    from bridge.store import create_store

    cfg = workdir / "pollbridge.toml"
    _config(cfg, port, n)
    config = load_config(cfg, os.environ)
    store = create_store(config.state_location)
    await store.open()
    clients = ClientPool(httpx.Limits(max_connections=100, max_keepalive_connections=20))
    client = clients.get()
    pipeline = Pipeline(config, store, Poller(client), clock=utcnow)
    results: list[dict[str, Any]] = []
    try:
        for name in ("full", "incr"):
            outcome = await pipeline.poll(config.source(name))
            assert outcome.result == "baseline" and outcome.item_count == n, outcome
        for _ in range(rounds):
            await client.post(f"http://127.0.0.1:{port}/advance")
            for name in ("full", "incr"):
                gc.collect()
                before = await _stats(client, port)
                r0 = resource.getrusage(resource.RUSAGE_SELF)
                t0 = time.perf_counter()
                outcome = await pipeline.poll(config.source(name))
                wall = time.perf_counter() - t0
                r1 = resource.getrusage(resource.RUSAGE_SELF)
                after = await _stats(client, port)
                assert outcome.ok and len(outcome.changes) == k, (name, outcome.error)
                results.append(
                    {
                        "source": name,
                        "requests": after["requests"] - before["requests"],
                        "bytes": after["bytes"] - before["bytes"],
                        "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
                        "wall_s": wall,
                        "changes": len(outcome.changes),
                    }
                )
    finally:
        await clients.aclose()
        await store.close()
    return results


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(Path(args.serve), args.items, args.changes))
        return
    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="bench-incremental-") as tmp:
        port_file = Path(tmp) / "port"
        command = [sys.executable, __file__, "--serve", str(port_file)]
        server = subprocess.Popen(
            [*command, "--items", str(args.items), "--changes", str(args.changes)]
        )
        try:
            port = wait_for_port_file(port_file, timeout_s=600)
            results = asyncio.run(_bridge(port, args.items, args.changes, args.rounds, Path(tmp)))
        finally:
            server.kill()
            server.wait()
    print(
        f"\n{args.items:,} items, {args.changes} changed per interval, {PER_PAGE:,} per page; "
        f"median of {args.rounds} round(s)\n"
    )
    rows = []
    med: dict[str, dict[str, float]] = {}
    for name, label in (("full", "full list (snapshot)"), ("incr", "incremental window")):
        mine = [r for r in results if r["source"] == name]
        med[name] = {
            f: _median([r[f] for r in mine]) for f in ("requests", "bytes", "cpu_s", "wall_s")
        }
        m = med[name]
        rows.append(
            [
                label,
                int(m["requests"]),
                f"{int(m['bytes']):,}",
                m["cpu_s"],
                m["wall_s"],
                mine[0]["changes"],
            ]
        )
    full, incr = med["full"], med["incr"]

    def ratio(field: str) -> str:
        return f"{full[field] / incr[field]:,.0f}x" if incr[field] > 0 else "n/a"

    rows.append(
        [
            "full / incremental",
            ratio("requests"),
            ratio("bytes"),
            ratio("cpu_s"),
            ratio("wall_s"),
            "",
        ]
    )
    print_table(["poll", "requests", "bytes", "CPU s", "wall s", "changes"], rows)
    print(json.dumps({"full": full, "incremental": incr}))


if __name__ == "__main__":
    main()

"""Benchmark 3: many small sources. The daemon's CPU and memory, busy and idle.

    python benchmarks/bench_sources.py                 # 1,000 sources every 10 s, 60 s measured
    python benchmarks/bench_sources.py --seconds 20 --idle-seconds 5 --sources 200

A local API on 127.0.0.1 serves each source a list of 20 items with an ETag. It answers
``304 Not Modified`` when the request's ``If-None-Match`` matches, otherwise 200 with the body;
a source's data changes on 2% of its polls, so most polls find nothing new (the events go to a
raw local receiver). The real daemon (``python -m bridge run``) runs as a subprocess; its CPU
time and RSS come from /proc. The table says how many polls were answered 304 and how many 200
with an unchanged body: a daemon that sends no conditional requests gets only the latter.

Idle: the same 1,000 sources on a cron schedule that is not due (1 January, 00:00), so the
daemon has nothing to do; its CPU is measured the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401 - puts the checkout first on sys.path
import orjson
from _common import (
    ROOT,
    header_value,
    machine_line,
    print_table,
    proc_cpu_s,
    proc_rss_mb,
    serve_raw,
)


class API:
    """Per source: a version, its body and ETag; counts how each request was answered."""

    def __init__(self, change_rate: float, seed: int = 7):
        self.rng = random.Random(seed)
        self.change_rate = change_rate
        self.versions: dict[bytes, int] = {}
        self.counts = {"304": 0, "200 unchanged": 0, "200 changed": 0, "webhooks": 0}

    def body(self, name: bytes, version: int) -> bytes:
        items = [
            {"id": f"{name.decode()}-{i}", "name": f"Item {i}", "v": version if i == 0 else 0}
            for i in range(20)
        ]
        return orjson.dumps(items)

    def respond(self, request_line: bytes, headers: bytes, body: bytes) -> bytes:
        if request_line.startswith(b"POST"):
            self.counts["webhooks"] += 1
            return b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n"
        name = request_line.split(b" ")[1].rsplit(b"/", 1)[1]
        version = self.versions.get(name)
        changed = version is None or self.rng.random() < self.change_rate
        if changed:
            version = (version or 0) + 1
            self.versions[name] = version
        assert version is not None
        etag = b'"v%d"' % version
        if not changed and header_value(headers, b"if-none-match") == etag:
            self.counts["304"] += 1
            return b"HTTP/1.1 304 Not Modified\r\netag: " + etag + b"\r\ncontent-length: 0\r\n\r\n"
        self.counts["200 changed" if changed else "200 unchanged"] += 1
        data = self.body(name, version)
        return (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\netag: "
            + etag
            + b"\r\ncontent-length: "
            + str(len(data)).encode()
            + b"\r\n\r\n"
            + data
        )


def write_config(path: Path, port: int, sources: int, schedule: str) -> None:
    # every source is on one local host: allow the pool's worth of requests to it at once
    lines = [
        f'[bridge]\nstate = "{path.parent}/state.db"\nlog_level = "warning"\n'
        "per_host_concurrency = 100\n"
    ]
    for i in range(sources):
        lines.append(
            f'[[sources]]\nname = "s{i:04d}"\nurl = "http://127.0.0.1:{port}/items/s{i:04d}"\n'
            f"{schedule}\n"
        )
    lines.append(f'[[listeners]]\nname = "sink"\nurl = "http://127.0.0.1:{port}/hook"\n')
    lines.append('secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"\n')
    path.write_text("".join(lines))


def start_daemon(config: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLLBRIDGE_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    log = (config.parent / "daemon.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "bridge", "run", "--config", str(config)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def stop_daemon(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


async def measure(proc: subprocess.Popen[bytes], seconds: float) -> tuple[float, float, float]:
    """(CPU % of one core, RSS MiB at the end, peak RSS MiB) over ``seconds``."""
    cpu0, t0 = proc_cpu_s(proc.pid), time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, t1 = proc_cpu_s(proc.pid), time.monotonic()
    rss, peak = proc_rss_mb(proc.pid)
    return 100 * (cpu1 - cpu0) / (t1 - t0), rss, peak


async def _main(args: argparse.Namespace) -> None:
    print(f"# bench_sources: {machine_line()}", flush=True)
    api = API(args.change_rate)
    server = await serve_raw(api.respond)
    port = server.sockets[0].getsockname()[1]
    rows = []
    with tempfile.TemporaryDirectory(prefix="pollbridge-bench-") as name:
        busy_dir = Path(name) / "busy"
        busy_dir.mkdir()
        config = busy_dir / "pollbridge.toml"
        write_config(config, port, args.sources, f'every = "{args.every}s"')
        proc = start_daemon(config)
        try:
            # the first round takes every baseline; measure from the second round on
            await asyncio.sleep(args.every + 5)
            if proc.poll() is not None:
                raise SystemExit((busy_dir / "daemon.log").read_text())
            before = dict(api.counts)
            cpu, rss, peak = await measure(proc, args.seconds)
            counts = {k: api.counts[k] - before[k] for k in api.counts}
        finally:
            stop_daemon(proc)
        polls = counts["304"] + counts["200 unchanged"] + counts["200 changed"]
        rows.append(
            [
                f"{args.sources} every {args.every}s",
                args.seconds,
                polls,
                polls / args.seconds,
                counts["304"],
                counts["200 unchanged"],
                counts["200 changed"],
                counts["webhooks"],
                cpu,
                rss,
                peak,
            ]
        )
        print(f"# busy: {cpu:.1f}% CPU, {polls} polls", flush=True)

        idle_dir = Path(name) / "idle"
        idle_dir.mkdir()
        config = idle_dir / "pollbridge.toml"
        write_config(config, port, args.sources, 'cron = "0 0 1 1 *"')
        proc = start_daemon(config)
        try:
            await asyncio.sleep(5)
            if proc.poll() is not None:
                raise SystemExit((idle_dir / "daemon.log").read_text())
            before = dict(api.counts)
            cpu, rss, peak = await measure(proc, args.idle_seconds)
            polls = sum(api.counts[k] - before[k] for k in ("304", "200 unchanged", "200 changed"))
        finally:
            stop_daemon(proc)
        rows.append(
            [
                f"{args.sources} idle (cron not due)",
                args.idle_seconds,
                polls,
                polls / args.idle_seconds,
                "-",
                "-",
                "-",
                "-",
                cpu,
                rss,
                peak,
            ]
        )
    server.close()
    print()
    print_table(
        [
            "daemon",
            "seconds",
            "polls",
            "polls/s",
            "304",
            "200 unchanged",
            "200 changed",
            "webhooks",
            "CPU % of a core",
            "RSS MB",
            "peak RSS MB",
        ],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sources", type=int, default=1000)
    parser.add_argument("--every", type=int, default=10, help="poll interval, seconds")
    parser.add_argument("--seconds", type=float, default=60.0, help="busy measurement window")
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="idle measurement window")
    parser.add_argument(
        "--change-rate", type=float, default=0.02, help="share of polls that change"
    )
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()

"""Delivery throughput of 1, 2 and 3 ``pollbridge run`` instances sharing one PostgreSQL.

    POLLBRIDGE_TEST_PG=postgresql://postgres@127.0.0.1:5432/test python benchmarks/bench_scaleout.py

For each instance count: a fresh schema gets N queued deliveries (distinct keys, one listener),
N instances start with those deliveries not yet due, then all are made due at once (with a NOTIFY)
and the clock runs until the last one is recorded as delivered. The receiver is a separate process
answering 204, after ``--latency-ms`` to mimic a real endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bridge.core.extract import key_text  # noqa: E402
from bridge.core.hashing import hash_value  # noqa: E402
from bridge.models import Change  # noqa: E402
from bridge.store import PollCommit  # noqa: E402
from bridge.store.postgres import PostgresStore  # noqa: E402
from tests.support.pg import schema_url  # noqa: E402


def _receiver(port_queue: multiprocessing.Queue, latency_s: float) -> None:  # type: ignore[type-arg]
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                if latency_s:
                    await asyncio.sleep(latency_s)
                writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        port_queue.put(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


async def _queue_deliveries(url: str, count: int) -> None:
    store = PostgresStore(url)
    await store.open()
    try:
        now = datetime.now(UTC)
        for start in range(0, count, 1000):
            changes = []
            for i in range(start, min(count, start + 1000)):
                value = {"id": str(i), "v": 1}
                changes.append(
                    Change("created", str(i), key_text(str(i)), None, value, [], hash_value(value))
                )
            await store.commit_poll(
                PollCommit(
                    source="bench",
                    polled_at=now,
                    duration_s=0,
                    upserts=[],
                    deletes=[],
                    changes=changes,
                    routes=[["hooks"]] * len(changes),
                    item_count=0,
                    fingerprint="bench",
                )
            )
    finally:
        await store.close()


def _run(dsn: str, instances: int, count: int, port: int, in_flight: int) -> float:
    schema = f"pb_bench_{uuid.uuid4().hex[:8]}"
    url = schema_url(dsn, schema)
    tmp = Path(tempfile.mkdtemp(prefix="pb-bench-"))
    config = tmp / "pollbridge.toml"
    config.write_text(
        f"""
[bridge]
state = "{url}"
log_level = "warning"

# a source is required; this one is never reached (port 9) and polls once an hour
[[sources]]
name = "idle"
url = "http://127.0.0.1:9/items"
every = "1h"

[[listeners]]
name = "hooks"
url = "http://127.0.0.1:{port}/hooks"
max_in_flight = {in_flight}
"""
    )
    asyncio.run(_queue_deliveries(url, count))
    conn = psycopg.connect(url, autocommit=True)
    conn.execute("UPDATE deliveries SET next_at = 1e12")  # not due until every instance is up
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLLBRIDGE_")}
    env["PYTHONPATH"] = str(ROOT)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bridge", "run", "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(tmp / f"instance-{i}.log").open("w"),
        )
        for i in range(instances)
    ]
    try:
        while conn.execute("SELECT count(*) FROM instances").fetchone() != (instances,):
            for i, p in enumerate(procs):
                if p.poll() is not None:  # it will never join: say why instead of waiting
                    log = (tmp / f"instance-{i}.log").read_text().strip()
                    raise SystemExit(f"instance {i} exited with {p.returncode}: {log}")
            time.sleep(0.05)
        time.sleep(1.0)  # dispatchers and LISTEN connections up
        started = time.perf_counter()
        conn.execute("UPDATE deliveries SET next_at = extract(epoch FROM now())")
        conn.execute(sql.SQL("NOTIFY {}").format(sql.Identifier(f"pollbridge_{schema}")))
        while conn.execute(
            "SELECT count(*) FROM deliveries WHERE state = 'pending'"
        ).fetchone() != (0,):
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        delivered = conn.execute(
            "SELECT count(*) FROM deliveries WHERE state = 'delivered'"
        ).fetchone()
        assert delivered == (count,), delivered
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        conn.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=3000)
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 200.0])
    parser.add_argument("--in-flight", type=int, default=16, help="max_in_flight per instance")
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    dsn = os.environ.get("POLLBRIDGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
    print(
        f"{args.deliveries} deliveries, max_in_flight {args.in_flight} per instance, "
        f"{os.cpu_count()} CPU(s) (load average {os.getloadavg()[0]:.1f}), "
        f"PostgreSQL at {dsn.split('@')[-1]}"
    )
    for latency_ms in args.latency_ms:
        ports: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
        receiver = multiprocessing.Process(
            target=_receiver, args=(ports, latency_ms / 1000), daemon=True
        )
        receiver.start()
        port = ports.get(timeout=10)
        try:
            base = None
            for n in args.instances:
                elapsed = _run(dsn, n, args.deliveries, port, args.in_flight)
                rate = args.deliveries / elapsed
                base = base or rate
                print(
                    f"receiver latency {latency_ms:>4.0f} ms  instances {n}: "
                    f"{rate:7.0f} deliveries/s  ({elapsed:.2f}s, x{rate / base:.2f})",
                    flush=True,
                )
        finally:
            receiver.terminate()


if __name__ == "__main__":
    main()

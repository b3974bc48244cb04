"""Benchmark 2: signed webhook delivery from the durable queue to a fast local receiver.

    python benchmarks/bench_delivery.py                      # 10,000 events; 1 then 4 listeners
    python benchmarks/bench_delivery.py --events 1000 --seconds 3 --quick

Throughput: E events are committed to a fresh SQLite state file, each routed to every listener,
then the dispatcher (built as the daemon builds it: one shared client, ``max_in_flight`` per
listener, an attempt recorded per delivery) sends them all. The rate counts signed webhooks that
reached the receiver per second, from the dispatcher's start to the last arrival.

Latency: with the dispatcher running, one event is committed every 5 ms (200 events/s) for
``--seconds``, waking the dispatcher as the pipeline does after a commit; the latency is from the
commit's return to the webhook's arrival at the receiver (one monotonic clock, two processes).

The floor, in the same run and against the same receiver: a bare aiohttp client sending the
same bodies, each signed as pollbridge signs it (Standard Webhooks), 16 in flight, no queue,
measured just before each row (the machine's speed drifts within a run); *of floor* is the
row's rate over that floor. Both rates run from the start to the last webhook's arrival.
The ``deny_private_targets`` row runs the same dispatcher with the address check on (the
receiver's loopback address is let through by the benchmark, after the check has run).

The receiver runs in its own process: a raw asyncio HTTP server answering 204, much cheaper
than the sender, so the sender is what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _common  # noqa: F401 - puts the checkout first on sys.path
import orjson
from _common import (
    header_value,
    machine_line,
    percentile,
    print_table,
    proc_cpu_s,
    serve_raw,
    wait_for_port_file,
)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # noqa: S105 - a fixed test key

# -- the receiver (child process) --------------------------------------------------------------


async def _receiver(port_file: Path) -> None:
    arrivals: list[tuple[bytes, float]] = []
    now = time.monotonic
    no_content = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n"

    def respond(request_line: bytes, headers: bytes, body: bytes) -> bytes:
        if request_line.startswith(b"POST"):
            arrivals.append((header_value(headers, b"webhook-id") or b"", now()))
            return no_content
        if b"/reset" in request_line:
            arrivals.clear()
            return no_content
        payload = orjson.dumps(
            {"count": len(arrivals), "arrivals": [(i.decode(), t) for i, t in arrivals]}
            if b"/arrivals" in request_line
            else {"count": len(arrivals), "last": arrivals[-1][1] if arrivals else None}
        )
        return (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(payload)).encode()
            + b"\r\n\r\n"
            + payload
        )

    server = await serve_raw(respond)
    port_file.write_text(str(server.sockets[0].getsockname()[1]))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


class Receiver:
    def __init__(self, tmp: Path):
        port_file = tmp / "receiver.port"
        cmd = [sys.executable, __file__, "--receiver", str(port_file)]
        self.proc = subprocess.Popen(cmd)
        self.port = wait_for_port_file(port_file)
        self.url = f"http://127.0.0.1:{self.port}"

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as r:  # noqa: S310 - 127.0.0.1
            return json.loads(r.read())

    def count(self) -> int:
        return int(self._get("/stats")["count"])

    def last_arrival(self) -> float | None:
        """The monotonic time (this machine's one clock) the last webhook arrived at."""
        last = self._get("/stats")["last"]
        return None if last is None else float(last)

    def arrivals(self) -> dict[str, float]:
        return dict(self._get("/arrivals")["arrivals"])

    def reset(self) -> None:
        with urllib.request.urlopen(self.url + "/reset", timeout=30) as r:  # noqa: S310
            r.read()

    def cpu_s(self) -> float:
        return proc_cpu_s(self.proc.pid)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# -- the sending side (this process) -----------------------------------------------------------


def _config(
    tmp: Path, receiver_url: str, listeners: int, in_flight: int | None, deny: bool = False
) -> Any:
    from bridge.config import load_config

    path = tmp / f"bench-{listeners}.toml"
    text = f'[bridge]\nstate = "{tmp}/state-{time.monotonic_ns()}.db"\nlog_level = "warning"\n'
    if deny:
        text += "deny_private_targets = true\n"
    text += '[[sources]]\nname = "bench"\nurl = "http://127.0.0.1:9/items"\nevery = "1h"\n'
    for i in range(listeners):
        text += f'[[listeners]]\nname = "hook{i}"\nurl = "{receiver_url}/hook/{i}"\n'
        text += f'secret = "{SECRET}"\n'
        if in_flight is not None:
            text += f"max_in_flight = {in_flight}\n"
    path.write_text(text)
    return load_config(path, os.environ)


def _changes(start: int, count: int) -> list[Any]:
    from bridge.core.hashing import hash_value
    from bridge.core.patch import make_patch
    from bridge.models import Change

    out = []
    for i in range(start, start + count):
        key = f"item-{i:07d}"
        after = {
            "id": key,
            "name": f"Product number {i}",
            "price": round(i * 0.37 % 1000, 2),
            "currency": "EUR",
            "stock": i % 500,
            "tags": ["alpha", "beta"],
            "updated_at": "2026-11-23T12:00:00Z",
        }
        out.append(
            Change("created", key, key, None, after, make_patch(None, after), hash_value(after))
        )
    return out


def _commit(config: Any, changes: list[Any]) -> Any:
    from bridge.store import PollCommit

    routes = [[lst.name for lst in config.listeners] for _ in changes]
    return PollCommit(
        source="bench",
        polled_at=datetime.now(UTC),
        duration_s=0.0,
        upserts=[],
        deletes=[],
        changes=changes,
        routes=routes,
        item_count=0,
        fingerprint="bench",
        result="ok",
    )


def _sender_clients(config: Any) -> Any:
    """The listener clients as the daemon builds them (a ClientPool; close it with aclose)."""
    import httpx

    from bridge.http.connections import ClientPool

    in_flight = sum(lst.max_in_flight for lst in config.listeners) or 1
    return ClientPool(
        httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight),
        deny_private_targets=config.bridge.deny_private_targets,
    )


def _let_loopback_through() -> None:
    """deny_private_targets against a local receiver: the check runs, loopback then passes."""
    from bridge.http import connections

    checked = connections.refused_address

    def refused(ip: Any) -> str | None:
        why = checked(ip)
        return None if ip.is_loopback else why

    connections.refused_address = refused  # type: ignore[assignment]


async def _floor(receiver: Receiver, events: int, in_flight: int = 16) -> dict[str, Any]:
    """A bare aiohttp client: the same signed bodies, ``in_flight`` at a time, no queue."""
    import aiohttp

    from bridge.core.payload import build_payload
    from bridge.core.signing import decode_secret, signature_header
    from bridge.models import Event

    key = decode_secret(SECRET)
    now = datetime.now(UTC)
    bodies = [
        (
            f"evt_{i:020d}",
            build_payload(
                Event(f"evt_{i:020d}", i, "bench", c.key, "created", now, None, c.after, c.changes)
            ),
        )
        for i, c in enumerate(_changes(0, events))
    ]
    url = f"{receiver.url}/hook/0"
    receiver.reset()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=in_flight)) as session:
        queue = iter(bodies)

        async def worker() -> None:
            for event_id, body in queue:
                ts = int(time.time())
                headers = {
                    "content-type": "application/json",
                    "webhook-id": event_id,
                    "webhook-timestamp": str(ts),
                    "webhook-signature": signature_header([key], event_id, ts, body),
                }
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()

        await asyncio.gather(*(worker() for _ in range(in_flight)))
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    elapsed = _until_last_arrival(receiver, t0)
    arrived = receiver.count()
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    return {
        "listeners": "floor",
        "webhooks": arrived,
        "pending": 0,
        "seconds": elapsed,
        "rate": arrived / elapsed,
        "cpu_s": cpu,
        "cpu_ms_per": cpu * 1000 / max(1, arrived),
        "receiver_cpu_s": 0.0,
    }


def _until_last_arrival(receiver: Receiver, t0: float) -> float:
    """Seconds from ``t0`` to the last webhook's arrival at the receiver, not to when the
    sender noticed the end (its last record, or the floor's last answer)."""
    last = receiver.last_arrival()
    return (last if last is not None else time.monotonic()) - t0


async def _throughput(
    tmp: Path,
    receiver: Receiver,
    listeners: int,
    events: int,
    in_flight: int | None,
    deny: bool = False,
) -> dict[str, Any]:
    from bridge.dispatcher import Dispatcher
    from bridge.http.sender import Sender
    from bridge.store import create_store

    config = _config(tmp, receiver.url, listeners, in_flight, deny)
    store = create_store(config.state_location)
    await store.open()
    for start in range(0, events, 5000):
        await store.commit_poll(_commit(config, _changes(start, min(5000, events - start))))
    total = events * listeners
    receiver.reset()
    clients = _sender_clients(config)
    recorded = 0
    all_recorded = asyncio.Event()

    def on_result(*_: Any) -> None:
        # the end is seen from the attempts recorded, not by asking the store how many are
        # pending: that query runs on the store's thread, ahead of claims, ~1 ms each
        nonlocal recorded
        recorded += 1
        if recorded >= total:
            all_recorded.set()

    dispatcher = Dispatcher(
        store,
        Sender(clients.get(), clients.for_endpoints(config.listeners, "listener")),
        list(config.listeners),
        on_result=on_result,
    )
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    rc0 = receiver.cpu_s()
    t0 = time.monotonic()
    task = asyncio.create_task(dispatcher.run())
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(120.0, total / 50)):
            await all_recorded.wait()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    elapsed = _until_last_arrival(receiver, t0)
    arrived = receiver.count()
    rc1 = receiver.cpu_s()
    await dispatcher.stop(5)
    await task
    await clients.aclose()
    pending = await store.pending_count()
    await store.close()
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    return {
        "listeners": f"{listeners}, deny_private_targets" if deny else listeners,
        "webhooks": arrived,
        "pending": pending,
        "seconds": elapsed,
        "rate": arrived / elapsed,
        "cpu_s": cpu,
        "cpu_ms_per": cpu * 1000 / max(1, arrived),
        "receiver_cpu_s": rc1 - rc0,
    }


async def _latency(tmp: Path, receiver: Receiver, seconds: float, rate: float) -> dict[str, Any]:
    from bridge.dispatcher import Dispatcher
    from bridge.http.sender import Sender
    from bridge.store import create_store

    config = _config(tmp, receiver.url, 1, None)
    store = create_store(config.state_location)
    await store.open()
    receiver.reset()
    clients = _sender_clients(config)
    dispatcher = Dispatcher(
        store,
        Sender(clients.get(), clients.for_endpoints(config.listeners, "listener")),
        list(config.listeners),
    )
    task = asyncio.create_task(dispatcher.run())
    committed: dict[str, float] = {}
    interval = 1 / rate
    count = int(seconds * rate)
    start = time.monotonic()
    for i in range(count):
        # a fixed schedule: a late commit does not push the later ones back
        delay = start + i * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        events = await store.commit_poll(_commit(config, _changes(i, 1)))
        at = time.monotonic()
        dispatcher.wake()
        for e in events:
            committed[e.id] = at
    deadline = time.monotonic() + 30
    while await store.pending_count() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    achieved = count / (time.monotonic() - start)
    arrivals = receiver.arrivals()
    await dispatcher.stop(5)
    await task
    await clients.aclose()
    await store.close()
    lat = sorted((arrivals[i] - t) * 1000 for i, t in committed.items() if i in arrivals)
    return {
        "events": count,
        "arrived": len(lat),
        "offered_rate": achieved,
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "max_ms": lat[-1] if lat else float("nan"),
    }


async def _main(args: argparse.Namespace) -> None:
    print(f"# bench_delivery: {machine_line()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="pollbridge-bench-") as name:
        tmp = Path(name)
        receiver = Receiver(tmp)
        try:
            rows = []
            _let_loopback_through()
            floors = []
            runs = [(1, False), (1, True)] if args.quick else [(1, False), (1, True), (4, False)]
            for listeners, deny in runs:
                # the floor just before each row: the machine's speed drifts within a run
                floor = await _floor(receiver, args.events * listeners)
                floors.append(floor)
                print(f"# floor (bare aiohttp, 16 in flight): {floor['rate']:.0f} webhooks/s")
                r = await _throughput(tmp, receiver, listeners, args.events, args.in_flight, deny)
                rows.append(
                    [
                        r["listeners"],
                        f"{r['webhooks']:,}",
                        r["pending"],
                        r["seconds"],
                        r["rate"],
                        floor["rate"],
                        r["rate"] / floor["rate"],
                        r["cpu_s"],
                        r["cpu_ms_per"],
                        r["receiver_cpu_s"],
                    ]
                )
                print(f"# {r['listeners']} listener(s): {r['rate']:.0f} webhooks/s", flush=True)
            floor = sorted(floors, key=lambda f: f["rate"])[len(floors) // 2]
            rows.append(  # last, so the first row is pollbridge's
                [
                    "floor: bare aiohttp (median)",
                    f"{floor['webhooks']:,}",
                    floor["pending"],
                    floor["seconds"],
                    floor["rate"],
                    "-",
                    "-",
                    floor["cpu_s"],
                    floor["cpu_ms_per"],
                    "-",
                ]
            )
            lat = await _latency(tmp, receiver, args.seconds, args.rate)
        finally:
            receiver.close()
    print()
    print("Throughput (signed webhooks, durable state):")
    print_table(
        [
            "listeners",
            "webhooks",
            "left pending",
            "seconds",
            "webhooks/s",
            "floor /s just before",
            "of floor",
            "sender CPU s",
            "CPU ms/webhook",
            "receiver CPU s",
        ],
        rows,
    )
    print()
    print(f"Latency commit -> arrival at {args.rate:g} events/s for {args.seconds:g}s:")
    print_table(
        ["events", "arrived", "offered/s", "p50 ms", "p99 ms", "max ms"],
        [
            [
                lat["events"],
                lat["arrived"],
                lat["offered_rate"],
                lat["p50_ms"],
                lat["p99_ms"],
                lat["max_ms"],
            ]
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=10_000, help="events queued per run")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the latency run")
    parser.add_argument("--rate", type=float, default=200.0, help="events/s in the latency run")
    parser.add_argument(
        "--in-flight", type=int, default=None, help="max_in_flight per listener (default: config's)"
    )
    parser.add_argument("--quick", action="store_true", help="one listener only")
    parser.add_argument("--receiver", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        asyncio.run(_receiver(Path(args.receiver)))
        return
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()

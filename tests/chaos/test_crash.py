"""Crash consistency: SIGKILL the real daemon at random moments, restart it, check the invariants.

A local API keeps changing and a local receiver sometimes fails. The daemon is killed with SIGKILL
``POLLBRIDGE_CHAOS_KILLS`` times (default 12 in the main suite; the full proof is 50:
``POLLBRIDGE_CHAOS_KILLS=50 python -m pytest -m chaos``), each time once it is busy polling,
committing or delivering, and restarted. Then the API stops changing, the daemon settles and
stops cleanly, and these must hold:

1. no loss: every committed event reached every matching listener at least once (2xx);
2. convergence: replaying listener "all"'s events per key from the (emitted) baseline
   reproduces the API's final state exactly;
3. idempotency: every duplicate carries the same webhook-id and the same body;
4. order: per listener and key, no event was sent before every earlier one was delivered;
5. the state file passes PRAGMA integrity_check (after every kill, too).
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bridge.core.hashing import canonical_json
from bridge.core.patch import apply_patch
from tests.support.daemon import DaemonProcess
from tests.support.servers import Reply, Request, TestServer, serve

KILLS = int(os.environ.get("POLLBRIDGE_CHAOS_KILLS", "12"))
SEED = int(os.environ.get("POLLBRIDGE_CHAOS_SEED", str(random.randrange(2**32))))

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(90 + 6 * KILLS)]


class ChangingAPI:
    """Items that change every few milliseconds on a thread until :meth:`freeze`."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.lock = threading.Lock()
        self.items: dict[int, dict[str, Any]] = {}
        self.next_id = 1
        for _ in range(12):
            self._create()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _create(self) -> None:
        self.items[self.next_id] = {"id": self.next_id, "v": 0, "tags": [], "meta": {"n": 0}}
        self.next_id += 1

    def mutate(self) -> None:
        with self.lock:
            roll = self.rng.random()
            if roll < 0.15 or len(self.items) < 6:
                self._create()
            elif roll < 0.25 and len(self.items) > 6:
                del self.items[self.rng.choice(sorted(self.items))]
            else:
                item = self.items[self.rng.choice(sorted(self.items))]
                item["v"] += 1
                if self.rng.random() < 0.3:
                    item["tags"] = [*item["tags"][-2:], f"t{item['v']}"]
                if self.rng.random() < 0.3:
                    item["meta"] = {"n": item["v"], "flag": self.rng.random() < 0.5}

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.mutate()

    def start(self) -> None:
        self._thread.start()

    def freeze(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        return self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {str(k): json.loads(json.dumps(v)) for k, v in self.items.items()}

    def __call__(self, _req: Request) -> Reply:
        with self.lock:
            return Reply(200, {"data": list(self.items.values())})


@dataclass
class Received:
    listener: str
    webhook_id: str
    body: bytes
    status: int


class FlakyReceiver:
    """Answers 204, or 500 about a quarter of the time; records every request and its answer."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.lock = threading.Lock()
        self.log: list[Received] = []
        self.flaky = True

    def __call__(self, req: Request) -> Reply:
        if len(req.body) != int(req.headers.get("content-length", -1)):
            return Reply(400, b"truncated")  # the sender was killed mid-request: not a delivery
        with self.lock:
            status = 500 if self.flaky and self.rng.random() < 0.25 else 204
            self.log.append(
                Received(req.path.strip("/"), req.headers["webhook-id"], req.body, status)
            )
        return Reply(status, b"" if status == 204 else b"flaky")


def _config(tmp_path: Path, api: TestServer, hooks: TestServer) -> Path:
    retry = json.dumps(["50ms", "100ms", "200ms", "300ms"] + ["500ms"] * 60)
    path = tmp_path / "pollbridge.toml"
    path.write_text(
        f"""
[bridge]
state = "{tmp_path}/state.db"
shutdown_grace = "5s"

[[sources]]
name = "things"
url = "{api.url("/things")}"
every = "100ms"
items = "$.data[*]"
baseline = "emit"

[[listeners]]
name = "all"
url = "{hooks.url("/all")}"
retry = {retry}
max_in_flight = 4

[[listeners]]
name = "lifecycle"
url = "{hooks.url("/lifecycle")}"
events = ["created", "deleted"]
retry = {retry}
"""
    )
    return path


def _integrity(state: Path) -> str:
    db = sqlite3.connect(state)
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


def _query(state: Path, sql: str) -> list[Any]:
    db = sqlite3.connect(state)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (seed {SEED})")
        time.sleep(0.05)


def test_sigkill_at_random_moments_loses_nothing(tmp_path):
    """Kill -9 mid-poll, mid-commit and mid-delivery, many times: all five invariants hold."""
    rng = random.Random(SEED)
    api = ChangingAPI(random.Random(rng.random()))
    receiver = FlakyReceiver(random.Random(rng.random()))
    state = tmp_path / "state.db"
    with serve(api) as api_server, serve(receiver) as hooks:
        config = _config(tmp_path, api_server, hooks)
        api.start()
        kills = 0
        while kills < KILLS:
            polled = len(api_server.requests)
            with DaemonProcess(config) as daemon:
                # wait until it is busy (polling, committing, delivering), then kill at random
                _wait(lambda: len(api_server.requests) > polled, 30, "the daemon to poll")  # noqa: B023
                time.sleep(rng.uniform(0.0, 0.5))
                assert daemon.proc.poll() is None, daemon.output()
                daemon.kill()
            kills += 1
            assert _integrity(state) == "ok", f"after kill {kills} (seed {SEED})"

        final = api.freeze()
        receiver.flaky = False
        with DaemonProcess(config) as daemon:

            def settled() -> bool:
                items = _query(state, "SELECT key_text, item FROM items")
                pending = _query(
                    state, "SELECT COUNT(*) FROM deliveries WHERE state != 'delivered'"
                )
                snapshot = {k: json.loads(v) for k, v in items}
                return snapshot == final and pending[0][0] == 0

            _wait(settled, 60, "the daemon to settle")
            code = daemon.terminate()
            log = daemon.output()
    assert code == 0, log
    _check_invariants(state, final, receiver.log)
    ok = [(r.listener, r.webhook_id) for r in receiver.log if r.status < 300]
    n_events = _query(state, "SELECT COUNT(*) FROM events")[0][0]
    print(  # shown with -s: how hard the run pushed
        f"chaos: seed {SEED}, {kills} kills, {n_events} events, "
        f"{len(receiver.log)} requests, {len(ok) - len(set(ok))} duplicate deliveries"
    )


def _check_invariants(state: Path, final: dict[str, Any], log: list[Received]) -> None:
    events = {
        row[0]: {"seq": row[1], "key": row[2], "type": row[3]}
        for row in _query(state, "SELECT id, seq, key_text, type FROM events")
    }
    deliveries = _query(
        state,
        "SELECT e.id, d.listener, d.state FROM deliveries d JOIN events e ON e.seq = d.event_seq",
    )
    assert events, f"no events at all (seed {SEED})"
    assert _integrity(state) == "ok"

    # routing: each event has a delivery for exactly the listeners that match it
    routed = defaultdict(set)
    for event_id, listener, delivery_state in deliveries:
        routed[event_id].add(listener)
        assert delivery_state == "delivered", (event_id, listener, delivery_state, SEED)
    for event_id, event in events.items():
        expected = {"all"} | ({"lifecycle"} if event["type"] in ("created", "deleted") else set())
        assert routed[event_id] == expected, (event_id, event, routed[event_id], SEED)

    # (1) no loss: every delivery reached its listener with a 2xx at least once
    ok = {(r.listener, r.webhook_id) for r in log if r.status < 300}
    missing = [(lst, eid) for eid, lst, _s in deliveries if (lst, eid) not in ok]
    assert missing == [], f"lost deliveries {missing[:5]} (seed {SEED})"

    # (3) idempotency: every copy of an event (retries, duplicates, other listeners) has the
    # same webhook-id and the same body
    by_id: dict[str, set[bytes]] = defaultdict(set)
    for r in log:
        by_id[r.webhook_id].add(r.body)
        assert json.loads(r.body)["id"] == r.webhook_id
    assert {k: v for k, v in by_id.items() if len(v) > 1} == {}, f"seed {SEED}"
    assert set(by_id) <= set(events), "a webhook for an event that was never committed"

    # (4) order: an attempt for event s only after every earlier event of its key got a 2xx
    delivered_upto: dict[tuple[str, str], set[int]] = defaultdict(set)
    for r in log:
        event = events[r.webhook_id]
        chain = (r.listener, event["key"])
        earlier = {
            e["seq"]
            for eid, e in events.items()
            if e["key"] == event["key"] and e["seq"] < event["seq"] and r.listener in routed[eid]
        }
        assert earlier <= delivered_upto[chain], (
            f"{r.listener}: event {event['seq']} of key {event['key']} sent before "
            f"{sorted(earlier - delivered_upto[chain])} were delivered (seed {SEED})"
        )
        if r.status < 300:
            delivered_upto[chain].add(event["seq"])

    # (2) convergence: replay listener "all" per key, first 2xx arrival of each event, in order
    replayed: dict[str, Any] = {}
    seen: set[str] = set()
    for r in log:
        if r.listener != "all" or r.status >= 300 or r.webhook_id in seen:
            continue
        seen.add(r.webhook_id)
        body = json.loads(r.body)
        key, data = body["key"], body["data"]
        current = replayed.get(key)
        assert canonical_json(data["before"]) == canonical_json(current), (key, SEED)
        assert canonical_json(apply_patch(current, data["changes"])) == canonical_json(
            data["after"]
        )
        if body["type"] == "item.deleted":
            del replayed[key]
        else:
            replayed[key] = data["after"]
    assert {k: canonical_json(v) for k, v in replayed.items()} == {
        k: canonical_json(v) for k, v in final.items()
    }, f"replay diverged from the API (seed {SEED})"

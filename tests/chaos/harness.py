"""What the crash tests share: a changing API, a flaky receiver, the kill loop and the invariants.

The invariants are read through the store interface (:class:`tests.support.state.StateView`), so
one check serves SQLite and PostgreSQL alike:

1. no loss: every committed event reached every matching listener at least once (2xx);
2. convergence: replaying a listener's first 2xx arrival of each event, per key, from the
   (emitted) baseline reproduces the API's final state exactly;
3. idempotency: every duplicate carries the same webhook-id and the same body, and no webhook
   names an event that was never committed (no phantom);
4. order: per listener and key, no event was sent before every earlier one was delivered;
5. routing: each event has a delivery for exactly the listeners that match it.

A SQLite state must also pass ``PRAGMA integrity_check`` after every kill: the one place these
tests open the file themselves, since integrity is a property of the file, not of the schema.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bridge.core.hashing import canonical_json
from bridge.core.patch import apply_patch
from tests.support import configs
from tests.support.daemon import DaemonProcess, eventually
from tests.support.servers import Reply, Request, TestServer
from tests.support.state import StateView, is_postgres

KILLS = int(os.environ.get("POLLBRIDGE_CHAOS_KILLS", "12"))
SEED = int(os.environ.get("POLLBRIDGE_CHAOS_SEED", str(random.randrange(2**32))))

SOURCE = "things"

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]

LIFECYCLE = ["created", "deleted"]
"""The event types of the ``lifecycle`` listener (``all`` takes every event)."""


def chaos_config(
    tmp_path: Path,
    state: str,
    api: TestServer,
    hooks: TestServer,
    *,
    all_fields: dict[str, Any],
    lifecycle_fields: dict[str, Any],
) -> Path:
    """The crash tests' configuration: :data:`SOURCE` emitting its baseline, polled every
    100 ms, and two listeners, ``all`` and ``lifecycle``, with further keys given."""
    # PostgreSQL: a killed instance's source lease and delivery claims (max(lease, 2 x timeout))
    # run out in 2 s, so its restart (a new instance) polls and sends again soon
    shared = {"lease": "2s"} if is_postgres(state) else {}
    return configs.write_config(
        tmp_path / "pollbridge.toml",
        configs.source(SOURCE, api.url("/things"), every="100ms", baseline="emit"),
        configs.listener("all", hooks.url("/all"), **all_fields),
        configs.listener(
            "lifecycle", hooks.url("/lifecycle"), events=LIFECYCLE, **lifecycle_fields
        ),
        state=state,
        shutdown_grace="5s",
        **shared,
    )


def chaos_routes(event_type: str) -> set[str]:
    """The listeners of :func:`chaos_config` an event of ``event_type`` goes to."""
    return {"all"} | ({"lifecycle"} if event_type in LIFECYCLE else set())


class ChangingAPI:
    """Items that change every few milliseconds on a thread until :meth:`freeze`."""

    def __init__(self, rng: random.Random, *, every_s: float = 0.02, update_share: float = 0.75):
        self.rng = rng
        self.every_s = every_s
        self.update_share = update_share
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
            other = (1 - self.update_share) * 0.6
            if roll < other or len(self.items) < 6:
                self._create()
            elif roll < 1 - self.update_share and len(self.items) > 6:
                del self.items[self.rng.choice(sorted(self.items))]
            else:
                item = self.items[self.rng.choice(sorted(self.items))]
                item["v"] += 1
                if self.rng.random() < 0.3:
                    item["tags"] = [*item["tags"][-2:], f"t{item['v']}"]
                if self.rng.random() < 0.3:
                    item["meta"] = {"n": item["v"], "flag": self.rng.random() < 0.5}

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.mutate()

    def start(self) -> None:
        self._thread.start()

    def freeze(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread.is_alive():
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
    """Answers 204, or 500 about a quarter of the time (after ``delay_s``); records every
    request it read in full and its answer."""

    def __init__(self, rng: random.Random, *, delay_s: float = 0.0, fail_share: float = 0.25):
        self.rng = rng
        self.lock = threading.Lock()
        self.log: list[Received] = []
        self.flaky = True
        self.delay_s = delay_s
        self.fail_share = fail_share
        self.in_flight = 0
        """Requests read in full and not yet answered (a send the daemon is waiting on)."""

    def __call__(self, req: Request) -> Reply:
        if len(req.body) != int(req.headers.get("content-length", -1)):
            return Reply(400, b"truncated")  # the sender was killed mid-request: not a delivery
        with self.lock:
            self.in_flight += 1
        if self.delay_s and self.flaky:
            time.sleep(self.delay_s)
        with self.lock:
            self.in_flight -= 1
            status = 500 if self.flaky and self.rng.random() < self.fail_share else 204
            self.log.append(
                Received(req.path.strip("/"), req.headers["webhook-id"], req.body, status)
            )
        return Reply(status, b"" if status == 204 else b"flaky")


def integrity(location: str) -> str:
    """``PRAGMA integrity_check`` of a SQLite state ("ok"); PostgreSQL keeps its own."""
    if is_postgres(location):
        return "ok"
    db = sqlite3.connect(location)
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


def kill_loop(
    daemons: Sequence[Callable[[], DaemonProcess]],
    api_server: TestServer,
    location: str,
    rng: random.Random,
    kills: int,
    *,
    busy: Callable[[], bool] | None = None,
    within_s: float = 0.5,
) -> int:
    """Run one daemon per factory; ``kills`` times, once they poll (and ``busy()`` holds, when
    given), SIGKILL a random one at a random moment (0-``within_s`` later) and start it again.
    Returns the kills done."""
    running = [start() for start in daemons]
    try:
        for done in range(1, kills + 1):
            polled = len(api_server.requests)
            eventually(
                lambda: len(api_server.requests) > polled,  # noqa: B023
                30,
                f"the daemon to poll (seed {SEED})",
            )
            if busy is not None:
                eventually(busy, 30, f"the daemon to be busy (seed {SEED})")
            time.sleep(rng.uniform(0.0, within_s))
            victim = rng.randrange(len(running))
            for d in running:
                assert d.proc.poll() is None, d.output()
            running[victim].kill()
            assert integrity(location) == "ok", f"after kill {done} (seed {SEED})"
            running[victim] = daemons[victim]()
    finally:
        for d in running:
            d.kill()
    return kills


def settle(
    daemons: Sequence[DaemonProcess], view: StateView, final: dict[str, Any], timeout_s: float = 90
) -> list[str]:
    """Wait until the stored snapshot equals the API and nothing is pending; stop the daemons
    cleanly and return their logs."""

    def settled(v: StateView) -> bool:
        return v.items(SOURCE) == final and v.pending() == 0

    view.wait(settled, timeout_s, f"the daemons to settle (seed {SEED})")
    for d in daemons:
        # one that is still starting up (the other did all the work) has no SIGTERM handler yet
        d.wait_output(r"pollbridge running", timeout_s=30)
    codes = [d.terminate() for d in daemons]
    logs = [d.output() for d in daemons]
    assert codes == [0] * len(daemons), "\n".join(logs)
    return logs


@dataclass
class Figures:
    """How hard a run pushed (printed with ``-s``, copied into docs/guarantees.md)."""

    kills: int
    events: int
    requests: int
    duplicates: int

    def line(self, name: str) -> str:
        return (
            f"{name}: seed {SEED}, {self.kills} kills, {self.events} events, "
            f"{self.requests} requests, {self.duplicates} duplicate deliveries"
        )


def check_invariants(
    view: StateView,
    final: dict[str, Any],
    log: list[Received],
    routes: Callable[[str], set[str]] | None,
    *,
    replay_listener: str = "all",
) -> tuple[int, int]:
    """Assert invariants 1-5 (and integrity); ``routes(type)``: the listeners an event of that
    type goes to (None: whatever was configured when it was committed, as after reloads).
    Returns (events, duplicate 2xx deliveries)."""
    records = view.events()
    events = {
        r.event.id: {"seq": r.event.seq, "key": key_of(r.event.key), "type": r.event.type}
        for r in records
    }
    assert events, f"no events at all (seed {SEED})"
    assert integrity(view.location) == "ok"
    coalesced = {(d.listener, d.event_id) for d in view.deliveries(state="coalesced")}

    # (5) routing: each event has a delivery for exactly the listeners that match it, and each
    # delivery ended delivered (or was merged into a later one by coalesce = true)
    routed: dict[str, set[str]] = defaultdict(set)
    for r in records:
        for listener, state in r.deliveries.items():
            routed[r.event.id].add(listener)
            assert state in ("delivered", "coalesced"), (r.event.id, listener, state, SEED)
    for event_id, event in events.items():
        if routes is not None:
            assert routed[event_id] == routes(event["type"]), (event_id, event, SEED)

    # (1) no loss: every delivery not merged away reached its listener with a 2xx
    ok = {(r.listener, r.webhook_id) for r in log if r.status < 300}
    missing = [
        (listener, eid)
        for eid, listeners in routed.items()
        for listener in listeners
        if (listener, eid) not in ok and (listener, eid) not in coalesced
    ]
    assert missing == [], f"lost deliveries {missing[:5]} (seed {SEED})"

    # (3) idempotency: every copy of an event (retries, duplicates, other listeners) has the
    # same webhook-id and the same body; no webhook for an event that was never committed
    by_id: dict[str, set[bytes]] = defaultdict(set)
    for r in log:
        by_id[r.webhook_id].add(r.body)
        assert json.loads(r.body)["id"] == r.webhook_id
    assert {k: v for k, v in by_id.items() if len(v) > 1} == {}, f"seed {SEED}"
    phantoms = set(by_id) - set(events)
    assert phantoms == set(), f"webhooks for events never committed {phantoms} (seed {SEED})"

    # (4) order: an attempt for event s only after every earlier event of its key got a 2xx
    # (events merged away for that listener are not waited for)
    delivered_upto: dict[tuple[str, str], set[int]] = defaultdict(set)
    by_key: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for eid, e in events.items():
        by_key[e["key"]].append((e["seq"], eid))
    for r in log:
        event = events[r.webhook_id]
        chain = (r.listener, event["key"])
        earlier = {
            seq
            for seq, eid in by_key[event["key"]]
            if seq < event["seq"]
            and r.listener in routed[eid]
            and (r.listener, eid) not in coalesced
        }
        assert earlier <= delivered_upto[chain], (
            f"{r.listener}: event {event['seq']} of key {event['key']} sent before "
            f"{sorted(earlier - delivered_upto[chain])} were delivered (seed {SEED})"
        )
        if r.status < 300:
            delivered_upto[chain].add(event["seq"])

    # (2) convergence: replay one listener per key, first 2xx arrival of each event, in order
    try:
        replayed = replay(log, replay_listener)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nthe store's events:\n{_stored_chains(records)}") from None
    assert {k: canonical_json(v) for k, v in replayed.items()} == {
        k: canonical_json(v) for k, v in final.items()
    }, f"replay diverged from the API (seed {SEED})"
    return len(events), len(ok_list(log)) - len(ok)


def ok_list(log: list[Received]) -> list[tuple[str, str]]:
    return [(r.listener, r.webhook_id) for r in log if r.status < 300]


def key_of(key: Any) -> str:
    return json.dumps(list(key)) if isinstance(key, tuple | list) else str(key)


def replay(log: list[Received], listener: str) -> dict[str, Any]:
    """Apply ``listener``'s first 2xx arrival of each event in order, asserting that every
    ``before`` equals the previous ``after`` and every patch turns ``before`` into ``after``."""
    replayed: dict[str, Any] = {}
    seen: set[str] = set()
    for r in log:
        if r.listener != listener or r.status >= 300 or r.webhook_id in seen:
            continue
        seen.add(r.webhook_id)
        body = json.loads(r.body)
        key, data = body["key"], body["data"]
        current = replayed.get(key)
        assert canonical_json(data["before"]) == canonical_json(current), (
            f"{listener}/{key}: webhook {r.webhook_id} has a before that is not the previous "
            f"after (seed {SEED}); what the receiver got for this key:\n"
            + _chain(log, listener, key)
        )
        assert canonical_json(apply_patch(current, data["changes"])) == canonical_json(
            data["after"]
        )
        if body["type"] == "item.deleted":
            del replayed[key]
        else:
            replayed[key] = data["after"]
    return replayed


def _chain(log: list[Received], listener: str, key: str) -> str:
    lines = []
    for r in log:
        body = json.loads(r.body)
        if r.listener == listener and body["key"] == key:
            data = body["data"]
            lines.append(
                f"  {r.webhook_id} {r.status} {body['type']}: "
                f"{canonical_json(data['before'])} -> {canonical_json(data['after'])}"
            )
    return "\n".join(lines)


def _stored_chains(records: list[Any]) -> str:
    return "\n".join(
        f"  {r.event.seq} {r.event.id} {key_of(r.event.key)} {r.event.type}: "
        f"{canonical_json(r.event.before)} -> {canonical_json(r.event.after)} "
        f"{dict(r.deliveries)}"
        for r in records
    )


def location_for(backend: str, tmp_path: Path, request: Any) -> str:
    """The state location of a parametrized backend ("sqlite" or "postgres")."""
    if backend == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return str(tmp_path / "state.db")

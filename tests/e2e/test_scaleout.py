"""Three ``pollbridge run`` processes on one PostgreSQL database; one is killed with SIGKILL."""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from tests.support import configs
from tests.support.configs import listener, write_config
from tests.support.daemon import DaemonProcess, run_cli
from tests.support.servers import Reply, Request, TestServer, serve

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.timeout(180)]

SOURCES = [f"s{i}" for i in range(6)]
LEASE_S = 2.0


class ChangingAPI:
    """Six list endpoints whose items change in a background thread; records who polled."""

    def __init__(self, seed: int = 7):
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.items: dict[str, dict[int, dict[str, Any]]] = {
            s: {i: {"id": i, "v": 0} for i in range(5)} for s in SOURCES
        }
        self.polls: list[tuple[str, str]] = []
        """(source, instance label) in arrival order."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.next_id = 100

    def __call__(self, req: Request) -> Reply:
        source = req.path.strip("/")
        with self.lock:
            self.polls.append((source, req.headers.get("x-instance", "?")))
            return Reply(200, {"data": list(self.items.get(source, {}).values())})

    def mutate_once(self) -> None:
        with self.lock:
            items = self.items[self.rng.choice(SOURCES)]
            roll = self.rng.random()
            if roll < 0.1 and len(items) > 2:
                del items[self.rng.choice(list(items))]
            elif roll < 0.2:
                self.next_id += 1
                items[self.next_id] = {"id": self.next_id, "v": 0}
            else:
                key = self.rng.choice(list(items))
                items[key] = {"id": key, "v": items[key]["v"] + 1}

    def start(self, every_s: float = 0.03) -> None:
        def loop() -> None:
            while not self._stop.wait(every_s):
                self.mutate_once()

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {s: {str(k): dict(v) for k, v in its.items()} for s, its in self.items.items()}


@pytest.fixture
def changing_api() -> Iterator[tuple[ChangingAPI, TestServer]]:
    api = ChangingAPI()
    with serve(api) as server:
        yield api, server
    api.stop()


def _config(tmp_path: Path, state: str, api: TestServer, hooks: TestServer) -> Path:
    sources = [
        configs.source(s, api.url("/" + s), headers={"x-instance": "${PB_INSTANCE}"})
        for s in SOURCES
    ]
    hook = listener(
        "hooks",
        hooks.url("/hooks"),
        retry=["100ms", "200ms", "500ms", "1s", "1s", "1s", "1s", "1s"],
        max_in_flight=4,
        timeout="1s",
    )
    return write_config(
        tmp_path / "pollbridge.toml",
        *sources,
        hook,
        state=state,
        lease=f"{LEASE_S:g}s",
        shutdown_grace="5s",
    )


class DB:
    """Read-only looks into the shared state, as an operator would with psql."""

    def __init__(self, url: str):
        self.conn = psycopg.connect(url, autocommit=True)

    def close(self) -> None:
        self.conn.close()

    def rows(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        return self.conn.execute(query, args).fetchall()  # type: ignore[arg-type]

    def value(self, query: str, *args: Any) -> Any:
        return self.rows(query, *args)[0][0]

    def wait_for(self, what: str, check: Any, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.1)


def _owner_switches(polls: list[tuple[str, str]]) -> dict[str, int]:
    last: dict[str, str] = {}
    switches: dict[str, int] = defaultdict(int)
    for source, who in polls:
        if source in last and last[source] != who:
            switches[source] += 1
        last[source] = who
    return {s: switches[s] for s in SOURCES}


def test_three_instances_share_the_work_and_survive_a_kill(
    tmp_path, pg_url, changing_api, receiver
):
    """No event lost or committed twice, per-key order kept, a killed instance's work taken over."""
    api, api_server = changing_api
    # slow enough that the victim is likely to die with deliveries in flight
    receiver.handler = lambda _r: Reply(204, delay_s=0.4)
    config = _config(tmp_path, pg_url, api_server, receiver)
    daemons = [DaemonProcess(config, env={"PB_INSTANCE": f"d{i}"}) for i in range(3)]
    db = DB(pg_url)
    try:
        db.wait_for(
            "every source's baseline",
            lambda: (
                _safe(db, "SELECT count(*) FROM sources WHERE fingerprint IS NOT NULL")
                == len(SOURCES)
            ),
        )
        db.wait_for(
            "three live instances",
            lambda: _safe(db, "SELECT count(*) FROM instances WHERE expires_at > now()") == 3,
        )
        api.start()
        time.sleep(3)

        owned = dict(
            db.rows(
                "SELECT i.pid, count(*) FROM source_leases l JOIN instances i ON i.id = l.owner "
                "WHERE l.expires_at > clock_timestamp() GROUP BY i.pid"
            )
        )
        victim = max(daemons, key=lambda d: owned.get(d.proc.pid, 0))
        assert owned.get(victim.proc.pid, 0) > 0, f"no instance owns a source: {owned}"
        victim.kill()
        killed_at = db.value("SELECT clock_timestamp()")
        (victim_id,) = db.rows("SELECT id FROM instances WHERE pid = %s", victim.proc.pid)[0]
        orphaned = dict(
            db.rows("SELECT source, expires_at FROM source_leases WHERE owner = %s", victim_id)
        )
        assert orphaned, "the victim held no lease when killed"
        victim_claims = db.value(
            "SELECT count(*) FROM deliveries WHERE claimed_by = %s AND state = 'pending'",
            victim_id,
        )
        taken_at: dict[str, Any] = {}

        def all_taken() -> bool:
            for source, owner, acquired in db.rows(
                "SELECT source, owner, acquired_at FROM source_leases WHERE source = ANY(%s)",
                list(orphaned),
            ):
                if owner is not None and owner != victim_id and source not in taken_at:
                    taken_at[source] = acquired
            return len(taken_at) == len(orphaned)

        db.wait_for("the victim's sources to be taken over", all_taken, timeout_s=LEASE_S * 5)
        time.sleep(2)
        api.stop()
        final = api.snapshot()

        def caught_up() -> bool:
            stored: dict[str, dict[str, Any]] = defaultdict(dict)
            for source, key_text, body in db.rows("SELECT source, key_text, item FROM items"):
                stored[source][key_text] = orjson.loads(body)
            pending = db.value("SELECT count(*) FROM deliveries WHERE state <> 'delivered'")
            return pending == 0 and all(stored[s] == final[s] for s in SOURCES)

        db.wait_for("the snapshots to match the API and every delivery to land", caught_up, 60)
        survivors = [d for d in daemons if d is not victim]
        codes = [d.terminate() for d in survivors]
        assert codes == [0, 0], "\n".join(d.output() for d in survivors)
        events = db.rows(
            "SELECT seq, id, source, key_text, type, before, after FROM events ORDER BY seq"
        )
    finally:
        api.stop()
        for d in daemons:
            d.__exit__(None, None, None)
        db.close()
    assert len(events) > 50, "the API changed too little for the test to mean much"

    # no loss: every committed event reached the receiver
    received = [(r.headers["webhook-id"], r.json()) for r in receiver.requests]
    assert {e[1] for e in events} <= {wid for wid, _ in received}

    # the only duplicates are the attempts the victim had in flight (same webhook-id)
    assert len(received) - len({wid for wid, _ in received}) <= victim_claims

    # no double poll commit: per key, each event continues from the previous one
    last_after: dict[tuple[str, str], Any] = {}
    for _seq, _id, source, key, kind, before, after in events:
        if (source, key) in last_after:
            assert (orjson.loads(before) if before else None) == last_after[(source, key)], (
                f"event {_id} of {source}/{key} does not continue the previous one"
            )
        last_after[(source, key)] = orjson.loads(after) if after else None
        assert kind in ("created", "updated", "deleted")

    # per-key order at the receiver (a duplicate may repeat an event, never go back)
    seq_of = {e[1]: (e[0], e[2], e[3]) for e in events}
    newest: dict[tuple[str, str], int] = {}
    for wid, _body in received:
        seq, source, key = seq_of[wid]
        assert seq >= newest.get((source, key), 0), f"{source}/{key}: {wid} arrived out of order"
        newest[(source, key)] = seq

    # the victim's sources were taken over once its lease ran out, not later
    for source, at in taken_at.items():
        late_s = (at - orphaned[source]).total_seconds()
        assert late_s <= LEASE_S, f"{source} taken over {late_s:.2f}s after its lease expired"
        assert (orphaned[source] - killed_at).total_seconds() <= LEASE_S

    # one poller per source at a time: ownership changed hands a few times, not at every tick
    switches = _owner_switches(api.polls)
    polls_per_source = len(api.polls) / len(SOURCES)
    assert max(switches.values()) <= 8, (
        f"owner switches {switches} in ~{polls_per_source:.0f} polls"
    )


def _safe(db: DB, query: str) -> Any:
    try:
        return db.value(query)
    except psycopg.errors.UndefinedTable:
        return None  # the first instance has not created the schema yet


def test_a_stopped_instance_hands_its_sources_over_at_once(
    tmp_path, pg_url, changing_api, receiver
):
    """On SIGTERM an instance gives its leases back: the other takes them long before expiry."""
    _api, api_server = changing_api
    config = _config(tmp_path, pg_url, api_server, receiver)
    # a lease far longer than the test may wait: only a clean hand-over can pass
    config.write_text(config.read_text().replace(f'lease = "{LEASE_S:g}s"', 'lease = "120s"'))
    db = DB(pg_url)
    first = DaemonProcess(config, env={"PB_INSTANCE": "first"})
    second = None
    try:
        db.wait_for(
            "the first instance to own every source",
            lambda: (
                _safe(db, "SELECT count(*) FROM source_leases WHERE owner IS NOT NULL")
                == len(SOURCES)
            ),
        )
        second = DaemonProcess(config, env={"PB_INSTANCE": "second"})
        db.wait_for(
            "two live instances",
            lambda: _safe(db, "SELECT count(*) FROM instances WHERE expires_at > now()") == 2,
        )
        assert first.terminate() == 0, first.output()
        db.wait_for(
            "the second instance to own every source",
            lambda: (
                db.value(
                    "SELECT count(*) FROM source_leases l JOIN instances i ON i.id = l.owner "
                    "WHERE l.expires_at > clock_timestamp()"
                )
                == len(SOURCES)
                and db.value("SELECT count(*) FROM instances") == 1
            ),
            timeout_s=30,
        )
        assert second.terminate() == 0, second.output()
        assert (
            db.value("SELECT count(*) FROM source_leases WHERE expires_at > clock_timestamp()") == 0
        )
        assert db.value("SELECT count(*) FROM instances") == 0
    finally:
        for d in (first, second):
            if d is not None:
                d.__exit__(None, None, None)
        db.close()


def test_run_once_on_postgres_polls_delivers_and_leaves(tmp_path, pg_url, changing_api, receiver):
    """``run --once`` works on PostgreSQL too and leaves no lease or claim behind."""
    api, api_server = changing_api
    config = _config(tmp_path, pg_url, api_server, receiver)
    first = run_cli("run", "--once", "--config", str(config), env={"PB_INSTANCE": "once"})
    assert first.returncode == 0, first.stderr
    for _ in range(3):
        api.mutate_once()
    second = run_cli("run", "--once", "--config", str(config), env={"PB_INSTANCE": "once"})
    assert second.returncode == 0, second.stderr
    db = DB(pg_url)
    try:
        events = db.value("SELECT count(*) FROM events")
        assert events >= 1
        assert db.value("SELECT count(*) FROM deliveries WHERE state = 'delivered'") == events
        assert len(receiver.requests) == events
        assert (
            db.value("SELECT count(*) FROM source_leases WHERE expires_at > clock_timestamp()") == 0
        )
        assert db.value("SELECT count(*) FROM deliveries WHERE claimed_by IS NOT NULL") == 0
    finally:
        db.close()

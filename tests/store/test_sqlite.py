"""The SQLite store: atomic poll commits, per-key delivery order, attempts and the file itself."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import stat
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.core.hashing import hash_value
from bridge.errors import StoreError
from bridge.models import AttemptResult, Change, ChangeType, Event, Item
from bridge.store import PollCommit, StaleSnapshot
from bridge.store.base import SCHEMA_VERSION
from bridge.store.sqlite import SQLiteStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def item(key: str, value: Any) -> Item:
    return Item(key=key, key_text=key, value=value, hash=hash_value(value))


def change(type_: ChangeType, key: str, before: Any = None, after: Any = None) -> Change:
    return Change(
        type_,
        key,
        key,
        before,
        after,
        [{"op": "replace", "path": "", "value": after}],
        None if after is None else hash_value(after),
    )


def commit(
    *,
    at: datetime = T0,
    upserts: Sequence[Item] = (),
    deletes: Sequence[str] = (),
    changes: Sequence[Change] = (),
    routes: Sequence[Sequence[str]] | None = None,
    expected_version: int | None = None,
    source: str = "orders",
    item_count: int = 0,
) -> PollCommit:
    return PollCommit(
        source=source,
        polled_at=at,
        duration_s=0.25,
        upserts=upserts,
        deletes=deletes,
        changes=changes,
        routes=[["hook"]] * len(changes) if routes is None else routes,
        item_count=item_count,
        fingerprint="fp-1",
        expected_version=expected_version,
    )


def ok_result() -> AttemptResult:
    return AttemptResult(ok=True, status=200, duration_s=0.01)


def failed_result() -> AttemptResult:
    return AttemptResult(ok=False, status=503, duration_s=0.02, error="HTTP 503")


def count_rows(path: Path, table: str) -> int:
    """Rows committed to disk, read through a separate connection."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "pollbridge.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(db_path)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def baseline(store: SQLiteStore) -> list[Event]:
    """Two created items routed to `hook`: the state most tests start from."""
    return await store.commit_poll(
        commit(
            upserts=[item("a", {"n": 1}), item("b", {"n": 2})],
            changes=[
                change("created", "a", after={"n": 1}),
                change("created", "b", after={"n": 2}),
            ],
            item_count=2,
        )
    )


# --- commit_poll ---------------------------------------------------------------------------


async def test_commit_poll_writes_items_events_deliveries_and_state(
    store: SQLiteStore, db_path: Path
) -> None:
    """One commit stores the items, one event per change, one delivery per route, and state."""
    events = await store.commit_poll(
        commit(
            upserts=[item("a", {"n": 1}), item("b", {"n": 2})],
            changes=[
                change("created", "a", after={"n": 1}),
                change("created", "b", after={"n": 2}),
            ],
            routes=[["hook", "audit"], ["hook"]],
            item_count=2,
        )
    )

    assert [(e.source, e.key, e.type, e.after) for e in events] == [
        ("orders", "a", "created", {"n": 1}),
        ("orders", "b", "created", {"n": 2}),
    ]
    assert all(e.id.startswith("evt_") for e in events)
    assert events[0].seq < events[1].seq
    hashes = await store.load_hashes("orders")
    assert hashes.version == 1
    assert hashes.hashes == {"a": hash_value({"n": 1}), "b": hash_value({"n": 2})}
    assert await store.load_items("orders", ["a", "zz"]) == {"a": ("a", {"n": 1})}
    assert count_rows(db_path, "events") == 2
    assert await store.pending_count() == 3
    assert await store.pending_count(["audit"]) == 1
    state = await store.get_source_state("orders")
    assert state is not None
    assert (state.item_count, state.fingerprint, state.last_result) == (2, "fp-1", "ok")
    assert state.last_success_at == T0


async def test_later_commit_updates_and_deletes_items(store: SQLiteStore) -> None:
    """Upserts replace stored items, deletes remove them, and the snapshot version advances."""
    await baseline(store)
    events = await store.commit_poll(
        commit(
            at=T0 + timedelta(minutes=1),
            upserts=[item("a", {"n": 10})],
            deletes=["b"],
            changes=[
                change("updated", "a", before={"n": 1}, after={"n": 10}),
                change("deleted", "b", before={"n": 2}),
            ],
            expected_version=1,
            item_count=1,
        )
    )
    assert [(e.type, e.before, e.after) for e in events] == [
        ("updated", {"n": 1}, {"n": 10}),
        ("deleted", {"n": 2}, None),
    ]
    hashes = await store.load_hashes("orders")
    assert (hashes.version, hashes.hashes) == (2, {"a": hash_value({"n": 10})})


async def test_composite_keys_round_trip(store: SQLiteStore) -> None:
    """A tuple key is stored as a JSON array and read back as a tuple."""
    key = ("org", "7")
    stored = Item(key=key, key_text='["org","7"]', value={"n": 1}, hash=hash_value({"n": 1}))
    composite_change = Change("created", key, '["org","7"]', None, {"n": 1}, [], stored.hash)
    await store.commit_poll(commit(upserts=[stored], changes=[composite_change]))
    assert await store.load_items("orders", ['["org","7"]']) == {'["org","7"]': (key, {"n": 1})}
    (due,) = await store.due_deliveries("hook", T0.timestamp(), 10, [])
    assert due.event.key == key


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        (sqlite3.OperationalError("disk I/O error"), StoreError),
        (RuntimeError("crash between writes"), RuntimeError),
    ],
)
async def test_failure_between_writes_leaves_nothing_written(
    store: SQLiteStore,
    db_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    raised: type[Exception],
) -> None:
    """If writing deliveries fails, the items and events already written are rolled back too."""
    await baseline(store)
    before_state = await store.get_source_state("orders")
    before_hashes = await store.load_hashes("orders")

    def fail(self: SQLiteStore, *_: object) -> None:
        raise error

    monkeypatch.setattr(SQLiteStore, "_write_deliveries", fail)
    with pytest.raises(raised):
        await store.commit_poll(
            commit(
                at=T0 + timedelta(minutes=1),
                upserts=[item("a", {"n": 10}), item("c", {"n": 3})],
                deletes=["b"],
                changes=[
                    change("updated", "a", before={"n": 1}, after={"n": 10}),
                    change("created", "c", after={"n": 3}),
                    change("deleted", "b", before={"n": 2}),
                ],
                item_count=2,
            )
        )

    assert await store.load_hashes("orders") == before_hashes
    assert await store.get_source_state("orders") == before_state
    assert count_rows(db_path, "events") == 2
    assert count_rows(db_path, "deliveries") == 2
    assert count_rows(db_path, "items") == 2


async def test_failed_first_commit_leaves_no_source_behind(
    store: SQLiteStore, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed baseline leaves no items, no events and no source row at all."""

    def fail(self: SQLiteStore, *_: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(SQLiteStore, "_write_deliveries", fail)
    with pytest.raises(StoreError, match=r"commit_poll failed: database or disk is full"):
        await baseline(store)
    assert await store.get_source_state("orders") is None
    assert [count_rows(db_path, t) for t in ("items", "events", "sources")] == [0, 0, 0]


async def test_commit_refused_when_snapshot_moved(store: SQLiteStore, db_path: Path) -> None:
    """A commit computed against an older snapshot version raises StaleSnapshot, writing nothing."""
    await baseline(store)
    with pytest.raises(StaleSnapshot, match="moved from version 0 to 1"):
        await store.commit_poll(
            commit(
                upserts=[item("z", 1)],
                changes=[change("created", "z", after=1)],
                expected_version=0,
            )
        )
    assert (await store.load_hashes("orders")).version == 1
    assert count_rows(db_path, "items") == 2
    assert count_rows(db_path, "events") == 2


async def test_commit_accepted_when_snapshot_version_matches(store: SQLiteStore) -> None:
    """The expected version of a fresh source is 0, and each commit adds one."""
    assert (await store.load_hashes("orders")).version == 0
    await store.commit_poll(commit(upserts=[item("a", 1)], expected_version=0))
    await store.commit_poll(commit(upserts=[item("b", 1)], expected_version=1))
    assert (await store.load_hashes("orders")).version == 2


# --- deliveries ----------------------------------------------------------------------------


async def test_due_deliveries_returns_only_the_head_of_each_chain(store: SQLiteStore) -> None:
    """Per (listener, source, key) only the oldest pending delivery is due: per-key order."""
    first = await baseline(store)
    second = await store.commit_poll(
        commit(
            at=T0 + timedelta(seconds=1),
            upserts=[item("a", {"n": 10})],
            changes=[change("updated", "a", before={"n": 1}, after={"n": 10})],
        )
    )
    now = (T0 + timedelta(minutes=1)).timestamp()

    due = await store.due_deliveries("hook", now, 10, [])
    assert [d.event.seq for d in due] == [first[0].seq, first[1].seq]
    assert await store.next_due_at(["hook"], []) == T0.timestamp()

    head_a = due[0]
    assert [d.event.key for d in await store.due_deliveries("hook", now, 10, [head_a.id])] == ["b"]

    await store.record_attempt(head_a.id, T0, ok_result(), next_at=None)
    due = await store.due_deliveries("hook", now, 10, [])
    assert [d.event.seq for d in due] == [first[1].seq, second[0].seq]


async def test_due_deliveries_respects_exclude_ids_limit_listener_and_time(
    store: SQLiteStore,
) -> None:
    """In-flight ids are skipped, at most `limit` are returned, and only this listener's due ones."""
    events = await store.commit_poll(
        commit(
            upserts=[item(k, 1) for k in "abc"],
            changes=[change("created", k, after=1) for k in "abc"],
            routes=[["hook"], ["hook"], ["other"]],
        )
    )
    now = T0.timestamp()
    all_due = await store.due_deliveries("hook", now, 10, [])
    assert [d.event.key for d in all_due] == ["a", "b"]
    assert [d.listener for d in all_due] == ["hook", "hook"]
    assert len(await store.due_deliveries("hook", now, 1, [])) == 1
    assert [d.event.key for d in await store.due_deliveries("hook", now, 10, [all_due[0].id])] == [
        "b"
    ]
    assert await store.due_deliveries("hook", now, 10, [d.id for d in all_due]) == []
    assert await store.due_deliveries("hook", now - 1, 10, []) == []
    assert [d.event.seq for d in await store.due_deliveries("other", now, 10, [])] == [
        events[2].seq
    ]


@pytest.mark.parametrize(
    ("result", "retry_in_s", "expected_state"),
    [
        (ok_result(), None, "delivered"),
        (failed_result(), 60.0, "pending"),
        (failed_result(), None, "dead"),
    ],
)
async def test_record_attempt_transitions(
    store: SQLiteStore,
    db_path: Path,
    result: AttemptResult,
    retry_in_s: float | None,
    expected_state: str,
) -> None:
    """Success delivers, a failure with a next time stays pending, a failure without one is dead."""
    await baseline(store)
    now = T0.timestamp()
    head, _ = await store.due_deliveries("hook", now, 10, [])
    next_at = None if retry_in_s is None else now + retry_in_s

    state = await store.record_attempt(head.id, T0, result, next_at=next_at)

    assert state == expected_state
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        row = conn.execute(
            "SELECT state, attempts, next_at, last_status, last_error FROM deliveries WHERE id = ?",
            (head.id,),
        ).fetchone()
    assert row == (expected_state, 1, now + (retry_in_s or 0.0), result.status, result.error)
    assert count_rows(db_path, "attempts") == 1
    assert head.id not in [d.id for d in await store.due_deliveries("hook", now, 10, [])]


async def test_retry_becomes_due_at_its_next_time(store: SQLiteStore) -> None:
    """A pending retry is not due before next_at, then due with its attempt count."""
    await baseline(store)
    now = T0.timestamp()
    head, _ = await store.due_deliveries("hook", now, 10, [])
    await store.record_attempt(head.id, T0, failed_result(), next_at=now + 60)

    assert head.id not in [d.id for d in await store.due_deliveries("hook", now + 59, 10, [])]
    retried = [d for d in await store.due_deliveries("hook", now + 60, 10, []) if d.id == head.id]
    assert [(d.attempts, d.next_at) for d in retried] == [(1, now + 60)]
    assert await store.pending_count(["hook"]) == 2


async def test_listener_states_count_outcomes(store: SQLiteStore) -> None:
    """Listener state counts pending, delivered and dead deliveries and keeps the last error."""
    await baseline(store)
    now = T0.timestamp()
    a, b = await store.due_deliveries("hook", now, 10, [])
    await store.record_attempt(a.id, T0, ok_result(), next_at=None)
    await store.record_attempt(b.id, T0 + timedelta(seconds=1), failed_result(), next_at=None)
    (hook,) = await store.list_listener_states()
    assert (hook.name, hook.pending, hook.delivered, hook.dead) == ("hook", 0, 1, 1)
    assert hook.last_success_at == T0
    assert hook.last_failure_at == T0 + timedelta(seconds=1)
    assert hook.last_error == "HTTP 503"


async def test_concurrent_attempts_are_each_recorded(store: SQLiteStore, db_path: Path) -> None:
    """Attempts finishing together (one group commit) end exactly as recorded one by one."""
    keys = [f"k{i}" for i in range(20)]
    await store.commit_poll(
        commit(changes=[change("created", k, after={"k": k}) for k in keys], item_count=20)
    )
    now = T0.timestamp()
    due = await store.due_deliveries("hook", now, 50, [])
    outcomes = [
        (ok_result(), None) if i % 3 == 0 else (failed_result(), now + 60 if i % 3 == 1 else None)
        for i in range(len(due))
    ]

    states = await asyncio.gather(
        *(
            store.record_attempt(d.id, T0 + timedelta(seconds=i), result, next_at=next_at)
            for i, (d, (result, next_at)) in enumerate(zip(due, outcomes, strict=True))
        )
    )

    expected = [
        "delivered" if i % 3 == 0 else "pending" if i % 3 == 1 else "dead" for i in range(20)
    ]
    assert states == expected
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        rows = dict(conn.execute("SELECT id, state FROM deliveries WHERE attempts = 1"))
    assert [rows[d.id] for d in due] == expected
    assert count_rows(db_path, "attempts") == 20
    (hook,) = await store.list_listener_states()
    assert hook.last_success_at == T0 + timedelta(seconds=18)
    assert hook.last_failure_at == T0 + timedelta(seconds=19)
    assert hook.last_error == "HTTP 503"


async def test_a_failing_attempt_does_not_fail_the_others(
    store: SQLiteStore, db_path: Path
) -> None:
    """An attempt that cannot be recorded raises alone; attempts sharing its commit are kept."""
    await baseline(store)
    a, b = await store.due_deliveries("hook", T0.timestamp(), 10, [])

    results = await asyncio.gather(
        store.record_attempt(a.id, T0, ok_result(), next_at=None),
        store.record_attempt(10_000, T0, ok_result(), next_at=None),  # no such delivery
        store.record_attempt(b.id, T0, ok_result(), next_at=None),
        return_exceptions=True,
    )

    assert results[0] == "delivered" and results[2] == "delivered"
    assert isinstance(results[1], Exception)
    assert count_rows(db_path, "attempts") == 2


async def test_calls_made_together_run_in_order_and_fail_alone(store: SQLiteStore) -> None:
    """Store calls issued at once reach the worker thread in one hand-over: each still runs
    in call order, with its own result or error; a call cancelled before it ran never runs."""
    await baseline(store)
    a, b = await store.due_deliveries("hook", T0.timestamp(), 10, [])
    cancelled = asyncio.ensure_future(store.set_listener_paused("hook", True, "no", T0))
    await asyncio.sleep(0)  # queued, not yet handed over
    cancelled.cancel()

    stale = commit(
        upserts=[item("z", 1)], changes=[change("created", "z", after=1)], expected_version=0
    )
    results = await asyncio.gather(
        store.pending_count(),
        store.claim_deliveries("hook", T0.timestamp(), 1, [], owner="local", claim_s=30),
        store.commit_poll(stale),
        store.due_deliveries("hook", T0.timestamp(), 10, [a.id]),
        store.load_hashes("orders"),
        return_exceptions=True,
    )

    assert results[0] == 2
    assert [d.id for d in results[1]] == [a.id]
    assert isinstance(results[2], StaleSnapshot)
    assert [d.id for d in results[3]] == [b.id]
    assert results[4].version == 1
    (hook,) = await store.list_listener_states()
    assert not hook.paused


# --- the file ------------------------------------------------------------------------------


async def test_state_file_is_private(store: SQLiteStore, db_path: Path) -> None:
    """The state file (and its WAL) is created readable by its owner only."""
    await baseline(store)
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
    wal = db_path.with_name(db_path.name + "-wal")
    assert wal.exists()
    assert stat.S_IMODE(wal.stat().st_mode) == 0o600


async def test_schema_version_is_stored_in_user_version(store: SQLiteStore, db_path: Path) -> None:
    """The schema version lives in PRAGMA user_version."""
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


async def test_reopening_keeps_data(db_path: Path) -> None:
    """Opening an existing file at the current version migrates nothing and loses nothing."""
    first = SQLiteStore(db_path)
    await first.open()
    await baseline(first)
    await first.close()
    second = SQLiteStore(db_path)
    await second.open()
    try:
        assert (await second.load_hashes("orders")).version == 1
        assert await second.pending_count() == 2
    finally:
        await second.close()


async def test_newer_schema_is_refused(db_path: Path) -> None:
    """A file written by a newer pollbridge is refused with StoreError, not modified."""
    first = SQLiteStore(db_path)
    await first.open()
    await first.close()
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.commit()

    newer = SQLiteStore(db_path)
    with pytest.raises(StoreError, match="newer than this pollbridge understands") as info:
        await newer.open()
    newer.close_sync()
    assert info.value.location == str(db_path)
    assert f"schema version {SCHEMA_VERSION + 1}" in str(info.value)
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


async def test_using_a_closed_store_is_a_store_error(db_path: Path) -> None:
    """Calls before open() raise StoreError instead of touching a missing connection."""
    with pytest.raises(StoreError, match="the store is not open"):
        await SQLiteStore(db_path).load_hashes("orders")

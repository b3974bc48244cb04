"""SQLite store: inspection queries, replay, retention and the CLI's attach modes."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from bridge.errors import NoStateError, StoreError
from bridge.models import AttemptResult, Change
from bridge.store import DeliveryQuery, EventQuery, PollCommit, ReplayRequest
from bridge.store.sqlite import SQLiteStore

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _change(key: str, type_: str = "created") -> Change:
    after = None if type_ == "deleted" else {"id": key}
    before = None if type_ == "created" else {"id": key, "old": True}
    return Change(type_, key, key, before, after, [], None)  # type: ignore[arg-type]


async def _commit(store, at: datetime, *changes: Change, listeners=("a", "b"), source="s"):
    version = await store.snapshot_version(source)
    return await store.commit_poll(
        PollCommit(
            source=source,
            polled_at=at,
            duration_s=0.01,
            upserts=[],
            deletes=[],
            changes=list(changes),
            routes=[list(listeners)] * len(changes),
            item_count=len(changes),
            fingerprint="f",
            expected_version=version,
        )
    )


async def _deliveries(store, **kw):
    return await store.list_deliveries(DeliveryQuery(limit=1000, **kw))


async def _finish(store, listener: str, at: datetime, ok: bool) -> None:
    for d in await _deliveries(store, listener=listener, state="pending"):
        result = AttemptResult(ok, 200 if ok else 500, 0.01, None if ok else "HTTP 500")
        await store.record_attempt(d.id, at, result, next_at=None)


async def test_event_listing_filters_and_delivery_states(store):
    """events filter by source, key, type and time, newest N, each with its delivery states."""
    await _commit(store, T0, _change("1"), _change("2"))
    await _commit(store, T0 + timedelta(hours=1), _change("1", "updated"))
    await _commit(store, T0 + timedelta(hours=2), _change("9"), source="other", listeners=())
    await _finish(store, "a", T0 + timedelta(hours=3), ok=True)
    everything = await store.list_events(EventQuery())
    assert [(r.event.source, r.event.key) for r in everything] == [
        ("s", "1"),
        ("s", "2"),
        ("s", "1"),
        ("other", "9"),
    ]
    assert everything[0].deliveries == {"a": "delivered", "b": "pending"}
    assert everything[3].deliveries == {}
    assert [r.event.type for r in await store.list_events(EventQuery(key="1"))] == [
        "created",
        "updated",
    ]
    assert len(await store.list_events(EventQuery(type="updated"))) == 1
    assert len(await store.list_events(EventQuery(source="other"))) == 1
    recent = await store.list_events(EventQuery(since=T0 + timedelta(minutes=30)))
    assert [r.event.key for r in recent] == ["1", "9"]
    assert [r.event.key for r in await store.list_events(EventQuery(limit=2))] == ["1", "9"]
    first = everything[0].event
    assert await store.get_event(first.id) == first
    assert await store.get_event("evt_missing") is None


async def test_replay_requeues_dead_and_delivered_with_a_fresh_schedule(store):
    """replay by id re-queues every delivery of the event; --dead only dead ones, by listener."""
    (e1, e2) = await _commit(store, T0, _change("1"), _change("2"))
    await _finish(store, "a", T0, ok=True)
    for _ in range(2):
        await _finish(store, "b", T0, ok=False)
    assert {d.state for d in await _deliveries(store, listener="b")} == {"dead"}
    control = await store.control_version()
    later = T0 + timedelta(hours=1)

    result = await store.replay(ReplayRequest(dead=True, listener="a"), later)
    assert result.requeued == 0
    result = await store.replay(ReplayRequest(dead=True, since=T0 + timedelta(days=1)), later)
    assert result.requeued == 0
    result = await store.replay(ReplayRequest(dead=True), later)
    assert result.requeued == 2 and result.unknown_event_ids == ()
    pending = await _deliveries(store, listener="b", state="pending")
    assert [(d.attempts, d.next_at) for d in pending] == [(0, later), (0, later)]
    assert await store.control_version() > control

    result = await store.replay(ReplayRequest(event_ids=[e1.id, "evt_nope"]), later)
    assert result.requeued == 2 and list(result.unknown_event_ids) == ["evt_nope"]
    assert {d.state for d in await _deliveries(store, event_id=e1.id)} == {"pending"}
    assert {d.state for d in await _deliveries(store, event_id=e2.id, listener="a")} == {
        "delivered"
    }
    due = await store.due_deliveries("a", later.timestamp(), 10, [])
    assert [d.event.id for d in due] == [e1.id]
    # the attempt history is kept
    (a1,) = await _deliveries(store, event_id=e1.id, listener="a")
    assert [a.status for a in await store.list_attempts(a1.id)] == [200]


async def test_prune_keeps_pending_deliveries_their_events_and_snapshots(store):
    """Retention removes old finished deliveries, their attempts and unreferenced old events;
    pending deliveries, their events and every item are kept."""
    old = T0
    await store.commit_poll(
        PollCommit(
            source="s",
            polled_at=old,
            duration_s=0.0,
            upserts=[],
            deletes=[],
            changes=[],
            routes=[],
            item_count=0,
            fingerprint="f",
        )
    )
    conn = store.conn
    conn.execute(
        "INSERT INTO items (source, key_text, key, hash, item, updated_at) "
        "VALUES ('s', 'k', '\"k\"', 'h', '{}', ?)",
        (old.isoformat(),),
    )
    (done, waiting) = await _commit(store, old, _change("1"), _change("2"), listeners=("a",))
    await _finish(store, "a", old, ok=True)  # both delivered...
    await store.replay(ReplayRequest(event_ids=[waiting.id]), old)  # ...one pending again
    (fresh,) = await _commit(store, old + timedelta(days=30), _change("3"), listeners=("a",))
    await _finish(store, "a", old + timedelta(days=30), ok=True)

    result = await store.prune(old + timedelta(days=14), batch=1)
    assert (result.events, result.deliveries, result.attempts) == (1, 1, 1)
    remaining = {r.event.id for r in await store.list_events(EventQuery())}
    assert remaining == {waiting.id, fresh.id}
    assert {d.event_id for d in await _deliveries(store)} == {waiting.id, fresh.id}
    assert conn.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 1
    assert await store.prune(old + timedelta(days=14)) == type(result)()
    assert done.id not in remaining


async def test_runtime_status_round_trips_and_counts_are_per_state(store):
    """write_runtime/read_runtime keep a JSON object; delivery_counts counts only asked states."""
    assert await store.read_runtime() is None
    await store.write_runtime({"pid": 7, "sources": {"s": {"next_poll_at": None}}})
    assert await store.read_runtime() == {"pid": 7, "sources": {"s": {"next_poll_at": None}}}
    await _commit(store, T0, _change("1"), _change("2"))
    await _finish(store, "a", T0, ok=True)
    assert await store.delivery_counts(["pending", "dead"]) == {"b": {"pending": 2}}
    assert await store.delivery_counts(["delivered"]) == {"a": {"delivered": 2}}


async def test_resume_makes_waiting_deliveries_due_and_bumps_control(store):
    """Unpausing a listener makes its pending deliveries due now and bumps the control version."""
    await _commit(store, T0, _change("1"), listeners=("a",))
    (d,) = await _deliveries(store)
    await store.record_attempt(
        d.id,
        T0,
        AttemptResult(False, 410, 0.0, "HTTP 410"),
        next_at=(T0 + timedelta(hours=5)).timestamp(),
    )
    await store.set_listener_paused("a", True, "gone", T0)
    before = await store.control_version()
    await store.set_listener_paused("a", False, None, T0 + timedelta(minutes=1))
    assert await store.control_version() == before + 1
    (d,) = await _deliveries(store)
    assert d.next_at == T0 + timedelta(minutes=1)
    (state,) = await store.list_listener_states()
    assert not state.paused


async def test_attach_modes_never_create_or_migrate(tmp_path):
    """read/write access: a missing file is NoStateError and stays missing; an old schema is an
    error and stays old; read access cannot write."""
    missing = tmp_path / "missing.db"
    for access in ("read", "write"):
        with pytest.raises(NoStateError):
            await SQLiteStore(missing, access=access).open()
    assert not missing.exists()

    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    with pytest.raises(NoStateError):
        await SQLiteStore(empty, access="read").open()

    daemon = SQLiteStore(tmp_path / "state.db")
    await daemon.open()
    await _commit(daemon, T0, _change("1"))
    reader = SQLiteStore(tmp_path / "state.db", access="read")
    await reader.open()
    try:
        assert len(await reader.list_events(EventQuery())) == 1
        with pytest.raises(StoreError, match=r"readonly|read-only|query_only|attempt to write"):
            await reader.write_runtime({"x": 1})
        await _commit(daemon, T0, _change("2"))  # the daemon keeps writing meanwhile
        assert len(await reader.list_events(EventQuery())) == 2
    finally:
        await reader.close()
        await daemon.close()

    old = tmp_path / "old.db"
    conn = sqlite3.connect(old)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    with pytest.raises(StoreError, match="schema version 1"):
        await SQLiteStore(old, access="write").open()
    conn = sqlite3.connect(old)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()

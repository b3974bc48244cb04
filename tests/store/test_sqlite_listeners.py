"""SQLite store operations for listeners: coalescing, failure streaks, resume."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bridge.core.coalesce import merged_changes
from bridge.core.patch import make_patch
from bridge.models import AttemptResult, Change, Event
from bridge.store import PollCommit
from bridge.store.base import SCHEMA_VERSION
from bridge.store.sqlite import SQLiteStore

T0 = datetime(2026, 11, 23, 12, tzinfo=UTC)


def _change(kind: str, key: str, before: Any, after: Any) -> Change:
    return Change(kind, key, key, before, after, make_patch(before, after), "h")  # type: ignore[arg-type]


async def _commit(
    store: SQLiteStore, n: int, changes: Sequence[Change], listeners=("hooks",)
) -> list[Event]:
    return await store.commit_poll(
        PollCommit(
            source="orders",
            polled_at=T0 + timedelta(seconds=n),
            duration_s=0.01,
            upserts=[],
            deletes=[],
            changes=changes,
            routes=[list(listeners)] * len(changes),
            item_count=1,
            fingerprint="f",
        )
    )


def _rows(store: SQLiteStore, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in store.conn.execute(sql).fetchall()]


async def _updates(store: SQLiteStore, key: str, statuses: list[str], start: int = 0) -> None:
    for i, (a, b) in enumerate(itertools.pairwise(statuses)):
        await _commit(store, start + i, [_change("updated", key, {"s": a}, {"s": b})])


async def test_schema_is_current(store):
    """A new state file is created at the current schema version."""
    assert _rows(store, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert SCHEMA_VERSION >= 2


async def test_a_run_of_updates_becomes_one_net_update(store):
    """s0->s1->s2->s3 waiting: one new event s0->s3 replaces three deliveries, order kept."""
    await _updates(store, "1", ["s0", "s1", "s2", "s3"])
    await _updates(store, "2", ["x0", "x1"], start=10)  # a single update: nothing to merge
    fewer = await store.coalesce_pending("hooks", T0, [], merged_changes)
    assert fewer == 2
    due = await store.due_deliveries("hooks", (T0 + timedelta(days=1)).timestamp(), 10, [])
    by_key = {d.event.key: d.event for d in due}
    assert set(by_key) == {"1", "2"}
    merged = by_key["1"]
    assert (merged.before, merged.after) == ({"s": "s0"}, {"s": "s3"})
    assert merged.changes == [{"op": "replace", "path": "/s", "value": "s3"}]
    assert merged.timestamp == T0 + timedelta(seconds=2)  # the last update's detection time
    assert merged.id.startswith("evt_")
    states = _rows(store, "SELECT state, COUNT(*) FROM deliveries GROUP BY state ORDER BY state")
    assert states == [("coalesced", 3), ("pending", 2)]
    (into,) = _rows(
        store, "SELECT DISTINCT coalesced_into FROM deliveries WHERE state = 'coalesced'"
    )
    assert into[0] == next(d.id for d in due if d.event.key == "1")
    assert await store.coalesce_pending("hooks", T0, [], merged_changes) == 0  # idempotent


async def test_in_flight_attempted_and_non_update_deliveries_are_never_merged(store):
    """Only the chain's trailing never-attempted updates merge; the head keeps its identity."""
    await _updates(store, "1", ["a", "b", "c"])  # two updates
    await _commit(store, 5, [_change("deleted", "1", {"s": "c"}, None)])
    await _commit(store, 6, [_change("created", "1", None, {"s": "d"})])
    await _updates(store, "1", ["d", "e", "f"], start=7)  # two trailing updates
    head = (await store.due_deliveries("hooks", (T0 + timedelta(days=1)).timestamp(), 1, []))[0]
    assert await store.coalesce_pending("hooks", T0, [head.id], merged_changes) == 1
    chain = _rows(
        store,
        "SELECT e.type, json_extract(e.after, '$.s') FROM deliveries d JOIN events e "
        "ON e.seq = d.event_seq WHERE d.state = 'pending' ORDER BY d.event_seq",
    )
    # in order: the excluded head, b->c, the delete, the create, then d->f merged
    assert chain == [
        ("updated", "b"),
        ("updated", "c"),
        ("deleted", None),
        ("created", "d"),
        ("updated", "f"),
    ]


async def test_an_attempted_head_keeps_its_identity(store):
    """A delivery that was tried once (its webhook-id went out) is never merged into another."""
    await _updates(store, "5", ["a", "b", "c"])
    head = (await store.due_deliveries("hooks", (T0 + timedelta(days=1)).timestamp(), 1, []))[0]
    fail = AttemptResult(False, 500, 0.1, "HTTP 500")
    await store.record_attempt(head.id, T0, fail, next_at=T0.timestamp())
    assert await store.coalesce_pending("hooks", T0, [], merged_changes) == 0
    await _updates(store, "5", ["c", "d"], start=5)
    assert await store.coalesce_pending("hooks", T0, [], merged_changes) == 1
    pending = _rows(
        store,
        "SELECT d.id, json_extract(e.before, '$.s'), json_extract(e.after, '$.s') FROM deliveries d "
        "JOIN events e ON e.seq = d.event_seq WHERE d.state = 'pending' ORDER BY d.event_seq",
    )
    assert pending[0] == (head.id, "a", "b")
    assert [p[1:] for p in pending[1:]] == [("b", "d")]


async def test_updates_that_cancel_out_leave_nothing_to_send(store):
    """open -> paid -> open: the run is marked coalesced and no delivery replaces it."""
    await _updates(store, "1", ["open", "paid", "open"])
    assert await store.coalesce_pending("hooks", T0, [], merged_changes) == 2
    assert await store.pending_count(["hooks"]) == 0
    assert _rows(store, "SELECT state, coalesced_into FROM deliveries") == [
        ("coalesced", None),
        ("coalesced", None),
    ]


async def test_coalescing_is_per_listener(store):
    """Merging for one listener leaves another listener's deliveries of the same events alone."""
    await _updates(store, "1", ["a", "b", "c"])
    for i, pair in enumerate([("c", "d")]):
        await _commit(
            store,
            9 + i,
            [_change("updated", "1", {"s": pair[0]}, {"s": pair[1]})],
            ("hooks", "other"),
        )
    assert await store.coalesce_pending("hooks", T0, [], merged_changes) == 2
    assert await store.pending_count(["other"]) == 1
    assert await store.pending_count(["hooks"]) == 1


async def test_failing_since_tracks_the_failure_streak_and_resume_clears_it(store):
    """The first failure after a success starts the streak; a success or a resume ends it."""
    await _updates(store, "1", ["a", "b", "c", "d"])
    ids = [r[0] for r in _rows(store, "SELECT id FROM deliveries ORDER BY id")]
    fail = AttemptResult(False, 503, 0.1, "HTTP 503")

    async def failing_since():
        (state,) = await store.list_listener_states()
        return state.failing_since

    await store.record_attempt(ids[0], T0, fail, next_at=1)
    await store.record_attempt(ids[0], T0 + timedelta(hours=1), fail, next_at=1)
    assert await failing_since() == T0
    local = AttemptResult(False, None, 0.0, "template error", retryable=False, sent=False)
    await store.record_attempt(ids[1], T0, local, next_at=None)
    assert await failing_since() == T0
    await store.record_attempt(
        ids[0], T0 + timedelta(hours=2), AttemptResult(True, 204, 0.1), next_at=None
    )
    assert await failing_since() is None
    await store.record_attempt(ids[2], T0 + timedelta(hours=3), fail, next_at=1)
    assert await failing_since() == T0 + timedelta(hours=3)
    await store.set_listener_paused("hooks", True, "disabled: test", T0)
    (state,) = await store.list_listener_states()
    assert state.paused and state.paused_reason == "disabled: test"
    await store.set_listener_paused("hooks", False, None, T0)
    (state,) = await store.list_listener_states()
    assert not state.paused and state.failing_since is None


async def test_attempts_recorded_together_end_as_if_recorded_in_turn(store):
    """Attempts that finish at once are written in one transaction (group commit); the
    deliveries, the listener's failure streak and its last times end as if each attempt had
    been recorded alone, in order."""
    await _commit(store, 1, [_change("created", k, None, {"v": 1}) for k in "abcde"])
    ids = [d.id for d in await store.due_deliveries("hooks", 1e10, 10, [])]
    local = AttemptResult(False, None, 0.0, "template error", retryable=False, sent=False)
    hour = timedelta(hours=1)
    results = [
        (AttemptResult(False, 500, 0.01, error="HTTP 500"), T0, 1.0),
        (AttemptResult(True, 204, 0.01), T0 + hour, None),
        (local, T0 + 2 * hour, None),
        (AttemptResult(False, 500, 0.01, error="HTTP 500"), T0 + 3 * hour, 1.0),
        (AttemptResult(False, 502, 0.01, error="HTTP 502"), T0 + 4 * hour, 1.0),
    ]
    states = await asyncio.gather(
        *(
            store.record_attempt(d, at, result, next_at=next_at)
            for d, (result, at, next_at) in zip(ids, results, strict=True)
        )
    )
    assert states == ["pending", "delivered", "dead", "pending", "pending"]
    (state,) = await store.list_listener_states()
    assert state.failing_since == T0 + 3 * hour
    assert state.last_success_at == T0 + hour
    assert state.last_failure_at == T0 + 4 * hour
    assert state.last_error == "HTTP 502"
    attempts = store.conn.execute("SELECT COUNT(*) FROM attempts").fetchone()[0]
    assert attempts == 5

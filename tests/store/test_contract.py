"""The Store contract, run against every backend: memory and SQLite always, PostgreSQL when
configured."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.core.extract import key_text
from bridge.core.hashing import hash_value
from bridge.errors import StoreError
from bridge.models import AttemptResult, Change, Item, ItemKey
from bridge.store import (
    MEMORY,
    AttemptRecord,
    DeliveryQuery,
    EventQuery,
    InstanceInfo,
    PollCommit,
    PruneResult,
    ReplayRequest,
    StaleSnapshot,
    Store,
    is_shared,
    open_store,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
OK = AttemptResult(True, 204, 0.01)
FAILED = AttemptResult(False, 500, 0.02, error="HTTP 500", response_excerpt="oops")


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An open, empty store of each backend."""
    if request.param == "memory":
        location = MEMORY
    elif request.param == "sqlite":
        location = str(tmp_path / "state.db")
    else:
        location = request.getfixturevalue("pg_url")
    store = open_store(location)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def item(key: ItemKey, **value: Any) -> Item:
    body = {"id": key if isinstance(key, str) else list(key), **value}
    return Item(key, key_text(key), body, hash_value(body))


def created(it: Item) -> Change:
    return Change("created", it.key, it.key_text, None, it.value, [], it.hash)


def updated(old: Item, new: Item) -> Change:
    patch = [{"op": "replace", "path": "/v", "value": new.value.get("v")}]
    return Change("updated", new.key, new.key_text, old.value, new.value, patch, new.hash)


def deleted(old: Item) -> Change:
    return Change("deleted", old.key, old.key_text, old.value, None, [], None)


def commit(
    source: str,
    *,
    at: datetime = T0,
    upserts: Sequence[Item] = (),
    deletes: Sequence[str] = (),
    changes: Sequence[Change] = (),
    listeners: Sequence[str] = ("hooks",),
    expected_version: int | None = None,
    item_count: int | None = None,
) -> PollCommit:
    return PollCommit(
        source=source,
        polled_at=at,
        duration_s=0.05,
        upserts=upserts,
        deletes=deletes,
        changes=changes,
        routes=[list(listeners) for _ in changes],
        item_count=len(upserts) if item_count is None else item_count,
        fingerprint="fp1",
        expected_version=expected_version,
    )


async def test_commit_writes_snapshot_events_deliveries_and_state(store: Store):
    """One commit stores items, events (ordered seqs), a delivery per listener and source state."""
    a, b = item("a", v=1), item(("x", "1"), v=2)
    events = await store.commit_poll(
        commit(
            "orders",
            upserts=[a, b],
            changes=[created(a), created(b)],
            listeners=["hooks", "audit"],
            expected_version=0,
        )
    )
    assert [e.key for e in events] == ["a", ("x", "1")]
    assert events[0].seq < events[1].seq
    assert all(e.id.startswith("evt_") for e in events)
    snap = await store.load_hashes("orders")
    assert snap.version == 1
    assert snap.hashes == {"a": a.hash, b.key_text: b.hash}
    assert await store.snapshot_version("orders") == 1
    loaded = await store.load_items("orders", ["a", b.key_text, "missing"])
    assert loaded == {"a": ("a", a.value), b.key_text: (("x", "1"), b.value)}
    state = await store.get_source_state("orders")
    assert state is not None
    assert (state.last_success_at, state.item_count, state.fingerprint) == (T0, 2, "fp1")
    assert [s.name for s in await store.list_source_states()] == ["orders"]
    assert await store.pending_count() == 4
    assert await store.pending_count(["audit"]) == 2
    due = await store.due_deliveries("hooks", T0.timestamp(), 10, [])
    assert [d.event for d in due] == events


async def test_update_and_delete_replace_the_snapshot(store: Store):
    """A second commit upserts and deletes items and bumps the snapshot version."""
    a, b = item("a", v=1), item("b", v=1)
    await store.commit_poll(commit("s", upserts=[a, b], changes=[]))
    a2 = item("a", v=2)
    events = await store.commit_poll(
        commit(
            "s",
            at=T0 + timedelta(seconds=1),
            upserts=[a2],
            deletes=["b"],
            changes=[updated(a, a2), deleted(b)],
            expected_version=1,
            item_count=1,
        )
    )
    assert [e.type for e in events] == ["updated", "deleted"]
    assert events[0].before == a.value and events[0].after == a2.value
    assert events[1].after is None
    snap = await store.load_hashes("s")
    assert (snap.version, snap.hashes) == (2, {"a": a2.hash})


async def test_commit_is_one_transaction(store: Store):
    """A commit that fails half-way leaves no item, event, delivery or state behind."""
    a = item("a", v=1)
    broken = PollCommit(
        source="s",
        polled_at=T0,
        duration_s=0.1,
        upserts=[a],
        deletes=[],
        changes=[created(a)],
        routes=[],  # one route per change is required: fails after items and events are written
        item_count=1,
        fingerprint="fp",
    )
    with pytest.raises(ValueError):
        await store.commit_poll(broken)
    assert await store.snapshot_version("s") == 0
    assert (await store.load_hashes("s")).hashes == {}
    assert await store.get_source_state("s") is None
    assert await store.pending_count() == 0
    # and the store still works afterwards
    await store.commit_poll(commit("s", upserts=[a], changes=[created(a)]))
    assert await store.pending_count() == 1


async def test_stale_snapshot_refuses_the_commit(store: Store):
    """A commit computed against an old snapshot version is refused and writes nothing."""
    a = item("a", v=1)
    await store.commit_poll(commit("s", upserts=[a], changes=[created(a)], expected_version=0))
    a2 = item("a", v=2)
    with pytest.raises(StaleSnapshot):
        await store.commit_poll(
            commit("s", upserts=[a2], changes=[updated(a, a2)], expected_version=0)
        )
    snap = await store.load_hashes("s")
    assert (snap.version, snap.hashes) == (1, {"a": a.hash})
    assert await store.pending_count() == 1


async def test_an_incremental_cursor_is_committed_with_the_snapshot(store: Store):
    """The cursor and the last complete list are source state, written by the same commit as
    the items and events; a commit refused as stale leaves the old cursor in place."""
    from dataclasses import replace

    a, a2 = item("a", v=1), item("a", v=2)
    first = replace(
        commit("s", upserts=[a], changes=[], expected_version=0),
        cursor="2026-03-01T09:00:25.000000+00:00",
        reconciled_at=T0,
    )
    await store.commit_poll(first)
    state = await store.get_source_state("s")
    assert state is not None
    assert (state.cursor, state.reconciled_at) == ("2026-03-01T09:00:25.000000+00:00", T0)
    stale = replace(
        commit("s", upserts=[a2], changes=[updated(a, a2)], expected_version=0),
        cursor="2026-03-01T10:00:00.000000+00:00",
    )
    with pytest.raises(StaleSnapshot):
        await store.commit_poll(stale)
    state = await store.get_source_state("s")
    assert state is not None and state.cursor == "2026-03-01T09:00:25.000000+00:00"
    broken = replace(
        commit("s", upserts=[a2], changes=[updated(a, a2)], expected_version=1),
        routes=[],
        cursor="2026-03-01T11:00:00.000000+00:00",
    )
    with pytest.raises(ValueError):
        await store.commit_poll(broken)
    state = await store.get_source_state("s")
    assert state is not None and state.cursor == "2026-03-01T09:00:25.000000+00:00"
    await store.update_source_state("s", cursor="2026-03-01T12:00:00.000000+00:00")
    later = T0 + timedelta(days=1)
    await store.commit_poll(
        replace(
            commit("s", upserts=[a2], changes=[updated(a, a2)], expected_version=1),
            cursor="2026-03-01T12:30:00.000000+00:00",
            reconciled_at=later,
        )
    )
    state = await store.get_source_state("s")
    assert state is not None
    assert (state.cursor, state.reconciled_at) == ("2026-03-01T12:30:00.000000+00:00", later)
    # a source that is not incremental has neither
    await store.commit_poll(commit("plain", upserts=[a], changes=[]))
    plain = await store.get_source_state("plain")
    assert plain is not None and (plain.cursor, plain.reconciled_at) == (None, None)


async def test_deliveries_are_due_in_order_per_key(store: Store):
    """Only the oldest pending delivery of a key is due; the next one waits for it to finish."""
    a1, a2, b1 = item("a", v=1), item("a", v=2), item("b", v=1)
    first = await store.commit_poll(
        commit("s", upserts=[a1, b1], changes=[created(a1), created(b1)])
    )
    second = await store.commit_poll(
        commit("s", at=T0 + timedelta(seconds=1), upserts=[a2], changes=[updated(a1, a2)])
    )
    now = (T0 + timedelta(seconds=5)).timestamp()
    due = await store.due_deliveries("hooks", now, 10, [])
    assert [d.event.id for d in due] == [first[0].id, first[1].id]
    # a failed head with a retry scheduled keeps blocking its key
    head = due[0]
    retry_at = now + 60
    assert await store.record_attempt(head.id, T0, FAILED, next_at=retry_at) == "pending"
    due = await store.due_deliveries("hooks", now, 10, [])
    assert [d.event.id for d in due] == [first[1].id]
    assert await store.next_due_at(["hooks"], [due[0].id]) == retry_at
    # once the head is delivered, the next event of that key becomes due
    retried = await store.due_deliveries("hooks", retry_at, 10, [due[0].id])
    assert [d.id for d in retried] == [head.id]
    assert retried[0].attempts == 1
    await store.record_attempt(head.id, T0, OK, next_at=None)
    due = await store.due_deliveries("hooks", retry_at, 10, [])
    assert {d.event.id for d in due} == {first[1].id, second[0].id}


async def test_claimed_deliveries_keep_per_key_order(store: Store):
    """claim_deliveries hands out chain heads only, like due_deliveries."""
    a1, a2 = item("a", v=1), item("a", v=2)
    await store.commit_poll(commit("s", upserts=[a1], changes=[created(a1)]))
    await store.commit_poll(commit("s", upserts=[a2], changes=[updated(a1, a2)]))
    now = (T0 + timedelta(seconds=1)).timestamp()
    claimed = await store.claim_deliveries("hooks", now, 10, [], owner="me", claim_s=30)
    assert [d.event.type for d in claimed] == ["created"]
    await store.record_attempt(claimed[0].id, T0, OK, next_at=None)
    claimed = await store.claim_deliveries("hooks", now, 10, [], owner="me", claim_s=30)
    assert [d.event.type for d in claimed] == ["updated"]


async def test_released_claims_are_due_again_with_no_attempt_used(store: Store):
    """A claim given back unattempted makes the delivery due again at once, attempts unchanged."""
    a = item("a", v=1)
    await store.commit_poll(commit("s", upserts=[a], changes=[created(a)]))
    now = (T0 + timedelta(seconds=1)).timestamp()
    (claimed,) = await store.claim_deliveries("hooks", now, 10, [], owner="me", claim_s=30)
    await store.release_claims([claimed.id], owner="me")
    (again,) = await store.claim_deliveries("hooks", now, 10, [], owner="other", claim_s=30)
    assert (again.id, again.attempts) == (claimed.id, 0)


@pytest.mark.parametrize(
    ("result", "next_at", "state"),
    [(OK, None, "delivered"), (FAILED, 9e9, "pending"), (FAILED, None, "dead")],
)
async def test_record_attempt_states(store: Store, result, next_at, state):
    """An attempt ends delivered, pending (retry scheduled) or dead, and the listener says so."""
    a = item("a", v=1)
    await store.commit_poll(commit("s", upserts=[a], changes=[created(a)]))
    (delivery,) = await store.due_deliveries("hooks", T0.timestamp(), 10, [])
    at = T0 + timedelta(seconds=3)
    assert await store.record_attempt(delivery.id, at, result, next_at=next_at) == state
    (listener,) = await store.list_listener_states()
    counts = {"pending": listener.pending, "delivered": listener.delivered, "dead": listener.dead}
    assert counts == {s: int(s == state) for s in counts}
    if result.ok:
        assert (listener.last_success_at, listener.last_failure_at) == (at, None)
    else:
        assert (listener.last_failure_at, listener.last_error) == (at, "HTTP 500")
    due_later = await store.due_deliveries("hooks", 1e10, 10, [])
    assert [d.attempts for d in due_later] == ([1] if state == "pending" else [])


async def test_poll_failures_count_up_and_success_resets(store: Store):
    """record_poll_failure counts consecutive failures; an unchanged poll resets them."""
    until = T0 + timedelta(minutes=5)
    await store.record_poll_failure("s", T0, 0.1, "boom")
    state = await store.record_poll_failure("s", T0, 0.2, "boom again", not_before=until)
    assert (state.consecutive_failures, state.last_error, state.not_before) == (
        2,
        "boom again",
        until,
    )
    await store.record_poll_unchanged("s", T0, 0.1, validators={"http://x/": {"etag": '"v1"'}})
    state = await store.get_source_state("s")
    assert state is not None
    assert (state.consecutive_failures, state.last_error, state.not_before) == (0, None, None)
    assert state.validators == {"http://x/": {"etag": '"v1"'}}


async def test_update_source_state_checks_fields(store: Store):
    """update_source_state writes known fields and refuses unknown ones."""
    await store.update_source_state(
        "s", held_reason="too many deletes", held_polls=2, not_before=T0, accept_requested=True
    )
    state = await store.get_source_state("s")
    assert state is not None
    assert (state.held_reason, state.held_polls, state.not_before) == ("too many deletes", 2, T0)
    assert state.accept_requested is True
    await store.commit_poll(commit("s"))
    state = await store.get_source_state("s")
    assert state is not None
    assert (state.held_reason, state.accept_requested) == (None, False)
    with pytest.raises(ValueError, match="unknown"):
        await store.update_source_state("s", snapshot_version=9)


async def test_listener_pause_is_remembered(store: Store):
    """A paused listener stays paused (with its reason) until resumed."""
    await store.set_listener_paused("hooks", True, "410 Gone", T0)
    (state,) = await store.list_listener_states()
    assert (state.paused, state.paused_reason) == (True, "410 Gone")
    await store.set_listener_paused("hooks", False, None, T0)
    (state,) = await store.list_listener_states()
    assert state.paused is False


async def test_a_lone_instance_gets_every_lease(store: Store):
    """The lease calls grant a single instance every source it asks for."""
    me = InstanceInfo("me", "host", 1, T0)
    token = await store.acquire_source_lease("s", me.id, 30)
    assert token is not None
    beat = await store.heartbeat(me, ["s"], 30)
    assert beat.tokens == {"s": token}
    assert beat.live_instances >= 1
    await store.leave(me.id)


def _update(key: str, before: str, after: str) -> Change:
    return Change(
        "updated",
        key,
        key,
        {"s": before},
        {"s": after},
        [{"op": "replace", "path": "/s", "value": after}],
        "h",
    )


async def _updates(store: Store, key: str, states: str, start: int = 0) -> None:
    for i, (a, b) in enumerate(itertools.pairwise(states)):
        change = _update(key, a, b)
        await store.commit_poll(
            commit("s", at=T0 + timedelta(seconds=start + i), changes=[change], item_count=1)
        )


async def test_coalescing_merges_a_trailing_run_of_updates(store: Store):
    """a->b->c->d waiting becomes one a->d delivery; a lone update and an excluded head stay."""
    from bridge.core.coalesce import merged_changes

    await _updates(store, "1", "abcd")
    await _updates(store, "2", "xy", start=10)
    assert await store.coalesce_pending("hooks", T0, [], merged_changes) == 2
    later = (T0 + timedelta(days=1)).timestamp()
    due = {d.event.key: d.event for d in await store.due_deliveries("hooks", later, 10, [])}
    assert (due["1"].before, due["1"].after) == ({"s": "a"}, {"s": "d"})
    assert due["1"].timestamp == T0 + timedelta(seconds=2)
    assert (due["2"].before, due["2"].after) == ({"s": "x"}, {"s": "y"})
    assert await store.pending_count(["hooks"]) == 2
    assert await store.coalesce_pending("hooks", T0, [], merged_changes) == 0


async def test_coalescing_keeps_an_excluded_head_and_drops_a_no_op(store: Store):
    """An in-flight head keeps its identity; updates that cancel out leave nothing to send."""
    from bridge.core.coalesce import merged_changes

    await _updates(store, "1", "abcb")
    later = (T0 + timedelta(days=1)).timestamp()
    (head,) = await store.due_deliveries("hooks", later, 1, [])
    assert await store.coalesce_pending("hooks", T0, [head.id], merged_changes) == 2
    assert await store.pending_count(["hooks"]) == 1
    await store.record_attempt(head.id, T0, OK, next_at=None)
    assert await store.due_deliveries("hooks", later, 10, []) == []


async def test_coalescing_never_merges_a_delivery_that_was_claimed_for_sending(store: Store):
    """A claimed head may have reached the receiver even with no attempt recorded (the process
    died mid-send): after its claim is gone, only the updates behind it are merged."""
    from bridge.core.coalesce import merged_changes

    await _updates(store, "1", "abcd")
    later = (T0 + timedelta(days=1)).timestamp()
    (head,) = await store.claim_deliveries("hooks", later, 1, [], owner="me", claim_s=0)
    # a restarted dispatcher has nothing in flight, and the claim has expired
    assert await store.coalesce_pending("hooks", T0, [], merged_changes) == 1
    first, merged = await _chain(store, "1")
    assert (first.id, first.event.after) == (head.id, {"s": "b"})
    assert (merged.event.before, merged.event.after) == ({"s": "b"}, {"s": "d"})


async def test_a_released_claim_may_be_coalesced_again(store: Store):
    """release_claims gives back a claim nothing was sent for: it may merge like any other."""
    from bridge.core.coalesce import merged_changes

    await _updates(store, "1", "abc")
    later = (T0 + timedelta(days=1)).timestamp()
    (head,) = await store.claim_deliveries("hooks", later, 1, [], owner="me", claim_s=30)
    await store.release_claims([head.id], owner="me")
    assert await store.coalesce_pending("hooks", T0, [], merged_changes) == 1
    (merged,) = await _chain(store, "1")
    assert (merged.event.before, merged.event.after) == ({"s": "a"}, {"s": "c"})


async def _chain(store: Store, key: str) -> list[Any]:
    """The pending deliveries of ``key``, oldest first, by sending each head as it comes due."""
    later = (T0 + timedelta(days=1)).timestamp()
    chain = []
    while due := [
        d for d in await store.due_deliveries("hooks", later, 10, []) if d.event.key == key
    ]:
        chain.append(due[0])
        await store.record_attempt(due[0].id, T0, OK, next_at=None)
    return chain


async def test_failing_since_marks_the_failure_streak(store: Store):
    """A sent failure starts the streak, a local one does not, a success or a resume ends it."""
    a, b = item("a", v=1), item("b", v=1)
    await store.commit_poll(commit("s", upserts=[a, b], changes=[created(a), created(b)]))
    ids = [d.id for d in await store.due_deliveries("hooks", 1e10, 10, [])]
    local = AttemptResult(False, None, 0.0, "template error", retryable=False, sent=False)
    await store.record_attempt(ids[0], T0, local, next_at=1)
    assert (await store.list_listener_states())[0].failing_since is None
    await store.record_attempt(ids[0], T0, FAILED, next_at=1)
    await store.record_attempt(ids[0], T0 + timedelta(hours=1), FAILED, next_at=1)
    assert (await store.list_listener_states())[0].failing_since == T0
    await store.record_attempt(ids[0], T0 + timedelta(hours=2), OK, next_at=None)
    assert (await store.list_listener_states())[0].failing_since is None
    await store.record_attempt(ids[1], T0 + timedelta(hours=3), FAILED, next_at=1)
    await store.set_listener_paused("hooks", True, "disabled", T0)
    await store.set_listener_paused("hooks", False, None, T0)
    assert (await store.list_listener_states())[0].failing_since is None


# -- inspection, operator actions and retention (the CLI's calls) ------------------------------


async def _finish_all(store: Store, listener: str, at: datetime, result: AttemptResult) -> None:
    for d in await store.list_deliveries(DeliveryQuery(listener=listener, state="pending")):
        await store.record_attempt(d.id, at, result, next_at=None)


async def test_events_and_deliveries_can_be_listed_and_filtered(store: Store):
    """list_events/get_event/list_deliveries/list_attempts answer what the CLI asks."""
    a, b = item("a", v=1), item("b", v=1)
    e1, e2 = await store.commit_poll(
        commit("s", upserts=[a, b], changes=[created(a), created(b)], listeners=["x", "y"])
    )
    await _finish_all(store, "x", T0, OK)
    records = await store.list_events(EventQuery())
    assert [r.event.id for r in records] == [e1.id, e2.id]
    assert records[0].deliveries == {"x": "delivered", "y": "pending"}
    assert [r.event.id for r in await store.list_events(EventQuery(key="b"))] == [e2.id]
    assert await store.list_events(EventQuery(since=T0 + timedelta(days=1))) == []
    assert await store.get_event(e1.id) == e1
    assert await store.get_event("evt_missing") is None
    (d,) = await store.list_deliveries(DeliveryQuery(event_id=e1.id, listener="x"))
    assert (d.state, d.attempts, d.delivered_at, d.next_at) == ("delivered", 1, T0, None)
    (attempt,) = await store.list_attempts(d.id)
    assert (attempt.at, attempt.status) == (T0, 204)
    assert await store.delivery_counts(["pending", "dead"]) == {"y": {"pending": 2}}
    assert await store.delivery_counts(["delivered"]) == {"x": {"delivered": 2}}


async def test_replay_requeues_with_a_fresh_schedule_and_bumps_control(store: Store):
    """replay --dead and replay by id make deliveries pending again, due at once."""
    a = item("a", v=1)
    (e1,) = await store.commit_poll(commit("s", upserts=[a], changes=[created(a)]))
    await _finish_all(store, "hooks", T0, FAILED)
    control = await store.control_version()
    later = T0 + timedelta(hours=1)
    result = await store.replay(ReplayRequest(dead=True), later)
    assert result.requeued == 1
    assert await store.control_version() > control
    (d,) = await store.list_deliveries(DeliveryQuery(state="pending"))
    assert (d.attempts, d.next_at) == (0, later)
    result = await store.replay(ReplayRequest(event_ids=[e1.id, "evt_nope"]), later)
    assert (result.requeued, list(result.unknown_event_ids)) == (1, ["evt_nope"])


async def test_resume_makes_waiting_deliveries_due(store: Store):
    """Unpausing a listener makes its pending deliveries due at once and bumps control."""
    a = item("a", v=1)
    await store.commit_poll(commit("s", upserts=[a], changes=[created(a)]))
    (d,) = await store.list_deliveries(DeliveryQuery())
    await store.record_attempt(d.id, T0, FAILED, next_at=(T0 + timedelta(hours=5)).timestamp())
    await store.set_listener_paused("hooks", True, "gone", T0)
    before = await store.control_version()
    await store.set_listener_paused("hooks", False, None, T0 + timedelta(minutes=1))
    assert await store.control_version() == before + 1
    (d,) = await store.list_deliveries(DeliveryQuery())
    assert d.next_at == T0 + timedelta(minutes=1)


async def test_prune_keeps_pending_deliveries_and_snapshots(store: Store):
    """Retention drops old finished deliveries with their attempts and now-orphan events."""
    a, b = item("a", v=1), item("b", v=1)
    _done, waiting = await store.commit_poll(
        commit("s", upserts=[a, b], changes=[created(a), created(b)])
    )
    await _finish_all(store, "hooks", T0, OK)
    await store.replay(ReplayRequest(event_ids=[waiting.id]), T0)
    result = await store.prune(T0 + timedelta(days=14), batch=1)
    assert (result.events, result.deliveries, result.attempts) == (1, 1, 1)
    assert [r.event.id for r in await store.list_events(EventQuery())] == [waiting.id]
    assert set((await store.load_hashes("s")).hashes) == {"a", "b"}
    assert await store.prune(T0 + timedelta(days=14)) == PruneResult()


async def test_runtime_status_round_trips(store: Store):
    """write_runtime/read_runtime keep the daemon's JSON status."""
    assert await store.read_runtime() is None
    await store.write_runtime({"pid": 7, "stopped_at": None, "sources": {"s": {}}})
    runtime = await store.read_runtime()
    assert runtime is not None
    assert {k: runtime[k] for k in ("pid", "stopped_at", "sources")} == {
        "pid": 7,
        "stopped_at": None,
        "sources": {"s": {}},
    }


async def test_a_store_at_rest_has_no_call_waiting(store: Store):
    """oldest_call_s, what a health check reads, is 0 once every call has returned."""
    await store.pending_count()
    assert store.oldest_call_s() == 0.0


async def test_list_hashes_are_stored_beside_detail_items(store: Store):
    """An item's list_hash is stored with it, updated by a later upsert and gone with it."""
    a = Item("a", "a", {"id": "a", "detail": 1}, hash_value({"detail": 1}), "list-a-1")
    b = Item("b", "b", {"id": "b", "detail": 2}, hash_value({"detail": 2}), "list-b-1")
    plain = item("c", v=3)  # a source without detail stores no list hash
    await store.commit_poll(commit("orders", upserts=[a, b, plain], expected_version=0))
    snap = await store.load_hashes("orders", list_hashes=True)
    assert snap.list_hashes == {"a": "list-a-1", "b": "list-b-1"}
    assert snap.hashes == {"a": a.hash, "b": b.hash, "c": plain.hash}
    assert (await store.load_hashes("orders")).list_hashes is None  # not asked for: not read
    # the detail is unchanged, the list entry moved: the item is rewritten with its new hash
    a2 = Item("a", "a", a.value, a.hash, "list-a-2")
    await store.commit_poll(commit("orders", upserts=[a2], deletes=["b"], expected_version=1))
    snap = await store.load_hashes("orders", list_hashes=True)
    assert snap.version == 2
    assert snap.list_hashes == {"a": "list-a-2"}
    assert await store.load_items("orders", ["a"]) == {"a": ("a", a.value)}
    other = await store.load_hashes("elsewhere", list_hashes=True)
    assert (other.version, other.hashes, other.list_hashes) == (0, {}, {})


async def test_hashes_come_back_for_keys_of_any_text(store: Store):
    """Keys with quotes, backslashes, control and non-BMP characters, and composite keys,
    come back from load_hashes exactly as committed (the backends build them as JSON)."""
    keys: list[ItemKey] = [
        'say "hi"',
        "back\\slash",
        "tab\tnew\nline",
        "\u2028",
        "😀",
        "",
        ("a", "b"),
    ]
    items = [item(k, v=i) for i, k in enumerate(keys)]
    await store.commit_poll(commit("odd", upserts=items, expected_version=0))
    snap = await store.load_hashes("odd")
    assert snap.hashes == {it.key_text: it.hash for it in items}


async def test_attempts_recorded_together_end_as_if_recorded_in_turn(store: Store):
    """Attempts that finish together (one batch on SQLite) are applied in their order: the
    same delivery twice, a success ending a streak, a failure starting the next one, and a
    local failure that leaves the streak alone."""
    a, b, c = item("a", v=1), item("b", v=1), item("c", v=1)
    await store.commit_poll(
        commit("s", upserts=[a, b, c], changes=[created(a), created(b), created(c)])
    )
    ids = sorted(d.id for d in await store.due_deliveries("hooks", 1e10, 10, []))
    local = AttemptResult(False, None, 0.0, "template error", retryable=False, sent=False)
    hour = timedelta(hours=1)
    attempts = [
        (ids[0], T0 + hour, FAILED, 10.0),
        (ids[0], T0 + 2 * hour, FAILED, 20.0),
        (ids[1], T0 + 3 * hour, OK, None),
        (ids[2], T0 + 4 * hour, FAILED, 30.0),
        (ids[2], T0 + 5 * hour, local, None),
    ]
    if is_shared(store.location):
        # each call is a statement of its own on a pooled connection: calls made at once have
        # no order (the daemon never records one delivery twice at once), so one by one
        states = [await store.record_attempt(d, at, r, next_at=n) for d, at, r, n in attempts]
    else:
        states = await asyncio.gather(
            *(store.record_attempt(d, at, r, next_at=n) for d, at, r, n in attempts)
        )
    assert states == ["pending", "pending", "delivered", "pending", "dead"]
    (listener,) = await store.list_listener_states()
    assert listener.last_success_at == T0 + 3 * hour
    assert listener.last_failure_at == T0 + 5 * hour
    assert listener.last_error == "template error"
    assert listener.failing_since == T0 + 4 * hour
    infos = {d.id: d for d in await store.list_deliveries(DeliveryQuery(listener="hooks"))}
    assert [(infos[i].state, infos[i].attempts) for i in ids] == [
        ("pending", 2),
        ("delivered", 1),
        ("dead", 2),
    ]
    assert infos[ids[0]].updated_at == T0 + 2 * hour
    assert infos[ids[0]].next_at == datetime.fromtimestamp(20.0, UTC)
    assert infos[ids[1]].delivered_at == T0 + 3 * hour
    assert infos[ids[2]].delivered_at is None
    assert infos[ids[2]].last_error == "template error"
    assert [len(await store.list_attempts(i)) for i in ids] == [2, 1, 2]


async def test_attempts_recorded_as_one_batch_end_as_if_recorded_in_turn(store: Store):
    """``record_attempts`` applies a batch in its order (on PostgreSQL, the attempts of one
    delivery: those of different deliveries are statements at once), and an attempt that
    cannot be recorded (its delivery is gone) is that attempt's StoreError, not the batch's."""
    a, b = item("a", v=1), item("b", v=1)
    await store.commit_poll(commit("s", upserts=[a, b], changes=[created(a), created(b)]))
    ids = sorted(d.id for d in await store.due_deliveries("hooks", 1e10, 10, []))
    hour = timedelta(hours=1)
    missing = max(ids) + 1000
    outcomes = await store.record_attempts(
        [
            AttemptRecord(ids[0], T0 + hour, FAILED, 10.0),
            AttemptRecord(missing, T0 + hour, OK, None),
            AttemptRecord(ids[0], T0 + 2 * hour, OK, None),
            AttemptRecord(ids[1], T0 + 3 * hour, FAILED, None),
        ]
    )
    assert [o if isinstance(o, str) else type(o) for o in outcomes] == [
        "pending",
        StoreError,
        "delivered",
        "dead",
    ]
    infos = {d.id: d for d in await store.list_deliveries(DeliveryQuery(listener="hooks"))}
    assert [(infos[i].state, infos[i].attempts) for i in ids] == [("delivered", 2), ("dead", 1)]
    assert [len(await store.list_attempts(i)) for i in ids] == [2, 1]
    if not is_shared(store.location):
        (listener,) = await store.list_listener_states()
        assert listener.last_success_at == T0 + 2 * hour
        assert listener.failing_since == T0 + 3 * hour
    assert await store.record_attempts([]) == []

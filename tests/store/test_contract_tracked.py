"""The Store contract for what a poll tracks besides its snapshot: an append source's seen keys,
confirm_deletes' missing counts and named event types. Every backend."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from bridge.models import Change
from bridge.store import EventQuery, SeenUpdate, StaleSnapshot, Store, TrackedCounts
from tests.store.test_contract import T0, commit, item, store

__all__ = ["store"]  # the fixture, imported for this module's tests


async def test_seen_keys_are_added_forgotten_and_counted(store: Store) -> None:
    """A commit adds keys first seen at its time, forgets others, and bumps the version."""
    await store.commit_poll(replace(commit("feed"), seen=SeenUpdate(add=["3", "1", "2"])))
    seen = await store.load_seen("feed")
    assert seen.version == 1
    assert seen.first_seen == {"1": T0, "2": T0, "3": T0}
    later = T0 + timedelta(minutes=5)
    await store.commit_poll(
        replace(commit("feed", at=later), seen=SeenUpdate(add=["4", "2"], forget=["1"]))
    )
    seen = await store.load_seen("feed")
    assert seen.version == 2
    # a key added again keeps the time it was first seen
    assert seen.first_seen == {"2": T0, "3": T0, "4": later}
    assert list(seen.first_seen) == ["2", "3", "4"]  # oldest first, ties by key
    assert await store.tracked_counts() == {"feed": TrackedCounts(seen_keys=3)}
    assert (await store.load_seen("other")).first_seen == {}


async def test_a_commit_without_seen_keys_drops_them(store: Store) -> None:
    """A source that is no longer an append source forgets the keys it remembered."""
    await store.commit_poll(replace(commit("feed"), seen=SeenUpdate(add=["1"])))
    await store.commit_poll(replace(commit("other"), seen=SeenUpdate(add=["9"])))
    await store.commit_poll(commit("feed"))
    assert (await store.load_seen("feed")).first_seen == {}
    assert (await store.load_seen("other")).first_seen == {"9": T0}


async def test_missing_counts_are_replaced_by_each_commit(store: Store) -> None:
    """confirm_deletes' counts: each commit's map replaces the stored one; None clears it."""
    a, b = item("a", v=1), item("b", v=1)
    await store.commit_poll(commit("tickets", upserts=[a, b]))
    await store.commit_poll(replace(commit("tickets"), missing={"a": 1, "b": 1}))
    assert await store.load_missing("tickets") == {"a": 1, "b": 1}
    assert await store.tracked_counts() == {"tickets": TrackedCounts(pending_deletes=2)}
    await store.commit_poll(replace(commit("tickets"), missing={"a": 2}))
    assert await store.load_missing("tickets") == {"a": 2}
    await store.commit_poll(commit("tickets"))
    assert await store.load_missing("tickets") == {}
    assert await store.tracked_counts() == {}
    # the snapshot of a pending item stays until a commit deletes it
    assert set((await store.load_hashes("tickets")).hashes) == {"a", "b"}


async def test_a_refused_commit_tracks_nothing(store: Store) -> None:
    """Seen keys and missing counts are part of the poll's one transaction."""
    await store.commit_poll(replace(commit("feed"), seen=SeenUpdate(add=["1"])))
    stale = replace(commit("feed", expected_version=0), seen=SeenUpdate(add=["2"], forget=["1"]))
    with pytest.raises(StaleSnapshot):
        await store.commit_poll(replace(stale, missing={"x": 1}))
    assert (await store.load_seen("feed")).first_seen == {"1": T0}
    assert await store.load_missing("feed") == {}


async def test_a_named_event_type_is_stored_with_the_event(store: Store) -> None:
    """An append source's event_type comes back on the event everywhere it is read."""
    it = item("e1", v=1)
    change = Change("created", it.key, it.key_text, None, it.value, [], it.hash, "github.event")
    plain = item("e2", v=1)
    events = await store.commit_poll(
        replace(
            commit(
                "feed",
                changes=[change, Change("created", "e2", "e2", None, plain.value, [], plain.hash)],
            ),
            seen=SeenUpdate(add=["e1", "e2"]),
        )
    )
    assert [e.name for e in events] == ["github.event", None]
    got = await store.get_event(events[0].id)
    assert got is not None and got.name == "github.event"
    listed = await store.list_events(EventQuery(source="feed"))
    assert {r.event.key: r.event.name for r in listed} == {"e1": "github.event", "e2": None}
    due = await store.due_deliveries("hooks", T0.timestamp() + 1, 10, [])
    assert {d.event.key: d.event.name for d in due} == {"e1": "github.event", "e2": None}


async def test_events_of_a_named_type_are_listed_by_that_name(store: Store) -> None:
    """``type`` filters on the name an event has: a named event is not a ``created`` one."""
    it = item("e1", v=1)
    named = Change("created", it.key, it.key_text, None, it.value, [], it.hash, "github.event")
    other = item("o1", v=1)
    plain = Change("created", "o1", "o1", None, other.value, [], other.hash)
    await store.commit_poll(commit("feed", changes=[named, plain]))
    by_name = await store.list_events(EventQuery(type="github.event"))
    assert [r.event.key for r in by_name] == ["e1"]
    assert [r.event.key for r in await store.list_events(EventQuery(type="created"))] == ["o1"]

"""The append rules: new entries, bounded seen keys, and when a walk may stop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.append import (
    SeenWindow,
    append_changes,
    holds_seen,
    plan_append,
    stop_rule,
    unique_entries,
)
from bridge.core.diff import patch_ignoring
from bridge.core.hashing import hash_value
from bridge.models import Item

NOW = datetime(2026, 1, 10, tzinfo=UTC)
WINDOW = SeenWindow(timedelta(days=30), 100)


def entry(key: str) -> Item:
    value = {"id": key}
    return Item(key, key, value, hash_value(value))


def test_only_unseen_entries_are_new_in_answer_order() -> None:
    """Seen keys are skipped; the rest keep the answer's order."""
    seen = {"2": NOW, "4": NOW}
    plan = plan_append(seen, [entry(k) for k in "54321"], NOW, WINDOW)
    assert [i.key_text for i in plan.new] == ["5", "3", "1"]
    assert plan.forget == [] and plan.remembered == 5 and not plan.over_count


def test_keys_past_remember_are_forgotten_unless_the_answer_holds_them() -> None:
    """Age prunes only keys the latest answer no longer lists."""
    old = NOW - timedelta(days=31)
    seen = {"a": old, "b": old, "c": NOW - timedelta(days=1)}
    plan = plan_append(seen, [entry("b"), entry("d")], NOW, WINDOW)
    assert plan.forget == ["a"]
    assert plan.remembered == 3  # b, c, d


def test_the_oldest_go_first_when_over_remember_count() -> None:
    """Beyond remember_count the oldest keys (ties by key) are forgotten."""
    seen = {str(n): NOW - timedelta(minutes=10 - n) for n in range(5)}
    plan = plan_append(seen, [entry("x"), entry("y")], NOW, SeenWindow(timedelta(days=1), 4))
    assert plan.forget == ["0", "1", "2"]
    assert plan.remembered == 4


def test_an_answer_larger_than_remember_count_is_kept_whole() -> None:
    """Forgetting a key still listed would make it new again: all are kept, and flagged."""
    plan = plan_append({}, [entry(str(n)) for n in range(5)], NOW, SeenWindow(timedelta(1), 3))
    assert len(plan.new) == 5 and plan.forget == [] and plan.over_count
    assert plan.remembered == 5


def test_unique_entries_tolerate_an_entry_pushed_onto_the_next_page() -> None:
    """A log that moved while paged repeats an entry: it counts once."""
    pages = [[entry("9"), entry("8")], [entry("8"), entry("7")]]
    assert [i.key_text for i in unique_entries(pages)] == ["9", "8", "7"]


@pytest.mark.parametrize(
    ("stop_at_seen", "baseline", "page", "stops"),
    [
        (True, None, ["3", "2"], False),
        (True, None, ["2", "1"], True),
        (True, "silent", ["3"], True),
        (True, "emit", ["1"], None),
        (False, None, ["1"], None),
    ],
)
def test_stop_rule(
    stop_at_seen: bool, baseline: str | None, page: list[str], stops: bool | None
) -> None:
    """A walk stops after a page holding a seen key; a silent baseline after page 1; an emit
    baseline and stop_at_seen = false walk everything (no rule)."""
    rule = stop_rule({"1": NOW}, stop_at_seen=stop_at_seen, baseline=baseline)  # type: ignore[arg-type]
    if stops is None:
        assert rule is None
    else:
        assert rule is not None and rule([entry(k) for k in page]) is stops


def test_append_changes_are_created_events_with_the_source_name() -> None:
    """Each new entry is a created change with the same patch a snapshot's created item has."""
    (change,) = append_changes([entry("7")], "github.event")
    assert (change.type, change.name, change.before, change.after) == (
        "created",
        "github.event",
        None,
        {"id": "7"},
    )
    assert change.changes == patch_ignoring(None, {"id": "7"}, ())
    assert holds_seen([entry("7")], {"7": NOW}) and not holds_seen([entry("8")], {"7": NOW})


@given(
    st.lists(st.lists(st.integers(0, 40), max_size=12), min_size=1, max_size=30),
    st.integers(1, 25),
)
def test_no_entry_is_new_twice_and_the_count_stays_bounded(
    answers: list[list[int]], remember_count: int
) -> None:
    """Replaying answers through the rule: an entry listed in consecutive answers is never new
    twice, and at most max(remember_count, answer size) keys are remembered."""
    seen: dict[str, datetime] = {}
    window = SeenWindow(timedelta(days=30), remember_count)
    previous: set[str] = set()
    for n, answer in enumerate(answers):
        entries = unique_entries([[entry(str(k)) for k in answer]])
        now = NOW + timedelta(seconds=n)
        plan = plan_append(seen, entries, now, window)
        assert not ({i.key_text for i in plan.new} & previous)
        for key in plan.forget:
            del seen[key]
        for i in plan.new:
            seen[i.key_text] = now
        assert len(seen) == plan.remembered <= max(remember_count, len(entries))
        previous = {i.key_text for i in entries}

"""Coalescing: the merged patch takes the first before to the last after."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.core.coalesce import merged_changes
from bridge.core.extract import comparable
from bridge.core.hashing import canonical_json
from bridge.core.patch import apply_patch, make_patch
from bridge.core.paths import compile_path
from bridge.models import Event

RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
AT = datetime(2026, 11, 23, tzinfo=UTC)
IGNORE = (compile_path("$.seen"),)

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=2),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=3)
    ),
    max_leaves=6,
)
_item = st.fixed_dictionaries(
    {"id": st.just(1), "seen": st.integers(0, 9)}, optional={"a": _json, "b": _json}
)


def _updates(states):
    return [
        Event(f"evt_{i}", i, "orders", "1", "updated", AT, before, after, make_patch(before, after))
        for i, (before, after) in enumerate(itertools.pairwise(states))
    ]


@RELAXED
@given(st.lists(_item, min_size=3, max_size=6))
def test_merged_patch_turns_first_before_into_last_after(states):
    """apply(comparable(first.before), merged) == comparable(last.after), ignored paths excluded."""
    events = _updates(states)
    merged = merged_changes(events, IGNORE)
    start, end = comparable(states[0], IGNORE), comparable(states[-1], IGNORE)
    if merged is None:
        assert canonical_json(start) == canonical_json(end)
    else:
        assert canonical_json(apply_patch(start, merged)) == canonical_json(end)
        assert all(not op["path"].startswith("/seen") for op in merged)


def test_updates_that_cancel_out_merge_to_nothing():
    """open -> paid -> open, with only an ignored field moving: nothing left to send."""
    states = [
        {"id": 1, "s": "open", "seen": 1},
        {"id": 1, "s": "paid", "seen": 2},
        {"id": 1, "s": "open", "seen": 3},
    ]
    assert merged_changes(_updates(states), IGNORE) is None
    assert merged_changes(_updates(states)) == [{"op": "replace", "path": "/seen", "value": 3}]


def test_merged_patch_keeps_real_indices_around_an_ignored_element() -> None:
    """With an ignored array element, the net patch uses the real array's indices."""
    states = [
        {"id": 1, "tags": ["a", "b"]},
        {"id": 1, "tags": ["x", "b"]},
        {"id": 1, "tags": ["y", "c"]},
    ]
    merged = merged_changes(_updates(states), (compile_path("$.tags[0]"),))
    assert merged == [{"op": "replace", "path": "/tags/1", "value": "c"}]

"""Diffing a stored snapshot against a new poll."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.diff import DiffPlan, build_changes, diff_snapshots, patch_ignoring, plan_diff
from bridge.core.extract import comparable
from bridge.core.hashing import canonical_json, hash_value
from bridge.core.patch import apply_patch
from bridge.core.paths import JsonPath, compile_path
from bridge.models import Item, ItemKey

IGNORE_TS = (compile_path("$.ts"),)

Snapshot = dict[str, tuple[ItemKey, Any, str]]


def item(key: str, value: Any, ignore: tuple[JsonPath, ...] = ()) -> Item:
    return Item(key=key, key_text=key, value=value, hash=hash_value(comparable(value, ignore)))


def snapshot(items: list[Item]) -> Snapshot:
    return {i.key_text: (i.key, i.value, i.hash) for i in items}


SCALARS = st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=2)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "ts"]), inner, max_size=3)
    ),
    max_leaves=8,
)
# Few keys, so old and new snapshots share many of them (updates and unchanged items).
ITEM_MAPS = st.dictionaries(st.sampled_from(list("abcdef")), VALUES, max_size=6)
IGNORES = st.sampled_from([(), IGNORE_TS])


def test_plan_diff_classifies_keys() -> None:
    """New keys are created, changed hashes updated, missing keys deleted, the rest ignored."""
    old = {"same": hash_value(1), "changed": hash_value(2), "gone": hash_value(3)}
    new = [item("born", 0), item("changed", 20), item("same", 1)]
    plan = plan_diff(old, new)
    assert plan == DiffPlan(created=["born"], updated=["changed"], deleted=["gone"])
    assert plan.needs_before == ["changed", "gone"]
    assert not plan.empty


def test_plan_diff_orders_created_and_updated_by_response_and_deleted_by_key() -> None:
    """Created/updated keys keep response order; deleted keys are sorted."""
    old = {k: hash_value(0) for k in ("u2", "z", "u1", "a", "m")}
    new = [item("c2", 1), item("u2", 1), item("c1", 1), item("u1", 1)]
    plan = plan_diff(old, new)
    assert plan.created == ["c2", "c1"]
    assert plan.updated == ["u2", "u1"]
    assert plan.deleted == ["a", "m", "z"]


@pytest.mark.parametrize(
    ("old", "new", "empty"),
    [({}, [], True), ({"a": hash_value(1)}, [item("a", 1)], True), ({}, [item("a", 1)], False)],
)
def test_plan_empty_only_without_changes(old: dict[str, str], new: list[Item], empty: bool) -> None:
    """DiffPlan.empty is true exactly when nothing was created, updated or deleted."""
    assert plan_diff(old, new).empty is empty


def test_build_changes_carries_before_after_and_patch() -> None:
    """Each change has the stored and new item, the new hash, and a patch between them."""
    old = snapshot([item("u", {"n": 1}), item("d", {"n": 9})])
    new = [item("c", {"n": 0}), item("u", {"n": 2})]
    changes = diff_snapshots(old, new)
    assert [(c.type, c.key, c.before, c.after) for c in changes] == [
        ("created", "c", None, {"n": 0}),
        ("updated", "u", {"n": 1}, {"n": 2}),
        ("deleted", "d", {"n": 9}, None),
    ]
    assert [c.changes for c in changes] == [
        [{"op": "replace", "path": "", "value": {"n": 0}}],
        [{"op": "replace", "path": "/n", "value": 2}],
        [{"op": "replace", "path": "", "value": None}],
    ]
    assert [c.hash for c in changes] == [new[0].hash, new[1].hash, None]


def test_ignored_paths_neither_trigger_nor_appear_in_changes() -> None:
    """A change only in an ignored field is no change; patches never mention ignored fields."""
    old = snapshot(
        [item("a", {"v": 1, "ts": 1}, IGNORE_TS), item("b", {"v": 1, "ts": 1}, IGNORE_TS)]
    )
    new = [item("a", {"v": 1, "ts": 2}, IGNORE_TS), item("b", {"v": 2, "ts": 2}, IGNORE_TS)]
    changes = diff_snapshots(old, new, IGNORE_TS)
    assert [c.key for c in changes] == ["b"]
    assert changes[0].changes == [{"op": "replace", "path": "/v", "value": 2}]
    assert changes[0].after == {"v": 2, "ts": 2}


def test_build_changes_needs_only_the_planned_items() -> None:
    """build_changes works from the plan and the before items of updated/deleted keys alone."""
    new = [item("a", 1), item("b", 2)]
    plan = plan_diff({"b": hash_value(1), "c": hash_value(3)}, new)
    before = {"b": ("b", 1), "c": ("c", 3)}
    changes = build_changes(plan, new, before)
    assert [(c.type, c.key_text) for c in changes] == [
        ("created", "a"),
        ("updated", "b"),
        ("deleted", "c"),
    ]


def test_composite_keys_survive_into_changes() -> None:
    """A tuple key is carried through to created and deleted changes unchanged."""
    old = {'["o","1"]': (("o", "1"), {"n": 1}, hash_value({"n": 1}))}
    new = [Item(("o", "2"), '["o","2"]', {"n": 1}, hash_value({"n": 1}))]
    changes = diff_snapshots(old, new)
    assert [(c.type, c.key) for c in changes] == [("created", ("o", "2")), ("deleted", ("o", "1"))]


@given(ITEM_MAPS, IGNORES)
def test_diff_of_a_snapshot_with_itself_is_empty(values: dict[str, Any], ignore: Any) -> None:
    """Polling the same items again never produces a change."""
    items = [item(k, v, ignore) for k, v in values.items()]
    assert diff_snapshots(snapshot(items), items, ignore) == []


@given(ITEM_MAPS, ITEM_MAPS, IGNORES)
def test_applying_changes_to_old_snapshot_gives_new_one(
    old_values: dict[str, Any], new_values: dict[str, Any], ignore: Any
) -> None:
    """Created adds after, updated patches before into after, deleted removes: old becomes new."""
    old_items = [item(k, v, ignore) for k, v in old_values.items()]
    new_items = [item(k, v, ignore) for k, v in new_values.items()]
    state = {k: comparable(v, ignore) for k, v in old_values.items()}
    for change in diff_snapshots(snapshot(old_items), new_items, ignore):
        if change.type == "created":
            assert change.key_text not in state
            state[change.key_text] = comparable(change.after, ignore)
        elif change.type == "updated":
            patched = apply_patch(comparable(change.before, ignore), change.changes)
            assert canonical_json(patched) == canonical_json(comparable(change.after, ignore))
            assert change.changes, "an update must change something"
            state[change.key_text] = patched
        else:
            del state[change.key_text]
    expected = {k: comparable(v, ignore) for k, v in new_values.items()}
    assert canonical_json(state) == canonical_json(expected)


@given(ITEM_MAPS, ITEM_MAPS)
def test_each_key_changes_at_most_once(
    old_values: dict[str, Any], new_values: dict[str, Any]
) -> None:
    """A diff names every key at most once, and only keys that differ."""
    old_items = [item(k, v) for k, v in old_values.items()]
    new_items = [item(k, v) for k, v in new_values.items()]
    keys = [c.key_text for c in diff_snapshots(snapshot(old_items), new_items)]
    assert len(keys) == len(set(keys))
    differing = {
        k
        for k in old_values.keys() | new_values.keys()
        if k not in old_values
        or k not in new_values
        or canonical_json(old_values[k]) != canonical_json(new_values[k])
    }
    assert set(keys) == differing


@pytest.mark.parametrize(
    ("ignore", "before", "after", "changes"),
    [
        (
            "$.tags[0]",
            {"id": "k", "tags": ["a", "b"]},
            {"id": "k", "tags": ["a", "c"]},
            [{"op": "replace", "path": "/tags/1", "value": "c"}],
        ),
        (
            "$.tags[0]",
            {"id": "k", "tags": []},
            {"id": "k", "tags": ["b", "b"]},
            [{"op": "replace", "path": "/tags", "value": ["b", "b"]}],
        ),
        (
            "$.tags[-1]",
            {"tags": ["a", "b", "x"]},
            {"tags": ["z", "b", "y"]},
            [{"op": "replace", "path": "/tags/0", "value": "z"}],
        ),
        (
            "$.rows[1]",
            {"rows": [{"v": 1}, {"v": 2}, {"v": 3}]},
            {"rows": [{"v": 1}, {"v": 9}, {"v": 4}]},
            [{"op": "replace", "path": "/rows/2/v", "value": 4}],
        ),
        (
            "$.rows[*].ts",
            {"rows": [{"ts": 1, "v": 1}]},
            {"rows": [{"ts": 2, "v": 2}]},
            [{"op": "replace", "path": "/rows/0/v", "value": 2}],
        ),
        (
            "$.tags[?@ == 'x']",
            {"tags": ["x", "a"]},
            {"tags": ["x", "b"]},
            [{"op": "replace", "path": "/tags/1", "value": "b"}],
        ),
    ],
)
def test_ignored_array_elements_keep_the_indices_of_the_real_array(
    ignore: str, before: Any, after: Any, changes: list[dict[str, Any]]
) -> None:
    """An ignored array element stays in place: the patch's indices are those of the sent arrays."""
    paths = (compile_path(ignore),)
    old = item("k", before, paths)
    (change,) = diff_snapshots(snapshot([old]), [item("k", after, paths)], paths)
    assert change.changes == changes
    assert change.before == before
    assert change.after == after


def _at(doc: Any, location: tuple[str | int, ...]) -> Any:
    for step in location:
        doc = doc[step]
    return doc


_INDEX_IGNORES = st.lists(
    st.sampled_from(["$.a[0]", "$.a[-1]", "$.b[*].ts", "$..ts", "$.a[*]", "$.b[1]"]),
    max_size=2,
).map(lambda texts: tuple(compile_path(t) for t in texts))


def _blanked(doc: Any, ignore: tuple[JsonPath, ...]) -> Any:
    """``doc`` without its ignored members, its ignored array elements replaced by a marker."""
    doc = copy.deepcopy(doc)
    for path in ignore:
        for location in sorted(path.locate(doc), key=len, reverse=True):
            parent = _at(doc, location[:-1])
            if isinstance(parent, dict):
                del parent[location[-1]]
            else:
                parent[location[-1]] = "<ignored>"
    return doc


@given(VALUES, VALUES, _INDEX_IGNORES)
def test_the_patch_turns_the_sent_before_into_the_sent_after_outside_ignored_paths(
    before: Any, after: Any, ignore: tuple[JsonPath, ...]
) -> None:
    """Applied to the real before, the patch gives the real after everywhere but ignored paths."""
    before = {"id": "k", "a": before, "b": copy.deepcopy(before)}
    after = {"id": "k", "a": after, "b": copy.deepcopy(after)}
    patch = patch_ignoring(before, after, ignore)
    patched = apply_patch(before, patch)
    assert canonical_json(_blanked(patched, ignore)) == canonical_json(_blanked(after, ignore))

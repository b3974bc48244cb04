"""RFC 6902 patches: make_patch and the subset of apply_patch that reads them."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.hashing import canonical_json
from bridge.core.patch import apply_patch, make_patch

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4)
)
KEYS = st.sampled_from(["a", "b", "", "x/y", "t~0", "~1", "0", "-"])
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=15,
)


@pytest.mark.parametrize(
    ("before", "after", "ops"),
    [
        ({"a": 1}, {"a": 1}, []),
        ({"a": 1}, {"a": 2}, [{"op": "replace", "path": "/a", "value": 2}]),
        ({"a": 1}, {}, [{"op": "remove", "path": "/a"}]),
        ({}, {"a": [1]}, [{"op": "add", "path": "/a", "value": [1]}]),
        ({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}}, [{"op": "add", "path": "/a/c", "value": 2}]),
        ([1, 2, 3], [1, 5, 3], [{"op": "replace", "path": "/1", "value": 5}]),
        ([1, 2], [1, 2, 3], [{"op": "replace", "path": "", "value": [1, 2, 3]}]),
        ({"a": 1}, {"a": 1.0}, [{"op": "replace", "path": "/a", "value": 1.0}]),
        ({"a": 1}, {"a": True}, [{"op": "replace", "path": "/a", "value": True}]),
        ({"a": 0.0}, {"a": -0.0}, [{"op": "replace", "path": "/a", "value": -0.0}]),
        ({"a": {}}, {"a": []}, [{"op": "replace", "path": "/a", "value": []}]),
        ({"a/b": 1}, {"a/b": 2}, [{"op": "replace", "path": "/a~1b", "value": 2}]),
        ({"m~n": 1}, {}, [{"op": "remove", "path": "/m~0n"}]),
        ({"": 1}, {"": 2}, [{"op": "replace", "path": "/", "value": 2}]),
        (None, {"id": 1}, [{"op": "replace", "path": "", "value": {"id": 1}}]),
        ({"id": 1}, None, [{"op": "replace", "path": "", "value": None}]),
    ],
)
def test_make_patch_emits_small_deterministic_ops(before: Any, after: Any, ops: list[Any]) -> None:
    """Objects diff key by key, equal-length arrays index by index, anything else is replaced."""
    patch = make_patch(before, after)
    assert patch == ops
    assert canonical_json(apply_patch(before, patch)) == canonical_json(after)


def test_removals_come_before_additions() -> None:
    """Within an object, removed keys are listed first, then added and changed ones."""
    patch = make_patch({"old": 1, "same": 1}, {"same": 2, "new": 1})
    assert [op["op"] for op in patch] == ["remove", "replace", "add"]


@pytest.mark.parametrize(
    ("doc", "ops", "expected"),
    [
        ([1, 2], [{"op": "add", "path": "/-", "value": 3}], [1, 2, 3]),
        ([1, 2], [{"op": "add", "path": "/0", "value": 0}], [0, 1, 2]),
        ([1, 2], [{"op": "remove", "path": "/0"}], [2]),
        ({"a": [{"b": 1}]}, [{"op": "replace", "path": "/a/0/b", "value": 9}], {"a": [{"b": 9}]}),
    ],
)
def test_apply_patch_handles_array_ops(doc: Any, ops: list[Any], expected: Any) -> None:
    """apply_patch reads add/remove/replace on arrays too, including the '-' index."""
    assert apply_patch(doc, ops) == expected


@given(VALUES, VALUES)
def test_applying_the_patch_gives_the_target(before: Any, after: Any) -> None:
    """apply_patch(before, make_patch(before, after)) is JSON-identical to after."""
    result = apply_patch(before, make_patch(before, after))
    assert canonical_json(result) == canonical_json(after)


@given(VALUES)
def test_patch_of_a_value_with_itself_is_empty(value: Any) -> None:
    """A value compared with a copy of itself yields no operations."""
    assert make_patch(value, copy.deepcopy(value)) == []


@given(VALUES, VALUES)
def test_neither_function_mutates_its_inputs(before: Any, after: Any) -> None:
    """make_patch and apply_patch leave their arguments and the patch's values untouched."""
    before_copy, after_copy = copy.deepcopy(before), copy.deepcopy(after)
    patch = make_patch(before, after)
    patch_copy = copy.deepcopy(patch)
    apply_patch(before, patch)
    assert canonical_json(before) == canonical_json(before_copy)
    assert canonical_json(after) == canonical_json(after_copy)
    assert canonical_json(patch) == canonical_json(patch_copy)

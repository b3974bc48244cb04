"""Canonical JSON and the change-detection hash."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.hashing import canonical_json, hash_value

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=20,
)


def reorder(value: Any) -> Any:
    """The same JSON value with every object's keys in reverse insertion order."""
    if isinstance(value, dict):
        return {k: reorder(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reorder(v) for v in value]
    return value


def test_canonical_json_sorts_keys_without_whitespace() -> None:
    """Keys are sorted at every level and no whitespace is emitted."""
    assert canonical_json({"b": 1, "a": {"d": [1, 2], "c": None}}) == (
        b'{"a":{"c":null,"d":[1,2]},"b":1}'
    )


@given(JSON_VALUES)
def test_hash_ignores_key_order(value: Any) -> None:
    """Reordering an object's keys, at any depth, never changes its hash."""
    assert hash_value(reorder(value)) == hash_value(value)
    assert canonical_json(reorder(value)) == canonical_json(value)


@given(JSON_VALUES)
def test_hash_is_a_128_bit_hex_digest(value: Any) -> None:
    """The hash is 32 lowercase hex characters."""
    digest = hash_value(value)
    assert len(digest) == 32
    assert int(digest, 16) >= 0
    assert digest == digest.lower()


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (1, 1.0),
        (1, True),
        (0, False),
        (0.0, -0.0),
        ("1", 1),
        (None, "null"),
        ([1, 2], [2, 1]),
        ({"a": 1}, {"a": 1, "b": None}),
        ({}, []),
    ],
)
def test_distinct_json_texts_hash_differently(a: Any, b: Any) -> None:
    """Values Python calls equal but JSON writes differently (1, 1.0, true) are different."""
    assert hash_value(a) != hash_value(b)


def test_hash_refuses_integers_beyond_64_bits() -> None:
    """An integer orjson cannot encode raises TypeError instead of hashing something else."""
    with pytest.raises(TypeError):
        hash_value({"n": 2**64})

"""The confirm_deletes rule: consecutive missing polls, reset when an item comes back."""

from __future__ import annotations

import pytest

from bridge.core.confirm import confirm_missing


@pytest.mark.parametrize(
    ("before", "missing", "n", "confirmed", "pending"),
    [
        ({}, ["a"], 1, ["a"], {}),
        ({}, ["a"], 2, [], {"a": 1}),
        ({"a": 1}, ["a"], 2, ["a"], {}),
        ({"a": 1}, [], 2, [], {}),
        ({"a": 1, "b": 2}, ["b", "c"], 3, ["b"], {"c": 1}),
        ({"a": 5}, ["a"], 3, ["a"], {}),
    ],
)
def test_confirm_missing(
    before: dict[str, int],
    missing: list[str],
    n: int,
    confirmed: list[str],
    pending: dict[str, int],
) -> None:
    """A key is confirmed on its n-th missing poll in a row; a key back loses its count."""
    result = confirm_missing(before, missing, n)
    assert (result.confirmed, result.pending) == (confirmed, pending)


def test_one_blink_per_window_never_deletes() -> None:
    """Missing, back, missing, back: with confirm_deletes = 2 nothing is ever confirmed."""
    counts: dict[str, int] = {}
    for missing in (["x"], [], ["x"], [], ["x"]):
        result = confirm_missing(counts, missing, 2)
        assert result.confirmed == []
        counts = result.pending

"""The mass-delete guard: limits, when it applies, and hold / confirm / accept decisions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.guards import (
    DeleteLimit,
    decide_hold,
    deletion_digest,
    excessive_deletes,
    parse_delete_limit,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("50%", DeleteLimit(percent=50.0)),
        (" 12.5 % ", DeleteLimit(percent=12.5)),
        ("100%", DeleteLimit(percent=100.0)),
        ("0%", DeleteLimit(percent=0.0)),
        ("25", DeleteLimit(count=25)),
        (25, DeleteLimit(count=25)),
        (0, DeleteLimit(count=0)),
    ],
)
def test_parse_delete_limit(text, expected):
    """max_deletes is a percentage of the snapshot or an absolute count."""
    assert parse_delete_limit(text) == expected


@pytest.mark.parametrize("bad", ["150%", "-1", -1, "half", "", "2.5", True, "5%%"])
def test_parse_delete_limit_rejects(bad):
    """Anything else is refused with a message naming the expected forms."""
    with pytest.raises(ValueError, match=r"percentage|count|cannot"):
        parse_delete_limit(bad)


def test_the_guard_applies_from_ten_items():
    """Below 10 stored items any deletion passes; from 10, more than the limit is held."""
    half = DeleteLimit(percent=50)
    assert excessive_deletes(9, 9, half) is None
    assert excessive_deletes(10, 5, half) is None
    reason = excessive_deletes(10, 6, half)
    assert reason == "would delete 6 of 10 items, more than max_deletes = 50%"
    assert excessive_deletes(100, 90, DeleteLimit(count=89)) is not None
    assert excessive_deletes(100, 89, DeleteLimit(count=89)) is None
    assert excessive_deletes(100, 100, DeleteLimit(percent=100)) is None


def test_digest_ignores_order():
    """A held result is identified by the set of keys it would delete."""
    assert deletion_digest(["b", "a"]) == deletion_digest(["a", "b"])
    assert deletion_digest(["a"]) != deletion_digest(["a", "b"])


def test_hold_then_confirm_on_the_third_identical_poll():
    """The same result is held twice and applied when seen the third time in a row."""
    held_digest, held_polls = None, 0
    actions = []
    for _ in range(3):
        d = decide_hold(
            "too many",
            "D",
            held_digest=held_digest,
            held_polls=held_polls,
            confirm_polls=3,
            accept_requested=False,
        )
        actions.append((d.action, d.held_polls))
        held_digest, held_polls = d.digest, d.held_polls
    assert actions == [("hold", 1), ("hold", 2), ("confirmed", 3)]


def test_a_different_result_starts_counting_again():
    """A held result that changes is a new result: its count starts at one."""
    d = decide_hold(
        "too many", "E", held_digest="D", held_polls=2, confirm_polls=3, accept_requested=False
    )
    assert (d.action, d.held_polls, d.digest) == ("hold", 1, "E")


def test_operator_accept_and_no_reason():
    """`pollbridge accept` applies whatever is held; a poll without a reason just proceeds."""
    accepted = decide_hold(
        "too many", "D", held_digest=None, held_polls=0, confirm_polls=3, accept_requested=True
    )
    assert accepted.action == "accepted"
    assert (
        decide_hold(
            None, "D", held_digest="D", held_polls=2, confirm_polls=3, accept_requested=True
        ).action
        == "proceed"
    )


@given(
    size=st.integers(min_value=0, max_value=10_000),
    deletes=st.integers(min_value=0, max_value=10_000),
    percent=st.floats(min_value=0, max_value=100),
)
def test_never_held_within_the_limit(size, deletes, percent):
    """Law: a poll deleting no more than the limit allows is never held."""
    deletes = min(deletes, size)
    limit = DeleteLimit(percent=percent)
    if deletes <= size * percent / 100:
        assert excessive_deletes(size, deletes, limit) is None
    elif size >= 10:
        assert excessive_deletes(size, deletes, limit) is not None

"""What a poll's outcome writes into its source's state, the same for every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bridge.core import source_state

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def test_a_commit_ends_failures_backoff_and_holds_and_moves_the_version():
    """After a committed poll nothing of an earlier failure or hold is left."""
    fields = source_state.after_commit(
        polled_at=T0,
        duration_s=0.5,
        result="ok",
        item_count=7,
        fingerprint="fp",
        snapshot_version=3,
        validators={"u": {"etag": "x"}},
    )
    assert fields["consecutive_failures"] == fields["held_polls"] == 0
    assert fields["not_before"] is fields["held_reason"] is fields["held_digest"] is None
    assert fields["accept_requested"] is False
    assert (fields["snapshot_version"], fields["item_count"]) == (3, 7)
    assert fields["last_poll_at"] == fields["last_success_at"] == T0
    assert fields["validators"] == {"u": {"etag": "x"}}


def test_validators_are_kept_when_the_poll_brought_none():
    """None means "unchanged": the column is not written at all."""
    assert "validators" not in source_state.after_unchanged(
        at=T0, duration_s=0.1, result="ok", validators=None
    )


def test_a_failure_counts_up_and_keeps_the_last_success():
    """A failed poll adds one to the streak and never touches last_success_at."""
    later = T0 + timedelta(minutes=5)
    fields = source_state.after_failure(
        previous_failures=2, at=T0, duration_s=1.0, error="boom", result="error", not_before=later
    )
    assert fields["consecutive_failures"] == 3
    assert "last_success_at" not in fields
    assert (fields["last_error"], fields["not_before"]) == ("boom", later)

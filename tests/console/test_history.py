"""bridge/console/history.py: the in-memory poll counts behind the sources' sparklines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bridge.console.history import PollHistory, last_day

NOW = datetime(2026, 11, 23, 12, 30, tzinfo=UTC)


def test_polls_are_counted_per_hour_and_outcome():
    """A poll counts in its hour; the current hour is the last bucket; other sources apart."""
    history = PollHistory()
    history.record("orders", "ok", True, NOW)
    history.record("orders", "held", True, NOW - timedelta(minutes=20))
    history.record("orders", "error", False, NOW - timedelta(hours=2))
    history.record("other", "ok", True, NOW)
    buckets = history.buckets("orders", NOW)
    assert len(buckets.counts) == 24
    assert buckets.start == datetime(2026, 11, 22, 13, 0, tzinfo=UTC)
    assert buckets.counts[-1] == {"ok": 1, "warn": 1}
    assert buckets.counts[-3] == {"bad": 1}
    assert buckets.total == 3
    assert history.buckets("nobody", NOW).total == 0


def test_old_hours_are_forgotten():
    """A day later, the old hours are dropped from memory and from the chart."""
    history = PollHistory()
    history.record("orders", "ok", True, NOW)
    later = NOW + timedelta(hours=25)
    history.record("orders", "ok", True, later)
    assert history.buckets("orders", later).total == 1
    assert len(history._counts["orders"]) == 1


def test_the_window_ends_with_the_current_hour():
    """24 buckets of an hour; the last one holds the current time."""
    start, width, n = last_day(NOW)
    assert n == 24 and width == timedelta(hours=1)
    assert start + (n - 1) * width <= NOW < start + n * width

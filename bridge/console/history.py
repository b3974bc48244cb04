"""The last 24 hours of polls per source, counted by the hour, in memory.

The state keeps only each source's last poll, so the overview's poll sparklines count the
polls this daemon made since it started (bounded: 25 hourly buckets per source).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bridge.console.sparkline import Buckets, poll_outcome

HOUR = timedelta(hours=1)
HOURS = 24


def hour_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def last_day(now: datetime) -> tuple[datetime, timedelta, int]:
    """The sparklines' window: 24 hourly buckets, the last one the current hour."""
    return hour_start(now) - (HOURS - 1) * HOUR, HOUR, HOURS


class PollHistory:
    """Counts of polls per source, per hour and per outcome (``ok``, ``warn``, ``bad``)."""

    def __init__(self) -> None:
        self._counts: dict[str, dict[datetime, dict[str, int]]] = {}

    def record(self, source: str, result: str | None, ok: bool, at: datetime) -> None:
        """Count one poll of ``source`` that ended at ``at``."""
        hours = self._counts.setdefault(source, {})
        bucket = hours.setdefault(hour_start(at), {})
        outcome = poll_outcome(result, ok)
        bucket[outcome] = bucket.get(outcome, 0) + 1
        oldest = hour_start(at) - HOURS * HOUR
        for hour in [h for h in hours if h < oldest]:
            del hours[hour]

    def buckets(self, source: str, now: datetime) -> Buckets:
        """The source's last 24 hours as sparkline buckets."""
        start, width, n = last_day(now)
        hours = self._counts.get(source, {})
        return Buckets(
            start, width, tuple(dict(hours.get(start + i * width, {})) for i in range(n))
        )
